"""Cursors opened by a command tenantpool builds (pymongo's own find or aggregate command for values the
driver's typed options do not hold, and ``Database.cursor_command``) against a real mongod: every batch
arrives (the core continues them with getMore), in the caller's session and transaction, closing kills
the server cursor, and the isolation scope refuses a foreign database before anything is sent."""

from __future__ import annotations

import asyncio
import enum
import time
import uuid

import pytest
from bson import SON
from bson.codec_options import CodecOptions
from pymongo.errors import InvalidOperation, NetworkTimeout, OperationFailure
from tests.test_socket_timeout import TIMEOUT_MS, blocked

from tenantpool import AsyncCommandCursor, AsyncUserConnectionManager, CommandCursor, UserConnectionManager

DB = "command_cursor_tests"
N = 10


def wait_until(predicate, timeout: float, what: str, every: float = 0.05):
    """Polls a state the server reaches on its own schedule; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def tag() -> str:
    return f"cc-{uuid.uuid4().hex[:12]}"


def server_cursors(pymongo_client, comment: str) -> list[dict]:
    """The server's idle cursors whose originating command carries ``comment``."""
    return list(
        pymongo_client.admin.aggregate(
            [
                {"$currentOp": {"idleCursors": True, "allUsers": True}},
                {"$match": {"type": "idleCursor", "cursor.originatingCommand.comment": comment}},
            ]
        )
    )


@pytest.fixture(scope="module")
def manager(mongodb_uri):
    # isolation="off": these tests name their database (DB); test_isolation_* use their own manager.
    with UserConnectionManager(mongodb_uri, isolation="off") as m:
        yield m


@pytest.fixture
def db(manager, pymongo_client):
    pymongo_client.drop_database(DB)
    pymongo_client[DB].items.insert_many([{"_id": i, "n": i} for i in range(N)])
    yield manager.get_database("command-cursor-tests", DB)
    pymongo_client.drop_database(DB)


@pytest.fixture
def profiled(pymongo_client):
    """The commands the server ran on the test database with ``comment`` (profiler level 2)."""
    db = pymongo_client[DB]
    db.command("profile", 2)

    def commands(comment: str, name: str) -> list[dict]:
        entries = db.system.profile.find({"command.comment": comment}).sort("ts", 1)
        return [e["command"] for e in entries if next(iter(e["command"])) == name]

    yield commands
    db.command("profile", 0)


# -- pymongo's commands for options the driver does not model -------------------------------------------


def test_aggregate_with_an_unmodelled_option_returns_every_batch(db, profiled):
    t = tag()
    # ``cursor`` is no option of the driver's aggregate: pymongo's command goes as is.
    cursor = db.items.aggregate([{"$sort": {"_id": 1}}], cursor={}, batchSize=2, comment=t)
    assert isinstance(cursor, CommandCursor)
    assert [d["_id"] for d in cursor] == list(range(N))
    # Its first batch and four getMores, each of batchSize and carrying the comment, as pymongo's.
    assert profiled(t, "aggregate")[0]["cursor"] == {"batchSize": 2}
    getmores = profiled(t, "getMore")
    assert len(getmores) >= 4
    assert all(g["batchSize"] == 2 for g in getmores)


def test_aggregate_with_a_read_concern_option_returns_every_batch(db):
    # readConcern given as an option is pymongo's to pass through, not the driver's to model.
    cursor = db.items.aggregate([{"$sort": {"_id": -1}}], readConcern={"level": "majority"}, batchSize=3)
    assert [d["_id"] for d in cursor.to_list()] == list(reversed(range(N)))
    # One the server refuses raises its error at the call.
    with pytest.raises(OperationFailure) as err:
        db.items.aggregate([], allowDiskUse=1)
    assert err.value.code == 14


class Two(enum.IntEnum):
    TWO = 2


