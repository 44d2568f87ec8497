"""ClientSession: pymongo's session and transaction API on one tenant's client.

``with_transaction`` follows pymongo's retry rules: the whole callback is retried on a
``TransientTransactionError`` label, the commit on ``UnknownTransactionCommitResult``, for up to 120 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import bson
from pymongo.errors import InvalidOperation, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from ._core import Session as _RawSession

if TYPE_CHECKING:
    from .client import TenantClient

T = TypeVar("T")

# pymongo's limit for retrying a transaction in with_transaction.
_WITH_TRANSACTION_RETRY_TIME_LIMIT = 120


def _within_time_limit(start: float) -> bool:
    return time.monotonic() - start < _WITH_TRANSACTION_RETRY_TIME_LIMIT


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


class ClientSession:
    """A session of one tenant. Pass it as ``session=`` to that tenant's operations."""

    def __init__(self, client: TenantClient, raw: _RawSession) -> None:
        self._client = client
        self._raw = raw
        self._in_transaction = False
        self._ended = False
        # The read preference of the transaction in progress.
        self._txn_read_pref: _ServerMode | None = None

    @property
    def client(self) -> TenantClient:
        return self._client

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    @property
    def has_ended(self) -> bool:
        return self._ended

    def _txn_read_preference(self) -> _ServerMode | None:
        """The transaction's read preference while one is in progress (pymongo's name)."""
        return self._txn_read_pref if self._in_transaction else None

    def _check_ended(self) -> None:
        if self._ended:
            raise InvalidOperation("Cannot use ended session")

    def _handle(self, user_id: str) -> _RawSession:
        """The core session, for an operation of ``user_id``."""
        self._check_ended()
        if user_id != self._client.user_id:
            raise InvalidOperation(
                f"this session belongs to tenant {self._client.user_id!r}, not {user_id!r}; start a session "
                "from the tenant's own client"
            )
        return self._raw

    @contextmanager
    def _transaction_context(self) -> Iterator[ClientSession]:
        try:
            yield self
        except BaseException:
            if self._in_transaction:
                self.abort_transaction()
            raise
        else:
            if self._in_transaction:
                self.commit_transaction()

    def start_transaction(
        self,
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> Any:
        """Starts a transaction; as a context manager it commits on success and aborts on error."""
        self._check_ended()
        if self._in_transaction:
            raise InvalidOperation("Transaction already in progress")
        self._raw.start_transaction(
            transaction_options(read_concern, write_concern, read_preference, max_commit_time_ms)
        )
        # As pymongo's: the one given, else the client's (tenantpool has no default_transaction_options).
        self._txn_read_pref = read_preference or self._client.read_preference
        self._in_transaction = True
        return self._transaction_context()

    def commit_transaction(self) -> None:
        self._check_ended()
        try:
            self._raw.commit_transaction()
        except PyMongoError as exc:
            # Only an unknown result leaves the transaction open for a retried commit.
            if not exc.has_error_label("UnknownTransactionCommitResult"):
                self._in_transaction = False
            raise
        self._in_transaction = False

    def abort_transaction(self) -> None:
        self._check_ended()
        try:
            self._raw.abort_transaction()
        finally:
            self._in_transaction = False

    def with_transaction(
        self,
        callback: Callable[[ClientSession], T],
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> T:
        """Runs ``callback(session)`` in a transaction and commits it, retrying as pymongo does."""
        start = time.monotonic()
        while True:
            self.start_transaction(read_concern, write_concern, read_preference, max_commit_time_ms)
            try:
                result = callback(self)
            except BaseException as exc:
                if self._in_transaction:
                    self.abort_transaction()
                if (
                    isinstance(exc, PyMongoError)
                    and exc.has_error_label("TransientTransactionError")
                    and _within_time_limit(start)
                ):
                    continue
                raise
            if not self._in_transaction:
                return result  # the callback committed or aborted itself
            while True:
                try:
                    self.commit_transaction()
                except PyMongoError as exc:
                    if exc.has_error_label("UnknownTransactionCommitResult") and _within_time_limit(start):
                        continue
                    if exc.has_error_label("TransientTransactionError") and _within_time_limit(start):
                        break
                    raise
                return result

    def end_session(self) -> None:
        """Ends the session (aborting an open transaction)."""
        if self._ended:
            return
        if self._in_transaction:
            try:
                self.abort_transaction()
            except PyMongoError:
                pass
        self._ended = True
        self._raw = None  # type: ignore[assignment]  # releases the core session and its lease

    def __enter__(self) -> ClientSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end_session()
