"""Tailable cursors against a real mongod: ``find(cursor_type=TAILABLE | TAILABLE_AWAIT)`` on capped
collections, with pymongo 4's semantics (an empty batch ends an iteration, not the cursor), the
await time sent with each getMore, no read-ahead, a wait that releases the GIL and that ``close()``
from another thread (or task) ends at once, and tenant isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pymongo import CursorType
from pymongo.errors import InvalidOperation, OperationFailure
from tests.helpers import wait_until

from tenantpool import AsyncUserConnectionManager, UserConnectionManager

LONG_WAIT_MS = 5_000  # an await time no test waits out (each checks it returned well before). Not
# longer: an abandoned getMore waits that long on the server, holding its collection (a drop waits).


@pytest.fixture(scope="module")
def manager(mongodb_uri):
    # isolation="off": these tests name their databases explicitly.
    with UserConnectionManager(mongodb_uri, isolation="off") as m:
        yield m


@pytest.fixture
def capped(manager, db_name):
    """The tenant's capped collection ``log``, holding documents 0, 1, 2."""
    db = manager.get_database("alice", db_name)
    db.create_collection("log", capped=True, size=64 * 1024)
    db.log.insert_many([{"_id": i} for i in range(3)])
    return db.log


@pytest.fixture
def profiled(pymongo_client, db_name):
    """The commands the server ran on the test database, by comment (profiler level 2)."""
    db = pymongo_client[db_name]
    db.command("profile", 2)

    def commands(tag: str, name: str) -> list[dict]:
        query = {"$or": [{"command.comment": tag}, {"originatingCommand.comment": tag}]}
        entries = list(db.system.profile.find(query).sort("ts", 1))
        return [e["command"] for e in entries if next(iter(e["command"])) == name]

    yield commands
    db.command("profile", 0)


def ids(docs) -> list[Any]:
    return [d["_id"] for d in docs]


def take(cursor, n: int) -> list[Any]:
    """The next ``n`` documents, without the extra getMore of ``to_list()`` (which, as in pymongo, asks
    for more until a batch comes back empty: a full await time on a tailable-await cursor)."""
    return [next(cursor) for _ in range(n)]


# -- semantics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cursor_type", [CursorType.TAILABLE, CursorType.TAILABLE_AWAIT])
def test_sees_documents_inserted_after_it_was_opened(capped, cursor_type):
    cursor = capped.find(cursor_type=cursor_type)
    if cursor_type == CursorType.TAILABLE_AWAIT:
        # The server accepts an await time only with awaitData (pymongo sends it on either).
        cursor.max_await_time_ms(50)
    assert ids(cursor) == [0, 1, 2]
    # The iteration ended on an empty batch, but the cursor lives on.
    assert cursor.alive
    with pytest.raises(StopIteration):
        next(cursor)
    assert cursor.alive
    capped.insert_many([{"_id": 3}, {"_id": 4}])
    assert ids(cursor) == [3, 4]
    capped.insert_one({"_id": 5})
    assert cursor.to_list() == [{"_id": 5}]
    assert cursor.to_list() == []
    assert cursor.alive
    cursor.close()
    assert not cursor.alive
    assert list(cursor) == []


def test_on_an_empty_capped_collection_the_server_ends_it(manager, db_name):
    # The server gives a tailable cursor on an empty collection no cursor id: it is dead at once.
    db = manager.get_database("alice", db_name)
    db.create_collection("empty", capped=True, size=4096)
    cursor = db.empty.find(cursor_type=CursorType.TAILABLE_AWAIT)
    assert cursor.to_list() == []
    assert not cursor.alive


def test_a_non_capped_collection_is_refused_by_the_server(manager, db_name):
    db = manager.get_database("alice", db_name)
    db.plain.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as info:
        db.plain.find(cursor_type=CursorType.TAILABLE).to_list()
    assert "capped" in str(info.value)


def test_find_and_getmore_carry_tailable_await_data_and_max_time(capped, profiled):
    cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT, comment="tagged", batch_size=2)
    cursor.max_await_time_ms(120)
    assert ids(cursor) == [0, 1, 2]
    cursor.close()
    (find,) = profiled("tagged", "find")
    assert find["tailable"] is True and find["awaitData"] is True
    assert "maxTimeMS" not in find  # the await time is a getMore option
    get_mores = profiled("tagged", "getMore")
    assert get_mores and all(g["maxTimeMS"] == 120 for g in get_mores)


def test_max_await_time_ms_is_ignored_on_a_non_tailable_cursor(capped, profiled):
    # pymongo's rule: only a tailable cursor sends it.
    cursor = capped.find(comment="plain", batch_size=1).max_await_time_ms(5_000)
    assert ids(cursor) == [0, 1, 2]
    get_mores = profiled("plain", "getMore")
    assert get_mores and all("maxTimeMS" not in g for g in get_mores)


