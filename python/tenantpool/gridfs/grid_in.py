"""GridIn: a file being written to GridFS, chunk by chunk.

Each step (ensuring the indexes, flushing buffered chunks, inserting the file document) is written once as
a generator of tenantpool operations (see ``tenantpool._calls``); ``GridIn`` runs them blocking and
``AsyncGridIn`` (``tenantpool.gridfs.asynchronous``) awaits them. Chunks go to the server in batches of
at most ``UPLOAD_BUFFER_BYTES``, so an upload holds a few MiB whatever the file's size.
"""

from __future__ import annotations

import datetime
import inspect
import io
from collections.abc import Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo.errors import BulkWriteError, ConfigurationError, DuplicateKeyError, OperationFailure
from pymongo.read_preferences import ReadPreference

from .._calls import BOUND_SESSION, Invoke, Operation, run_sync
from ..bulk import check_write_response
from ..collection import Collection
from ._shared import (
    CHUNK_OVERHEAD,
    CHUNKS_INDEX,
    DEFAULT_CHUNK_SIZE,
    FILES_INDEX,
    UPLOAD_BUFFER_BYTES,
    UPLOAD_BUFFER_CHUNKS,
    FileExists,
    check_chunk_size,
    clear_type_registry,
    disallow_transactions,
    grid_in_property,
    resolve_session,
)

if TYPE_CHECKING:
    import datetime as _dt

    from ..session import ClientSession

# Duplicate key errors: a chunk of this file id is already stored.
_DUPLICATE_KEY_CODES = (11000, 11001, 12582)


def _check_root_collection(root_collection: Any, sync: bool) -> None:
    from ..asynchronous import AsyncCollection

    wanted = "Collection" if sync else "AsyncCollection"
    if not isinstance(root_collection, Collection) or isinstance(root_collection, AsyncCollection) == sync:
        raise TypeError(
            f"root_collection must be an instance of tenantpool's {wanted}, not {type(root_collection)}"
        )


