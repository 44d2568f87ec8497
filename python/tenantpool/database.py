"""Database: pymongo's Database API on one tenant's pool."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.dbref import DBRef
from pymongo.errors import CollectionInvalid, InvalidName, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from . import _read_preference
from ._aggregation import gen_aggregate
from ._base import BaseObject
from ._calls import Operation, operation, operations
from ._common import (
    allowed_error,
    check_mapping,
    set_if_given,
    validate_collation_or_none,
    write_concern_document,
    write_concern_error,
)
from .change_stream import CollectionChangeStream, DatabaseChangeStream, gen_watch
from .collection import Collection
from .cursor import CommandCursor, Cursor

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._isolation import IsolationScope
    from .client import TenantClient

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession


def _check_name(name: str) -> None:
    if not name:
        raise InvalidName("database name cannot be the empty string")
    for invalid_char in [" ", ".", "$", "/", "\\", "\x00", '"']:
        if invalid_char in name:
            raise InvalidName(f"database names cannot contain the character {invalid_char!r}")


@operations
class Database(BaseObject):
    """A tenant's database. ``db.posts`` and ``db["posts"]`` give collections, as in pymongo."""

    _kind = "Database"

    # The classes this database hands out; the async twin swaps in its own.
    _collection_class: type[Collection] = Collection
    _cursor_class: type[Cursor] = Cursor
    _command_cursor_class: type[CommandCursor] = CommandCursor
    _collection_change_stream_class: type[CollectionChangeStream] = CollectionChangeStream
    _database_change_stream_class: type[DatabaseChangeStream] = DatabaseChangeStream

    def __init__(
        self,
        client: TenantClient,
        name: str,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be an instance of str, not {type(name)}")
        if name != "$external":
            _check_name(name)
        self._client = client
        self._name = self._db_name = name
        self._codec: CodecOptions[Any] = codec_options or client.codec_options
        self._read_preference: _ServerMode = _read_preference.check(read_preference or client.read_preference)
        # The tenant client's defaults are the driver's, applied by it to typed operations.
        self._write_concern: WriteConcern = write_concern or WriteConcern()
        self._read_concern: ReadConcern = read_concern or ReadConcern()
        self._core = client.manager._core
        self._user_id = client.user_id
        # None when the manager was made with isolation="off".
        self._scope: IsolationScope | None = client._scope
        if self._scope is not None:
            self._scope.check_database(self._user_id, name)

    @property
    def name(self) -> str:
        """The name of this database (by default, the tenant's from the manager's ``db_name_template``)."""
        return self._name

    @property
    def client(self) -> TenantClient:
        """The tenant's client this database is of (an ``AsyncTenantClient`` for an ``AsyncDatabase``)."""
        return self._client

    def __getitem__(self, name: str) -> Collection:
        return self._collection_class(self, name)

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(
                f"Database has no attribute {name!r}. To access the {name} collection, use "
                f"database[{name!r}]."
            )
        return self._collection_class(self, name)

    def get_collection(
        self,
        name: str,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        """The collection ``name`` of this database with these options instead of the database's, as pymongo's
        ``get_collection`` (``db.posts`` and ``db['posts']`` are the same with the database's). No I/O. Raises
        ``InvalidName`` for an invalid name; under isolation, ``OperationFailure`` (Unauthorized) for a
        collection the tenant may not use."""
        return self._collection_class(
            self, name, False, codec_options, read_preference, write_concern, read_concern
        )

    def with_options(
        self,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Self:
        """A copy of this database with the options given replaced (pymongo's ``with_options``). No I/O."""
        return type(self)(
            self._client,
            self._name,
            codec_options or self._codec,
            read_preference or self._read_preference,
            write_concern or self._write_concern,
            read_concern or self._read_concern,
        )

    def _gen_command(
        self,
        /,
        command: str | MutableMapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Sequence[str | int] | None = None,
        read_preference: Any = None,
        codec_options: CodecOptions[Any] | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[dict[str, Any]]:
        """Runs a database command, as pymongo's ``Database.command`` (same arguments, replies and errors).
        As in pymongo, the reply is decoded with ``codec_options``, by default plain dicts, and the command
        runs on the primary unless ``read_preference`` is given (the database's is not used)."""
        read_preference = _read_preference.for_command(read_preference, session)
        if comment is not None:
            kwargs["comment"] = comment
        if isinstance(command, str):
            command = {command: value}
        command.update(kwargs)
        try:
            reply: dict[str, Any] = yield from self._run_command(
                command, codec_options or DEFAULT_CODEC_OPTIONS, session, read_preference
            )
        except OperationFailure as exc:
            if not check or allowed_error(exc, allowable_errors):
                return cast("dict[str, Any]", exc.details or {})
            raise
        return reply

    command = operation(_gen_command)

    def _gen_cursor_command(
        self,
        /,
        command: str | MutableMapping[str, Any],
        value: Any = 1,
        read_preference: Any = None,
        codec_options: CodecOptions[Any] | None = None,
        session: ClientSession | None = None,
        comment: Any = None,
        max_await_time_ms: int | None = None,
        **kwargs: Any,
    ) -> Operation[CommandCursor]:
        """Runs a command that returns a cursor and gives that cursor, continued with getMore as it is
        iterated (pymongo's ``Database.cursor_command``: same arguments). As in pymongo, ``comment`` and
        ``max_await_time_ms`` go with the getMores, not with the command; the cursor's documents are
        decoded with ``codec_options`` (plain dicts by default); the command runs on the primary unless
        ``read_preference`` is given; it is not retried; a command that returns no cursor raises
        InvalidOperation."""
        if max_await_time_ms is not None and not isinstance(max_await_time_ms, int):
            raise TypeError(f"max_await_time_ms must be an integer or None, not {type(max_await_time_ms)}")
        read_preference = _read_preference.for_command(read_preference, session)
        codec = codec_options or DEFAULT_CODEC_OPTIONS
        if isinstance(command, str):
            command = {command: value}
        command.update(kwargs)
        raw = yield from CommandCursor._gen_open_command(
            self, command, codec, session, read_preference, None, max_await_time_ms, comment
        )
        cursor = self._command_cursor_class(self, raw, codec, session=session)
        # A tailable find's empty batches end an iteration, not the cursor.
        cursor._tailable = bool(command.get("tailable"))
        return cursor

    cursor_command = operation(_gen_cursor_command)

    def _gen_list_collection_names(
        self,
        /,
        session: ClientSession | None = None,
        filter: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[list[str]]:
        """The names of this database's collections (matching ``filter``, if given), as pymongo's
        ``list_collection_names``."""
        if filter is None:
            kwargs["nameOnly"] = True
        else:
            check_mapping("filter", filter)
            if not filter or (len(filter) == 1 and "name" in filter):
                kwargs["nameOnly"] = True
        cursor = yield from self._gen_list_collections(session, filter, comment, **kwargs)
        return [c["name"] for c in (yield from cursor._gen_to_list())]

    list_collection_names = operation(_gen_list_collection_names)

    def _gen_list_collections(
        self,
        /,
        session: ClientSession | None = None,
        filter: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Operation[CommandCursor]:
        # On the primary, as in pymongo (inside a transaction, the transaction's read preference).
        """A cursor over this database's collections (their ``listCollections`` documents), as pymongo's
        ``list_collections``."""
        read_preference = _read_preference.for_command(None, session)
        cmd: dict[str, Any] = {"listCollections": 1, "cursor": {}}
        set_if_given(kwargs, "filter", filter)
        set_if_given(kwargs, "comment", comment)
        cmd.update(kwargs)
        raw = yield from CommandCursor._gen_open_command(
            self, cmd, self._codec, session, read_preference, comment=comment, retryable=True
        )
        return self._command_cursor_class(self, raw, self._codec, session=session)

    list_collections = operation(_gen_list_collections)

    def _gen_create_collection(
        self,
        /,
        name: str,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        session: ClientSession | None = None,
        check_exists: bool | None = True,
        **kwargs: Any,
    ) -> Operation[Collection]:
        """Creates the collection with the server's ``create`` options (``validator``, ``capped``...);
        raises CollectionInvalid if it exists, as pymongo does."""
        clustered_index = kwargs.get("clusteredIndex")
        if clustered_index:
            check_mapping("clusteredIndex", clustered_index)
        in_transaction = session is not None and session.in_transaction
        # listCollections cannot run in a transaction: pymongo skips the check there.
        if check_exists and not in_transaction:
            # The generator, not the public method: that one is a coroutine on AsyncDatabase.
            names = yield from self._gen_list_collection_names(session=session, filter={"name": name})
            if name in names:
                raise CollectionInvalid(f"collection {name} already exists")
        coll = self._collection_class(
            self, name, False, codec_options, read_preference, write_concern, read_concern
        )
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        if kwargs.get("encryptedFields"):
            from pymongo.errors import ConfigurationError

            raise ConfigurationError(
                "create_collection(encryptedFields=...): queryable encryption is not supported by tenantpool"
            )
        cmd: dict[str, Any] = {"create": name}
        if "size" in kwargs:
            kwargs["size"] = float(kwargs["size"])
        cmd.update(kwargs)
        (yield from coll._command(cmd, write_concern=coll._wc(session), collation=collation, session=session))
        return coll

    create_collection = operation(_gen_create_collection)

    def _gen_drop_collection(
        self,
        name_or_collection: str | Collection,
        session: ClientSession | None = None,
        comment: Any = None,
        encrypted_fields: Mapping[str, Any] | None = None,
    ) -> Operation[dict[str, Any]]:
        """Drops the collection; the server's reply (also when there was no such collection)."""
        name = name_or_collection.name if isinstance(name_or_collection, Collection) else name_or_collection
        if not isinstance(name, str):
            raise TypeError(f"name_or_collection must be an instance of str, not {type(name)}")
        if encrypted_fields is not None:
            from pymongo.errors import ConfigurationError

            raise ConfigurationError(
                "drop_collection(encrypted_fields=...): queryable encryption is not supported by tenantpool"
            )
        cmd: dict[str, Any] = {"drop": name}
        set_if_given(cmd, "comment", comment)
        wc = self._wc(session)
        if not wc.is_server_default:
            cmd["writeConcern"] = write_concern_document(wc)
        try:
            reply: dict[str, Any] = yield from self._run_command(cmd, session=session)
        except OperationFailure as exc:
            if exc.code == 26 or (exc.details or {}).get("errmsg") == "ns not found":
                return cast("dict[str, Any]", exc.details)  # None if the server sent no details
            raise
        if reply.get("writeConcernError"):
            w = reply["writeConcernError"]
            raise write_concern_error(w.get("errmsg"), w.get("code"), w)
        return reply

    drop_collection = operation(_gen_drop_collection)

    def _gen_aggregate(
        self, /, pipeline: Sequence[Mapping[str, Any]], session: ClientSession | None = None, **kwargs: Any
    ) -> Operation[CommandCursor]:
        """A database-level aggregation (``$currentOp``, ``$documents``...)."""
        let = kwargs.pop("let", None)
        comment = kwargs.pop("comment", None)
        return (yield from gen_aggregate(self, None, pipeline, let, comment, kwargs, session))

    aggregate = operation(_gen_aggregate)

    def _gen_validate_collection(
        self,
        name_or_collection: str | Collection,
        scandata: bool = False,
        full: bool = False,
        session: ClientSession | None = None,
        background: bool | None = None,
        comment: Any = None,
    ) -> Operation[dict[str, Any]]:
        """Runs the server's ``validate``; raises CollectionInvalid if the collection is not valid."""
        name = name_or_collection.name if isinstance(name_or_collection, Collection) else name_or_collection
        if not isinstance(name, str):
            raise TypeError(f"name_or_collection must be an instance of str or Collection, not {type(name)}")
        cmd: dict[str, Any] = {"validate": name, "scandata": scandata, "full": full}
        set_if_given(cmd, "comment", comment)
        set_if_given(cmd, "background", background)
        result = yield from self._gen_command(cmd, session=session)
        if not result.get("valid", False):
            raise CollectionInvalid(f"{name} invalid: {result!r}")
        return result

    validate_collection = operation(_gen_validate_collection)

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
    ) -> Operation[DatabaseChangeStream]:
        """A change stream of every collection of this database (pymongo's ``Database.watch``)."""
        stream = yield from gen_watch(
            self,
            None,
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
        # gen_watch makes the DatabaseChangeStream of this class (async or not).
        return cast(DatabaseChangeStream, stream)

    watch = operation(_gen_watch)

    def _gen_dereference(
        self, /, dbref: DBRef, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> Operation[Any]:
        """The document ``dbref`` refers to, or None, as pymongo's ``dereference``. Raises ``ValueError`` for
        a DBRef to another database."""
        if not isinstance(dbref, DBRef):
            raise TypeError(f"cannot dereference a {type(dbref)}")
        if dbref.database is not None and dbref.database != self._name:
            if self._scope is not None:
                self._scope.check_dereference(self._user_id, dbref.database)
            raise ValueError(
                f"trying to dereference a DBRef that points to another database "
                f"({dbref.database!r} not {self._name!r})"
            )
        return (
            yield from self[dbref.collection]._gen_find_one(
                {"_id": dbref.id}, session=session, comment=comment, **kwargs
            )
        )

    dereference = operation(_gen_dereference)

    def _identity(self) -> tuple[Any, ...]:
        return (self._client, self._name)

    def __repr__(self) -> str:
        return f"Database({self._client!r}, {self._name!r})"
