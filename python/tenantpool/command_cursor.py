"""CommandCursor: the cursor of aggregate, list_indexes, list_collections and cursor_command (pymongo's
``pymongo.command_cursor``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions

from . import _read_preference
from ._calls import (
    OpenCursor,
    Operation,
    operation,
    operations,
)
from ._common import (
    check_query_size,
    core_session,
    encode,
    set_if_given,
)

if TYPE_CHECKING:
    from ._core import RawCursor
    from .database import Database

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession
from ._batch_cursor import _BatchCursor


@operations
class CommandCursor(_BatchCursor):
    """The cursor of ``aggregate``, ``list_indexes`` and ``list_collections``. As in pymongo, the command
    runs at once, so its errors surface at the call; later batches are fetched as iteration needs them."""

    def __init__(
        self,
        database: Database,
        raw: RawCursor | None,
        codec: CodecOptions[Any],
        first_batch: list[Any] | None = None,
        session: ClientSession | None = None,
    ) -> None:
        self._database = database
        self._codec = codec
        self._session = session
        self._init_iteration()
        self._started = True
        self._raw = raw
        if first_batch is not None:
            # A complete result the server returned in its first batch (cursor id 0).
            self._data.extend(first_batch)
            self._retrieved = len(first_batch)
            self._killed = True

    @staticmethod
    def _gen_open_command(
        database: Database,
        command: Mapping[str, Any],
        codec: CodecOptions[Any],
        session: ClientSession | None,
        read_preference: Any,
        batch_size: int | None = None,
        max_await_time_ms: int | None = None,
        comment: Any = None,
        retryable: bool = False,
        causal: bool = False,
        check: bool = True,
    ) -> Operation[RawCursor]:
        """Runs a cursor command built here (pymongo's own find or aggregate command, or
        ``cursor_command``'s) as is, so the server judges every option; the core continues the cursor
        with getMore, in the session if any. ``batch_size``, ``max_await_time_ms`` (as ``maxTimeMS``)
        and ``comment`` go with the getMores; ``retryable``: a read pymongo retries (a find or an
        aggregate, not cursor_command), which the core retries after a retryable error; ``causal``: a read
        that takes a read concern, ordered after a causally consistent session's operation time;
        ``check=False`` for a command tenantpool built on the database's own collection, whose pipeline
        (if any) was checked already."""
        user_id = database._client.user_id
        if check and database._scope is not None:
            command = database._scope.check_command(user_id, database.name, command)
        getmore: dict[str, Any] = {}
        if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0:
            getmore["batchSize"] = int(batch_size)
        set_if_given(getmore, "maxAwaitTimeMS", max_await_time_ms)
        set_if_given(getmore, "comment", comment)
        spec: dict[str, Any] = {
            "command": command,
            "options": getmore,
            "retryable": retryable,
            "causal": causal,
        }
        _read_preference.route(spec, read_preference, session)
        core_sess = core_session(session, user_id)
        encoded = encode(spec, False, codec)
        check_query_size(encoded)
        cursor: RawCursor = yield OpenCursor(
            database._core, user_id, database.name, "command", encoded, core_sess
        )
        return cursor

    @property
    def address(self) -> tuple[str, int] | None:
        """None: the Rust core does not tell which server a cursor runs on (pymongo: its ``(host, port)``)."""
        return None

    @property
    def cursor_id(self) -> int | None:
        """None: the Rust core keeps the server cursor id to itself."""
        return None

    def _gen_try_next(self) -> Operation[Any]:
        """The next document, or None if there is none yet (pymongo's ``CommandCursor.try_next``)."""
        if self._data or (yield from self._gen_refresh()):
            return self._data.popleft()
        return None

    try_next = operation(_gen_try_next)

    def __repr__(self) -> str:
        return f"<tenantpool.cursor.CommandCursor object on {self._database.name}>"
