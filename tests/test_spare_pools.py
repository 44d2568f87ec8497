"""Spare pools (issue 15, a new tenant made cheap): a per_user manager keeps warm clients for its next
new tenants, made once its first tenant's pool is, out of room the budget can spare; a new tenant's pool
is one of them, its command events count for that tenant (the warm-up's own are nobody's), and they go
when the budget nears its bound, when unused for the idle timeout and on close. Against the real mongod.
"""

from __future__ import annotations

import itertools
import os

import pytest
from pymongo import monitoring
from pymongo.errors import ConfigurationError
from tests.helpers import (
    app_connections,
    block,
    eventually,
    run,
    run_concurrently,
    wait_app_connections,
    wait_until,
)

from tenantpool import AsyncUserConnectionManager, UserConnectionManager

_ids = itertools.count()


def tenant(prefix: str) -> str:
    return f"{prefix}{os.getpid()}_{next(_ids)}"


def budget(m: UserConnectionManager) -> dict:
    return m.get_stats()["budget"]


def spares_ready(m: UserConnectionManager, n: int) -> None:
    wait_until(lambda: budget(m)["spare_pools"] == n, 10, f"{n} spare pools warm")


def test_none_before_the_first_tenant_then_two_warm_ones(mongodb_uri):
    with UserConnectionManager(mongodb_uri) as m:
        b = budget(m)
        assert (b["spare_pools"], b["spare_pools_warming"]) == (0, 0), "an idle manager opens nothing"
        m.get_database(tenant("sp")).c.find_one()
        spares_ready(m, 2)
        b = budget(m)
        # A spare holds what a new pool reserves: a monitor and two connections per server.
        assert b["reserved"] == 3 * b["servers"] * (b["monitors_per_server"] + 2)


def test_a_new_tenant_gets_a_spare_and_it_is_replaced(mongodb_uri, pymongo_client):
    app = "tp-spare-take"
    with UserConnectionManager(mongodb_uri, appName=app) as m:
        m.get_database(tenant("sp")).c.find_one()
        spares_ready(m, 2)
        # Each spare: a monitor and the pooled connection its warm-up's ping opened.
        before = wait_app_connections(pymongo_client, app, lambda n: n == 6, 10, "1 pool, 2 spares")
        assert budget(m)["spare_pools_used"] == 0
        m.get_database(tenant("sp")).c.find_one()
        assert budget(m)["spare_pools_used"] == 1
        # The new tenant's find used the spare's open connection: no socket of its own; one refill.
        spares_ready(m, 2)
        assert wait_app_connections(pymongo_client, app, lambda n: n == 8, 10, "one more spare") == before + 2
        assert len(m.get_stats()["active_users"]) == 2


def test_an_async_new_tenant_gets_a_spare_too(mongodb_uri):
    async def main() -> tuple[bool, dict]:
        async with AsyncUserConnectionManager(mongodb_uri) as m:
            await m.get_database(tenant("spa")).c.find_one()
            await eventually(lambda: m.get_stats()["budget"]["spare_pools"] == 2, 10, "2 spares warm")
            doc = await m.get_database(tenant("spa")).c.find_one()
            return doc is None, m.get_stats()["budget"]

    empty, b = run(main())
    assert empty and b["spare_pools_used"] == 1


def test_a_spares_command_events_are_its_tenants_and_its_warm_up_is_nobodys(mongodb_uri):
    seen: list[monitoring.CommandStartedEvent] = []

    class Rec(monitoring.CommandListener):
        def started(self, event):
            seen.append(event)

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    with UserConnectionManager(mongodb_uri, event_listeners=[Rec()]) as m:
        first, second = tenant("spm"), tenant("spm")
        m.get_database(first).c.find_one()
        spares_ready(m, 2)
        m.get_database(second).c.find_one()
        spares_ready(m, 2)
    assert [e.command_name for e in seen] == ["find", "find"], "no warm-up ping reported"
    assert [e.database_name for e in seen] == [f"user_{first}_db", f"user_{second}_db"]
    assert [e.tenant for e in seen] == [first, second]