def test_find_with_values_the_driver_refuses_returns_every_batch(db, profiled):
    t = tag()
    # An int subclass is an int to pymongo and not to the driver's options: pymongo's find command, as is.
    docs = db.items.find(skip=Two.TWO, batch_size=2, comment=t).sort("_id").to_list()
    assert [d["_id"] for d in docs] == list(range(2, N))
    assert profiled(t, "find")[0]["skip"] == 2
    # Three full getMores and the one that finds the end, as pymongo's.
    assert [g["batchSize"] for g in profiled(t, "getMore")] == [2, 2, 2, 2]
    # A negative limit is one batch (of batch_size if smaller, as pymongo's); a bool limit is pymongo's 1.
    assert [d["_id"] for d in db.items.find(skip=Two.TWO, limit=-3, batch_size=2).sort("_id")] == [2, 3]
    assert [d["_id"] for d in db.items.find(skip=Two.TWO, limit=-3).sort("_id")] == [2, 3, 4]
    assert [d["_id"] for d in db.items.find(limit=True).sort("_id")] == [0]


def test_find_refused_by_the_server_raises_its_error(db):
    with pytest.raises(OperationFailure) as err:
        db.items.find(skip=-1).to_list()
    assert err.value.code in (2, 51024)


# -- Database.cursor_command ----------------------------------------------------------------------------


def test_cursor_command_find_aggregate_and_list_collections(db, pymongo_client, profiled):
    for name in ("a", "b", "c"):
        pymongo_client[DB].create_collection(name)
    t = tag()
    cursor = db.cursor_command("find", "items", sort={"_id": 1}, batchSize=3, comment=t)
    assert isinstance(cursor, CommandCursor)
    assert [d["_id"] for d in cursor] == list(range(N))
    # As in pymongo the comment goes with the getMores only (a kwarg would go with the command), and the
    # getMore has no batchSize (the rest comes in one batch).
    assert profiled(t, "find") == []
    assert len(profiled(t, "getMore")) == 1
    cursor = db.cursor_command(
        SON(
            [
                ("aggregate", "items"),
                ("pipeline", [{"$match": {"n": {"$gte": 4}}}]),
                ("cursor", {"batchSize": 1}),
            ]
        )
    )
    assert sorted(d["n"] for d in cursor) == list(range(4, N))
    names = [
        c["name"]
        for c in db.cursor_command(
            "listCollections", filter={"name": {"$ne": "system.profile"}}, cursor={"batchSize": 1}
        )
    ]
    assert sorted(names) == ["a", "b", "c", "items"]


def test_cursor_command_decodes_with_the_given_codec_options(db):
    codec = CodecOptions(document_class=SON)
    docs = db.cursor_command("find", "items", filter={"_id": 1}, codec_options=codec).to_list()
    assert docs == [SON([("_id", 1), ("n", 1)])] and isinstance(docs[0], SON)


def test_cursor_command_errors(db):
    with pytest.raises(InvalidOperation, match="Command does not return a cursor"):
        db.cursor_command("ping")
    with pytest.raises(OperationFailure) as err:
        db.cursor_command("find", "items", filter=5)
    assert err.value.code == 14
    with pytest.raises(TypeError, match="max_await_time_ms"):
        db.cursor_command("find", "items", max_await_time_ms="5")


def test_cursor_command_close_kills_the_server_cursor(db, pymongo_client):
    t = tag()
    cursor = db.cursor_command({"find": "items", "batchSize": 2, "comment": t})
    assert cursor.next()["_id"] == 0
    assert len(server_cursors(pymongo_client, t)) == 1
    cursor.close()
    wait_until(lambda: not server_cursors(pymongo_client, t), 10, "the server cursor to be killed")
    assert not cursor.alive


def test_cursor_command_in_a_session_and_a_transaction(db, pymongo_client):
    with db.client.start_session() as s:
        # Outside a transaction: the getMores go in the same session (another one would be refused).
        cursor = db.cursor_command("find", "items", batchSize=2, session=s)
        assert cursor.session is s
        assert len(cursor.to_list()) == N
        with s.start_transaction():
            db.items.insert_one({"_id": 100, "n": 100}, session=s)
            cursor = db.cursor_command("find", "items", sort={"_id": 1}, batchSize=2, session=s)
            docs = cursor.to_list()
            # The transaction's own write is seen; others are not until it commits.
            assert [d["_id"] for d in docs] == [*range(N), 100]
            assert pymongo_client[DB].items.find_one({"_id": 100}) is None
            # The unmodelled-option paths run in the transaction too.
            agg = db.items.aggregate([{"$sort": {"_id": 1}}], cursor={}, batchSize=2, session=s)
            assert [d["_id"] for d in agg][-1] == 100
            found = db.items.find({}, skip=Two.TWO, batch_size=2, session=s).sort("_id").to_list()
            assert len(found) == N - 1
        assert pymongo_client[DB].items.find_one({"_id": 100}) == {"_id": 100, "n": 100}


