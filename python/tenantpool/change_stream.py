"""Change streams: pymongo 4's ``watch()`` API over the Rust driver's resumable change stream.

The Rust core opens the stream with the driver's ``watch`` (so the driver re-opens it after a resumable
error, from the last resume token, as pymongo does) and hands out one event per round as BSON bytes,
decoded here with the collection's codec options. A round is one getMore at most, waiting on the server
up to ``max_await_time_ms``; the GIL is released while it waits. The stream holds a lease on the tenant's
pool for its whole life, so the idle reaper and the LRU cap never close the pool under it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.timestamp import Timestamp
from pymongo import common
from pymongo.errors import InvalidOperation

from . import _read_preference
from ._calls import NextChange, Operation, Watch, operation, operations, twin
from ._common import (
    check_bool,
    check_session,
    core_session,
    decode,
    encode,
    set_if_given,
    validate_collation_or_none,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._core import RawChangeStream
    from .collection import Collection
    from .database import Database

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession


def gen_watch(
    database: Database,
    collection: Collection | None,
    pipeline: Sequence[Mapping[str, Any]] | None,
    full_document: str | None,
    resume_after: Mapping[str, Any] | None,
    max_await_time_ms: int | None,
    batch_size: int | None,
    collation: Any,
    start_at_operation_time: Timestamp | None,
    session: ClientSession | None,
    start_after: Mapping[str, Any] | None,
    comment: Any,
    full_document_before_change: str | None,
    show_expanded_events: bool | None,
) -> Operation[ChangeStream]:
    """Opens a change stream on ``collection``, or on ``database`` if it is None, as pymongo's ``watch``
    does: at once, so that no change made after ``watch()`` returns is missed."""
    pipeline = common.validate_list("pipeline", [] if pipeline is None else pipeline)
    common.validate_string_or_none("full_document", full_document)
    common.validate_string_or_none("full_document_before_change", full_document_before_change)
    collation = validate_collation_or_none(collation)
    common.validate_non_negative_integer_or_none("batchSize", batch_size)
    common.validate_non_negative_integer_or_none("max_await_time_ms", max_await_time_ms)
    if resume_after is not None:
        common.validate_is_mapping("resume_after", resume_after)
    if start_after is not None:
        common.validate_is_mapping("start_after", start_after)
    if start_at_operation_time is not None and not isinstance(start_at_operation_time, Timestamp):
        raise TypeError(
            f"start_at_operation_time must be an instance of bson.timestamp.Timestamp, "
            f"not {type(start_at_operation_time)}"
        )
    if show_expanded_events is not None:
        check_bool("show_expanded_events", show_expanded_events)
    if comment is not None:
        raise InvalidOperation(
            "watch(comment=...) is not supported by tenantpool: the Rust driver would send the comment "
            "inside the $changeStream stage, which the server rejects"
        )
    target = collection if collection is not None else database
    codec = target.codec_options
    user_id = database._user_id
    raw_session = core_session(session, user_id)

    # The $changeStream stage's options, chosen as pymongo chooses them: start_after wins over
    # resume_after, and a resume token over start_at_operation_time.
    options: dict[str, Any] = {}
    set_if_given(options, "fullDocument", full_document)
    set_if_given(options, "fullDocumentBeforeChange", full_document_before_change)
    if start_after is not None:
        options["startAfter"] = start_after
    elif resume_after is not None:
        options["resumeAfter"] = resume_after
    else:
        set_if_given(options, "startAtOperationTime", start_at_operation_time)
    if show_expanded_events:
        options["showExpandedEvents"] = True
    # The aggregate's.
    set_if_given(options, "maxAwaitTimeMS", max_await_time_ms)
    set_if_given(options, "batchSize", batch_size)
    set_if_given(options, "collation", collation)
    # Inside a transaction the transaction's read concern applies (and the server refuses the stream).
    check_session(session)
    in_transaction = session is not None and session.in_transaction
    rc = None if in_transaction else target.read_concern
    if rc is not None and rc.level is not None:
        options["readConcern"] = {"level": rc.level}

    scope = database._scope
    if scope is not None:
        if collection is None:
            scope.check_database_operation(user_id, database.name, "watch")
        scope.check_pipeline(user_id, pipeline)
    spec: dict[str, Any] = {"pipeline": pipeline, "options": options}
    # The target's read preference, as in pymongo (the stream's getMores follow its first aggregate).
    _read_preference.route(spec, target._read_preference_for(session), session)
    cls: type[ChangeStream]
    if collection is not None:
        spec["collection"] = collection.name
        cls = database._collection_change_stream_class
    else:
        cls = database._database_change_stream_class
    raw = yield Watch(database._core, user_id, database.name, encode(spec, False, codec), raw_session)
    return cls(target, raw, codec, session)


@operations
class ChangeStream:
    """pymongo's ``ChangeStream``: iterate it for change events (``next()`` blocks until one comes),
    or poll it with ``try_next()``; ``resume_token`` is where to resume after the last event returned.
    Close it (or use ``with``) to end the server's cursor and release the tenant's pool."""

    def __init__(
        self,
        target: Collection | Database,
        raw: RawChangeStream,
        codec: CodecOptions[Any],
        session: ClientSession | None = None,
    ) -> None:
        self._target = target
        self._raw = raw
        self._codec = codec
        self._session = session
        self._closed = False
        # The server's initial token (or the one watched from): resumable before any event.
        token = raw.initial_token
        self._resume_token: Any = None if token is None else decode(token, codec)["_id"]

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        """The cached resume token that will be used to resume after the most recently returned change
        (after a round without changes: the server's post-batch resume token)."""
        token: Mapping[str, Any] | None = copy.deepcopy(self._resume_token)
        return token

    @property
    def alive(self) -> bool:
        """Whether this stream may still return changes: False once closed, invalidated (its collection
        or database dropped or renamed) or ended by an error."""
        return not self._closed

    def _gen_try_next(self) -> Operation[Any]:
        """The next change, or None if none came during one round (one getMore, which waits on the
        server up to ``max_await_time_ms``), or if the stream is closed."""
        if self._closed:
            return None
        try:
            event, token = yield NextChange(self._raw)
        except asyncio.CancelledError:
            # A cancelled wait ends the stream (the core kills it as the wait is abandoned).
            self._closed = True
            raise
        except BaseException:
            # The core ends the stream on an error: the driver has already resumed it after any
            # resumable one. (Only a refused concurrent round leaves it open.)
            self._closed = not self._raw.alive
            raise
        if not self._raw.alive:
            self._closed = True
        if event is None:
            if token is not None:
                self._resume_token = decode(token, self._codec)["_id"]
            return None
        change = decode(event, self._codec)
        self._resume_token = change["_id"]
        return change

    try_next = operation(_gen_try_next)

    def __next__(self) -> Any:
        """The next change, waiting for it as long as it takes; StopIteration once the stream is closed."""
        while self.alive:
            change = self.try_next()
            if change is not None:
                return change
        raise StopIteration

    next = twin(__next__)

    def __iter__(self) -> Self:
        return self

    @twin
    def close(self) -> None:
        """Closes the stream: kills the server cursor and releases the tenant's pool. A ``next()``
        blocked in another thread returns at once (raising StopIteration)."""
        self._closed = True
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tenantpool.{type(self).__name__} on {self._target!r}>"


class CollectionChangeStream(ChangeStream):
    """The change stream of ``Collection.watch()``."""


class DatabaseChangeStream(ChangeStream):
    """The change stream of ``Database.watch()``: changes to every collection of the database."""