def test_spares_never_make_a_tenants_pool_close_for_room(mongodb_uri):
    # 4 pools of 3 units: a spare takes room only while as much again stays free.
    with UserConnectionManager(mongodb_uri, max_server_connections=12) as m:
        tenants = [tenant("spb") for _ in range(4)]
        m.get_database(tenants[0]).c.find_one()
        spares_ready(m, 2)
        for t in tenants[1:]:
            m.get_database(t).c.find_one()
        b = budget(m)
        assert (b["closed_for_budget"], b["waits"]) == (0, 0), b
        assert b["spare_pools"] + b["spare_pools_warming"] == 0, "no room to spare at 12 of 12"
        assert sorted(m.get_stats()["active_users"]) == sorted(tenants)


def test_close_all_closes_the_spares_and_the_next_pool_brings_them_back(mongodb_uri, pymongo_client):
    app = "tp-spare-close"
    with UserConnectionManager(mongodb_uri, appName=app) as m:
        m.get_database(tenant("spc")).c.find_one()
        spares_ready(m, 2)
        m.close_all()
        assert budget(m)["spare_pools"] == 0
        wait_app_connections(pymongo_client, app, lambda n: n == 0, 10, "every socket closed")
        m.get_database(tenant("spc")).c.find_one()
        spares_ready(m, 2)
    wait_app_connections(pymongo_client, app, lambda n: n == 0, 10, "the spares closed with the manager")


def test_unused_spares_close_with_the_idle_timeout(mongodb_uri, pymongo_client):
    app = "tp-spare-idle"
    with UserConnectionManager(mongodb_uri, appName=app, idle_timeout=0.3) as m:
        m.get_database(tenant("spi")).c.find_one()
        spares_ready(m, 2)
        wait_until(lambda: budget(m)["spare_pools"] == 0 and not m.get_stats()["active_users"], 10, "reaped")
        wait_app_connections(pymongo_client, app, lambda n: n == 0, 10, "no socket left")
        # Nothing is made again until a tenant comes back.
        assert budget(m)["spare_pools_warming"] == 0
        assert app_connections(pymongo_client, app) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"spare_pools": 0},
        {"strategy": "shared"},
        {"strategy": "grouped"},
        {"tier_pool_sizes": {"free": 3}, "tier_of": lambda user_id: "free"},
    ],
    ids=["off", "shared", "grouped", "tiers"],
)
def test_no_spares_where_a_spare_cannot_stand_for_any_new_tenant(mongodb_uri, options):
    with UserConnectionManager(mongodb_uri, **options) as m:
        for _ in range(3):
            m.get_database(tenant("spn")).c.find_one()
        b = budget(m)
        assert (b["spare_pools"], b["spare_pools_warming"]) == (0, 0)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_a_bad_spare_pools_is_refused(mongodb_uri, bad):
    with pytest.raises(ConfigurationError, match="spare_pools"):
        UserConnectionManager(mongodb_uri, spare_pools=bad)


def test_whoever_waits_for_room_gets_the_spares_room_before_any_pool_is_closed(mongodb_uri, pymongo_client):
    # 12 units: the tenant's pool (3) and two spares (3 each) leave 3 free. Seven blocked finds grow the
    # tenant's pool by those 3, then wait for more: the spares give theirs back, no pool is closed.
    app = "tp-spare-yield"
    block(pymongo_client, app, 400)
    try:
        with UserConnectionManager(
            mongodb_uri, appName=app, max_server_connections=12, waitQueueTimeoutMS=20_000
        ) as m:
            busy = tenant("spy")
            m.get_database(busy).c.find_one()
            spares_ready(m, 2)
            assert budget(m)["reserved"] == 9
            assert run_concurrently(m, busy, 7) == []
            b = budget(m)
            assert m.get_user_stats(busy)["slots"] == 7, "grew into the spares' room"
            assert (b["spare_pools"], b["closed_for_budget"]) == (0, 0), b
            assert b["reserved"] <= 12, b
    finally:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