def test_an_empty_round_waits_about_max_await_time_ms(capped):
    cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(400)
    assert len(cursor.to_list()) == 3
    started = time.monotonic()
    assert cursor.to_list() == []
    waited = time.monotonic() - started
    assert 0.35 <= waited < 5, waited
    # Without awaitData the server answers at once.
    plain = capped.find(cursor_type=CursorType.TAILABLE)
    assert len(plain.to_list()) == 3
    started = time.monotonic()
    assert plain.to_list() == []
    assert time.monotonic() - started < 0.35
    cursor.close()
    plain.close()


def test_a_waiting_getmore_returns_as_soon_as_a_document_comes(manager, capped):
    cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(LONG_WAIT_MS)
    assert ids(take(cursor, 3)) == [0, 1, 2]
    in_flight = manager.get_user_stats("alice")["in_flight"]
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(next(cursor)))
    reader.start()
    # The reader's getMore holds a quota slot while the server waits; this thread keeps running (the
    # wait is without the GIL) and writes what the reader waits for.
    wait_until(lambda: manager.get_user_stats("alice")["in_flight"] > in_flight, 10, "the reader's getMore")
    started = time.monotonic()
    capped.insert_one({"_id": "late"})
    reader.join(timeout=20)
    assert not reader.is_alive()
    assert got == [{"_id": "late"}]
    assert time.monotonic() - started < LONG_WAIT_MS / 1000 / 2
    cursor.close()


def test_close_from_another_thread_ends_a_waiting_getmore(manager, capped, pymongo_client):
    def open_cursors() -> int:
        return pymongo_client.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]

    before = open_cursors()
    cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(LONG_WAIT_MS)
    assert ids(take(cursor, 3)) == [0, 1, 2]
    in_flight = manager.get_user_stats("alice")["in_flight"]
    outcome: list[Any] = []

    def reader() -> None:
        try:
            outcome.append(next(cursor))
        except StopIteration:
            outcome.append("stopped")

    t = threading.Thread(target=reader)
    t.start()
    wait_until(lambda: manager.get_user_stats("alice")["in_flight"] > in_flight, 10, "the reader's getMore")
    assert cursor.alive
    started = time.monotonic()
    cursor.close()
    t.join(timeout=10)
    assert not t.is_alive(), "next() kept waiting after close()"
    assert time.monotonic() - started < LONG_WAIT_MS / 1000 / 2
    assert outcome == ["stopped"]
    assert not cursor.alive
    # The server cursor is killed (the server lets the abandoned getMore wait out its await time
    # first, as it does when pymongo kills a cursor in use), and the tenant's pool is free again.
    wait_until(lambda: open_cursors() <= before, LONG_WAIT_MS / 1000 + 10, "the server to kill the cursor")
    wait_until(lambda: manager.get_user_stats("alice")["in_flight"] == in_flight, 10, "the quota slot back")


def test_no_read_ahead_on_a_tailable_cursor(manager, capped):
    # A plain cursor starts fetching its next batch from the third one on; a tailable-await one must
    # not, or that getMore would sit on the server for max_await_time_ms holding a quota slot.
    capped.insert_many([{"_id": i} for i in range(3, 8)])
    cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT, batch_size=1).max_await_time_ms(LONG_WAIT_MS)
    assert [next(cursor)["_id"] for _ in range(4)] == [0, 1, 2, 3]
    stats = manager.get_user_stats("alice")
    assert stats["in_flight"] == 0
    # Bounded look for a getMore started in the background (one would show within milliseconds).
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert manager.get_user_stats("alice")["in_flight"] == 0, "a getMore ran ahead of the caller"
        time.sleep(0.02)
    assert ids(cursor.to_list(4)) == [4, 5, 6, 7]
    cursor.close()


def test_capped_rollover_ends_the_cursor_quietly(manager, db_name):
    # pymongo: a getMore that finds its position overwritten (CappedPositionLost) ends a tailable
    # cursor (alive False) without raising.
    db = manager.get_database("alice", db_name)
    db.create_collection("small", capped=True, size=4096, max=3)
    db.small.insert_many([{"_id": i} for i in range(3)])
    cursor = db.small.find(cursor_type=CursorType.TAILABLE, batch_size=1)
    assert next(cursor) == {"_id": 0}
    db.small.insert_many([{"_id": i} for i in range(3, 20)])
    assert cursor.to_list() == []
    assert not cursor.alive


def test_index_access_is_not_tailable(capped):
    # pymongo clears the tailable flags for cursor[i] (one document, a hard limit).
    assert capped.find(cursor_type=CursorType.TAILABLE_AWAIT)[1] == {"_id": 1}


