"""What every Collection is before its operations: identity, options, and the plumbing each operation
uses to reach the core (read/write concerns, routing, the generic command and write-command paths)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from pymongo.errors import (
    ConfigurationError,
    InvalidName,
    OperationFailure,
    WriteConcernError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from . import _read_preference
from ._base import BaseObject
from ._calls import Execute, Operation
from ._common import (
    MAX_BSON_SIZE,
    allowed_error,
    check_session,
    codec_for_replies,
    core_session,
    decode,
    encode,
    write_concern_document,
    write_concern_error,
)
from .bulk import (
    COMMAND_OVERHEAD,
    DELETE,
    INSERT,
    UPDATE,
    check_write_response,
    document_too_large,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from .collection import Collection
    from .database import Database

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession

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


def numbered_by_the_driver(session: ClientSession | None) -> bool:
    """Whether a single-document write must take the driver's typed operation: in an explicit session
    outside a transaction, pymongo numbers such a write with the session's next ``txnNumber`` and retries
    it once under that number. The driver keeps a session's number to itself, so a command sent in the
    session could only go unnumbered (not retryable), or numbered by tenantpool, clashing with the
    numbers the driver gives the session's other writes on the same ``lsid`` (the server refuses a number
    lower than the last it saw). Every other write is pymongo's own command: outside a session the core
    numbers it in a session of its own (``retry.rs``), in a transaction the driver numbers it."""
    return session is not None and not session.in_transaction


def _bool_or_none(value: Any) -> bool:
    """Whether the driver's options can hold ``value`` (pymongo sends any value; the server judges)."""
    return value is None or isinstance(value, bool)


def _mappings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) for v in value)


class CollectionBase(BaseObject):
    """The identity of a tenant's collection and the plumbing its operations share."""

    def __init__(
        self,
        database: Database,
        name: str,
        create: bool | None = False,
        codec_options: CodecOptions[Any] | None = None,
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
        self._codec: CodecOptions[Any] = codec_options or database.codec_options
        self._read_preference: _ServerMode = _read_preference.check(
            read_preference or database.read_preference
        )
        self._write_concern: WriteConcern = write_concern or database.write_concern
        self._read_concern: ReadConcern = read_concern or database.read_concern
        self._core = database._core
        self._user_id: str = database._client.user_id
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
        """The name of this collection (``posts``, ``posts.comments`` for a sub-collection)."""
        return self._name

    @property
    def full_name(self) -> str:
        """``<database>.<collection>``, as pymongo's ``full_name``."""
        return f"{self._db_name}.{self._name}"

    @property
    def database(self) -> Database:
        """The database this collection is of (an ``AsyncDatabase`` for an ``AsyncCollection``)."""
        return self._database

    def _route(self, spec: dict[str, Any], session: ClientSession | None) -> dict[str, Any]:
        """Puts a read's read preference into its spec (refusing a non-primary one in a transaction)."""
        _read_preference.route(spec, self._read_preference_for(session), session)
        return spec

    def __getattr__(self, name: str) -> Self:
        if name.startswith("_"):
            full = f"{self._name}.{name}"
            raise AttributeError(
                f"Collection has no attribute {name!r}. To access the {full} collection, use "
                f"database[{full!r}]."
            )
        return self[name]

    def __getitem__(self, name: str) -> Self:
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
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        """The sub-collection ``<this name>.<name>``, with these options instead of this collection's
        (pymongo's ``Collection.get_collection``). No I/O."""
        return self._database.get_collection(
            f"{self._name}.{name}", codec_options, read_preference, write_concern, read_concern
        )

    def with_options(
        self,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Self:
        """A copy of this collection with the options given replaced (pymongo's ``with_options``). No I/O."""
        return type(self)(
            self._database,
            self._name,
            False,
            codec_options or self._codec,
            read_preference or self._read_preference,
            write_concern or self._write_concern,
            read_concern or self._read_concern,
        )

    def _identity(self) -> tuple[Any, ...]:
        return (self._database, self._name)

    def __repr__(self) -> str:
        return f"Collection({self._database!r}, {self._name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"'Collection' object is not callable. If you meant to call the '{self._name}' "
            f"method on a 'Collection' object it is failing because no such method exists."
        )

    # -- plumbing -------------------------------------------------------------------------------------

    def _rc(self, session: ClientSession | None) -> ReadConcern | None:
        """The read concern of an operation: inside a transaction, the transaction's."""
        check_session(session)
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
        codec: CodecOptions[Any] | None = None,
        session: ClientSession | None = None,
    ) -> Operation[Any]:
        """Runs one of the Rust driver's typed operations."""
        spec["collection"] = self._name
        codec = codec or self._codec
        core_sess = core_session(session, self._user_id)
        try:
            reply = yield Execute(
                self._core,
                self._user_id,
                self._db_name,
                op,
                encode(spec, False, codec),
                docs,
                session=core_sess,
            )
        except WriteConcernError as exc:
            details = exc.details or {}
            error = write_concern_error(str(details.get("errmsg", exc)), exc.code, details)
            if type(exc) is WriteConcernError and type(error) is not WriteConcernError:
                raise error from None
            raise
        return None if reply is None else decode(reply, codec)

    def _command(
        self,
        command: dict[str, Any],
        codec: CodecOptions[Any] | None = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        collation: Mapping[str, Any] | None = None,
        allowable_errors: Sequence[str | int] | None = None,
        parse_write_concern_error: bool = False,
        db_name: str | None = None,
        session: ClientSession | None = None,
        read_preference: _ServerMode | None = None,
        retryable: bool = False,
        read: bool = False,
    ) -> Operation[Any]:
        """A command as pymongo's ``Collection._command`` sends it: concerns and collation added, some
        errors tolerated (their reply returned instead). On the primary unless a ``read_preference`` is
        given; ``retryable`` and ``read`` as in ``_run_command``."""
        if write_concern is not None and not write_concern.is_server_default:
            command["writeConcern"] = write_concern_document(write_concern)
        if read_concern is not None and read_concern.level is not None:
            command["readConcern"] = read_concern.document
        if collation is not None:
            command["collation"] = collation
        try:
            reply = yield from self._run_command(
                command,
                codec,
                session,
                read_preference,
                db_name=db_name,
                retryable=retryable,
                read=read,
                write=write_concern is not None,
            )
        except OperationFailure as exc:
            if allowed_error(exc, allowable_errors):
                return exc.details
            raise
        if parse_write_concern_error and reply.get("writeConcernError"):
            wce = reply["writeConcernError"]
            raise write_concern_error(wce.get("errmsg"), wce.get("code"), wce)
        return reply

    def _write_command(
        self,
        op_type: int,
        op: Any,
        bypass_document_validation: Any = None,
        let: Any = None,
        comment: Any = None,
        session: ClientSession | None = None,
    ) -> Operation[dict[str, Any] | None]:
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
        reply: dict[str, Any] = yield from self._run_command(
            cmd,
            codec_for_replies(self._codec),
            session=session,
            retryable=wc.acknowledged and single,
            write=True,
        )
        if not wc.acknowledged:
            return None
        check_write_response(reply)
        return reply
