"""GridOut: a file read from GridFS, and GridOutCursor, a query's files.

A GridOut reads its chunks through one cursor on the chunks collection, in batches of about
``DOWNLOAD_BATCH_BYTES``, checking each chunk as pymongo does (missing, extra or truncated chunks raise
``CorruptGridFile``). The reads are generators of tenantpool operations, run blocking by ``GridOut`` and
awaited by ``AsyncGridOut`` (``tenantpool.gridfs.asynchronous``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from pymongo.errors import CursorNotFound

from .._calls import Operation, run_sync
from ..collection import Collection
from ..cursor import Cursor
from ._shared import (
    EMPTY,
    NEWLINE,
    CorruptGridFile,
    NoFile,
    chunk_batch_size,
    clear_type_registry,
    disallow_transactions,
    grid_out_property,
)

if TYPE_CHECKING:
    import datetime
    from types import TracebackType

    from ..session import ClientSession

_SEEK_SET, _SEEK_CUR, _SEEK_END = io.SEEK_SET, io.SEEK_CUR, io.SEEK_END


class _ChunkIterator:
    """A file's chunks, in order, from a single cursor; raises CorruptGridFile for a truncated, missing
    or extra chunk. ``gen_next`` returns None after the last chunk."""

    def __init__(self, file: Mapping[str, Any], chunks: Collection, session: Any, next_chunk: int) -> None:
        self._id = file["_id"]
        self._chunk_size = int(file["chunkSize"])
        self._length = int(file.get("length", 0))
        self._chunks = chunks
        self._session = session
        self._next_chunk = next_chunk
        self._num_chunks = math.ceil(float(self._length) / self._chunk_size)
        self._cursor: Cursor | None = None

    def expected_chunk_length(self, chunk_n: int) -> int:
        if chunk_n < self._num_chunks - 1:
            return self._chunk_size
        return self._length - (self._chunk_size * (self._num_chunks - 1))

    def _create_cursor(self) -> Cursor:
        filter: dict[str, Any] = {"files_id": {"$eq": self._id}}
        if self._next_chunk > 0:
            filter["n"] = {"$gte": self._next_chunk}
        disallow_transactions(self._session)
        self._cursor = self._chunks.find(
            filter, sort=[("n", 1)], session=self._session, batch_size=chunk_batch_size(self._chunk_size)
        )
        return self._cursor

    @staticmethod
    def _gen_pop(cursor: Cursor) -> Operation[Mapping[str, Any] | None]:
        if cursor._data or (yield from cursor._gen_refresh()):
            return cursor._data.popleft()  # type: ignore[no-any-return]
        return None

    def _gen_next_with_retry(self) -> Operation[Mapping[str, Any] | None]:
        # As pymongo: a read resumed after the server's cursor timeout (10 minutes) starts a new cursor.
        cursor = self._cursor or self._create_cursor()
        try:
            return (yield from self._gen_pop(cursor))
        except CursorNotFound:
            cursor._close()
            return (yield from self._gen_pop(self._create_cursor()))

    def gen_next(self) -> Operation[Mapping[str, Any] | None]:
        chunk = yield from self._gen_next_with_retry()
        if chunk is None:
            if self._next_chunk >= self._num_chunks:
                return None
            raise CorruptGridFile(f"no chunk #{self._next_chunk}")
        if chunk["n"] != self._next_chunk:
            self.close()
            raise CorruptGridFile(
                f"Missing chunk: expected chunk #{self._next_chunk} but found chunk with n={chunk['n']}"
            )
        if chunk["n"] >= self._num_chunks:
            # According to the spec, extra chunks are ignored if they are empty.
            if len(chunk["data"]):
                self.close()
                raise CorruptGridFile(
                    f"Extra chunk found: expected {self._num_chunks} chunks but found chunk with "
                    f"n={chunk['n']}"
                )
        expected_length = self.expected_chunk_length(chunk["n"])
        if len(chunk["data"]) != expected_length:
            self.close()
            raise CorruptGridFile(
                f"truncated chunk #{chunk['n']}: expected chunk length to be {expected_length} but "
                f"found chunk with length {len(chunk['data'])}"
            )
        self._next_chunk += 1
        return chunk

    def close(self) -> None:
        # No round trip: the core kills the server cursor in the background (``_close``, because an
        # async cursor's ``close`` is a coroutine).
        if self._cursor is not None:
            self._cursor._close()
            self._cursor = None


class _GridOutBase:
    """The state and the reads of a GridOut; the sync and async classes run them."""

    _file: Any
    _chunk_iter: _ChunkIterator | None

    def _init(
        self, root_collection: Collection, file_id: Any, file_document: Any, session: Any, sync: bool
    ) -> None:
        from ..asynchronous import AsyncCollection

        if (
            not isinstance(root_collection, Collection)
            or isinstance(root_collection, AsyncCollection) == sync
        ):
            wanted = "Collection" if sync else "AsyncCollection"
            raise TypeError(
                f"root_collection must be an instance of tenantpool's {wanted}, not {type(root_collection)}"
            )
        disallow_transactions(session)
        root = clear_type_registry(root_collection)
        self._chunks = root.chunks
        self._files = root.files
        self._file_id = file_id
        self._buffer = EMPTY
        # Where the next read starts within the buffered chunk.
        self._buffer_pos = 0
        self._chunk_iter = None
        # Position within the whole file.
        self._position = 0
        self._file = file_document
        self._session = session

    def _file_document(self, name: str = "file's") -> Mapping[str, Any]:
        """The file document (``name`` is the attribute asked for, for the async class's error)."""
        raise NotImplementedError

    _id: Any = grid_out_property("_id", "The ``'_id'`` value for this file.")
    filename: str = grid_out_property("filename", "Name of this file.")
    name: str = grid_out_property("filename", "Alias for `filename`.")
    content_type: str | None = grid_out_property("contentType", "Mime-type for this file.")
    length: int = grid_out_property("length", "Length (in bytes) of this file.")
    chunk_size: int = grid_out_property("chunkSize", "Chunk size for this file.")
    upload_date: datetime.datetime = grid_out_property(
        "uploadDate", "Date that this file was first uploaded."
    )
    aliases: list[str] | None = grid_out_property("aliases", "List of aliases for this file.")
    metadata: Mapping[str, Any] | None = grid_out_property("metadata", "Metadata attached to this file.")
    md5: str | None = grid_out_property("md5", "MD5 of the contents of this file, if one was stored.")

    def __getattr__(self, name: str) -> Any:
        # Any other field of the file document. Never for Python's own lookups (io.IOBase asks for
        # ``__IOBase_closed``), which must not cost a round trip.
        if name.startswith("__") or name in ("_file", "_file_id"):
            raise AttributeError(name)
        file = self._file_document(name)
        if name in file:
            return file[name]
        raise AttributeError(f"{type(self).__name__} object has no attribute '{name}'")

    def _gen_open(self) -> Operation[None]:
        if not self._file:
            disallow_transactions(self._session)
            self._file = yield from self._files._gen_find_one(
                {"_id": {"$eq": self._file_id}}, session=self._session
            )
            if not self._file:
                raise NoFile(f"no file in gridfs collection {self._files!r} with _id {self._file_id!r}")

    def _gen_readchunk(self) -> Operation[bytes]:
        yield from self._gen_open()
        received = len(self._buffer) - self._buffer_pos
        chunk_data = EMPTY
        chunk_size = int(self._file["chunkSize"])
        if received > 0:
            chunk_data = self._buffer[self._buffer_pos :]
        elif self._position < int(self._file.get("length", 0)):
            chunk_number = int((received + self._position) / chunk_size)
            if self._chunk_iter is None:
                self._chunk_iter = _ChunkIterator(self._file, self._chunks, self._session, chunk_number)
            chunk = yield from self._chunk_iter.gen_next()
            if chunk is None:
                raise CorruptGridFile(f"no chunk #{chunk_number}")
            chunk_data = chunk["data"][self._position % chunk_size :]
            if not chunk_data:
                raise CorruptGridFile("truncated chunk")
        self._position += len(chunk_data)
        self._buffer = EMPTY
        self._buffer_pos = 0
        return chunk_data

    def _gen_read_size_or_line(self, size: int = -1, line: bool = False) -> Operation[bytes]:
        """pymongo's read() and readline(): no more than one chunk's data beyond what is returned."""
        yield from self._gen_open()
        remainder = int(self._file.get("length", 0)) - self._position
        if size is None or size < 0 or size > remainder:
            size = remainder
        if size == 0:
            return EMPTY
        received = 0
        data = []
        while received < size:
            needed = size - received
            if self._buffer:
                # The rest of the buffered chunk, without copying it.
                buf = self._buffer
                chunk_start = self._buffer_pos
                chunk_data = memoryview(buf)[self._buffer_pos :]
                self._buffer = EMPTY
                self._buffer_pos = 0
                self._position += len(chunk_data)
            else:
                buf = yield from self._gen_readchunk()
                chunk_start = 0
                chunk_data = memoryview(buf)
            if line:
                pos = buf.find(NEWLINE, chunk_start, chunk_start + needed) - chunk_start
                if pos >= 0:
                    size = received + pos + 1
                    needed = pos + 1
            if len(chunk_data) > needed:
                data.append(chunk_data[:needed])
                # Keep the rest of the chunk for the next read.
                self._buffer = buf
                self._buffer_pos = chunk_start + needed
                self._position -= len(self._buffer) - self._buffer_pos
            else:
                data.append(chunk_data)
            received += len(chunk_data)
        # Having read the whole file, detect extra chunks after it.
        if size == remainder and self._chunk_iter:
            yield from self._chunk_iter.gen_next()
        return b"".join(data)

    def _gen_readlines(self, size: int = -1) -> Operation[list[bytes]]:
        yield from self._gen_open()
        lines = []
        remainder = int(self._file.get("length", 0)) - self._position
        bytes_read = 0
        while remainder > 0:
            line = yield from self._gen_read_size_or_line(line=True)
            bytes_read += len(line)
            lines.append(line)
            remainder = int(self._file.get("length", 0)) - self._position
            if 0 < size < bytes_read:
                break
        return lines

    def tell(self) -> int:
        """Return the current position of this file."""
        return self._position

    def _seek(self, pos: int, whence: int = _SEEK_SET) -> int:
        if whence == _SEEK_SET:
            new_pos = pos
        elif whence == _SEEK_CUR:
            new_pos = self._position + pos
        elif whence == _SEEK_END:
            new_pos = int(self.length) + pos
        else:
            raise OSError(22, "Invalid value for `whence`")
        if new_pos < 0:
            raise OSError(22, "Invalid value for `pos` - must be positive")
        # Same position: keep the buffer and the chunk cursor.
        if new_pos == self._position:
            return new_pos
        self._position = new_pos
        self._buffer = EMPTY
        self._buffer_pos = 0
        if self._chunk_iter:
            self._chunk_iter.close()
            self._chunk_iter = None
        return new_pos

    def _close_chunks(self) -> None:
        if self._chunk_iter:
            self._chunk_iter.close()
            self._chunk_iter = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, value: Any) -> NoReturn:
        raise io.UnsupportedOperation("write")

    def writelines(self, lines: Any) -> NoReturn:
        raise io.UnsupportedOperation("writelines")

    def writable(self) -> bool:
        return False

    def fileno(self) -> NoReturn:
        raise io.UnsupportedOperation("fileno")

    def flush(self) -> None:
        # Read-only: nothing to flush.
        pass

    def isatty(self) -> bool:
        return False

    def truncate(self, size: int | None = None) -> NoReturn:
        raise io.UnsupportedOperation("truncate")


