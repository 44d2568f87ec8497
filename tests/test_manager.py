"""The manager against a real mongod: the design document's example, concurrency, reaper, LRU cap and
bad input (issue: core)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from bson import ObjectId
from pymongo.errors import (
    ConfigurationError,
    DuplicateKeyError,
    InvalidName,
    InvalidOperation,
    ServerSelectionTimeoutError,
)
from tests.helpers import app_connections, wait_app_connections, wait_until

from tenantpool import Collection, Database, TenantClient, UserConnectionManager


@pytest.fixture
def manager(mongodb_uri):
    with UserConnectionManager(mongodb_uri, user_pool_size=5, idle_timeout=3600) as m:
        yield m


def test_design_document_example_runs_with_only_the_import_changed(mongodb_uri, pymongo_client):
    # Section 3.1 of the design document, verbatim but for the import and the URI.
    manager = UserConnectionManager(connection_string=mongodb_uri, user_pool_size=10, idle_timeout=3600)
    db_a = manager.get_database("user_a")
    db_a.posts.insert_one({"title": "Hello from User A", "content": "First post"})
    db_b = manager.get_database("user_b")
    db_b.posts.insert_one({"title": "Hello from User B", "content": "First post"})
    db_c = manager.get_database("user_c")
    db_c.posts.insert_one({"title": "Hello from User C", "content": "First post"})

    stats = manager.get_stats()
    assert stats["total_connections"] == 3
    assert stats["active_users"] == ["user_a", "user_b", "user_c"]
    assert stats["total_potential_connections"] == 30
    assert stats["user_pool_size"] == 10
    assert stats["idle_timeout"] == 3600

    assert manager.close_user_connection("user_a") is True
    assert manager.close_user_connection("user_a") is False
    assert manager.get_stats()["active_users"] == ["user_b", "user_c"]
    manager.close_all()
    # The document reads the stats after close_all: no connections, and the manager goes on.
    assert manager.get_stats()["total_connections"] == 0

    titles = {"user_a": "Hello from User A", "user_b": "Hello from User B", "user_c": "Hello from User C"}
    for user, title in titles.items():
        doc = pymongo_client[f"user_{user}_db"].posts.find_one({}, {"_id": 0})
        assert doc == {"title": title, "content": "First post"}


def test_get_database_returns_pymongo_like_objects(manager):
    db = manager.get_database("t1")
    assert isinstance(db, Database)
    assert db.name == "user_t1_db"
    assert isinstance(db.client, TenantClient) and db.client.user_id == "t1"
    assert isinstance(db.posts, Collection) and db.posts == db["posts"]
    assert db.posts.full_name == "user_t1_db.posts"
    with pytest.raises(AttributeError, match=r"database\['_private'\]"):
        db._private  # noqa: B018
    assert manager.get_database("t1", "user_t1_db").name == "user_t1_db"
    assert manager.get_client("t1")["user_t1_db"].name == "user_t1_db"
    assert manager.get_client("t1").get_database().name == "user_t1_db"
    # Other databases: refused by the isolation scope (tests/test_isolation.py), reached from a
    # platform client.
    assert manager.get_platform_client("t1")["other"].name == "other"


def test_tenants_are_isolated(manager):
    a = manager.get_database("alice")
    b = manager.get_database("bob")
    post_id = a.posts.insert_one({"secret": "alice's"}).inserted_id
    assert a.posts.find_one(post_id)["secret"] == "alice's"
    assert b.posts.find_one(post_id) is None
    assert b.posts.count_documents({}) == 0
    assert list(b.posts.find()) == []


def test_documents_round_trip_pymongo_types(manager, pymongo_client):
    import datetime
    import decimal

    from bson import Binary, Decimal128, Int64, Regex, Timestamp

    db = manager.get_database("types")
    doc = {
        "oid": ObjectId(),
        "when": datetime.datetime(2024, 5, 6, 7, 8, 9, 123000),
        "dec": Decimal128(decimal.Decimal("1.10")),
        "i64": Int64(2**40),
        "bin": Binary(b"\x00\x01", 5),
        "re": Regex("^a", "i"),
        "ts": Timestamp(12, 3),
        "nested": {"z": 1, "a": [1, "two", None, True, 2.5]},
    }
    inserted = db.things.insert_one(dict(doc)).inserted_id
    got = db.things.find_one({"_id": inserted})
    assert list(got) == ["_id", *doc], "key order must be preserved"
    for k, v in doc.items():
        assert got[k] == v, k
    # What pymongo reads back is the same document.
    assert pymongo_client["user_types_db"].things.find_one({"_id": inserted}) == got


def test_hundred_threads_each_with_its_own_tenant(mongodb_uri):
    errors: list[BaseException] = []
    found: dict[str, int] = {}
    start = threading.Barrier(100)

    with UserConnectionManager(mongodb_uri, user_pool_size=2) as manager:

        def work(i: int) -> None:
            try:
                start.wait()
                coll = manager.get_database(f"thread{i}").items
                ids = coll.insert_many([{"n": n, "owner": i} for n in range(20)]).inserted_ids
                coll.insert_one({"n": 20, "owner": i})
                docs = list(coll.find({"owner": i}).sort("n", 1))
                assert [d["n"] for d in docs] == list(range(21))
                assert {d["_id"] for d in docs[:20]} == set(ids)
                found[f"thread{i}"] = len(docs)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert found == {f"thread{i}": 21 for i in range(100)}
        # 100 pools of 2 connections and a monitor do not fit the default budget of 256: the least
        # recently used idle ones made room, and every tenant got a pool.
        stats = manager.get_stats()
        assert stats["total_connections"] == 256 // 3
        assert stats["budget"]["closed_for_budget"] >= 100 - 256 // 3
        closed = stats["budget"]["closed_for_budget"]
        assert stats["pools"]["pools_created"] == stats["total_connections"] + closed
        assert stats["budget"]["peak_reserved"] <= 256


def test_reaper_closes_idle_pools_and_the_next_call_reopens(mongodb_uri, pymongo_client):
    with UserConnectionManager(mongodb_uri, user_pool_size=3, idle_timeout=1, appName="tp-reaper") as manager:
        coll = manager.get_database("sleepy").c
        coll.insert_one({"x": 1})
        assert app_connections(pymongo_client, "tp-reaper") >= 1
        assert manager.get_stats()["active_users"] == ["sleepy"]

        wait_until(lambda: manager.get_stats()["active_users"] == [], 5, "the reaper to close the idle pool")
        assert manager.get_stats()["pools"]["closed_idle"] == 1
        wait_until(
            lambda: app_connections(pymongo_client, "tp-reaper") == 0,
            10,
            "the server to see the tenant's connections close",
        )

        # The same Collection object keeps working: a new pool is opened transparently.
        assert coll.find_one({"x": 1})["x"] == 1
        assert manager.get_stats()["active_users"] == ["sleepy"]


def test_reaper_never_closes_a_pool_under_a_live_cursor(mongodb_uri):
    with UserConnectionManager(mongodb_uri, user_pool_size=2, idle_timeout=0.5) as manager:
        coll = manager.get_database("reader").c
        coll.insert_many([{"i": i} for i in range(50)])
        cursor = coll.find().sort("i", 1).batch_size(10)
        first = [next(cursor) for _ in range(5)]
        # Another tenant goes idle and is reaped meanwhile: proof the reaper ran across our timeout.
        manager.get_database("other").c.insert_one({})
        wait_until(lambda: "other" not in manager.get_stats()["active_users"], 5, "the idle tenant's reaping")
        assert "reader" in manager.get_stats()["active_users"]
        rest = list(cursor)
        assert [d["i"] for d in first + rest] == list(range(50))
        # Once the cursor is exhausted, the pool may go.
        wait_until(lambda: "reader" not in manager.get_stats()["active_users"], 5, "the reader's reaping")


def test_lru_cap_closes_the_least_recently_used_idle_pool(mongodb_uri):
    with UserConnectionManager(mongodb_uri, user_pool_size=2, max_connections=3) as manager:
        for t in ("t1", "t2", "t3"):
            manager.get_database(t).c.insert_many([{"i": i} for i in range(30)])
        # t1 is the least recently used, but a live cursor makes it busy.
        busy = manager.get_database("t1").c.find().batch_size(5)
        next(busy)
        manager.get_database("t3").c.find_one()
        manager.get_database("t4").c.insert_one({})
        assert sorted(manager.get_stats()["active_users"]) == ["t1", "t3", "t4"]
        assert manager.get_stats()["pools"]["closed_lru"] == 1
        assert len(list(busy)) == 29  # the busy pool kept serving its cursor


def test_lru_cap_when_every_pool_is_busy_goes_over_then_trims(mongodb_uri):
    with UserConnectionManager(mongodb_uri, user_pool_size=2, max_connections=2) as manager:
        cursors = []
        for t in ("b1", "b2"):
            coll = manager.get_database(t).c
            coll.insert_many([{"i": i} for i in range(10)])
            cursor = coll.find().batch_size(2)
            next(cursor)
            cursors.append(cursor)
        # Both pools are busy: the third tenant is served anyway rather than failing or waiting.
        manager.get_database("b3").c.insert_one({})
        assert manager.get_stats()["total_connections"] == 3
        for c in cursors:
            c.close()
        wait_until(lambda: manager.get_stats()["total_connections"] == 2, 5, "the cap to be restored")


@pytest.mark.parametrize("bad", ["", "a.b", "a/b", "a b", "a$b", "a\x00b", "é", "x" * 60, "../admin"])
def test_invalid_tenant_ids_raise_invalid_name(manager, bad):
    with pytest.raises(InvalidName):
        manager.get_database(bad)
    with pytest.raises(InvalidName):
        manager.get_client(bad)


def test_non_string_tenant_ids_raise_type_error(manager):
    for bad in (1, None, b"a", ["a"]):
        with pytest.raises(TypeError):
            manager.get_database(bad)


def test_invalid_explicit_db_name_raises_invalid_name(mongodb_uri):
    bad_names = ("a.b", "", "x" * 64, "a$")
    # Allowed by the isolation scope, so that what is judged is the name itself.
    with UserConnectionManager(mongodb_uri, tenant_databases=lambda user_id: bad_names) as manager:
        for bad in bad_names:
            with pytest.raises(InvalidName):
                manager.get_database("ok", bad).c.find_one()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"maxPoolSiz": 5}, "maxPoolSiz"),
        ({"connectTimeoutMS": "soon"}, "connectTimeoutMS"),
        ({"user_pool_size": 0}, "user_pool_size"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"db_name_template": "no_placeholder"}, "db_name_template"),
    ],
)
def test_bad_options_raise_configuration_error_naming_them(mongodb_uri, kwargs, needle):
    with pytest.raises(ConfigurationError, match=needle):
        UserConnectionManager(mongodb_uri, **kwargs)


def test_options_reach_the_driver(mongodb_uri, pymongo_client):
    with UserConnectionManager(mongodb_uri, appName="tp-options-test", maxPoolSize=4) as manager:
        assert manager.user_pool_size == 4
        manager.get_database("opt").c.insert_one({})
        ops = pymongo_client.admin.command("currentOp", {"$all": True, "appName": "tp-options-test"})
        assert ops["inprog"], "no connection with the configured appName"


@pytest.mark.parametrize("strategy", ["per_user", "grouped", "shared"])
def test_close_all_leaves_a_usable_manager(mongodb_uri, pymongo_client, strategy):
    """The design document's close_all: every pool and shared client closed, stats at zero, and the
    manager goes on (the next get_database opens a pool again; handles the app holds keep working)."""
    app = f"tp-close-all-{strategy}"
    manager = UserConnectionManager(mongodb_uri, strategy=strategy, groups=2, appName=app)
    held = manager.get_database("ca_a").c
    for user in ("ca_a", "ca_b", "ca_c"):
        manager.get_database(user).c.insert_one({"user": user})
    assert app_connections(pymongo_client, app) > 0
    manager.close_all()
    stats = manager.get_stats()
    assert stats["total_connections"] == 0 and stats["active_users"] == []
    assert stats["total_potential_connections"] == 0
    wait_app_connections(pymongo_client, app, lambda n: n == 0, 10, "close_all to close every socket")
    manager.close_all()  # idempotent
    assert manager.get_database("ca_b").c.find_one({}, {"_id": 0}) == {"user": "ca_b"}
    assert held.count_documents({}) == 1
    assert manager.get_stats()["active_users"] == ["ca_b", "ca_a"]
    manager.close()
    wait_app_connections(pymongo_client, app, lambda n: n == 0, 10, "close to close every socket")
    for user in ("ca_a", "ca_b", "ca_c"):
        pymongo_client.drop_database(f"user_{user}_db")


def test_calls_after_close_raise_invalid_operation(mongodb_uri):
    manager = UserConnectionManager(mongodb_uri)
    coll = manager.get_database("late").c
    coll.insert_one({})
    manager.close()
    manager.close()  # idempotent
    manager.close_all()  # a no-op once closed
    for call in (
        lambda: manager.get_database("late"),
        lambda: manager.get_client("late"),
        lambda: manager.get_stats(),
        lambda: manager.close_user_connection("late"),
        lambda: coll.find_one(),
        lambda: coll.insert_one({}),
    ):
        with pytest.raises(InvalidOperation):
            call()


def test_unreachable_server_fails_within_server_selection_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with UserConnectionManager(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=500) as manager:
        db = manager.get_database("nobody")  # no round trip: must not raise
        started = time.monotonic()
        with pytest.raises(ServerSelectionTimeoutError):
            db.c.find_one()
        assert time.monotonic() - started < 5


def test_duplicate_key_raises_duplicate_key_error(manager):
    coll = manager.get_database("dups").users
    coll.create_index("email", unique=True)
    coll.insert_one({"email": "a@example.com"})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"email": "a@example.com"})
    assert info.value.code == 11000
    assert "E11000" in info.value.details["errmsg"]
    assert coll.count_documents({}) == 1


def test_password_never_appears_in_repr_or_errors():
    uri = "mongodb://admin:hunter2secret@127.0.0.1:1/?serverSelectionTimeoutMS=200"
    with UserConnectionManager(uri) as manager:
        assert "hunter2secret" not in repr(manager)
        assert "hunter2secret" not in repr(manager.get_database("x"))
        assert "hunter2secret" not in str(manager.get_stats())
        with pytest.raises(ServerSelectionTimeoutError) as info:
            manager.get_database("x").c.find_one()
        assert "hunter2secret" not in str(info.value)
