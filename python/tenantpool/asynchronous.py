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
from collections.abc import Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, cast, overload

from bson.codec_options import CodecOptions
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from . import _move
from ._batch_cursor import _BatchCursor
from ._calls import ASYNC_BOUND_SESSION, AsyncAPI, operations, run_async
from .change_stream import ChangeStream, CollectionChangeStream, DatabaseChangeStream
from .client import TenantClient
from .collection import Collection
from .credentials import TenantCredentials
from .cursor import CommandCursor, Cursor
from .database import Database
from .manager import UserConnectionManager
from .session import AsyncClientSession

if TYPE_CHECKING:
    from typing_extensions import Self

    from .session import _Session


class _AsyncIteration(_BatchCursor):
    """Async iteration over the shared cursor engine (``_BatchCursor``): the async cursors' ``next``,
    ``close`` and ``alive``; ``to_list`` and ``try_next`` are their operations, awaited."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._data or await run_async(self._gen_refresh()) > 0:
            return self._data.popleft()
        raise StopAsyncIteration

    async def _async_next(self) -> Any:
        """The next document; StopAsyncIteration once exhausted."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise StopAsyncIteration from None

    async def _async_close(self) -> None:
        """Kills the server cursor if it is still open, and releases the tenant's pool."""
        self._close()

    @property
    def alive(self) -> bool:
        """Whether more documents may come (without a round trip, as pymongo's async cursors)."""
        return bool(self._data) or not self._killed

    def __iter__(self) -> NoReturn:
        raise TypeError(f"'{type(self).__name__}' is an async iterator: use 'async for'")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()


@operations
class AsyncCursor(AsyncAPI, _AsyncIteration, Cursor):
    """The cursor ``AsyncCollection.find`` returns: chain options, then ``async for`` or ``to_list``."""

    _bound_sessions = ASYNC_BOUND_SESSION

    @overload
    def __getitem__(self, index: slice) -> Self: ...
    @overload
    def __getitem__(self, index: int) -> NoReturn: ...
    def __getitem__(self, index: Any) -> Any:
        """``cursor[a:b]``: this cursor with skip ``a`` and limit ``b - a``; no indexing (``TypeError``)."""
        if isinstance(index, slice):
            return super().__getitem__(index)
        raise TypeError("AsyncCursor does not support indexing; use skip() and limit()")

    def __repr__(self) -> str:
        return f"<tenantpool.AsyncCursor object on {self._collection.full_name}>"


@operations
class AsyncCommandCursor(AsyncAPI, _AsyncIteration, CommandCursor):
    """The cursor of ``aggregate``, ``list_indexes`` and ``list_collections``."""

    def __repr__(self) -> str:
        return f"<tenantpool.AsyncCommandCursor object on {self._database.name}>"


@operations
class AsyncChangeStream(AsyncAPI, ChangeStream):
    """pymongo's ``AsyncChangeStream``: ``async for change in stream``, ``await stream.next()``,
    ``await stream.try_next()``, ``await stream.close()``, ``async with``."""

    def __aiter__(self) -> Self:
        return self

    async def _async_next(self) -> Any:
        """The next change, waiting as long as it takes; StopAsyncIteration once the stream is closed."""
        while self.alive:
            change = await self.try_next()
            if change is not None:
                return change
        raise StopAsyncIteration

    __anext__ = _async_next

    async def _async_close(self) -> None:
        """Closes the stream: kills the server cursor and releases the tenant's pool."""
        ChangeStream.close(self)

    def __iter__(self) -> NoReturn:
        raise TypeError(f"'{type(self).__name__}' is an async iterator: use 'async for'")

    def __next__(self) -> NoReturn:
        raise TypeError(f"'{type(self).__name__}' is an async iterator: use 'await stream.next()'")

    def __enter__(self) -> NoReturn:
        raise TypeError(f"use 'async with' with {type(self).__name__}")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ChangeStream.close(self)


class AsyncCollectionChangeStream(AsyncChangeStream, CollectionChangeStream):
    """The change stream of ``AsyncCollection.watch()``."""


class AsyncDatabaseChangeStream(AsyncChangeStream, DatabaseChangeStream):
    """The change stream of ``AsyncDatabase.watch()``."""


