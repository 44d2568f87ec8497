"""socketTimeoutMS beyond one-reply operations: a cursor's later batches (getMore), tailable-await
cursors, change streams and the end of a transaction, each bounded as pymongo bounds them
(src/core/attempt.rs, src/core/change_stream.rs)."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymongo import CursorType, MongoClient
from pymongo.errors import NetworkTimeout
from tests.helpers import wait_until
from tests.test_socket_timeout import BLOCK_MS, TIMEOUT_MS, blocked, open_connections

from tenantpool import AsyncUserConnectionManager, UserConnectionManager


@pytest.fixture
def manager(mongodb_uri):
    app = "tp-socket-timeout-later"
    m = UserConnectionManager(mongodb_uri, socketTimeoutMS=TIMEOUT_MS, appName=app)
    yield m, app
    m.close_all()


def settled(m, tenant: str) -> bool:
    """The tenant holds no lease and no quota slot (no cursor, session or operation keeps one)."""
    info = m.get_user_stats(tenant)
    return (info["in_use"], info["in_flight"], info["waiting"]) == (0, 0, 0)


def held(client: MongoClient, app: str, command: str) -> set[int]:
    """The server's ids of the app's connections running ``command`` (held by the fail point)."""
    ops = client.admin.aggregate(
        [{"$currentOp": {"allUsers": True, "idleConnections": True}}, {"$match": {"appName": app}}]
    )
    return {op["connectionId"] for op in ops if op.get("active") and command in op.get("command", {})}


def idle_cursors(client: MongoClient, ns: str) -> list[dict]:
    return list(client.admin.aggregate([{"$currentOp": {"idleCursors": True}}, {"$match": {"ns": ns}}]))


def abandoned_connection_closes(client: MongoClient, app: str, command: str) -> None:
    """The connection whose ``command`` the client gave up on is closed, never reused: once the server is
    done holding it, it finds the connection gone (had the pool kept it, it would still be open). Only
    that command's connection: the driver's killCursors, say, runs on a pooled one that stays."""
    ids = wait_until(lambda: held(client, app, command), 5, f"the held {command} on the server")
    wait_until(lambda: not (ids & open_connections(client, app)), 10, "the timed-out connection to close")


def test_a_getmore_outliving_socket_timeout_ends_the_cursor(manager, pymongo_client):
    m, app = manager
    coll = m.get_database("gm").c
    coll.insert_many([{"_id": i} for i in range(10)])
    cursor = coll.find(batch_size=2)
    assert [next(cursor), next(cursor)] == [{"_id": 0}, {"_id": 1}]
    assert idle_cursors(pymongo_client, "user_gm_db.c")
    with blocked(pymongo_client, app, ["getMore"], times=1):
        started = time.monotonic()
        with pytest.raises(NetworkTimeout) as caught:
            next(cursor)
        took = time.monotonic() - started
        # Not retried: pymongo never retries a getMore.
        assert TIMEOUT_MS / 1000 <= took < 2 * TIMEOUT_MS / 1000, took
        assert f"socketTimeoutMS: {TIMEOUT_MS:.1f}ms" in str(caught.value)
        # As pymongo's: the cursor is dead, and iterating it again ends at once.
        assert not cursor.alive
        assert list(cursor) == []
        abandoned_connection_closes(pymongo_client, app, "getMore")
    # Unlike pymongo, which leaves it to time out, the driver kills the server cursor as it drops it.
    wait_until(lambda: not idle_cursors(pymongo_client, "user_gm_db.c"), 5, "the server cursor to be killed")
    wait_until(lambda: settled(m, "gm"), 5, "the cursor's lease and slot to come back")
    assert coll.count_documents({}) == 10


def test_a_getmore_in_a_transaction_is_labelled_transient(manager, pymongo_client):
    m, app = manager
    coll = m.get_database("gmt").c
    coll.insert_many([{"_id": i} for i in range(4)])
    with m.get_client("gmt").start_session() as s, s.start_transaction():
        cursor = coll.find(batch_size=2, session=s)
        next(cursor)
        with blocked(pymongo_client, app, ["getMore"], times=1):
            with pytest.raises(NetworkTimeout) as caught:
                list(cursor)
            assert caught.value.has_error_label("TransientTransactionError")
            s.abort_transaction()
    wait_until(lambda: settled(m, "gmt"), 5, "the session's lease to come back")


def test_tailable_await_cursors_are_bounded_as_pymongo_bounds_them(manager, pymongo_client):
    m, app = manager
    db = m.get_database("tail")
    db.create_collection("capped", capped=True, size=4096)
    db.capped.insert_one({"_id": 0})
    # A wait shorter than socketTimeoutMS is an answer ("nothing new"), however often it is asked.
    cursor = db.capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(TIMEOUT_MS // 3)
    assert list(cursor) == [{"_id": 0}]
    for _ in range(3):
        assert list(cursor) == []
        assert cursor.alive
    db.capped.insert_one({"_id": 1})
    assert list(cursor) == [{"_id": 1}]
    # A server that stalls beyond socketTimeoutMS ends the cursor with NetworkTimeout.
    with blocked(pymongo_client, app, ["getMore"], times=1):
        with pytest.raises(NetworkTimeout):
            list(cursor)
        assert not cursor.alive
        abandoned_connection_closes(pymongo_client, app, "getMore")
    # pymongo's socket timeout for a getMore is socketTimeoutMS alone, maxAwaitTimeMS not added: a
    # longer await times out there too, and so here.
    cursor = db.capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(BLOCK_MS)
    assert [next(cursor)["_id"], next(cursor)["_id"]] == [0, 1]
    with pytest.raises(NetworkTimeout):
        next(cursor)
    assert not cursor.alive
    wait_until(lambda: settled(m, "tail"), 5, "the cursors' leases to come back")


def test_a_stalled_change_stream_resumes_once_as_pymongos(manager, pymongo_client):
    m, app = manager
    coll = m.get_database("cs").c
    coll.insert_one({"_id": 0})
    # watch()'s aggregate is a retryable read: cut short once, it is run again; twice, raised.
    with blocked(pymongo_client, app, ["aggregate"], times=2):
        with pytest.raises(NetworkTimeout):
            coll.watch()
    with blocked(pymongo_client, app, ["aggregate"], times=1):
        coll.watch().close()
    with coll.watch(max_await_time_ms=TIMEOUT_MS // 3) as stream:
        assert stream.try_next() is None
        token = stream.resume_token
        with blocked(pymongo_client, app, ["getMore"], times=1):
            started = time.monotonic()
            # The getMore is cut short; the stream resumes (a new aggregate, not held) and the round
            # returns what that found: nothing yet, as pymongo's try_next would.
            assert stream.try_next() is None
            assert TIMEOUT_MS / 1000 <= time.monotonic() - started < BLOCK_MS / 1000
            assert stream.alive
            abandoned_connection_closes(pymongo_client, app, "getMore")
        assert stream.resume_token is not None and token is not None
        coll.insert_one({"_id": 1})
        change = stream.next()
        assert (change["operationType"], change["documentKey"]) == ("insert", {"_id": 1})
        # A resume that stalls too is raised (after one resume, as in pymongo).
        with blocked(pymongo_client, app, ["getMore", "aggregate"], times=3):
            with pytest.raises(NetworkTimeout):
                stream.try_next()
    wait_until(lambda: settled(m, "cs"), 5, "the stream's lease to come back")


def test_commit_and_abort_are_bounded(manager, pymongo_client):
    m, app = manager
    coll = m.get_database("tx").c
    coll.insert_one({"_id": 0})
    client = m.get_client("tx")
    # Both commit attempts stall: the outcome is unknown, labelled as pymongo labels it.
    with client.start_session() as s:
        s.start_transaction()
        coll.insert_one({"_id": 1}, session=s)
        with blocked(pymongo_client, app, ["commitTransaction"], times=2):
            started = time.monotonic()
            with pytest.raises(NetworkTimeout) as caught:
                s.commit_transaction()
            took = time.monotonic() - started
            abandoned_connection_closes(pymongo_client, app, "commitTransaction")
        assert 2 * TIMEOUT_MS / 1000 <= took < 2 * BLOCK_MS / 1000, took
        assert caught.value.has_error_label("UnknownTransactionCommitResult")
        assert caught.value.has_error_label("RetryableWriteError")
        assert not caught.value.has_error_label("TransientTransactionError")
    # An abort that stalls ends quietly, as pymongo's (which ignores abort errors).
    with client.start_session() as s:
        s.start_transaction()
        coll.insert_one({"_id": 2}, session=s)
        with blocked(pymongo_client, app, ["abortTransaction"], times=2):
            started = time.monotonic()
            s.abort_transaction()
            assert time.monotonic() - started < BLOCK_MS / 1000
            abandoned_connection_closes(pymongo_client, app, "abortTransaction")
    assert coll.find_one({"_id": 2}) is None
    wait_until(lambda: settled(m, "tx"), 5, "the sessions' leases to come back")


def test_async_getmore_change_stream_and_commit(mongodb_uri, pymongo_client):
    app = "tp-socket-timeout-later-async"

    async def main() -> None:
        m = AsyncUserConnectionManager(mongodb_uri, socketTimeoutMS=TIMEOUT_MS, appName=app)
        try:
            coll = m.get_database("agm").c
            await coll.insert_many([{"_id": i} for i in range(6)])
            cursor = await coll.aggregate([{"$match": {}}], batchSize=2)
            assert len([await cursor.next(), await cursor.next()]) == 2
            with blocked(pymongo_client, app, ["getMore"], times=1):
                with pytest.raises(NetworkTimeout):
                    await cursor.to_list()
                assert not cursor.alive
            stream = await coll.watch(max_await_time_ms=TIMEOUT_MS // 3)
            async with stream:
                with blocked(pymongo_client, app, ["getMore"], times=1):
                    assert await stream.try_next() is None
                    assert stream.alive
            async with m.get_client("agm").start_session() as s:
                await s.start_transaction()
                await coll.insert_one({"_id": 9}, session=s)
                with blocked(pymongo_client, app, ["commitTransaction"], times=2):
                    with pytest.raises(NetworkTimeout) as caught:
                        await s.commit_transaction()
                assert caught.value.has_error_label("UnknownTransactionCommitResult")
            info = m.get_user_stats("agm")
            assert (info["in_use"], info["in_flight"]) == (0, 0), info
        finally:
            await m.close_all()

    asyncio.run(main())


def test_pymongo_itself_behaves_as_asserted_above(mongodb_uri, pymongo_client):
    """The behaviours the tests above hold tenantpool to, checked on pymongo itself: a long await is not
    added to the getMore's socket timeout, a dead cursor after a getMore timeout, a change stream that
    resumes once, and a commit's labels."""
    app = "tp-socket-timeout-pymongo"
    client = MongoClient(mongodb_uri, socketTimeoutMS=TIMEOUT_MS, appName=app)
    try:
        db = client.st_pymongo
        db.drop_collection("capped")
        db.create_collection("capped", capped=True, size=4096)
        db.capped.insert_many([{"_id": 0}, {"_id": 1}])
        cursor = db.capped.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(BLOCK_MS)
        assert [next(cursor)["_id"], next(cursor)["_id"]] == [0, 1]
        with pytest.raises(NetworkTimeout):
            next(cursor)
        assert not cursor.alive
        with db.c.watch(max_await_time_ms=TIMEOUT_MS // 3) as stream:
            with blocked(pymongo_client, app, ["getMore"], times=1):
                assert stream.try_next() is None
                assert stream.alive
        db.c.insert_one({"_id": 0})
        with client.start_session() as s:
            s.start_transaction()
            db.c.insert_one({"_id": 1}, session=s)
            with blocked(pymongo_client, app, ["commitTransaction"], times=2):
                with pytest.raises(NetworkTimeout) as caught:
                    s.commit_transaction()
            assert caught.value.has_error_label("UnknownTransactionCommitResult")
            assert caught.value.has_error_label("RetryableWriteError")
            assert not caught.value.has_error_label("TransientTransactionError")
    finally:
        client.close()
