"""GridFS: pymongo's legacy ``gridfs.GridFS`` API (put, get, get_version...) on a tenant's database.

Its operations are generators shared with ``AsyncGridFS`` (see ``bucket.py`` for the pattern).
"""

from __future__ import annotations

from collections import abc
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pymongo.errors import ConfigurationError

from .._calls import BOUND_SESSION, Operation, run_sync
from ..database import Database
from ._shared import check_database, clear_type_registry, disallow_transactions, resolve_session
from .bucket import gen_find_version
from .grid_in import GridIn
from .grid_out import GridOut, GridOutCursor

if TYPE_CHECKING:
    from ..session import ClientSession


class _GridFSBase:
    """The legacy API's state and operations; the sync and async classes run them."""

    _bound_sessions: ContextVar[Any] = BOUND_SESSION
    _database_class: type[Database] = Database
    _twin = "AsyncGridFS"
    _grid_in_class: type[Any] = GridIn
    _grid_out_class: type[Any] = GridOut
    # A Collection, or an AsyncCollection in the async twin.
    _collection: Any

    def __init__(self, database: Database, collection: str = "fs") -> None:
        check_database(database, self._database_class, self._twin, type(self).__name__)
        database = clear_type_registry(database)
        if not database.write_concern.acknowledged:
            raise ConfigurationError("database must use acknowledged write_concern")
        self._db = database
        self._collection = database[collection]
        self._files = self._collection.files
        self._chunks = self._collection.chunks

    def _session(self, session: Any) -> Any:
        return resolve_session(self._db, session, self._bound_sessions)

    def _gen_put(self, data: Any, kwargs: dict[str, Any]) -> Operation[Any]:
        grid_in = self._grid_in_class(self._collection, **kwargs)
        try:
            yield from grid_in._gen_write(data)
        except BaseException:
            grid_in._mark_closed()
            raise
        yield from grid_in._gen_close()
        return grid_in._id

    def _gen_get(self, file_id: Any, session: Any) -> Operation[Any]:
        grid_out = self._grid_out_class(self._collection, file_id, session=session)
        # NoFile now, rather than on first attribute access.
        yield from grid_out._gen_open()
        return grid_out

    def _gen_get_version(
        self, filename: str | None, version: int | None, session: Any, kwargs: dict[str, Any]
    ) -> Operation[Any]:
        query = kwargs
        if filename is not None:
            query["filename"] = filename
        if version is None:
            version = -1
        if not isinstance(version, int) or isinstance(version, bool):
            raise TypeError(f"version must be an int or None, not {type(version)}")
        return (
            yield from gen_find_version(
                self._collection, self._grid_out_class, query, version, session, filename
            )
        )

    def _gen_delete(self, file_id: Any, session: Any) -> Operation[None]:
        disallow_transactions(session)
        (yield from self._files._gen_delete_one({"_id": {"$eq": file_id}}, session=session))
        (yield from self._chunks._gen_delete_many({"files_id": {"$eq": file_id}}, session=session))

    def _gen_list(self, session: Any) -> Operation[list[str]]:
        disallow_transactions(session)
        # With an index, distinct reports documents without a filename as None.
        names = yield from self._files._gen_distinct("filename", session=session)
        return [name for name in names if name is not None]

    def _gen_find_one(self, filter: Any, session: Any, args: Any, kwargs: dict[str, Any]) -> Operation[Any]:
        if filter is not None and not isinstance(filter, abc.Mapping):
            filter = {"_id": {"$eq": filter}}
        disallow_transactions(session)
        cursor = self._cursor(filter, *args, session=session, **kwargs)
        files = yield from cursor._gen_to_list(1)
        cursor._close()
        return files[0] if files else None

    def _gen_exists(self, document_or_id: Any, session: Any, kwargs: dict[str, Any]) -> Operation[bool]:
        disallow_transactions(session)
        if kwargs:
            query = kwargs
        else:
            query = document_or_id
            if query is not None and not isinstance(query, abc.Mapping):
                query = {"_id": {"$eq": query}}
        found = yield from self._files._gen_find_one(query, ["_id"], session=session)
        return found is not None

    def _cursor(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class GridFS(_GridFSBase):
    """pymongo's legacy :class:`gridfs.GridFS` on a tenant's database (``put``, ``get``,
    ``get_version``...); :class:`GridFSBucket` is the GridFS spec's API for the same files."""

    def __init__(self, database: Database, collection: str = "fs") -> None:
        """Create a new instance of :class:`GridFS`.

        Raises :class:`TypeError` if `database` is not a tenantpool :class:`~tenantpool.Database`.

        :param database: the tenant's database (``manager.get_database(user_id)``)
        :param collection: root collection to use
        """
        super().__init__(database, collection)

    def _cursor(self, *args: Any, **kwargs: Any) -> GridOutCursor:
        return GridOutCursor(self._collection, *args, **kwargs)

    def new_file(self, **kwargs: Any) -> GridIn:
        """Create a new file in GridFS.

        Returns a new :class:`GridIn` instance to which data can be written. Any keyword arguments will
        be passed through to :class:`GridIn`.

        If the ``"_id"`` of the file is manually specified, it must not already exist in GridFS.
        Otherwise :class:`~gridfs.errors.FileExists` is raised.

        :param kwargs: keyword arguments for file creation
        """
        return GridIn(self._collection, **kwargs)

    def put(self, data: Any, **kwargs: Any) -> Any:
        """Put data in GridFS as a new file.

        Equivalent to doing::

          with fs.new_file(**kwargs) as f:
              f.write(data)

        `data` can be either an instance of :class:`bytes` or a file-like object providing a
        :meth:`read` method. If an `encoding` keyword argument is passed, `data` can also be a
        :class:`str` instance, which will be encoded as `encoding` before being written. Returns the
        ``"_id"`` of the created file.

        If the ``"_id"`` of the file is manually specified, it must not already exist in GridFS.
        Otherwise :class:`~gridfs.errors.FileExists` is raised.

        :param data: data to be written as a file.
        :param kwargs: keyword arguments for file creation
        """
        return run_sync(self._gen_put(data, kwargs))

    def get(self, file_id: Any, session: ClientSession | None = None) -> GridOut:
        """Get a file from GridFS by ``"_id"``.

        Returns an instance of :class:`GridOut`, which provides a file-like interface for reading.
        Raises :class:`~gridfs.errors.NoFile` if there is no such file.

        :param file_id: ``"_id"`` of the file to get
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return run_sync(self._gen_get(file_id, self._session(session)))  # type: ignore[no-any-return]

    def get_version(
        self,
        filename: str | None = None,
        version: int | None = -1,
        session: ClientSession | None = None,
        **kwargs: Any,
    ) -> GridOut:
        """Get a file from GridFS by ``"filename"`` or metadata fields.

        Returns a version of the file in GridFS whose filename matches `filename` and whose metadata
        fields match the supplied keyword arguments, as an instance of :class:`GridOut`.

        If more than one file matches the query, then version ``-1`` will be the most recently uploaded
        matching file, ``-2`` the second most recently uploaded, etc. Version ``0`` will be the first
        version uploaded, ``1`` the second version, etc.

        Raises :class:`~gridfs.errors.NoFile` if no such version of that file exists.

        :param filename: ``"filename"`` of the file to get, or `None`
        :param version: version of the file to get (defaults to -1, the most recent version uploaded)
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        :param kwargs: find files by custom metadata.
        """
        return run_sync(  # type: ignore[no-any-return]
            self._gen_get_version(filename, version, self._session(session), kwargs)
        )

    def get_last_version(
        self, filename: str | None = None, session: ClientSession | None = None, **kwargs: Any
    ) -> GridOut:
        """Get the most recent version of a file in GridFS, matched by ``"filename"`` or metadata
        fields: :meth:`get_version` with the default `version` (``-1``).

        :param filename: ``"filename"`` of the file to get, or `None`
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        :param kwargs: find files by custom metadata.
        """
        return self.get_version(filename=filename, session=session, **kwargs)

    def delete(self, file_id: Any, session: ClientSession | None = None) -> None:
        """Delete a file from GridFS by ``"_id"``: its file document and all its chunks.

        Deletes of non-existent files are considered successful since the end result is the same: no
        file with that _id remains.

        :param file_id: ``"_id"`` of the file to delete
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        run_sync(self._gen_delete(file_id, self._session(session)))

    def list(self, session: ClientSession | None = None) -> list[str]:
        """List the names of all files stored in this instance of :class:`GridFS`.

        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return run_sync(self._gen_list(self._session(session)))

    def find_one(
        self, filter: Any | None = None, session: ClientSession | None = None, *args: Any, **kwargs: Any
    ) -> GridOut | None:
        """Get a single file from gridfs, or ``None`` if no matching file is found.

        All arguments to :meth:`find` are also valid arguments for :meth:`find_one`, although any
        `limit` argument will be ignored.

        :param filter: a dictionary specifying the query to be performing OR any other type to be used
            as the value for a query for ``"_id"`` in the file collection.
        :param args: any additional positional arguments are the same as the arguments to :meth:`find`.
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        :param kwargs: any additional keyword arguments are the same as the arguments to :meth:`find`.
        """
        return run_sync(  # type: ignore[no-any-return]
            self._gen_find_one(filter, self._session(session), args, kwargs)
        )

    def find(self, *args: Any, **kwargs: Any) -> GridOutCursor:
        """Query GridFS for files: a cursor of :class:`GridOut` over the files matching a query on the
        files collection (``fs.find({"filename": "lisa.txt"})`` gives every version of "lisa.txt";
        ``fs.find().sort("uploadDate", -1).limit(3)`` the three most recent files).

        :param filter: A query document that selects which files to include in the result set. Can be
            an empty document to include all files.
        :param skip: the number of files to omit (from the start of the result set)
        :param limit: the maximum number of results to return
        :param no_cursor_timeout: if True, the server never times the cursor out
        :param sort: a list of (key, direction) pairs specifying the sort order for this query.
        :param batch_size: the number of files per batch
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        """
        return GridOutCursor(self._collection, *args, **kwargs)

    def exists(
        self, document_or_id: Any | None = None, session: ClientSession | None = None, **kwargs: Any
    ) -> bool:
        """Check if a file exists in this instance of :class:`GridFS`.

        The file to check for can be specified by the value of its ``_id`` key, or by passing in a
        query document, as a dictionary or as keyword arguments: ``fs.exists(file_id)``,
        ``fs.exists({"_id": file_id})`` and ``fs.exists(_id=file_id)`` are equivalent.

        :param document_or_id: query document, or _id of the document to check for
        :param session: a tenantpool :class:`~tenantpool.ClientSession`
        :param kwargs: keyword arguments are used as a query document, if they're present.
        """
        return run_sync(self._gen_exists(document_or_id, self._session(session), kwargs))
