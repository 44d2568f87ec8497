"""Isolation strategies, quotas, tiers, the document's manager variants and metrics (issue: strategies)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from pymongo.errors import ConfigurationError, WaitQueueTimeoutError

from tenantpool import (
    CachedDatabaseWrapper,
    GroupConnectionManager,
    MemoryEfficientConnectionManager,
    MonitoredUserConnectionManager,
    OptimizedConnectionManager,
    TieredUserConnectionManager,
    UserConnectionManager,
    calculate_pool_size,
    get_user_group,
)

# A query the server holds for SLOW_MS: it keeps one connection busy like a heavy report would.
SLOW_MS = 200
SLOW_FILTER = {"$where": f"sleep({SLOW_MS}) || true"}

STRATEGIES = [
    pytest.param({"strategy": "per_user"}, id="per_user"),
    pytest.param({"strategy": "grouped", "groups": 2, "shared_pool_size": 20}, id="grouped"),
    pytest.param({"strategy": "shared", "shared_pool_size": 20}, id="shared"),
]


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("options", STRATEGIES)
def test_noisy_neighbour_does_not_stall_quiet_tenants(mongodb_uri, options):
    with UserConnectionManager(mongodb_uri, user_pool_size=5, **options) as manager:
        manager.get_database("noisy").c.insert_one({"x": 1})
        for q in range(20):
            manager.get_database(f"quiet{q}").c.insert_one({"x": q})

        noisy_done: list[float] = []
        quiet_done: list[float] = []
        errors: list[BaseException] = []
        go = threading.Event()

        def noisy() -> None:
            go.wait()
            try:
                assert manager.get_database("noisy").c.find_one(SLOW_FILTER) is not None
                noisy_done.append(time.monotonic())
            except BaseException as exc:
                errors.append(exc)

        def quiet(q: int) -> None:
            go.wait()
            try:
                coll = manager.get_database(f"quiet{q}").c
                for _ in range(30):
                    assert coll.find_one({"x": q})["x"] == q
                quiet_done.append(time.monotonic())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=noisy) for _ in range(40)]
        threads += [threading.Thread(target=quiet, args=(q,)) for q in range(20)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join()

        assert errors == []
        assert len(noisy_done) == 40 and len(quiet_done) == 20
        # The noisy tenant's 40 slow operations run 5 at a time (its quota): at least 8 rounds. Every
        # quiet tenant finished all 30 requests before the noisy tenant finished its work.
        assert max(quiet_done) < max(noisy_done)
        stats = manager.get_user_stats("noisy")
        assert stats["pool_size"] == 5


def test_quota_wait_times_out_with_wait_queue_timeout_error(mongodb_uri):
    with UserConnectionManager(
        mongodb_uri, user_pool_size=1, strategy="shared", waitQueueTimeoutMS=100
    ) as manager:
        coll = manager.get_database("one").c
        coll.insert_one({"x": 1})
        started = threading.Event()

        def hold() -> None:
            started.set()
            coll.find_one({"$where": "sleep(1000) || true"})

        holder = threading.Thread(target=hold)
        holder.start()
        started.wait()
        # Wait until the slow operation really holds the tenant's only slot.
        deadline = time.monotonic() + 5
        while manager.get_user_stats("one")["in_flight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(WaitQueueTimeoutError, match="quota"):
            coll.find_one()
        # Another tenant is unaffected.
        assert manager.get_database("two").c.find_one() is None
        holder.join()
        assert coll.find_one()["x"] == 1
        assert manager.get_stats()["pools"]["wait_timeouts"] == 1


def test_groups_are_stable_across_processes():
    users = [f"user_{i}" for i in range(200)]
    here = [get_user_group(u) for u in users]
    code = f"from tenantpool import get_user_group; print([get_user_group(u) for u in {users!r}])"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert eval(other.stdout) == here
    assert len(set(here)) == 10


def test_group_connection_manager_shares_clients(mongodb_uri):
    with GroupConnectionManager(mongodb_uri, groups=3, group_pool_size=6) as manager:
        for i in range(30):
            manager.get_database(f"g{i}").c.insert_one({"i": i})
        stats = manager.get_stats()
        assert stats["pools"]["shared_clients"] == 3
        assert stats["total_connections"] == 30
        assert manager.get_user_group("g1") == get_user_group("g1", 3)
        assert manager.get_database("g7").c.find_one()["i"] == 7


def test_tiers_decide_pool_sizes(mongodb_uri):
    with TieredUserConnectionManager(mongodb_uri) as manager:
        for user in ("user_123", "bas_1", "pre_user_456", "ent_user_789"):
            manager.get_database(user)
        sizes = {
            u: manager.get_user_stats(u)["pool_size"]
            for u in ("user_123", "bas_1", "pre_user_456", "ent_user_789")
        }
        assert sizes == {"user_123": 3, "bas_1": 5, "pre_user_456": 10, "ent_user_789": 20}
        assert manager.get_user_stats("pre_user_456")["tier"] == "premium"
        tiers = manager.get_tier_stats()
        assert tiers["enterprise"]["capacity"] == 20 and tiers["free"]["pools"] == 1


def test_subclass_get_user_tier_is_honoured(mongodb_uri):
    class FromDatabase(TieredUserConnectionManager):
        def get_user_tier(self, user_id: str) -> str:
            return "enterprise" if user_id == "acme" else "basic"

    with FromDatabase(mongodb_uri, strategy="shared") as manager:
        manager.get_database("acme")
        manager.get_database("small")
        assert manager.get_user_stats("acme")["pool_size"] == 20
        assert manager.get_user_stats("small")["pool_size"] == 5


def test_tier_of_callable_and_custom_sizes(mongodb_uri):
    with UserConnectionManager(mongodb_uri, tier_pool_sizes={"gold": 7}, tier_of=lambda u: "gold") as manager:
        manager.get_database("x")
        assert manager.get_user_stats("x")["pool_size"] == 7


def test_a_failing_tier_function_gives_a_clear_error(mongodb_uri):
    def broken(user_id: str) -> str:
        raise KeyError(user_id)

    with UserConnectionManager(mongodb_uri, tier_of=broken) as manager:
        with pytest.raises(ConfigurationError, match="callback failed"):
            manager.get_database("who")
        assert manager.get_stats()["total_connections"] == 0


def test_monitored_manager_counts(mongodb_uri):
    with MonitoredUserConnectionManager(mongodb_uri, slow_query_ms=100) as manager:
        coll = manager.get_database("mon").c
        coll.insert_one({"x": 1})
        coll.find_one({"$where": "sleep(150) || true"})
        manager.close_user_connection("mon")
        manager.get_database("mon2").c.find_one()
        m = manager.metrics
        assert m["total_connections_created"] == 2
        assert m["total_connections_closed"] == 1
        assert m["slow_queries"] == 1
        assert m["connection_errors"] == 0
        stats = manager.get_pool_stats("mon2")
        assert stats["pool_size"] == 10 and stats["connections"]["current"] >= 1
        assert abs(stats["last_access"] - time.time()) < 5
        assert manager.get_pool_stats("nobody") == {"error": "No connection found"}
        everything = manager.get_all_metrics()
        assert everything["avg_connections_per_user"] == 10 and everything["slow_queries"] == 1


def test_reuse_stats(mongodb_uri):
    with OptimizedConnectionManager(mongodb_uri) as manager:
        for _ in range(4):
            manager.get_client("a")
        manager.get_client("b")
        stats = manager.get_reuse_stats()
        assert stats["total_connections"] == 2
        assert stats["total_reuses"] == 3
        assert stats["reuse_rate"] == pytest.approx(3 / 5)


def test_memory_efficient_manager_caps_pools_and_reports_memory(mongodb_uri):
    with MemoryEfficientConnectionManager(mongodb_uri, max_connections=3) as manager:
        for i in range(5):
            manager.get_database(f"m{i}").c.insert_one({})
        usage = manager.get_memory_usage()
        assert usage["connections"] == 3
        assert usage["rss_mb"] > 10 and usage["vms_mb"] >= usage["rss_mb"]
        assert usage["avg_memory_per_connection"] == pytest.approx(usage["rss_mb"] / 3)
        assert manager.get_stats()["pools"]["closed_lru"] == 2


def test_cached_database_wrapper(mongodb_uri):
    with UserConnectionManager(mongodb_uri) as manager:
        cached = CachedDatabaseWrapper(manager.get_database("cache"), cache_ttl=60)
        cached.db.items.insert_one({"k": 1, "v": "old"})
        assert cached.find_one_cached("items", {"k": 1})["v"] == "old"
        # A write behind the cache's back is not seen within the TTL...
        manager.get_database("cache").items.update_one({"k": 1}, {"$set": {"v": "sneaky"}})
        assert cached.find_one_cached("items", {"k": 1})["v"] == "old"
        assert cached.hits == 1
        # ...but a write through the wrapper's database invalidates the collection.
        cached.db.items.update_one({"k": 1}, {"$set": {"v": "new"}})
        assert cached.find_one_cached("items", {"k": 1})["v"] == "new"
        # Returned documents are copies: mutating one does not poison the cache.
        cached.find_one_cached("items", {"k": 1})["v"] = "mutated"
        assert cached.find_one_cached("items", {"k": 1})["v"] == "new"
        cached.invalidate_cache()
        short = CachedDatabaseWrapper(manager.get_database("cache"), cache_ttl=0)
        short.find_one_cached("items", {"k": 1})
        short.find_one_cached("items", {"k": 1})
        assert short.hits == 0 and short.misses == 2


def test_calculate_pool_size_matches_the_document():
    assert calculate_pool_size(1000, 5, 10000) == (5, 1000)
    assert calculate_pool_size(concurrent_users=1000) == (5, 1000)
    assert calculate_pool_size(5000, 5, 10000) == (2, 5000)


def test_metrics_text_is_prometheus_and_bounded(mongodb_uri):
    with TieredUserConnectionManager(mongodb_uri, strategy="shared") as manager:
        for i in range(50):
            manager.get_database(f"pre_{i}" if i % 2 else f"t{i}").c.find_one()
        text = manager.metrics_text(top=5)
        series = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert 'tenantpool_pools{tier="premium"} 25' in text
        assert 'tenantpool_pools{tier="free"} 25' in text
        assert sum(1 for s in series if s.startswith("tenantpool_tenant_operations{")) == 5
        assert 'tenantpool_info{strategy="shared"} 1' in text
        for line in text.splitlines():
            if line.startswith("# TYPE"):
                assert line.split()[-1] in ("counter", "gauge")


def test_ten_thousand_tenants_in_shared_mode_keep_threads_and_connections_bounded(
    mongodb_uri, pymongo_client
):
    app = "tp-10k-shared"
    with UserConnectionManager(
        mongodb_uri, strategy="shared", shared_pool_size=8, user_pool_size=2, appName=app
    ) as manager:
        manager.get_database("warmup").c.find_one()
        threads_before = os_threads()
        for i in range(10_000):
            manager.get_database(f"t{i}")
            if i % 100 == 0:
                manager.get_database(f"t{i}").c.find_one()
        assert manager.get_stats()["total_connections"] == 10_001
        assert os_threads() == threads_before
        conns = list(
            pymongo_client.admin.aggregate(
                [{"$currentOp": {"allUsers": True, "idleConnections": True}}, {"$match": {"appName": app}}]
            )
        )
        # The budget (8 pooled) plus the one client's monitoring connections.
        assert len(conns) <= 8 + 2
