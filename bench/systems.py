"""The systems under comparison, each behind the same two calls: ``get_db(tenant)`` and ``close()``.

``get_db`` is the very call an application makes per request -- tenantpool's and the document's
``manager.get_database(tenant)``, pymongo's ``client[f"user_{tenant}_db"]`` -- so its cost is measured
too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import db_name

TENANTPOOL_STRATEGIES = ("per_user", "grouped", "shared")

#: Display names, in table order.
LABELS = {
    "tenantpool/per_user": "tenantpool per_user",
    "tenantpool/grouped": "tenantpool grouped",
    "tenantpool/shared": "tenantpool shared",
    "pymongo/shared": "pymongo MongoClient (shared)",
    "pymongo/per-tenant": "pymongo MongoClient per tenant",
    "document": "document's manager (pymongo)",
    "pymongo/async-shared": "pymongo AsyncMongoClient (shared)",
    "tenantpool-async/per_user": "tenantpool async per_user",
    "tenantpool-async/grouped": "tenantpool async grouped",
    "tenantpool-async/shared": "tenantpool async shared",
    "tenantpool/per_user+listener": "tenantpool per_user + no-op listener",
    "tenantpool/shared+listener": "tenantpool shared + no-op listener",
    "pymongo/shared+listener": "pymongo MongoClient (shared) + no-op listener",
    "tenantpool/single": "tenantpool, one deployment",
    "tenantpool/placement-callable": "tenantpool, 2 deployments, placement callable",
    "tenantpool/placement-catalog": "tenantpool, 2 deployments, tenant catalog",
}

#: A system name's suffix: the same system with one no-op command listener (monitoring's own cost).
WITH_LISTENER = "+listener"


def _noop_listener() -> Any:
    from pymongo import monitoring

    class Noop(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            pass

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    return Noop()


def label(system: str) -> str:
    return LABELS.get(system, system)


def is_tenantpool(system: str) -> bool:
    return system.startswith("tenantpool")


@dataclass
class SyncSystem:
    name: str
    get_db: Callable[[str], Any]
    close: Callable[[], None]
    #: The pymongo clients behind it (per-tenant baselines), for diagnostics only.
    clients: Callable[[], int] = lambda: 1
    #: tenantpool's ``get_stats()`` (its connection budget, pool counters); empty for the others.
    stats: Callable[[], dict[str, Any]] = dict


def tenantpool_options(system: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Constructor keywords of tenantpool's manager for ``tenantpool[-async]/<strategy>``."""
    strategy = system.split("/", 1)[1]
    kwargs: dict[str, Any] = {"strategy": strategy}
    for key in ("user_pool_size", "waitQueueTimeoutMS", "appName"):
        if opts.get(key) is not None:
            kwargs[key] = opts[key]
    if strategy == "grouped" and opts.get("groups") is not None:
        kwargs["groups"] = opts["groups"]
    if strategy != "per_user" and opts.get("shared_pool_size") is not None:
        kwargs["shared_pool_size"] = opts["shared_pool_size"]
    return kwargs


def pymongo_options(opts: dict[str, Any], pool_key: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if opts.get(pool_key) is not None:
        kwargs["maxPoolSize"] = opts[pool_key]
    for key in ("waitQueueTimeoutMS", "appName"):
        if opts.get(key) is not None:
            kwargs[key] = opts[key]
    return kwargs


def make_sync(system: str, uri: str, opts: dict[str, Any]) -> SyncSystem:
    """Builds one system. ``opts``: user_pool_size, groups, shared_pool_size (tenantpool and the
    document's manager), pymongo_pool_size (shared pymongo client), waitQueueTimeoutMS, appName."""
    listeners: dict[str, Any] = {}
    if system.endswith(WITH_LISTENER):
        system = system[: -len(WITH_LISTENER)]
        listeners["event_listeners"] = [_noop_listener()]
    if system.startswith("tenantpool/"):
        from tenantpool import UserConnectionManager

        manager = UserConnectionManager(uri, **tenantpool_options(system, opts), **listeners)
        return SyncSystem(system, manager.get_database, manager.close_all, stats=manager.get_stats)

    if system == "pymongo/shared":
        from pymongo import MongoClient

        client: MongoClient = MongoClient(uri, **pymongo_options(opts, "pymongo_pool_size"), **listeners)

        def shared_db(tenant: str) -> Any:
            return client[f"user_{tenant}_db"]

        return SyncSystem(system, shared_db, client.close)

    if system == "pymongo/per-tenant":
        return _per_tenant_clients(uri, pymongo_options(opts, "user_pool_size"))

    if system == "document":
        from seed_manager import DocumentUserConnectionManager

        kwargs = {k: opts[k] for k in ("waitQueueTimeoutMS", "appName") if opts.get(k) is not None}
        doc = DocumentUserConnectionManager(uri, user_pool_size=opts.get("user_pool_size") or 10, **kwargs)
        return SyncSystem(system, doc.get_database, doc.close_all, lambda: len(doc._clients))

    raise ValueError(f"unknown system {system!r}")


def _per_tenant_clients(uri: str, kwargs: dict[str, Any]) -> SyncSystem:
    """The document's design without its ping and global lock: a dict of MongoClients, one per tenant
    (the usual hand-written version, with double-checked creation)."""
    from pymongo import MongoClient

    clients: dict[str, MongoClient] = {}
    lock = threading.Lock()

    def get_db(tenant: str) -> Any:
        client = clients.get(tenant)
        if client is None:
            with lock:
                client = clients.get(tenant)
                if client is None:
                    client = clients[tenant] = MongoClient(uri, **kwargs)
        return client[db_name(tenant)]

    def close() -> None:
        for client in list(clients.values()):
            client.close()
        clients.clear()

    return SyncSystem("pymongo/per-tenant", get_db, close, lambda: len(clients))
