"""Tenants on several deployments: where each tenant lives, and the router standing in for the core.

A manager given ``deployments={"main": uri, "eu": uri2}`` builds one core manager per deployment (each
with its own pools, quotas, tiers, connection budget and reaper) and puts a ``Router`` where the single
core would be (``manager._core``). The handles call ``core.execute(tenant, ...)`` as they always did; the
router resolves the tenant's deployment **per call**, so a handle obtained before a move reaches the new
deployment after it, and a tenant being moved waits at its gate (bounded) before any call is sent.

Where a tenant lives, first match wins: the tenant catalog (``catalog="main"``: the collection
``tenantpool_catalog.tenants`` on that deployment, shared by every process), the ``placement`` callable,
the ``tier_deployments`` mapping (by ``get_user_tier``), then ``default_deployment``. A tenant's place is
resolved once per process and cached; the catalog's change stream keeps the cache fresh (``_catalog``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pymongo.errors import (
    ConfigurationError,
    InvalidOperation,
    WaitQueueTimeoutError,
)

from ._placement_metrics import _sum_dicts, merge_metrics
from ._routed import (
    _TXN_ABORTED,
    RoutedChangeStream,
    RoutedCursor,
    RoutedSession,
    TenantMovedError,
    TenantMoveError,
    _txn_aborted,
)

# Public here, where users import them from.
TenantMovedError.__module__ = TenantMoveError.__module__ = __name__

#: How long an operation of a tenant being moved waits at its gate before WaitQueueTimeoutError.
DEFAULT_MOVE_WAIT = 30.0


class Placement:
    """Where each tenant lives (see the module docstring for the order)."""

    def __init__(
        self,
        names: list[str],
        default: str | None,
        placement: Callable[[str], str | None] | None,
        tier_deployments: Mapping[str, str] | None,
        tier_of: Callable[[str], str | None],
    ) -> None:
        if default is None:
            default = names[0]
        if default not in names:
            raise ConfigurationError(
                f"default_deployment {default!r} is not one of the deployments {sorted(names)}"
            )
        if placement is not None and not callable(placement):
            raise ConfigurationError(
                "placement must be a callable taking a user id and returning a deployment name"
            )
        if tier_deployments is not None and not isinstance(tier_deployments, Mapping):
            raise ConfigurationError("tier_deployments must be a dict of tier name -> deployment name")
        self.default = default
        self._callable = placement
        self._tiers = dict(tier_deployments or {})
        self._tier_of = tier_of

    def static(self, user_id: str) -> tuple[str, str]:
        """The tenant's deployment without the catalog, and what decided it."""
        if self._callable is not None:
            name = self._callable(user_id)
            if name is not None:
                return str(name), "placement"
        if self._tiers:
            tier = self._tier_of(user_id)
            if tier is not None and tier in self._tiers:
                return self._tiers[tier], f"tier {tier!r}"
        return self.default, "default"


class _Gate:
    """Closed while the tenant moves. Its waiters (a sync caller's event, an async caller's future on its
    loop) are released in their order of arrival (FIFO) when it opens."""

    def __init__(self) -> None:
        self._open = False
        self._lock = threading.Lock()
        self._waiters: deque[Any] = deque()

    def _leave(self, waiter: Any) -> bool:
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            return self._open  # opened just as the wait timed out: it may go

    def wait(self, timeout: float) -> bool:
        with self._lock:
            if self._open:
                return True
            event = threading.Event()
            self._waiters.append(event)
        return event.wait(max(timeout, 0.0)) or self._leave(event)

    async def wait_async(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self._open:
                return True
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, max(timeout, 0.0))
        except asyncio.TimeoutError:
            return self._leave(waiter)
        except BaseException:  # cancelled: out of the queue
            self._leave(waiter)
            raise
        return True

    def open(self) -> None:
        with self._lock:
            self._open = True
            waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if isinstance(waiter, threading.Event):
                waiter.set()
                continue
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(_resolve_future, future)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                pass


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class TenantRoute:
    """One tenant's place: its deployment, its move count (``epoch``) and, while it moves, its gate."""

    __slots__ = ("deployment", "epoch", "gate", "inflight", "moving_to", "sessions", "source", "stale")

    def __init__(self, deployment: str, epoch: int, source: str) -> None:
        self.deployment = deployment
        self.epoch = epoch
        self.source = source
        self.gate: _Gate | None = None
        self.inflight = 0
        self.moving_to: str | None = None
        self.stale = False
        # The tenant's live sessions (weakly): a move aborts their open transactions.
        self.sessions: weakref.WeakSet[RoutedSession] = weakref.WeakSet()


