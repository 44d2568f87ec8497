"""Collection: pymongo's Collection API on one tenant's pool.

Arguments are checked and shaped in Python exactly as pymongo shapes them (sort specs, projections,
hints, ``_id`` generation), encoded once with pymongo's C encoder, and handed to the Rust core as bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.codec_options import CodecOptions
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, ConfigurationError, InvalidName, InvalidOperation
from pymongo.operations import IndexModel
from pymongo.read_concern import ReadConcern
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

from ._common import (
    check_bool,
    check_document,
    check_mapping,
    decode,
    encode,
    encode_document,
    hint_value,
    index_document,
    index_list,
    index_name,
    max_time,
    projection_document,
    put,
    reject_session,
)
from .cursor import CommandCursor, Cursor

if TYPE_CHECKING:
    from .database import Database


def _check_update(update: Any) -> None:
    if isinstance(update, Mapping):
        if not update:
            raise ValueError("update cannot be empty")
        first = next(iter(update))
        if not first.startswith("$"):
            raise ValueError("update only works with $ operators")
    elif isinstance(update, list):
        pass
    else:
        raise TypeError(f"update must be an instance of dict, bson.son.SON, or a list, not "
                        f"{type(update).__name__}")


def _check_replacement(replacement: Any) -> None:
    check_mapping("replacement", replacement)
    if replacement and next(iter(replacement)).startswith("$"):
        raise ValueError("replacement can not include $ operators")


class Collection:
    """A collection of a tenant's database."""

    def __init__(
        self,
        database: Database,
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be an instance of str, not {type(name).__name__}")
        if not name or ".." in name or "$" in name or "\x00" in name or name[0] == "." or name[-1] == ".":
            raise InvalidName(f"collection name {name!r} is not valid: it must be non-empty, not start or end "
                              f"with '.', and contain no '..', '$' or NUL")
        if read_preference is not None and getattr(read_preference, "mode", 0) != 0:
            raise ConfigurationError("read preferences other than primary are not supported yet by tenantpool")
        self._database = database
        self._name = name
        self._codec = codec_options or database.codec_options
        self._write_concern = write_concern
        self._read_concern = read_concern
        self._core = database._core
        self._user_id = database._client.user_id
        self._db_name = database.name
        # The spec of the commonest operations, encoded once.
        self._plain_spec = encode({"collection": name})

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
        return self._write_concern or WriteConcern()

    @property
    def read_concern(self) -> ReadConcern:
        return self._read_concern or ReadConcern()

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            full = f"{self._name}.{name}"
            raise AttributeError(
                f"Collection has no attribute {name!r}. To access the {full} collection, use "
                f"database[{full!r}]."
            )
        return self[name]

    def __getitem__(self, name: str) -> Collection:
        return Collection(self._database, f"{self._name}.{name}", self._codec, None, self._write_concern,
                          self._read_concern)

    def with_options(
        self,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        return Collection(self._database, self._name, codec_options or self._codec, read_preference,
                          write_concern or self._write_concern, read_concern or self._read_concern)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Collection):
            return self._database == other._database and self._name == other._name
        return NotImplemented

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

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"'Collection' object is not callable. If you meant to call the '{self._name}' "
                        f"method on a 'Collection' object it is failing because no such method exists.")

    # -- plumbing -------------------------------------------------------------------------------------

    def _write_options(self, options: dict[str, Any]) -> bool:
        """Adds the write concern to ``options``; returns whether writes are acknowledged."""
        wc = self._write_concern
        if wc is None or wc.is_server_default:
            return True
        doc = dict(wc.document)
        if "wtimeout" in doc:
            doc["wtimeout"] = int(doc["wtimeout"])
        options["writeConcern"] = doc
        return wc.acknowledged

    def _read_options(self, options: dict[str, Any]) -> None:
        rc = self._read_concern
        if rc is not None and rc.level is not None:
            options["readConcern"] = {"level": rc.level}

    def _execute(self, op: str, spec: dict[str, Any], docs: list[bytes] | None = None) -> Any:
        spec["collection"] = self._name
        reply = self._core.execute(self._user_id, self._db_name, op, encode(spec, False, self._codec), docs)
        return None if reply is None else decode(reply, self._codec)

    # -- writes ---------------------------------------------------------------------------------------

    def insert_one(
        self,
        document: Any,
        bypass_document_validation: bool | None = None,
        session: Any = None,
        comment: Any = None,
    ) -> InsertOneResult:
        check_document("document", document)
        reject_session(session)
        if isinstance(document, MutableMapping) and "_id" not in document:
            document["_id"] = ObjectId()
        data = encode_document(document, self._codec)
        options: dict[str, Any] = {}
        put(options, "bypassDocumentValidation", bypass_document_validation)
        put(options, "comment", comment)
        acknowledged = self._write_options(options)
        spec = self._plain_spec if not options else encode({"collection": self._name, "options": options})
        self._core.execute(self._user_id, self._db_name, "insert_one", spec, [data])
        return InsertOneResult(document.get("_id"), acknowledged)

    def insert_many(
        self,
        documents: Iterable[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: Any = None,
        comment: Any = None,
    ) -> InsertManyResult:
        if not isinstance(documents, Iterable) or isinstance(documents, Mapping) or not documents:
            raise TypeError("documents must be a non-empty list")
        check_bool("ordered", ordered)
        reject_session(session)
        ids: list[Any] = []
        data: list[bytes] = []
        for doc in documents:
            check_document("document", doc)
            if isinstance(doc, MutableMapping) and "_id" not in doc:
                doc["_id"] = ObjectId()
            ids.append(doc.get("_id"))
            data.append(encode_document(doc, self._codec))
        if not data:
            raise TypeError("documents must be a non-empty list")
        options: dict[str, Any] = {"ordered": ordered}
        put(options, "bypassDocumentValidation", bypass_document_validation)
        put(options, "comment", comment)
        acknowledged = self._write_options(options)
        try:
            self._execute("insert_many", {"options": options}, data)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if ordered and errors:
                exc.details["nInserted"] = errors[0]["index"]
            else:
                exc.details["nInserted"] = len(data) - len(errors)
            raise
        return InsertManyResult(ids, acknowledged)

    def _update(
        self,
        op: str,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool,
        bypass_document_validation: bool | None,
        collation: Any,
        array_filters: Sequence[Mapping[str, Any]] | None,
        hint: Any,
        session: Any,
        let: Mapping[str, Any] | None,
        comment: Any,
        sort: Any = None,
    ) -> UpdateResult:
        check_mapping("filter", filter)
        check_bool("upsert", upsert)
        reject_session(session)
        options: dict[str, Any] = {"upsert": upsert}
        put(options, "bypassDocumentValidation", bypass_document_validation)
        put(options, "collation", collation)
        if array_filters is not None:
            if not isinstance(array_filters, list):
                raise TypeError("array_filters must be a list")
            options["arrayFilters"] = array_filters
        put(options, "hint", hint_value(hint))
        put(options, "let", let)
        put(options, "comment", comment)
        if sort is not None:
            options["sort"] = index_document(index_list(sort))
        acknowledged = self._write_options(options)
        key = "replacement" if op == "replace_one" else "update"
        reply = self._execute(op, {"filter": filter, key: update, "options": options})
        return UpdateResult(reply, acknowledged)

    def update_one(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        sort: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        _check_update(update)
        return self._update("update_one", filter, update, upsert, bypass_document_validation, collation,
                            array_filters, hint, session, let, comment, sort)

    def update_many(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> UpdateResult:
        _check_update(update)
        return self._update("update_many", filter, update, upsert, bypass_document_validation, collation,
                            array_filters, hint, session, let, comment)

    def replace_one(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        sort: Any = None,
        comment: Any = None,
    ) -> UpdateResult:
        _check_replacement(replacement)
        return self._update("replace_one", filter, replacement, upsert, bypass_document_validation, collation,
                            None, hint, session, let, comment, sort)

    def _delete(self, op: str, filter: Mapping[str, Any], collation: Any, hint: Any, session: Any,
                let: Any, comment: Any) -> DeleteResult:
        check_mapping("filter", filter)
        reject_session(session)
        options: dict[str, Any] = {}
        put(options, "collation", collation)
        put(options, "hint", hint_value(hint))
        put(options, "let", let)
        put(options, "comment", comment)
        acknowledged = self._write_options(options)
        return DeleteResult(self._execute(op, {"filter": filter, "options": options}), acknowledged)

    def delete_one(self, filter: Mapping[str, Any], collation: Any = None, hint: Any = None,
                   session: Any = None, let: Mapping[str, Any] | None = None, comment: Any = None) -> DeleteResult:
        return self._delete("delete_one", filter, collation, hint, session, let, comment)

    def delete_many(self, filter: Mapping[str, Any], collation: Any = None, hint: Any = None,
                    session: Any = None, let: Mapping[str, Any] | None = None, comment: Any = None) -> DeleteResult:
        return self._delete("delete_many", filter, collation, hint, session, let, comment)

    # -- reads ----------------------------------------------------------------------------------------

    def find(self, *args: Any, **kwargs: Any) -> Cursor:
        """A cursor over the matching documents; same arguments as pymongo's ``find``."""
        return Cursor(self, *args, **kwargs)

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The first matching document or None. A non-mapping filter matches on ``_id``, as in pymongo."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        cursor = Cursor(self, filter, *args, **kwargs)
        return cursor._find_one()

    def count_documents(self, filter: Mapping[str, Any], session: Any = None, comment: Any = None,
                        **kwargs: Any) -> int:
        check_mapping("filter", filter)
        reject_session(session)
        options: dict[str, Any] = {}
        for key, name in (("skip", "skip"), ("limit", "limit"), ("collation", "collation")):
            if key in kwargs:
                options[name] = kwargs.pop(key)
        if "hint" in kwargs:
            options["hint"] = hint_value(kwargs.pop("hint"))
        put(options, "maxTimeMS", max_time(kwargs.pop("maxTimeMS", kwargs.pop("max_time_ms", None))))
        put(options, "comment", comment)
        _no_extra("count_documents", kwargs)
        self._read_options(options)
        return self._execute("count_documents", {"filter": filter, "options": options})["n"]

    def estimated_document_count(self, comment: Any = None, **kwargs: Any) -> int:
        options: dict[str, Any] = {}
        put(options, "maxTimeMS", max_time(kwargs.pop("maxTimeMS", kwargs.pop("max_time_ms", None))))
        put(options, "comment", comment)
        _no_extra("estimated_document_count", kwargs)
        return self._execute("estimated_document_count", {"options": options})["n"]

    def distinct(self, key: str, filter: Mapping[str, Any] | None = None, session: Any = None,
                 comment: Any = None, hint: Any = None, **kwargs: Any) -> list[Any]:
        if not isinstance(key, str):
            raise TypeError(f"key must be an instance of str, not {type(key).__name__}")
        reject_session(session)
        options: dict[str, Any] = {}
        put(options, "collation", kwargs.pop("collation", None))
        put(options, "maxTimeMS", max_time(kwargs.pop("maxTimeMS", kwargs.pop("max_time_ms", None))))
        put(options, "comment", comment)
        put(options, "hint", hint_value(hint))
        _no_extra("distinct", kwargs)
        self._read_options(options)
        spec = {"key": key, "filter": filter or {}, "options": options}
        return self._execute("distinct", spec)["values"]

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], session: Any = None, let: Any = None,
                  comment: Any = None, **kwargs: Any) -> CommandCursor:
        if not isinstance(pipeline, list):
            raise TypeError("pipeline must be a list")
        reject_session(session)
        options: dict[str, Any] = {}
        for key, name in (("allowDiskUse", "allowDiskUse"), ("allow_disk_use", "allowDiskUse"),
                          ("batchSize", "batchSize"), ("batch_size", "batchSize"),
                          ("collation", "collation"), ("bypassDocumentValidation", "bypassDocumentValidation")):
            if key in kwargs:
                options[name] = kwargs.pop(key)
        if "hint" in kwargs:
            options["hint"] = hint_value(kwargs.pop("hint"))
        put(options, "maxTimeMS", max_time(kwargs.pop("maxTimeMS", kwargs.pop("max_time_ms", None))))
        put(options, "let", let)
        put(options, "comment", comment)
        _no_extra("aggregate", kwargs)
        self._read_options(options)
        self._write_options(options)
        return CommandCursor(self._database, "aggregate",
                             {"collection": self._name, "pipeline": pipeline, "options": options}, self._codec)

    def _find_and_modify(self, op: str, filter: Mapping[str, Any], body: dict[str, Any], projection: Any,
                         sort: Any, return_document: bool | None, hint: Any, session: Any, let: Any,
                         comment: Any, kwargs: dict[str, Any], upsert: bool | None = None,
                         array_filters: Any = None) -> Any:
        check_mapping("filter", filter)
        reject_session(session)
        options: dict[str, Any] = {}
        put(options, "projection", projection_document(projection))
        if sort is not None:
            options["sort"] = index_document(index_list(sort))
        put(options, "upsert", upsert)
        put(options, "arrayFilters", array_filters)
        put(options, "hint", hint_value(hint))
        put(options, "let", let)
        put(options, "comment", comment)
        put(options, "collation", kwargs.pop("collation", None))
        put(options, "maxTimeMS", max_time(kwargs.pop("maxTimeMS", kwargs.pop("max_time_ms", None))))
        _no_extra(op, kwargs)
        self._write_options(options)
        spec = {"filter": filter, "options": options, **body}
        if return_document is not None:
            if not isinstance(return_document, bool):
                raise ValueError("return_document must be ReturnDocument.BEFORE or ReturnDocument.AFTER")
            spec["returnNew"] = return_document
        return self._execute(op, spec)["value"]

    def find_one_and_update(self, filter: Mapping[str, Any], update: Any, projection: Any = None,
                            sort: Any = None, upsert: bool = False,
                            return_document: bool = ReturnDocument.BEFORE, array_filters: Any = None,
                            hint: Any = None, session: Any = None, let: Any = None, comment: Any = None,
                            **kwargs: Any) -> Any:
        _check_update(update)
        check_bool("upsert", upsert)
        return self._find_and_modify("find_one_and_update", filter, {"update": update}, projection, sort,
                                     return_document, hint, session, let, comment, kwargs, upsert, array_filters)

    def find_one_and_replace(self, filter: Mapping[str, Any], replacement: Mapping[str, Any],
                             projection: Any = None, sort: Any = None, upsert: bool = False,
                             return_document: bool = ReturnDocument.BEFORE, hint: Any = None,
                             session: Any = None, let: Any = None, comment: Any = None, **kwargs: Any) -> Any:
        _check_replacement(replacement)
        check_bool("upsert", upsert)
        return self._find_and_modify("find_one_and_replace", filter, {"replacement": replacement}, projection,
                                     sort, return_document, hint, session, let, comment, kwargs, upsert)

    def find_one_and_delete(self, filter: Mapping[str, Any], projection: Any = None, sort: Any = None,
                            hint: Any = None, session: Any = None, let: Any = None, comment: Any = None,
                            **kwargs: Any) -> Any:
        return self._find_and_modify("find_one_and_delete", filter, {}, projection, sort, None, hint, session,
                                     let, comment, kwargs)

    # -- indexes and administration -------------------------------------------------------------------

    def create_index(self, keys: Any, session: Any = None, comment: Any = None, **kwargs: Any) -> str:
        """Creates an index from pymongo's key spec (``"field"`` or ``[("a", 1), ("b", -1)]``)."""
        reject_session(session)
        pairs = index_list(keys)
        doc: dict[str, Any] = {"key": index_document(pairs)}
        doc["name"] = kwargs.pop("name", None) or index_name(pairs)
        doc.update(kwargs)
        return self._execute("create_indexes", {"indexes": [doc]})["names"][0]

    def create_indexes(self, indexes: Sequence[IndexModel], session: Any = None, comment: Any = None,
                       **kwargs: Any) -> list[str]:
        reject_session(session)
        if not isinstance(indexes, list):
            raise TypeError("indexes must be a list")
        docs = []
        for model in indexes:
            if not isinstance(model, IndexModel):
                raise TypeError(f"{model!r} is not an instance of pymongo.operations.IndexModel")
            docs.append(model.document)
        return self._execute("create_indexes", {"indexes": docs})["names"]

    def list_indexes(self, session: Any = None, comment: Any = None) -> CommandCursor:
        reject_session(session)
        return CommandCursor(self._database, "list_indexes", {"collection": self._name}, self._codec)

    def index_information(self, session: Any = None, comment: Any = None) -> dict[str, Any]:
        info = {}
        for index in self.list_indexes():
            name = index.pop("name")
            index["key"] = list(index["key"].items())
            info[name] = index
        return info

    def drop_index(self, index_or_name: Any, session: Any = None, comment: Any = None, **kwargs: Any) -> None:
        reject_session(session)
        name = index_or_name if isinstance(index_or_name, str) else index_name(index_list(index_or_name))
        if name == "*":
            raise InvalidOperation("use drop_indexes() to drop all indexes")
        self._execute("drop_index", {"name": name})

    def drop_indexes(self, session: Any = None, comment: Any = None, **kwargs: Any) -> None:
        reject_session(session)
        self._execute("drop_indexes", {})

    def drop(self, session: Any = None, comment: Any = None, encrypted_fields: Any = None) -> None:
        reject_session(session)
        self._execute("drop_collection", {})

    def rename(self, new_name: str, session: Any = None, comment: Any = None, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(new_name, str):
            raise TypeError(f"new_name must be an instance of str, not {type(new_name).__name__}")
        if not new_name or ".." in new_name or "$" in new_name or new_name[0] == "." or new_name[-1] == ".":
            raise InvalidName(f"collection name {new_name!r} is not valid")
        reject_session(session)
        cmd = {"renameCollection": self.full_name, "to": f"{self._db_name}.{new_name}", **kwargs}
        put(cmd, "comment", comment)
        # renameCollection runs against admin but stays within this tenant's database (same db prefix).
        reply = self._core.execute(self._user_id, "admin", "command",
                                   encode({"command": cmd}, False, self._codec))
        return decode(reply, self._codec)


def _no_extra(op: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise InvalidOperation(f"{op}() got options tenantpool does not support yet: {', '.join(sorted(kwargs))}")