@operations
class AsyncCollection(AsyncAPI, Collection):
    """A tenant's collection; its operations are coroutines (``find`` returns an ``AsyncCursor``)."""

    if TYPE_CHECKING:
        # What differs from Collection in type only: the same code returns the async classes here.
        @property
        def database(self) -> AsyncDatabase: ...
        def get_collection(
            self,
            name: str,
            codec_options: CodecOptions[Any] | None = None,
            read_preference: Any = None,
            write_concern: WriteConcern | None = None,
            read_concern: ReadConcern | None = None,
        ) -> AsyncCollection: ...
        def find(self, *args: Any, **kwargs: Any) -> AsyncCursor: ...
        async def aggregate(
            self,
            pipeline: Sequence[Mapping[str, Any]],
            session: _Session | None = None,
            let: Mapping[str, Any] | None = None,
            comment: Any = None,
            **kwargs: Any,
        ) -> AsyncCommandCursor: ...
        async def list_indexes(
            self, session: _Session | None = None, comment: Any = None
        ) -> AsyncCommandCursor: ...
        async def watch(
            self,
            pipeline: Sequence[Mapping[str, Any]] | None = None,
            full_document: str | None = None,
            resume_after: Mapping[str, Any] | None = None,
            max_await_time_ms: int | None = None,
            batch_size: int | None = None,
            collation: Any = None,
            start_at_operation_time: Any = None,
            session: _Session | None = None,
            start_after: Mapping[str, Any] | None = None,
            comment: Any = None,
            full_document_before_change: str | None = None,
            show_expanded_events: bool | None = None,
        ) -> AsyncCollectionChangeStream: ...


@operations
class AsyncDatabase(AsyncAPI, Database):
    """A tenant's database; ``db.posts`` is an ``AsyncCollection``."""

    _collection_class = AsyncCollection
    _cursor_class = AsyncCursor
    _command_cursor_class = AsyncCommandCursor
    _collection_change_stream_class = AsyncCollectionChangeStream
    _database_change_stream_class = AsyncDatabaseChangeStream

    if TYPE_CHECKING:
        # What differs from Database in type only: the same code returns the async classes here.
        @property
        def client(self) -> AsyncTenantClient: ...
        def __getattr__(self, name: str) -> AsyncCollection: ...
        def __getitem__(self, name: str) -> AsyncCollection: ...
        def get_collection(
            self,
            name: str,
            codec_options: CodecOptions[Any] | None = None,
            read_preference: Any = None,
            write_concern: WriteConcern | None = None,
            read_concern: ReadConcern | None = None,
        ) -> AsyncCollection: ...
        async def aggregate(
            self, pipeline: Sequence[Mapping[str, Any]], session: _Session | None = None, **kwargs: Any
        ) -> AsyncCommandCursor: ...
        async def list_collections(
            self,
            session: _Session | None = None,
            filter: Mapping[str, Any] | None = None,
            comment: Any = None,
            **kwargs: Any,
        ) -> AsyncCommandCursor: ...
        async def cursor_command(
            self,
            command: str | MutableMapping[str, Any],
            value: Any = 1,
            read_preference: Any = None,
            codec_options: CodecOptions[Any] | None = None,
            session: _Session | None = None,
            comment: Any = None,
            max_await_time_ms: int | None = None,
            **kwargs: Any,
        ) -> AsyncCommandCursor: ...
        async def watch(
            self,
            pipeline: Sequence[Mapping[str, Any]] | None = None,
            full_document: str | None = None,
            resume_after: Mapping[str, Any] | None = None,
            max_await_time_ms: int | None = None,
            batch_size: int | None = None,
            collation: Any = None,
            start_at_operation_time: Any = None,
            session: _Session | None = None,
            start_after: Mapping[str, Any] | None = None,
            comment: Any = None,
            full_document_before_change: str | None = None,
            show_expanded_events: bool | None = None,
        ) -> AsyncDatabaseChangeStream: ...