class Router:
    """Stands in for ``_core.Manager`` (same methods) over one core per deployment."""

    def __init__(
        self, cores: dict[str, Any], placement: Placement, move_wait: float = DEFAULT_MOVE_WAIT
    ) -> None:
        self.cores = cores
        self.placement = placement
        self.move_wait = move_wait
        self.catalog: Any = None  # a _catalog.Catalog, set by the manager when it has one
        self._routes: dict[str, TenantRoute] = {}
        self._catalog_changes = 0
        # Operations that waited at a tenant's gate (a move), and those that gave up (approximate counts:
        # no lock, they are statistics).
        self.gate_waits = 0
        self.gate_timeouts = 0
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        # The template is the same on every core: the default's method itself, called per request.
        self.db_name: Callable[[str], str] = cores[placement.default].db_name

    # -- where a tenant lives ---------------------------------------------------------------------------

    def route(self, tenant: str) -> TenantRoute:
        r = self._routes.get(tenant)
        if r is not None and not r.stale:
            return r
        while True:
            seen = self._catalog_changes
            entry = self.catalog.lookup(tenant) if self.catalog is not None else None
            if entry is not None:
                r = TenantRoute(str(entry["deployment"]), int(entry.get("epoch", 0)), "catalog")
                if entry.get("state") == "moving":
                    # Another process is moving it: wait here until the catalog says where it went.
                    r.gate = _Gate()
            else:
                name, source = self.placement.static(tenant)
                r = TenantRoute(name, 0, source)
            with self._lock:
                cached = self._routes.get(tenant)
                if cached is not None and not cached.stale:
                    return cached
                # A catalog change seen since the lookup may be this tenant's, and found nothing cached
                # to update: look again rather than cache what may be stale.
                if seen != self._catalog_changes:
                    continue
                if cached is None:
                    self._routes[tenant] = r
                    return r
                # Refreshed in place: the tenant's cursors, streams and sessions hold this very route.
                cached.deployment, cached.epoch, cached.source = r.deployment, r.epoch, r.source
                if r.gate is not None and cached.gate is None:
                    cached.gate = r.gate
                cached.stale = False
                return cached

    def after_fork(self) -> None:
        # Another thread may have held the lock at the fork: the child's only thread needs a fresh one.
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)

    def catalog_changed(self) -> None:
        with self._lock:
            self._catalog_changes += 1

    def cached(self, tenant: str) -> TenantRoute | None:
        return self._routes.get(tenant)

    def forget(self, tenant: str) -> None:
        """The tenant's place is to be looked up again (its catalog entry went away)."""
        with self._lock:
            r = self._routes.get(tenant)
            if r is not None and r.gate is None:
                r.stale = True

    def forget_all(self) -> None:
        """Every place is to be looked up again (the catalog's changes may have been missed). Routes are
        kept, and refreshed in place, never replaced: a move must gate the very route a tenant's open
        cursors and sessions use."""
        with self._lock:
            for r in self._routes.values():
                if r.gate is None:
                    r.stale = True

    def pause(self, tenant: str, deployment: str, epoch: int, to: str | None) -> TenantRoute:
        """Another process moves the tenant: its calls here wait (cached or not) until the catalog says
        where it went."""
        with self._lock:
            r = self._routes.get(tenant)
            if r is None:
                r = self._routes[tenant] = TenantRoute(deployment, epoch, "catalog")
            if r.gate is None:
                r.gate = _Gate()
            r.moving_to = to
            return r

    def place(self, tenant: str, deployment: str) -> None:
        if deployment not in self.cores:
            raise ConfigurationError(
                f"cannot place tenant {tenant!r} on {deployment!r}: deployments are {sorted(self.cores)}"
            )
        if self.catalog is None:
            raise InvalidOperation("place_tenant needs a tenant catalog (catalog='<deployment>')")
        self.catalog.place(tenant, deployment)
        r = self.cached(tenant)
        if r is not None:
            self.open_gate(r, deployment)

    def deployment_of(self, tenant: str) -> str:
        return self.route(tenant).deployment

    def _core_of(self, tenant: str, r: TenantRoute) -> Any:
        core = self.cores.get(r.deployment)
        if core is None:
            raise ConfigurationError(
                f"tenant {tenant!r} is placed on deployment {r.deployment!r} (by {r.source}), which this "
                f"manager does not know (its deployments: {sorted(self.cores)}): add it to deployments= "
                "or correct the placement"
            )
        return core

    # -- the gate -----------------------------------------------------------------------------------------

    def _moving_timeout(self, tenant: str, r: TenantRoute) -> WaitQueueTimeoutError:
        return WaitQueueTimeoutError(
            f"tenant {tenant!r} is being moved from deployment {r.deployment!r}"
            f"{'' if r.moving_to is None else f' to {r.moving_to!r}'}; "
            f"its operation waited {self.move_wait}s "
            "for the move to finish: retry it"
        )

    def _admit(self, tenant: str, r: TenantRoute, epoch: int | None) -> Any:
        """Under the lock, with the gate open: the core to use, the call counted in flight."""
        if epoch == _TXN_ABORTED:
            raise TenantMovedError(_txn_aborted(tenant))
        if epoch is not None and epoch != r.epoch:
            raise TenantMovedError(
                f"tenant {tenant!r} moved to deployment {r.deployment!r} after this cursor, change stream or "
                "session was opened on its previous deployment: re-run the query, re-open the change "
                "stream (without a resume token) or start a new session"
            )
        core = self._core_of(tenant, r)
        r.inflight += 1
        return core

    def enter(
        self, tenant: str, r: TenantRoute | None = None, epoch: int | None = None
    ) -> tuple[Any, TenantRoute]:
        if r is None:
            r = self._routes.get(tenant)
            if r is None or r.stale:
                r = self.route(tenant)
        deadline = None
        while True:
            with self._lock:
                gate = r.gate
                if gate is None:
                    return self._admit(tenant, r, epoch), r
            if deadline is None:
                deadline = time.monotonic() + self.move_wait
                self.gate_waits += 1
            if not gate.wait(deadline - time.monotonic()):
                self.gate_timeouts += 1
                raise self._moving_timeout(tenant, r)

    async def enter_async(
        self, tenant: str, r: TenantRoute | None = None, epoch: int | None = None
    ) -> tuple[Any, TenantRoute]:
        if r is None:
            r = self._routes.get(tenant)
            if r is None or r.stale:
                # A catalog lookup is a round trip: not on the event loop's thread.
                r = (
                    await asyncio.to_thread(self.route, tenant)
                    if self.catalog is not None
                    else self.route(tenant)
                )
        deadline = None
        while True:
            with self._lock:
                gate = r.gate
                if gate is None:
                    return self._admit(tenant, r, epoch), r
            if deadline is None:
                deadline = time.monotonic() + self.move_wait
                self.gate_waits += 1
            if not await gate.wait_async(deadline - time.monotonic()):
                self.gate_timeouts += 1
                raise self._moving_timeout(tenant, r)

    def leave(self, r: TenantRoute) -> None:
        with self._lock:
            r.inflight -= 1
            if r.inflight == 0 and r.gate is not None:
                self._drained.notify_all()

    def close_gate(self, tenant: str, to: str | None = None) -> TenantRoute:
        r = self.route(tenant)
        with self._lock:
            if r.gate is None:
                r.gate = _Gate()
            r.moving_to = to
        return r

    def drain(self, r: TenantRoute, timeout: float) -> bool:
        """Waits (gate closed) until the tenant's calls in flight have finished, then aborts its open
        transactions: a commit arriving after the copy began would be lost (and an open transaction
        would hold the locks the copy's verification needs). Their sessions are unusable from then on."""
        with self._lock:
            if not self._drained.wait_for(lambda: r.inflight == 0, timeout):
                return False
            sessions = list(r.sessions)
        for session in sessions:
            if session.raw.in_transaction:
                session.aborted_by_move()
                try:
                    session.raw.abort_transaction()
                except Exception:  # the server ends it anyway (transactionLifetimeLimitSeconds)
                    pass
        return True

    def open_gate(self, r: TenantRoute, deployment: str | None = None, epoch: int | None = None) -> None:
        with self._lock:
            if deployment is not None:
                r.deployment = deployment
                r.source = "catalog"
            if epoch is not None:
                r.epoch = epoch
            gate, r.gate, r.moving_to = r.gate, None, None
        if gate is not None:
            gate.open()

    # -- the core's operations, routed per call ------------------------------------------------------------

    @staticmethod
    def _session(tenant: str, session: Any) -> tuple[int | None, Any]:
        if session is None:
            return None, None
        return session.epoch, session.raw

    def execute(self, tenant, db_name, op, spec, docs=None, session=None):  # type: ignore[no-untyped-def]
        # Every request comes through here: the session's parts read inline.
        raw = None if session is None else session.raw
        core, r = self.enter(tenant, epoch=None if session is None else session.epoch)
        try:
            return core.execute(tenant, db_name, op, spec, docs, raw)
        finally:
            self.leave(r)

    async def execute_async(self, tenant, db_name, op, spec, docs=None, session=None):  # type: ignore[no-untyped-def]
        epoch, raw = self._session(tenant, session)
        core, r = await self.enter_async(tenant, epoch=epoch)
        try:
            return await core.execute_async(tenant, db_name, op, spec, docs, raw)
        finally:
            self.leave(r)

    def open_cursor(self, tenant, db_name, op, spec, session=None):  # type: ignore[no-untyped-def]
        epoch, raw = self._session(tenant, session)
        core, r = self.enter(tenant, epoch=epoch)
        try:
            return RoutedCursor(self, tenant, r, core.open_cursor(tenant, db_name, op, spec, raw))
        finally:
            self.leave(r)

    async def open_cursor_async(self, tenant, db_name, op, spec, session=None):  # type: ignore[no-untyped-def]
        epoch, raw = self._session(tenant, session)
        core, r = await self.enter_async(tenant, epoch=epoch)
        try:
            return RoutedCursor(self, tenant, r, await core.open_cursor_async(tenant, db_name, op, spec, raw))
        finally:
            self.leave(r)

    def watch(self, tenant, db_name, spec, session=None):  # type: ignore[no-untyped-def]
        epoch, raw = self._session(tenant, session)
        core, r = self.enter(tenant, epoch=epoch)
        try:
            return RoutedChangeStream(self, tenant, r, core.watch(tenant, db_name, spec, raw))
        finally:
            self.leave(r)

    async def watch_async(self, tenant, db_name, spec, session=None):  # type: ignore[no-untyped-def]
        epoch, raw = self._session(tenant, session)
        core, r = await self.enter_async(tenant, epoch=epoch)
        try:
            return RoutedChangeStream(self, tenant, r, await core.watch_async(tenant, db_name, spec, raw))
        finally:
            self.leave(r)

    def start_session(
        self, tenant: str, causal_consistency: bool | None = None, snapshot: bool = False
    ) -> Any:
        r = self.route(tenant)
        core = self._core_of(tenant, r)
        session = RoutedSession(self, tenant, r, core.start_session(tenant, causal_consistency, snapshot))
        with self._lock:
            r.sessions.add(session)
        return session

    # -- per tenant, on its deployment's core ------------------------------------------------------

    def _core_for(self, tenant: str) -> Any:
        return self._core_of(tenant, self.route(tenant))

    def ensure(self, tenant: str, wait: bool = True) -> None:
        r = self._routes.get(tenant)
        if r is None or r.stale:
            if not wait and self.catalog is not None:
                return  # its first operation resolves it off the event loop, and opens its pool
            r = self.route(tenant)
        self._core_of(tenant, r).ensure(tenant, wait)

    def provision(self, tenant, username, password, roles, source=None):  # type: ignore[no-untyped-def]
        return self._core_for(tenant).provision(tenant, username, password, roles, source)

    async def provision_async(self, tenant, username, password, roles, source=None):  # type: ignore[no-untyped-def]
        return await self._core_for(tenant).provision_async(tenant, username, password, roles, source)

    def deprovision(self, tenant, username, source=None):  # type: ignore[no-untyped-def]
        return self._core_for(tenant).deprovision(tenant, username, source)

    async def deprovision_async(self, tenant, username, source=None):  # type: ignore[no-untyped-def]
        return await self._core_for(tenant).deprovision_async(tenant, username, source)

    def close_tenant(self, tenant: str) -> bool:
        return any([core.close_tenant(tenant) for core in self.cores.values()])

    def tenant_info(self, tenant: str) -> dict[str, Any] | None:
        r = self.route(tenant)
        core = self.cores.get(r.deployment)
        info = None if core is None else core.tenant_info(tenant)
        if info is not None:
            info["deployment"] = r.deployment
        return info

    # -- the whole manager ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return bool(self.cores[self.placement.default].closed)

    @property
    def redacted_uri(self) -> str:
        return str(self.cores[self.placement.default].redacted_uri)

    def check_open(self) -> None:
        self.cores[self.placement.default].check_open()

    def close(self) -> int:
        if self.catalog is not None:
            self.catalog.close()
        return sum(core.close() for core in self.cores.values())

    def close_pools(self) -> int:
        return sum(core.close_pools() for core in self.cores.values())

    def tenants(self) -> list[str]:
        return [t for core in self.cores.values() for t in core.tenants()]

    def counters(self) -> dict[str, Any]:
        return _sum_dicts([core.counters() for core in self.cores.values()])

    def budget(self) -> dict[str, Any]:
        return _sum_dicts([core.budget() for core in self.cores.values()])

    def all_tenant_info(self) -> list[dict[str, Any]]:
        infos = []
        for name, core in self.cores.items():
            for info in core.all_tenant_info():
                info["deployment"] = name
                infos.append(info)
        return infos

    def metrics_text(self, top: int = 10) -> str:
        merged = merge_metrics({name: core.metrics_text(top) for name, core in self.cores.items()})
        return merged + (
            "# HELP tenantpool_move_gate_waits_total Operations that waited for their tenant's move.\n"
            "# TYPE tenantpool_move_gate_waits_total counter\n"
            f"tenantpool_move_gate_waits_total {self.gate_waits}\n"
            "# HELP tenantpool_move_gate_timeouts_total Operations that gave up waiting for their "
            "tenant's move.\n"
            "# TYPE tenantpool_move_gate_timeouts_total counter\n"
            f"tenantpool_move_gate_timeouts_total {self.gate_timeouts}\n"
        )

    def deployment_stats(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "uri": core.redacted_uri,
                "active_users": core.tenants(),
                "pools": core.counters(),
                "budget": core.budget(),
            }
            for name, core in self.cores.items()
        }


