"""Cursors against a real mongod: chained options reach the server, batches are fetched lazily, a large
result streams in bounded memory, and an abandoned cursor is killed on the server."""

from __future__ import annotations

import gc
import time
import uuid

import psutil
import pytest
from pymongo.collation import Collation
from pymongo.errors import ExecutionTimeout, InvalidOperation, OperationFailure
from tests.helpers import wait_until

from tenantpool import CommandCursor, Cursor, UserConnectionManager

DB = "cursor_tests"


@pytest.fixture(scope="module")
def manager(mongodb_uri):
    # isolation="off": these tests name their database (DB) explicitly.
    with UserConnectionManager(mongodb_uri, isolation="off") as m:
        yield m


@pytest.fixture
def coll(manager, pymongo_client):
    pymongo_client[DB].items.drop()
    pymongo_client[DB].items.insert_many(
        [{"_id": i, "n": i, "g": i % 5, "w": ["b", "B", "a", "A", "c"][i % 5]} for i in range(95)]
    )
    yield manager.get_database("cursor-tests", DB).items
    pymongo_client[DB].items.drop()


@pytest.fixture
def profiled(pymongo_client):
    """The commands the server ran on the test database, by comment (profiler level 2)."""
    db = pymongo_client[DB]
    db.command("profile", 0)
    db.system.profile.drop()
    db.command("profile", 2)

    def commands(tag: str, name: str | None = None) -> list[dict]:
        query = {"$or": [{"command.comment": tag}, {"originatingCommand.comment": tag}]}
        entries = list(db.system.profile.find(query).sort("ts", 1))
        return [e["command"] for e in entries if name is None or next(iter(e["command"])) == name]

    yield commands
    db.command("profile", 0)


def server_cursors(pymongo_client, tag: str) -> list[dict]:
    """The server's open (idle) cursors whose originating command carries ``tag`` as its comment."""
    return list(
        pymongo_client.admin.aggregate(
            [
                {"$currentOp": {"idleCursors": True, "allUsers": True}},
                {"$match": {"type": "idleCursor", "cursor.originatingCommand.comment": tag}},
            ]
        )
    )


def tag() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# -- chaining ----------------------------------------------------------------------------------------


def test_chained_options_reach_the_server(coll, profiled):
    coll.create_index("g")
    t = tag()
    cursor = (
        coll.find({"g": {"$gte": 1}})
        .sort([("g", -1), ("n", 1)])
        .skip(3)
        .limit(7)
        .batch_size(2)
        .max_time_ms(5000)
        .hint([("g", 1)])
        .collation(Collation("en", strength=2))
        .comment(t)
    )
    assert isinstance(cursor, Cursor)
    docs = list(cursor)
    expected = sorted((d for d in range(95) if d % 5 >= 1), key=lambda n: (-(n % 5), n))[3:10]
    assert [d["n"] for d in docs] == expected
    find = profiled(t, "find")[0]
    assert find["filter"] == {"g": {"$gte": 1}}
    assert list(find["sort"].items()) == [("g", -1), ("n", 1)]
    assert (find["skip"], find["limit"], find["batchSize"], find["maxTimeMS"]) == (3, 7, 2, 5000)
    assert find["hint"] == {"g": 1} and find["collation"]["strength"] == 2
    # 7 documents in batches of 2: the find, then getMores until the limit.
    assert len(profiled(t, "getMore")) == 3


def test_options_cannot_change_after_the_first_fetch(coll):
    cursor = coll.find().batch_size(5)
    next(cursor)
    for change in (
        lambda: cursor.sort("n"),
        lambda: cursor.skip(1),
        lambda: cursor.limit(1),
        lambda: cursor.batch_size(1),
        lambda: cursor.max_time_ms(1),
        lambda: cursor.hint("_id_"),
        lambda: cursor.collation(None),
        lambda: cursor.comment("x"),
    ):
        with pytest.raises(InvalidOperation, match="cannot set options after executing query"):
            change()
    cursor.close()