class GridOut(_GridOutBase, io.IOBase):
    """A file read from GridFS (pymongo's ``gridfs.GridOut``), a read-only binary file object.

    Iterating it yields lines, as for any :class:`io.IOBase`; :meth:`readchunk` reads chunk by chunk.
    The file document is fetched on first use (:meth:`GridFSBucket.open_download_stream` fetches it
    at once, raising :class:`~gridfs.errors.NoFile`).
    """

    def __init__(
        self,
        root_collection: Collection,
        file_id: Any = None,
        file_document: Any = None,
        session: ClientSession | None = None,
    ) -> None:
        """Read a file from GridFS.

        Either `file_id` or `file_document` must be specified, `file_document` will be given priority if
        present.

        :param root_collection: the bucket's root collection (``db.fs``) of a tenantpool database
        :param file_id: value of ``"_id"`` for the file to read
        :param file_document: file document from `root_collection.files`
        :param session: a tenantpool :class:`~tenantpool.ClientSession` to use for all commands
        """
        self._init(root_collection, file_id, file_document, session, sync=True)
        super().__init__()

    def _file_document(self, name: str = "file's") -> Mapping[str, Any]:
        self.open()
        return self._file  # type: ignore[no-any-return]

    def open(self) -> None:
        """Fetches the file document if it is not known yet; raises NoFile if there is no such file."""
        run_sync(self._gen_open())

    def readchunk(self) -> bytes:
        """Read a chunk at a time.

        If the current position is within a chunk the remainder of the chunk is returned.
        """
        return run_sync(self._gen_readchunk())

    def read(self, size: int | None = -1) -> bytes:
        """Read at most `size` bytes from the file (less if there isn't enough data).

        The bytes are returned as an instance of :class:`bytes`. If `size` is negative or omitted all
        data is read.

        :param size: the number of bytes to read
        """
        return run_sync(self._gen_read_size_or_line(-1 if size is None else size))

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line or up to `size` bytes from the file.

        :param size: the maximum number of bytes to read
        """
        return run_sync(self._gen_read_size_or_line(-1 if size is None else size, line=True))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read lines until the end of the file, or until more than `hint` bytes have been read.

        :param hint: stop once more than this many bytes have been read (all lines if not positive)
        """
        return run_sync(self._gen_readlines(-1 if hint is None else hint))

    def seek(self, pos: int, whence: int = _SEEK_SET) -> int:
        """Set the current position of this file.

        :param pos: the position (or offset if using relative positioning) to seek to
        :param whence: where to seek from. :attr:`os.SEEK_SET` (``0``) for absolute file positioning,
           :attr:`os.SEEK_CUR` (``1``) to seek relative to the current position, :attr:`os.SEEK_END`
           (``2``) to seek relative to the file's end.

        Returns the new position in the file.
        """
        return self._seek(pos, whence)

    def __iter__(self) -> GridOut:
        r"""Return an iterator over all of this file's data: its lines (delimited by ``b'\n'``), as
        pymongo 4's GridOut (use :meth:`readchunk` to read chunk by chunk)."""
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if line:
            return line
        raise StopIteration

    def close(self) -> None:
        """Closes the file, and the cursor over its chunks."""
        self._close_chunks()
        super().close()

    def _close_now(self) -> None:
        self.close()

    def __enter__(self) -> GridOut:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # io.IOBase.__del__ would close the file, which must not do I/O from a finaliser.
        pass


