"""TenantClient: what ``get_client(user_id)`` returns, a MongoClient-like view of one tenant's pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bson.codec_options import CodecOptions
from pymongo.client_options import ClientOptions
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.topology_description import TopologyDescription
from pymongo.write_concern import WriteConcern

from . import _topology
from ._calls import Operation, operation, operations, run_sync, same_twin
from ._common import write_concern_document
from .cursor import CommandCursor
from .database import Database
from .session import AsyncClientSession, ClientSession, _Session

if TYPE_CHECKING:
    from .manager import UserConnectionManager


T = TypeVar("T")
Address = tuple[str, int]


def _wc_field(wc: WriteConcern) -> dict[str, Any]:
    return {} if wc.is_server_default else {"writeConcern": write_concern_document(wc)}


def _hosts(reply: dict[str, Any], *fields: str) -> set[Address]:
    hosts: set[Address] = set()
    for field in fields:
        value = reply.get(field) or ()
        hosts.update(_topology._address(h) for h in ([value] if isinstance(value, str) else value))
    return hosts


def _from_hello(doc: str, extract: Callable[[TenantClient, dict[str, Any]], Any]) -> Any:
    """A property of pymongo's MongoClient answered by a ``hello`` on the tenant's pool: blocking on
    ``TenantClient``, awaitable on ``AsyncTenantClient`` (as pymongo's async client has them)."""

    def get(self: TenantClient) -> Any:
        return self._run(self._gen_from_hello(extract))

    return property(get, doc=doc)


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
        """The tenant this client is of."""
        return self._user_id

    @property
    def manager(self) -> UserConnectionManager:
        """The manager whose pool this client uses."""
        return self._manager

    @property
    def codec_options(self) -> CodecOptions[Any]:
        """The manager's codec options: the default of this tenant's databases."""
        return self._manager.codec_options

    @property
    def read_preference(self) -> _ServerMode:
        """The manager's read preference: the default of this tenant's databases."""
        return self._manager.read_preference

    def get_database(
        self,
        name: str | None = None,
        codec_options: CodecOptions[Any] | None = None,
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
        """The ``admin`` database, through this tenant's pool (under isolation: server-information commands
        only)."""
        return self._database_class(self, "admin")

    # -- pymongo's MongoClient surface, for one tenant --------------------------------------------------

    HOST = "localhost"
    PORT = 27017

    @staticmethod
    def _run(operation: Operation[T]) -> Any:
        # Any: the async client's (an awaitable) overrides it.
        return run_sync(operation)

    def _gen_from_hello(self, extract: Callable[[TenantClient, dict[str, Any]], T]) -> Operation[T]:
        reply = yield from self.admin._gen_command("hello")
        _topology.describe(self._manager, reply, self._user_id)
        return extract(self, reply)

    address = _from_hello(
        "(host, port) of the primary, standalone or mongos this tenant's operations go to.",
        lambda self, r: _topology.address(_topology.last_described(self._manager, self._user_id)),
    )
    primary = _from_hello(
        "(host, port) of the replica set's primary, or None.",
        lambda self, r: _topology._address(r["primary"]) if r.get("primary") else None,
    )
    secondaries = _from_hello(
        "The replica set's data-bearing members other than the primary, as the primary's ``hello`` "
        "lists them (pymongo's lists those its monitor has seen as secondaries).",
        lambda self, r: _hosts(r, "hosts", "passives") - _hosts(r, "primary"),
    )
    arbiters = _from_hello("The replica set's arbiters.", lambda self, r: _hosts(r, "arbiters"))
    is_primary = _from_hello(
        "Whether the server this tenant writes to is a writable primary (or a standalone).",
        lambda self, r: bool(r.get("isWritablePrimary", r.get("ismaster"))),
    )
    is_mongos = _from_hello(
        "Whether this tenant is connected to a mongos.", lambda self, r: r.get("msg") == "isdbgrid"
    )
    nodes = _from_hello(
        "Every member the deployment names (hosts, passives, arbiters), or the seeds.",
        lambda self, r: frozenset(
            _hosts(r, "hosts", "passives", "arbiters") or _topology.seeds(self._manager, self._user_id)
        ),
    )

    @property
    def topology_description(self) -> TopologyDescription:
        """pymongo's ``TopologyDescription`` as the last ``hello`` of any of the manager's tenants (on
        this tenant's deployment, for a manager of several) described it (no round trip, as in pymongo)."""
        return _topology.last_described(self._manager, self._user_id)

    @property
    def options(self) -> ClientOptions:
        """pymongo's ``ClientOptions`` of the manager's connection string, credentials left out (they
        stay in the core); ``options.pool_options.max_pool_size`` is this tenant's share (its tier's
        pool size in per_user, its quota in grouped and shared)."""
        return _topology.client_options(self._manager, self._user_id)

    @property
    def write_concern(self) -> WriteConcern:
        """The connection string's write concern: the default of this tenant's databases."""
        return self.options.write_concern

    @property
    def read_concern(self) -> ReadConcern:
        """The connection string's read concern: the default of this tenant's databases."""
        return self.options.read_concern

    def eq_props(self) -> tuple[tuple[Address, ...], str | None, str | None, str]:
        """What makes two clients equal: the manager's seeds, replica set and the tenant."""
        parsed = _topology.parsed_uri(self._manager, self._user_id)
        return (
            tuple(sorted(_topology.seeds(self._manager, self._user_id))),
            parsed["options"].get("replicaSet"),
            None,
            self._user_id,
        )

    def _gen_server_info(self, session: _Session | None = None) -> Operation[dict[str, Any]]:
        """The server's ``buildInfo``, as pymongo's ``MongoClient.server_info``."""
        return (yield from self.admin._gen_command("buildinfo", session=session))

    server_info = operation(_gen_server_info)

    def bulk_write(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: a client-level bulk write (MongoDB 8.0) spans namespaces. Use
        ``Collection.bulk_write`` on the tenant's collections."""
        raise NotImplementedError(
            "TenantClient.bulk_write (MongoDB 8.0's client-level bulk write) is not supported by "
            "tenantpool; use Collection.bulk_write on the tenant's collections"
        )

    def append_metadata(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: the manager's clients are shared by its tenants. Pass ``appName=...`` to the
        manager instead."""
        raise NotImplementedError(
            "TenantClient.append_metadata is not supported by tenantpool: driver metadata is the "
            "manager's; pass appName=... to UserConnectionManager"
        )

    def __iter__(self) -> TenantClient:
        return self

    def __next__(self) -> None:
        """Clients are not iterable: ``TypeError``, as in pymongo."""
        raise TypeError("'TenantClient' object is not iterable")

    next = __next__

    def _gen_list_database_names(
        self, session: _Session | None = None, comment: Any = None
    ) -> Operation[list[str]]:
        """The names of the tenant's databases that exist (under ``isolation="off"``, all of the
        deployment's, as pymongo's)."""
        reply = yield from self.admin._gen_command(
            "listDatabases", nameOnly=True, session=session, comment=comment
        )
        return [d["name"] for d in reply["databases"]]

    list_database_names = operation(_gen_list_database_names)

    def _gen_list_databases(
        self, /, session: _Session | None = None, comment: Any = None, **kwargs: Any
    ) -> Operation[CommandCursor]:
        """A cursor of the tenant's databases (``name``, ``sizeOnDisk``, ``empty``), as pymongo's
        ``MongoClient.list_databases``; ``kwargs`` (``filter``, ``nameOnly``...) go to the command."""
        admin = self.admin
        reply = yield from admin._gen_command("listDatabases", session=session, comment=comment, **kwargs)
        return admin._command_cursor_class(admin, None, admin.codec_options, first_batch=reply["databases"])

    list_databases = operation(_gen_list_databases)

    def _gen_drop_database(
        self, name_or_database: str | Database, session: _Session | None = None, comment: Any = None
    ) -> Operation[None]:
        """Drops one of the tenant's databases (pymongo's ``MongoClient.drop_database``)."""
        name = name_or_database.name if isinstance(name_or_database, Database) else name_or_database
        if not isinstance(name, str):
            raise TypeError(f"name_or_database must be an instance of str or a Database, not {type(name)}")
        db = self.get_database(name)
        wc = db._wc(session)
        (yield from db._gen_command("dropDatabase", session=session, comment=comment, **_wc_field(wc)))

    drop_database = operation(_gen_drop_database)

    @same_twin(AsyncClientSession)
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
        session: ClientSession = self._session_class()(self, raw, options)
        return session

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
