"""CachedDatabaseWrapper: the design document's TTL cache for ``find_one``, made safe.

Differences from the document, on purpose: keys are the BSON encoding of the query (``str(query)``
confuses ``{"a": 1}`` with ``{"a": "1"}``-like reprs and dict orders), callers get copies (mutating a
returned document must not change the cache), the cache is bounded and thread-safe, and writes made
through ``wrapper.db`` invalidate the written collection's entries.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import bson

from .collection import Collection
from .database import Database

_WRITES = frozenset(
    {
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "delete_one",
        "delete_many",
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "bulk_write",
        "drop",
        "rename",
    }
)


class CachedDatabaseWrapper:
    """Caches ``find_one`` results per collection and query for ``cache_ttl`` seconds."""

    def __init__(self, db: Database, cache_ttl: float = 300, max_entries: int = 10_000) -> None:
        self._db = db
        self.cache_ttl = cache_ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[str, bytes], tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def db(self) -> _InvalidatingDatabase:
        """The database; writes through it invalidate the cache of the collection they touch."""
        return _InvalidatingDatabase(self._db, self)

    def find_one_cached(self, collection: str, query: Mapping[str, Any]) -> Any:
        key = (collection, bson.encode(query))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.cache_ttl:
                self._cache.move_to_end(key)
                self.hits += 1
                return copy.deepcopy(hit[1])
        result = self._db[collection].find_one(query)
        with self._lock:
            self.misses += 1
            self._cache[key] = (now, result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return copy.deepcopy(result)

    def invalidate_cache(self, collection: str | None = None) -> None:
        with self._lock:
            if collection is None:
                self._cache.clear()
            else:
                for key in [k for k in self._cache if k[0] == collection]:
                    del self._cache[key]


class _InvalidatingDatabase:
    def __init__(self, db: Database, cache: CachedDatabaseWrapper) -> None:
        self._db = db
        self._cache = cache

    def __getitem__(self, name: str) -> _InvalidatingCollection:
        return _InvalidatingCollection(self._db[name], self._cache)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._db, name)
        return _InvalidatingCollection(attr, self._cache) if isinstance(attr, Collection) else attr

    def drop_collection(self, name_or_collection: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(name_or_collection, "name", name_or_collection)
        try:
            return self._db.drop_collection(name_or_collection, *args, **kwargs)
        finally:
            self._cache.invalidate_cache(name)


class _InvalidatingCollection:
    def __init__(self, collection: Collection, cache: CachedDatabaseWrapper) -> None:
        self._collection = collection
        self._cache = cache

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if name not in _WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                # Also after a failed write: part of it (e.g. an unordered insert_many) may have landed.
                self._cache.invalidate_cache(self._collection.name)

        return write
