"""Cursor: pymongo's find cursor over a Rust cursor (see _batch_cursor); CommandCursor lives in
command_cursor and is re-exported here, where tenantpool has always had it."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from bson.code import Code
from pymongo import CursorType
from pymongo.errors import InvalidOperation

from ._calls import (
    BOUND_SESSION,
    Execute,
    Operation,
    bound_session,
    operation,
    operations,
    twin,
)
from ._common import (
    check_bool,
    check_mapping,
    check_query_size,
    core_session,
    decode,
    encode,
    fields_document,
    hint_value,
    index_document,
    index_list,
    set_if_given,
    validate_collation_or_none,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._core import RawCursor
    from .collection import Collection

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession
from ._batch_cursor import (
    _AWAIT_DATA,
    _EXHAUST,
    _NO_TIMEOUT,
    _PARTIAL,
    _SUPPORTED_FLAGS,
    _TAILABLE,
    _BatchCursor,
    _refuse_exhaust,
)
from .command_cursor import CommandCursor

__all__ = ["CommandCursor", "Cursor"]


@operations
class Cursor(_BatchCursor):
    """The cursor ``Collection.find`` returns, with pymongo's arguments, checks and chaining: options can be
    changed until the first document is fetched; the query runs on first iteration."""

    # The variable of the sessions ``bind()`` binds (the async cursor's: the async sessions').
    _bound_sessions = BOUND_SESSION

    def __init__(
        self,
        collection: Collection,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | Iterable[str] | None = None,
        skip: int = 0,
        limit: int = 0,
        no_cursor_timeout: bool = False,
        cursor_type: int = CursorType.NON_TAILABLE,
        sort: Any = None,
        allow_partial_results: bool = False,
        oplog_replay: bool = False,
        batch_size: int = 0,
        collation: Any = None,
        hint: Any = None,
        max_scan: int | None = None,
        max_time_ms: int | None = None,
        max: Any = None,
        min: Any = None,
        return_key: bool | None = None,
        show_record_id: bool | None = None,
        snapshot: bool | None = None,
        comment: Any = None,
        session: ClientSession | None = None,
        allow_disk_use: bool | None = None,
        let: Mapping[str, Any] | None = None,
    ) -> None:
        self._collection = collection
        self._codec = collection.codec_options
        self._init_iteration()
        if session is None:
            bound = self._bound_sessions.get()
            if bound is not None:
                # The session bound by ``with session.bind():``, taken when the cursor is made.
                session = bound_session(collection, bound)
        # Checked now, as pymongo checks it: a foreign or ended session fails at the call.
        core_session(session, collection._user_id)
        self._session: ClientSession | None = session
        spec = filter or {}
        check_mapping("filter", spec)
        if not isinstance(skip, int):
            raise TypeError(f"skip must be an instance of int, not {type(skip)}")
        if not isinstance(limit, int):
            raise TypeError(f"limit must be an instance of int, not {type(limit)}")
        check_bool("no_cursor_timeout", no_cursor_timeout)
        if cursor_type not in (
            CursorType.NON_TAILABLE,
            CursorType.TAILABLE,
            CursorType.TAILABLE_AWAIT,
            CursorType.EXHAUST,
        ):
            raise ValueError("not a valid value for cursor_type")
        check_bool("allow_partial_results", allow_partial_results)
        check_bool("oplog_replay", oplog_replay)
        if not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an integer, not {type(batch_size)}")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        if allow_disk_use is not None:
            check_bool("allow_disk_use", allow_disk_use)
        if let is not None:
            check_mapping("let", let)
        if cursor_type == CursorType.EXHAUST:
            if limit:
                raise InvalidOperation("Can't use limit and exhaust together.")
            raise _refuse_exhaust("find(cursor_type=CursorType.EXHAUST)")
        # Arguments the Rust driver's find cannot express (server features removed).
        for name, value in (("oplog_replay", oplog_replay), ("max_scan", max_scan), ("snapshot", snapshot)):
            if value:
                raise InvalidOperation(
                    f"find({name}=...) is not supported by tenantpool (the server ignores "
                    f"or rejects it since MongoDB 4.4)"
                )
        self._filter: Mapping[str, Any] = spec
        self._has_filter = filter is not None
        self._projection = None if projection is None else fields_document(projection, "projection")
        self._skip = skip
        self._limit = limit
        self._batch_size = batch_size
        self._ordering = (sort and index_document(sort)) or None
        self._max_time_ms = max_time_ms
        self._max = max
        self._min = min
        self._collation = validate_collation_or_none(collation)
        self._return_key = return_key
        self._show_record_id = show_record_id
        self._allow_disk_use = allow_disk_use
        self._comment = comment
        self._let = let
        self._hint = hint_value(hint)
        # pymongo's query flags: the cursor type's, and the two booleans'.
        self._flags = (
            cursor_type
            | (_NO_TIMEOUT if no_cursor_timeout else 0)
            | (_PARTIAL if allow_partial_results else 0)
        )
        self._max_await_time_ms: int | None = None
        self._empty = False

    @property
    def collection(self) -> Collection:
        """The collection this cursor queries."""
        return self._collection

    @property
    def cursor_id(self) -> int | None:
        """Not known to tenantpool: the Rust core keeps the server cursor id to itself."""
        return None

    @property
    def address(self) -> tuple[str, int] | None:
        """None: the Rust core does not tell which server a cursor runs on (pymongo: its ``(host, port)``)."""
        return None

    # -- chaining -------------------------------------------------------------------------------------

    def _check_okay_to_chain(self) -> None:
        if self._started:
            raise InvalidOperation("cannot set options after executing query")

    def sort(self, key_or_list: Any, direction: Any = None) -> Self:
        """Sorts the results by ``key_or_list`` (a key and ``direction``, or a list of ``(key, direction)``),
        as pymongo's ``sort``. Returns this cursor, for chaining; ``InvalidOperation`` once iteration has
        started."""
        self._check_okay_to_chain()
        self._ordering = index_document(index_list(key_or_list, direction))
        return self

    def skip(self, skip: int) -> Self:
        """Skips the first ``skip`` results (pymongo's ``skip``; ``TypeError``/``ValueError`` for a non-int or
        negative value). Returns this cursor, for chaining; ``InvalidOperation`` once iteration has
        started."""
        if not isinstance(skip, int):
            raise TypeError(f"skip must be an integer, not {type(skip)}")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        self._check_okay_to_chain()
        self._skip = skip
        return self

    def limit(self, limit: int) -> Self:
        """Returns at most ``limit`` results (0: no limit; negative: at most that many, in one batch), as
        pymongo's ``limit``. Returns this cursor, for chaining; ``InvalidOperation`` once iteration has
        started."""
        if not isinstance(limit, int):
            raise TypeError(f"limit must be an integer, not {type(limit)}")
        self._check_okay_to_chain()
        self._empty = False
        self._limit = limit
        return self

    def batch_size(self, batch_size: int) -> Self:
        """How many documents each server batch holds (one round trip each), as pymongo's ``batch_size``.
        Returns this cursor, for chaining; ``InvalidOperation`` once iteration has started."""
        if not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an integer, not {type(batch_size)}")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        self._check_okay_to_chain()
        self._batch_size = batch_size
        return self

    def max_time_ms(self, max_time_ms: int | None) -> Self:
        """A server-side time limit for the query (``ExecutionTimeout`` when exceeded), as pymongo's
        ``max_time_ms``. Returns this cursor, for chaining; ``InvalidOperation`` once iteration has
        started."""
        if not isinstance(max_time_ms, int) and max_time_ms is not None:
            raise TypeError(f"max_time_ms must be an integer or None, not {type(max_time_ms)}")
        self._check_okay_to_chain()
        self._max_time_ms = max_time_ms
        return self

    def max_await_time_ms(self, max_await_time_ms: int | None) -> Self:
        """How long a tailable-await cursor's getMore waits for new documents, as pymongo's
        ``max_await_time_ms``. Returns this cursor, for chaining; ``InvalidOperation`` once iteration has
        started."""
        if not isinstance(max_await_time_ms, int) and max_await_time_ms is not None:
            raise TypeError(f"max_await_time_ms must be an integer or None, not {type(max_await_time_ms)}")
        self._check_okay_to_chain()
        # pymongo's test: ignored unless the cursor is tailable (then sent as each getMore's maxTimeMS;
        # the server accepts it only with awaitData).
        if self._flags & CursorType.TAILABLE_AWAIT:
            self._max_await_time_ms = max_await_time_ms
        return self

    def hint(self, index: Any) -> Self:
        """The index the query must use (its name, or its keys), as pymongo's ``hint``. Returns this cursor,
        for chaining; ``InvalidOperation`` once iteration has started."""
        self._check_okay_to_chain()
        self._hint = hint_value(index)
        return self

    def collation(self, collation: Any) -> Self:
        """The collation of the query (a ``pymongo.collation.Collation`` or its document). Returns this
        cursor, for chaining; ``InvalidOperation`` once iteration has started."""
        self._check_okay_to_chain()
        self._collation = validate_collation_or_none(collation)
        return self

    def comment(self, comment: Any) -> Self:
        """A comment attached to the query (visible in the server's logs and profiler). Returns this cursor,
        for chaining; ``InvalidOperation`` once iteration has started."""
        self._check_okay_to_chain()
        self._comment = comment
        return self

    def allow_disk_use(self, allow_disk_use: bool) -> Self:
        """Whether a blocking sort may use temporary files on the server, as pymongo's ``allow_disk_use``.
        Returns this cursor, for chaining; ``InvalidOperation`` once iteration has started."""
        if not isinstance(allow_disk_use, bool):
            raise TypeError(f"allow_disk_use must be a bool, not {type(allow_disk_use)}")
        self._check_okay_to_chain()
        self._allow_disk_use = allow_disk_use
        return self

    def max(self, spec: Any) -> Self:
        """The exclusive upper bound of the index used (needs ``hint``), as pymongo's ``max``. Returns this
        cursor, for chaining; ``InvalidOperation`` once iteration has started."""
        if not isinstance(spec, (list, tuple)):
            raise TypeError(f"spec must be an instance of list or tuple, not {type(spec)}")
        self._check_okay_to_chain()
        self._max = dict(spec)
        return self

    def min(self, spec: Any) -> Self:
        """The inclusive lower bound of the index used (needs ``hint``), as pymongo's ``min``. Returns this
        cursor, for chaining; ``InvalidOperation`` once iteration has started."""
        if not isinstance(spec, (list, tuple)):
            raise TypeError(f"spec must be an instance of list or tuple, not {type(spec)}")
        self._check_okay_to_chain()
        self._min = dict(spec)
        return self

    def max_scan(self, max_scan: int | None) -> Self:
        """Not supported (``$maxScan`` was removed in MongoDB 4.2): ``InvalidOperation``."""
        raise InvalidOperation("Cursor.max_scan() is not supported by tenantpool (removed in MongoDB 4.2)")

    def where(self, code: str | Code) -> Self:
        """Adds a ``$where`` JavaScript expression to the filter, as pymongo's ``where``. Returns this cursor,
        for chaining; ``InvalidOperation`` once iteration has started."""
        self._check_okay_to_chain()
        if not isinstance(code, Code):
            code = Code(code)
        # Don't modify a filter the caller passed in.
        spec = dict(self._filter) if self._has_filter else self._filter
        spec["$where"] = code  # type: ignore[index]
        self._filter = spec
        return self

    def add_option(self, mask: int) -> Self:
        """Sets pymongo query flags (``CursorType`` bits: tailable, no timeout, await data, partial). Exhaust
        cursors are not supported: ``InvalidOperation``. Returns this cursor, for chaining;
        ``InvalidOperation`` once iteration has started."""
        if not isinstance(mask, int):
            raise TypeError(f"mask must be an int, not {type(mask)}")
        self._check_okay_to_chain()
        if mask & _EXHAUST:
            if self._limit:
                raise InvalidOperation("Can't use limit and exhaust together.")
            raise _refuse_exhaust(f"Cursor.add_option({mask})")
        if mask & ~_SUPPORTED_FLAGS:
            raise InvalidOperation(
                f"Cursor.add_option({mask}): only the tailable (2), no_timeout (16), await_data (32) and "
                f"partial (128) flags are supported by tenantpool"
            )
        self._flags |= mask
        return self

    def remove_option(self, mask: int) -> Self:
        """Clears pymongo query flags set by ``add_option`` (or ``cursor_type``). Returns this cursor, for
        chaining; ``InvalidOperation`` once iteration has started."""
        if not isinstance(mask, int):
            raise TypeError(f"mask must be an int, not {type(mask)}")
        self._check_okay_to_chain()
        self._flags &= ~mask
        return self

    def clone(self) -> Self:
        """An unevaluated copy of this cursor, with the same options."""
        return self._clone(True)

    def _clone(self, deepcopy: bool) -> Self:
        base = type(self)(self._collection, session=self._session)
        for key in (
            "_filter",
            "_has_filter",
            "_projection",
            "_skip",
            "_limit",
            "_batch_size",
            "_ordering",
            "_max_time_ms",
            "_max_await_time_ms",
            "_max",
            "_min",
            "_collation",
            "_return_key",
            "_show_record_id",
            "_allow_disk_use",
            "_comment",
            "_let",
            "_hint",
            "_flags",
            "_empty",
        ):
            value = getattr(self, key)
            setattr(base, key, copy.deepcopy(value) if deepcopy else value)
        return base

    def __copy__(self) -> Self:
        return self._clone(False)

    def __deepcopy__(self, memo: Any) -> Self:
        return self._clone(True)

    def rewind(self) -> Self:
        """Closes the server cursor; the next iteration runs the query again."""
        self._close()
        self._init_iteration()
        return self

    # -- running --------------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        if (self._min or self._max) and not self._hint:
            raise InvalidOperation(
                "Passing a 'hint' is required when using the min/max query option to "
                "ensure the query utilizes the correct index"
            )
        o: dict[str, Any] = {}
        set_if_given(o, "projection", self._projection)
        if self._skip:
            o["skip"] = self._skip
        if self._limit:
            o["limit"] = self._limit
        if self._batch_size:
            o["batchSize"] = self._batch_size
        if self._flags & _NO_TIMEOUT:
            o["noCursorTimeout"] = True
        if self._flags & _PARTIAL:
            o["allowPartialResults"] = True
        if self._flags & _TAILABLE:
            o["tailable"] = True
        if self._flags & _AWAIT_DATA:
            o["awaitData"] = True
        set_if_given(o, "maxAwaitTimeMS", self._max_await_time_ms)
        set_if_given(o, "sort", self._ordering)
        set_if_given(o, "collation", self._collation)
        set_if_given(o, "hint", self._hint)
        set_if_given(o, "maxTimeMS", self._max_time_ms)
        set_if_given(o, "max", self._max or None)
        set_if_given(o, "min", self._min or None)
        set_if_given(o, "returnKey", self._return_key)
        set_if_given(o, "showRecordId", self._show_record_id)
        # pymongo sends a comment only if it is truthy.
        set_if_given(o, "comment", self._comment or None)
        set_if_given(o, "allowDiskUse", self._allow_disk_use)
        set_if_given(o, "let", self._let)
        self._collection._read_options(o, self._session)
        return o

    def _find_command(self) -> tuple[dict[str, Any], Any]:
        """pymongo's find command for this cursor, and its maxAwaitTimeMS (a getMore option)."""
        cmd: dict[str, Any] = {"find": self._collection.name, "filter": self._filter}
        cmd.update(self._options())
        max_await_time_ms = cmd.pop("maxAwaitTimeMS", None)
        limit = cmd.get("limit")
        if isinstance(limit, int):
            # As pymongo: the absolute value, a plain int (a bool limit is 1).
            cmd["limit"] = abs(limit)
            if limit < 0:
                cmd["singleBatch"] = True
        return cmd, max_await_time_ms

    def _open(self) -> Operation[RawCursor | None]:
        """pymongo's find command as is, so that the server judges every option, continued with getMore
        by the core."""
        if self._empty:
            return None
        c = self._collection
        self._tailable = bool(self._flags & _TAILABLE)
        cmd, max_await_time_ms = self._find_command()
        cursor: RawCursor = yield from CommandCursor._gen_open_command(
            c._database,
            cmd,
            self._codec,
            self._session,
            c._read_preference_for(self._session),
            batch_size=cmd.get("batchSize"),
            max_await_time_ms=int(max_await_time_ms) if isinstance(max_await_time_ms, int) else None,
            comment=cmd.get("comment"),
            retryable=True,
            causal=True,
            check=False,
        )
        return cursor

    def _gen_find_one(self) -> Operation[Any]:
        """``find_one``: this cursor's find command (its limit -1 makes it ``singleBatch``) run as a
        one-reply read, so the document comes back in the reply: one core call, no cursor to continue."""
        if self._empty:
            return None
        c = self._collection
        cmd, _ = self._find_command()
        doc = {"command": cmd, "retryable": True, "causal": True}
        spec = encode(c._route(doc, self._session), False, self._codec)
        check_query_size(spec)
        core_sess = core_session(self._session, c._user_id)
        reply = yield Execute(c._core, c._user_id, c._db_name, "command", spec, session=core_sess)
        batch = decode(reply, self._codec)["cursor"]["firstBatch"]
        return batch[0] if batch else None

    def __next__(self) -> Any:
        """The next document (the query runs at the first); ``StopIteration`` once exhausted."""
        if self._empty:
            raise StopIteration
        return super().__next__()

    next = twin(__next__)

    def _gen_distinct(self, key: str) -> Operation[list[Any]]:
        """The distinct values of ``key`` among the documents this cursor matches (pymongo's
        ``Cursor.distinct``: the filter, max_time_ms, comment and collation apply)."""
        options: dict[str, Any] = {}
        if self._filter:
            options["query"] = self._filter
        set_if_given(options, "maxTimeMS", self._max_time_ms)
        set_if_given(options, "comment", self._comment or None)
        set_if_given(options, "collation", self._collation)
        return (yield from self._collection._gen_distinct(key, session=self._session, **options))

    distinct = operation(_gen_distinct)

    def _gen_explain(self) -> Operation[Any]:
        """The server's explanation of this query (``explain`` of the equivalent ``find`` command)."""
        options = self._options()
        limit = options.pop("limit", 0)
        options.pop("maxAwaitTimeMS", None)  # a getMore option
        cmd: dict[str, Any] = {"find": self._collection.name, "filter": self._filter}
        cmd.update(options)
        if limit:
            # As pymongo: an explain always uses a hard limit.
            cmd["limit"] = abs(limit)
            cmd["singleBatch"] = True
        c = self._collection
        return (
            yield from c._run_command(
                {"explain": cmd},
                self._codec,
                session=self._session,
                read_preference=c._read_preference_for(self._session),
            )
        )

    explain = operation(_gen_explain)

    @overload
    def __getitem__(self, index: slice) -> Self: ...
    @overload
    def __getitem__(self, index: int) -> Any: ...
    def __getitem__(self, index: int | slice) -> Any:
        """``cursor[i]``: the document at ``i`` (a query of its own, ``IndexError`` if there is none);
        ``cursor[a:b]``: this cursor with skip ``a`` and limit ``b - a``, as pymongo's."""
        self._check_okay_to_chain()
        self._empty = False
        if isinstance(index, slice):
            if index.step is not None:
                raise IndexError("Cursor instances do not support slice steps")
            skip = 0
            if index.start is not None:
                if index.start < 0:
                    raise IndexError("Cursor instances do not support negative indices")
                skip = index.start
            if index.stop is not None:
                limit = index.stop - skip
                if limit < 0:
                    raise IndexError(f"stop index must be greater than start index for slice {index!r}")
                if limit == 0:
                    self._empty = True
            else:
                limit = 0
            self._skip = skip
            self._limit = limit
            return self
        if isinstance(index, int):
            if index < 0:
                raise IndexError("Cursor instances do not support negative indices")
            clone = self.clone()
            clone.skip(index + self._skip)
            clone.limit(-1)
            clone._flags &= ~CursorType.TAILABLE_AWAIT  # as pymongo (PYTHON-1371)
            for doc in clone:
                return doc
            raise IndexError("no such item for Cursor instance")
        raise TypeError(f"index {index!r} cannot be applied to Cursor instances")

    def __repr__(self) -> str:
        return f"<tenantpool.cursor.Cursor object on {self._collection.full_name}>"
