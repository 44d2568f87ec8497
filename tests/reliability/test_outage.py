"""Outage: the only server goes away (clean shutdown, or SIGKILL) and comes back on the same port and
dbpath. Requests fail fast with ServerSelectionTimeoutError instead of hanging, the same manager recovers
on its own, and no connection is leaked across the outage.

Uses a dedicated MongodProcess: MongodProcess.stop() keeps an explicit dbpath (it only deletes one it
created) and start() restarts on the same port without re-initiating the replica set, so stop()/start()
is a clean restart and kill()/start() a crash-restart.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError
from tests.helpers import app_connections, wait_app_connections, wait_until

from tenantpool import UserConnectionManager
from tenantpool.testing import MongodProcess

SST_MS = 1000
SLACK_S = 1.5
TENANTS = [f"out{i}" for i in range(5)]


@pytest.fixture
def server(tmp_path):
    srv = MongodProcess(dbpath=str(tmp_path / "db"))
    (tmp_path / "db").mkdir()
    srv.start()
    yield srv
    srv.stop()


def observer(srv: MongodProcess) -> MongoClient:
    return MongoClient(srv.direct_uri, serverSelectionTimeoutMS=10000)


def steady_count(srv: MongodProcess, app: str) -> int:
    """The appName's connection count once it stops changing (monitors connect on their own schedule)."""
    with observer(srv) as c:
        last = -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = app_connections(c, app)
            if n == last:
                return n
            last = n
            time.sleep(0.5)
        return last


