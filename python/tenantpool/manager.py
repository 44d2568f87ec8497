"""UserConnectionManager: the design document's API over the Rust tenant registry."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from bson.codec_options import CodecOptions
from pymongo.errors import ConfigurationError, InvalidName
from pymongo.read_preferences import _ServerMode

from . import _core, _move
from ._calls import operations, twin
from ._isolation import IsolationScope, TenantDatabases
from ._options import split_options, with_credentials
from ._read_preference import manager_read_preference
from .client import TenantClient
from .credentials import CredentialsLike, TenantCredentials, check_roles, core_callback
from .database import Database
from .monitoring import command_publisher
from .placement import placement_router, placement_stats, router_of

logger = logging.getLogger("tenantpool")

# The document's defaults, except minPoolSize: it set 1, which keeps a socket open per idle tenant.
_DEFAULT_OPTIONS = {"minPoolSize": 0, "connectTimeoutMS": 5000, "serverSelectionTimeoutMS": 5000}

#: The design document's tiers and their pool sizes (per_user) or quotas (grouped, shared).
DEFAULT_TIER_POOL_SIZES = {"free": 3, "basic": 5, "premium": 10, "enterprise": 20}

# The design document's per-group pool for grouped, pymongo's default for shared.
_SHARED_POOL_SIZE = {"grouped": 50, "shared": 100}


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
    return value


@operations
class UserConnectionManager:
    """One isolated MongoDB connection pool per tenant, created on first use and closed when idle.

    ``get_database(user_id)`` returns a pymongo-compatible ``Database`` named from
    ``db_name_template`` (default ``user_{user_id}_db``). Each tenant has at most ``user_pool_size``
    operations in flight, so one tenant's load cannot exhaust another's share.

    ``strategy`` decides how tenants map onto driver clients: ``"per_user"`` (a client and pool per
    tenant), ``"grouped"`` (``groups`` shared clients, a tenant always in the same one) or ``"shared"``
    (one client). In every strategy a tenant waits for a slot of its own quota for at most
    ``waitQueueTimeoutMS`` and then gets ``WaitQueueTimeoutError``. ``tier_pool_sizes`` with ``tier_of``
    (or an overridden ``get_user_tier``) gives tenants of different tiers different shares.

    ``isolation="strict"`` (the default) keeps each tenant's handles inside its own databases: the
    template's, plus those ``tenant_databases`` adds (templates such as ``["files_{user_id}"]``, or a
    callable ``user_id -> names``). Anything else (another database by name, ``admin`` commands beyond
    server information, pipeline stages and commands naming another database) raises
    ``OperationFailure`` code 13 before anything is sent. ``isolation="off"`` is for platform code only.

    ``credentials`` (``per_user`` only) is a callable ``user_id -> TenantCredentials`` (or a
    ``(username, password)`` tuple, or a mapping): each tenant's client then authenticates as the
    tenant's own MongoDB user, so the server itself keeps the tenant in its database, whatever the
    client-side scope lets through. ``provision_tenant`` / ``deprovision_tenant`` create and drop
    those users with the connection string's (admin) credentials.

    ``max_server_connections`` bounds the server connections (pooled and monitoring) all of the
    manager's driver clients may open together. Default: 256, lowered at first contact to two fifths of
    what the server says it can hold. A new pool reserves its worst case; at the bound the least recently
    used idle pools are closed, and when none is idle the operation waits (FIFO) for at most
    ``waitQueueTimeoutMS`` (else ``serverSelectionTimeoutMS``), then gets ``WaitQueueTimeoutError``.

    ``spare_pools`` (``per_user`` without ``credentials`` or tiers): how many warm clients (connected,
    their server checked) are kept for the next new tenants, so a tenant's first operation does not wait
    for two handshakes. Default 2, made once the first tenant's pool is; each holds room in the budget
    (``get_stats()["budget"]["spare_pools"]``), gives it back when someone waits for room, and is closed after
    ``idle_timeout`` unused. ``0`` keeps none.
    """

    tier_pool_sizes: dict[str, int] | None = None
    _client_class: type[TenantClient] = TenantClient
    # Seconds the provisioning client stays open after its last use (tests shorten it).
    _admin_idle_timeout: float = 10.0
    # get_database may wait (up to a second, without the GIL) for the manager's first contact, so the
    # connection budget is known before it opens a pool; an event loop's thread must not.
    _ensure_waits = True

    def __init__(
        self,
        connection_string: str | None = None,
        user_pool_size: int = 10,
        idle_timeout: float | None = 3600,
        max_connections: int | None = None,
        db_name_template: str = "user_{user_id}_db",
        use_weak_ref: bool = False,
        *,
        strategy: str = "per_user",
        groups: int = 10,
        shared_pool_size: int | None = None,
        tier_pool_sizes: dict[str, int] | None = None,
        tier_of: Callable[[str], str] | None = None,
        slow_query_ms: int | None = None,
        isolation: str = "strict",
        tenant_databases: TenantDatabases = None,
        credentials: Callable[[str], CredentialsLike] | None = None,
        max_server_connections: int | None = None,
        spare_pools: int | None = None,
        deployments: dict[str, str] | None = None,
        placement: Callable[[str], str | None] | None = None,
        tier_deployments: dict[str, str] | None = None,
        catalog: str | None = None,
        default_deployment: str | None = None,
        **mongo_options: Any,
    ) -> None:
        if deployments is not None:
            if connection_string is not None:
                raise ConfigurationError("give either connection_string or deployments, not both")
            if not isinstance(deployments, dict) or not deployments:
                raise ConfigurationError("deployments must be a non-empty dict of name -> connection string")
            connection_string = deployments.get(default_deployment or next(iter(deployments)))
            if connection_string is None:
                raise ConfigurationError(
                    f"default_deployment {default_deployment!r} is not one of the deployments "
                    f"{sorted(deployments)}"
                )
        elif any(x is not None for x in (placement, tier_deployments, catalog, default_deployment)):
            raise ConfigurationError(
                "placement, tier_deployments, catalog and default_deployment need deployments="
            )
        if not isinstance(connection_string, str):
            raise TypeError(f"connection_string must be a str, not {type(connection_string).__name__}")
        _positive_int("user_pool_size", user_pool_size)
        _positive_int("groups", groups)
        if isolation not in ("strict", "off"):
            raise ConfigurationError(
                f"isolation must be 'strict' (a tenant reaches only its own databases) or 'off' "
                f"(platform code reaching any database), got {isolation!r}"
            )
        if strategy not in ("per_user", "grouped", "shared"):
            raise ConfigurationError(f"strategy must be 'per_user', 'grouped' or 'shared', got {strategy!r}")
        explicit_shared_size = shared_pool_size is not None
        if shared_pool_size is None:
            shared_pool_size = _SHARED_POOL_SIZE.get(strategy, 100)
        _positive_int("shared_pool_size", shared_pool_size)
        if slow_query_ms is not None:
            _positive_int("slow_query_ms", slow_query_ms)
        if max_server_connections is not None:
            _positive_int("max_server_connections", max_server_connections)
        if spare_pools is not None and (
            not isinstance(spare_pools, int) or isinstance(spare_pools, bool) or spare_pools < 0
        ):
            raise ConfigurationError(f"spare_pools must be an int >= 0 or None, got {spare_pools!r}")
        if tier_pool_sizes is not None:
            if not isinstance(tier_pool_sizes, dict):
                raise ConfigurationError("tier_pool_sizes must be a dict of tier name -> pool size")
            for tier, size in tier_pool_sizes.items():
                _positive_int(f"tier_pool_sizes[{tier!r}]", size)
            self.tier_pool_sizes = dict(tier_pool_sizes)
        if tier_of is not None and not callable(tier_of):
            raise ConfigurationError("tier_of must be a callable taking a user id and returning a tier name")
        self._tier_of = tier_of
        if idle_timeout is not None and (
            not isinstance(idle_timeout, (int, float)) or isinstance(idle_timeout, bool) or idle_timeout <= 0
        ):
            raise ConfigurationError(
                f"idle_timeout must be a positive number of seconds or None, got {idle_timeout!r}"
            )
        if max_connections is not None and (
            not isinstance(max_connections, int) or isinstance(max_connections, bool) or max_connections < 1
        ):
            raise ConfigurationError(
                f"max_connections must be a positive int or None, got {max_connections!r}"
            )
        if not isinstance(db_name_template, str):
            raise ConfigurationError("db_name_template must be a str containing '{user_id}'")
        # use_weak_ref is accepted for the document's signature; pools are owned by the registry and
        # closed by the idle reaper, which is what weak references were approximating.
        del use_weak_ref
        # pymongo's MongoClient(event_listeners=...): Python objects, kept out of the driver's options.
        event_listeners = None
        for key in [k for k in mongo_options if k.lower() == "event_listeners"]:
            event_listeners = mongo_options.pop(key)
        options = dict(_DEFAULT_OPTIONS)
        if idle_timeout is not None:
            options["maxIdleTimeMS"] = int(idle_timeout * 1000)
        options.update(mongo_options)
        # An explicit maxPoolSize keyword wins over user_pool_size, as it does in the document.
        wait_queue_timeout_ms = None
        for key in list(options):
            if key.lower() == "maxpoolsize":
                user_pool_size = _positive_int(key, options.pop(key))
            elif key.lower() in ("waitqueuetimeoutms", "wait_queue_timeout_ms"):
                wait_queue_timeout_ms = options.pop(key)
                if wait_queue_timeout_ms is not None:
                    _positive_int(key, wait_queue_timeout_ms)
        # The read preference is applied by the Python layer to each read, as pymongo applies it: the
        # driver gets none (see _read_preference).
        connection_string, self._read_preference = manager_read_preference(connection_string, options)
        uri_options, codec, uri_credentials = split_options(options)
        self._uri_options = uri_options
        self.strategy = strategy
        self.groups = groups if strategy == "grouped" else None
        self._codec: CodecOptions[Any] = codec
        self.user_pool_size: int = user_pool_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections

        # One publisher for every deployment's core: the listeners are the manager's.
        publisher = command_publisher(event_listeners, codec)

        def make_core(uri: str) -> Any:
            return _core.Manager(
                with_credentials(uri, uri_credentials),
                user_pool_size,
                None if idle_timeout is None else float(idle_timeout),
                max_connections,
                db_name_template,
                uri_options,
                strategy=strategy,
                groups=groups,
                shared_pool_size=shared_pool_size,
                wait_queue_timeout_ms=wait_queue_timeout_ms,
                pool_size_of=self._tier_callback() if self._uses_tiers() else None,
                slow_query_ms=slow_query_ms,
                credentials=None if credentials is None else core_callback(credentials),
                admin_idle_ms=int(self._admin_idle_timeout * 1000),
                max_server_connections=max_server_connections,
                publisher=publisher,
                spare_pools=spare_pools,
            )

        self._core: Any = make_core(connection_string)
        # Each deployment's connection string, with credentials (placement fills it; _move reads it).
        self._deployment_uris: dict[str, str] = {}
        budget = self._core.budget()
        if deployments is not None:
            self._core = placement_router(
                self, self._core, deployments, make_core, uri_credentials,
                placement, tier_deployments, catalog, default_deployment,
            )
        self.isolation = isolation
        self._scope: IsolationScope | None = (
            IsolationScope(self._core.db_name, tenant_databases) if isolation == "strict" else None
        )
        if self._scope is None:
            logger.warning(
                "UserConnectionManager for %s has isolation='off': its tenants' handles reach any "
                "database; use it for platform code only",
                self._core.redacted_uri,
            )
        logger.info(
            "UserConnectionManager for %s: pool_size=%s idle_timeout=%s max_connections=%s "
            "max_server_connections=%s",
            self._core.redacted_uri,
            user_pool_size,
            idle_timeout,
            max_connections,
            budget["max_server_connections"],
        )
        shared_clients = {"grouped": groups, "shared": 1}.get(strategy)
        if shared_clients and budget["shared_pool_size"] < shared_pool_size:
            # Only news to whoever asked for that size: the defaults are fitted silently (info).
            asked = explicit_shared_size or max_server_connections is not None
            logger.log(
                logging.WARNING if asked else logging.INFO,
                "%s shared client(s) of maxPoolSize %s do not fit max_server_connections=%s with their "
                "monitoring sockets: each gets maxPoolSize %s (see get_stats()['budget']); raise "
                "max_server_connections or lower groups to keep %s",
                shared_clients,
                shared_pool_size,
                budget["max_server_connections"],
                budget["shared_pool_size"],
                shared_pool_size,
            )

    @property
    def codec_options(self) -> CodecOptions[Any]:
        """The codec options of the connection string (``uuidRepresentation``, ``tz_aware``...): the default
        of every tenant's databases."""
        return self._codec

    @property
    def read_preference(self) -> _ServerMode:
        """The default read preference of every tenant's client (``readPreference``,
        ``readPreferenceTags`` and ``maxStalenessSeconds`` from the URI or keywords, or a
        ``read_preference=`` object), as pymongo's ``MongoClient.read_preference``."""
        return self._read_preference

    # -- tiers ----------------------------------------------------------------------------------------

    def get_user_tier(self, user_id: str) -> str | None:
        """The tenant's tier, or None for the default share. Override it, or pass ``tier_of``."""
        if self._tier_of is not None:
            return self._tier_of(user_id)
        return None

    def _uses_tiers(self) -> bool:
        overridden = type(self).get_user_tier is not UserConnectionManager.get_user_tier
        return overridden or self._tier_of is not None or self.tier_pool_sizes is not None

    def _tier_callback(self) -> Callable[[str], tuple[int, str]]:
        # A weak reference: the Rust core holds the callback, and a strong one would keep this manager
        # (and every tenant's pool) alive after the application dropped it.
        method = weakref.WeakMethod(self._pool_size_for)
        default = self.user_pool_size

        def pool_size_of(user_id: str) -> tuple[int, str]:
            bound = method()
            return bound(user_id) if bound is not None else (default, "default")

        return pool_size_of

    def _pool_size_for(self, user_id: str) -> tuple[int, str]:
        # Called by the core once per pool creation (not per operation).
        tier = self.get_user_tier(user_id)
        if tier is None:
            return self.user_pool_size, "default"
        sizes = self.tier_pool_sizes if self.tier_pool_sizes is not None else DEFAULT_TIER_POOL_SIZES
        return int(sizes.get(tier, self.user_pool_size)), str(tier)

    def _check_user(self, user_id: Any) -> str:
        if not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str, not {type(user_id).__name__}")
        if not user_id.isascii():
            # Lone surrogates (e.g. from json.loads) cannot even cross into Rust: refuse them here.
            raise InvalidName(
                f"tenant id {user_id!r} contains non-ASCII characters; tenant ids may contain only ASCII "
                "letters, digits, '_' and '-'"
            )
        return user_id

    def get_client(self, user_id: str) -> TenantClient:
        """The tenant's client, creating its pool on first use. No network round trip."""
        self._core.ensure(self._check_user(user_id), self._ensure_waits)
        return self._client_class(self, user_id)

    def get_platform_client(self, user_id: str) -> TenantClient:
        """The tenant's client with its handles **not** held to the isolation scope, for the platform's
        own code (a catalog database, migrations, monitoring): never hand it to request handlers.
        Operations still run on the tenant's pool and quota."""
        self._core.ensure(self._check_user(user_id), self._ensure_waits)
        return self._client_class(self, user_id, scoped=False)

    def get_database(self, user_id: str, db_name: str | None = None) -> Database:
        """The tenant's database: ``db_name``, or the template's name for this tenant."""
        user_id = self._check_user(user_id)
        if db_name is None:
            db_name = self._core.db_name(user_id)
        elif not isinstance(db_name, str):
            raise TypeError(f"db_name must be a str, not {type(db_name).__name__}")
        client = self._client_class(self, user_id)
        database = client._database_class(client, db_name)  # checks the isolation scope: before ensure
        self._core.ensure(user_id, self._ensure_waits)
        return database

    # -- tenant users (server-enforced isolation) -------------------------------------------------------

    def _user_args(
        self, user_id: str, password: str, roles: Any, username: str | None, source: str | None
    ) -> tuple[str, str, str, list[str], str | None]:
        user_id = self._check_user(user_id)
        username = user_id if username is None else username
        # Validated as the credentials callback's values are (non-empty str, no value in the message).
        TenantCredentials(username, password, source)
        return user_id, username, password, check_roles(roles), source

    @twin
    def provision_tenant(
        self,
        user_id: str,
        password: str,
        *,
        roles: Any = ("readWrite",),
        username: str | None = None,
        source: str | None = None,
    ) -> TenantCredentials:
        """Creates the tenant's MongoDB user (``username``, default the user id, defined in ``source``,
        default the tenant's database) with ``roles`` on the tenant's database only (``read``,
        ``readWrite``, ``dbAdmin``), using the connection string's credentials (they need
        ``userAdmin`` on the tenant's database, e.g. ``userAdminAnyDatabase``). Idempotent: an existing
        user gets the password and roles given, and the tenant's live pool is closed so that its next
        operation authenticates with the new password (rotation). Returns the credentials the
        ``credentials`` callback should return for this tenant."""
        user_id, username, password, roles, source = self._user_args(
            user_id, password, roles, username, source
        )
        created = self._core.provision(user_id, username, password, roles, source)
        self._log_provisioned(user_id, username, created)
        return TenantCredentials(username, password, source)

    @twin
    def deprovision_tenant(
        self, user_id: str, *, username: str | None = None, source: str | None = None
    ) -> bool:
        """Drops the tenant's MongoDB user and closes its pool: its next operation fails with
        ``OperationFailure`` code 18. The tenant's data stays. False if there was no such user."""
        user_id = self._check_user(user_id)
        username = user_id if username is None else username
        existed = self._core.deprovision(user_id, username, source)
        logger.info("dropped the MongoDB user %r of tenant %r (existed: %s)", username, user_id, existed)
        return bool(existed)

    @staticmethod
    def _log_provisioned(user_id: str, username: str, created: bool) -> None:
        verb = "created" if created else "updated (password and roles)"
        logger.info("MongoDB user %r of tenant %r %s", username, user_id, verb)

    def close_user_connection(self, user_id: str) -> bool:
        """Closes the tenant's pool (after its in-flight operations finish). False if it had none."""
        self._core.check_open()
        closed = self._core.close_tenant(self._check_user(user_id))
        if closed:
            logger.info("closed the pool of tenant %r", user_id)
        return bool(closed)

    def get_stats(self) -> dict[str, Any]:
        """The document's statistics, plus lifecycle counters under ``pools`` and the connection budget
        under ``budget`` (its bound and where it comes from, ``reserved``, ``in_use``, ``waiting``,
        ``closed_for_budget``, ...)."""
        self._core.check_open()
        users = self._core.tenants()
        return {
            "total_connections": len(users),
            "user_pool_size": self.user_pool_size,
            "idle_timeout": self.idle_timeout,
            "active_users": users,
            "total_potential_connections": len(users) * self.user_pool_size,
            "max_connections": self.max_connections,
            "strategy": self.strategy,
            "pools": self._core.counters(),
            "isolation": {
                "mode": self.isolation,
                "refusals": self._scope.refusals() if self._scope is not None else {},
            },
            "budget": self._core.budget(),
            **placement_stats(self._core),
        }

    def get_tier_stats(self) -> dict[str, dict[str, Any]]:
        """Live pools per tier (or group): count, capacity, operations in flight and waiting."""
        self._core.check_open()
        tiers: dict[str, dict[str, Any]] = {}
        for info in self._core.all_tenant_info():
            t = tiers.setdefault(
                info["tier"],
                {"pools": 0, "capacity": 0, "in_flight": 0, "waiting": 0, "operations": 0, "errors": 0},
            )
            t["pools"] += 1
            t["capacity"] += info["pool_size"]
            for key in ("in_flight", "waiting", "operations", "errors"):
                t[key] += info[key]
        return tiers

    def metrics_text(self, top: int = 10) -> str:
        """Prometheus text exposition: totals, per tier/group series, and the ``top`` busiest tenants."""
        self._core.check_open()
        text: str = self._core.metrics_text(top)
        return text + self._scope.metrics_text() if self._scope is not None else text

    def get_user_stats(self, user_id: str) -> dict[str, Any] | None:
        """The tenant's pool: size, operations and errors, leases in use, age and idle time."""
        self._core.check_open()
        info: dict[str, Any] | None = self._core.tenant_info(self._check_user(user_id))
        return info

    # -- deployments (see placement) ----------------------------------------------------------------

    def deployment_of(self, user_id: str) -> str:
        """The name of the deployment the tenant lives on (``deployments=`` managers only)."""
        return router_of(self).deployment_of(self._check_user(user_id))

    @twin
    def place_tenant(self, user_id: str, deployment: str) -> None:
        """Records in the tenant catalog that the tenant lives on ``deployment`` (it moves no data: for
        a new tenant, or one whose data is already there). Every process follows."""
        router_of(self).place(self._check_user(user_id), deployment)

    @twin
    def move_tenant(
        self,
        user_id: str,
        to: str,
        *,
        keep_source: bool = False,
        timeout: float = 60.0,
        copy_batch_docs: int = _move.DEFAULT_COPY_BATCH_DOCS,
        copy_share: float = _move.DEFAULT_COPY_SHARE,
    ) -> dict[str, Any]:
        """Moves the tenant's databases to deployment ``to`` while it stays online (see ``_move``): they
        are copied while it serves, then its operations pause (bounded, in every process) while the last
        changes are replayed and the copy verified, and resume on ``to``. Returns a report (documents,
        bytes, ``replayed``, ``copy_seconds``, ``pause_seconds``, ``steps``). ``timeout`` bounds the whole
        move. On failure the tenant stays where it was and ``TenantMoveError`` says what failed.

        ``copy_batch_docs`` (documents per batch) and ``copy_share`` (the share of the time, in (0, 1],
        the copy may work while the tenant serves: it rests between batches) bound what the copy takes
        from the other tenants; 1.0 copies flat out. Neither applies while the tenant is paused."""
        return _move.move_tenant(self, user_id, to, keep_source, timeout, copy_batch_docs, copy_share)

    def recover_move(self, user_id: str) -> str:
        """Ends a move left unfinished by a process that died (its catalog entry still "moving", its
        heartbeat stale): the tenant serves again on its source. Returns the source's name. A partial copy
        may remain on the target: drop it before moving the tenant there again."""
        return _move.recover_move(self, self._check_user(user_id))

    @twin
    def close_all(self) -> None:
        """Closes every tenant's pool (each once its in-flight operations finish) and every shared
        client, as the design document's ``close_all``: ``get_stats()`` then shows no connections, and
        the manager stays usable (a tenant's next operation opens its pool again). For a permanent
        shutdown, ``close()``. A no-op on a closed manager."""
        if not self._core.closed:
            n = self._core.close_pools()
            logger.info("closed all %d tenant pools", n)

    @twin
    def close(self) -> None:
        """Closes every pool for good, as pymongo's ``MongoClient.close``: any later call but
        ``close``/``close_all`` raises ``InvalidOperation``. Leaving a ``with`` block calls it. Safe to
        call twice."""
        if not self._core.closed:
            n = self._core.close()
            logger.info("closed the manager and its %d tenant pools", n)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called: every later call but ``close``/``close_all`` raises
        ``InvalidOperation``."""
        return bool(self._core.closed)

    def __enter__(self) -> UserConnectionManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._core.redacted_uri!r}, user_pool_size={self.user_pool_size}, "
            f"idle_timeout={self.idle_timeout!r}, max_connections={self.max_connections!r}, "
            f"strategy={self.strategy!r})"
        )


__all__ = ["UserConnectionManager"]
