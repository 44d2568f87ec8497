"""Database: pymongo's Database API on one tenant's pool."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo.errors import CollectionInvalid, InvalidName, OperationFailure

from ._common import check_mapping, decode, encode, put, reject_session
from .collection import Collection
from .cursor import CommandCursor

if TYPE_CHECKING:
    from .client import TenantClient


class Database:
    """A tenant's database. ``db.posts`` and ``db["posts"]`` give collections, as in pymongo."""

    def __init__(self, client: TenantClient, name: str, codec_options: CodecOptions | None = None) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be an instance of str, not {type(name).__name__}")
        if not name or any(c in name for c in '/\\. "$\x00'):
            raise InvalidName(f"database name {name!r} is not valid: it must be non-empty and contain "
                              f"none of '/\\. \"$' or NUL")
        self._client = client
        self._name = name
        self._codec = codec_options or client.codec_options
        core = client.manager._core
        self._core = core
        self._user_id = client.user_id

    @property
    def name(self) -> str:
        return self._name

    @property
    def client(self) -> TenantClient:
        return self._client

    @property
    def codec_options(self) -> CodecOptions:
        return self._codec

    def _execute(self, op: str, spec: Mapping[str, Any], codec: CodecOptions | None = None) -> Any:
        reply = self._core.execute(self._user_id, self._name, op, encode(spec, False, codec or self._codec))
        return None if reply is None else decode(reply, codec or self._codec)

    def __getitem__(self, name: str) -> Collection:
        return Collection(self, name)

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(
                f"Database has no attribute {name!r}. To access the {name} collection, use database[{name!r}]."
            )
        return Collection(self, name)

    def get_collection(
        self,
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: Any = None,
        read_concern: Any = None,
    ) -> Collection:
        return Collection(self, name, codec_options=codec_options, read_preference=read_preference,
                          write_concern=write_concern, read_concern=read_concern)

    def with_options(self, codec_options: CodecOptions | None = None, **_: Any) -> Database:
        return Database(self._client, self._name, codec_options or self._codec)

    def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Sequence[str | int] | None = None,
        read_preference: Any = None,
        codec_options: CodecOptions = DEFAULT_CODEC_OPTIONS,
        session: Any = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Runs a database command, as pymongo's ``Database.command`` (same arguments and errors)."""
        reject_session(session)
        if isinstance(command, str):
            command = {command: value}
        else:
            check_mapping("command", command)
            command = dict(command)
        command.update(kwargs)
        put(command, "comment", comment)
        try:
            return self._execute("command", {"command": command}, codec_options)
        except OperationFailure as exc:
            if not check or (allowable_errors and (exc.code in allowable_errors or str(exc) in allowable_errors)):
                return exc.details or {}
            raise

    def list_collection_names(
        self, session: Any = None, filter: Mapping[str, Any] | None = None, comment: Any = None, **kwargs: Any
    ) -> list[str]:
        reject_session(session)
        spec: dict[str, Any] = {}
        put(spec, "filter", filter)
        return self._execute("list_collection_names", spec)["names"]

    def list_collections(
        self, session: Any = None, filter: Mapping[str, Any] | None = None, comment: Any = None, **kwargs: Any
    ) -> CommandCursor:
        reject_session(session)
        spec: dict[str, Any] = {}
        put(spec, "filter", filter)
        return CommandCursor(self, "list_collections", spec, self._codec)

    def create_collection(
        self, name: str, codec_options: CodecOptions | None = None, check_exists: bool = True, **kwargs: Any
    ) -> Collection:
        """Creates the collection; raises CollectionInvalid if it exists (as pymongo does)."""
        reject_session(kwargs.pop("session", None))
        coll = Collection(self, name, codec_options=codec_options)
        try:
            self._execute("create_collection", {"name": name, "options": kwargs})
        except OperationFailure as exc:
            if exc.code == 48 and check_exists:
                raise CollectionInvalid(f"collection {name} already exists") from None
            if exc.code != 48:
                raise
        return coll

    def drop_collection(self, name_or_collection: str | Collection, session: Any = None, **_: Any) -> dict:
        reject_session(session)
        name = name_or_collection.name if isinstance(name_or_collection, Collection) else name_or_collection
        if not isinstance(name, str):
            raise TypeError("name_or_collection must be an instance of str or Collection")
        self._execute("drop_collection", {"collection": name})
        return {"ns": f"{self._name}.{name}", "ok": 1.0}

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], session: Any = None, **kwargs: Any) -> CommandCursor:
        """A database-level aggregation (e.g. ``$currentOp``)."""
        reject_session(session)
        return CommandCursor(self, "aggregate", {"pipeline": list(pipeline), "options": kwargs}, self._codec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Database):
            return self._client == other._client and self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._client, self._name))

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "Database objects do not implement truth value testing or bool(). Please compare with None instead: "
            "database is not None"
        )

    def __repr__(self) -> str:
        return f"Database({self._client!r}, {self._name!r})"
