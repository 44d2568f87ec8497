"""TenantClient: what ``get_client(user_id)`` returns, a MongoClient-like view of one tenant's pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from ._calls import operations
from ._common import write_concern_document
from .cursor import CommandCursor
from .database import Database

if TYPE_CHECKING:
    from .manager import UserConnectionManager
    from .session import ClientSession


def _wc_field(wc: WriteConcern) -> dict[str, Any]:
    return {} if wc.is_server_default else {"writeConcern": write_concern_document(wc)}


@operations
class TenantClient:
    """The tenant's client. ``client[name]`` and ``get_database()`` work as on pymongo's MongoClient;
    every operation runs on this tenant's own pool."""

    __slots__ = ("_manager", "_scope", "_user_id")
    _database_class: type[Database] = Database

    def __init__(self, manager: UserConnectionManager, user_id: str, scoped: bool = True) -> None:
        self._manager = manager
        self._user_id = user_id
        # What this client's databases are held to: the manager's isolation scope, or nothing for a
        # platform client (``manager.get_platform_client``) or under isolation="off".
        self._scope = manager._scope if scoped else None

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def manager(self) -> UserConnectionManager:
        return self._manager

    @property
    def codec_options(self) -> CodecOptions:
        return self._manager.codec_options

    @property
    def read_preference(self) -> _ServerMode:
        """The manager's read preference: the default of this tenant's databases."""
        return self._manager.read_preference

    def get_database(
        self,
        name: str | None = None,
        codec_options: CodecOptions | None = None,
        read_preference: _ServerMode | None = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Database:
        """``name``, or by default the tenant's own database from the manager's template."""
        if name is None:
            name = self._manager._core.db_name(self._user_id)
        return self._database_class(self, name, codec_options, read_preference, write_concern, read_concern)

    get_default_database = get_database

    def __getitem__(self, name: str) -> Database:
        return self._database_class(self, name)

    def __getattr__(self, name: str) -> Database:
        if name.startswith("_"):
            raise AttributeError(
                f"TenantClient has no attribute {name!r}. "
                f"To access the {name} database, use client[{name!r}]."
            )
        return self._database_class(self, name)

    @property
    def admin(self) -> Database:
        return self._database_class(self, "admin")

    def list_database_names(self, session: ClientSession | None = None, comment: Any = None) -> list[str]:
        """The names of the tenant's databases that exist (under ``isolation="off"``, all of the
        deployment's, as pymongo's)."""
        reply = yield from self.admin._gen_command(
            "listDatabases", nameOnly=True, session=session, comment=comment
        )
        return [d["name"] for d in reply["databases"]]

    def list_databases(
        self, session: ClientSession | None = None, comment: Any = None, **kwargs: Any
    ) -> CommandCursor:
        """A cursor of the tenant's databases (``name``, ``sizeOnDisk``, ``empty``), as pymongo's
        ``MongoClient.list_databases``; ``kwargs`` (``filter``, ``nameOnly``...) go to the command."""
        admin = self.admin
        reply = yield from admin._gen_command("listDatabases", session=session, comment=comment, **kwargs)
        return admin._command_cursor_class(admin, None, admin.codec_options, first_batch=reply["databases"])

    def drop_database(
        self, name_or_database: str | Database, session: ClientSession | None = None, comment: Any = None
    ) -> None:
        """Drops one of the tenant's databases (pymongo's ``MongoClient.drop_database``)."""
        name = name_or_database.name if isinstance(name_or_database, Database) else name_or_database
        if not isinstance(name, str):
            raise TypeError(f"name_or_database must be an instance of str or a Database, not {type(name)}")
        db = self.get_database(name)
        wc = db._wc(session)
        (yield from db._gen_command("dropDatabase", session=session, comment=comment, **_wc_field(wc)))

    def start_session(
        self,
        causal_consistency: bool | None = None,
        default_transaction_options: Any = None,
        snapshot: bool | None = False,
    ) -> ClientSession:
        """A session on this tenant's client, for transactions (``with session.start_transaction():``).
        No network I/O, as pymongo's: the driver takes a server session from its pool."""
        from .session import session_options

        options = session_options(causal_consistency, default_transaction_options, snapshot)
        raw = self._manager._core.start_session(
            self._user_id, options.causal_consistency, bool(options.snapshot)
        )
        return self._session_class()(self, raw, options)  # type: ignore[no-any-return]

    @classmethod
    def _session_class(cls) -> type[Any]:
        from .session import ClientSession

        return ClientSession

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: a client-wide change stream sees every database of the deployment, other
        tenants' included. Watch the tenant's database (``get_database().watch()``) instead."""
        raise NotImplementedError(
            "TenantClient.watch (a cluster-wide change stream) is not supported by tenantpool: it would "
            "see other tenants' databases; use the tenant's Database.watch() or Collection.watch()"
        )

    def close(self) -> None:
        """Closes this tenant's pool; the next operation opens a new one."""
        self._manager.close_user_connection(self._user_id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TenantClient):
            return self._manager is other._manager and self._user_id == other._user_id
        return NotImplemented

    def __hash__(self) -> int:
        return hash((id(self._manager), self._user_id))

    def __repr__(self) -> str:
        return f"TenantClient(user_id={self._user_id!r}, manager={self._manager!r})"
