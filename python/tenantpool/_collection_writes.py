"""The write operations of Collection: inserts, updates, replaces, deletes and bulk_write."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo.common import (
    validate_is_document_type,
    validate_list,
    validate_list_or_none,
    validate_ok_for_replace,
    validate_ok_for_update,
)
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    InvalidOperation,
)
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

from ._calls import Operation, operation
from ._collection_base import (
    CollectionBase,
    _bool_or_none,
    _mappings,
    _update_raw_result,
    numbered_by_the_driver,
)
from ._common import (
    MAX_BSON_SIZE,
    as_int,
    check_bool,
    check_mapping,
    encode,
    hint_value,
    plain_ints,
    set_if_given,
    validate_collation_or_none,
)
from .bulk import (
    DELETE,
    INSERT,
    UPDATE,
    BulkWriter,
    check_write_response,
)

if TYPE_CHECKING:
    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession


class CollectionWrites(CollectionBase):
    """Collection's writes (see collection.py for how they reach the server)."""

    # -- writes ---------------------------------------------------------------------------------------

    def _gen_insert_one(
        self,
        document: Any,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
    ) -> Operation[InsertOneResult]:
        """Inserts ``document``, as pymongo's ``insert_one``: an ``_id`` (an ObjectId) is added to the
        document if it has none. Returns an ``InsertOneResult``. Raises ``ConfigurationError`` for an explicit
        session with an unacknowledged write concern, ``WriteError`` (``DuplicateKeyError``) with the server's
        writeErrors entry as ``details``, ``WriteConcernError`` (``WTimeoutError``)."""
        validate_is_document_type("document", document)
        if not (isinstance(document, RawBSONDocument) or "_id" in document):
            document["_id"] = ObjectId()
        wc = self._write_concern_for(session)
        data = encode(document, False, self._codec)
        # Outside a session the core sends pymongo's insert command as a retryable write and hands back
        # a reply that holds errors; in a transaction (nothing is retried per statement) that command goes
        # as it is. Either way an error's details are the server's writeErrors entry, with keyPattern and
        # keyValue. Only in a session outside a transaction does the driver's typed insert run, so that it
        # is retried with the session's transaction number; its errors lack those two keys.
        typed = (
            wc.acknowledged
            and len(data) <= MAX_BSON_SIZE
            and _bool_or_none(bypass_document_validation)
            and not (session is not None and session.in_transaction)
        )
        if typed:
            options: dict[str, Any] = {}
            set_if_given(options, "bypassDocumentValidation", bypass_document_validation)
            set_if_given(options, "comment", comment)
            self._write_options(options, session)
            reply = yield from self._execute("insert_one", {"options": options}, [data], session=session)
            if reply:
                check_write_response(reply)
        else:
            # The driver refuses unacknowledged writes, and documents over 16 MiB that pymongo leaves to
            # the server to judge.
            (
                yield from self._write_command(
                    INSERT, document, bypass_document_validation, None, comment, session
                )
            )
        inserted_id = None if isinstance(document, RawBSONDocument) else document.get("_id")
        return InsertOneResult(inserted_id, wc.acknowledged)

    insert_one = operation(_gen_insert_one)

    def _gen_insert_many(
        self,
        documents: Iterable[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
    ) -> Operation[InsertManyResult]:
        """Inserts ``documents`` (a non-empty iterable of documents, each given an ``_id`` if it has none), as
        pymongo's ``insert_many``: in batched insert commands; ``ordered=False`` goes on past a failed
        document. Returns an ``InsertManyResult``. Raises ``TypeError`` for an empty or non-iterable argument,
        ``BulkWriteError`` with pymongo's ``details``, ``ConfigurationError`` for an explicit session with an
        unacknowledged write concern."""
        if not isinstance(documents, Iterable) or isinstance(documents, Mapping) or not documents:
            raise TypeError("documents must be a non-empty list")
        inserted_ids: list[Any] = []
        docs: list[Any] = []
        for doc in documents:
            validate_is_document_type("document", doc)
            if not isinstance(doc, RawBSONDocument):
                if "_id" not in doc:
                    doc["_id"] = ObjectId()
                inserted_ids.append(doc["_id"])
            docs.append(doc)
        if not docs:
            raise InvalidOperation("No operations to execute")
        wc = self._write_concern_for(session)
        # In a session outside a transaction, the driver's typed insert_many (which retries with the
        # session's transaction number). Otherwise pymongo's insert commands as bulk_write sends them:
        # retryable writes too outside a session, and their errors carry the server's writeErrors
        # entries (keyPattern, keyValue), which the driver's typed insert_many drops.
        in_session = session is not None and not session.in_transaction
        data = [encode(doc, False, self._codec) for doc in docs] if in_session else None
        typed = (
            data is not None
            and wc.acknowledged
            and isinstance(ordered, bool)
            and _bool_or_none(bypass_document_validation)
            and all(len(d) <= MAX_BSON_SIZE for d in data)
        )
        if not typed:
            bulk = BulkWriter(self, ordered, bypass_document_validation, comment, session=session)
            bulk.ops = [(INSERT, doc) for doc in docs]
            (yield from bulk.execute(wc))
            return InsertManyResult(inserted_ids, wc.acknowledged)
        options: dict[str, Any] = {"ordered": ordered}
        set_if_given(options, "bypassDocumentValidation", bypass_document_validation)
        set_if_given(options, "comment", comment)
        self._write_options(options, session)
        assert data is not None
        try:
            (yield from self._execute("insert_many", {"options": options}, data, session=session))
        except BulkWriteError as exc:
            details = plain_ints(exc.details)
            errors = details.get("writeErrors", [])
            for error in errors:
                error["op"] = docs[error["index"]]
            details["nInserted"] = errors[0]["index"] if ordered and errors else len(data) - len(errors)
            error = BulkWriteError(details)
            error._error_labels = set(exc._error_labels)
            raise error from None
        return InsertManyResult(inserted_ids, wc.acknowledged)

    insert_many = operation(_gen_insert_many)

    def _gen_bulk_write(
        self,
        requests: Sequence[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        let: Mapping[str, Any] | None = None,
    ) -> Operation[BulkWriteResult]:
        """pymongo's ``bulk_write``: ``InsertOne``, ``UpdateOne``, ``UpdateMany``, ``ReplaceOne``,
        ``DeleteOne`` and ``DeleteMany`` requests, run as batched write commands."""
        validate_list("requests", requests)
        bulk = BulkWriter(
            self, ordered, bypass_document_validation, comment=comment, let=let, session=session
        )
        for request in requests:
            try:
                request._add_to_bulk(bulk)
            except AttributeError:
                raise TypeError(f"{request!r} is not a valid request") from None
        result = yield from bulk.execute(self._write_concern_for(session))
        if result is not None:
            return BulkWriteResult(result, True)
        return BulkWriteResult({}, False)

    bulk_write = operation(_gen_bulk_write)

    def _update(
        self,
        multi: bool,
        replace: bool,
        filter: Mapping[str, Any],
        document: Any,
        upsert: bool,
        bypass_document_validation: bool | None,
        collation: Any,
        array_filters: Sequence[Mapping[str, Any]] | None,
        hint: Any,
        session: ClientSession | None,
        let: Mapping[str, Any] | None,
        comment: Any,
        sort: Mapping[str, Any] | None = None,
    ) -> Operation[UpdateResult]:
        check_bool("upsert", upsert)
        collation = validate_collation_or_none(collation)
        wc = self._write_concern_for(session)
        if not wc.acknowledged:
            if collation is not None:
                raise ConfigurationError("Collation is unsupported for unacknowledged writes.")
            if array_filters is not None:
                raise ConfigurationError("arrayFilters is unsupported for unacknowledged writes.")
            if sort is not None:
                raise ConfigurationError(
                    "Must be connected to MongoDB 8.0+ to use sort on unacknowledged update commands."
                )
        hint = hint_value(hint)
        if sort is not None:
            check_mapping("sort", sort)
        if let is not None:
            check_mapping("let", let)
        op: dict[str, Any] = {"q": filter, "u": document, "multi": multi, "upsert": upsert}
        set_if_given(op, "collation", collation)
        set_if_given(op, "arrayFilters", array_filters)
        set_if_given(op, "hint", hint)
        set_if_given(op, "sort", sort)
        typed = (
            not multi
            and numbered_by_the_driver(session)
            and wc.acknowledged
            and sort is None
            and _bool_or_none(bypass_document_validation)
            and (array_filters is None or _mappings(array_filters))
            and len(encode(op, False, self._codec)) <= MAX_BSON_SIZE
        )
        if not typed:
            reply = yield from self._write_command(
                UPDATE, op, bypass_document_validation, let, comment, session
            )
            if reply is None:
                return UpdateResult(None, False)
            # As pymongo: the upserted id broken out of its array, and updatedExisting added.
            reply["updatedExisting"] = bool(reply.get("n")) and "upserted" not in reply
            if "upserted" in reply:
                reply["upserted"] = reply["upserted"][0]["_id"]
            return UpdateResult(reply, True)
        options: dict[str, Any] = {"upsert": upsert}
        set_if_given(options, "bypassDocumentValidation", bypass_document_validation)
        set_if_given(options, "collation", collation)
        set_if_given(options, "arrayFilters", array_filters)
        set_if_given(options, "hint", hint)
        set_if_given(options, "let", let)
        set_if_given(options, "comment", comment)
        self._write_options(options, session)
        if replace:
            spec = {"filter": filter, "replacement": document, "options": options}
            reply = yield from self._execute("replace_one", spec, session=session)
        else:
            spec = {"filter": filter, "update": document, "options": options}
            reply = yield from self._execute("update_one", spec, session=session)
        return UpdateResult(
            _update_raw_result(as_int(reply["n"]), as_int(reply["nModified"]), reply.get("upserted")), True
        )

    def _gen_update_one(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        sort: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> Operation[UpdateResult]:
        """Updates the first document matching ``filter`` with ``update`` (update operators, or an aggregation
        pipeline), as pymongo's ``update_one``; ``upsert=True`` inserts one if none matches; ``sort`` picks
        the document (MongoDB 8.0+). Returns an ``UpdateResult``. Raises ``ValueError`` for an update without
        operators; Raises ``ConfigurationError`` for an explicit session with an unacknowledged write concern,
        ``WriteError`` (``DuplicateKeyError``) with the server's writeErrors entry as ``details``,
        ``WriteConcernError`` (``WTimeoutError``)."""
        check_mapping("filter", filter)
        validate_ok_for_update(update)
        validate_list_or_none("array_filters", array_filters)
        return (
            yield from self._update(
                False,
                False,
                filter,
                update,
                upsert,
                bypass_document_validation,
                collation,
                array_filters,
                hint,
                session,
                let,
                comment,
                sort,
            )
        )

    update_one = operation(_gen_update_one)

    def _gen_update_many(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> Operation[UpdateResult]:
        """Updates every document matching ``filter`` with ``update``, as pymongo's ``update_many``. Returns
        an ``UpdateResult``. Raises ``ValueError`` for an update without operators; Raises
        ``ConfigurationError`` for an explicit session with an unacknowledged write concern, ``WriteError``
        (``DuplicateKeyError``) with the server's writeErrors entry as ``details``, ``WriteConcernError``
        (``WTimeoutError``)."""
        check_mapping("filter", filter)
        validate_ok_for_update(update)
        validate_list_or_none("array_filters", array_filters)
        return (
            yield from self._update(
                True,
                False,
                filter,
                update,
                upsert,
                bypass_document_validation,
                collation,
                array_filters,
                hint,
                session,
                let,
                comment,
            )
        )

    update_many = operation(_gen_update_many)

    def _gen_replace_one(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        sort: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> Operation[UpdateResult]:
        """Replaces the first document matching ``filter`` with ``replacement`` (no update operators), as
        pymongo's ``replace_one``. Returns an ``UpdateResult``. Raises ``ValueError`` for a replacement with
        operators; Raises ``ConfigurationError`` for an explicit session with an unacknowledged write concern,
        ``WriteError`` (``DuplicateKeyError``) with the server's writeErrors entry as ``details``,
        ``WriteConcernError`` (``WTimeoutError``)."""
        check_mapping("filter", filter)
        validate_ok_for_replace(replacement)
        if let is not None:
            check_mapping("let", let)
        return (
            yield from self._update(
                False,
                True,
                filter,
                replacement,
                upsert,
                bypass_document_validation,
                collation,
                None,
                hint,
                session,
                let,
                comment,
                sort,
            )
        )

    replace_one = operation(_gen_replace_one)

    def _delete(
        self,
        multi: bool,
        filter: Mapping[str, Any],
        collation: Any,
        hint: Any,
        session: ClientSession | None,
        let: Any,
        comment: Any,
    ) -> Operation[DeleteResult]:
        check_mapping("filter", filter)
        wc = self._write_concern_for(session)
        collation = validate_collation_or_none(collation)
        if collation is not None and not wc.acknowledged:
            raise ConfigurationError("Collation is unsupported for unacknowledged writes.")
        hint = hint_value(hint)
        if let is not None:
            validate_is_document_type("let", let)
        op: dict[str, Any] = {"q": filter, "limit": int(not multi)}
        set_if_given(op, "collation", collation)
        set_if_given(op, "hint", hint)
        typed = not multi and numbered_by_the_driver(session) and wc.acknowledged
        if not typed or len(encode(op, False, self._codec)) > MAX_BSON_SIZE:
            reply = yield from self._write_command(DELETE, op, None, let, comment, session)
            # pymongo's reply to an unacknowledged command is {"ok": 1}.
            return DeleteResult({"ok": 1} if reply is None else reply, wc.acknowledged)
        options: dict[str, Any] = {}
        set_if_given(options, "collation", collation)
        set_if_given(options, "hint", hint)
        set_if_given(options, "let", let)
        set_if_given(options, "comment", comment)
        self._write_options(options, session)
        spec = {"filter": filter, "options": options}
        reply = yield from self._execute("delete_one", spec, session=session)
        return DeleteResult({"n": as_int(reply["n"]), "ok": 1.0}, True)

    def _gen_delete_one(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> Operation[DeleteResult]:
        """Deletes the first document matching ``filter``, as pymongo's ``delete_one``. Returns a
        ``DeleteResult``. Raises ``ConfigurationError`` for an explicit session with an unacknowledged write
        concern, ``WriteError`` (``DuplicateKeyError``) with the server's writeErrors entry as ``details``,
        ``WriteConcernError`` (``WTimeoutError``)."""
        return (yield from self._delete(False, filter, collation, hint, session, let, comment))

    delete_one = operation(_gen_delete_one)

    def _gen_delete_many(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> Operation[DeleteResult]:
        """Deletes every document matching ``filter``, as pymongo's ``delete_many``. Returns a
        ``DeleteResult``. Raises ``ConfigurationError`` for an explicit session with an unacknowledged write
        concern, ``WriteError`` (``DuplicateKeyError``) with the server's writeErrors entry as ``details``,
        ``WriteConcernError`` (``WTimeoutError``)."""
        return (yield from self._delete(True, filter, collation, hint, session, let, comment))

    delete_many = operation(_gen_delete_many)
