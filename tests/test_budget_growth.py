"""A per_user pool grows with its tenant's concurrency: it starts with room for one connection (plus one
for the driver's own commands and its monitor), gains a slot per operation that finds every slot busy
while the budget has room, and when the budget has none its operations share the slots it has rather
than fail. The server never sees more of its connections than the budget."""

from __future__ import annotations

import threading

from tests.helpers import app_connections, block, run_concurrently, wait_until

from tenantpool import UserConnectionManager


def budget(manager: UserConnectionManager) -> dict:
    return manager.get_stats()["budget"]


def slots(manager: UserConnectionManager, tenant: str) -> int:
    return manager.get_user_stats(tenant)["slots"]


def test_a_new_pool_reserves_room_for_two_connections_not_its_full_size(mongodb_uri):
    # spare_pools=0: the figures of the tenants' own pools alone (spares: tests/test_spare_pools.py).
    with UserConnectionManager(mongodb_uri, user_pool_size=10, max_server_connections=30, spare_pools=0) as m:
        for i in range(9):
            m.get_database(f"grow_few{i}").c.find_one()
        # 1 monitor + 2 connections each: nine pools where a full pool (11) would let two in.
        b = budget(m)
        assert (b["reserved"], b["closed_for_budget"]) == (27, 0)
        assert slots(m, "grow_few0") == 1


def test_a_busy_tenant_gains_slots_and_the_server_never_sees_more_than_the_budget(
    mongodb_uri, pymongo_client
):
    app = "tp-grow-busy"
    block(pymongo_client, app, 400)
    try:
        with UserConnectionManager(
            mongodb_uri,
            appName=app,
            user_pool_size=5,
            max_server_connections=20,
            waitQueueTimeoutMS=20_000,
            spare_pools=0,
        ) as m:
            peak = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak.append(app_connections(pymongo_client, app))

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                assert run_concurrently(m, "grow_busy", 4) == []
            finally:
                stop.set()
                sampler.join()
            assert slots(m, "grow_busy") == 4
            # 1 monitor + 4 slots + 1 for the driver's own commands, capped at the full pool (5 + 1).
            assert budget(m)["reserved"] == 6
            assert max(peak) <= 6
    finally:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")


def test_without_room_to_grow_a_tenants_operations_share_its_slots_instead_of_failing(
    mongodb_uri, pymongo_client
):
    app = "tp-grow-full"
    block(pymongo_client, app, 300)
    try:
        with UserConnectionManager(
            mongodb_uri, appName=app, user_pool_size=5, max_server_connections=6, waitQueueTimeoutMS=20_000
        ) as m:
            m.get_database("grow_other").c.find_one()  # 3 units, kept busy below by a session's lease
            session = m.get_client("grow_other").start_session()
            try:
                # 3 units left: one slot (+1 spare connection) and never more.
                assert run_concurrently(m, "grow_full", 4) == []
                assert slots(m, "grow_full") == 1
                b = budget(m)
                assert b["reserved"] <= 6 and b["wait_timeouts"] == 0
                assert m.get_user_stats("grow_full")["waits"] >= 3  # they queued on its one slot
            finally:
                session.end_session()
            # Once the other pool is idle it can be closed to let this one grow.
            assert run_concurrently(m, "grow_full", 3) == []
            wait_until(lambda: slots(m, "grow_full") >= 2, 10, "the pool to grow once room was made")
    finally:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