class _GridOutCursorMixin:
    """What a GridFS find cursor adds to a tenantpool cursor: files come out as GridOut objects."""

    _grid_out_class: type[Any]
    _root_collection: Collection
    _session: Any
    _collection: Collection

    def _init_grid(
        self,
        collection: Collection,
        filter: Mapping[str, Any] | None,
        skip: int,
        limit: int,
        no_cursor_timeout: bool,
        sort: Any,
        batch_size: int,
        session: Any,
    ) -> None:
        disallow_transactions(session)
        collection = clear_type_registry(collection)
        # The bucket's root collection, for the GridOut objects made later.
        self._root_collection = collection
        super().__init__(  # type: ignore[call-arg]
            collection.files,
            filter,
            skip=skip,
            limit=limit,
            no_cursor_timeout=no_cursor_timeout,
            sort=sort,
            batch_size=batch_size,
            session=session,
        )

    def _grid_out(self, document: Any) -> Any:
        disallow_transactions(self._session)
        return self._grid_out_class(self._root_collection, file_document=document, session=self._session)

    def _gen_to_list(self, length: int | None = None) -> Operation[list[Any]]:
        docs = yield from super()._gen_to_list(length)  # type: ignore[misc]
        return [self._grid_out(doc) for doc in docs]

    def add_option(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("Method does not exist for GridOutCursor")

    def remove_option(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("Method does not exist for GridOutCursor")

    def _clone(self, deepcopy: bool) -> Any:
        # Cursor._clone makes ``type(self)(self._collection, session=...)``: a GridOutCursor is made
        # from the root collection, not the files collection it queries.
        files = self._collection
        self._collection = self._root_collection
        try:
            return super()._clone(deepcopy)  # type: ignore[misc]
        finally:
            self._collection = files


class GridOutCursor(_GridOutCursorMixin, Cursor):
    """A cursor over the files of a GridFS query (pymongo's ``gridfs.GridOutCursor``): iterating it
    yields :class:`GridOut` objects; it chains like a :class:`~tenantpool.Cursor` (``sort``, ``skip``,
    ``limit``...)."""

    _grid_out_class = GridOut

    def __init__(
        self,
        collection: Collection,
        filter: Mapping[str, Any] | None = None,
        skip: int = 0,
        limit: int = 0,
        no_cursor_timeout: bool = False,
        sort: Any | None = None,
        batch_size: int = 0,
        session: ClientSession | None = None,
    ) -> None:
        """Create a new cursor, similar to the normal :class:`~tenantpool.Cursor`.

        Should not be called directly by application developers - see :meth:`GridFSBucket.find` and
        :meth:`GridFS.find` instead.
        """
        self._init_grid(collection, filter, skip, limit, no_cursor_timeout, sort, batch_size, session)

    def next(self) -> GridOut:
        """Get next GridOut object from cursor."""
        disallow_transactions(self._session)
        return self._grid_out(Cursor.next(self))  # type: ignore[no-any-return]

    __next__ = next

    def to_list(self, length: int | None = None) -> list[GridOut]:
        """The remaining files as GridOut objects, or at most ``length`` of them."""
        return run_sync(self._gen_to_list(length))

    def __iter__(self) -> GridOutCursor:
        return self
