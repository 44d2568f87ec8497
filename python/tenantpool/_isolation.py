"""The isolation scope: which databases a tenant's handles may reach, decided before anything is sent.

Every way a handle can name a database goes through here: a ``Database`` checks its name when it is
made (``client[name]``, ``get_database``, ``__getattr__``...), both ``_run_command``s check the commands
they send (``admin`` takes only server-information commands, ``listDatabases`` is narrowed to the
tenant's own databases, ``renameCollection`` must stay inside them), and aggregations and change
streams check their pipelines for stages that name another database (``$out``/``$merge`` into,
``$lookup``/``$graphLookup``/``$unionWith`` from). A refusal is the server's own answer to an
unauthorized access, ``OperationFailure`` code 13, so an app's ``except`` clauses see what a
server-enforced refusal (per-tenant users) would give them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

from pymongo.errors import ConfigurationError, OperationFailure

logger = logging.getLogger("tenantpool")

#: What ``tenant_databases=`` takes: templates like ``"files_{user_id}"``, or a callable returning the
#: extra database names of a tenant.
TenantDatabases = Union[Sequence[str], Callable[[str], Iterable[str]], None]

UNAUTHORIZED = 13

# Commands that only describe the server (no tenant's data, no other tenant's activity): allowed on
# ``admin`` and anywhere else. Aliases as the server accepts them.
SERVER_INFO = frozenset(
    {
        "ping",
        "hello",
        "isMaster",
        "ismaster",
        "buildInfo",
        "buildinfo",
        "connectionStatus",
        "whatsmyuri",
        "listCommands",
    }
)

# Commands that reach beyond one database even when sent to the tenant's own: user and role
# management (a user made here could be granted roles on any database) and killing other clients'
# sessions.
_CROSS_DATABASE = frozenset(
    {
        "createUser",
        "updateUser",
        "dropUser",
        "dropAllUsersFromDatabase",
        "grantRolesToUser",
        "revokeRolesFromUser",
        "createRole",
        "updateRole",
        "dropRole",
        "dropAllRolesFromDatabase",
        "grantRolesToRole",
        "revokeRolesFromRole",
        "grantPrivilegesToRole",
        "revokePrivilegesFromRole",
        "killAllSessions",
        "killAllSessionsByPattern",
    }
)

# Commands that take a full namespace ("db.collection") rather than a collection of the database they
# are sent to.
_NAMESPACE_COMMANDS = frozenset({"dataSize", "splitVector", "checkShardingIndex"})

# Commands whose body can hold a pipeline (views are defined by one).
_PIPELINE_COMMANDS = frozenset({"aggregate", "create", "collMod"})

# Bounds what a process remembers to log once per (tenant, database) and the routes it counts.
_MAX_LOGGED = 10_000
ROUTES = ("database", "command", "pipeline", "dereference")


class IsolationScope:
    """One manager's rule for what its tenants may reach. ``None`` in place of a scope means
    ``isolation="off"``: no checks at all."""

    def __init__(self, own_database: Callable[[str], str], tenant_databases: TenantDatabases) -> None:
        self._own = own_database
        self._templates: tuple[str, ...] = ()
        self._extra: Callable[[str], Iterable[str]] | None = None
        if callable(tenant_databases):
            self._extra = tenant_databases
        elif tenant_databases is not None:
            if isinstance(tenant_databases, (str, bytes)) or not all(
                isinstance(t, str) and t.count("{user_id}") == 1 for t in tenant_databases
            ):
                raise ConfigurationError(
                    "tenant_databases must be a callable (user_id -> database names) or a list of "
                    "templates that each contain '{user_id}' once, e.g. ['files_{user_id}']"
                )
            self._templates = tuple(tenant_databases)
        self._lock = threading.Lock()
        self._refusals: dict[str, int] = dict.fromkeys(ROUTES, 0)
        self._logged: set[tuple[str, str]] = set()

    # -- what a tenant may reach ------------------------------------------------------------------

    def databases(self, user_id: str) -> frozenset[str]:
        """The tenant's databases: its template's, and those ``tenant_databases`` adds."""
        names = {self._own(user_id)}
        names.update(t.replace("{user_id}", user_id) for t in self._templates)
        if self._extra is not None:
            extra = self._extra(user_id)
            if isinstance(extra, str):
                raise ConfigurationError(
                    f"tenant_databases({user_id!r}) returned the str {extra!r}; return a set or list "
                    "of database names"
                )
            names.update(extra)
        return frozenset(names)

    def allows(self, user_id: str, name: str) -> bool:
        return name == self._own(user_id) or (
            bool(self._templates or self._extra) and name in self.databases(user_id)
        )

    # -- checks -----------------------------------------------------------------------------------

    def check_database(self, user_id: str, name: str) -> None:
        """Refuses a handle on a database outside the tenant's scope. ``admin`` is let through: only
        server-information commands run there (see ``check_command``)."""
        if name != "admin" and not self.allows(user_id, name):
            raise self.refuse("database", user_id, name, f"database {name!r}")

    def check_collection(self, user_id: str, db_name: str, name: str) -> None:
        """``admin``'s collections (its users, roles, the server's version) are no tenant's."""
        if db_name == "admin":
            raise self.refuse("database", user_id, "admin", f"collection 'admin.{name}'")

    def check_database_operation(self, user_id: str, db_name: str, what: str) -> None:
        """A database-level operation other than a command (aggregate, listCollections, watch)."""
        if db_name == "admin":
            raise self.refuse("database", user_id, "admin", f"{what} on the admin database")

    def check_command(self, user_id: str, db_name: str, command: Mapping[str, Any]) -> Mapping[str, Any]:
        """The command to send in place of ``command``: the same one, or ``listDatabases`` narrowed to
        the tenant's databases. Raises OperationFailure 13 for a command that would leave the scope."""
        name = next(iter(command), None)
        if not isinstance(name, str):
            return command  # the server will answer an empty or malformed command itself
        target = command.get("$db")
        if target is not None and target != db_name:
            raise self.refuse("command", user_id, str(target), f"{name!r} with $db {target!r}")
        if name in SERVER_INFO:
            return command
        if name == "listDatabases":
            return self._narrow_listing(user_id, command)
        if db_name == "admin":
            if name == "renameCollection":
                for key in ("renameCollection", "to"):
                    ns = command.get(key)
                    db = ns.split(".", 1)[0] if isinstance(ns, str) else None
                    if db is None or not self.allows(user_id, db):
                        raise self.refuse("command", user_id, str(db), f"renameCollection {key} {ns!r}")
                return command
            raise self.refuse("command", user_id, "admin", f"the command {name!r} on the admin database")
        if name in _CROSS_DATABASE:
            raise self.refuse(
                "command",
                user_id,
                db_name,
                f"the command {name!r} on {db_name!r}",
                "user and role management, and killing other clients' sessions, reach beyond the "
                "tenant's databases. Nothing was sent. Run it from platform code, through a manager "
                "with isolation='off'",
            )
        if name == "explain" and isinstance(command.get("explain"), Mapping):
            self.check_command(user_id, db_name, command["explain"])
        elif name in _PIPELINE_COMMANDS and command.get("pipeline") is not None:
            self.check_pipeline(user_id, command["pipeline"])
        elif name in _NAMESPACE_COMMANDS:
            ns = command.get(name)
            self._check_named(user_id, ns.split(".", 1)[0] if isinstance(ns, str) else ns, name)
        elif name == "mapReduce":
            out = command.get("out")
            if isinstance(out, Mapping) and out.get("db") is not None:
                self._check_named(user_id, out["db"], "mapReduce out.db")
        return command

    def check_pipeline(self, user_id: str, pipeline: Any) -> None:
        """Refuses a pipeline with a stage that names a database outside the tenant's scope."""
        for db, stage in _named_databases(pipeline):
            self._check_named(user_id, db, stage)

    def check_dereference(self, user_id: str, db_name: str) -> None:
        if not self.allows(user_id, db_name):
            raise self.refuse("dereference", user_id, db_name, f"a DBRef to database {db_name!r}")

    def _check_named(self, user_id: str, db: Any, what: str) -> None:
        if not isinstance(db, str) or not self.allows(user_id, db):
            raise self.refuse("pipeline", user_id, str(db), f"{what} naming database {db!r}")

    def _narrow_listing(self, user_id: str, command: Mapping[str, Any]) -> Mapping[str, Any]:
        own = {"name": {"$in": sorted(self.databases(user_id))}}
        narrowed = dict(command)
        given = command.get("filter")
        narrowed["filter"] = {"$and": [given, own]} if given else own
        return narrowed

    # -- refusals ---------------------------------------------------------------------------------

    def refuse(
        self, route: str, user_id: str, db_name: str, what: str, why: str | None = None
    ) -> OperationFailure:
        """The error for a refused access, counted under ``route`` and logged once per tenant and
        database."""
        if why is not None:
            pass
        elif db_name == "admin":
            why = (
                "database 'admin' is the server's: a tenant may run only server-information commands "
                "there (ping, hello, buildInfo, ...), list its own databases and rename its own "
                "collections. Nothing was sent. Platform code that needs more should use a manager "
                "with isolation='off'"
            )
        else:
            why = (
                f"database {db_name!r} is outside its isolation scope (its own database is "
                f"{self._own(user_id)!r}). Nothing was sent. To allow it, return {db_name!r} from the "
                "manager's tenant_databases=..., or use a manager with isolation='off' for platform code"
            )
        message = f"tenant {user_id!r} may not use {what}: {why}"
        with self._lock:
            self._refusals[route] += 1
            key = (user_id, db_name)
            first = key not in self._logged and len(self._logged) < _MAX_LOGGED
            if first:
                self._logged.add(key)
        if first:
            logger.warning("isolation: refused tenant %r access to database %r (%s)", user_id, db_name, what)
        details = {"ok": 0.0, "errmsg": message, "code": UNAUTHORIZED, "codeName": "Unauthorized"}
        return OperationFailure(message, UNAUTHORIZED, details)

    def refusals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refusals)

    def metrics_text(self) -> str:
        lines = [
            "# HELP tenantpool_isolation_refusals_total Accesses outside a tenant's isolation scope, "
            "refused before anything was sent, by route.",
            "# TYPE tenantpool_isolation_refusals_total counter",
        ]
        lines += [
            f'tenantpool_isolation_refusals_total{{route="{route}"}} {n}'
            for route, n in self.refusals().items()
        ]
        return "\n".join(lines) + "\n"


def _named_databases(pipeline: Any) -> Iterator[tuple[Any, str]]:
    """``(database, stage)`` for every database a pipeline's stages name, nested pipelines included.
    Only the places the server reads a database from are looked at, so a ``$match`` on a field
    called ``db`` is not mistaken for one."""
    if not isinstance(pipeline, Sequence) or isinstance(pipeline, (str, bytes)):
        return
    for stage in pipeline:
        if not isinstance(stage, Mapping):
            continue
        for op, spec in stage.items():
            if not isinstance(spec, Mapping):
                continue
            if op == "$out" and "db" in spec:
                yield spec["db"], "$out"
            elif op == "$merge" and isinstance(spec.get("into"), Mapping) and "db" in spec["into"]:
                yield spec["into"]["db"], "$merge"
            elif op in ("$lookup", "$graphLookup", "$unionWith"):
                source = spec.get("from") if op != "$unionWith" else spec.get("coll")
                if isinstance(source, Mapping) and "db" in source:
                    yield source["db"], op
                if "db" in spec:
                    yield spec["db"], op
                yield from _named_databases(spec.get("pipeline"))
            elif op == "$facet":
                for sub in spec.values():
                    yield from _named_databases(sub)
