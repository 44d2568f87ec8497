"""Change streams against a real mongod (a single-node replica set): events in order and decoded as
pymongo decodes them, pymongo's options, resuming, closing, tenant isolation, the tenant's pool kept
open under a live stream, and the same events as pymongo's own ``watch()`` for the same operations.

Every stream is opened before the writes it should see (``watch()`` runs the aggregate at once), so no
test waits for time to pass to see an event: ``take`` polls rounds of the stream, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from bson import SON
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import InvalidOperation, OperationFailure
from tests.helpers import wait_until

from tenantpool import (
    AsyncCollectionChangeStream,
    AsyncUserConnectionManager,
    CollectionChangeStream,
    DatabaseChangeStream,
    UserConnectionManager,
)

ROUND_MS = 100  # max_await_time_ms of the streams here: one empty round takes this long


def take(stream: Any, n: int, timeout: float = 20.0) -> list[Any]:
    """The next ``n`` events of ``stream``, polling rounds until a deadline."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"got {len(out)} of {n} change events: {out}")
        change = stream.try_next()
        if change is not None:
            out.append(change)
    return out


@pytest.fixture(scope="module")
def manager(mongodb_uri):
    # isolation="off": most tests name their databases explicitly.
    with UserConnectionManager(mongodb_uri, db_name_template="cs_{user_id}", isolation="off") as m:
        yield m


@pytest.fixture
def coll(manager, db_name):
    return manager.get_database("alice", db_name).items


