"""Collection: pymongo's Collection API on one tenant's pool.

Arguments are checked and shaped in Python as pymongo checks and shapes them, encoded once with pymongo's C
encoder, and handed to the Rust core as bytes. Two ways to the server:

* the Rust driver's typed operations (``update_many``, ``find``...), used whenever the arguments map onto
  the driver's options: these are retryable reads and writes, as in pymongo;
* the core's generic ``command`` op, carrying exactly the command pymongo would send, for everything else:
  index and collection administration, ``bulk_write``, inserts outside a session (whose errors then keep
  the server's whole writeErrors entry), unacknowledged writes, and server options passed through
  ``**kwargs`` that the driver does not model. The server then judges (and words its errors about) the
  very command it would have had from pymongo. Writes among these are retryable writes where pymongo's
  are (the core's ``retryable_write`` op; see ``tenantpool/bulk.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo import ReturnDocument
from pymongo.common import (
    validate_is_document_type,
    validate_list,
    validate_list_or_none,
    validate_non_negative_integer_or_none,
    validate_ok_for_replace,
    validate_ok_for_update,
)
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    InvalidName,
    InvalidOperation,
    OperationFailure,
    WriteConcernError,
    WTimeoutError,
)
from pymongo.operations import IndexModel
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from pymongo.write_concern import DEFAULT_WRITE_CONCERN, WriteConcern

from . import _read_preference
from ._calls import Execute, operations
from ._common import (
    MAX_BSON_SIZE,
    allowed_error,
    as_int,
    check_bool,
    check_mapping,
    check_query_size,
    codec_for_replies,
    core_session,
    decode,
    encode,
    fields_document,
    hint_value,
    index_document,
    plain_ints,
    put,
    validate_collation_or_none,
    write_concern_document,
)
from .bulk import (
    COMMAND_OVERHEAD,
    DELETE,
    INSERT,
    UPDATE,
    BulkWriter,
    check_write_response,
    document_too_large,
)
from .change_stream import CollectionChangeStream, gen_watch
from .cursor import COMMAND_PATH, CommandCursor, Cursor, command_find_one, find_options_fit_driver

if TYPE_CHECKING:
    from .database import Database
    from .session import ClientSession

_WRITE_COMMANDS = {
    INSERT: ("insert", "documents"),
    UPDATE: ("update", "updates"),
    DELETE: ("delete", "deletes"),
}
# The server's "ns not found", which pymongo tolerates when dropping.
_NS_NOT_FOUND: tuple[str | int, ...] = ("ns not found", 26)


def _validate_name(name: str) -> None:
    if not name or ".." in name:
        raise InvalidName("collection names cannot be empty")
    if "$" in name and not name.startswith(("oplog.$main", "$cmd")):
        raise InvalidName(f"collection names must not contain '$': {name!r}")
    if name[0] == "." or name[-1] == ".":
        raise InvalidName(f"collection names must not start or end with '.': {name!r}")
    if "\x00" in name:
        raise InvalidName("collection names must not contain the null character")


def _update_raw_result(n: int, n_modified: int, upserted: Any) -> dict[str, Any]:
    """A reply of the driver's update, in the shape pymongo gives ``UpdateResult.raw_result``."""
    result: dict[str, Any] = {"n": n}
    if upserted is not None:
        result["upserted"] = upserted
    result["nModified"] = n_modified
    result["ok"] = 1.0
    result["updatedExisting"] = bool(n) and upserted is None
    return result


def _bool_or_none(value: Any) -> bool:
    """Whether the driver's options can hold ``value`` (pymongo sends any value; the server judges)."""
    return value is None or isinstance(value, bool)


def _mappings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) for v in value)


