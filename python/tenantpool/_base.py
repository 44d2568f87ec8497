"""What Database and Collection share (pymongo's ``common.BaseObject``, and more): their options, the write
concern and read preference an operation gets from them and its session, the generic command, identity,
and pymongo's refusals of truth testing and iteration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from bson.codec_options import CodecOptions
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import DEFAULT_WRITE_CONCERN, WriteConcern

from . import _read_preference
from ._calls import Execute, Operation
from ._common import check_session, core_session, decode, encode

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._core import Manager
    from ._isolation import IsolationScope

    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession


class BaseObject:
    """A database or collection of one tenant, with its own codec options, read preference, write concern
    and read concern (by default those of the database, client or manager it comes from)."""

    # "Collection" or "Database": pymongo's messages name the sync class, the async twins' included.
    _kind: ClassVar[str]

    _name: str
    _db_name: str
    _codec: CodecOptions[Any]
    _read_preference: _ServerMode
    _write_concern: WriteConcern
    _read_concern: ReadConcern
    _core: Manager
    _user_id: str
    # None when the manager was made with isolation="off" (or for a platform client).
    _scope: IsolationScope | None

    @property
    def codec_options(self) -> CodecOptions[Any]:
        """The codec options its replies are decoded with."""
        return self._codec

    @property
    def write_concern(self) -> WriteConcern:
        """Its write concern (none of its own: the connection string's)."""
        return self._write_concern

    @property
    def read_concern(self) -> ReadConcern:
        """Its read concern (none of its own: the connection string's)."""
        return self._read_concern

    @property
    def read_preference(self) -> _ServerMode:
        """Its read preference (none of its own: the manager's)."""
        return self._read_preference

    def _read_preference_for(self, session: ClientSession | None) -> _ServerMode:
        """The read preference of a read: inside a transaction, the transaction's (pymongo's rule)."""
        return _read_preference.for_session(self._read_preference, session)

    def _wc(self, session: ClientSession | None) -> WriteConcern:
        """The write concern of an operation: none of its own inside a transaction (pymongo's rule)."""
        check_session(session)
        if session is not None and session.in_transaction:
            return DEFAULT_WRITE_CONCERN
        return self._write_concern

    def _run_command(
        self,
        command: Mapping[str, Any],
        codec: CodecOptions[Any] | None = None,
        session: ClientSession | None = None,
        read_preference: _ServerMode | None = None,
        *,
        db_name: str | None = None,
        retryable: bool = False,
        read: bool = False,
        write: bool = False,
    ) -> Operation[Any]:
        """Sends ``command`` as is (the core's generic op) to this database, or ``db_name``, and returns
        the server's reply; on the primary unless a ``read_preference`` is given. ``retryable``: the
        command is a write pymongo would retry (outside a session, the core then does). ``read``: a read
        that takes a read concern, which the core retries as pymongo retries reads (retryReads) and, in a
        causally consistent session, orders after the session's operation time. ``write``: a write
        command, which the core gives the connection string's write concern if it carries none (outside a
        transaction), as pymongo's client-level write concern reaches every write."""
        codec = codec or self._codec
        db_name = db_name or self._db_name
        if self._scope is not None:
            command = self._scope.check_command(self._user_id, db_name, command)
        doc: dict[str, Any] = {"command": command}
        if read:
            doc["retryable"] = doc["causal"] = True
        if write:
            doc["write"] = True
        if read_preference is not None:
            _read_preference.route(doc, read_preference, session)
        spec = encode(doc, False, codec)
        core_sess = core_session(session, self._user_id)
        op = "retryable_write" if retryable and core_sess is None else "command"
        reply = yield Execute(self._core, self._user_id, db_name, op, spec, session=core_sess)
        return decode(reply, codec)

    # -- identity, and what pymongo refuses -----------------------------------------------------------

    def _identity(self) -> tuple[Any, ...]:
        """What equal objects have equal: (client, name) for a database, (database, name) for a
        collection."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseObject) and other._kind == self._kind:
            return self._identity() == other._identity()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self._identity())

    def __bool__(self) -> bool:
        raise NotImplementedError(
            f"{self._kind} objects do not implement truth value testing or bool(). Please compare with None "
            f"instead: {self._kind.lower()} is not None"
        )

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> None:
        """Not iterable: ``TypeError``, as in pymongo."""
        raise TypeError(f"'{self._kind}' object is not iterable")

    next = __next__