def test_cursor_command_is_refused_outside_the_isolation_scope(mongodb_uri, pymongo_client, profiled):
    with UserConnectionManager(mongodb_uri, db_name_template="cc_{user_id}") as m:
        own = m.get_database("iso")
        t = tag()
        for command in (
            {"find": "items", "$db": DB, "comment": t},
            {"aggregate": "items", "pipeline": [{"$unionWith": {"db": DB, "coll": "items"}}], "cursor": {}},
            {"aggregate": "items", "pipeline": [{"$out": {"db": DB, "coll": "x"}}], "cursor": {}},
        ):
            with pytest.raises(OperationFailure) as err:
                own.cursor_command(command)
            assert err.value.code == 13 and "Nothing was sent" in str(err.value)
        with pytest.raises(OperationFailure) as err:
            m.get_client("iso").admin.cursor_command("aggregate", 1, pipeline=[], cursor={})
        assert err.value.code == 13
        assert profiled(t, "find") == []
        # Its own database works.
        own.items.insert_many([{"_id": i} for i in range(5)])
        assert len(own.cursor_command("find", "items", batchSize=2).to_list()) == 5
        pymongo_client.drop_database(own.name)


# -- socketTimeoutMS --------------------------------------------------------------------------------------


def test_socket_timeout_bounds_command_cursors_as_pymongo(mongodb_uri, pymongo_client):
    app = "tp-command-cursor-timeout"
    sep = "&" if "?" in mongodb_uri else "?"
    with UserConnectionManager(f"{mongodb_uri}{sep}socketTimeoutMS={TIMEOUT_MS}", appName=app) as m:
        db = m.get_database("cct")
        db.items.insert_many([{"_id": i} for i in range(N)])
        # find's and aggregate's commands are retried once after a cut, as pymongo retries them.
        with blocked(pymongo_client, app, ["find", "aggregate"], times=1):
            assert len(db.items.find(skip=Two.TWO, batch_size=2).to_list()) == N - 2
        with blocked(pymongo_client, app, ["find", "aggregate"], times=1):
            assert len(db.items.aggregate([], cursor={}, batchSize=2).to_list()) == N
        # cursor_command is not (pymongo's _retryable_read with retryable=False).
        with blocked(pymongo_client, app, ["find"], times=1):
            with pytest.raises(NetworkTimeout):
                db.cursor_command("find", "items")
        # A getMore outliving it ends the cursor with the error.
        cursor = db.cursor_command("find", "items", batchSize=2)
        assert len([cursor.next(), cursor.next()]) == 2
        with blocked(pymongo_client, app, ["getMore"], times=1):
            with pytest.raises(NetworkTimeout):
                cursor.next()
        assert not cursor.alive
        pymongo_client.drop_database(db.name)


# -- asyncio --------------------------------------------------------------------------------------------


def test_async_cursor_command(mongodb_uri, pymongo_client, db):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, isolation="off") as m:
            adb = m.get_database("command-cursor-tests", DB)
            cursor = await adb.cursor_command("find", "items", sort={"_id": 1}, batchSize=3)
            assert isinstance(cursor, AsyncCommandCursor)
            ids = [d["_id"] async for d in cursor]
            assert ids == list(range(N))
            agg = await adb.items.aggregate([{"$sort": {"_id": 1}}], cursor={}, batchSize=2)
            assert len(await agg.to_list()) == N
            found = await adb.items.find(skip=Two.TWO, batch_size=2).to_list()
            assert len(found) == N - 2
            t = tag()
            cursor = await adb.cursor_command({"find": "items", "batchSize": 2, "comment": t})
            assert (await cursor.next())["_id"] == 0
            await cursor.close()
            async with adb.client.start_session() as s:
                async with await s.start_transaction():
                    await adb.items.insert_one({"_id": 100}, session=s)
                    cursor = await adb.cursor_command("find", "items", batchSize=2, session=s)
                    assert len(await cursor.to_list()) == N + 1
            return t

    t = asyncio.run(main())
    assert pymongo_client[DB].items.count_documents({}) == N + 1
    wait_until(lambda: not server_cursors(pymongo_client, t), 10, "the server cursor to be killed")