def test_argument_checks_match_pymongo(coll):
    with pytest.raises(TypeError):
        coll.find().limit("1")
    with pytest.raises(ValueError):
        coll.find().skip(-1)
    with pytest.raises(ValueError):
        coll.find().batch_size(-1)
    with pytest.raises(TypeError):
        coll.find().max_time_ms(1.5)
    with pytest.raises(ValueError, match="greater than 0"):
        coll.find().to_list(0)


def test_max_time_ms_timeout_raises_execution_timeout(coll, pymongo_client):
    pymongo_client.admin.command("configureFailPoint", "maxTimeAlwaysTimeOut", mode="alwaysOn")
    try:
        with pytest.raises(ExecutionTimeout) as info:
            coll.find().max_time_ms(100).to_list()
        assert info.value.code == 50
        assert coll.find().to_list(1), "without max_time_ms the fail point does not apply"
    finally:
        pymongo_client.admin.command("configureFailPoint", "maxTimeAlwaysTimeOut", mode="off")


def test_bad_hint_fails_at_first_fetch(coll):
    cursor = coll.find().hint("no_such_index")
    with pytest.raises(OperationFailure) as info:
        next(cursor)
    assert info.value.code == 2
    assert not cursor.alive


# -- lazy fetching and iteration ---------------------------------------------------------------------


def test_batches_are_fetched_lazily(coll, profiled):
    t = tag()
    cursor = coll.find(comment=t, batch_size=10).sort("n")
    assert profiled(t) == [], "nothing runs before iteration"
    assert cursor.next()["n"] == 0
    assert cursor.retrieved == 10
    assert len(profiled(t, "find")) == 1 and profiled(t, "getMore") == []
    for _ in range(24):
        next(cursor)
    assert cursor.retrieved == 30
    # From the third batch on the core reads one batch ahead (overlapping the server with decoding):
    # the getMore for batch 4 may have run, never one for batch 5.
    assert len(profiled(t, "getMore")) in (2, 3)
    assert [d["n"] for d in cursor.to_list(3)] == [25, 26, 27]
    assert len(profiled(t, "getMore")) <= 3, "to_list(3) was served from the local batch"
    cursor.close()


