"""GridFSBucket: pymongo's ``gridfs.GridFSBucket`` on a tenant's database.

Every operation is a generator of tenantpool operations (``_gen_*``, see ``tenantpool._calls``), shared
by ``GridFSBucket`` (run blocking) and ``AsyncGridFSBucket`` (awaited). They use only the tenant's
``Database`` and ``Collection``: the bucket is ``<bucket>.files`` and ``<bucket>.chunks`` of the
tenant's own database, reached through the tenant's pool and quota, never through a client of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from bson.objectid import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.common import validate_string
from pymongo.errors import ConfigurationError
from pymongo.write_concern import WriteConcern

from .._calls import BOUND_SESSION, Invoke, Operation, run_sync
from ..database import Database
from ._shared import (
    DEFAULT_CHUNK_SIZE,
    NoFile,
    check_chunk_size,
    check_database,
    clear_type_registry,
    disallow_transactions,
    resolve_session,
)
from .grid_in import GridIn
from .grid_out import GridOut, GridOutCursor

if TYPE_CHECKING:
    from pymongo.read_preferences import _ServerMode

    from ..collection import Collection
    from ..session import ClientSession


def check_revision(revision: Any) -> None:
    if not isinstance(revision, int) or isinstance(revision, bool):
        raise TypeError(
            f"revision must be an int (0 the original file, 1 the first revision..., -1 the most recent), "
            f"not {type(revision)}"
        )


def gen_find_version(
    root: Collection,
    grid_out_class: type[Any],
    query: dict[str, Any],
    version: int,
    session: Any,
    what: str | None,
) -> Operation[Any]:
    """The ``version``-th file matching ``query`` by upload date (0 the first, -1 the most recent), as
    a GridOut; NoFile if there are not that many."""
    disallow_transactions(session)
    cursor = root.files.find(query, session=session)
    if version < 0:
        cursor.limit(-1).skip(abs(version) - 1).sort("uploadDate", DESCENDING)
    else:
        cursor.limit(-1).skip(version).sort("uploadDate", ASCENDING)
    docs = yield from cursor._gen_to_list(1)
    if not docs:
        raise NoFile(f"no version {version} for filename {what!r}")
    return grid_out_class(root, file_document=docs[0], session=session)


class _BucketBase:
    """A bucket's state and operations; the sync and async classes run them."""

    _bound_sessions: ContextVar[Any] = BOUND_SESSION
    _database_class: type[Database] = Database
    _twin = "AsyncGridFSBucket"
    _grid_in_class: type[Any] = GridIn
    _grid_out_class: type[Any] = GridOut
    # A Collection, or an AsyncCollection in the async twin.
    _collection: Any

    def __init__(
        self,
        db: Database,
        bucket_name: str = "fs",
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
        write_concern: WriteConcern | None = None,
        read_preference: _ServerMode | None = None,
    ) -> None:
        check_database(db, self._database_class, self._twin, type(self).__name__)
        db = clear_type_registry(db)
        wtc = write_concern if write_concern is not None else db.write_concern
        if not wtc.acknowledged:
            raise ConfigurationError("write concern must be acknowledged")
        validate_string("bucket_name", bucket_name)
        self._db = db
        self._bucket_name = bucket_name
        # The bucket's write concern and read preference apply to all its operations (pymongo applies
        # them to its deletes, renames and lookups by name only; uploads and reads by id use the
        # database's).
        self._collection = db[bucket_name].with_options(
            write_concern=write_concern, read_preference=read_preference
        )
        self._chunks = self._collection.chunks
        self._files = self._collection.files
        self._chunk_size_bytes = check_chunk_size(chunk_size_bytes)

    def _session(self, session: Any) -> Any:
        return resolve_session(self._db, session, self._bound_sessions)

    def _grid_in(
        self,
        file_id: Any,
        filename: str,
        chunk_size_bytes: int | None,
        metadata: Mapping[str, Any] | None,
        session: Any,
    ) -> Any:
        validate_string("filename", filename)
        opts: dict[str, Any] = {
            "filename": filename,
            "chunk_size": chunk_size_bytes if chunk_size_bytes is not None else self._chunk_size_bytes,
        }
        if file_id is not None:
            opts = {"_id": file_id, **opts}
        if metadata is not None:
            opts["metadata"] = metadata
        return self._grid_in_class(self._collection, session=session, **opts)

    def _gen_upload(self, grid_in: Any, source: Any) -> Operation[None]:
        # ``with grid_in: grid_in.write(source)``: a failed write leaves the file marked closed.
        try:
            yield from grid_in._gen_write(source)
        except BaseException:
            grid_in._mark_closed()
            raise
        yield from grid_in._gen_close()

    def _gen_open_download_stream(self, file_id: Any, session: Any) -> Operation[Any]:
        grid_out = self._grid_out_class(self._collection, file_id, session=session)
        # NoFile now, rather than on first read.
        yield from grid_out._gen_open()
        return grid_out

    @staticmethod
    def _gen_download(grid_out: Any, destination: Any) -> Operation[None]:
        """Copies the file to ``destination`` chunk by chunk (an async ``write`` is awaited)."""
        try:
            while True:
                chunk = yield from grid_out._gen_readchunk()
                if not len(chunk):
                    break
                yield Invoke(destination.write, (chunk,))
        finally:
            grid_out._close_now()

    def _gen_open_download_stream_by_name(self, filename: str, revision: int, session: Any) -> Operation[Any]:
        validate_string("filename", filename)
        check_revision(revision)
        return (
            yield from gen_find_version(
                self._collection, self._grid_out_class, {"filename": filename}, revision, session, filename
            )
        )

    def _gen_delete(self, file_id: Any, session: Any) -> Operation[None]:
        disallow_transactions(session)
        res = yield from self._files._gen_delete_one({"_id": {"$eq": file_id}}, session=session)
        (yield from self._chunks._gen_delete_many({"files_id": {"$eq": file_id}}, session=session))
        if not res.deleted_count:
            raise NoFile(f"no file could be deleted because none matched {file_id}")

    def _gen_delete_by_name(self, filename: str, session: Any) -> Operation[None]:
        disallow_transactions(session)
        files = self._files.find({"filename": filename}, {"_id": 1}, session=session)
        file_ids = [file["_id"] for file in (yield from files._gen_to_list())]
        res = yield from self._files._gen_delete_many({"_id": {"$in": file_ids}}, session=session)
        (yield from self._chunks._gen_delete_many({"files_id": {"$in": file_ids}}, session=session))
        if not res.deleted_count:
            raise NoFile(f"no file could be deleted because none matched filename {filename!r}")

    def _gen_rename(self, file_id: Any, new_filename: str, session: Any) -> Operation[None]:
        disallow_transactions(session)
        result = yield from self._files._gen_update_one(
            {"_id": {"$eq": file_id}}, {"$set": {"filename": new_filename}}, session=session
        )
        if not result.matched_count:
            raise NoFile(f"no files could be renamed {new_filename!r} because none matched file_id {file_id}")

    def _gen_rename_by_name(self, filename: str, new_filename: str, session: Any) -> Operation[None]:
        disallow_transactions(session)
        result = yield from self._files._gen_update_many(
            {"filename": filename}, {"$set": {"filename": new_filename}}, session=session
        )
        if not result.matched_count:
            raise NoFile(
                f"no files could be renamed {new_filename!r} because none matched filename {filename!r}"
            )

    def _gen_drop(self, session: Any) -> Operation[None]:
        disallow_transactions(session)
        (yield from self._files._gen_drop(session=session))
        (yield from self._chunks._gen_drop(session=session))


