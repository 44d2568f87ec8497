"""The asyncio API: pymongo's ``AsyncMongoClient`` shapes on tenantpool's Rust core.

Every operation runs the same generator as its blocking twin (see ``_calls``), driven with the core's
awaitable calls: the database round trip happens on tenantpool's tokio runtime, the event loop keeps
running, and cancelling the awaiting task releases the tenant's lease and quota slot at once.

    manager = AsyncUserConnectionManager("mongodb://localhost:27017/")
    db = manager.get_database("user_a")              # no I/O: not awaited
    await db.posts.insert_one({"title": "Hello"})
    async for post in db.posts.find().sort("_id", -1).limit(10):
        ...
    async with manager.get_client("user_a").start_session() as s:
        async with await s.start_transaction():
            await db.posts.insert_one({"title": "In a transaction"}, session=s)
    await manager.close_all()
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from ._calls import ASYNC_BOUND_SESSION, async_operations, run_async
from .change_stream import ChangeStream, CollectionChangeStream, DatabaseChangeStream
from .client import TenantClient
from .collection import Collection
from .credentials import TenantCredentials
from .cursor import CommandCursor, Cursor
from .database import Database
from .manager import UserConnectionManager
from .session import AsyncClientSession


class _AsyncIteration:
    """Async iteration over the shared cursor engine (``_BatchCursor``)."""

    _data: Any
    _killed: bool

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        if self._data or await run_async(self._gen_refresh()):  # type: ignore[attr-defined]
            return self._data.popleft()
        raise StopAsyncIteration

    async def next(self) -> Any:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise StopAsyncIteration from None

    async def to_list(self, length: int | None = None) -> list[Any]:
        """The remaining documents, or at most ``length`` of them."""
        return await run_async(self._gen_to_list(length))  # type: ignore[attr-defined]

    async def close(self) -> None:  # type: ignore[override]
        self._close()  # type: ignore[attr-defined]

    @property
    def alive(self) -> bool:
        """Whether more documents may come (without a round trip, as pymongo's async cursors)."""
        return bool(self._data) or not self._killed

    def __iter__(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' is an async iterator: use 'async for'")

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()  # type: ignore[attr-defined]


@async_operations
class AsyncCursor(_AsyncIteration, Cursor):  # type: ignore[misc]
    """The cursor ``AsyncCollection.find`` returns: chain options, then ``async for`` or ``to_list``."""

    _bound_sessions = ASYNC_BOUND_SESSION

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return super().__getitem__(index)
        raise TypeError("AsyncCursor does not support indexing; use skip() and limit()")

    def __repr__(self) -> str:
        return f"<tenantpool.AsyncCursor object on {self._collection.full_name}>"


class AsyncCommandCursor(_AsyncIteration, CommandCursor):  # type: ignore[misc]
    """The cursor of ``aggregate``, ``list_indexes`` and ``list_collections``."""

    async def try_next(self) -> Any:  # type: ignore[override]
        return await run_async(self._gen_try_next())

    def __repr__(self) -> str:
        return f"<tenantpool.AsyncCommandCursor object on {self._database.name}>"


class AsyncChangeStream(ChangeStream):
    """pymongo's ``AsyncChangeStream``: ``async for change in stream``, ``await stream.next()``,
    ``await stream.try_next()``, ``await stream.close()``, ``async with``."""

    def __aiter__(self) -> AsyncChangeStream:
        return self

    async def try_next(self) -> Any:  # type: ignore[override]
        """The next change, or None if none came during one round (one getMore)."""
        return await run_async(self._gen_try_next())

    async def next(self) -> Any:  # type: ignore[override]
        """The next change, waiting as long as it takes; StopAsyncIteration once the stream is closed."""
        while self.alive:
            change = await self.try_next()
            if change is not None:
                return change
        raise StopAsyncIteration

    __anext__ = next

    async def close(self) -> None:  # type: ignore[override]
        ChangeStream.close(self)

    def __iter__(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' is an async iterator: use 'async for'")

    def __next__(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' is an async iterator: use 'await stream.next()'")

    def __enter__(self) -> Any:
        raise TypeError(f"use 'async with' with {type(self).__name__}")

    async def __aenter__(self) -> AsyncChangeStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ChangeStream.close(self)


class AsyncCollectionChangeStream(AsyncChangeStream, CollectionChangeStream):
    """The change stream of ``AsyncCollection.watch()``."""


class AsyncDatabaseChangeStream(AsyncChangeStream, DatabaseChangeStream):
    """The change stream of ``AsyncDatabase.watch()``."""


@async_operations
class AsyncCollection(Collection):
    """A tenant's collection; its operations are coroutines (``find`` returns an ``AsyncCursor``)."""


@async_operations
class AsyncDatabase(Database):
    """A tenant's database; ``db.posts`` is an ``AsyncCollection``."""

    _collection_class = AsyncCollection
    _cursor_class = AsyncCursor
    _command_cursor_class = AsyncCommandCursor
    _collection_change_stream_class = AsyncCollectionChangeStream
    _database_change_stream_class = AsyncDatabaseChangeStream


@async_operations
class AsyncTenantClient(TenantClient):
    """``AsyncUserConnectionManager.get_client``'s result: ``client[name]`` is an ``AsyncDatabase``."""

    __slots__ = ()
    _database_class = AsyncDatabase

    @staticmethod
    def _run(operation: Any) -> Any:  # type: ignore[override]
        # pymongo's AsyncMongoClient has these properties as awaitables: ``await client.address``.
        return run_async(operation)

    def start_session(  # type: ignore[override]
        self,
        causal_consistency: bool | None = None,
        default_transaction_options: Any = None,
        snapshot: bool | None = False,
    ) -> AsyncClientSession:
        """A session on this tenant's client, as pymongo's ``AsyncMongoClient.start_session``: not a
        coroutine (it does no network I/O), used as ``async with client.start_session() as s:``. The
        session is also awaitable (to itself), so ``async with await client.start_session()`` works."""
        return super().start_session(causal_consistency, default_transaction_options, snapshot)  # type: ignore[return-value]

    @classmethod
    def _session_class(cls) -> type[Any]:
        return AsyncClientSession


class AsyncUserConnectionManager(UserConnectionManager):
    """``UserConnectionManager`` for asyncio apps (FastAPI): same constructor, strategies, tiers and
    statistics; ``get_database`` is not awaited (it does no I/O) and returns an ``AsyncDatabase``."""

    _client_class = AsyncTenantClient
    _ensure_waits = False

    def get_database(self, user_id: str, db_name: str | None = None) -> AsyncDatabase:  # type: ignore[override]
        return super().get_database(user_id, db_name)  # type: ignore[return-value]

    def get_client(self, user_id: str) -> AsyncTenantClient:  # type: ignore[override]
        return super().get_client(user_id)  # type: ignore[return-value]

    def get_platform_client(self, user_id: str) -> AsyncTenantClient:  # type: ignore[override]
        return super().get_platform_client(user_id)  # type: ignore[return-value]

    async def provision_tenant(  # type: ignore[override]
        self,
        user_id: str,
        password: str,
        *,
        roles: Any = ("readWrite",),
        username: str | None = None,
        source: str | None = None,
    ) -> TenantCredentials:
        """``UserConnectionManager.provision_tenant``, awaited: the commands run on tenantpool's runtime."""
        user_id, username, password, roles, source = self._user_args(
            user_id, password, roles, username, source
        )
        created = await self._core.provision_async(user_id, username, password, roles, source)
        self._log_provisioned(user_id, username, created)
        return TenantCredentials(username, password, source)

    async def deprovision_tenant(  # type: ignore[override]
        self, user_id: str, *, username: str | None = None, source: str | None = None
    ) -> bool:
        """``UserConnectionManager.deprovision_tenant``, awaited."""
        user_id = self._check_user(user_id)
        username = user_id if username is None else username
        return bool(await self._core.deprovision_async(user_id, username, source))

    async def place_tenant(self, user_id: str, deployment: str) -> None:  # type: ignore[override]
        """``UserConnectionManager.place_tenant``, awaited (the catalog is written on a worker thread)."""
        await asyncio.to_thread(UserConnectionManager.place_tenant, self, user_id, deployment)

    async def move_tenant(  # type: ignore[override]
        self, user_id: str, to: str, *, keep_source: bool = False, timeout: float = 60.0
    ) -> dict[str, Any]:
        """``UserConnectionManager.move_tenant``, awaited: the copy runs on a worker thread while the
        tenant's operations on this loop wait at its gate without blocking it."""
        return await asyncio.to_thread(
            UserConnectionManager.move_tenant, self, user_id, to, keep_source=keep_source, timeout=timeout
        )

    async def close_all(self) -> None:  # type: ignore[override]
        """``UserConnectionManager.close_all``, awaitable: every pool closed, the manager still usable."""
        UserConnectionManager.close_all(self)

    async def close(self) -> None:  # type: ignore[override]
        """``UserConnectionManager.close``, awaitable: closed for good."""
        UserConnectionManager.close(self)

    def __enter__(self) -> Any:
        raise TypeError("use 'async with' with AsyncUserConnectionManager")

    async def __aenter__(self) -> AsyncUserConnectionManager:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


__all__ = [
    "AsyncChangeStream",
    "AsyncClientSession",
    "AsyncCollection",
    "AsyncCollectionChangeStream",
    "AsyncCommandCursor",
    "AsyncCursor",
    "AsyncDatabase",
    "AsyncDatabaseChangeStream",
    "AsyncTenantClient",
    "AsyncUserConnectionManager",
]
