"""The design document's manager variants, as thin subclasses of UserConnectionManager.

Each keeps the document's constructor arguments and methods; the work is done by the Rust core, which
already tracks what the document's variants bolted on (pool creation and closing, reuse, LRU eviction).
"""

from __future__ import annotations

import os
from typing import Any

from . import _core
from .manager import DEFAULT_TIER_POOL_SIZES, UserConnectionManager

calculate_pool_size = _core.calculate_pool_size


def get_user_group(user_id: str, groups: int = 10) -> str:
    """The document's ``get_user_group``, on a stable hash (its ``hash()`` differs per process)."""
    return f"group_{_core.group_of(user_id, groups)}"


class GroupConnectionManager(UserConnectionManager):
    """The document's hybrid: ``groups`` shared clients of ``group_pool_size`` connections each, every
    tenant in the same group in every process. Each tenant keeps a quota of ``user_pool_size``
    operations in flight, so a heavy tenant cannot take its whole group's pool."""

    def __init__(
        self, connection_string: str, groups: int = 10, group_pool_size: int | None = None, **kwargs: Any
    ) -> None:
        # None: the document's 50, fitted silently into the connection budget if it must be (a size
        # given explicitly and lowered to fit is logged as a warning).
        kwargs.setdefault("user_pool_size", min(10, group_pool_size or 50))
        super().__init__(
            connection_string, strategy="grouped", groups=groups, shared_pool_size=group_pool_size, **kwargs
        )

    def get_user_group(self, user_id: str) -> str:
        assert self.groups is not None
        return get_user_group(user_id, self.groups)


class TieredUserConnectionManager(UserConnectionManager):
    """Pool sizes by tier. Override ``get_user_tier`` (the document's hook) to look tiers up."""

    def __init__(self, connection_string: str, **options: Any) -> None:
        options.setdefault("tier_pool_sizes", dict(DEFAULT_TIER_POOL_SIZES))
        super().__init__(connection_string, **options)

    def get_user_tier(self, user_id: str) -> str | None:
        """The document's example rule: ``ent_``/``pre_``/``bas_`` prefixes, else ``free``."""
        tier = super().get_user_tier(user_id)
        if tier is not None:
            return tier
        for prefix, name in (("ent_", "enterprise"), ("pre_", "premium"), ("bas_", "basic")):
            if user_id.startswith(prefix):
                return name
        return "free"


class MonitoredUserConnectionManager(UserConnectionManager):
    """The document's metrics, read from the core's counters (exact, and no lock on the hot path)."""

    def __init__(self, *args: Any, slow_query_ms: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, slow_query_ms=slow_query_ms, **kwargs)
        self.slow_query_ms = slow_query_ms

    @property
    def metrics(self) -> dict[str, int]:
        c = self._core.counters()
        return {
            "total_connections_created": c["pools_created"],
            "total_connections_closed": c["pools_closed"],
            "connection_errors": c["operation_errors"],
            "slow_queries": c["slow_operations"],
        }

    def get_pool_stats(self, user_id: str) -> dict[str, Any]:
        """The tenant's pool and the server's connection counts, or ``{"error": ...}`` if it has none."""
        info = self.get_user_stats(user_id)
        if info is None:
            return {"error": "No connection found"}
        import time

        # serverStatus is the platform's question, not the tenant's: outside the isolation scope.
        status = self.get_platform_client(user_id).admin.command("serverStatus")
        return {
            **info,
            "connections": status.get("connections", {}),
            "last_access": time.time() - info["idle_seconds"],
        }

    def get_all_metrics(self) -> dict[str, Any]:
        stats = self.get_stats()
        return {
            **stats,
            **self.metrics,
            "avg_connections_per_user": (
                stats["total_potential_connections"] / stats["total_connections"]
                if stats["total_connections"]
                else 0
            ),
        }


class OptimizedConnectionManager(UserConnectionManager):
    """Reuse statistics: how often a request found its tenant's pool already open."""

    def get_reuse_stats(self) -> dict[str, Any]:
        c = self._core.counters()
        created, reuses = c["pools_created"], c["reuses"]
        return {
            "total_connections": created,
            "total_reuses": reuses,
            "avg_reuses_per_connection": reuses / created if created else 0,
            "reuse_rate": reuses / (reuses + created) if (reuses + created) else 0,
        }


class MemoryEfficientConnectionManager(UserConnectionManager):
    """At most ``max_connections`` live tenant pools; the least recently used idle one makes room."""

    def __init__(self, connection_string: str, max_connections: int = 100, **kwargs: Any) -> None:
        super().__init__(connection_string, max_connections=max_connections, **kwargs)

    def get_memory_usage(self) -> dict[str, float]:
        rss, vms = _memory()
        pools = self.get_stats()["total_connections"]
        return {
            "rss_mb": rss / 1024 / 1024,
            "vms_mb": vms / 1024 / 1024,
            "connections": pools,
            "avg_memory_per_connection": rss / pools / 1024 / 1024 if pools else 0,
        }


def _memory() -> tuple[int, int]:
    """(rss, vms) in bytes: psutil if installed, else /proc (Linux)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{os.getpid()}/statm") as f:
            vms_pages, rss_pages = (int(x) for x in f.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        return rss_pages * page, vms_pages * page
    info = psutil.Process().memory_info()
    return info.rss, info.vms


__all__ = [
    "GroupConnectionManager",
    "MemoryEfficientConnectionManager",
    "MonitoredUserConnectionManager",
    "OptimizedConnectionManager",
    "TieredUserConnectionManager",
    "calculate_pool_size",
    "get_user_group",
]
