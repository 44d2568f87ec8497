"""Churn: 100,000 tenants created and evicted under a cap of 20 live pools. Memory, file descriptors,
threads and server connections must stay flat: every evicted pool is really closed."""

from __future__ import annotations

import time

import psutil
import pytest
from tests.helpers import app_connections

from tenantpool import UserConnectionManager

CAP = 20


def churn(mongodb_uri: str, client, tenants: int, app: str, sample_every: int = 100) -> dict:
    proc = psutil.Process()
    # get_client opens a pool only if the connection budget has room at that instant, and evicted pools
    # hold theirs until they have shut down: a budget well above the cap's keeps every get_client a
    # pool creation, which is what this test churns.
    manager = UserConnectionManager(
        mongodb_uri,
        user_pool_size=1,
        max_connections=CAP,
        idle_timeout=3600,
        appName=app,
        max_server_connections=50 * CAP,
    )
    try:

        def run(start: int, stop: int) -> None:
            for i in range(start, stop):
                t = f"ch{i}"
                if i % sample_every == 0:
                    # A real round trip for a sample; get_client alone creates (and starts monitoring) the
                    # pool without an operation, which is most of the cost of a tenant.
                    assert manager.get_database(t).c.find_one({"never": "there"}) is None
                else:
                    manager.get_client(t)

        def settle() -> tuple[int, int]:
            """(server connections, our fds) once the CAP live pools are fully connected (a monitor and
            an RTT monitor each) and nothing changes for a second: pools open and close asynchronously."""
            last = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = (app_connections(client, app), proc.num_fds())
                if now == last and now[0] >= 2 * CAP:
                    break
                last = now
                time.sleep(0.5)
            return now

        # Warm-up to the steady state (cap reached, allocator and runtime grown), then measure.
        warm = min(2000, tenants // 10)
        run(0, warm)
        base_conns, base_fds = settle()
        base_rss, base_threads = proc.memory_info().rss, proc.num_threads()
        started = time.monotonic()
        run(warm, tenants)
        elapsed = time.monotonic() - started
        stats = manager.get_stats()
        pools = stats["pools"]
        assert stats["total_connections"] == CAP
        assert pools["pools_created"] == tenants
        assert pools["pools_closed"] == tenants - CAP == pools["closed_lru"], pools
        conns, fds = settle()
        rss_growth = proc.memory_info().rss - base_rss
        threads = proc.num_threads()
        numbers = {
            "tenants": tenants,
            "seconds": round(elapsed, 1),
            "rss_growth_mb": round(rss_growth / 2**20, 1),
            "fds": (base_fds, fds),
            "threads": (base_threads, threads),
            "connections": (base_conns, conns),
        }
        print("churn:", numbers)
        assert rss_growth < 100 * 2**20, numbers
        assert fds <= base_fds + 8, numbers
        # What CAP live pools may hold: a monitor and an RTT monitor each, plus pooled connections of the
        # (at most two) sampled tenants among them.
        assert conns <= 2 * CAP + 2, numbers
        assert threads <= base_threads + 2, numbers
    finally:
        manager.close_all()
    deadline = time.monotonic() + 20
    while (left := app_connections(client, app)) and time.monotonic() < deadline:
        time.sleep(0.2)
    numbers["connections_after_close_all"] = left
    print("churn after close_all:", left, "connections")
    # BUG (see the reliability report): rarely a connection outlives the close of its pool, established
    # (handshake only) and then never used nor closed - about one per 20,000-100,000 churned tenants.
    # Bounded here so that the leak cannot grow unnoticed; zero is the correct value.
    assert left <= max(1, tenants // 20_000), numbers
    return numbers


def test_churn_short(mongodb_uri, pymongo_client, record_property):
    record_property("churn", churn(mongodb_uri, pymongo_client, 5_000, "tp-churn-5k"))


@pytest.mark.slow
def test_churn_hundred_thousand_tenants(mongodb_uri, pymongo_client, record_property):
    record_property("churn", churn(mongodb_uri, pymongo_client, 100_000, "tp-churn-100k"))