@operations
class Collection:
    """A collection of a tenant's database."""

    def __init__(
        self,
        database: Database,
        name: str,
        create: bool | None = False,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        session: ClientSession | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be an instance of str, not {type(name)}")
        _validate_name(name)
        self._database = database
        self._name = name
        self._codec: CodecOptions = codec_options or database.codec_options
        self._read_preference: _ServerMode = _read_preference.check(
            read_preference or database.read_preference
        )
        self._write_concern: WriteConcern = write_concern or database.write_concern
        self._read_concern: ReadConcern = read_concern or database.read_concern
        self._core = database._core
        self._user_id = database._client.user_id
        self._db_name = database.name
        self._scope = database._scope
        if self._scope is not None and self._db_name == "admin":
            self._scope.check_collection(self._user_id, "admin", name)
        if create or kwargs:
            warnings.warn(
                "The `create` and `kwargs` arguments to Collection are deprecated and will be removed "
                "in PyMongo 5.0",
                DeprecationWarning,
                stacklevel=2,
            )
            database.create_collection(name, session=session, check_exists=False, **kwargs)

    # -- identity -------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def full_name(self) -> str:
        return f"{self._db_name}.{self._name}"

    @property
    def database(self) -> Database:
        return self._database

    @property
    def codec_options(self) -> CodecOptions:
        return self._codec

    @property
    def write_concern(self) -> WriteConcern:
        return self._write_concern

    @property
    def read_concern(self) -> ReadConcern:
        return self._read_concern

    @property
    def read_preference(self) -> _ServerMode:
        return self._read_preference

    def _read_preference_for(self, session: ClientSession | None) -> _ServerMode:
        """The read preference of a read: inside a transaction, the transaction's (pymongo's rule)."""
        return _read_preference.for_session(self._read_preference, session)

    def _route(self, spec: dict[str, Any], session: ClientSession | None) -> dict[str, Any]:
        """Puts a read's read preference into its spec (refusing a non-primary one in a transaction)."""
        _read_preference.put(spec, self._read_preference_for(session), session)
        return spec

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            full = f"{self._name}.{name}"
            raise AttributeError(
                f"Collection has no attribute {name!r}. To access the {full} collection, use "
                f"database[{full!r}]."
            )
        return self[name]

    def __getitem__(self, name: str) -> Collection:
        return type(self)(
            self._database,
            f"{self._name}.{name}",
            False,
            self._codec,
            self._read_preference,
            self._write_concern,
            self._read_concern,
        )

    def get_collection(
        self,
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        return self._database.get_collection(
            f"{self._name}.{name}", codec_options, read_preference, write_concern, read_concern
        )

    def with_options(
        self,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        return type(self)(
            self._database,
            self._name,
            False,
            codec_options or self._codec,
            read_preference or self._read_preference,
            write_concern or self._write_concern,
            read_concern or self._read_concern,
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Collection):
            return self._database == other._database and self._name == other._name
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self._database, self._name))

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "Collection objects do not implement truth value testing or bool(). Please compare with None "
            "instead: collection is not None"
        )

    def __repr__(self) -> str:
        return f"Collection({self._database!r}, {self._name!r})"

    def __iter__(self) -> Collection:
        return self

    def __next__(self) -> None:
        raise TypeError("'Collection' object is not iterable")

    next = __next__

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"'Collection' object is not callable. If you meant to call the '{self._name}' "
            f"method on a 'Collection' object it is failing because no such method exists."
        )

    # -- plumbing -------------------------------------------------------------------------------------

    def _wc(self, session: ClientSession | None) -> WriteConcern:
        """The write concern of an operation: none of its own inside a transaction (pymongo's rule)."""
        if session is not None and session.in_transaction:
            return DEFAULT_WRITE_CONCERN
        return self._write_concern

    def _rc(self, session: ClientSession | None) -> ReadConcern | None:
        """The read concern of an operation: inside a transaction, the transaction's."""
        if session is not None and (session.in_transaction or session.options.snapshot):
            # In a snapshot session the driver adds the session's own (snapshot, atClusterTime), which
            # pymongo puts in place of the collection's level.
            return None
        return self._read_concern

    def _write_concern_for(self, session: ClientSession | None) -> WriteConcern:
        """The write concern of a write, refusing an explicit session with an unacknowledged one."""
        wc = self._wc(session)
        if session is not None and not wc.acknowledged:
            raise ConfigurationError(
                f"Explicit sessions are incompatible with unacknowledged write concern: {wc!r}"
            )
        return wc

    def _write_options(self, options: dict[str, Any], session: ClientSession | None) -> None:
        """Adds the write concern to a typed operation's options."""
        wc = self._wc(session)
        if not wc.is_server_default:
            options["writeConcern"] = write_concern_document(wc)

    def _read_options(self, options: dict[str, Any], session: ClientSession | None) -> None:
        rc = self._rc(session)
        if rc is not None and rc.level is not None:
            options["readConcern"] = {"level": rc.level}

    def _execute(
        self,
        op: str,
        spec: dict[str, Any],
        docs: list[bytes] | None = None,
        codec: CodecOptions | None = None,
        session: ClientSession | None = None,
    ) -> Any:
        """Runs one of the Rust driver's typed operations."""
        spec["collection"] = self._name
        codec = codec or self._codec
        raw = core_session(session, self._user_id)
        try:
            reply = yield Execute(
                self._core, self._user_id, self._db_name, op, encode(spec, False, codec), docs, session=raw
            )
        except WriteConcernError as exc:
            details = exc.details or {}
            if type(exc) is WriteConcernError and (
                exc.code == 50 or (details.get("errInfo") or {}).get("wtimeout")
            ):
                # pymongo's subclass for a write concern that timed out.
                raise WTimeoutError(str(details.get("errmsg", exc)), exc.code, details) from None
            raise
        return None if reply is None else decode(reply, codec)

    def _run_command(
        self,
        command: Mapping[str, Any],
        codec: CodecOptions | None = None,
        db_name: str | None = None,
        session: ClientSession | None = None,
        read_preference: _ServerMode | None = None,
        retryable: bool = False,
    ) -> Any:
        """Sends ``command`` as is (the core's generic op) and returns the server's reply; on the
        primary unless a ``read_preference`` is given. ``retryable``: the command is a write pymongo
        would retry (outside a session, the core then does)."""
        codec = codec or self._codec
        if self._scope is not None:
            command = self._scope.check_command(self._user_id, db_name or self._db_name, command)
        doc: dict[str, Any] = {"command": command}
        if read_preference is not None:
            _read_preference.put(doc, read_preference, session)
        spec = encode(doc, False, codec)
        raw = core_session(session, self._user_id)
        op = "retryable_write" if retryable and raw is None else "command"
        reply = yield Execute(self._core, self._user_id, db_name or self._db_name, op, spec, session=raw)
        return decode(reply, codec)

    def _command(
        self,
        command: dict[str, Any],
        codec: CodecOptions | None = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        collation: Mapping[str, Any] | None = None,
        allowable_errors: Sequence[str | int] | None = None,
        parse_write_concern_error: bool = False,
        db_name: str | None = None,
        session: ClientSession | None = None,
        read_preference: _ServerMode | None = None,
        retryable: bool = False,
    ) -> Any:
        """A command as pymongo's ``Collection._command`` sends it: concerns and collation added, some
        errors tolerated (their reply returned instead). On the primary unless a ``read_preference`` is
        given; ``retryable`` as in ``_run_command``."""
        if write_concern is not None and not write_concern.is_server_default:
            command["writeConcern"] = write_concern_document(write_concern)
        if read_concern is not None and read_concern.level is not None:
            command["readConcern"] = read_concern.document
        if collation is not None:
            command["collation"] = collation
        try:
            reply = yield from self._run_command(command, codec, db_name, session, read_preference, retryable)
        except OperationFailure as exc:
            if allowed_error(exc, allowable_errors):
                return exc.details
            raise
        if parse_write_concern_error and reply.get("writeConcernError"):
            wce = reply["writeConcernError"]
            raise WriteConcernError(wce.get("errmsg"), wce.get("code"), wce)
        return reply

    def _write_command(
        self,
        op_type: int,
        op: Any,
        bypass_document_validation: Any = None,
        let: Any = None,
        comment: Any = None,
        session: ClientSession | None = None,
    ) -> dict[str, Any] | None:
        """One write op as its own write command, as pymongo sends single writes: the reply, checked for
        write errors, or None if unacknowledged."""
        wc = self._wc(session)
        name, field = _WRITE_COMMANDS[op_type]
        cmd: dict[str, Any] = {name: self._name, "ordered": True, field: [op]}
        if let is not None:
            cmd["let"] = let
        if comment is not None:
            cmd["comment"] = comment
        if bypass_document_validation is not None:
            cmd["bypassDocumentValidation"] = bypass_document_validation
        if not wc.is_server_default:
            cmd["writeConcern"] = write_concern_document(wc)
        op_size = len(encode(op, False, self._codec))
        if not wc.acknowledged and op_size > MAX_BSON_SIZE:
            document_too_large(name, op_size, MAX_BSON_SIZE)
        if op_size > MAX_BSON_SIZE + COMMAND_OVERHEAD:
            document_too_large(name, op_size, MAX_BSON_SIZE + COMMAND_OVERHEAD)
        # pymongo's rule: a single-document write is retryable, a multi-document one is not.
        single = op_type == INSERT or (op.get("limit") == 1 if op_type == DELETE else not op.get("multi"))
        reply = yield from self._run_command(
            cmd, codec_for_replies(self._codec), session=session, retryable=wc.acknowledged and single
        )
        if not wc.acknowledged:
            return None
        check_write_response(reply)
        return reply

    # -- writes ---------------------------------------------------------------------------------------

    def insert_one(
        self,
        document: Any,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
    ) -> InsertOneResult:
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
            put(options, "bypassDocumentValidation", bypass_document_validation)
            put(options, "comment", comment)
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

    def insert_many(
        self,
        documents: Iterable[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
    ) -> InsertManyResult:
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
        put(options, "bypassDocumentValidation", bypass_document_validation)
        put(options, "comment", comment)
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

    def bulk_write(
        self,
        requests: Sequence[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        let: Mapping[str, Any] | None = None,
    ) -> BulkWriteResult:
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
    ) -> UpdateResult:
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
        put(op, "collation", collation)
        put(op, "arrayFilters", array_filters)
        put(op, "hint", hint)
        put(op, "sort", sort)
        typed = (
            wc.acknowledged
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
        put(options, "bypassDocumentValidation", bypass_document_validation)
        put(options, "collation", collation)
        put(options, "arrayFilters", array_filters)
        put(options, "hint", hint)
        put(options, "let", let)
        put(options, "comment", comment)
        self._write_options(options, session)
        if replace:
            spec = {"filter": filter, "replacement": document, "options": options}
            reply = yield from self._execute("replace_one", spec, session=session)
        else:
            spec = {"filter": filter, "update": document, "options": options}
            reply = yield from self._execute("update_many" if multi else "update_one", spec, session=session)
        return UpdateResult(
            _update_raw_result(as_int(reply["n"]), as_int(reply["nModified"]), reply.get("upserted")), True
        )

    def update_one(
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
    ) -> UpdateResult:
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

    def update_many(
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
    ) -> UpdateResult:
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

    def replace_one(
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
    ) -> UpdateResult:
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

    def _delete(
        self,
        multi: bool,
        filter: Mapping[str, Any],
        collation: Any,
        hint: Any,
        session: ClientSession | None,
        let: Any,
        comment: Any,
    ) -> DeleteResult:
        check_mapping("filter", filter)
        wc = self._write_concern_for(session)
        collation = validate_collation_or_none(collation)
        if collation is not None and not wc.acknowledged:
            raise ConfigurationError("Collation is unsupported for unacknowledged writes.")
        hint = hint_value(hint)
        if let is not None:
            validate_is_document_type("let", let)
        op: dict[str, Any] = {"q": filter, "limit": int(not multi)}
        put(op, "collation", collation)
        put(op, "hint", hint)
        if not wc.acknowledged or len(encode(op, False, self._codec)) > MAX_BSON_SIZE:
            reply = yield from self._write_command(DELETE, op, None, let, comment, session)
            # pymongo's reply to an unacknowledged command is {"ok": 1}.
            return DeleteResult({"ok": 1} if reply is None else reply, wc.acknowledged)
        options: dict[str, Any] = {}
        put(options, "collation", collation)
        put(options, "hint", hint)
        put(options, "let", let)
        put(options, "comment", comment)
        self._write_options(options, session)
        spec = {"filter": filter, "options": options}
        reply = yield from self._execute("delete_many" if multi else "delete_one", spec, session=session)
        return DeleteResult({"n": as_int(reply["n"]), "ok": 1.0}, True)

    def delete_one(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> DeleteResult:
        return (yield from self._delete(False, filter, collation, hint, session, let, comment))

    def delete_many(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> DeleteResult:
        return (yield from self._delete(True, filter, collation, hint, session, let, comment))

    # -- reads ----------------------------------------------------------------------------------------

    def find(self, *args: Any, **kwargs: Any) -> Cursor:
        """A cursor over the matching documents; same arguments as pymongo's ``find``."""
        return self._database._cursor_class(self, *args, **kwargs)

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The first matching document or None. A non-mapping filter matches on ``_id``, as in pymongo."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        if not args and not kwargs and self._database._cursor_class._bound_sessions.get() is None:
            if COMMAND_PATH:
                return (yield from command_find_one(self, filter))
            # The common call: no Cursor to build, which was half of the Python work before the round
            # trip (measured: 3.4 µs instead of 6.5 µs). A bound session (``bind()``) is taken by the
            # Cursor, so then it goes the long way.
            options: dict[str, Any] = {}
            self._read_options(options, None)
            if find_options_fit_driver(options):
                query = filter or {}
                doc = {"collection": self._name, "filter": query, "options": options}
                spec = encode(self._route(doc, None), False, self._codec)
                check_query_size(spec)
                reply = yield Execute(self._core, self._user_id, self._db_name, "find_one", spec)
                return None if reply is None else decode(reply, self._codec)
        cursor = self.find(filter, *args, **kwargs)
        options = cursor._options()
        if (
            COMMAND_PATH
            or cursor._empty
            or "allowDiskUse" in options
            or "noCursorTimeout" in options
            or "tailable" in options
            or not find_options_fit_driver(options)
        ):
            # Options the driver's find_one drops: run it as pymongo does, a find with limit -1.
            docs = yield from cursor.limit(-1)._gen_to_list(1)
            return docs[0] if docs else None
        # One round trip and no cursor: the document comes back in the reply.
        options.pop("limit", None)
        options.pop("batchSize", None)
        doc = {"collection": self._name, "filter": cursor._spec, "options": options}
        spec = encode(self._route(doc, cursor._session), False, self._codec)
        check_query_size(spec)
        raw = core_session(cursor._session, self._user_id)
        reply = yield Execute(self._core, self._user_id, self._db_name, "find_one", spec, session=raw)
        return None if reply is None else decode(reply, self._codec)

    def count_documents(
        self,
        filter: Mapping[str, Any],
        session: ClientSession | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> int:
        """The number of matching documents; ``skip``, ``limit``, ``hint``, ``collation`` and
        ``maxTimeMS`` as in pymongo."""
        if "hint" in kwargs and not isinstance(kwargs["hint"], str):
            kwargs["hint"] = index_document(kwargs["hint"])
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        skip, limit = kwargs.get("skip"), kwargs.get("limit")
        typed = (
            isinstance(filter, Mapping)
            and set(kwargs) <= {"skip", "limit", "hint", "maxTimeMS"}
            and (skip is None or (type(skip) is int and skip >= 0))
            and (limit is None or (type(limit) is int and limit > 0))
            and (kwargs.get("maxTimeMS") is None or type(kwargs["maxTimeMS"]) is int)
        )
        if typed:
            options: dict[str, Any] = dict(kwargs)
            put(options, "collation", collation)
            put(options, "comment", comment)
            self._read_options(options, session)
            spec = self._route({"filter": filter, "options": options}, session)
            return int((yield from self._execute("count_documents", spec, session=session))["n"])
        pipeline: list[Any] = [{"$match": filter}]
        if "skip" in kwargs:
            pipeline.append({"$skip": kwargs.pop("skip")})
        if "limit" in kwargs:
            pipeline.append({"$limit": kwargs.pop("limit")})
        pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline, "cursor": {}}
        put(kwargs, "comment", comment)
        cmd.update(kwargs)
        codec = codec_for_replies(self._codec)
        reply = yield from self._command(
            cmd,
            codec,
            read_concern=self._rc(session),
            collation=collation,
            session=session,
            read_preference=self._read_preference_for(session),
        )
        batch = reply["cursor"]["firstBatch"]
        return batch[0]["n"] if batch else 0

    def estimated_document_count(self, comment: Any = None, **kwargs: Any) -> int:
        if "session" in kwargs:
            raise ConfigurationError("estimated_document_count does not support sessions")
        if set(kwargs) <= {"maxTimeMS"} and type(kwargs.get("maxTimeMS", 0)) is int:
            options: dict[str, Any] = dict(kwargs)
            put(options, "comment", comment)
            self._read_options(options, None)
            spec = self._route({"options": options}, None)
            return int((yield from self._execute("estimated_document_count", spec))["n"])
        cmd: dict[str, Any] = {"count": self._name}
        put(kwargs, "comment", comment)
        cmd.update(kwargs)
        return int(
            (
                yield from self._command(
                    cmd,
                    codec_for_replies(self._codec),
                    read_concern=self._read_concern,
                    read_preference=self._read_preference,
                )
            )["n"]
        )

    def distinct(
        self,
        key: str,
        filter: Mapping[str, Any] | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        hint: Any = None,
        **kwargs: Any,
    ) -> list[Any]:
        if not isinstance(key, str):
            raise TypeError(f"key must be an instance of str, not {type(key)}")
        if filter is not None:
            if "query" in kwargs:
                raise ConfigurationError("can't pass both filter and query")
            kwargs["query"] = filter
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        hint = hint_value(hint)
        query = kwargs.get("query")
        if (
            set(kwargs) <= {"query", "maxTimeMS"}
            and (query is None or isinstance(query, Mapping))
            and type(kwargs.get("maxTimeMS", 0)) is int
        ):
            options: dict[str, Any] = {}
            put(options, "maxTimeMS", kwargs.get("maxTimeMS"))
            put(options, "collation", collation)
            put(options, "comment", comment)
            put(options, "hint", hint)
            self._read_options(options, session)
            spec = self._route({"key": key, "filter": query or {}, "options": options}, session)
            return (yield from self._execute("distinct", spec, session=session))["values"]
        cmd: dict[str, Any] = {"distinct": self._name, "key": key}
        cmd.update(kwargs)
        put(cmd, "comment", comment)
        put(cmd, "hint", hint)
        reply = yield from self._command(
            cmd,
            read_concern=self._rc(session),
            collation=collation,
            session=session,
            read_preference=self._read_preference_for(session),
        )
        return reply["values"]

    def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> CommandCursor:
        """pymongo's ``aggregate``: a CommandCursor over the results; ``$out``/``$merge`` included."""
        return (yield from _aggregate(self._database, self, pipeline, let, comment, kwargs, session))

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
    ) -> Any:
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
        body = {k: kwargs.pop(k) for k in ("update", "remove") if k in kwargs}
        typed = (
            wc.acknowledged
            and set(kwargs) <= {"maxTimeMS", "comment"}
            and type(kwargs.get("maxTimeMS", 0)) is int
            and (array_filters is None or _mappings(array_filters))
        )
        if typed:
            options: dict[str, Any] = {}
            put(options, "projection", fields)
            put(options, "sort", ordering)
            put(options, "upsert", upsert)
            put(options, "arrayFilters", None if array_filters is None else list(array_filters))
            put(options, "hint", hint)
            put(options, "let", let)
            put(options, "collation", collation)
            put(options, "maxTimeMS", kwargs.get("maxTimeMS"))
            put(options, "comment", kwargs.get("comment"))
            self._write_options(options, session)
            spec: dict[str, Any] = {"filter": filter, "options": options}
            if kind != "delete":
                spec["returnNew"] = return_document
                spec["replacement" if kind == "replace" else "update"] = body["update"]
            return (yield from self._execute(f"find_one_and_{kind}", spec, session=session))["value"]
        cmd: dict[str, Any] = {"findAndModify": self._name, "query": filter, "new": return_document}
        put(cmd, "let", let)
        cmd.update(body)
        cmd.update(kwargs)
        put(cmd, "fields", fields)
        put(cmd, "sort", ordering)
        put(cmd, "upsert", upsert)
        put(cmd, "arrayFilters", None if array_filters is None else list(array_filters))
        put(cmd, "hint", hint)
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

    def find_one_and_delete(
        self,
        filter: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        hint: Any = None,
        session: ClientSession | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        kwargs["remove"] = True
        put(kwargs, "comment", comment)
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

    def find_one_and_replace(
        self,
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
    ) -> Any:
        validate_ok_for_replace(replacement)
        kwargs["update"] = replacement
        put(kwargs, "comment", comment)
        return (
            yield from self._find_and_modify(
                "replace", filter, projection, sort, upsert, return_document, None, hint, session, let, kwargs
            )
        )

    def find_one_and_update(
        self,
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
    ) -> Any:
        validate_ok_for_update(update)
        validate_list_or_none("array_filters", array_filters)
        kwargs["update"] = update
        put(kwargs, "comment", comment)
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

    # -- indexes and administration -------------------------------------------------------------------

    def create_indexes(
        self,
        indexes: Sequence[IndexModel],
        session: ClientSession | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> list[str]:
        validate_list("indexes", indexes)
        put(kwargs, "comment", comment)
        return (yield from self._create_indexes(indexes, kwargs, session))

    def _create_indexes(
        self, indexes: Sequence[IndexModel], kwargs: dict[str, Any], session: ClientSession | None
    ) -> list[str]:
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

    def create_index(
        self, keys: Any, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> str:
        """Creates an index from pymongo's key spec (``"field"`` or ``[("a", 1), ("b", -1)]``)."""
        cmd_options: dict[str, Any] = {}
        if "maxTimeMS" in kwargs:
            cmd_options["maxTimeMS"] = kwargs.pop("maxTimeMS")
        put(cmd_options, "comment", comment)
        return (yield from self._create_indexes([IndexModel(keys, **kwargs)], cmd_options, session))[0]

    def list_indexes(self, session: ClientSession | None = None, comment: Any = None) -> CommandCursor:
        """The collection's indexes (as SON documents, like pymongo); none if the collection does not
        exist."""
        codec = CodecOptions(SON)
        # On the primary, as in pymongo (inside a transaction, the transaction's read preference).
        read_preference = _read_preference.for_command(None, session)
        if comment is None:
            try:
                spec: dict[str, Any] = {"collection": self._name}
                _read_preference.put(spec, read_preference, session)
                raw = yield from CommandCursor._gen_open(self._database, "list_indexes", spec, codec, session)
                return self._database._command_cursor_class(self._database, raw, codec, session=session)
            except OperationFailure as exc:
                if exc.code != 26:
                    raise
                return self._database._command_cursor_class(self._database, None, codec, first_batch=[])
        # The driver's listIndexes takes no comment: send the command (an index list fits one batch).
        try:
            cmd = {"listIndexes": self._name, "cursor": {}, "comment": comment}
            reply = yield from self._command(cmd, codec, session=session, read_preference=read_preference)
        except OperationFailure as exc:
            if exc.code != 26:
                raise
            return self._database._command_cursor_class(self._database, None, codec, first_batch=[])
        return self._database._command_cursor_class(
            self._database, None, codec, first_batch=reply["cursor"]["firstBatch"]
        )

    def index_information(
        self, session: ClientSession | None = None, comment: Any = None
    ) -> MutableMapping[str, Any]:
        info = {}
        indexes = yield from self._gen_list_indexes(session=session, comment=comment)
        for index in (yield from indexes._gen_to_list()):
            index["key"] = list(index["key"].items())
            index = dict(index)
            info[index.pop("name")] = index
        return info

    def drop_index(
        self, index_or_name: Any, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> None:
        name = index_or_name
        if isinstance(index_or_name, list):
            name = "_".join(f"{k}_{v}" for k, v in index_or_name)
        if not isinstance(name, str):
            raise TypeError(f"index_or_name must be an instance of str or list, not {type(name)}")
        cmd: dict[str, Any] = {"dropIndexes": self._name, "index": name}
        cmd.update(kwargs)
        put(cmd, "comment", comment)
        (
            yield from self._command(
                cmd, allowable_errors=_NS_NOT_FOUND, write_concern=self._wc(session), session=session
            )
        )

    def drop_indexes(self, session: ClientSession | None = None, comment: Any = None, **kwargs: Any) -> None:
        put(kwargs, "comment", comment)
        (yield from self._gen_drop_index("*", session=session, **kwargs))

    def drop(
        self,
        session: ClientSession | None = None,
        comment: Any = None,
        encrypted_fields: Mapping[str, Any] | None = None,
    ) -> None:
        db = self._database.with_options(write_concern=self._write_concern)
        (
            yield from db._gen_drop_collection(
                self._name, session=session, comment=comment, encrypted_fields=encrypted_fields
            )
        )

    def rename(
        self, new_name: str, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> MutableMapping[str, Any]:
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
        put(cmd, "comment", comment)
        raw_wc = cmd.get("writeConcern")
        wc = WriteConcern(**raw_wc) if raw_wc is not None else self._wc(session)
        # renameCollection runs on admin; both names are in this database, so it stays within the tenant's.
        return (
            yield from self._command(
                cmd,
                CodecOptions(),
                write_concern=None if raw_wc is not None else wc,
                parse_write_concern_error=True,
                db_name="admin",
                session=session,
            )
        )

    def watch(
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
    ) -> CollectionChangeStream:
        """A change stream of this collection (pymongo's ``Collection.watch``), opened at once: changes
        made after this returns are seen. Needs a replica set or sharded cluster, as in pymongo."""
        return (
            yield from gen_watch(
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
        )

    # pymongo methods tenantpool does not have (yet): named, so that a call fails saying so instead of
    # reaching __getattr__ (which would take the name for a sub-collection).

    def find_raw_batches(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Collection.find_raw_batches is not supported by tenantpool yet")

    def aggregate_raw_batches(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Collection.aggregate_raw_batches is not supported by tenantpool yet")

    def list_search_indexes(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Atlas Search indexes are not supported by tenantpool")

    create_search_index = create_search_indexes = drop_search_index = update_search_index = (
        list_search_indexes
    )

    def options(self, session: ClientSession | None = None, comment: Any = None) -> MutableMapping[str, Any]:
        """The options the collection was created with (empty if it does not exist)."""
        cursor = yield from self._database._gen_list_collections(
            session=session, filter={"name": self._name}, comment=comment
        )
        for doc in (yield from cursor._gen_to_list()):
            options = doc.get("options", {})
            options.pop("create", None)
            return options
        return {}


def _aggregate(
    database: Database,
    collection: Collection | None,
    pipeline: Any,
    let: Any,
    comment: Any,
    kwargs: dict[str, Any],
    session: ClientSession | None,
) -> CommandCursor:
    """pymongo's aggregation on a collection, or on the database if ``collection`` is None."""
    if "explain" in kwargs:
        raise ConfigurationError("The explain option is not supported. Use Database.command instead.")
    for name in ("aggregate", "pipeline"):
        if name in kwargs:
            raise ConfigurationError(f"The {name} option cannot be specified as a keyword argument.")
    pipeline = validate_list("pipeline", pipeline)
    if database._scope is not None:
        database._scope.check_pipeline(database._user_id, pipeline)
    performs_write = (
        bool(pipeline)
        and isinstance(pipeline[-1], Mapping)
        and ("$out" in pipeline[-1] or "$merge" in pipeline[-1])
    )
    if let is not None:
        check_mapping("let", let)
        kwargs["let"] = let
    put(kwargs, "comment", comment)
    batch_size = validate_non_negative_integer_or_none("batchSize", kwargs.pop("batchSize", None))
    collation = validate_collation_or_none(kwargs.pop("collation", None))
    # Only tailable cursors (change streams) use it; pymongo ignores it otherwise.
    kwargs.pop("maxAwaitTimeMS", None)
    target = collection if collection is not None else database
    codec = target.codec_options
    # Inside a transaction, the transaction's concerns apply.
    in_transaction = session is not None and session.in_transaction
    wc = DEFAULT_WRITE_CONCERN if in_transaction else target.write_concern
    # In a snapshot session, the session's read concern (see Collection._rc).
    snapshot = session is not None and bool(session.options.snapshot)
    rc = ReadConcern() if in_transaction or snapshot else target.read_concern
    # As in pymongo, $out/$merge too: the driver sends those to the primary unless every server is 5.0+.
    read_preference = target._read_preference_for(session)
    known = {"allowDiskUse", "bypassDocumentValidation", "comment", "hint", "let", "maxTimeMS"}
    typed = (
        set(kwargs) <= known
        and (kwargs.get("hint") is None or isinstance(kwargs["hint"], (str, Mapping)))
        and type(kwargs.get("maxTimeMS", 0)) is int
        and all(
            isinstance(v, bool)
            for k, v in kwargs.items()
            if k in ("allowDiskUse", "bypassDocumentValidation")
        )
    )
    if typed and not COMMAND_PATH:
        options = dict(kwargs)
        if batch_size is not None and not performs_write:
            options["batchSize"] = batch_size
        put(options, "collation", collation)
        if rc.level is not None:
            options["readConcern"] = rc.document
        if performs_write and not wc.is_server_default:
            options["writeConcern"] = write_concern_document(wc)
        spec: dict[str, Any] = {"pipeline": pipeline, "options": options}
        if collection is not None:
            spec["collection"] = collection.name
        _read_preference.put(spec, read_preference, session)
        raw = yield from CommandCursor._gen_open(database, "aggregate", spec, codec, session)
        return database._command_cursor_class(database, raw, codec, session=session)
    # Options the driver does not model: send pymongo's command, so the server judges them; the core
    # continues its cursor with getMore.
    cmd: dict[str, Any] = {
        "aggregate": collection.name if collection is not None else 1,
        "pipeline": pipeline,
    }
    cmd.update(kwargs)
    cursor_opts = dict(cmd.get("cursor") or {})
    if batch_size is not None and not performs_write:
        cursor_opts["batchSize"] = batch_size
    cmd["cursor"] = cursor_opts
    if collation is not None:
        cmd["collation"] = collation
    if rc.level is not None and "readConcern" not in cmd:
        cmd["readConcern"] = rc.document
    if performs_write and not wc.is_server_default and "writeConcern" not in cmd:
        cmd["writeConcern"] = write_concern_document(wc)
    if collection is None and database._scope is not None:
        database._scope.check_database_operation(database._user_id, database.name, "aggregate")
    raw = yield from CommandCursor._gen_open_command(
        database,
        cmd,
        codec,
        session,
        read_preference,
        batch_size=batch_size,
        comment=kwargs.get("comment"),
        retryable=not performs_write,
    )
    return database._command_cursor_class(database, raw, codec, session=session)
