"""The asyncio GridFS classes: pymongo's ``AsyncGridFSBucket``, ``AsyncGridFS``, ``AsyncGridIn``,
``AsyncGridOut`` and ``AsyncGridOutCursor`` on a tenant's ``AsyncDatabase``.

Each operation awaits the same generator as its blocking twin (``run_async``): the round trips happen on
tenantpool's tokio runtime and the event loop never blocks. As in pymongo, a source whose ``read`` is a
coroutine function (an async file object) is awaited, and so is a destination's ``write``.

    bucket = AsyncGridFSBucket(manager.get_database("user_a"))
    file_id = await bucket.upload_from_stream("notes.txt", b"data")
    grid_out = await bucket.open_download_stream(file_id)
    data = await grid_out.read()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bson.objectid import ObjectId
from pymongo.errors import InvalidOperation
from pymongo.write_concern import WriteConcern

from .._calls import ASYNC_BOUND_SESSION, run_async
from ..asynchronous import AsyncCollection, AsyncCursor, AsyncDatabase
from ._shared import DEFAULT_CHUNK_SIZE, doc_of
from .bucket import GridFSBucket, _BucketBase
from .grid_in import GridIn, _GridInBase
from .grid_out import GridOut, _GridOutBase, _GridOutCursorMixin
from .legacy import GridFS, _GridFSBase

if TYPE_CHECKING:
    from pymongo.read_preferences import _ServerMode

    from ..session import AsyncClientSession


class AsyncGridIn(_GridInBase):
    """A file being written to GridFS (pymongo's ``AsyncGridIn``): ``await write(...)``, ``await
    close()``, or ``async with``."""

    _bound_sessions = ASYNC_BOUND_SESSION
    _sync = False

    def __init__(
        self, root_collection: AsyncCollection, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> None:
        """Write a file to GridFS; the arguments are :class:`~tenantpool.gridfs.GridIn`'s."""
        super().__init__(root_collection, session, **kwargs)

    def _set_field(self, name: str, value: Any, is_property: bool = True) -> None:
        # Storing a field of a closed file is a round trip, which an assignment cannot await. pymongo
        # raises InvalidOperation for its properties (``filename``), AttributeError for other fields.
        if self._closed:
            error = InvalidOperation if is_property else AttributeError
            raise error(
                "AsyncGridIn does not support __setattr__ after being closed(). Set the attribute before "
                "closing the file or use AsyncGridIn.set() instead"
            )
        self._file[name] = value

    @doc_of(GridIn.set)
    async def set(self, name: str, value: Any) -> None:
        await run_async(self._gen_set(name, value))

    @doc_of(GridIn.abort)
    async def abort(self) -> None:
        await run_async(self._gen_abort())

    @doc_of(GridIn.close)
    async def close(self) -> None:
        await run_async(self._gen_close())

    @doc_of(GridIn.write)
    async def write(self, data: Any) -> None:
        await run_async(self._gen_write(data))

    @doc_of(GridIn.writelines)
    async def writelines(self, sequence: Iterable[Any]) -> None:
        await run_async(self._gen_writelines(sequence))

    async def __aenter__(self) -> AsyncGridIn:
        """Support for the async context manager protocol."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Close the file if no exceptions occur and allow exceptions to propagate."""
        if exc_type is None:
            await self.close()
        else:
            self._mark_closed()


class AsyncGridOut(_GridOutBase):
    """A file read from GridFS (pymongo's ``AsyncGridOut``). Its attributes (``filename``,
    ``length``...) are known once it is open: :meth:`AsyncGridFSBucket.open_download_stream` and the
    files of :meth:`AsyncGridFSBucket.find` are; one made directly needs ``await grid_out.open()``.
    ``async for line in grid_out`` iterates lines; :meth:`readchunk` reads chunk by chunk."""

    def __init__(
        self,
        root_collection: AsyncCollection,
        file_id: Any = None,
        file_document: Any = None,
        session: AsyncClientSession | None = None,
    ) -> None:
        """Read a file from GridFS; the arguments are :class:`~tenantpool.gridfs.GridOut`'s."""
        self._init(root_collection, file_id, file_document, session, sync=False)
        self.closed = False

    def _file_document(self, name: str = "file's") -> Mapping[str, Any]:
        if not self._file:
            raise InvalidOperation(f"You must call AsyncGridOut.open() before accessing the {name} property")
        return self._file  # type: ignore[no-any-return]

    @doc_of(GridOut.open)
    async def open(self) -> None:
        await run_async(self._gen_open())

    @doc_of(GridOut.readchunk)
    async def readchunk(self) -> bytes:
        return await run_async(self._gen_readchunk())

    @doc_of(GridOut.read)
    async def read(self, size: int = -1) -> bytes:
        return await run_async(self._gen_read_size_or_line(size))

    @doc_of(GridOut.readline)
    async def readline(self, size: int = -1) -> bytes:
        return await run_async(self._gen_read_size_or_line(size, line=True))

    @doc_of(GridOut.readlines)
    async def readlines(self, size: int = -1) -> list[bytes]:
        return await run_async(self._gen_readlines(size))

    async def to_list(self) -> list[bytes]:
        """The remaining lines of the file."""
        return await run_async(self._gen_readlines())

    @doc_of(GridOut.seek)
    async def seek(self, pos: int, whence: int = 0) -> int:
        return self._seek(pos, whence)

    def __aiter__(self) -> AsyncGridOut:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line:
            return line
        raise StopAsyncIteration

    def _close_now(self) -> None:
        self._close_chunks()
        self.closed = True

    @doc_of(GridOut.close)
    async def close(self) -> None:
        self._close_now()

    async def __aenter__(self) -> AsyncGridOut:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._close_now()


class AsyncGridOutCursor(_GridOutCursorMixin, AsyncCursor):
    """A cursor over the files of a GridFS query (pymongo's ``AsyncGridOutCursor``): ``async for
    grid_out in cursor`` yields :class:`AsyncGridOut` objects, already open."""

    _grid_out_class = AsyncGridOut

    def __init__(
        self,
        collection: AsyncCollection,
        filter: Mapping[str, Any] | None = None,
        skip: int = 0,
        limit: int = 0,
        no_cursor_timeout: bool = False,
        sort: Any | None = None,
        batch_size: int = 0,
        session: AsyncClientSession | None = None,
    ) -> None:
        """Create a new cursor; see :meth:`AsyncGridFSBucket.find`."""
        self._init_grid(collection, filter, skip, limit, no_cursor_timeout, sort, batch_size, session)

    async def next(self) -> AsyncGridOut:
        """Get next AsyncGridOut object from cursor."""
        return self._grid_out(await AsyncCursor.__anext__(self))  # type: ignore[no-any-return]

    __anext__ = next

    async def to_list(self, length: int | None = None) -> list[AsyncGridOut]:
        """The remaining files as AsyncGridOut objects, or at most ``length`` of them."""
        return await run_async(self._gen_to_list(length))

    def __aiter__(self) -> AsyncGridOutCursor:
        return self


class AsyncGridFSBucket(_BucketBase):
    """pymongo's ``AsyncGridFSBucket`` on a tenant's :class:`~tenantpool.AsyncDatabase`; the same
    files, layout and indexes as :class:`~tenantpool.gridfs.GridFSBucket`."""

    _bound_sessions = ASYNC_BOUND_SESSION
    _database_class = AsyncDatabase
    _twin = "GridFSBucket"
    _grid_in_class = AsyncGridIn
    _grid_out_class = AsyncGridOut

    @doc_of(GridFSBucket.__init__)
    def __init__(
        self,
        db: AsyncDatabase,
        bucket_name: str = "fs",
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
        write_concern: WriteConcern | None = None,
        read_preference: _ServerMode | None = None,
    ) -> None:
        super().__init__(db, bucket_name, chunk_size_bytes, write_concern, read_preference)

    @doc_of(GridFSBucket.open_upload_stream)
    def open_upload_stream(
        self,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: AsyncClientSession | None = None,
    ) -> AsyncGridIn:
        return self._grid_in(None, filename, chunk_size_bytes, metadata, session)  # type: ignore[no-any-return]

    @doc_of(GridFSBucket.open_upload_stream_with_id)
    def open_upload_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: AsyncClientSession | None = None,
    ) -> AsyncGridIn:
        return self._grid_in(file_id, filename, chunk_size_bytes, metadata, session)  # type: ignore[no-any-return]

    @doc_of(GridFSBucket.upload_from_stream)
    async def upload_from_stream(
        self,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: AsyncClientSession | None = None,
    ) -> ObjectId:
        grid_in = self._grid_in(None, filename, chunk_size_bytes, metadata, self._session(session))
        await run_async(self._gen_upload(grid_in, source))
        return grid_in._id  # type: ignore[no-any-return]

    @doc_of(GridFSBucket.upload_from_stream_with_id)
    async def upload_from_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: AsyncClientSession | None = None,
    ) -> None:
        grid_in = self._grid_in(file_id, filename, chunk_size_bytes, metadata, self._session(session))
        await run_async(self._gen_upload(grid_in, source))

    @doc_of(GridFSBucket.open_download_stream)
    async def open_download_stream(
        self, file_id: Any, session: AsyncClientSession | None = None
    ) -> AsyncGridOut:
        return await run_async(self._gen_open_download_stream(file_id, self._session(session)))

    @doc_of(GridFSBucket.download_to_stream)
    async def download_to_stream(
        self, file_id: Any, destination: Any, session: AsyncClientSession | None = None
    ) -> None:
        grid_out = await self.open_download_stream(file_id, session)
        await run_async(self._gen_download(grid_out, destination))

    @doc_of(GridFSBucket.open_download_stream_by_name)
    async def open_download_stream_by_name(
        self, filename: str, revision: int = -1, session: AsyncClientSession | None = None
    ) -> AsyncGridOut:
        return await run_async(
            self._gen_open_download_stream_by_name(filename, revision, self._session(session))
        )

    @doc_of(GridFSBucket.download_to_stream_by_name)
    async def download_to_stream_by_name(
        self, filename: str, destination: Any, revision: int = -1, session: AsyncClientSession | None = None
    ) -> None:
        grid_out = await self.open_download_stream_by_name(filename, revision, session)
        await run_async(self._gen_download(grid_out, destination))

    @doc_of(GridFSBucket.delete)
    async def delete(self, file_id: Any, session: AsyncClientSession | None = None) -> None:
        await run_async(self._gen_delete(file_id, self._session(session)))

    @doc_of(GridFSBucket.delete_by_name)
    async def delete_by_name(self, filename: str, session: AsyncClientSession | None = None) -> None:
        await run_async(self._gen_delete_by_name(filename, self._session(session)))

    @doc_of(GridFSBucket.find)
    def find(self, *args: Any, **kwargs: Any) -> AsyncGridOutCursor:
        return AsyncGridOutCursor(self._collection, *args, **kwargs)

    @doc_of(GridFSBucket.rename)
    async def rename(
        self, file_id: Any, new_filename: str, session: AsyncClientSession | None = None
    ) -> None:
        await run_async(self._gen_rename(file_id, new_filename, self._session(session)))

    @doc_of(GridFSBucket.rename_by_name)
    async def rename_by_name(
        self, filename: str, new_filename: str, session: AsyncClientSession | None = None
    ) -> None:
        await run_async(self._gen_rename_by_name(filename, new_filename, self._session(session)))

    @doc_of(GridFSBucket.drop)
    async def drop(self, session: AsyncClientSession | None = None) -> None:
        await run_async(self._gen_drop(self._session(session)))


