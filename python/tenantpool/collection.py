"""Collection: pymongo's Collection API on one tenant's pool.

Arguments are checked and shaped in Python as pymongo checks and shapes them, encoded once with pymongo's C
encoder, and handed to the Rust core as bytes: exactly the command pymongo would send, so the server judges
(and words its errors about) the very command it would have had from pymongo. The core runs it with the read
retries, causal consistency and retryable writes pymongo gives it (docs/execution-paths.md). One case goes to
the Rust driver's typed write instead: a single-document write in an explicit session outside a transaction,
whose transaction number only the driver can give (``numbered_by_the_driver``).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from bson.codec_options import CodecOptions
from bson.son import SON
from pymongo import ReturnDocument
from pymongo.common import (
    validate_list,
    validate_list_or_none,
    validate_ok_for_replace,
    validate_ok_for_update,
)
from pymongo.errors import (
    ConfigurationError,
    InvalidName,
    OperationFailure,
)
from pymongo.operations import IndexModel
from pymongo.write_concern import WriteConcern

from . import _read_preference
from ._aggregation import gen_aggregate
from ._calls import Operation, operation, operations
from ._collection_base import _NS_NOT_FOUND, _mappings, numbered_by_the_driver
from ._collection_writes import CollectionWrites
from ._common import (
    check_bool,
    check_mapping,
    codec_for_replies,
    fields_document,
    hint_value,
    index_document,
    set_if_given,
    validate_collation_or_none,
)
from .bulk import (
    check_write_response,
)
from .change_stream import CollectionChangeStream, gen_watch
from .cursor import CommandCursor, Cursor

if TYPE_CHECKING:
    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession


@operations
class Collection(CollectionWrites):
    """A collection of a tenant's database."""

    _kind = "Collection"

    # -- reads ----------------------------------------------------------------------------------------

    def find(self, *args: Any, **kwargs: Any) -> Cursor:
        """A cursor over the matching documents; same arguments as pymongo's ``find``."""
        return self._database._cursor_class(self, *args, **kwargs)

    def _gen_find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Operation[Any]:
        """The first matching document or None. A non-mapping filter matches on ``_id``, as in pymongo."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        cursor = self.find(filter, *args, **kwargs).limit(-1)
        return (yield from cursor._gen_find_one())

    find_one = operation(_gen_find_one)

    def _gen_count_documents(
        self,
        /,
        filter: Mapping[str, Any],
        session: ClientSession | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[int]:
        """The number of matching documents; ``skip``, ``limit``, ``hint``, ``collation`` and
        ``maxTimeMS`` as in pymongo."""
        if "hint" in kwargs and not isinstance(kwargs["hint"], str):
            kwargs["hint"] = index_document(kwargs["hint"])
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        pipeline: list[Any] = [{"$match": filter}]
        if "skip" in kwargs:
            pipeline.append({"$skip": kwargs.pop("skip")})
        if "limit" in kwargs:
            pipeline.append({"$limit": kwargs.pop("limit")})
        pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline, "cursor": {}}
        set_if_given(kwargs, "comment", comment)
        cmd.update(kwargs)
        codec = codec_for_replies(self._codec)
        reply = yield from self._command(
            cmd,
            codec,
            read_concern=self._rc(session),
            collation=collation,
            session=session,
            read_preference=self._read_preference_for(session),
            read=True,
        )
        batch = reply["cursor"]["firstBatch"]
        return batch[0]["n"] if batch else 0

    count_documents = operation(_gen_count_documents)

    def _gen_estimated_document_count(self, /, comment: Any = None, **kwargs: Any) -> Operation[int]:
        """The number of documents in the collection from its metadata (no filter; fast), as pymongo's
        ``estimated_document_count``: 0 if the collection does not exist."""
        if "session" in kwargs:
            raise ConfigurationError("estimated_document_count does not support sessions")
        cmd: dict[str, Any] = {"count": self._name}
        set_if_given(kwargs, "comment", comment)
        cmd.update(kwargs)
        return int(
            (
                yield from self._command(
                    cmd,
                    codec_for_replies(self._codec),
                    read_concern=self._read_concern,
                    read_preference=self._read_preference,
                    read=True,
                )
            )["n"]
        )

    estimated_document_count = operation(_gen_estimated_document_count)

    def _gen_distinct(
        self,
        /,
        key: str,
        filter: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        hint: Any = None,
        **kwargs: Any,
    ) -> Operation[list[Any]]:
        """The distinct values of ``key`` among the documents matching ``filter``, as pymongo's ``distinct``
        (a list; ``maxTimeMS`` and ``collation`` may be given as keyword arguments)."""
        if not isinstance(key, str):
            raise TypeError(f"key must be an instance of str, not {type(key)}")
        if filter is not None:
            if "query" in kwargs:
                raise ConfigurationError("can't pass both filter and query")
            kwargs["query"] = filter
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        hint = hint_value(hint)
        cmd: dict[str, Any] = {"distinct": self._name, "key": key}
        cmd.update(kwargs)
        set_if_given(cmd, "comment", comment)
        set_if_given(cmd, "hint", hint)
        reply = yield from self._command(
            cmd,
            read_concern=self._rc(session),
            collation=collation,
            session=session,
            read_preference=self._read_preference_for(session),
            read=True,
        )
        distinct: list[Any] = reply["values"]
        return distinct

    distinct = operation(_gen_distinct)

    def _gen_aggregate(
        self,
        /,
        pipeline: Sequence[Mapping[str, Any]],
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[CommandCursor]:
        """pymongo's ``aggregate``: a CommandCursor over the results; ``$out``/``$merge`` included."""
        return (yield from gen_aggregate(self._database, self, pipeline, let, comment, kwargs, session))

    aggregate = operation(_gen_aggregate)

    def _find_and_modify(
        self,
        kind: str,
        filter: Mapping[str, Any],
        projection: Any,
        sort: Any,
        upsert: bool | None,
        return_document: bool,
        array_filters: Any,
        hint: Any,
        session: ClientSession | None,
        let: Any,
        kwargs: dict[str, Any],
    ) -> Operation[Any]:
        """pymongo's ``_find_and_modify``; ``kind`` is "update", "replace" or "delete"."""
        check_mapping("filter", filter)
        if not isinstance(return_document, bool):
            raise TypeError(
                f"return_document must be ReturnDocument.BEFORE or ReturnDocument.AFTER, not "
                f"{type(return_document)}"
            )
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        hint = hint_value(hint)
        raw_wc = kwargs.get("writeConcern")
        wc = WriteConcern(**raw_wc) if raw_wc is not None else self._wc(session)
        if let is not None:
            check_mapping("let", let)
        fields = None if projection is None else fields_document(projection, "projection")
        ordering = None if sort is None else index_document(sort)
        if upsert is not None:
            check_bool("upsert", upsert)
        if array_filters is not None and not wc.acknowledged:
            raise ConfigurationError("arrayFilters is unsupported for unacknowledged writes.")
        body: dict[str, Any] = {k: kwargs.pop(k) for k in ("update", "remove") if k in kwargs}
        typed = (
            numbered_by_the_driver(session)
            and wc.acknowledged
            and set(kwargs) <= {"maxTimeMS", "comment"}
            and type(kwargs.get("maxTimeMS", 0)) is int
            and (array_filters is None or _mappings(array_filters))
        )
        if typed:
            options: dict[str, Any] = {}
            set_if_given(options, "projection", fields)
            set_if_given(options, "sort", ordering)
            set_if_given(options, "upsert", upsert)
            set_if_given(options, "arrayFilters", None if array_filters is None else list(array_filters))
            set_if_given(options, "hint", hint)
            set_if_given(options, "let", let)
            set_if_given(options, "collation", collation)
            set_if_given(options, "maxTimeMS", kwargs.get("maxTimeMS"))
            set_if_given(options, "comment", kwargs.get("comment"))
            self._write_options(options, session)
            spec: dict[str, Any] = {"filter": filter, "options": options}
            if kind != "delete":
                spec["returnNew"] = return_document
                spec["replacement" if kind == "replace" else "update"] = body["update"]
            return (yield from self._execute(f"find_one_and_{kind}", spec, session=session))["value"]
        cmd: dict[str, Any] = {"findAndModify": self._name, "query": filter, "new": return_document}
        set_if_given(cmd, "let", let)
        cmd.update(body)
        cmd.update(kwargs)
        set_if_given(cmd, "fields", fields)
        set_if_given(cmd, "sort", ordering)
        set_if_given(cmd, "upsert", upsert)
        set_if_given(cmd, "arrayFilters", None if array_filters is None else list(array_filters))
        set_if_given(cmd, "hint", hint)
        out = yield from self._command(
            cmd,
            write_concern=None if raw_wc is not None else wc,
            collation=collation,
            session=session,
            retryable=wc.acknowledged,
        )
        if not wc.acknowledged:
            # pymongo gets no reply to an unacknowledged command.
            return None
        check_write_response(out)
        return out.get("value")

    def _gen_find_one_and_delete(
        self,
        /,
        filter: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[Any]:
        """Deletes the first document matching ``filter`` (in ``sort`` order) and returns it, or None if none
        matched: pymongo's ``find_one_and_delete``, one ``findAndModify``. Raises ``ConfigurationError`` for
        an explicit session with an unacknowledged write concern, ``WriteError`` (``DuplicateKeyError``) with
        the server's writeErrors entry as ``details``, ``WriteConcernError`` (``WTimeoutError``)."""
        kwargs["remove"] = True
        set_if_given(kwargs, "comment", comment)
        return (
            yield from self._find_and_modify(
                "delete",
                filter,
                projection,
                sort,
                None,
                ReturnDocument.BEFORE,
                None,
                hint,
                session,
                let,
                kwargs,
            )
        )

    find_one_and_delete = operation(_gen_find_one_and_delete)

    def _gen_find_one_and_replace(
        self,
        /,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[Any]:
        """Replaces the first document matching ``filter`` and returns it as it was
        (``return_document=ReturnDocument.AFTER``: as it is now), or None if none matched (and none was
        upserted): pymongo's ``find_one_and_replace``. Raises ``ConfigurationError`` for an explicit session
        with an unacknowledged write concern, ``WriteError`` (``DuplicateKeyError``) with the server's
        writeErrors entry as ``details``, ``WriteConcernError`` (``WTimeoutError``)."""
        validate_ok_for_replace(replacement)
        kwargs["update"] = replacement
        set_if_given(kwargs, "comment", comment)
        return (
            yield from self._find_and_modify(
                "replace", filter, projection, sort, upsert, return_document, None, hint, session, let, kwargs
            )
        )

    find_one_and_replace = operation(_gen_find_one_and_replace)

    def _gen_find_one_and_update(
        self,
        /,
        filter: Mapping[str, Any],
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        array_filters: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[Any]:
        """Updates the first document matching ``filter`` and returns it as it was
        (``return_document=ReturnDocument.AFTER``: as it is now), or None if none matched (and none was
        upserted): pymongo's ``find_one_and_update``. Raises ``ConfigurationError`` for an explicit session
        with an unacknowledged write concern, ``WriteError`` (``DuplicateKeyError``) with the server's
        writeErrors entry as ``details``, ``WriteConcernError`` (``WTimeoutError``)."""
        validate_ok_for_update(update)
        validate_list_or_none("array_filters", array_filters)
        kwargs["update"] = update
        set_if_given(kwargs, "comment", comment)
        return (
            yield from self._find_and_modify(
                "update",
                filter,
                projection,
                sort,
                upsert,
                return_document,
                array_filters,
                hint,
                session,
                let,
                kwargs,
            )
        )

    find_one_and_update = operation(_gen_find_one_and_update)

    # -- indexes and administration -------------------------------------------------------------------

    def _gen_create_indexes(
        self,
        /,
        indexes: Sequence[IndexModel],
        session: ClientSession | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[list[str]]:
        """Creates the indexes ``indexes`` (``pymongo.IndexModel`` instances) in one ``createIndexes``
        command, as pymongo's ``create_indexes``, and returns their names. Raises ``TypeError`` for anything
        but IndexModels, ``OperationFailure`` (e.g. an index of that name with other keys)."""
        validate_list("indexes", indexes)
        set_if_given(kwargs, "comment", comment)
        return (yield from self._create_indexes(indexes, kwargs, session))

    create_indexes = operation(_gen_create_indexes)

    def _create_indexes(
        self, indexes: Sequence[IndexModel], kwargs: dict[str, Any], session: ClientSession | None
    ) -> Operation[list[str]]:
        names = []
        documents = []
        for index in indexes:
            if not isinstance(index, IndexModel):
                raise TypeError(f"{index!r} is not an instance of pymongo.operations.IndexModel")
            document = index.document
            names.append(document["name"])
            documents.append(document)
        cmd: dict[str, Any] = {"createIndexes": self._name, "indexes": documents}
        cmd.update(kwargs)
        (
            yield from self._command(
                cmd, codec_for_replies(self._codec), write_concern=self._wc(session), session=session
            )
        )
        return names

    def _gen_create_index(
        self, /, keys: Any, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> Operation[str]:
        """Creates an index from pymongo's key spec (``"field"`` or ``[("a", 1), ("b", -1)]``)."""
        cmd_options: dict[str, Any] = {}
        if "maxTimeMS" in kwargs:
            cmd_options["maxTimeMS"] = kwargs.pop("maxTimeMS")
        set_if_given(cmd_options, "comment", comment)
        return (yield from self._create_indexes([IndexModel(keys, **kwargs)], cmd_options, session))[0]

    create_index = operation(_gen_create_index)

    def _gen_list_indexes(
        self, session: ClientSession | None = None, comment: Any = None
    ) -> Operation[CommandCursor]:
        """The collection's indexes (as SON documents, like pymongo); none if the collection does not
        exist."""
        codec = CodecOptions(SON)
        # On the primary, as in pymongo (inside a transaction, the transaction's read preference).
        read_preference = _read_preference.for_command(None, session)
        cmd: dict[str, Any] = {"listIndexes": self._name, "cursor": {}}
        set_if_given(cmd, "comment", comment)
        try:
            raw = yield from CommandCursor._gen_open_command(
                self._database,
                cmd,
                codec,
                session,
                read_preference,
                comment=comment,
                retryable=True,
                check=False,
            )
        except OperationFailure as exc:
            if exc.code != 26:
                raise
            return self._database._command_cursor_class(self._database, None, codec, first_batch=[])
        return self._database._command_cursor_class(self._database, raw, codec, session=session)

    list_indexes = operation(_gen_list_indexes)

    def _gen_index_information(
        self, session: ClientSession | None = None, comment: Any = None
    ) -> Operation[MutableMapping[str, Any]]:
        """The collection's indexes as ``{name: {'key': [(field, direction)], ...options}}``, as pymongo's
        ``index_information``; empty if the collection does not exist."""
        info = {}
        indexes = yield from self._gen_list_indexes(session=session, comment=comment)
        for index in (yield from indexes._gen_to_list()):
            index["key"] = list(index["key"].items())
            index = dict(index)
            info[index.pop("name")] = index
        return info

    index_information = operation(_gen_index_information)

    def _gen_drop_index(
        self, /, index_or_name: Any, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> Operation[None]:
        """Drops the index named ``index_or_name``, or the index of those keys (a key list as ``create_index``
        takes), as pymongo's ``drop_index``. Raises ``OperationFailure`` if there is no such index."""
        name = index_or_name
        if isinstance(index_or_name, list):
            name = "_".join(f"{k}_{v}" for k, v in index_or_name)
        if not isinstance(name, str):
            raise TypeError(f"index_or_name must be an instance of str or list, not {type(name)}")
        cmd: dict[str, Any] = {"dropIndexes": self._name, "index": name}
        cmd.update(kwargs)
        set_if_given(cmd, "comment", comment)
        (
            yield from self._command(
                cmd, allowable_errors=_NS_NOT_FOUND, write_concern=self._wc(session), session=session
            )
        )

    drop_index = operation(_gen_drop_index)

    def _gen_drop_indexes(
        self, /, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> Operation[None]:
        """Drops every index of the collection but ``_id``'s, as pymongo's ``drop_indexes``."""
        set_if_given(kwargs, "comment", comment)
        (yield from self._gen_drop_index("*", session=session, **kwargs))

    drop_indexes = operation(_gen_drop_indexes)

    def _gen_drop(
        self,
        session: ClientSession | None = None,
        comment: Any = None,
        encrypted_fields: Mapping[str, Any] | None = None,
    ) -> Operation[None]:
        """Drops the collection (no error if it does not exist), as pymongo's ``drop``. ``encrypted_fields``
        (queryable encryption) is not supported: ``ConfigurationError``."""
        db = self._database.with_options(write_concern=self._write_concern)
        (
            yield from db._gen_drop_collection(
                self._name, session=session, comment=comment, encrypted_fields=encrypted_fields
            )
        )

    drop = operation(_gen_drop)

    def _gen_rename(
        self, /, new_name: str, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> Operation[MutableMapping[str, Any]]:
        """Renames the collection to ``new_name`` in the same database, as pymongo's ``rename``
        (``dropTarget=True`` replaces an existing one); returns the server's reply. Raises ``InvalidName`` for
        an invalid name, ``OperationFailure`` if the target exists."""
        if not isinstance(new_name, str):
            raise TypeError(f"new_name must be an instance of str, not {type(new_name)}")
        if not new_name or ".." in new_name:
            raise InvalidName("collection names cannot be empty")
        if new_name[0] == "." or new_name[-1] == ".":
            raise InvalidName("collection names must not start or end with '.'")
        if "$" in new_name and not new_name.startswith("oplog.$main"):
            raise InvalidName("collection names must not contain '$'")
        cmd: dict[str, Any] = {"renameCollection": self.full_name, "to": f"{self._db_name}.{new_name}"}
        cmd.update(kwargs)
        set_if_given(cmd, "comment", comment)
        raw_wc = cmd.get("writeConcern")
        wc = WriteConcern(**raw_wc) if raw_wc is not None else self._wc(session)
        # renameCollection runs on admin; both names are in this database, so it stays within the tenant's.
        reply: MutableMapping[str, Any] = yield from self._command(
            cmd,
            CodecOptions(),
            write_concern=None if raw_wc is not None else wc,
            parse_write_concern_error=True,
            db_name="admin",
            session=session,
        )
        return reply

    rename = operation(_gen_rename)

    def _gen_watch(
        self,
        pipeline: Sequence[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Any = None,
        session: ClientSession | None = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> Operation[CollectionChangeStream]:
        """A change stream of this collection (pymongo's ``Collection.watch``), opened at once: changes
        made after this returns are seen. Needs a replica set or sharded cluster, as in pymongo."""
        stream = yield from gen_watch(
            self._database,
            self,
            pipeline,
            full_document,
            resume_after,
            max_await_time_ms,
            batch_size,
            collation,
            start_at_operation_time,
            session,
            start_after,
            comment,
            full_document_before_change,
            show_expanded_events,
        )
        # gen_watch makes the CollectionChangeStream of this class (async or not).
        return cast(CollectionChangeStream, stream)

    watch = operation(_gen_watch)

    # pymongo methods tenantpool does not have (yet): named, so that a call fails saying so instead of
    # reaching __getattr__ (which would take the name for a sub-collection).

    def find_raw_batches(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported by tenantpool yet: ``NotImplementedError``."""
        raise NotImplementedError("Collection.find_raw_batches is not supported by tenantpool yet")

    def aggregate_raw_batches(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported by tenantpool yet: ``NotImplementedError``."""
        raise NotImplementedError("Collection.aggregate_raw_batches is not supported by tenantpool yet")

    def list_search_indexes(self, *args: Any, **kwargs: Any) -> Any:
        """Atlas Search indexes are not supported by tenantpool: ``NotImplementedError`` (as are
        ``create_search_index(es)``, ``drop_search_index`` and ``update_search_index``)."""
        raise NotImplementedError("Atlas Search indexes are not supported by tenantpool")

    create_search_index = create_search_indexes = drop_search_index = update_search_index = (
        list_search_indexes
    )

    def _gen_options(
        self, session: ClientSession | None = None, comment: Any = None
    ) -> Operation[MutableMapping[str, Any]]:
        """The options the collection was created with (empty if it does not exist)."""
        cursor = yield from self._database._gen_list_collections(
            session=session, filter={"name": self._name}, comment=comment
        )
        for doc in (yield from cursor._gen_to_list()):
            options: MutableMapping[str, Any] = doc.get("options", {})
            options.pop("create", None)
            return options
        return {}

    options = operation(_gen_options)
