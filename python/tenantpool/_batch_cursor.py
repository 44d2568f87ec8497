"""What Cursor and CommandCursor share: a Rust cursor handing out one server batch at a time, each batch
decoded by pymongo's C decoder in one call, so a large result streams in bounded memory."""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from pymongo.errors import InvalidOperation, OperationFailure

from ._calls import (
    NextBatch,
    Operation,
    operation,
    run_sync,
    twin,
)
from ._common import (
    decode_all,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._core import RawCursor

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession

# pymongo's query flags that can be expressed as find options.
_TAILABLE = 2
_NO_TIMEOUT = 16
_AWAIT_DATA = 32
_PARTIAL = 128
_SUPPORTED_FLAGS = _TAILABLE | _NO_TIMEOUT | _AWAIT_DATA | _PARTIAL
_EXHAUST = 64

# pymongo's _CURSOR_CLOSED_ERRORS: the server has already killed the cursor. On a tailable cursor they
# mean the capped collection rolled over its position (CappedPositionLost), and pymongo ends the cursor
# quietly (alive False) instead of raising.
_CURSOR_CLOSED_ERRORS = frozenset([43, 175, 237, 28617, 17406, 96, 136])


def _refuse_exhaust(how: str) -> InvalidOperation:
    return InvalidOperation(
        f"{how}: exhaust cursors are not supported by tenantpool (the Rust driver cannot read a stream "
        f"of replies to one getMore); use CursorType.NON_TAILABLE, which returns the same documents "
        f"(batch_size sets how many per round trip)"
    )


def _is_int(value: Any, minimum: int | None = None) -> bool:
    return type(value) is int and (minimum is None or value >= minimum)


class _BatchCursor:
    """Iteration shared by both cursors: a local deque refilled one server batch at a time."""

    _raw: RawCursor | None
    _codec: CodecOptions[Any]
    _session: ClientSession | None
    # A tailable cursor (set when its query runs): an empty batch ends an iteration, not the cursor.
    _tailable = False

    def _init_iteration(self) -> None:
        self._raw = None
        self._data: deque[Any] = deque()
        self._started = False
        self._killed = False
        self._retrieved = 0

    def _open(self) -> Operation[RawCursor | None]:
        raise NotImplementedError
        yield  # a generator, like the subclasses' _open

    def _gen_refresh(self) -> Operation[int]:
        """Fetches the next batch if the local one is used up; the number of documents now buffered."""
        if self._data or self._killed:
            return len(self._data)
        if not self._started:
            self._started = True
            try:
                self._raw = yield from self._open()
            except BaseException:
                self._killed = True
                raise
        data = None
        if self._raw is not None:
            try:
                data = yield NextBatch(self._raw)
            except BaseException as exc:
                self._close()
                if self._tailable and isinstance(exc, OperationFailure) and exc.code in _CURSOR_CLOSED_ERRORS:
                    return 0
                raise
        if data is None:
            # The server cursor is exhausted (and released by the core).
            self._killed = True
            return 0
        docs = decode_all(data, self._codec)
        self._retrieved += len(docs)
        self._data.extend(docs)
        return len(self._data)

    def _refresh(self) -> int:
        return run_sync(self._gen_refresh())

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        # The common case, a document already buffered, stays a deque pop.
        """The next document (fetching the next server batch when the local one is used up); ``StopIteration``
        once exhausted. ``next()`` is the same; on the async cursors it is awaited and ends with
        ``StopAsyncIteration``."""
        if self._data or self._refresh():
            return self._data.popleft()
        raise StopIteration

    next = twin(__next__)

    def _gen_to_list(self, length: int | None = None) -> Operation[list[Any]]:
        """The remaining documents, or at most ``length`` of them (pymongo's ``to_list``)."""
        if isinstance(length, int) and length < 1:
            raise ValueError("to_list() length must be greater than 0")
        res: list[Any] = []
        while self._data or (yield from self._gen_refresh()):
            if length is None:
                res.extend(self._data)
                self._data.clear()
            else:
                while self._data and len(res) < length:
                    res.append(self._data.popleft())
                if len(res) >= length:
                    break
        return res

    to_list = operation(_gen_to_list)

    @property
    def alive(self) -> bool:
        """Whether more documents may come. As in pymongo, False once the last batch has been consumed:
        with the local batch used up, this asks the core for the next one (which costs a round trip only
        if the server has more)."""
        if self._data:
            return True
        if self._killed:
            return False
        if not self._started or self._tailable:
            # A tailable cursor is alive until the server closes it, batches or not (pymongo's rule;
            # asking for a batch here would wait for new documents).
            return True
        return self._refresh() > 0

    @property
    def retrieved(self) -> int:
        """The number of documents received from the server so far."""
        return self._retrieved

    @property
    def session(self) -> ClientSession | None:
        """The explicit session this cursor runs in, if any."""
        return self._session

    def _close(self) -> None:
        """Kills the server cursor if it is still open, and releases the tenant's pool."""
        self._killed = True
        self._started = True
        self._data.clear()
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()

    # No I/O waits here (the kill is sent in the background); the async cursors' is a coroutine all the
    # same, as pymongo's.
    close = twin(_close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()
