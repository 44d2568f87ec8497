"""ClientSession and AsyncClientSession: pymongo's session and transaction API on one tenant's client.

Both classes run the same steps, written once as generators (see ``_calls``): starting, committing and
aborting a transaction, leaving a ``start_transaction`` block, ``with_transaction``'s retry loop and
``end_session``. ``ClientSession`` drives them with blocking core calls, ``AsyncClientSession`` with
awaitable ones.

``with_transaction`` follows pymongo's retry rules: the whole callback is retried on a
``TransientTransactionError`` label, the commit on ``UnknownTransactionCommitResult`` (unless the
server ran out of ``maxCommitTimeMS``), with pymongo's jittered backoff between attempts, for up to
120 s.

Whether a transaction is open is the core session's own state, so a call that never finished (a
cancelled asyncio task) cannot leave it wrong. A session that ends, or is garbage-collected, with a
transaction open aborts it and gives back its hold on the tenant's pool.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import bson
from bson.timestamp import Timestamp
from pymongo.errors import InvalidOperation, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from ._calls import ASYNC_BOUND_SESSION, BOUND_SESSION, Invoke, SessionCall, Sleep, run_async, run_sync
from ._core import Session as _RawSession

if TYPE_CHECKING:
    # Where type checkers find them: pymongo.client_session re-exports them with a star import.
    from pymongo.client_session_shared import SessionOptions, TransactionOptions

    from .asynchronous import AsyncTenantClient
    from .client import TenantClient
else:
    from pymongo.client_session import SessionOptions, TransactionOptions

T = TypeVar("T")
_Step = Generator[Any, Any, T]

# pymongo's limit for retrying a transaction in with_transaction, and its backoff between attempts.
_WITH_TRANSACTION_RETRY_TIME_LIMIT = 120
_BACKOFF_INITIAL = 0.005
_BACKOFF_MAX = 0.5


def _within_time_limit(start: float, backoff: float = 0) -> bool:
    return time.monotonic() + backoff - start < _WITH_TRANSACTION_RETRY_TIME_LIMIT


def _max_time_expired_error(exc: PyMongoError) -> bool:
    """A commit that ran out of maxCommitTimeMS is not retried (pymongo's rule)."""
    return isinstance(exc, OperationFailure) and exc.code == 50


def transaction_options(
    read_concern: ReadConcern | None,
    write_concern: WriteConcern | None,
    read_preference: Any,
    max_commit_time_ms: int | None,
) -> bytes:
    """The driver's transaction options. The read preference is not among them: it is checked here as
    pymongo's ``TransactionOptions`` checks it, and applied by the Python layer to each read (which, as in
    pymongo, refuses to run a read in a transaction whose read preference is not primary)."""
    if read_preference is not None and not isinstance(read_preference, _ServerMode):
        raise TypeError(
            f"{read_preference!r} is not valid for read_preference. See pymongo.read_preferences for valid "
            "options."
        )
    opts: dict[str, Any] = {}
    if read_concern is not None and read_concern.level is not None:
        opts["readConcern"] = {"level": read_concern.level}
    if write_concern is not None and not write_concern.is_server_default:
        wc = dict(write_concern.document)
        if "wtimeout" in wc:
            wc["wtimeout"] = int(wc["wtimeout"])
        opts["writeConcern"] = wc
    if max_commit_time_ms is not None:
        opts["maxCommitTimeMS"] = max_commit_time_ms
    return bson.encode(opts)


class _Session:
    """What the sync and async sessions share: state, properties, and every step as a generator."""

    def __init__(self, client: TenantClient, raw: _RawSession, options: SessionOptions) -> None:
        self._client = client
        self._raw: _RawSession | None = raw
        self._options = options
        self._ended = False
        # The read preference of the transaction in progress.
        self._txn_read_pref: _ServerMode | None = None
        # The times the core session had when this one ended (pymongo's ended sessions report them).
        self._final_cluster_time: Mapping[str, Any] | None = None
        self._final_operation_time: Timestamp | None = None

    @property
    def client(self) -> Any:
        """The tenant's client that started this session."""
        return self._client

    @property
    def options(self) -> SessionOptions:
        """The ``SessionOptions`` this session was started with."""
        return self._options

    @property
    def session_id(self) -> Any:
        """The session's ``lsid`` document, ``{"id": Binary(..., 4)}``."""
        self._check_ended()
        assert self._raw is not None
        return bson.decode(self._raw.session_id)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on this session."""
        return self._raw is not None and self._raw.in_transaction

    @property
    def has_ended(self) -> bool:
        """Whether ``end_session`` has been called (or the ``with`` block left)."""
        return self._ended

    @property
    def cluster_time(self) -> Mapping[str, Any] | None:
        """The highest cluster time this session has seen (the ``$clusterTime`` of the server's
        replies, ``{"clusterTime": Timestamp, "signature": {...}}``), or None before its first command.
        If an operation of the session is running in another thread or task, waits for it to finish."""
        if self._raw is None:
            return self._final_cluster_time
        data = self._raw.cluster_time
        return None if data is None else bson.decode(data)

    @property
    def operation_time(self) -> Timestamp | None:
        """The ``operationTime`` of the last command of this session, or None before its first."""
        if self._raw is None:
            return self._final_operation_time
        at = self._raw.operation_time
        return None if at is None else Timestamp(*at)

    def advance_cluster_time(self, cluster_time: Mapping[str, Any]) -> None:
        """Advances this session's cluster time to ``cluster_time`` (another session's ``cluster_time``)
        if it is later, so that the next causally consistent operation follows that session's."""
        if not isinstance(cluster_time, Mapping):
            raise TypeError(
                f"cluster_time must be a subclass of collections.Mapping, not {type(cluster_time)}"
            )
        if not isinstance(cluster_time.get("clusterTime"), Timestamp):
            raise TypeError("Invalid cluster_time")
        if not isinstance(cluster_time.get("signature"), Mapping):
            # pymongo takes it and the server refuses the next command ("Missing expected field
            # \"signature\""); the driver cannot hold a cluster time without one.
            raise ValueError(
                "cluster_time has no 'signature' document: pass another session's cluster_time as it is"
            )
        if self._raw is None:
            current = self._final_cluster_time
            if current is None or cluster_time["clusterTime"] > current["clusterTime"]:
                self._final_cluster_time = cluster_time
            return
        self._raw.advance_cluster_time(bson.encode(cluster_time))

    def advance_operation_time(self, operation_time: Timestamp) -> None:
        """Advances this session's operation time to ``operation_time`` (another session's
        ``operation_time``) if it is later: its next causally consistent read sees what that
        session wrote."""
        if not isinstance(operation_time, Timestamp):
            raise TypeError(
                f"operation_time must be an instance of bson.timestamp.Timestamp, not {type(operation_time)}"
            )
        if self._raw is None:
            current = self._final_operation_time
            self._final_operation_time = operation_time if current is None else max(current, operation_time)
            return
        self._raw.advance_operation_time(operation_time.time, operation_time.inc)

    def _txn_read_preference(self) -> _ServerMode | None:
        """The transaction's read preference while one is in progress (pymongo's name)."""
        return self._txn_read_pref if self.in_transaction else None

    def _check_ended(self) -> _RawSession:
        """The core session; InvalidOperation once ended."""
        if self._ended:
            raise InvalidOperation("Cannot use ended session")
        assert self._raw is not None  # cleared only as the session ends
        return self._raw

    def _handle(self, user_id: str) -> _RawSession:
        """The core session, for an operation of ``user_id``."""
        self._check_ended()
        if user_id != self._client.user_id:
            raise InvalidOperation(
                f"this session belongs to tenant {self._client.user_id!r}, not {user_id!r}; start a session "
                "from the tenant's own client"
            )
        assert self._raw is not None
        return self._raw

    def _inherit(self, name: str, value: Any) -> Any:
        """An option of a transaction: the one given, else the session's default_transaction_options'."""
        if value is not None:
            return value
        defaults = self._options.default_transaction_options
        return getattr(defaults, name) if defaults is not None else None

    def _gen_start_transaction(
        self,
        read_concern: ReadConcern | None,
        write_concern: WriteConcern | None,
        read_preference: Any,
        max_commit_time_ms: int | None,
    ) -> _Step[None]:
        raw = self._check_ended()
        if self._options.snapshot:
            raise InvalidOperation("Transactions are not supported in snapshot sessions")
        if self.in_transaction:
            raise InvalidOperation("Transaction already in progress")
        spec = transaction_options(
            self._inherit("read_concern", read_concern),
            self._inherit("write_concern", write_concern),
            self._inherit("read_preference", read_preference),
            self._inherit("max_commit_time_ms", max_commit_time_ms),
        )
        yield SessionCall(raw, "start_transaction", (spec,))
        # As pymongo's: the one given, else the session's default, else the client's.
        given = self._inherit("read_preference", read_preference)
        self._txn_read_pref = given or self._client.read_preference

    def _gen_commit_transaction(self) -> _Step[None]:
        yield SessionCall(self._check_ended(), "commit_transaction")

    def _gen_abort_transaction(self) -> _Step[None]:
        yield SessionCall(self._check_ended(), "abort_transaction")

    def _gen_exit_transaction(self, failed: bool) -> _Step[None]:
        """Leaving a ``start_transaction`` block: commit on success, abort on error."""
        if self.in_transaction:
            if failed:
                yield from self._gen_abort_transaction()
            else:
                yield from self._gen_commit_transaction()

    def _gen_with_transaction(
        self,
        callback: Callable[[Any], Any],
        read_concern: ReadConcern | None,
        write_concern: WriteConcern | None,
        read_preference: Any,
        max_commit_time_ms: int | None,
    ) -> _Step[Any]:
        start = time.monotonic()
        retry = 0
        last_error: BaseException | None = None
        while True:
            if retry:
                backoff = random.random() * min(_BACKOFF_INITIAL * (1.5**retry), _BACKOFF_MAX)
                if not _within_time_limit(start, backoff):
                    assert last_error is not None
                    raise last_error
                yield Sleep(backoff)
            retry += 1
            yield from self._gen_start_transaction(
                read_concern, write_concern, read_preference, max_commit_time_ms
            )
            try:
                result = yield Invoke(callback, (self,))
            except BaseException as exc:  # cancellation and KeyboardInterrupt abort too
                last_error = exc
                if self.in_transaction:
                    yield from self._gen_abort_transaction()
                if (
                    isinstance(exc, PyMongoError)
                    and exc.has_error_label("TransientTransactionError")
                    and _within_time_limit(start)
                ):
                    continue
                raise
            if not self.in_transaction:
                return result  # the callback committed or aborted itself
            while True:
                try:
                    yield from self._gen_commit_transaction()
                except PyMongoError as exc:
                    last_error = exc
                    if (
                        exc.has_error_label("UnknownTransactionCommitResult")
                        and not _max_time_expired_error(exc)
                        and _within_time_limit(start)
                    ):
                        continue
                    if exc.has_error_label("TransientTransactionError") and _within_time_limit(start):
                        break
                    raise
                return result

    def _gen_end_session(self) -> _Step[None]:
        if self._ended:
            return
        try:
            if self.in_transaction:
                try:
                    yield from self._gen_abort_transaction()
                except PyMongoError:
                    pass
        finally:
            # Even if the abort was cancelled: the core session, let go of, aborts a transaction still
            # open, and returns the tenant's lease (whatever Python objects still refer to it).
            self._ended = True
            raw, self._raw = self._raw, None
            if raw is not None:
                cluster_time, operation_time = raw.end()
                if cluster_time is not None:
                    self._final_cluster_time = bson.decode(cluster_time)
                if operation_time is not None:
                    self._final_operation_time = Timestamp(*operation_time)