def placement_router(
    manager: Any,
    default_core: Any,
    deployments: Mapping[str, str],
    make_core: Callable[[str], Any],
    uri_credentials: Any,
    placement: Callable[[str], str | None] | None,
    tier_deployments: Mapping[str, str] | None,
    catalog: str | None,
    default_deployment: str | None,
) -> Router:
    """The manager's router: one core per deployment (``default_core`` is the default's, already built),
    and the catalog's client and watcher if ``catalog`` names one of them."""
    from ._catalog import Catalog
    from ._options import with_credentials
    from ._read_preference import manager_read_preference

    names = list(deployments)
    default = default_deployment if default_deployment is not None else names[0]
    tier_of = weakref.WeakMethod(manager.get_user_tier)

    def tier(user_id: str) -> str | None:
        method = tier_of()
        return None if method is None else method(user_id)

    rules = Placement(names, default, placement, tier_deployments, tier)
    if catalog is not None and catalog not in deployments:
        raise ConfigurationError(f"catalog {catalog!r} is not one of the deployments {sorted(names)}")
    cores: dict[str, Any] = {}
    try:
        for name, uri in deployments.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"deployment names must be non-empty strs, got {name!r}")
            if not isinstance(uri, str):
                raise ConfigurationError(
                    f"deployments[{name!r}] must be a connection string, not {type(uri).__name__}"
                )
            # The read preference is the default deployment's (or the keywords'): the driver gets none.
            cores[name] = default_core if name == default else make_core(manager_read_preference(uri, {})[0])
        router = Router(cores, rules)
        manager._deployment_uris = {
            name: with_credentials(uri, uri_credentials) for name, uri in deployments.items()
        }
        if catalog is not None:
            router.catalog = Catalog(
                catalog, cores[catalog], manager._deployment_uris[catalog], router, platform_options(manager)
            )
            weakref.finalize(manager, router.catalog.close)
    except BaseException:
        for core in cores.values():
            core.close()
        raise
    return router