def test_read_ahead_stays_one_batch_ahead_and_close_stops_it(coll, profiled):
    t = tag()
    cursor = coll.find(comment=t, batch_size=10).sort("n")
    for _ in range(10):
        next(cursor)
    assert profiled(t, "getMore") == [], "batch 1 comes with the find; nothing is read ahead of it"
    next(cursor)  # batch 2, the caller's first getMore; batch 3 is then read in the background
    deadline = time.monotonic() + 10
    while len(profiled(t, "getMore")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(profiled(t, "getMore")) == 2, "batch 3 was not read ahead"
    for _ in range(10):
        next(cursor)  # the rest of batch 2 and the first of batch 3, served from the read-ahead
    assert cursor.retrieved == 30
    assert len(profiled(t, "getMore")) <= 3, "read more than one batch ahead"
    cursor.close()
    assert not cursor.alive
    with pytest.raises(StopIteration):
        next(cursor)


def test_to_list_next_and_alive(coll):
    cursor = coll.find({"n": {"$lt": 12}}).sort("n").batch_size(5)
    assert cursor.alive, "a cursor not yet run may have documents"
    assert [d["n"] for d in cursor.to_list(4)] == [0, 1, 2, 3]
    assert cursor.next()["n"] == 4
    rest = cursor.to_list()
    assert [d["n"] for d in rest] == list(range(5, 12))
    assert not cursor.alive
    assert cursor.to_list() == []
    with pytest.raises(StopIteration):
        cursor.next()


def test_alive_turns_false_with_the_last_document(coll):
    cursor = coll.find({"n": {"$lt": 6}}).sort("n").batch_size(3)
    seen = []
    while cursor.alive:
        seen.append(cursor.next()["n"])
    assert seen == [0, 1, 2, 3, 4, 5]


def test_limit_negative_is_a_single_batch(coll, profiled):
    t = tag()
    docs = coll.find(comment=t).sort("n").limit(-4).to_list()
    assert [d["n"] for d in docs] == [0, 1, 2, 3]
    assert profiled(t, "find")[0]["singleBatch"] is True
    assert profiled(t, "getMore") == []
    # As in pymongo, a smaller batch size wins: the single batch holds 2.
    assert [d["n"] for d in coll.find().sort("n").limit(-4).batch_size(2)] == [0, 1]


def test_context_manager_closes(coll, pymongo_client):
    t = tag()
    with coll.find(comment=t, batch_size=2) as cursor:
        next(cursor)
        assert server_cursors(pymongo_client, t)
    assert not cursor.alive
    wait_until(lambda: not server_cursors(pymongo_client, t), 10, "the server cursor to be killed")
    with pytest.raises(StopIteration):
        next(cursor)


def test_rewind_and_clone(coll):
    cursor = coll.find({"g": 0}).sort("n")
    first = [d["n"] for d in cursor]
    assert [d["n"] for d in cursor.rewind()] == first
    clone = cursor.clone()
    assert [d["n"] for d in clone.limit(2)] == first[:2]
    with pytest.raises(InvalidOperation):
        cursor[1]
    assert coll.find({"g": 0}).sort("n")[1]["n"] == first[1]
    assert [d["n"] for d in coll.find({"g": 0}).sort("n")[2:4]] == first[2:4]


def test_command_cursor_iterates_batches(coll, profiled):
    t = tag()
    cursor = coll.aggregate([{"$sort": {"n": 1}}], batchSize=10, comment=t)
    assert isinstance(cursor, CommandCursor)
    assert cursor.alive
    assert [d["n"] for d in cursor.to_list(15)] == list(range(15))
    # The caller's one getMore, and perhaps the read-ahead of the batch after it.
    assert len(profiled(t, "getMore")) in (1, 2)
    assert len(cursor.to_list()) == 80
    assert not cursor.alive
    assert cursor.try_next() is None


# -- server cursors are killed -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "del", "exhaust", "command_cursor_close", "command_cursor_del"])
def test_unexhausted_cursor_is_killed_on_the_server(coll, pymongo_client, how):
    t = tag()
    if how.startswith("command_cursor"):
        cursor = coll.aggregate([{"$match": {}}], batchSize=3, comment=t)
    else:
        cursor = coll.find(comment=t).batch_size(3)
    next(cursor)
    assert len(server_cursors(pymongo_client, t)) == 1, "the cursor is open on the server"
    if how.endswith("close"):
        cursor.close()
        assert not cursor.alive
    elif how.endswith("del"):
        del cursor
        gc.collect()
    else:
        assert len(cursor.to_list()) == 94
    wait_until(lambda: not server_cursors(pymongo_client, t), 10, f"the server cursor to go ({how})")


def test_closing_twice_and_closing_unstarted(coll):
    cursor = coll.find()
    cursor.close()
    cursor.close()
    assert not cursor.alive
    assert cursor.to_list() == []


# -- memory ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_collection(manager, pymongo_client):
    """100,000 documents of about 1 KB: ~100 MB of results."""
    coll = pymongo_client[DB].big
    coll.drop()
    pad = "p" * 1000
    for start in range(0, 100_000, 10_000):
        coll.insert_many(({"_id": i, "pad": pad} for i in range(start, start + 10_000)), ordered=False)
    yield manager.get_database("cursor-tests", DB).big
    coll.drop()


def _rss() -> int:
    return psutil.Process().memory_info().rss


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1000, 0])
def test_large_result_iterates_in_bounded_memory(big_collection, batch_size):
    gc.collect()
    baseline = _rss()
    peak = baseline
    count = 0
    size = 0
    for doc in big_collection.find(batch_size=batch_size):
        count += 1
        size += len(doc["pad"])
        if count % 2000 == 0:
            peak = max(peak, _rss())
    peak = max(peak, _rss())
    assert count == 100_000
    assert size == 100_000_000
    growth = peak - baseline
    # The whole result is ~100 MB of BSON (more as Python objects). A cursor holds one batch: ~1 MB with
    # batch_size=1000, and the server's maximum of 16 MiB (plus its decoded copy) by default.
    limit = 25 * 2**20 if batch_size else 60 * 2**20
    assert growth < limit, f"RSS grew by {growth / 2**20:.1f} MiB iterating ~95 MiB of documents"