@operations
class AsyncTenantClient(AsyncAPI, TenantClient):
    """``AsyncUserConnectionManager.get_client``'s result: ``client[name]`` is an ``AsyncDatabase``.
    ``start_session`` is not a coroutine (it does no network I/O), as pymongo's
    ``AsyncMongoClient.start_session``: ``async with client.start_session() as s:``; the session is also
    awaitable (to itself), so ``async with await client.start_session()`` works."""

    __slots__ = ()
    _database_class = AsyncDatabase

    @staticmethod
    def _run(operation: Any) -> Any:
        # pymongo's AsyncMongoClient has these properties as awaitables: ``await client.address``.
        return run_async(operation)

    @classmethod
    def _session_class(cls) -> type[Any]:
        return AsyncClientSession

    if TYPE_CHECKING:
        # What differs from TenantClient in type only: the same code returns the async classes here.
        @property
        def manager(self) -> AsyncUserConnectionManager: ...
        def get_database(
            self,
            name: str | None = None,
            codec_options: CodecOptions[Any] | None = None,
            read_preference: Any = None,
            write_concern: WriteConcern | None = None,
            read_concern: ReadConcern | None = None,
        ) -> AsyncDatabase: ...
        def __getitem__(self, name: str) -> AsyncDatabase: ...
        def __getattr__(self, name: str) -> AsyncDatabase: ...
        @property
        def admin(self) -> AsyncDatabase: ...


@operations
class AsyncUserConnectionManager(AsyncAPI, UserConnectionManager):
    """``UserConnectionManager`` for asyncio apps (FastAPI): same constructor, strategies, tiers and
    statistics; ``get_database`` is not awaited (it does no I/O) and returns an ``AsyncDatabase``."""

    _client_class = AsyncTenantClient
    _ensure_waits = False

    def get_database(self, user_id: str, db_name: str | None = None) -> AsyncDatabase:
        """``UserConnectionManager.get_database``: the tenant's ``AsyncDatabase`` (not awaited: no I/O)."""
        return cast(AsyncDatabase, super().get_database(user_id, db_name))

    def get_client(self, user_id: str) -> AsyncTenantClient:
        """``UserConnectionManager.get_client``: the tenant's ``AsyncTenantClient`` (no I/O)."""
        return cast(AsyncTenantClient, super().get_client(user_id))

    def get_platform_client(self, user_id: str) -> AsyncTenantClient:
        """``UserConnectionManager.get_platform_client``, async (no I/O)."""
        return cast(AsyncTenantClient, super().get_platform_client(user_id))

    async def _async_provision_tenant(
        self,
        user_id: str,
        password: str,
        *,
        roles: Any = ("readWrite",),
        username: str | None = None,
        source: str | None = None,
    ) -> TenantCredentials:
        user_id, username, password, roles, source = self._user_args(
            user_id, password, roles, username, source
        )
        created = await self._core.provision_async(user_id, username, password, roles, source)
        self._log_provisioned(user_id, username, created)
        return TenantCredentials(username, password, source)

    async def _async_deprovision_tenant(
        self, user_id: str, *, username: str | None = None, source: str | None = None
    ) -> bool:
        user_id = self._check_user(user_id)
        username = user_id if username is None else username
        return bool(await self._core.deprovision_async(user_id, username, source))

    async def _async_place_tenant(self, user_id: str, deployment: str) -> None:
        """``UserConnectionManager.place_tenant``, awaited (the catalog is written on a worker thread)."""
        await asyncio.to_thread(UserConnectionManager.place_tenant, self, user_id, deployment)

    async def _async_move_tenant(
        self,
        user_id: str,
        to: str,
        *,
        keep_source: bool = False,
        timeout: float = 60.0,
        copy_batch_docs: int = _move.DEFAULT_COPY_BATCH_DOCS,
        copy_share: float = _move.DEFAULT_COPY_SHARE,
    ) -> dict[str, Any]:
        """``UserConnectionManager.move_tenant``, awaited: the copy runs on a worker thread while the
        tenant's operations on this loop wait at its gate without blocking it."""
        return await asyncio.to_thread(
            UserConnectionManager.move_tenant,
            self,
            user_id,
            to,
            keep_source=keep_source,
            timeout=timeout,
            copy_batch_docs=copy_batch_docs,
            copy_share=copy_share,
        )

    async def _async_close_all(self) -> None:
        UserConnectionManager.close_all(self)

    async def _async_close(self) -> None:
        UserConnectionManager.close(self)

    def __enter__(self) -> NoReturn:
        raise TypeError("use 'async with' with AsyncUserConnectionManager")

    async def __aenter__(self) -> Self:
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
