"""Eviction race hammer: pools are reaped after 0.2 s idle and capped at 5 live pools while 50 threads
hit 200 tenants with inserts, find_one and partially consumed cursors (some closed, some abandoned, some
held across the idle timeout), plus manual closes and stats calls. No operation or cursor may ever fail
because its pool was closed under it, no tenant may see another's documents, no insert may be lost, and
the lifecycle counters must add up once everything is idle.
"""

from __future__ import annotations

import collections
import random
import threading
import time
import traceback

import pytest
from tests.helpers import app_connections, wait_app_connections, wait_until

from tenantpool import UserConnectionManager

TENANTS = 200
THREADS = 50
CAP = 5
SEEDED = 30


def tid(i: int) -> str:
    return f"ev{i:03d}"


@pytest.fixture(scope="module")
def seeded(pymongo_client):
    for i in range(TENANTS):
        coll = pymongo_client[f"user_{tid(i)}_db"].c
        coll.drop()
        coll.insert_many([{"seed": n, "owner": tid(i)} for n in range(SEEDED)])
    return pymongo_client


def hammer(mongodb_uri: str, client, seconds: float, app: str) -> dict:
    manager = UserConnectionManager(
        mongodb_uri, user_pool_size=2, idle_timeout=0.2, max_connections=CAP, appName=app
    )
    errors: collections.Counter[str] = collections.Counter()
    first_trace: dict[str, str] = {}
    ops: collections.Counter[str] = collections.Counter()
    inserted: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    run_id = f"{app}-{time.time_ns()}"

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < deadline:
            # Mostly a hot set, so pools are reused while the reaper and the cap close them; the rest
            # forces creation and LRU eviction on nearly every call.
            t = tid(rnd.randrange(8) if rnd.random() < 0.6 else rnd.randrange(TENANTS))
            kind = rnd.choices(
                ["insert", "find_one", "cursor", "held", "close", "stats"], [30, 30, 20, 8, 4, 8]
            )[0]
            try:
                coll = manager.get_database(t).c
                if kind == "insert":
                    coll.insert_one({"owner": t, "run": run_id})
                    with lock:
                        inserted[t] += 1
                elif kind == "find_one":
                    doc = coll.find_one({"seed": rnd.randrange(SEEDED)})
                    assert doc is not None and doc["owner"] == t, f"{t} got {doc!r}"
                elif kind in ("cursor", "held"):
                    cursor = coll.find({"seed": {"$exists": True}}).batch_size(4)
                    got = [next(cursor) for _ in range(rnd.randrange(1, 10))]
                    if kind == "held":
                        # Across the idle timeout: the reaper and the cap run meanwhile.
                        time.sleep(0.2 + rnd.random() * 0.3)
                    got += [next(cursor) for _ in range(rnd.randrange(1, 10))]
                    assert {d["owner"] for d in got} == {t}, (
                        f"{t} got documents of { ({d['owner'] for d in got}) }"
                    )
                    if rnd.random() < 0.5:
                        cursor.close()
                    del cursor  # otherwise abandoned unexhausted: the RawCursor's drop releases the lease
                elif kind == "close":
                    manager.close_user_connection(t)
                else:
                    manager.get_stats()
                    info = manager.get_user_stats(t)
                    assert info is None or info["user_id"] == t
                with lock:
                    ops[kind] += 1
            except Exception as exc:
                key = f"{kind}: {type(exc).__name__}: {str(exc)[:120]}"
                with lock:
                    errors[key] += 1
                    first_trace.setdefault(key, traceback.format_exc())

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in range(THREADS)]
    try:
        for th in threads:
            th.start()
        peak = 0
        while any(th.is_alive() for th in threads):
            peak = max(peak, manager.get_stats()["total_connections"])
            time.sleep(0.1)
            assert time.monotonic() < deadline + 30, "workers did not stop"
        for th in threads:
            th.join()
        assert not errors, "\n".join([str(dict(errors)), *list(first_trace.values())[:3]])

        # Quiet: every pool is idle, so the reaper empties the registry.
        wait_until(lambda: manager.get_stats()["total_connections"] == 0, 5, "the reaper to close idle pools")
        stats = manager.get_stats()
        pools = stats["pools"]
        assert pools["pools_created"] - pools["pools_closed"] == pools["live_pools"] == 0, pools
        assert pools["operation_errors"] == 0, pools
        retired = sum(
            pools[k]
            for k in ("closed_idle", "closed_lru", "closed_manual", "closed_error", "closed_shutdown")
        )
        assert retired == pools["pools_closed"], pools
        # Closed pools release their connections on the server.
        wait_app_connections(client, app, lambda n: n == 0, 20, "the closed pools' connections to go away")

        # Nothing inserted was lost, and nothing landed in another tenant's database.
        for t, n in inserted.items():
            assert client[f"user_{t}_db"].c.count_documents({"run": run_id}) == n, t
        assert (
            sum(
                client[f"user_{tid(i)}_db"].c.count_documents({"run": run_id, "owner": {"$ne": tid(i)}})
                for i in range(TENANTS)
            )
            == 0
        )
        return {"ops": dict(ops), "errors": sum(errors.values()), "peak_live_pools": peak, "pools": pools}
    finally:
        manager.close_all()