def test_clone_keeps_type_and_await_time(capped, profiled):
    cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT, comment="cloned", batch_size=1)
    cursor.max_await_time_ms(70)
    clone = cursor.clone()
    assert ids(clone.to_list()) == [0, 1, 2]
    assert clone.alive
    clone.close()
    get_mores = profiled("cloned", "getMore")
    assert get_mores and all(g["maxTimeMS"] == 70 for g in get_mores)


def test_add_option_makes_a_cursor_tailable(capped):
    cursor = capped.find().add_option(CursorType.TAILABLE_AWAIT).max_await_time_ms(50)
    assert ids(cursor) == [0, 1, 2]
    assert cursor.alive
    capped.insert_one({"_id": 9})
    assert ids(cursor) == [9]
    cursor.close()


# -- refusals ------------------------------------------------------------------------------------------


def test_exhaust_is_refused_by_name(capped):
    with pytest.raises(InvalidOperation, match="exhaust cursors are not supported"):
        capped.find(cursor_type=CursorType.EXHAUST)
    # pymongo's own check comes first.
    with pytest.raises(InvalidOperation, match="Can't use limit and exhaust together"):
        capped.find(cursor_type=CursorType.EXHAUST, limit=2)
    with pytest.raises(InvalidOperation, match="exhaust cursors are not supported"):
        capped.find().add_option(64)
    with pytest.raises(ValueError, match="not a valid value for cursor_type"):
        capped.find(cursor_type=5)


def test_max_await_time_ms_type_is_checked(capped):
    with pytest.raises(TypeError, match="max_await_time_ms must be an integer or None"):
        capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms("1")
    # As in pymongo, it is a cursor method, not a find() argument.
    with pytest.raises(TypeError):
        capped.find(cursor_type=CursorType.TAILABLE_AWAIT, max_await_time_ms=10)


# -- tenants and sessions ----------------------------------------------------------------------------


def test_tenant_isolation(manager, db_name, pymongo_client):
    a = manager.get_database("alice", db_name)
    b = manager.get_database("bob", f"{db_name}_b")
    try:
        for db in (a, b):
            db.create_collection("log", capped=True, size=4096)
            db.log.insert_one({"_id": "seed", "owner": db.name})
        tail_a = a.log.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(50)
        tail_b = b.log.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(50)
        assert tail_a.to_list() == [{"_id": "seed", "owner": a.name}]
        assert tail_b.to_list() == [{"_id": "seed", "owner": b.name}]
        b.log.insert_one({"_id": "b1"})
        a.log.insert_one({"_id": "a1"})
        assert ids(tail_a) == ["a1"]
        assert ids(tail_b) == ["b1"]
        tail_a.close()
        assert tail_b.alive
        tail_b.close()
    finally:
        pymongo_client.drop_database(f"{db_name}_b")


def test_in_a_session(manager, capped):
    with manager.get_client("alice").start_session() as s:
        cursor = capped.find(cursor_type=CursorType.TAILABLE_AWAIT, session=s).max_await_time_ms(50)
        assert ids(cursor) == [0, 1, 2]
        capped.insert_one({"_id": 3})
        assert ids(cursor) == [3]
        assert cursor.alive
        cursor.close()


# -- asyncio -------------------------------------------------------------------------------------------


def test_async_tailable_cursor(mongodb_uri, db_name):
    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, isolation="off") as m:
            db = m.get_database("alice", db_name)
            await db.create_collection("alog", capped=True, size=4096)
            await db.alog.insert_many([{"_id": i} for i in range(2)])
            cursor = db.alog.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(50)
            assert [d["_id"] async for d in cursor] == [0, 1]
            assert cursor.alive
            await db.alog.insert_one({"_id": 2})
            assert await cursor.to_list() == [{"_id": 2}]

            # A waiting next() sees a document another task inserts...
            waiting = db.alog.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(LONG_WAIT_MS)
            assert [await waiting.next() for _ in range(3)] == [{"_id": i} for i in range(3)]
            baseline = m.get_user_stats("alice")["in_flight"]
            task = asyncio.ensure_future(waiting.next())
            while m.get_user_stats("alice")["in_flight"] == baseline:
                await asyncio.sleep(0.02)
            await db.alog.insert_one({"_id": 3})
            assert await asyncio.wait_for(task, 10) == {"_id": 3}

            # ...and close() from another task ends it at once.
            task = asyncio.ensure_future(waiting.next())
            while m.get_user_stats("alice")["in_flight"] == baseline:
                await asyncio.sleep(0.02)
            started = time.monotonic()
            await waiting.close()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(task, 10)
            assert time.monotonic() - started < LONG_WAIT_MS / 1000 / 2
            assert not waiting.alive
            await cursor.close()

    asyncio.run(main())
