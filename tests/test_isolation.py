"""Isolation scope: a tenant's handles never reach another tenant's database, by any route.

Every route is refused with OperationFailure code 13 before anything is sent (the tenant's operation
count does not move), and the victim's database is unchanged afterwards; in every strategy, sync and
async.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bson.dbref import DBRef
from pymongo.errors import OperationFailure

from tenantpool import AsyncUserConnectionManager, UserConnectionManager

VICTIM_DB = "user_victim_db"
OUT = {"db": VICTIM_DB, "coll": "pwned"}
STRATEGIES = ["per_user", "grouped", "shared"]


@pytest.fixture
def victim(pymongo_client: Any) -> Iterator[Any]:
    db = pymongo_client[VICTIM_DB]
    db.secrets.insert_one({"_id": 1, "secret": "s3cr3t"})
    yield db
    pymongo_client.drop_database(VICTIM_DB)
    pymongo_client.drop_database("user_attacker_db")


def assert_untouched(victim: Any) -> None:
    assert victim.list_collection_names() == ["secrets"]
    assert list(victim.secrets.find()) == [{"_id": 1, "secret": "s3cr3t"}]


def operations(manager: UserConnectionManager) -> int:
    stats = manager.get_user_stats("attacker")
    return 0 if stats is None else int(stats["operations"])


def refused(
    manager: UserConnectionManager, victim: Any, attempt: Callable[[], Any], db: str = VICTIM_DB
) -> str:
    before = operations(manager)
    with pytest.raises(OperationFailure) as info:
        attempt()
    assert info.value.code == 13
    assert info.value.details is not None and info.value.details["codeName"] == "Unauthorized"
    message = str(info.value)
    assert "'attacker'" in message and repr(db) in message
    assert operations(manager) == before, "something was sent for a refused access"
    assert_untouched(victim)
    return message


def _routes(client: Any, manager: UserConnectionManager) -> dict[str, tuple[Callable[[], Any], str]]:
    own = client.get_database() if client is not None else None
    return {
        "client[name]": (lambda: client[VICTIM_DB].secrets.find_one(), VICTIM_DB),
        "client.get_database": (lambda: client.get_database(VICTIM_DB), VICTIM_DB),
        "client.attribute": (lambda: client.user_victim_db, VICTIM_DB),
        "client.get_default_database": (lambda: client.get_default_database(VICTIM_DB), VICTIM_DB),
        "manager.get_database": (lambda: manager.get_database("attacker", VICTIM_DB), VICTIM_DB),
        "config database": (lambda: client.config.chunks.find_one(), "config"),
        "local database": (lambda: client["local"]["oplog.rs"].find_one(), "local"),
        "drop_database": (lambda: client.drop_database(VICTIM_DB), VICTIM_DB),
        "$out": (lambda: own.x.aggregate([{"$out": OUT}]), VICTIM_DB),
        "$merge": (lambda: own.x.aggregate([{"$merge": {"into": OUT}}]), VICTIM_DB),
        "$lookup": (
            lambda: own.x.aggregate(
                [{"$lookup": {"from": {"db": VICTIM_DB, "coll": "secrets"}, "pipeline": [], "as": "s"}}]
            ),
            VICTIM_DB,
        ),
        "$unionWith": (
            lambda: own.x.aggregate([{"$unionWith": {"coll": {"db": VICTIM_DB, "coll": "secrets"}}}]),
            VICTIM_DB,
        ),
        "nested $facet/$lookup/$merge": (
            lambda: own.x.aggregate(
                [
                    {
                        "$facet": {
                            "a": [
                                {
                                    "$lookup": {
                                        "from": "x",
                                        "pipeline": [{"$unionWith": {"db": VICTIM_DB, "coll": "secrets"}}],
                                        "as": "s",
                                    }
                                }
                            ]
                        }
                    },
                ]
            ),
            VICTIM_DB,
        ),
        "database aggregate $out": (lambda: own.aggregate([{"$documents": [{}]}, {"$out": OUT}]), VICTIM_DB),
        "raw aggregate command": (
            lambda: own.command("aggregate", "x", pipeline=[{"$out": OUT}], cursor={}),
            VICTIM_DB,
        ),
        "explain of an aggregate": (
            lambda: own.command(
                "explain", {"aggregate": "x", "pipeline": [{"$merge": {"into": OUT}}], "cursor": {}}
            ),
            VICTIM_DB,
        ),
        "mapReduce out.db": (
            lambda: own.command(
                "mapReduce",
                "x",
                map="function(){}",
                reduce="function(){}",
                out={"replace": "p", "db": VICTIM_DB},
            ),
            VICTIM_DB,
        ),
        "$db in a raw command": (lambda: own.command({"find": "secrets", "$db": VICTIM_DB}), VICTIM_DB),
        "view over another database": (
            lambda: own.create_collection(
                "v",
                viewOn="x",
                pipeline=[
                    {"$lookup": {"from": {"db": VICTIM_DB, "coll": "secrets"}, "as": "s", "pipeline": []}}
                ],
                check_exists=False,
            ),
            VICTIM_DB,
        ),
        "renameCollection into another database": (
            lambda: client.admin.command("renameCollection", "user_attacker_db.x", to=f"{VICTIM_DB}.pwned"),
            VICTIM_DB,
        ),
        "renameCollection out of another database": (
            lambda: client.admin.command(
                "renameCollection", f"{VICTIM_DB}.secrets", to="user_attacker_db.stolen"
            ),
            VICTIM_DB,
        ),
        "admin command": (lambda: client.admin.command("currentOp"), "admin"),
        "admin serverStatus": (lambda: client.admin.command("serverStatus"), "admin"),
        "admin collection": (lambda: client.admin["system.users"].find_one(), "admin"),
        "admin aggregate $currentOp": (
            lambda: client.admin.aggregate([{"$currentOp": {"allUsers": True}}]),
            "admin",
        ),
        "admin list_collection_names": (lambda: client.admin.list_collection_names(), "admin"),
        "admin watch": (lambda: client.admin.watch(), "admin"),
        "createUser on the own database": (
            lambda: own.command("createUser", "x", pwd="x", roles=[{"role": "readWrite", "db": VICTIM_DB}]),
            "user_attacker_db",
        ),
        "grantRolesToUser": (
            lambda: own.command("grantRolesToUser", "x", roles=[{"role": "root", "db": "admin"}]),
            "user_attacker_db",
        ),
        "dereference": (lambda: own.dereference(DBRef("secrets", 1, VICTIM_DB)), VICTIM_DB),
        "watch another database": (lambda: client[VICTIM_DB].watch(), VICTIM_DB),
    }


ROUTES = sorted(_routes(None, None))  # type: ignore[arg-type]


@pytest.fixture(params=STRATEGIES)
def attacker(request: Any, mongodb_uri: str, victim: Any) -> Iterator[tuple[UserConnectionManager, Any]]:
    manager = UserConnectionManager(mongodb_uri, strategy=request.param, groups=2)
    client = manager.get_client("attacker")
    client.get_database().x.insert_one({"_id": 1})
    yield manager, client
    manager.close_all()


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_out_of_the_scope_is_refused(attacker: Any, victim: Any, route: str) -> None:
    manager, client = attacker
    attempt, db = _routes(client, manager)[route]
    refused(manager, victim, attempt, db)


def test_the_refusal_says_what_to_do(attacker: Any, victim: Any) -> None:
    manager, client = attacker
    message = refused(manager, victim, lambda: client[VICTIM_DB])
    assert "'user_attacker_db'" in message and "tenant_databases" in message and "isolation='off'" in message


def test_listing_shows_only_the_tenants_own_databases(attacker: Any, victim: Any) -> None:
    _manager, client = attacker
    assert client.list_database_names() == ["user_attacker_db"]
    assert [d["name"] for d in client.list_databases()] == ["user_attacker_db"]
    # A raw listDatabases, with a filter of its own, is narrowed too.
    reply = client.admin.command("listDatabases", filter={"name": {"$regex": "^user_"}})
    assert [d["name"] for d in reply["databases"]] == ["user_attacker_db"]
    assert client.list_databases(filter={"name": VICTIM_DB}).to_list() == []


def test_what_stays_allowed(attacker: Any, victim: Any) -> None:
    _manager, client = attacker
    own = client.get_database()
    assert client.admin.command("ping")["ok"] == 1
    assert client.admin.command("hello")["isWritablePrimary"] is True
    assert "version" in client.admin.command("buildInfo")
    # Pipelines and renames that stay inside the tenant's database.
    own.x.aggregate([{"$out": "copy"}])
    own.x.aggregate([{"$merge": {"into": {"db": "user_attacker_db", "coll": "merged"}}}])
    own.x.aggregate([{"$lookup": {"from": "copy", "localField": "_id", "foreignField": "_id", "as": "c"}}])
    own.copy.rename("renamed")
    assert sorted(own.list_collection_names()) == ["merged", "renamed", "x"]
    assert own.dereference(DBRef("x", 1, "user_attacker_db")) == {"_id": 1}
    client.drop_database("user_attacker_db")
    assert client.list_database_names() == []
    assert_untouched(victim)


def test_session_and_transaction_routes(attacker: Any, victim: Any) -> None:
    manager, client = attacker
    own = client.get_database()
    with client.start_session() as session:
        refused(manager, victim, lambda: client[VICTIM_DB].secrets.find_one({}, session=session))
        with session.start_transaction():
            refused(
                manager,
                victim,
                lambda: own.x.aggregate([{"$merge": {"into": OUT}}], session=session).to_list(),
            )
            own.x.insert_one({"_id": 2}, session=session)
    assert own.x.count_documents({}) == 2


def test_bulk_and_change_stream_on_the_own_database(attacker: Any, victim: Any) -> None:
    manager, client = attacker
    from pymongo import InsertOne

    own = client.get_database()
    with own.watch() as stream:
        own.x.bulk_write([InsertOne({"_id": 3})])
        assert stream.next()["documentKey"] == {"_id": 3}
    refused(
        manager, victim, lambda: own.watch([{"$lookup": {"from": {"db": VICTIM_DB, "coll": "s"}, "as": "a"}}])
    )


@pytest.mark.parametrize("tenant_databases", [["files_{user_id}"], lambda user_id: {f"files_{user_id}"}])
def test_tenant_databases_widens_the_scope(
    mongodb_uri: str, victim: Any, pymongo_client: Any, tenant_databases: Any
) -> None:
    try:
        with UserConnectionManager(mongodb_uri, tenant_databases=tenant_databases) as manager:
            client = manager.get_client("attacker")
            client["files_attacker"].f.insert_one({"_id": 1})
            client.get_database().x.insert_one({"_id": 1})
            client.get_database().x.aggregate([{"$out": {"db": "files_attacker", "coll": "copy"}}])
            assert sorted(client.list_database_names()) == ["files_attacker", "user_attacker_db"]
            with pytest.raises(ValueError):  # pymongo's answer for a DBRef to another database it may use
                client.get_database().dereference(DBRef("f", 1, "files_attacker"))
            refused(manager, victim, lambda: client["files_victim"], "files_victim")
            refused(
                manager,
                victim,
                lambda: client.get_database().x.aggregate([{"$out": {"db": "files_victim", "coll": "c"}}]),
                "files_victim",
            )
    finally:
        pymongo_client.drop_database("files_attacker")


def test_isolation_off_is_an_explicit_opt_out(mongodb_uri: str, victim: Any, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="tenantpool"):
        manager = UserConnectionManager(mongodb_uri, isolation="off")
    assert any("isolation='off'" in r.getMessage() for r in caplog.records)
    with manager:
        client = manager.get_client("platform")
        assert client[VICTIM_DB].secrets.find_one() == {"_id": 1, "secret": "s3cr3t"}
        assert VICTIM_DB in client.list_database_names()
        assert manager.get_stats()["isolation"] == {"mode": "off", "refusals": {}}


def test_bad_isolation_settings_are_configuration_errors(mongodb_uri: str) -> None:
    from pymongo.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="isolation must be"):
        UserConnectionManager(mongodb_uri, isolation="none")
    with pytest.raises(ConfigurationError, match="tenant_databases"):
        UserConnectionManager(mongodb_uri, tenant_databases=["files"])


def test_refusals_are_counted_and_logged_once(attacker: Any, victim: Any, caplog: Any) -> None:
    manager, client = attacker
    with caplog.at_level(logging.WARNING, logger="tenantpool"):
        for _ in range(3):
            refused(manager, victim, lambda: client[VICTIM_DB])
        refused(manager, victim, lambda: client.get_database().x.aggregate([{"$out": OUT}]))
    logged = [r for r in caplog.records if "isolation: refused" in r.getMessage()]
    assert len(logged) == 1  # once per tenant and database
    text = manager.metrics_text()
    assert 'tenantpool_isolation_refusals_total{route="database"} 3' in text
    assert 'tenantpool_isolation_refusals_total{route="pipeline"} 1' in text
    assert manager.get_stats()["isolation"]["refusals"]["database"] == 3


# -- async -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_async_routes_are_refused(mongodb_uri: str, victim: Any, strategy: str) -> None:
    async def main() -> None:
        manager = AsyncUserConnectionManager(mongodb_uri, strategy=strategy, groups=2)
        client = manager.get_client("attacker")
        own = client.get_database()
        await own.x.insert_one({"_id": 1})

        async def attempt(coro_fn: Callable[[], Any]) -> None:
            before = operations(manager)
            with pytest.raises(OperationFailure) as info:
                result = coro_fn()
                if asyncio.iscoroutine(result):
                    await result
            assert info.value.code == 13
            assert operations(manager) == before
            assert_untouched(victim)

        await attempt(lambda: client[VICTIM_DB].secrets.find_one())
        await attempt(lambda: manager.get_database("attacker", VICTIM_DB))
        await attempt(lambda: own.x.aggregate([{"$out": OUT}]))
        await attempt(lambda: own.command("aggregate", "x", pipeline=[{"$merge": {"into": OUT}}], cursor={}))
        await attempt(lambda: client.admin.command("currentOp"))
        await attempt(lambda: client.admin.aggregate([{"$currentOp": {}}]))
        await attempt(lambda: client.admin.watch())
        await attempt(lambda: client.drop_database(VICTIM_DB))
        assert await client.list_database_names() == ["user_attacker_db"]
        assert (await client.admin.command("ping"))["ok"] == 1
        await manager.close_all()

    asyncio.run(main())