def test_eviction_race_hammer_short(mongodb_uri, seeded, record_property):
    numbers = hammer(mongodb_uri, seeded, 5, "tp-hammer-5s")
    record_property("hammer_5s", numbers)
    print("hammer 5s:", numbers)


@pytest.mark.slow
def test_eviction_race_hammer_long(mongodb_uri, seeded, record_property):
    numbers = hammer(mongodb_uri, seeded, 30, "tp-hammer-30s")
    record_property("hammer_30s", numbers)
    print("hammer 30s:", numbers)
    assert app_connections(seeded, "tp-hammer-30s") == 0


def open_server_cursors(client) -> int:
    return client.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]


@pytest.mark.parametrize("limits", [{"max_connections": 1}, {"idle_timeout": 0.05}])
def test_abandoned_cursors_are_killed_even_when_their_pool_goes(mongodb_uri, seeded, limits):
    """A partially read cursor that is dropped schedules killCursors; its pool may be evicted or reaped
    at the same moment. The server must not be left with open cursors (they would live 10 minutes)."""
    base = open_server_cursors(seeded)
    with UserConnectionManager(mongodb_uri, appName="tp-abandon", **limits) as manager:
        for k in range(60):
            cursor = manager.get_database(tid(k % 3)).c.find().batch_size(3)
            next(cursor)
            del cursor
            if "idle_timeout" in limits and k % 10 == 0:
                time.sleep(0.07)
        wait_until(
            lambda: open_server_cursors(seeded) <= base, 10, "the server's open cursors to go back down"
        )
        assert manager.get_stats()["pools"]["pools_closed"] > 0


def test_slow_operation_outlives_idle_timeout_and_manual_close(mongodb_uri, seeded):
    """An operation that takes longer than the idle timeout keeps its pool open (its lease), and a manual
    close during it only takes effect once it is done."""
    app = "tp-slow-op"
    seeded.admin.command(
        "configureFailPoint",
        "failCommand",
        mode="alwaysOn",
        data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": 800, "appName": app},
    )
    try:
        with UserConnectionManager(mongodb_uri, idle_timeout=0.1, appName=app) as manager:
            coll = manager.get_database(tid(0)).c
            results: list = []
            threads = [
                threading.Thread(target=lambda: results.append(coll.find_one({"seed": 1}))) for _ in range(3)
            ]
            for th in threads:
                th.start()
            time.sleep(0.4)  # well past the idle timeout; the reaper has run several times
            assert manager.get_stats()["active_users"] == [tid(0)]
            assert manager.close_user_connection(tid(0)) is True
            for th in threads:
                th.join(10)
            assert [r["seed"] for r in results] == [1, 1, 1]
            assert manager.get_stats()["pools"]["operation_errors"] == 0
            wait_app_connections(seeded, app, lambda n: n == 0, 10, "the closed pool's connections to go")
    finally:
        seeded.admin.command("configureFailPoint", "failCommand", mode="off")