class AsyncGridFS(_GridFSBase):
    """pymongo's legacy ``AsyncGridFS`` on a tenant's :class:`~tenantpool.AsyncDatabase`."""

    _bound_sessions = ASYNC_BOUND_SESSION
    _database_class = AsyncDatabase
    _twin = "GridFS"
    _grid_in_class = AsyncGridIn
    _grid_out_class = AsyncGridOut

    @doc_of(GridFS.__init__)
    def __init__(self, database: AsyncDatabase, collection: str = "fs") -> None:
        super().__init__(database, collection)

    def _cursor(self, *args: Any, **kwargs: Any) -> AsyncGridOutCursor:
        return AsyncGridOutCursor(self._collection, *args, **kwargs)

    @doc_of(GridFS.new_file)
    def new_file(self, **kwargs: Any) -> AsyncGridIn:
        return AsyncGridIn(self._collection, **kwargs)

    @doc_of(GridFS.put)
    async def put(self, data: Any, **kwargs: Any) -> Any:
        return await run_async(self._gen_put(data, kwargs))

    @doc_of(GridFS.get)
    async def get(self, file_id: Any, session: AsyncClientSession | None = None) -> AsyncGridOut:
        return await run_async(self._gen_get(file_id, self._session(session)))

    @doc_of(GridFS.get_version)
    async def get_version(
        self,
        filename: str | None = None,
        version: int | None = -1,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> AsyncGridOut:
        return await run_async(self._gen_get_version(filename, version, self._session(session), kwargs))

    @doc_of(GridFS.get_last_version)
    async def get_last_version(
        self, filename: str | None = None, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> AsyncGridOut:
        return await self.get_version(filename=filename, session=session, **kwargs)

    @doc_of(GridFS.delete)
    async def delete(self, file_id: Any, session: AsyncClientSession | None = None) -> None:
        await run_async(self._gen_delete(file_id, self._session(session)))

    @doc_of(GridFS.list)
    async def list(self, session: AsyncClientSession | None = None) -> list[str]:
        return await run_async(self._gen_list(self._session(session)))

    @doc_of(GridFS.find_one)
    async def find_one(
        self, filter: Any | None = None, session: AsyncClientSession | None = None, *args: Any, **kwargs: Any
    ) -> AsyncGridOut | None:
        return await run_async(self._gen_find_one(filter, self._session(session), args, kwargs))

    @doc_of(GridFS.find)
    def find(self, *args: Any, **kwargs: Any) -> AsyncGridOutCursor:
        return AsyncGridOutCursor(self._collection, *args, **kwargs)

    @doc_of(GridFS.exists)
    async def exists(
        self, document_or_id: Any | None = None, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> bool:
        return await run_async(self._gen_exists(document_or_id, self._session(session), kwargs))