class _GridInBase:
    """The state and the operations of a file being written; the sync and async classes run them."""

    _bound_sessions: ContextVar[Any] = BOUND_SESSION
    _sync = True

    _session: Any
    # The root collection and its chunks: Collection, or AsyncCollection in AsyncGridIn. Typed Any
    # because their operations are used here as the generators they are (``_gen_insert_many``...).
    _coll: Any
    _chunks: Any
    _file: dict[str, Any]
    _buffer: io.BytesIO
    _position: int
    _chunk_number: int
    _closed: bool
    _ensured_index: bool
    _buffered_docs: list[dict[str, Any]]
    _buffered_docs_size: int

    def __init__(self, root_collection: Collection, session: Any = None, **kwargs: Any) -> None:
        _check_root_collection(root_collection, self._sync)
        if not root_collection.write_concern.acknowledged:
            raise ConfigurationError("root_collection must use acknowledged write_concern")
        session = resolve_session(root_collection.database, session, self._bound_sessions)
        disallow_transactions(session)
        # pymongo's alternative names.
        if "content_type" in kwargs:
            kwargs["contentType"] = kwargs.pop("content_type")
        if "chunk_size" in kwargs:
            kwargs["chunkSize"] = kwargs.pop("chunk_size")
        coll = clear_type_registry(root_collection, read_preference=ReadPreference.PRIMARY)
        kwargs["_id"] = kwargs.get("_id", ObjectId())
        kwargs["chunkSize"] = check_chunk_size(kwargs.get("chunkSize", DEFAULT_CHUNK_SIZE))
        set_ = object.__setattr__
        set_(self, "_session", session)
        set_(self, "_coll", coll)
        set_(self, "_chunks", coll.chunks)
        set_(self, "_file", kwargs)
        set_(self, "_buffer", io.BytesIO())
        set_(self, "_position", 0)
        set_(self, "_chunk_number", 0)
        set_(self, "_closed", False)
        set_(self, "_ensured_index", False)
        set_(self, "_buffered_docs", [])
        set_(self, "_buffered_docs_size", 0)

    # -- attributes -------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether this file is closed."""
        return self._closed

    _id: Any = grid_in_property("_id", "The ``'_id'`` value for this file.", read_only=True)
    filename: str | None = grid_in_property("filename", "Name of this file.")
    name: str | None = grid_in_property("filename", "Alias for `filename`.")
    content_type: str | None = grid_in_property("contentType", "Mime-type for this file.")
    length: int = grid_in_property("length", "Length (in bytes) of this file.", closed_only=True)
    chunk_size: int = grid_in_property("chunkSize", "Chunk size for this file.", read_only=True)
    upload_date: _dt.datetime = grid_in_property(
        "uploadDate", "Date that this file was uploaded.", closed_only=True
    )
    md5: str | None = grid_in_property(
        "md5", "MD5 of the contents of this file, if one was stored.", closed_only=True
    )

    def __getattr__(self, name: str) -> Any:
        # Any other field of the file document (``encoding``, custom fields passed as keywords).
        file = self.__dict__.get("_file")
        if file is not None and not name.startswith("__") and name in file:
            return file[name]
        raise AttributeError(f"{type(self).__name__} object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        # The class's own attributes and properties as usual; any other name is a field of the file
        # document, stored on close (or, once closed, updated in place where the API allows it).
        if name in self.__dict__ or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        else:
            self._set_field(name, value, False)

    def _set_field(self, name: str, value: Any, is_property: bool = True) -> None:
        raise NotImplementedError

    # -- operations -------------------------------------------------------------------------------------

    def _gen_create_index(self, collection: Any, index_key: dict[str, Any], unique: bool) -> Operation[None]:
        """pymongo's rule: create the index only if the collection is empty and lacks it (checking
        first, so that an application without createIndex privileges can still write to a bucket whose
        indexes exist)."""
        doc = yield from collection._gen_find_one(projection={"_id": 1}, session=self._session)
        if doc is None:
            try:
                cursor = yield from collection._gen_list_indexes(session=self._session)
                index_keys = [spec["key"] for spec in (yield from cursor._gen_to_list())]
            except OperationFailure:
                index_keys = []
            if index_key not in index_keys:
                (
                    yield from collection._gen_create_index(
                        list(index_key.items()), unique=unique, session=self._session
                    )
                )

    def _gen_ensure_indexes(self) -> Operation[None]:
        if not self._ensured_index:
            disallow_transactions(self._session)
            yield from self._gen_create_index(self._coll.files, FILES_INDEX, False)
            yield from self._gen_create_index(self._coll.chunks, CHUNKS_INDEX, True)
            object.__setattr__(self, "_ensured_index", True)

    def _gen_abort(self) -> Operation[None]:
        file_id = self._file["_id"]
        (yield from self._coll.chunks._gen_delete_many({"files_id": {"$eq": file_id}}, session=self._session))
        (yield from self._coll.files._gen_delete_one({"_id": {"$eq": file_id}}, session=self._session))
        object.__setattr__(self, "_closed", True)

    def _gen_set(self, name: str, value: Any) -> Operation[None]:
        self._file[name] = value
        if self._closed:
            (
                yield from self._coll.files._gen_update_one(
                    {"_id": {"$eq": self._file["_id"]}}, {"$set": {name: value}}, session=self._session
                )
            )

    def _gen_flush_data(self, data: bytes, force: bool = False) -> Operation[None]:
        """Adds ``data`` as the next chunk; sends the buffered chunks when they reach the bound (or at
        the end, ``force``)."""
        yield from self._gen_ensure_indexes()
        assert len(data) <= self._file["chunkSize"]
        if data:
            self._buffered_docs.append({"files_id": self._file["_id"], "n": self._chunk_number, "data": data})
            object.__setattr__(
                self, "_buffered_docs_size", self._buffered_docs_size + len(data) + CHUNK_OVERHEAD
            )
        if self._buffered_docs and (
            force
            or self._buffered_docs_size >= UPLOAD_BUFFER_BYTES
            or len(self._buffered_docs) >= UPLOAD_BUFFER_CHUNKS
        ):
            try:
                (yield from self._chunks._gen_insert_many(self._buffered_docs, session=self._session))
            except BulkWriteError as exc:
                # As pymongo: a duplicate chunk means the file id is taken; other errors are raised as
                # the single write's error insert_one would have raised.
                write_errors = exc.details["writeErrors"]
                for err in write_errors:
                    if err.get("code") in _DUPLICATE_KEY_CODES:
                        self._raise_file_exists(self._file["_id"])
                result: dict[str, Any] = {"writeErrors": write_errors}
                wces = exc.details["writeConcernErrors"]
                if wces:
                    result["writeConcernError"] = wces[-1]
                check_write_response(result)
                raise
            object.__setattr__(self, "_buffered_docs", [])
            object.__setattr__(self, "_buffered_docs_size", 0)
        object.__setattr__(self, "_chunk_number", self._chunk_number + 1)
        object.__setattr__(self, "_position", self._position + len(data))

    def _gen_flush_buffer(self, force: bool = False) -> Operation[None]:
        data = self._buffer.getvalue()
        self._buffer.close()
        object.__setattr__(self, "_buffer", io.BytesIO())
        yield from self._gen_flush_data(data, force=force)

    def _gen_close(self) -> Operation[None]:
        if self._closed:
            return
        try:
            yield from self._gen_flush_buffer(force=True)
            # The GridFS spec says length SHOULD be an Int64.
            self._file["length"] = Int64(self._position)
            self._file["uploadDate"] = datetime.datetime.now(tz=datetime.timezone.utc)
            (yield from self._coll.files._gen_insert_one(self._file, session=self._session))
        except DuplicateKeyError:
            self._raise_file_exists(self._file["_id"])
        object.__setattr__(self, "_closed", True)

    def _raise_file_exists(self, file_id: Any) -> NoReturn:
        raise FileExists(f"file with _id {file_id!r} already exists")

    def _gen_read(self, read: Any, size: int) -> Operation[bytes]:
        """``read(size)`` of the application's source: awaited by the async GridIn if it is a coroutine
        (an async file object), called as is by the sync one."""
        data = yield Invoke(read, (size,))
        if inspect.isawaitable(data):
            if inspect.iscoroutine(data):
                data.close()
            raise TypeError(
                "GridIn.write(): the source's read() is asynchronous; write it with "
                "tenantpool.gridfs.AsyncGridIn (AsyncGridFSBucket), or pass a synchronous file object"
            )
        if isinstance(data, str):
            raise TypeError(
                "GridIn.write(): the source's read() returned str, not bytes; open the file in binary "
                "mode ('rb'), or write the str itself with an encoding (GridFS.put(data, encoding=...))"
            )
        return data  # type: ignore[no-any-return]

    def _gen_write(self, data: Any) -> Operation[None]:
        if self._closed:
            raise ValueError("cannot write to a closed file")
        try:
            read = data.read
        except AttributeError:
            if not isinstance(data, (str, bytes)):
                raise TypeError("can only write strings or file-like objects") from None
            if isinstance(data, str):
                encoding = self._file.get("encoding")
                if encoding is None:
                    raise TypeError("must specify an encoding for file in order to write str") from None
                data = data.encode(encoding)
            read = io.BytesIO(data).read
        chunk_size = self._file["chunkSize"]
        if self._buffer.tell() > 0:
            # Complete the partly filled chunk first.
            space = chunk_size - self._buffer.tell()
            if space:
                try:
                    to_write = yield from self._gen_read(read, space)
                except BaseException:
                    yield from self._gen_abort()
                    raise
                self._buffer.write(to_write)
                if len(to_write) < space:
                    return  # EOF or incomplete
            yield from self._gen_flush_buffer()
        to_write = yield from self._gen_read(read, chunk_size)
        while to_write and len(to_write) == chunk_size:
            yield from self._gen_flush_data(to_write)
            to_write = yield from self._gen_read(read, chunk_size)
        self._buffer.write(to_write)

    def _gen_writelines(self, sequence: Iterable[Any]) -> Operation[None]:
        for line in sequence:
            yield from self._gen_write(line)

    def read(self, size: int = -1) -> NoReturn:
        raise io.UnsupportedOperation("read")

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writeable(self) -> bool:
        return True

    def _mark_closed(self) -> None:
        object.__setattr__(self, "_closed", True)


class GridIn(_GridInBase):
    """A file being written to GridFS (pymongo's ``gridfs.GridIn``) on a tenant's database.

    Made by :meth:`GridFSBucket.open_upload_stream` or :meth:`GridFS.new_file`; data written is sent in
    chunks, and the file document is inserted by :meth:`close`.
    """

    def __init__(
        self, root_collection: Collection, session: ClientSession | None = None, **kwargs: Any
    ) -> None:
        """Write a file to GridFS.

        Any of the file level options of the GridFS spec may be passed as keyword arguments; any other
        keyword argument becomes a field of the file document: ``_id`` (default: a new
        :class:`~bson.objectid.ObjectId`; it must not already be used), ``filename``, ``contentType`` or
        ``content_type``, ``chunkSize`` or ``chunk_size`` (default 255 KiB), ``encoding`` (used to
        encode :class:`str` data written to the file).

        :param root_collection: the bucket's root collection (``db.fs``) of a tenantpool database
        :param session: a tenantpool :class:`~tenantpool.ClientSession` to use for all commands
        :param kwargs: file level options (see above)
        """
        super().__init__(root_collection, session, **kwargs)

    def _set_field(self, name: str, value: Any, is_property: bool = True) -> None:
        run_sync(self._gen_set(name, value))

    def set(self, name: str, value: Any) -> None:
        """Sets a field of the file document (updating the stored document if the file is closed)."""
        run_sync(self._gen_set(name, value))

    def abort(self) -> None:
        """Remove all chunks/files that may have been uploaded and close."""
        run_sync(self._gen_abort())

    def close(self) -> None:
        """Flush the file and close it.

        A closed file cannot be written any more. Calling :meth:`close` more than once is allowed.
        """
        run_sync(self._gen_close())

    def write(self, data: Any) -> None:
        """Write data to the file. There is no return value.

        `data` can be either a string of bytes or a file-like object (implementing :meth:`read`). If the
        file has an :attr:`encoding` attribute, `data` can also be a :class:`str` instance, which will be
        encoded as :attr:`encoding` before being written.

        Due to buffering, the data may not actually be written to the database until the :meth:`close`
        method is called. Raises :class:`ValueError` if this file is already closed. Raises
        :class:`TypeError` if `data` is not an instance of :class:`bytes`, a file-like object, or an
        instance of :class:`str`. Unicode data is only allowed if the file has an :attr:`encoding`
        attribute.

        :param data: string of bytes or file-like object to be written to the file
        """
        run_sync(self._gen_write(data))

    def writelines(self, sequence: Iterable[Any]) -> None:
        """Write a sequence of strings to the file.

        Does not add separators.
        """
        run_sync(self._gen_writelines(sequence))

    def __enter__(self) -> GridIn:
        """Support for the context manager protocol."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Support for the context manager protocol.

        Close the file if no exceptions occur and allow exceptions to propagate (as pymongo, a file left
        by an exception is only marked closed: call :meth:`abort` to remove its chunks).
        """
        if exc_type is None:
            self.close()
        else:
            self._mark_closed()
