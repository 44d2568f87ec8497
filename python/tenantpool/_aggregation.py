"""The aggregation builder Collection.aggregate and Database.aggregate share: pymongo's checks, the
concerns of a transaction or snapshot session, then pymongo's own command as a cursor command the core
continues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.common import (
    validate_list,
    validate_non_negative_integer_or_none,
)
from pymongo.errors import (
    ConfigurationError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import DEFAULT_WRITE_CONCERN

from ._calls import Operation
from ._common import (
    check_mapping,
    check_session,
    set_if_given,
    validate_collation_or_none,
    write_concern_document,
)
from .cursor import CommandCursor

if TYPE_CHECKING:
    from .collection import Collection
    from .database import Database

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession


def gen_aggregate(
    database: Database,
    collection: Collection | None,
    pipeline: Any,
    let: Any,
    comment: Any,
    kwargs: dict[str, Any],
    session: ClientSession | None,
) -> Operation[CommandCursor]:
    """pymongo's aggregation on a collection, or on the database if ``collection`` is None."""
    if "explain" in kwargs:
        raise ConfigurationError("The explain option is not supported. Use Database.command instead.")
    for name in ("aggregate", "pipeline"):
        if name in kwargs:
            raise ConfigurationError(f"The {name} option cannot be specified as a keyword argument.")
    pipeline = validate_list("pipeline", pipeline)
    if database._scope is not None:
        database._scope.check_pipeline(database._user_id, pipeline)
    performs_write = (
        bool(pipeline)
        and isinstance(pipeline[-1], Mapping)
        and ("$out" in pipeline[-1] or "$merge" in pipeline[-1])
    )
    if let is not None:
        check_mapping("let", let)
        kwargs["let"] = let
    set_if_given(kwargs, "comment", comment)
    batch_size = validate_non_negative_integer_or_none("batchSize", kwargs.pop("batchSize", None))
    collation = validate_collation_or_none(kwargs.pop("collation", None))
    # Only tailable cursors (change streams) use it; pymongo ignores it otherwise.
    kwargs.pop("maxAwaitTimeMS", None)
    target = collection if collection is not None else database
    codec = target.codec_options
    # Inside a transaction, the transaction's concerns apply.
    check_session(session)
    in_transaction = session is not None and session.in_transaction
    wc = DEFAULT_WRITE_CONCERN if in_transaction else target.write_concern
    # In a snapshot session, the session's read concern (see Collection._rc).
    snapshot = session is not None and bool(session.options.snapshot)
    rc = ReadConcern() if in_transaction or snapshot else target.read_concern
    # As in pymongo, $out/$merge too: the driver sends those to the primary unless every server is 5.0+.
    read_preference = target._read_preference_for(session)
    # pymongo's command, so the server judges every option; the core continues its cursor with getMore.
    cmd: dict[str, Any] = {
        "aggregate": collection.name if collection is not None else 1,
        "pipeline": pipeline,
    }
    cmd.update(kwargs)
    cursor_opts = dict(cmd.get("cursor") or {})
    if batch_size is not None and not performs_write:
        cursor_opts["batchSize"] = batch_size
    cmd["cursor"] = cursor_opts
    if collation is not None:
        cmd["collation"] = collation
    if rc.level is not None and "readConcern" not in cmd:
        cmd["readConcern"] = rc.document
    if performs_write and not wc.is_server_default and "writeConcern" not in cmd:
        cmd["writeConcern"] = write_concern_document(wc)
    if collection is None and database._scope is not None:
        database._scope.check_database_operation(database._user_id, database.name, "aggregate")
    raw = yield from CommandCursor._gen_open_command(
        database,
        cmd,
        codec,
        session,
        read_preference,
        batch_size=batch_size,
        comment=kwargs.get("comment"),
        retryable=not performs_write,
        causal=True,
    )
    return database._command_cursor_class(database, raw, codec, session=session)