def shape(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs from run to run (token, times, transaction and database names)."""
    e = {k: v for k, v in event.items() if k not in ("_id", "clusterTime", "wallTime", "txnNumber", "lsid")}
    if "ns" in e:
        e["ns"] = {k: v for k, v in e["ns"].items() if k != "db"}
    return e


# -- events ------------------------------------------------------------------------------------------


def test_insert_update_replace_delete_in_order(coll):
    with coll.watch(max_await_time_ms=ROUND_MS) as stream:
        assert isinstance(stream, CollectionChangeStream)
        assert stream.alive
        coll.insert_one({"_id": 1, "a": 1})
        coll.update_one({"_id": 1}, {"$set": {"a": 2}})
        coll.replace_one({"_id": 1}, {"b": 3})
        coll.delete_one({"_id": 1})
        events = take(stream, 4)
        assert [e["operationType"] for e in events] == ["insert", "update", "replace", "delete"]
        assert events[0]["fullDocument"] == {"_id": 1, "a": 1}
        assert events[0]["documentKey"] == {"_id": 1}
        assert events[0]["ns"] == {"db": coll.database.name, "coll": "items"}
        assert events[1]["updateDescription"]["updatedFields"] == {"a": 2}
        assert "fullDocument" not in events[1]
        assert events[2]["fullDocument"] == {"_id": 1, "b": 3}
        assert events[3]["documentKey"] == {"_id": 1}
        # The resume token follows the events returned.
        assert stream.resume_token == events[3]["_id"]
        assert isinstance(stream.resume_token["_data"], str)
    assert not stream.alive


def test_iteration_and_next(coll):
    stream = coll.watch(max_await_time_ms=ROUND_MS)
    coll.insert_many([{"_id": i} for i in range(3)])
    assert next(stream)["documentKey"] == {"_id": 0}
    assert stream.next()["documentKey"] == {"_id": 1}
    for change in stream:
        assert change["documentKey"] == {"_id": 2}
        break
    stream.close()


def test_full_document_update_lookup(coll):
    coll.insert_one({"_id": 1, "a": 1, "keep": "x"})
    with coll.watch(full_document="updateLookup", max_await_time_ms=ROUND_MS) as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": 2}})
        (event,) = take(stream, 1)
    assert event["operationType"] == "update"
    assert event["fullDocument"] == {"_id": 1, "a": 2, "keep": "x"}


def test_full_document_before_change(coll, pymongo_client):
    pymongo_client[coll.database.name].create_collection(
        "items", changeStreamPreAndPostImages={"enabled": True}
    )
    coll.insert_one({"_id": 1, "a": 1})
    with coll.watch(full_document_before_change="required", max_await_time_ms=ROUND_MS) as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": 2}})
        (event,) = take(stream, 1)
    assert event["fullDocumentBeforeChange"] == {"_id": 1, "a": 1}


def test_pipeline_match(coll):
    pipeline = [{"$match": {"operationType": "insert", "fullDocument.keep": True}}]
    with coll.watch(pipeline, max_await_time_ms=ROUND_MS) as stream:
        coll.insert_many([{"_id": 1, "keep": False}, {"_id": 2, "keep": True}, {"_id": 3}])
        coll.delete_one({"_id": 2})
        coll.insert_one({"_id": 4, "keep": True})
        events = take(stream, 2)
        assert [e["documentKey"]["_id"] for e in events] == [2, 4]
        assert stream.try_next() is None


def test_events_decoded_with_the_collections_codec_options(coll):
    raw_coll = coll.with_options(codec_options=CodecOptions(document_class=SON))
    with raw_coll.watch(max_await_time_ms=ROUND_MS) as stream:
        coll.insert_one({"_id": 1, "a": {"b": 1}})
        (event,) = take(stream, 1)
    assert type(event) is SON
    assert type(event["fullDocument"]["a"]) is SON
    with coll.with_options(codec_options=CodecOptions(document_class=RawBSONDocument)).watch(
        max_await_time_ms=ROUND_MS
    ) as stream:
        coll.insert_one({"_id": 2})
        (event,) = take(stream, 1)
    assert isinstance(event, RawBSONDocument)
    assert event["documentKey"]["_id"] == 2
    assert isinstance(stream.resume_token, RawBSONDocument)


def test_try_next_returns_none_without_changes(coll):
    with coll.watch(max_await_time_ms=50) as stream:
        assert stream.try_next() is None
        assert stream.alive
        # After an empty round, the server's post-batch resume token.
        assert stream.resume_token is not None
        coll.insert_one({"_id": 1})
        (event,) = take(stream, 1)
        assert event["documentKey"] == {"_id": 1}


def test_first_try_next_returns_a_change_made_after_watch(manager, pymongo_client, db_name):
    # As in pymongo: the first try_next() runs a getMore, which returns the change.
    pm_stream = pymongo_client[db_name].pm.watch(max_await_time_ms=5_000)
    tp_coll = manager.get_database("alice", db_name).tp
    tp_stream = tp_coll.watch(max_await_time_ms=5_000)
    pymongo_client[db_name].pm.insert_one({"_id": 1})
    tp_coll.insert_one({"_id": 1})
    assert pm_stream.try_next()["documentKey"] == tp_stream.try_next()["documentKey"] == {"_id": 1}
    pm_stream.close()
    tp_stream.close()


def test_resume_after_a_backlog(coll):
    """A stream resumed behind several changes gets them in its first batch: all are returned, in order."""
    with coll.watch(max_await_time_ms=ROUND_MS) as stream:
        coll.insert_one({"_id": 0})
        token = take(stream, 1)[0]["_id"]
    coll.insert_many([{"_id": i} for i in range(1, 4)])
    with coll.watch(resume_after=token, max_await_time_ms=ROUND_MS) as resumed:
        assert resumed.resume_token == token
        assert [e["documentKey"]["_id"] for e in take(resumed, 3)] == [1, 2, 3]
        assert resumed.resume_token["_data"] > token["_data"]


def test_batch_size(coll):
    with coll.watch(batch_size=1, max_await_time_ms=ROUND_MS) as stream:
        coll.insert_many([{"_id": i} for i in range(5)])
        assert [e["documentKey"]["_id"] for e in take(stream, 5)] == list(range(5))


def test_database_watch_sees_every_collection(manager, db_name):
    db = manager.get_database("alice", db_name)
    with db.watch(max_await_time_ms=ROUND_MS) as stream:
        assert isinstance(stream, DatabaseChangeStream)
        db.one.insert_one({"_id": 1})
        db.two.insert_one({"_id": 2})
        events = take(stream, 2)
    assert [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in events] == [("one", 1), ("two", 2)]


# -- resuming ----------------------------------------------------------------------------------------


def test_resume_after_a_token(coll):
    with coll.watch(max_await_time_ms=ROUND_MS) as stream:
        coll.insert_many([{"_id": i} for i in range(3)])
        first = take(stream, 1)[0]
        token = stream.resume_token
        assert token == first["_id"]
    with coll.watch(resume_after=token, max_await_time_ms=ROUND_MS) as resumed:
        assert resumed.resume_token == token
        events = take(resumed, 2)
        assert [e["documentKey"]["_id"] for e in events] == [1, 2]
        assert resumed.try_next() is None


def test_resume_from_a_post_batch_token(coll):
    with coll.watch(max_await_time_ms=50) as stream:
        assert stream.try_next() is None
        token = stream.resume_token
    coll.insert_one({"_id": "after"})
    with coll.watch(resume_after=token, max_await_time_ms=ROUND_MS) as resumed:
        assert take(resumed, 1)[0]["documentKey"] == {"_id": "after"}


def test_start_at_operation_time(coll, pymongo_client):
    with pymongo_client.start_session() as s:
        pymongo_client[coll.database.name].items.insert_one({"_id": "at"}, session=s)
        at = s.operation_time
    coll.insert_one({"_id": "later"})
    with coll.watch(start_at_operation_time=at, max_await_time_ms=ROUND_MS) as stream:
        assert [e["documentKey"]["_id"] for e in take(stream, 2)] == ["at", "later"]


def test_invalidate_then_start_after(coll):
    coll.insert_one({"_id": 0})
    stream = coll.watch(max_await_time_ms=ROUND_MS)
    coll.insert_one({"_id": 1})
    coll.drop()
    events = take(stream, 3)
    assert [e["operationType"] for e in events] == ["insert", "drop", "invalidate"]
    # An invalidate ends the stream, as in pymongo.
    assert not stream.alive
    assert stream.try_next() is None
    with pytest.raises(StopIteration):
        next(stream)
    # resume_after cannot resume after an invalidate; start_after can.
    with pytest.raises(OperationFailure):
        coll.watch(resume_after=events[2]["_id"]).try_next()
    with coll.watch(start_after=events[2]["_id"], max_await_time_ms=ROUND_MS) as resumed:
        coll.insert_one({"_id": 2})
        (event,) = take(resumed, 1)
    assert event["operationType"] == "insert" and event["documentKey"] == {"_id": 2}


# -- closing -----------------------------------------------------------------------------------------


def test_close(coll):
    stream = coll.watch(max_await_time_ms=ROUND_MS)
    coll.insert_one({"_id": 1})
    stream.close()
    assert not stream.alive
    with pytest.raises(StopIteration):
        next(stream)
    with pytest.raises(StopIteration):
        stream.next()
    assert stream.try_next() is None
    assert list(stream) == []
    stream.close()  # idempotent


def test_close_from_another_thread_ends_a_blocked_next(manager, coll):
    # A round that would wait a minute on the server: close() must end it at once.
    stream = coll.watch(max_await_time_ms=60_000)
    in_flight = manager.get_user_stats("alice")["in_flight"]
    outcome: list[Any] = []

    def reader() -> None:
        try:
            outcome.append(stream.next())
        except StopIteration:
            outcome.append("stopped")

    t = threading.Thread(target=reader)
    t.start()
    # The reader's round holds a quota slot while it waits on the server.
    wait_until(lambda: manager.get_user_stats("alice")["in_flight"] > in_flight, 10, "the reader's round")
    assert stream.alive
    stream.close()
    t.join(timeout=10)
    assert not t.is_alive(), "next() kept waiting after close()"
    assert outcome == ["stopped"]
    assert not stream.alive
    assert manager.get_user_stats("alice")["in_use"] == 0


def test_blocked_next_releases_the_gil_and_sees_another_threads_write(coll):
    stream = coll.watch(max_await_time_ms=60_000)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(stream.next()))
    t.start()
    # This thread runs (and writes) while the reader waits inside the core.
    coll.insert_one({"_id": "from-main"})
    t.join(timeout=20)
    assert not t.is_alive()
    assert got[0]["documentKey"] == {"_id": "from-main"}
    stream.close()


def test_concurrent_use_is_refused(manager, coll):
    stream = coll.watch(max_await_time_ms=60_000)
    in_flight = manager.get_user_stats("alice")["in_flight"]
    t = threading.Thread(target=stream.try_next)
    t.start()
    try:
        # The reader's round holds a quota slot while it waits on the server.
        wait_until(lambda: manager.get_user_stats("alice")["in_flight"] > in_flight, 10, "the reader's round")
        # A second round is refused rather than queued behind it.
        with pytest.raises(InvalidOperation, match="not for concurrent use"):
            stream.try_next()
        assert stream.alive
    finally:
        stream.close()
        t.join(timeout=10)
    assert not t.is_alive()


# -- tenants and pools -------------------------------------------------------------------------------


def test_tenant_isolation(manager, pymongo_client):
    a, b = f"iso_a_{uuid.uuid4().hex[:8]}", f"iso_b_{uuid.uuid4().hex[:8]}"
    db_a, db_b = manager.get_database(a), manager.get_database(b)
    try:
        with (
            db_a.items.watch(max_await_time_ms=ROUND_MS) as coll_stream,
            db_a.watch(max_await_time_ms=ROUND_MS) as db_stream,
        ):
            db_b.items.insert_one({"_id": "b"})
            db_b.other.insert_one({"_id": "b"})
            db_a.items.insert_one({"_id": "a"})
            for stream in (coll_stream, db_stream):
                (event,) = take(stream, 1)
                assert event["documentKey"] == {"_id": "a"}
                assert event["ns"]["db"] == db_a.name
                assert stream.try_next() is None
    finally:
        pymongo_client.drop_database(db_a.name)
        pymongo_client.drop_database(db_b.name)


def test_client_watch_is_refused(manager):
    with pytest.raises(NotImplementedError, match="other tenants"):
        manager.get_client("alice").watch()


def test_a_live_stream_keeps_the_tenants_pool_open(mongodb_uri, pymongo_client):
    tenant = f"idle_{uuid.uuid4().hex[:8]}"
    with UserConnectionManager(mongodb_uri, idle_timeout=0.2, db_name_template="cs_{user_id}") as m:
        db = m.get_database(tenant)
        try:
            stream = db.items.watch(max_await_time_ms=ROUND_MS)
            assert m.get_user_stats(tenant)["in_use"] == 1
            # Several idle timeouts pass while the stream waits for events, and more between rounds.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert stream.try_next() is None
            time.sleep(0.5)
            assert tenant in m.get_stats()["active_users"]
            assert m.get_stats()["pools"]["closed_idle"] == 0
            pymongo_client[db.name].items.insert_one({"_id": 1})
            assert take(stream, 1)[0]["documentKey"] == {"_id": 1}
            stream.close()
            assert m.get_user_stats(tenant)["in_use"] == 0
            wait_until(lambda: tenant not in m.get_stats()["active_users"], 10, "the idle pool to be reaped")
            assert m.get_stats()["pools"]["closed_idle"] == 1
        finally:
            pymongo_client.drop_database(db.name)


def test_a_dropped_stream_returns_its_lease(manager, coll):
    stream = coll.watch()
    assert manager.get_user_stats("alice")["in_use"] >= 1
    before = manager.get_user_stats("alice")["in_use"]
    del stream
    assert manager.get_user_stats("alice")["in_use"] == before - 1


def test_in_a_session(manager, coll):
    with manager.get_client("alice").start_session() as session:
        with coll.watch(session=session, max_await_time_ms=ROUND_MS) as stream:
            coll.insert_one({"_id": 1}, session=session)
            (event,) = take(stream, 1)
    assert event["documentKey"] == {"_id": 1}


# -- arguments ---------------------------------------------------------------------------------------


def test_invalid_arguments(coll):
    with pytest.raises(TypeError):
        coll.watch({"$match": {}})
    with pytest.raises(TypeError):
        coll.watch(full_document=1)
    with pytest.raises(InvalidOperation, match="full_document"):
        coll.watch(full_document="bogus")
    with pytest.raises(InvalidOperation, match="full_document_before_change"):
        coll.watch(full_document_before_change="bogus")
    with pytest.raises(TypeError, match="start_at_operation_time"):
        coll.watch(start_at_operation_time=5)
    with pytest.raises(ValueError):
        coll.watch(batch_size=-1)
    with pytest.raises(ValueError):
        coll.watch(max_await_time_ms=-1)
    with pytest.raises(TypeError):
        coll.watch(resume_after="token")
    # The Rust driver cannot send it where the server expects it.
    with pytest.raises(InvalidOperation, match="comment"):
        coll.watch(comment="tag")


def test_pipeline_removing_the_resume_token(coll):
    with coll.watch([{"$project": {"_id": 0}}], max_await_time_ms=ROUND_MS) as stream:
        coll.insert_one({"_id": 1})
        with pytest.raises((InvalidOperation, OperationFailure)):
            take(stream, 1)
        assert not stream.alive


# -- the same as pymongo -----------------------------------------------------------------------------


def _operations(coll: Any) -> None:
    coll.insert_one({"_id": 1, "a": 1, "nested": {"x": [1, 2]}})
    coll.insert_many([{"_id": 2, "a": 2}, {"_id": 3, "a": 3}])
    coll.update_one({"_id": 1}, {"$set": {"a": 10, "nested.x.1": 5}, "$unset": {"gone": ""}})
    coll.update_many({"a": {"$gte": 2}}, {"$inc": {"a": 1}})
    coll.replace_one({"_id": 2}, {"b": "replaced"})
    coll.delete_one({"_id": 3})
    coll.find_one_and_update({"_id": 1}, {"$push": {"nested.x": 9}})
    coll.drop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"full_document": "updateLookup"},
        {"pipeline": [{"$match": {"operationType": {"$in": ["update", "delete"]}}}]},
        {"pipeline": [{"$project": {"operationType": 1, "documentKey": 1, "ns": 1}}]},
    ],
    ids=["plain", "update-lookup", "match", "project"],
)
def test_same_events_as_pymongo(manager, pymongo_client, kwargs):
    suffix = uuid.uuid4().hex[:10]
    pm_db, tp_db = f"cs_pm_{suffix}", f"cs_tp_{suffix}"
    pm_coll = pymongo_client[pm_db].items
    tp_coll = manager.get_database("alice", tp_db).items
    try:
        # The database must exist for a drop event's invalidate to be the last one.
        pm_coll.insert_one({"_id": 0})
        tp_coll.insert_one({"_id": 0})
        pm_stream = pm_coll.watch(max_await_time_ms=ROUND_MS, **kwargs)
        tp_stream = tp_coll.watch(max_await_time_ms=ROUND_MS, **kwargs)
        _operations(pm_coll)
        _operations(tp_coll)
        pm_events = []
        while pm_stream.alive:
            change = pm_stream.try_next()
            if change is not None:
                pm_events.append(change)
        tp_events = []
        while tp_stream.alive:
            change = tp_stream.try_next()
            if change is not None:
                tp_events.append(change)
        assert len(pm_events) >= 3
        assert [shape(e) for e in tp_events] == [shape(e) for e in pm_events]
        assert [type(e) for e in tp_events] == [type(e) for e in pm_events]
        assert tp_stream.alive == pm_stream.alive is False
        assert tp_stream.try_next() is pm_stream.try_next() is None
    finally:
        pymongo_client.drop_database(pm_db)
        pymongo_client.drop_database(tp_db)


def test_closed_stream_behaves_as_pymongos(manager, pymongo_client, db_name):
    pm = pymongo_client[db_name].pm.watch()
    tp = manager.get_database("alice", db_name).tp.watch()
    for stream in (pm, tp):
        stream.close()
    assert pm.alive == tp.alive is False
    assert pm.try_next() is tp.try_next() is None
    for stream in (pm, tp):
        with pytest.raises(StopIteration):
            next(stream)


# -- asyncio -----------------------------------------------------------------------------------------


def test_async_change_stream(mongodb_uri, pymongo_client, db_name):
    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, isolation="off") as m:
            coll = m.get_database("alice", db_name).items
            async with await coll.watch(max_await_time_ms=ROUND_MS) as stream:
                assert isinstance(stream, AsyncCollectionChangeStream)
                assert await stream.try_next() is None
                await coll.insert_many([{"_id": i} for i in range(3)])
                assert (await stream.next())["documentKey"] == {"_id": 0}
                seen = []
                async for change in stream:
                    seen.append(change["documentKey"]["_id"])
                    if len(seen) == 2:
                        break
                assert seen == [1, 2]
                token = stream.resume_token
            assert not stream.alive
            assert await stream.try_next() is None
            with pytest.raises(StopAsyncIteration):
                await stream.next()
            # Resume, on the database's stream.
            db_stream = await m.get_database("alice", db_name).watch(
                resume_after=token, max_await_time_ms=ROUND_MS
            )
            await coll.insert_one({"_id": 3})
            assert (await db_stream.next())["documentKey"] == {"_id": 3}
            await db_stream.close()
            assert not db_stream.alive

    asyncio.run(main())


def test_async_cancelled_wait_closes_the_stream(mongodb_uri, db_name):
    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, isolation="off") as m:
            stream = await m.get_database("alice", db_name).items.watch(max_await_time_ms=60_000)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.next(), 0.2)
            assert not stream.alive
            assert await stream.try_next() is None
            deadline = time.monotonic() + 10
            while m.get_user_stats("alice")["in_use"] > 0:
                assert time.monotonic() < deadline, "the cancelled stream kept its lease"
                await asyncio.sleep(0.01)

    asyncio.run(main())