def run_during_outage(manager: UserConnectionManager, tenants: list[str]) -> list[tuple[str, str, float]]:
    """One insert, one find_one and one cursor per tenant, all concurrently: (what, outcome, seconds)."""
    results: list[tuple[str, str, float]] = []

    def one(t: str, kind: str) -> None:
        coll = manager.get_database(t).items
        started = time.monotonic()
        try:
            if kind == "insert":
                coll.insert_one({"during": True})
            elif kind == "find_one":
                coll.find_one()
            else:
                list(coll.find())
            outcome = "ok"
        except PyMongoError as exc:
            outcome = type(exc).__name__
        results.append((f"{t}:{kind}", outcome, time.monotonic() - started))

    threads = [
        threading.Thread(target=one, args=(t, k)) for t in tenants for k in ("insert", "find_one", "find")
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(SST_MS / 1000 * 2 + 30)
    assert not any(th.is_alive() for th in threads), "requests hung during the outage"
    return results


@pytest.mark.parametrize("how", ["clean-stop", "sigkill"])
def test_outage_fails_fast_recovers_and_leaks_nothing(server, how, record_property):
    app = f"tp-outage-{how}"
    # heartbeatFrequencyMS: the driver's RTT monitors reconnect on this period after an outage; 1 s instead
    # of 10 s lets the test wait for the exact baseline connection count quickly. spare_pools=0: this test
    # counts connections exactly and asserts how never-seen tenants fail; spares under an outage are
    # test_spares_through_an_outage's.
    manager = UserConnectionManager(
        server.uri,
        user_pool_size=3,
        serverSelectionTimeoutMS=SST_MS,
        appName=app,
        heartbeatFrequencyMS=1000,
        spare_pools=0,
    )
    try:
        for t in TENANTS:
            manager.get_database(t).items.insert_one({"before": True})
        baseline = steady_count(server, app)
        assert baseline >= len(TENANTS)

        if how == "clean-stop":
            server.stop()
        else:
            server.kill()
        assert not server.running

        # Every call fails, within the timeout. Tenants never seen before fail in server selection. A tenant
        # with a pooled connection may instead get AutoReconnect (both are ConnectionFailure): when a killed
        # server's socket errors under an operation before the driver's monitor has marked it down, the
        # retry then fails in server selection and the driver reports the original network error, as
        # pymongo does.
        results = run_during_outage(manager, [*TENANTS, "out-new1", "out-new2"])
        outcomes = {outcome for _, outcome, _ in results}
        slowest = max(s for _, _, s in results)
        assert outcomes <= {"ServerSelectionTimeoutError", "AutoReconnect"}, results
        assert {o for what, o, _ in results if what.startswith("out-new")} == {"ServerSelectionTimeoutError"}
        assert slowest < SST_MS / 1000 + SLACK_S, f"slowest failure took {slowest:.2f}s: {results}"
        # Once the outage is known, it is server selection for everyone.
        for t in TENANTS:
            with pytest.raises(ServerSelectionTimeoutError):
                manager.get_database(t).command("ping")

        server.start()  # same port, same dbpath
        restarted = time.monotonic()
        colls = [manager.get_database(t).items for t in TENANTS]

        def all_succeed() -> bool:
            try:
                for c in colls:
                    c.insert_one({"after": True})
                return True
            except PyMongoError:
                return False

        wait_until(all_succeed, 20, "requests to succeed again on the same manager", every=0.2)
        recovery = time.monotonic() - restarted
        for c in colls:
            assert c.count_documents({"before": True}) == 1  # same dbpath: data survived
        stats = manager.get_stats()
        assert stats["total_connections"] == len(TENANTS) + 2
        assert stats["pools"]["pools_closed"] == 0

        # The two tenants first seen during the outage have pools too; close them to compare like for like.
        for t in ("out-new1", "out-new2"):
            manager.close_user_connection(t)
        with observer(server) as c:
            after = wait_app_connections(
                c, app, lambda n: n == baseline, 20, f"connections to return to the baseline of {baseline}"
            )
        numbers = {
            "baseline_connections": baseline,
            "after_connections": after,
            "slowest_failure_s": round(slowest, 2),
            "recovery_s": round(recovery, 2),
            "outcomes": dict(collections.Counter(o for _, o, _ in results)),
        }
        record_property(how, numbers)
        print(how, numbers)
    finally:
        manager.close_all()
    if server.running:
        with observer(server) as c:
            wait_app_connections(c, app, lambda n: n == 0, 15, "close_all() to close every connection")


def test_spares_through_an_outage(server):
    """Warm spares taken during an outage fail as fast as any pool (a spare holds a pooled connection, so
    its tenant may get AutoReconnect where a never-seen one gets ServerSelectionTimeoutError); a failed
    refill is not handed out, and once the server is back new tenants get spares again."""
    app = "tp-outage-spares"
    manager = UserConnectionManager(
        server.uri, user_pool_size=2, serverSelectionTimeoutMS=SST_MS, appName=app, heartbeatFrequencyMS=1000
    )
    try:
        manager.get_database("sp0").items.insert_one({"before": True})
        wait_until(lambda: manager.get_stats()["budget"]["spare_pools"] == 2, 10, "two warm spares")
        server.kill()

        results = run_during_outage(manager, ["sp-new1", "sp-new2", "sp-new3"])
        assert {o for _, o, _ in results} <= {"ServerSelectionTimeoutError", "AutoReconnect"}, results
        slowest = max(s for _, _, s in results)
        assert slowest < SST_MS / 1000 + SLACK_S, f"slowest failure took {slowest:.2f}s: {results}"
        budget = manager.get_stats()["budget"]
        assert budget["spare_pools_used"] == 2, budget
        # Refills started during the outage fail their warm-up and are closed, never handed out.
        wait_until(
            lambda: manager.get_stats()["budget"]["spare_pools_warming"] == 0, 30, "the refills to give up"
        )
        assert manager.get_stats()["budget"]["spare_pools"] == 0

        server.start()

        def works() -> bool:
            try:
                manager.get_database("sp-new1").items.insert_one({"after": True})
                return True
            except PyMongoError:
                return False

        wait_until(works, 20, "requests to succeed again", every=0.2)

        # After the refill back-off, new tenants bring the spares back: one warmed after the outage is
        # handed to a new tenant.
        def served_warm() -> bool:
            manager.get_database(f"sp-late{time.monotonic_ns()}").command("ping")
            return bool(manager.get_stats()["budget"]["spare_pools_used"] > 2)

        wait_until(served_warm, 30, "a spare warmed after the outage to serve a new tenant", every=0.5)
    finally:
        manager.close_all()
    with observer(server) as c:
        wait_app_connections(c, app, lambda n: n == 0, 15, "close_all() to close every spare too")
