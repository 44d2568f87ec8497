"""Cursor and CommandCursor: pymongo's cursor API over a Rust cursor that hands out one server batch at a
time. Each batch is decoded by pymongo's C decoder in one call; nothing beyond one batch is held."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from pymongo import CursorType
from pymongo.errors import InvalidOperation

from ._common import (
    check_bool,
    check_int,
    check_mapping,
    decode,
    decode_all,
    encode,
    hint_value,
    index_document,
    index_list,
    max_time,
    projection_document,
    put,
    reject_session,
)

if TYPE_CHECKING:
    from ._core import RawCursor
    from .collection import Collection
    from .database import Database


class _BatchIterator:
    """Shared iteration over a Rust cursor: a local deque refilled one server batch at a time."""

    _raw: RawCursor | None
    _codec: CodecOptions

    def _init_iteration(self) -> None:
        self._raw = None
        self._buffer: deque[Any] = deque()
        self._started = False
        self._exhausted = False

    def _open(self) -> RawCursor:
        raise NotImplementedError

    def _refill(self) -> bool:
        if self._exhausted:
            return False
        if self._raw is None:
            self._started = True
            self._raw = self._open()
        data = self._raw.next_batch()
        if data is None:
            self._exhausted = True
            return False
        self._buffer.extend(decode_all(data, self._codec))
        return True

    def __iter__(self) -> _BatchIterator:
        return self

    def __next__(self) -> Any:
        while not self._buffer:
            if not self._refill():
                raise StopIteration
        return self._buffer.popleft()

    def next(self) -> Any:
        return self.__next__()

    def try_next(self) -> Any:
        try:
            return self.__next__()
        except StopIteration:
            return None

    def to_list(self, length: int | None = None) -> list[Any]:
        """Up to ``length`` documents (all if None), as pymongo's ``Cursor.to_list``."""
        if length is not None:
            check_int("length", length)
            if length < 1:
                raise ValueError("to_list() length must be greater than 0")
        out: list[Any] = []
        for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    @property
    def alive(self) -> bool:
        """True while more documents may come: buffered ones, or an open server cursor."""
        if self._buffer:
            return True
        if not self._started:
            return True
        return self._raw is not None and self._raw.alive and not self._exhausted

    def close(self) -> None:
        """Kills the server cursor (if open) and frees the tenant's pool for reaping."""
        if self._raw is not None:
            self._raw.close()
        self._buffer.clear()
        self._exhausted = True
        self._started = True

    def __enter__(self) -> _BatchIterator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Cursor(_BatchIterator):
    """The cursor ``Collection.find`` returns. Options chain until iteration starts, as in pymongo."""

    def __init__(
        self,
        collection: Collection,
        filter: Mapping[str, Any] | None = None,
        projection: Any = None,
        skip: int = 0,
        limit: int = 0,
        no_cursor_timeout: bool = False,
        cursor_type: int = CursorType.NON_TAILABLE,
        sort: Any = None,
        allow_partial_results: bool = False,
        oplog_replay: bool = False,
        batch_size: int = 0,
        collation: Mapping[str, Any] | None = None,
        hint: Any = None,
        max_scan: None = None,
        max_time_ms: int | None = None,
        max: Any = None,
        min: Any = None,
        return_key: bool | None = None,
        show_record_id: bool | None = None,
        snapshot: bool | None = None,
        comment: Any = None,
        session: Any = None,
        allow_disk_use: bool | None = None,
        let: Mapping[str, Any] | None = None,
    ) -> None:
        if filter is None:
            filter = {}
        check_mapping("filter", filter)
        check_int("skip", skip)
        check_int("limit", limit)
        check_int("batch_size", batch_size)
        check_bool("no_cursor_timeout", no_cursor_timeout)
        if skip < 0:
            raise ValueError("skip must be >= 0")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        if cursor_type != CursorType.NON_TAILABLE:
            raise InvalidOperation("tailable cursors are not supported yet by tenantpool")
        if oplog_replay or max_scan is not None or snapshot:
            raise InvalidOperation("oplog_replay, max_scan and snapshot are not supported by MongoDB 4.4+")
        reject_session(session)
        self._collection = collection
        self._codec = collection.codec_options
        self._filter = filter
        self._options: dict[str, Any] = {}
        o = self._options
        put(o, "projection", projection_document(projection))
        if skip:
            o["skip"] = skip
        if limit:
            o["limit"] = limit
        if batch_size:
            o["batchSize"] = batch_size
        if no_cursor_timeout:
            o["noCursorTimeout"] = True
        if allow_partial_results:
            o["allowPartialResults"] = True
        if sort is not None:
            o["sort"] = index_document(index_list(sort))
        put(o, "collation", collation)
        put(o, "hint", hint_value(hint))
        put(o, "maxTimeMS", max_time(max_time_ms))
        put(o, "max", max)
        put(o, "min", min)
        put(o, "returnKey", return_key)
        put(o, "showRecordId", show_record_id)
        put(o, "comment", comment)
        put(o, "allowDiskUse", allow_disk_use)
        put(o, "let", let)
        collection._read_options(o)
        self._init_iteration()

    @property
    def collection(self) -> Collection:
        return self._collection

    def _check_not_started(self) -> None:
        if self._started:
            raise InvalidOperation("cannot set options after executing query")

    def _set(self, key: str, value: Any) -> Cursor:
        self._check_not_started()
        if value is None:
            self._options.pop(key, None)
        else:
            self._options[key] = value
        return self

    def sort(self, key_or_list: Any, direction: Any = None) -> Cursor:
        return self._set("sort", index_document(index_list(key_or_list, direction)))

    def skip(self, skip: int) -> Cursor:
        check_int("skip", skip)
        if skip < 0:
            raise ValueError("skip must be >= 0")
        return self._set("skip", skip or None)

    def limit(self, limit: int) -> Cursor:
        check_int("limit", limit)
        return self._set("limit", limit or None)

    def batch_size(self, batch_size: int) -> Cursor:
        check_int("batch_size", batch_size)
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        return self._set("batchSize", batch_size or None)

    def max_time_ms(self, max_time_ms: int | None) -> Cursor:
        return self._set("maxTimeMS", max_time(max_time_ms))

    def hint(self, index: Any) -> Cursor:
        return self._set("hint", hint_value(index))

    def collation(self, collation: Mapping[str, Any] | None) -> Cursor:
        return self._set("collation", collation)

    def comment(self, comment: Any) -> Cursor:
        return self._set("comment", comment)

    def allow_disk_use(self, allow_disk_use: bool) -> Cursor:
        check_bool("allow_disk_use", allow_disk_use)
        return self._set("allowDiskUse", allow_disk_use)

    def where(self, code: str) -> Cursor:
        self._check_not_started()
        self._filter = {**self._filter, "$where": code}
        return self

    def clone(self) -> Cursor:
        c = Cursor(self._collection, dict(self._filter))
        c._options = dict(self._options)
        return c

    def rewind(self) -> Cursor:
        self.close()
        self._init_iteration()
        return self

    def _spec(self) -> bytes:
        return encode({"collection": self._collection.name, "filter": self._filter, "options": self._options},
                      False, self._codec)

    def _open(self) -> RawCursor:
        c = self._collection
        return c._core.open_cursor(c._user_id, c._db_name, "find", self._spec())

    def _find_one(self) -> Any:
        # One round trip and no cursor object: the server returns the document in the first batch.
        self._options.pop("limit", None)
        self._options.pop("batchSize", None)
        c = self._collection
        reply = c._core.execute(c._user_id, c._db_name, "find_one", self._spec())
        return None if reply is None else decode(reply, self._codec)

    def distinct(self, key: str) -> list[Any]:
        return self._collection.distinct(key, self._filter)

    def __getitem__(self, index: int) -> Any:
        check_int("index", index)
        if index < 0:
            raise IndexError("Cursor instances do not support negative indices")
        clone = self.clone()
        clone._options["skip"] = self._options.get("skip", 0) + index
        clone._options["limit"] = -1
        for doc in clone:
            return doc
        raise IndexError("no such item for Cursor instance")

    def __repr__(self) -> str:
        return f"<tenantpool.cursor.Cursor object on {self._collection.full_name}>"


class CommandCursor(_BatchIterator):
    """The cursor of ``aggregate``, ``list_indexes`` and ``list_collections``; opened at once, as in
    pymongo, so errors in the pipeline surface at the call."""

    def __init__(self, database: Database, op: str, spec: dict[str, Any], codec: CodecOptions) -> None:
        self._database = database
        self._codec = codec
        self._init_iteration()
        self._started = True
        self._raw = database._core.open_cursor(database._user_id, database.name, op, encode(spec, False, codec))

    def _open(self) -> RawCursor:
        raise AssertionError("a CommandCursor is opened at construction")

    def __repr__(self) -> str:
        return f"<tenantpool.cursor.CommandCursor object on {self._database.name}>"