class _TransactionContext:
    """``with session.start_transaction():`` commits on success and aborts on error."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    def __enter__(self) -> ClientSession:
        return self._session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run_sync(self._session._gen_exit_transaction(exc is not None))


class _BoundSessionContext:
    """What ``ClientSession.bind()`` returns (pymongo 4.17's): inside ``with session.bind():`` every
    operation of the session's client given no ``session=`` runs in it, and one of another client
    (another tenant, or another manager) raises InvalidOperation. The binding is a ContextVar, so it is
    this thread's (or asyncio task's) only. Leaving the block ends the session unless
    ``end_session=False``."""

    def __init__(self, session: ClientSession, end_session: bool) -> None:
        self._session = session
        self._session_token: Token[Any] | None = None
        self._end_session = end_session

    def __enter__(self) -> ClientSession:
        self._session_token = BOUND_SESSION.set(self._session)
        return self._session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session_token:
            BOUND_SESSION.reset(self._session_token)
            self._session_token = None
        if self._end_session:
            self._session.end_session()


class ClientSession(_Session):
    """A session of one tenant. Pass it as ``session=`` to that tenant's operations, or bind it
    (``with session.bind():``) to run in it every operation of the block given none."""

    @property
    def client(self) -> TenantClient:
        """The tenant's client that started this session."""
        return self._client

    def start_transaction(
        self,
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> _TransactionContext:
        """Starts a transaction; as a context manager it commits on success and aborts on error."""
        run_sync(
            self._gen_start_transaction(read_concern, write_concern, read_preference, max_commit_time_ms)
        )
        return _TransactionContext(self)

    def commit_transaction(self) -> None:
        """Commits the open transaction, as pymongo's ``commit_transaction`` (retried once on a retryable
        error). Raises ``InvalidOperation`` if none is open, ``OperationFailure`` with the server's error
        labels."""
        run_sync(self._gen_commit_transaction())

    def abort_transaction(self) -> None:
        """Aborts the open transaction, as pymongo's ``abort_transaction`` (an abort cut short ends
        quietly, as pymongo ignores abort errors). Raises ``InvalidOperation`` if none is open."""
        run_sync(self._gen_abort_transaction())

    def with_transaction(
        self,
        callback: Callable[[ClientSession], T],
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> T:
        """Runs ``callback(session)`` in a transaction and commits it, retrying as pymongo does."""
        result: T = run_sync(
            self._gen_with_transaction(
                callback, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        )
        return result

    def end_session(self) -> None:
        """Ends the session (aborting an open transaction)."""
        run_sync(self._gen_end_session())

    def bind(self, end_session: bool = True) -> _BoundSessionContext:
        """``with session.bind():`` runs in this session every operation of its client, inside the block,
        given no ``session=`` (pymongo 4.17); leaving the block ends the session unless
        ``end_session=False``."""
        return _BoundSessionContext(self, end_session)

    def __enter__(self) -> ClientSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end_session()


class _AsyncTransactionContext:
    """What ``AsyncClientSession.start_transaction()`` returns. Awaiting it starts the transaction
    (pymongo: ``async with await session.start_transaction():``, or ``await session.start_transaction()``
    alone); ``async with`` starts it if that was not done (Motor's ``async with
    session.start_transaction():``). Leaving the block commits on success and aborts on error (a
    cancelled task aborts)."""

    def __init__(self, session: AsyncClientSession, options: tuple[Any, ...]) -> None:
        self._session = session
        self._options = options
        self._started = False

    async def _start(self) -> _AsyncTransactionContext:
        if not self._started:
            await run_async(self._session._gen_start_transaction(*self._options))
            self._started = True
        return self

    def __await__(self) -> Generator[Any, None, _AsyncTransactionContext]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncClientSession:
        await self._start()
        return self._session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await run_async(self._session._gen_exit_transaction(exc is not None))

    def __enter__(self) -> Any:
        raise TypeError("use 'async with' with an AsyncClientSession's transaction")

    def __exit__(self, *args: Any) -> None:  # pragma: no cover - __enter__ always raises
        pass


class _AsyncBoundSessionContext:
    """What ``AsyncClientSession.bind()`` returns: ``async with session.bind():`` (see
    ``_BoundSessionContext``); the binding is the asyncio task's."""

    def __init__(self, session: AsyncClientSession, end_session: bool) -> None:
        self._session = session
        self._session_token: Token[Any] | None = None
        self._end_session = end_session

    async def __aenter__(self) -> AsyncClientSession:
        self._session_token = ASYNC_BOUND_SESSION.set(self._session)
        return self._session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session_token:
            ASYNC_BOUND_SESSION.reset(self._session_token)
            self._session_token = None
        if self._end_session:
            await self._session.end_session()

    def __enter__(self) -> Any:
        raise TypeError("use 'async with' with an AsyncClientSession's bind()")

    def __exit__(self, *args: Any) -> None:  # pragma: no cover - __enter__ always raises
        pass


class AsyncClientSession(_Session):
    """pymongo's ``AsyncClientSession`` for one tenant: ``async with client.start_session() as s:``
    (``async with await client.start_session()`` works too), ``async with await s.start_transaction():``,
    ``await s.with_transaction(callback)``, ``await s.end_session()``. Pass it as ``session=`` to the
    tenant's async operations."""

    @property
    def client(self) -> AsyncTenantClient:
        """The tenant's client that started this session."""
        return cast("AsyncTenantClient", self._client)

    def start_transaction(
        self,
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> _AsyncTransactionContext:
        """Starts a transaction once awaited or entered with ``async with``."""
        return _AsyncTransactionContext(
            self, (read_concern, write_concern, read_preference, max_commit_time_ms)
        )

    async def commit_transaction(self) -> None:
        """Commits the open transaction, as pymongo's ``commit_transaction`` (retried once on a retryable
        error). Raises ``InvalidOperation`` if none is open, ``OperationFailure`` with the server's error
        labels."""
        await run_async(self._gen_commit_transaction())

    async def abort_transaction(self) -> None:
        """Aborts the open transaction, as pymongo's ``abort_transaction`` (an abort cut short ends
        quietly, as pymongo ignores abort errors). Raises ``InvalidOperation`` if none is open."""
        await run_async(self._gen_abort_transaction())

    async def with_transaction(
        self,
        callback: Callable[[AsyncClientSession], Awaitable[T]],
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> T:
        """Runs ``await callback(session)`` in a transaction and commits it, retrying as pymongo does."""
        return await run_async(
            self._gen_with_transaction(
                callback, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        )

    async def end_session(self) -> None:
        """Ends the session (aborting an open transaction)."""
        await run_async(self._gen_end_session())

    def bind(self, end_session: bool = True) -> _AsyncBoundSessionContext:
        """``async with session.bind():`` runs in this session every async operation of its client,
        inside the block, given no ``session=`` (pymongo 4.17); leaving the block ends the session unless
        ``end_session=False``."""
        return _AsyncBoundSessionContext(self, end_session)

    async def _itself(self) -> AsyncClientSession:
        return self

    def __await__(self) -> Generator[Any, None, AsyncClientSession]:
        """``await client.start_session()`` gives the session (the shape of pymongo 4.9 and Motor)."""
        return self._itself().__await__()

    async def __aenter__(self) -> AsyncClientSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.end_session()

    def __enter__(self) -> Any:
        raise TypeError("use 'async with' with AsyncClientSession")

    def __exit__(self, *args: Any) -> None:  # pragma: no cover - __enter__ always raises
        pass


def session_options(
    causal_consistency: bool | None, default_transaction_options: Any, snapshot: bool | None
) -> SessionOptions:
    """pymongo's SessionOptions (which checks the arguments as pymongo does: ``ConfigurationError`` for a
    snapshot session with ``causal_consistency=True``)."""
    if default_transaction_options is not None and not isinstance(
        default_transaction_options, TransactionOptions
    ):
        raise TypeError(
            "default_transaction_options must be an instance of pymongo.client_session.TransactionOptions, "
            f"not: {default_transaction_options!r}"
        )
    return SessionOptions(causal_consistency, default_transaction_options, snapshot)
