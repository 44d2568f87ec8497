"""GridFS for tenants: pymongo's ``GridFSBucket`` and ``GridFS`` APIs on a tenant's tenantpool database.

pymongo's own ``gridfs.GridFSBucket(db)`` refuses a tenantpool ``Database`` (it is not a
``pymongo.database.Database``); these classes take one::

    from tenantpool.gridfs import GridFSBucket

    bucket = GridFSBucket(manager.get_database("user_a"))
    file_id = bucket.upload_from_stream("invoice.pdf", open("invoice.pdf", "rb"))
    bucket.download_to_stream(file_id, open("copy.pdf", "wb"))

The files are stored exactly as pymongo stores them (``fs.files`` and ``fs.chunks`` of the tenant's
database, the same documents and indexes), so pymongo's GridFS reads what these write and the other way
round. Uploads and downloads stream in a few MiB whatever the file's size. The errors are pymongo's
(``gridfs.errors.NoFile``, ``FileExists``, ``CorruptGridFile``). The asyncio classes
(``AsyncGridFSBucket``, ``AsyncGridFS``...) take an ``AsyncDatabase`` and mirror pymongo's async GridFS.

GridFS uses nothing but the tenant's ``Database`` and ``Collection``: its traffic goes through the
tenant's pool and quota, and whatever restricts a tenant's handles restricts its buckets.
"""

from __future__ import annotations

from ._shared import DEFAULT_CHUNK_SIZE, CorruptGridFile, FileExists, GridFSError, NoFile
from .asynchronous import AsyncGridFS, AsyncGridFSBucket, AsyncGridIn, AsyncGridOut, AsyncGridOutCursor
from .bucket import GridFSBucket
from .grid_in import GridIn
from .grid_out import GridOut, GridOutCursor
from .legacy import GridFS

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "AsyncGridFS",
    "AsyncGridFSBucket",
    "AsyncGridIn",
    "AsyncGridOut",
    "AsyncGridOutCursor",
    "CorruptGridFile",
    "FileExists",
    "GridFS",
    "GridFSBucket",
    "GridFSError",
    "GridIn",
    "GridOut",
    "GridOutCursor",
    "NoFile",
]
