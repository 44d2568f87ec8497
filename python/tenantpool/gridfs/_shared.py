"""What the GridFS classes share: pymongo's constants and exceptions, the checks of their arguments, the
session an operation runs in, and the attribute descriptors of GridIn and GridOut."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from gridfs.errors import CorruptGridFile, FileExists, GridFSError, NoFile
from pymongo import ASCENDING
from pymongo.errors import InvalidOperation

from .._calls import bound_session
from ..session import _Session

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CorruptGridFile",
    "FileExists",
    "GridFSError",
    "NoFile",
]

# pymongo's default: slightly under a power of two, to suit the server's record allocation.
DEFAULT_CHUNK_SIZE = 255 * 1024

# pymongo buffers up to 48 MB of chunks (its maximum message size) before one insert_many, so a large
# upload holds that much, several times over while the command is encoded (91 MiB of Python allocations
# for a 50 MB file). tenantpool's insert_many makes about eight copies of a batch on its way to the core,
# so the batch is kept small: 1 MiB (four or five default chunks per round trip) peaks at 10 MiB. It is
# also the fastest of those measured: 104, 97 and 63 MB/s with 1, 4 and 16 MiB batches (medians of four
# 50 MB uploads to a local server; the copies cost more than the round trips saved). One insert_one per
# chunk, which copies least, was slower still: 116 MB/s against 188 in another set of runs.
UPLOAD_BUFFER_BYTES = 1024 * 1024
# pymongo's other bound: chunk documents per insert_many.
UPLOAD_BUFFER_CHUNKS = 100_000
# A chunk document's BSON beyond its data: {"_id": ObjectId, "files_id": ObjectId, "n": int, "data": ...}.
CHUNK_OVERHEAD = 60
# The chunks cursor's batch: about this many bytes of chunk data per getMore (the server's default is
# 16 MiB, and tenantpool's cursors read one batch ahead, so a download would hold 32 MiB).
DOWNLOAD_BATCH_BYTES = 4 * 1024 * 1024

# The indexes pymongo's GridFS creates, key for key.
CHUNKS_INDEX: dict[str, Any] = {"files_id": ASCENDING, "n": ASCENDING}
FILES_INDEX: dict[str, Any] = {"filename": ASCENDING, "uploadDate": ASCENDING}

EMPTY = b""
NEWLINE = b"\n"


def chunk_batch_size(chunk_size: int) -> int:
    """The chunks cursor's batch size for files of ``chunk_size`` bytes per chunk."""
    return max(1, DOWNLOAD_BATCH_BYTES // max(1, chunk_size))


def disallow_transactions(session: _Session | None) -> None:
    """pymongo's rule: GridFS never runs in a multi-document transaction (a file's chunks can exceed
    what one transaction may write)."""
    if session is not None and session.in_transaction:
        raise InvalidOperation("GridFS does not support multi-document transactions")


def check_database(db: Any, expected: type, twin: str, what: str) -> None:
    """Refuses anything but a tenantpool database of the right flavour, saying what to use instead."""
    from ..asynchronous import AsyncDatabase
    from ..database import Database

    if isinstance(db, expected) and (expected is AsyncDatabase or not isinstance(db, AsyncDatabase)):
        return
    if isinstance(db, Database):
        async_db = isinstance(db, AsyncDatabase)
        manager = "an AsyncUserConnectionManager" if async_db else "a UserConnectionManager"
        raise TypeError(
            f"{what} needs a tenantpool {expected.__name__}, not {type(db).__name__}: use "
            f"tenantpool.gridfs.{twin} with the databases of {manager}"
        )
    hint = (
        "; for a pymongo Database use pymongo's own gridfs package"
        if type(db).__module__.startswith("pymongo")
        else ""
    )
    raise TypeError(
        f"database must be an instance of tenantpool's {expected.__name__} "
        f"(manager.get_database(user_id)), not {type(db)}{hint}"
    )


def check_chunk_size(chunk_size: Any) -> int:
    """A chunk size must be a positive int: 0 would never make progress, a huge one would not fit a
    BSON document."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
        raise TypeError(f"chunk_size_bytes must be an integer, not {type(chunk_size)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size_bytes must be a positive number of bytes, got {chunk_size}")
    return chunk_size


def clear_type_registry(entity: Any, **kwargs: Any) -> Any:
    """The database or collection without its codec's type registry (pymongo's GridFS does the same:
    an application's custom types must not turn chunk data or file documents into its own objects)."""
    codec = entity.codec_options.with_options(type_registry=None)
    return entity.with_options(codec_options=codec, **kwargs)


def resolve_session(target: Any, session: Any, bound: ContextVar[Any]) -> Any:
    """The session an operation given ``session`` runs in: that one, else the one bound in this context
    by ``with session.bind():`` (checked to be of ``target``'s tenant), else None. pymongo's GridFS gets
    the bound session from each collection operation; resolving it once at the public call gives every
    step of the operation the same one."""
    if session is None:
        current = bound.get()
        if current is not None:
            return bound_session(target, current)
    return session


# -- attribute descriptors ---------------------------------------------------------------------------


def grid_in_property(field: str, doc: str, read_only: bool = False, closed_only: bool = False) -> Any:
    """A GridIn attribute backed by the file document it will insert. Settable ones update the stored
    document once the file is closed (the sync GridIn does it in place; the async one cannot await in
    an assignment, so it refuses and points to ``set``)."""

    def getter(self: Any) -> Any:
        if closed_only and not self._closed:
            raise AttributeError(f"can only get {field!r} on a closed file")
        if field == "length":
            return self._file.get(field, 0)
        return self._file.get(field, None)

    def setter(self: Any, value: Any) -> None:
        self._set_field(field, value)

    if read_only:
        doc += "\n\nThis attribute is read-only."
    elif closed_only:
        doc += "\n\nThis attribute is read-only and can only be read after :meth:`close` has been called."
    if read_only or closed_only:
        return property(getter, doc=doc)
    return property(getter, setter, doc=doc)


def grid_out_property(field: str, doc: str) -> Any:
    """A read-only GridOut attribute from the file document (the sync GridOut fetches the document on
    first use; the async one must have been opened)."""

    def getter(self: Any) -> Any:
        file = self._file_document(field)
        if field == "length":
            return file.get(field, 0)
        return file.get(field, None)

    return property(getter, doc=doc + "\n\nThis attribute is read-only.")


F = TypeVar("F", bound=Callable[..., Any])


def doc_of(source: Callable[..., Any]) -> Callable[[F], F]:
    """Gives the decorated method ``source``'s docstring: an async twin documents the same operation."""

    def decorate(fn: F) -> F:
        fn.__doc__ = source.__doc__
        return fn

    return decorate