__all__ = [
    "DEFAULT_MOVE_WAIT",
    "Placement",
    "Router",
    "TenantMoveError",
    "TenantMovedError",
    "placement_router",
]


# Sizes and timeouts of the platform's own small clients (catalog, moves) are theirs, not the tenants':
# a move's verification or index build may take longer than any operation of a tenant should.
_OWN_OPTIONS = frozenset(
    {
        "maxpoolsize",
        "minpoolsize",
        "servermonitoringmode",
        "appname",
        "serverselectiontimeoutms",
        "maxidletimems",
        "sockettimeoutms",
        "timeoutms",
    }
)


def platform_options(manager: Any) -> dict[str, str]:
    """The manager's driver options (TLS, timeouts, ...), for the pymongo clients of the catalog and of
    moves: they must reach the deployments the way the tenants' clients do."""
    return {name: value for name, value in manager._uri_options if name.lower() not in _OWN_OPTIONS}


def placement_stats(core: Any) -> dict[str, Any]:
    """``get_stats()``'s per-deployment part: nothing for a manager of one deployment."""
    if not isinstance(core, Router):
        return {}
    return {
        "deployments": core.deployment_stats(),
        "moves": {"gate_waits": core.gate_waits, "gate_timeouts": core.gate_timeouts},
    }


def router_of(manager: Any) -> Router:
    core = manager._core
    if not isinstance(core, Router):
        raise InvalidOperation(
            "this manager has one deployment: give it deployments= to place or move tenants"
        )
    return core