class GridFSBucket(_BucketBase):
    """pymongo's :class:`gridfs.GridFSBucket` on a tenant's database: files in ``<bucket_name>.files``
    and ``<bucket_name>.chunks``, laid out and indexed exactly as pymongo's GridFS does.

    .. code-block:: python

        from tenantpool.gridfs import GridFSBucket

        bucket = GridFSBucket(manager.get_database("user_a"))
        file_id = bucket.upload_from_stream("report.pdf", open("report.pdf", "rb"))
        with bucket.open_download_stream(file_id) as grid_out:
            data = grid_out.read()
    """

    def __init__(
        self,
        db: Database,
        bucket_name: str = "fs",
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
        write_concern: WriteConcern | None = None,
        read_preference: _ServerMode | None = None,
    ) -> None:
        """Create a new instance of :class:`GridFSBucket`.

        Raises :exc:`TypeError` if `db` is not a tenantpool :class:`~tenantpool.Database`.

        Raises :exc:`~pymongo.errors.ConfigurationError` if `write_concern` is not acknowledged.

        :param db: the tenant's database (``manager.get_database(user_id)``).
        :param bucket_name: The name of the bucket. Defaults to 'fs'.
        :param chunk_size_bytes: The chunk size in bytes. Defaults to 255KB.
        :param write_concern: The :class:`~pymongo.write_concern.WriteConcern` to use. If ``None`` (the
            default) db.write_concern is used.
        :param read_preference: The read preference to use. If ``None`` (the default)
            db.read_preference is used.
        """
        super().__init__(db, bucket_name, chunk_size_bytes, write_concern, read_preference)

    def open_upload_stream(
        self,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
    ) -> GridIn:
        """Open a Stream that the application can write the contents of the file to.

        Returns an instance of :class:`GridIn`; the file is stored when it is closed (``with
        bucket.open_upload_stream("name") as grid_in: grid_in.write(data)``).

        Raises :exc:`TypeError` if `filename` is not a string.

        :param filename: The name of the file to upload.
        :param chunk_size_bytes: The number of bytes per chunk of this file. Defaults to the
            chunk_size_bytes in :class:`GridFSBucket`.
        :param metadata: User data for the 'metadata' field of the files collection document. If not
            provided the metadata field will be omitted from the files collection document.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return self._grid_in(None, filename, chunk_size_bytes, metadata, session)  # type: ignore[no-any-return]

    def open_upload_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
    ) -> GridIn:
        """Open a Stream that the application can write the contents of the file to, with a custom
        file id.

        Returns an instance of :class:`GridIn`. Closing it raises :exc:`~gridfs.errors.FileExists` if
        a file with this id exists.

        :param file_id: The id to use for this file. The id must not have already been used for
            another file.
        :param filename: The name of the file to upload.
        :param chunk_size_bytes: The number of bytes per chunk of this file. Defaults to the
            chunk_size_bytes in :class:`GridFSBucket`.
        :param metadata: User data for the 'metadata' field of the files collection document.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return self._grid_in(file_id, filename, chunk_size_bytes, metadata, session)  # type: ignore[no-any-return]

    def upload_from_stream(
        self,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
    ) -> ObjectId:
        """Upload a user file to a GridFS bucket.

        Reads the contents of the user file from `source` and uploads it to the file `filename`. Source
        can be a string or file-like object, read chunk by chunk (a large file is never held whole).

        Returns the _id of the uploaded file.

        :param filename: The name of the file to upload.
        :param source: The source stream of the content to be uploaded. Must be a file-like object that
            implements :meth:`read` or a string.
        :param chunk_size_bytes: The number of bytes per chunk of this file. Defaults to the
            chunk_size_bytes of :class:`GridFSBucket`.
        :param metadata: User data for the 'metadata' field of the files collection document.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        grid_in = self._grid_in(None, filename, chunk_size_bytes, metadata, self._session(session))
        run_sync(self._gen_upload(grid_in, source))
        return grid_in._id  # type: ignore[no-any-return]

    def upload_from_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
    ) -> None:
        """Upload a user file to a GridFS bucket with a custom file id.

        Raises :exc:`~gridfs.errors.FileExists` if a file with this id exists.

        :param file_id: The id to use for this file. The id must not have already been used for
            another file.
        :param filename: The name of the file to upload.
        :param source: The source stream of the content to be uploaded. Must be a file-like object that
            implements :meth:`read` or a string.
        :param chunk_size_bytes: The number of bytes per chunk of this file. Defaults to the
            chunk_size_bytes of :class:`GridFSBucket`.
        :param metadata: User data for the 'metadata' field of the files collection document.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        grid_in = self._grid_in(file_id, filename, chunk_size_bytes, metadata, self._session(session))
        run_sync(self._gen_upload(grid_in, source))

    def open_download_stream(self, file_id: Any, session: ClientSession | None = None) -> GridOut:
        """Open a Stream from which the application can read the stored file specified by file_id.

        Returns an instance of :class:`GridOut`.

        Raises :exc:`~gridfs.errors.NoFile` if no file with file_id exists.

        :param file_id: The _id of the file to be downloaded.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return run_sync(self._gen_open_download_stream(file_id, self._session(session)))  # type: ignore[no-any-return]

    def download_to_stream(
        self, file_id: Any, destination: Any, session: ClientSession | None = None
    ) -> None:
        """Download the contents of the stored file specified by file_id to `destination`, chunk by
        chunk.

        Raises :exc:`~gridfs.errors.NoFile` if no file with file_id exists.

        :param file_id: The _id of the file to be downloaded.
        :param destination: a file-like object implementing :meth:`write`.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        grid_out = self.open_download_stream(file_id, session)
        run_sync(self._gen_download(grid_out, destination))

    def open_download_stream_by_name(
        self, filename: str, revision: int = -1, session: ClientSession | None = None
    ) -> GridOut:
        """Open a Stream from which the application can read `filename` and optional `revision`.

        Returns an instance of :class:`GridOut`.

        Raises :exc:`~gridfs.errors.NoFile` if no such version of that file exists.

        Raises :exc:`TypeError` if `filename` is not a string or `revision` not an int.

        :param filename: The name of the file to read from.
        :param revision: Which revision (documents with the same filename and different uploadDate)
            of the file to retrieve. Defaults to -1 (the most recent revision).
        :param session: a tenantpool :class:`~tenantpool.ClientSession`

        :Note: Revision numbers are defined as follows:

          - 0 = the original stored file
          - 1 = the first revision
          - 2 = the second revision
          - etc...
          - -2 = the second most recent revision
          - -1 = the most recent revision
        """
        return run_sync(  # type: ignore[no-any-return]
            self._gen_open_download_stream_by_name(filename, revision, self._session(session))
        )

    def download_to_stream_by_name(
        self, filename: str, destination: Any, revision: int = -1, session: ClientSession | None = None
    ) -> None:
        """Write the contents of `filename` (with optional `revision`) to `destination`.

        Raises :exc:`~gridfs.errors.NoFile` if no such version of that file exists.

        :param filename: The name of the file to read from.
        :param destination: A file-like object that implements :meth:`write`.
        :param revision: Which revision of the file to retrieve (see
            :meth:`open_download_stream_by_name`). Defaults to -1 (the most recent revision).
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        grid_out = self.open_download_stream_by_name(filename, revision, session)
        run_sync(self._gen_download(grid_out, destination))

    def delete(self, file_id: Any, session: ClientSession | None = None) -> None:
        """Given an file_id, delete this stored file's files collection document and associated chunks
        from a GridFS bucket.

        Raises :exc:`~gridfs.errors.NoFile` if no file with file_id exists.

        :param file_id: The _id of the file to be deleted.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        run_sync(self._gen_delete(file_id, self._session(session)))

    def delete_by_name(self, filename: str, session: ClientSession | None = None) -> None:
        """Given a filename, delete this stored file's files collection document(s) (every revision)
        and associated chunks from a GridFS bucket.

        Raises :exc:`~gridfs.errors.NoFile` if no file with the given filename exists.

        :param filename: The name of the file to be deleted.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        run_sync(self._gen_delete_by_name(filename, self._session(session)))

    def find(self, *args: Any, **kwargs: Any) -> GridOutCursor:
        """Find and return the files collection documents that match ``filter``, as a cursor of
        :class:`GridOut` (``for grid_out in bucket.find({"filename": "lisa.txt"}): ...``; chain
        ``sort``, ``skip``, ``limit`` as on any cursor).

        :param filter: Search query.
        :param batch_size: The number of documents to return per batch.
        :param limit: The maximum number of documents to return.
        :param no_cursor_timeout: The server normally times out idle cursors after an inactivity period
            (10 minutes) to prevent excess memory use. Set this option to True prevent that.
        :param skip: The number of documents to skip before returning.
        :param sort: The order by which to sort results. Defaults to None.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return GridOutCursor(self._collection, *args, **kwargs)

    def rename(self, file_id: Any, new_filename: str, session: ClientSession | None = None) -> None:
        """Rename the stored file with the specified file_id.

        Raises :exc:`~gridfs.errors.NoFile` if no file with file_id exists.

        :param file_id: The _id of the file to be renamed.
        :param new_filename: The new name of the file.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        run_sync(self._gen_rename(file_id, new_filename, self._session(session)))

    def rename_by_name(self, filename: str, new_filename: str, session: ClientSession | None = None) -> None:
        """Rename every revision of the stored file with the specified filename.

        Raises :exc:`~gridfs.errors.NoFile` if no file with the given filename exists.

        :param filename: The filename of the file to be renamed.
        :param new_filename: The new name of the file.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        run_sync(self._gen_rename_by_name(filename, new_filename, self._session(session)))

    def drop(self, session: ClientSession | None = None) -> None:
        """Drop the bucket's files and chunks collections (the GridFS spec's ``drop``; pymongo's
        GridFSBucket has no such method).

        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        run_sync(self._gen_drop(self._session(session)))
