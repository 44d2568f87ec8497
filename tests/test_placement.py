"""Tenants on several deployments: placement (callable, tier, catalog), failures confined to the
deployment concerned, statistics, against two real single-node replica sets. Moves: tests/test_move.py."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest
from pymongo.errors import (
    ConfigurationError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
)
from tests._placement_util import clients_of, p99, two_servers, wait_until

from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.testing.mongod import MongodProcess


@pytest.fixture(scope="module")
def servers():
    yield from two_servers()


@pytest.fixture(scope="module")
def clients(servers):
    yield from clients_of(servers)


def test_single_uri_manager_is_unchanged(servers):
    with UserConnectionManager(servers[0].uri) as m:
        m.get_database("solo").c.insert_one({"x": 1})
        assert "deployments" not in m.get_stats()
        assert "deployment" not in (m.get_user_stats("solo") or {})
        assert 'deployment="' not in m.metrics_text()
        with pytest.raises(InvalidOperation, match="several deployments"):
            m.move_tenant("solo", "eu")
    with pytest.raises(ConfigurationError, match="need deployments="):
        UserConnectionManager(servers[0].uri, catalog="main")


def test_placement_by_callable(servers, clients):
    a, b = servers
    placement = {"pc_eu": "eu"}.get  # everyone else: the default deployment (the first)
    with UserConnectionManager(deployments={"main": a.uri, "eu": b.uri}, placement=placement) as m:
        m.get_database("pc_eu").c.insert_one({"where": "eu"})
        m.get_database("pc_us").c.insert_one({"where": "main"})
        assert clients[1].user_pc_eu_db.c.find_one({}, {"_id": 0}) == {"where": "eu"}
        assert clients[0].user_pc_us_db.c.find_one({}, {"_id": 0}) == {"where": "main"}
        assert "user_pc_eu_db" not in clients[0].list_database_names()
        assert m.deployment_of("pc_eu") == "eu"
        assert m.get_user_stats("pc_eu")["deployment"] == "eu"
        stats = m.get_stats()
        assert stats["deployments"]["eu"]["active_users"] == ["pc_eu"]
        assert stats["deployments"]["main"]["active_users"] == ["pc_us"]
        assert sorted(stats["active_users"]) == ["pc_eu", "pc_us"]
        assert stats["pools"]["live_pools"] == 2
        text = m.metrics_text()
        assert 'tenantpool_pools_created_total{deployment="eu"} 1' in text
        assert 'tenantpool_pools_created_total{deployment="main"} 1' in text
        # One header per metric family, whatever the number of deployments.
        assert text.count("# TYPE tenantpool_operations_total ") == 1
        assert "tenantpool_move_gate_waits_total 0" in text


def test_placement_by_tier(servers, clients):
    a, b = servers
    tiers = {"tier_big": "enterprise", "tier_small": "free"}
    with UserConnectionManager(
        deployments={"main": a.uri, "dedicated": b.uri},
        tier_of=tiers.get,
        tier_deployments={"enterprise": "dedicated"},
    ) as m:
        m.get_database("tier_big").c.insert_one({"x": 1})
        m.get_database("tier_small").c.insert_one({"x": 1})
        assert m.deployment_of("tier_big") == "dedicated"
        assert m.deployment_of("tier_small") == "main"
        assert clients[1].user_tier_big_db.c.count_documents({}) == 1
        assert clients[0].user_tier_small_db.c.count_documents({}) == 1
        # Each deployment's core keeps the tier's own pool size.
        assert m.get_user_stats("tier_big")["pool_size"] == 20
        assert m.get_user_stats("tier_small")["pool_size"] == 3


def test_placement_by_catalog_is_shared_and_followed(servers, clients):
    a, b = servers
    deployments = {"main": a.uri, "eu": b.uri}
    with (
        UserConnectionManager(deployments=deployments, catalog="main") as m1,
        UserConnectionManager(deployments=deployments, catalog="main") as m2,
    ):
        m1.place_tenant("cat_1", "eu")
        m2.get_database("cat_1").c.insert_one({"by": "m2"})  # m2 reads the catalog entry m1 wrote
        assert clients[1].user_cat_1_db.c.count_documents({}) == 1
        # The catalog wins over the static placement, and a change reaches a manager that cached it.
        assert m2.deployment_of("cat_2") == "main"
        m1.place_tenant("cat_2", "eu")
        wait_until(lambda: m2.deployment_of("cat_2") == "eu", what="m2 to follow the catalog")
        m2.get_database("cat_2").c.insert_one({"x": 1})
        assert clients[1].user_cat_2_db.c.count_documents({}) == 1
        entry = clients[0].tenantpool_catalog.tenants.find_one({"_id": "cat_2"})
        assert entry["deployment"] == "eu" and entry["state"] == "active"
        with pytest.raises(ConfigurationError, match="'nowhere'"):
            m1.place_tenant("cat_3", "nowhere")
        # An entry deleted: the static placement again (the default deployment here).
        clients[0].tenantpool_catalog.tenants.delete_one({"_id": "cat_2"})
        wait_until(lambda: m2.deployment_of("cat_2") == "main", what="m2 to forget the deleted entry")


def test_unknown_deployment_fails_only_its_tenants(servers):
    a, b = servers
    placement = {"lost": "nowhere"}.get
    with UserConnectionManager(deployments={"main": a.uri, "eu": b.uri}, placement=placement) as m:
        with pytest.raises(ConfigurationError, match=r"tenant 'lost' is placed on deployment 'nowhere'"):
            m.get_database("lost").c.insert_one({"x": 1})
        m.get_database("found").c.insert_one({"x": 1})
        assert m.get_database("found").c.count_documents({}) == 1
    with pytest.raises(ConfigurationError, match="default_deployment 'x'"):
        UserConnectionManager(deployments={"main": a.uri}, default_deployment="x")
    with pytest.raises(ConfigurationError, match="catalog 'x'"):
        UserConnectionManager(deployments={"main": a.uri}, catalog="x")


def test_unreachable_deployment_fails_only_its_tenants(servers):
    a = servers[0]
    with MongodProcess() as doomed:
        placement = {"down_t": "doomed"}.get
        with UserConnectionManager(
            deployments={"main": a.uri, "doomed": doomed.uri},
            placement=placement,
            serverSelectionTimeoutMS=1000,
            connectTimeoutMS=1000,
        ) as m:
            healthy = m.get_database("up_t").c
            healthy.insert_one({"_id": 1})
            m.get_database("down_t").c.insert_one({"_id": 1})

            def sample(n):
                out = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    healthy.find_one({"_id": 1})
                    out.append(time.perf_counter() - t0)
                return out

            before = sample(300)
            doomed.stop()
            failures = []
            stop = threading.Event()

            def hammer():
                while not stop.is_set():
                    try:
                        m.get_database("down_t").c.find_one({})
                    except PyMongoError as exc:
                        failures.append(exc)

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: failures, what="the stopped deployment's tenant to fail")
                during = sample(300)  # any error here fails the test: 0 errors on the healthy deployment
            finally:
                stop.set()
                for t in threads:
                    t.join()
            assert failures
            print(
                f"\nhealthy tenant while the other deployment is down: "
                f"p50 {statistics.median(during) * 1e3:.2f} ms "
                f"(before {statistics.median(before) * 1e3:.2f} ms), "
                f"p99 {p99(during) * 1e3:.2f} ms (before {p99(before) * 1e3:.2f} ms)"
            )
            # Similar latency: the dead deployment's waits hold no slot of the healthy one's.
            assert statistics.median(during) < max(3 * statistics.median(before), 0.005)


def test_isolation_holds_per_tenant_on_every_deployment(servers):
    a, b = servers
    with UserConnectionManager(deployments={"main": a.uri, "eu": b.uri}, placement={"iso_eu": "eu"}.get) as m:
        db = m.get_database("iso_eu")
        db.c.insert_one({"x": 1})
        with pytest.raises(OperationFailure) as info:
            db.client["user_iso_us_db"].c.find_one()
        assert info.value.code == 13
        with pytest.raises(OperationFailure):
            m.get_database("iso_us").c.aggregate(
                [{"$lookup": {"from": {"db": "user_iso_eu_db", "coll": "c"}}}]
            )


def test_async_manager_routes_and_moves(servers, clients):
    a, b = servers

    async def main():
        async with AsyncUserConnectionManager(
            deployments={"main": a.uri, "eu": b.uri}, placement={"as_eu": "eu"}.get, catalog="main"
        ) as m:
            db = m.get_database("as_eu")
            await db.c.insert_many([{"i": i} for i in range(500)])
            await m.get_database("as_us").c.insert_one({"x": 1})
            assert m.get_user_stats("as_eu")["deployment"] == "eu"
            report = await m.move_tenant("as_eu", "main")
            assert report["documents"] == 500
            assert await db.c.count_documents({}) == 500  # the same handle, now on main
            assert m.deployment_of("as_eu") == "main"

    asyncio.run(main())
    assert clients[0].user_as_eu_db.c.count_documents({}) == 500
    assert "user_as_eu_db" not in clients[1].list_database_names()


def test_merged_metrics_and_totals():
    from tenantpool._placement_metrics import _sum_dicts, merge_metrics
    from tenantpool.placement import Placement

    text = merge_metrics(
        {
            "a": '# HELP m_total Ops.\n# TYPE m_total counter\nm_total 1\nm_by{tier="x"} 2\n',
            "b": '# HELP m_total Ops.\n# TYPE m_total counter\nm_total 3\nm_by{tier="x"} 4\n',
        }
    )
    assert text.splitlines() == [
        "# HELP m_total Ops.",
        "# TYPE m_total counter",
        'm_total{deployment="a"} 1',
        'm_by{deployment="a",tier="x"} 2',
        'm_total{deployment="b"} 3',
        'm_by{deployment="b",tier="x"} 4',
    ]
    totals = _sum_dicts(
        [{"n": 1, "per_pool": 11, "source": "default"}, {"n": 2, "per_pool": 11, "source": "server"}]
    )
    assert totals == {"n": 3, "per_pool": 11, "source": ["default", "server"]}
    rules = Placement(["main", "eu"], None, {"x": "eu"}.get, {"gold": "eu"}, {"g": "gold"}.get)
    assert rules.static("x") == ("eu", "placement")
    assert rules.static("g") == ("eu", "tier 'gold'")
    assert rules.static("other") == ("main", "default")


def test_a_forked_child_has_its_own_catalog_watcher_and_heartbeat(servers, clients):
    import os

    a, b = servers
    with UserConnectionManager(deployments={"main": a.uri, "eu": b.uri}, catalog="main") as m:
        m.place_tenant("forked", "eu")
        parent_token = m._core.catalog.token
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its token once its heartbeat is in, then leave at once
            code = 1
            try:
                catalog = m._core.catalog
                deadline = time.monotonic() + 20
                while catalog.processes.count_documents({"_id": catalog.token}) == 0:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    time.sleep(0.01)
                m.get_database("forked").c.insert_one({"by": "child"})
                # The child's budget holds its own catalog client's room only (not its parent's too).
                held = m._core.cores["main"].budget()["held"]
                os.write(write, f"{catalog.token} {held.get('(catalog)')}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        token, child_held = os.read(read, 100).decode().split()
        os.close(read)
        assert child_held == "5"
        assert m._core.cores["main"].budget()["held"] == {"(catalog)": 5}
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert token and token != parent_token
        assert token.startswith(f"{pid}-")
        assert clients[0].tenantpool_catalog.processes.count_documents({"_id": token}) == 1
        assert clients[1].user_forked_db.c.count_documents({"by": "child"}) == 1
        # The child left without closing its manager: a mover would wait for its heartbeat to go stale
        # (10 s). What close() would have done:
        clients[0].tenantpool_catalog.processes.delete_one({"_id": token})


def test_catalog_down_keeps_resolved_tenants_serving(servers):
    from pymongo.errors import AutoReconnect

    a, b = servers
    with MongodProcess() as catalog_server:
        with UserConnectionManager(
            deployments={"main": a.uri, "eu": b.uri, "cat": catalog_server.uri},
            placement={"cd_eu": "eu"}.get,
            catalog="cat",
        ) as m:
            known = m.get_database("cd_eu").c
            known.insert_one({"x": 1})
            catalog_server.stop()
            for _ in range(50):  # resolved before: served from the cache, no error
                known.find_one({})
            with pytest.raises(AutoReconnect, match="where tenant 'cd_new' lives is unknown"):
                m.get_database("cd_new").c.find_one({})


def test_a_tenants_client_describes_its_own_deployment(servers):
    a, b = servers
    with UserConnectionManager(
        deployments={"main": a.uri, "eu": b.uri}, placement={"topo_eu": "eu"}.get
    ) as m:
        eu, main = m.get_client("topo_eu"), m.get_client("topo_main")
        port_of = {
            name: int(s.uri.split("//")[1].split("/")[0].rsplit(":", 1)[1])
            for name, s in (("a", a), ("b", b))
        }
        assert eu.address[1] == port_of["b"]
        assert main.address[1] == port_of["a"]
        # Each keeps its deployment's description, whichever tenant spoke last.
        assert {addr[1] for addr in eu.topology_description.server_descriptions()} == {port_of["b"]}
        assert {addr[1] for addr in main.topology_description.server_descriptions()} == {port_of["a"]}
        assert eu != m.get_client("topo_eu2") and eu == m.get_client("topo_eu")


def test_the_platforms_own_clients_hold_room_in_the_budget(servers, clients):
    """``hold_room``: counted as a tenant's pool, listed, waited for in the same FIFO queue, refused with
    the same error, released once."""
    from pymongo.errors import WaitQueueTimeoutError
    from tests.helpers import app_connections

    a, b = servers
    # per_user pools of 2 cost 3 (2 + the polling monitor); the catalog's client costs 5 (4 + 1).
    with UserConnectionManager(
        deployments={"main": a.uri, "eu": b.uri},
        catalog="main",
        user_pool_size=2,
        max_server_connections=10,
        waitQueueTimeoutMS=1000,
    ) as m:
        main, eu = m._core.cores["main"], m._core.cores["eu"]
        stats = m.get_stats()["deployments"]
        assert stats["main"]["budget"]["held"] == {"(catalog)": 5}
        assert stats["main"]["budget"]["reserved"] == 5
        assert stats["eu"]["budget"]["held"] == {}
        # What the catalog's client really opened is within what it holds.
        assert 1 <= app_connections(clients[0], "tenantpool-catalog") <= 5
        held = eu.hold_room("(move)", 4)
        assert (held.what, held.units) == ("(move)", 5)
        assert m.get_stats()["deployments"]["eu"]["budget"]["held"] == {"(move)": 5}
        m.place_tenant("room_t", "eu")
        coll = m.get_database("room_t").c
        coll.insert_many([{"i": i} for i in range(10)])
        cursor = coll.find().batch_size(2)
        next(cursor)  # the tenant's pool is in use: it cannot be closed to make room
        assert eu.budget()["reserved"] == 8
        with pytest.raises(WaitQueueTimeoutError, match=r"own client \(move\) waited \d+ ms"):
            eu.hold_room("(move)", 4)
        # A waiting hold gets its room, in turn, once some is given back.
        got = []
        waiter = threading.Thread(target=lambda: got.append(eu.hold_room("(move)", 2)))
        waiter.start()
        wait_until(lambda: eu.budget()["waiting"] == 1, what="the hold to wait for room")
        assert held.release() and not held.release()
        assert held.units == 0
        waiter.join()
        assert got[0].units == 3
        assert eu.budget()["held"] == {"(move)": 3}
        cursor.close()
        del got[0]  # dropped: released
        assert eu.budget()["held"] == {}
        for core in (main, eu):
            assert core.budget()["peak_reserved"] <= 10
        with pytest.raises(ConfigurationError, match=r"own client \(move\) needs 12 .* raise max_server"):
            eu.hold_room("(move)", 11)
    assert main.budget()["held"] == {}, "closing the manager released the catalog's room"
    with pytest.raises(ConfigurationError, match=r"own client \(catalog\) needs 5 .* raise max_server"):
        UserConnectionManager(
            deployments={"main": a.uri}, catalog="main", user_pool_size=1, max_server_connections=4
        )
