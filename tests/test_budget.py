"""The connection budget (max_server_connections): what a pool reserves, which pools close to make room,
how a tenant waits when none can, and what stats and metrics show. Budgets here are explicit (no
first-contact lowering) and tiny, so a handful of tenants fill them."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
from pymongo.errors import ConfigurationError, WaitQueueTimeoutError
from tests.helpers import app_connections, wait_app_connections, wait_until

from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.variants import GroupConnectionManager, MemoryEfficientConnectionManager

# user_pool_size=1: a pool reserves 2 (one pooled connection, one polling monitor, one server).
TWO_POOLS = {"user_pool_size": 1, "max_server_connections": 4}


def budget(manager: UserConnectionManager) -> dict:
    return manager.get_stats()["budget"]


@pytest.fixture
def block_finds(pymongo_client):
    """Makes the server hold every `find` of an appName for `ms` milliseconds (keeps pools busy)."""
    armed = []

    def arm(app: str, ms: int) -> None:
        armed.append(app)
        pymongo_client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode="alwaysOn",
            data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": ms, "appName": app},
        )

    yield arm
    if armed:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")


def test_options_are_checked_and_reach_the_variants(mongodb_uri):
    for bad in (0, -1, "100", 2.5, True):
        with pytest.raises(ConfigurationError, match="max_server_connections must be a positive int"):
            UserConnectionManager(mongodb_uri, max_server_connections=bad)
    with pytest.raises(ConfigurationError, match=r"cannot hold one tenant's pool \(12 server connections"):
        UserConnectionManager(mongodb_uri, user_pool_size=11, max_server_connections=11)
    with pytest.raises(ConfigurationError, match=r"cannot hold 20 shared clients.*lower groups"):
        UserConnectionManager(mongodb_uri, strategy="grouped", groups=20, max_server_connections=30)
    with MemoryEfficientConnectionManager(mongodb_uri, max_server_connections=40) as m:
        b = budget(m)
        assert (b["max_server_connections"], b["source"], b["per_pool"]) == (40, "max_server_connections", 11)


def test_default_budget_is_lowered_to_what_the_server_holds(mongodb_uri, pymongo_client):
    status = pymongo_client.admin.command("serverStatus")["connections"]
    with UserConnectionManager(mongodb_uri) as m:
        m.get_database("bud_first").c.find_one()
        b = budget(m)
    # The test server announces tens of thousands: the fixed default (256) is the lower one.
    assert b["server_capacity"] is not None
    assert abs(b["server_capacity"] - (status["current"] + status["available"])) < 50
    assert b["max_server_connections"] == min(256, b["server_capacity"] * 2 // 5)
    assert b["source"] == ("server" if b["max_server_connections"] < 256 else "default")


def test_idle_pools_close_least_recently_used_first(mongodb_uri):
    with UserConnectionManager(mongodb_uri, **TWO_POOLS) as m:
        m.get_database("bud_a").c.find_one()
        m.get_database("bud_b").c.find_one()
        m.get_database("bud_a").c.find_one()  # b is now the least recently used
        m.get_database("bud_c").c.find_one()
        stats = m.get_stats()
        assert sorted(stats["active_users"]) == ["bud_a", "bud_c"]
        assert stats["budget"]["closed_for_budget"] == 1
        assert stats["pools"]["closed_budget"] == 1
        wait_until(lambda: budget(m)["reserved"] == 4, 5, "b's reservation to come back after its shutdown")


def test_a_pool_in_use_is_never_closed_for_the_budget(mongodb_uri):
    with UserConnectionManager(mongodb_uri, **TWO_POOLS) as m:
        coll = m.get_database("bud_reader").c
        coll.insert_many([{"i": i} for i in range(5)])
        cursor = coll.find({}, batch_size=2).sort("i", 1)
        assert next(cursor)["i"] == 0  # a live cursor: a lease on reader's pool
        m.get_database("bud_idle").c.find_one()
        m.get_database("bud_newcomer").c.find_one()  # room from "bud_idle", never from "bud_reader"
        assert sorted(m.get_stats()["active_users"]) == ["bud_newcomer", "bud_reader"]
        assert [d["i"] for d in cursor] == [1, 2, 3, 4]
        assert budget(m)["closed_for_budget"] == 1


def test_a_tenant_waits_then_times_out_when_every_pool_is_busy(mongodb_uri, block_finds):
    app = "tp-budget-busy"
    block_finds(app, 1500)
    with UserConnectionManager(mongodb_uri, appName=app, waitQueueTimeoutMS=400, **TWO_POOLS) as m:
        busy = [threading.Thread(target=m.get_database(t).c.find_one) for t in ("bud_busy1", "bud_busy2")]
        for t in busy:
            t.start()
        wait_until(lambda: budget(m)["in_use"] == 4, 5, "both pools to be busy")
        outcome: list = []

        def late() -> None:
            started = time.monotonic()
            try:
                m.get_database("bud_late").c.find_one()
                outcome.append("served")
            except WaitQueueTimeoutError as exc:
                outcome.append((exc, time.monotonic() - started))

        waiter = threading.Thread(target=late)
        waiter.start()
        # The waiter waits without the GIL: this thread reads the stats meanwhile.
        assert wait_until(lambda: budget(m)["waiting"] == 1, 5, "the late tenant to queue")
        waiter.join(10)
        exc, waited = outcome[0]
        assert 0.35 < waited < 1.4, "it must give up after waitQueueTimeoutMS, not when a pool frees up"
        message = str(exc)
        assert '"bud_late"' in message and "max_server_connections=4" in message
        assert "lower user_pool_size" in message and "waitQueueTimeoutMS" in message
        for t in busy:
            t.join(10)
        stats = m.get_stats()
        assert sorted(stats["active_users"]) == ["bud_busy1", "bud_busy2"], "busy pools must not be closed"
        b = stats["budget"]
        assert (b["wait_timeouts"], b["waiting"], b["closed_for_budget"]) == (1, 0, 0)
        text = m.metrics_text()
        assert "tenantpool_budget_limit 4\n" in text
        assert "tenantpool_budget_wait_timeouts_total 1\n" in text
        assert 'tenantpool_pools_closed_total{cause="budget"} 0' in text
        # Once a pool is idle, the late tenant gets one.
        assert m.get_database("bud_late").c.find_one() is None


def test_waiting_tenants_are_served_in_arrival_order(mongodb_uri, block_finds):
    app = "tp-budget-fifo"
    block_finds(app, 600)
    with UserConnectionManager(
        mongodb_uri, appName=app, user_pool_size=1, max_server_connections=2, waitQueueTimeoutMS=20_000
    ) as m:
        holder = threading.Thread(target=m.get_database("bud_holder").c.find_one)
        holder.start()
        wait_until(lambda: budget(m)["in_use"] == 2, 5, "the only pool to be busy")
        done: list[str] = []

        def serve(name: str) -> None:
            m.get_database(name).c.find_one()
            done.append(name)

        threads = []
        for i in range(4):
            t = threading.Thread(target=serve, args=(f"bud_w{i}",))
            t.start()
            threads.append(t)
            wait_until(lambda i=i: budget(m)["waiting"] == i + 1, 5, f"w{i} to queue")
        for t in [holder, *threads]:
            t.join(30)
        # One pool at a time, each held 600 ms by the fail point: served strictly in arrival order.
        assert done == ["bud_w0", "bud_w1", "bud_w2", "bud_w3"]
        assert budget(m)["peak_reserved"] == 2


def test_grouped_clients_are_fitted_into_the_budget(mongodb_uri, pymongo_client, caplog):
    app = "tp-budget-grouped"
    with caplog.at_level("WARNING", logger="tenantpool"):
        m = GroupConnectionManager(
            mongodb_uri, groups=4, group_pool_size=50, appName=app, max_server_connections=40
        )
    with m:
        assert "each gets maxPoolSize 9" in caplog.text  # 4 x (9 + 1 monitor) = 40
        for i in range(40):
            m.get_database(f"bud_g{i}").c.find_one()
        b = budget(m)
        assert (b["shared_pool_size"], b["reserved"]) == (9, 40)
        assert app_connections(pymongo_client, app) <= 40
    wait_app_connections(pymongo_client, app, lambda n: n == 0, 10, "the grouped clients to close")


def test_async_waiters_are_fair_and_a_cancelled_one_gives_up_its_place(mongodb_uri):
    async def main() -> None:
        async with AsyncUserConnectionManager(
            mongodb_uri, user_pool_size=1, max_server_connections=2, waitQueueTimeoutMS=20_000
        ) as m:
            # A session holds a lease on the only pool the budget allows.
            session = m.get_client("bud_holder").start_session()
            done: list[str] = []

            async def op(name: str) -> None:
                await m.get_database(name).c.find_one()
                done.append(name)

            tasks = {}
            for i in range(4):
                tasks[f"w{i}"] = asyncio.create_task(op(f"bud_w{i}"))
                while budget(m)["waiting"] < i + 1:  # queued in creation order
                    await asyncio.sleep(0.005)
            # The loop is not blocked while they wait: other coroutines run.
            assert await asyncio.wait_for(asyncio.sleep(0, result="ran"), 1) == "ran"
            tasks["w1"].cancel()
            while budget(m)["waiting"] != 3:
                await asyncio.sleep(0.005)
            await session.end_session()
            with pytest.raises(asyncio.CancelledError):
                await tasks["w1"]
            await asyncio.wait_for(asyncio.gather(tasks["w0"], tasks["w2"], tasks["w3"]), 20)
            assert done == ["bud_w0", "bud_w2", "bud_w3"]
            b = budget(m)
            assert (b["waiting"], b["wait_timeouts"], b["peak_reserved"]) == (0, 0, 2)

    asyncio.run(main())


def test_metrics_show_the_budget(mongodb_uri):
    with UserConnectionManager(mongodb_uri, **TWO_POOLS) as m:
        for t in ("bud_m1", "bud_m2", "bud_m3"):
            m.get_database(t).c.find_one()
        text = m.metrics_text()
    figures = dict(re.findall(r"^(tenantpool_budget_\w+) (\d+)$", text, re.M))
    assert figures["tenantpool_budget_limit"] == "4"
    assert figures["tenantpool_budget_reserved"] == "4"
    assert figures["tenantpool_budget_in_use"] == "0"
    assert figures["tenantpool_budget_waiting"] == "0"
    assert figures["tenantpool_budget_pools_closed_total"] == "1"
    assert 'tenantpool_pools_closed_total{cause="budget"} 1' in text


def test_a_refused_server_status_keeps_the_default(mongodb_uri, pymongo_client):
    # What a user without the clusterMonitor role gets: Unauthorized (13) from serverStatus.
    app = "tp-budget-refused"
    pymongo_client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode="alwaysOn",
        data={"failCommands": ["serverStatus"], "errorCode": 13, "appName": app},
    )
    try:
        with UserConnectionManager(mongodb_uri, appName=app) as m:
            assert m.get_database("bud_refused").c.find_one() is None
            b = budget(m)
    finally:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
    assert (b["source"], b["max_server_connections"], b["server_capacity"]) == (
        "default (serverStatus refused)",
        256,
        None,
    )


def test_a_burst_of_a_new_tenants_first_requests_opens_one_pool(mongodb_uri):
    # Room for exactly one pool: if each of the burst's requests reserved a pool of its own, they would
    # wait for the budget and close the tenant's own pool for each other.
    with UserConnectionManager(mongodb_uri, user_pool_size=1, max_server_connections=2) as m:
        # The budget is full (an idle pool): get_database opens nothing, the requests must make room.
        m.get_database("bud_before").c.find_one()
        start = threading.Barrier(20)
        errors: list[BaseException] = []

        def first_request() -> None:
            start.wait()
            try:
                m.get_database("bud_burst").c.find_one()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=first_request) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = m.get_stats()
    assert errors == []
    assert stats["pools"]["pools_created"] == 2
    assert stats["budget"]["closed_for_budget"] == 1, "only bud_before's pool may close for the burst"
    assert stats["active_users"] == ["bud_burst"]
