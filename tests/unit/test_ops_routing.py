"""Read preference routing, sessions and transactions without a server: which read preference, read
concern and write concern each operation carries, and the core session it runs in."""

from __future__ import annotations

import asyncio

import pytest
from bson.timestamp import Timestamp
from pymongo.errors import ConfigurationError, InvalidOperation, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import Nearest, ReadPreference, Secondary
from pymongo.write_concern import WriteConcern
from tests.unit.fakecore import FakeRawChangeStream

SECONDARY = ReadPreference.SECONDARY


@pytest.fixture
def secondary(db):
    return db.get_collection("c", read_preference=SECONDARY)


# -- read preference ---------------------------------------------------------------------------------


def test_primary_reads_carry_no_read_preference(core, coll):
    coll.find_one({})
    coll.find().to_list()
    coll.count_documents({})
    coll.distinct("a")
    coll.aggregate([])
    assert all("readPreference" not in c.spec for c in core.sent())


def test_every_read_carries_the_collections_read_preference(core, secondary):
    secondary.find_one({})
    secondary.find().to_list()
    secondary.count_documents({})
    secondary.estimated_document_count()
    secondary.distinct("a")
    secondary.aggregate([])
    reads = [c for c in core.sent() if c.kind != "session"]
    assert [next(iter(c.command)) for c in reads] == [
        "find",
        "find",
        "aggregate",
        "count",
        "distinct",
        "aggregate",
    ]
    assert all(c.spec["readPreference"] == {"mode": "secondary"} for c in reads)


def test_command_paths_carry_the_read_preference_too(core, secondary):
    secondary.find(skip=-1).to_list()
    secondary.count_documents({}, other=1)
    secondary.distinct("a", other=1)
    secondary.aggregate([], other=1)
    assert [c.spec["readPreference"] for c in core.sent()] == [{"mode": "secondary"}] * 4


def test_tags_max_staleness_and_hedge_in_the_drivers_words(core, db):
    pref = Nearest(tag_sets=[{"dc": "ny"}, {}], max_staleness=120)
    db.get_collection("c", read_preference=pref).find_one({})
    assert core.last.spec["readPreference"] == {
        "mode": "nearest",
        "tagSets": [{"dc": "ny"}, {}],
        "maxStalenessSeconds": 120,
    }


def test_the_managers_read_preference_is_the_default(core):
    db = core.database(read_preference=Secondary())
    db.c.find_one({})
    assert core.last.spec["readPreference"] == {"mode": "secondary"}


def test_writes_and_admin_commands_go_to_the_primary(core, secondary):
    secondary.insert_one({"_id": 1})
    secondary.update_one({}, {"$set": {"a": 1}})
    secondary.create_index("a")
    secondary.list_indexes()
    secondary.database.command("ping")
    assert all("readPreference" not in c.spec for c in core.sent())


def test_database_command_takes_only_the_read_preference_given(core, db):
    db.with_options(read_preference=SECONDARY).command("dbStats")
    assert "readPreference" not in core.last.spec
    db.command("dbStats", read_preference=ReadPreference.SECONDARY_PREFERRED)
    assert core.last.spec["readPreference"] == {"mode": "secondaryPreferred"}


def test_read_preference_must_be_a_pymongo_mode(db):
    with pytest.raises(TypeError, match="is not valid for read_preference"):
        db.get_collection("c", read_preference="secondary")


# -- sessions and transactions -----------------------------------------------------------------------


def test_operations_run_in_the_core_session(core, db, coll):
    session = db.client.start_session()
    coll.find_one({}, session=session)
    coll.insert_many([{"_id": 1}], session=session)
    coll.aggregate([], session=session)
    assert [c.session for c in core.sent()] == [session._raw] * 3


def test_transaction_steps_and_options(core, db, coll):
    session = db.client.start_session()
    with session.start_transaction(
        read_concern=ReadConcern("snapshot"), write_concern=WriteConcern(w="majority"), max_commit_time_ms=50
    ):
        coll.update_one({}, {"$set": {"a": 1}}, session=session)
    # In a transaction, pymongo's update command: the driver numbers it with the transaction's txnNumber.
    assert [(c.kind, c.op) for c in core.calls] == [
        ("session", "start_transaction"),
        ("execute", "command"),
        ("session", "commit_transaction"),
    ]
    assert "update" in core.calls[1].command and core.calls[1].session is session._raw
    assert core.calls[0].spec == {
        "readConcern": {"level": "snapshot"},
        "writeConcern": {"w": "majority"},
        "maxCommitTimeMS": 50,
    }


def test_an_error_in_the_block_aborts(core, db):
    session = db.client.start_session()
    with pytest.raises(RuntimeError), session.start_transaction():
        raise RuntimeError("app")
    assert [c.op for c in core.calls] == ["start_transaction", "abort_transaction"]


def test_no_concerns_of_their_own_inside_a_transaction(core, db):
    coll = db.get_collection("c", read_concern=ReadConcern("majority"), write_concern=WriteConcern(w=2))
    session = db.client.start_session()
    with session.start_transaction():
        coll.find().to_list()
        coll.count_documents({}, session=session)
        coll.find(session=session).to_list()
        coll.delete_one({}, session=session)
        coll.aggregate([{"$out": "x"}], session=session)
    outside, count, find, delete, aggregate = [c for c in core.calls if c.kind in ("execute", "open_cursor")]
    assert outside.command["readConcern"] == {"level": "majority"}
    for call in (count, find, delete, aggregate):
        assert "readConcern" not in call.command and "writeConcern" not in call.command, call


def test_snapshot_sessions_leave_the_read_concern_to_the_driver(core, db):
    coll = db.get_collection("c", read_concern=ReadConcern("majority"))
    session = db.client.start_session(snapshot=True)
    coll.find(session=session).to_list()
    coll.distinct("a", session=session)
    assert [c.command.get("readConcern") for c in core.sent()] == [None, None]
    with pytest.raises(InvalidOperation, match="snapshot sessions"):
        session.start_transaction()


def test_reads_in_a_transaction_use_its_read_preference(core, db, secondary):
    session = db.client.start_session()
    with session.start_transaction():
        secondary.find_one({}, session=session)
    # The transaction's read preference (the client's, primary) wins over the collection's.
    assert "readPreference" not in core.calls[1].spec
    with pytest.raises(InvalidOperation, match="read preference in a transaction must be primary"):
        with session.start_transaction(read_preference=SECONDARY):
            db.c.find_one({}, session=session)


def test_unacknowledged_collection_in_a_transaction_writes_with_the_transactions(core, db):
    session = db.client.start_session()
    with session.start_transaction():
        db.get_collection("c", write_concern=WriteConcern(w=0)).insert_one({"_id": 1}, session=session)
    assert "writeConcern" not in core.calls[1].command


def test_session_checks(core, db):
    session = db.client.start_session()
    with session.start_transaction(), pytest.raises(InvalidOperation, match="already in progress"):
        session.start_transaction()
    session.end_session()
    with pytest.raises(InvalidOperation, match="ended session"):
        db.c.find_one({}, session=session)
    with pytest.raises(ConfigurationError, match="estimated_document_count does not support sessions"):
        db.c.estimated_document_count(session=session)


def test_bound_session_is_used_by_calls_given_none(core, db, coll):
    session = db.client.start_session()
    raw = session._raw
    with session.bind():
        coll.insert_many([{"_id": 1}])
        coll.find_one({"_id": 1})
    assert [c.session for c in core.sent()] == [raw, raw]
    assert session.has_ended  # bind() ends the session by default
    with pytest.raises(InvalidOperation, match="Only the client that created the bound session"):
        with core.client("bob").start_session().bind():
            coll.find_one({})


class Transient(PyMongoError):
    pass


def test_with_transaction_retries_a_transient_error(core, db, coll):
    session = db.client.start_session()
    attempts = []

    def callback(s):
        attempts.append(1)
        coll.insert_one({"_id": len(attempts)}, session=s)
        if len(attempts) == 1:
            error = OperationFailure("write conflict", 112)
            error._add_error_label("TransientTransactionError")
            raise error
        return "done"

    assert session.with_transaction(callback) == "done"
    steps = [c.op for c in core.calls if c.kind == "session"]
    assert steps == ["start_transaction", "abort_transaction", "start_transaction", "commit_transaction"]


def test_with_transaction_retries_an_unknown_commit_result(core, db):
    session = db.client.start_session()
    error = OperationFailure("not primary", 10107)
    error._add_error_label("UnknownTransactionCommitResult")
    core.step_errors.extend([None, error])  # start succeeds, the first commit fails
    session.with_transaction(lambda s: None)
    steps = [c.op for c in core.calls if c.kind == "session"]
    assert steps[-2:] == ["commit_transaction", "commit_transaction"]


def test_change_stream_spec(core, db, coll):
    stream = coll.watch(
        [{"$match": {}}],
        full_document="updateLookup",
        resume_after={"_data": "a"},
        start_at_operation_time=Timestamp(1, 1),
        max_await_time_ms=10,
        batch_size=3,
    )
    assert core.last.kind == "watch"
    assert core.last.spec == {
        "pipeline": [{"$match": {}}],
        "options": {
            "fullDocument": "updateLookup",
            "resumeAfter": {"_data": "a"},
            "maxAwaitTimeMS": 10,
            "batchSize": 3,
        },
        "collection": "c",
    }
    assert stream.try_next() is None and stream.resume_token is None
    core.reply(FakeRawChangeStream({"_id": {"_data": "1"}, "operationType": "insert"}))
    with coll.watch() as stream:
        assert next(stream)["operationType"] == "insert"
        assert stream.resume_token == {"_data": "1"}
    db.watch(start_after={"_data": "b"}, resume_after={"_data": "a"})
    assert "collection" not in core.last.spec and core.last.spec["options"] == {"startAfter": {"_data": "b"}}
    with pytest.raises(InvalidOperation, match="comment"):
        coll.watch(comment="x")


# -- the async twin sends the same ---------------------------------------------------------------------


def test_async_operations_send_what_the_sync_ones_do(core):
    sync_db = core.database()
    sync_db.c.update_one({"a": 1}, {"$set": {"b": 1}}, upsert=True)
    sync_db.c.find({"a": 1}, limit=2).to_list()
    expected = [(c.kind, c.op, c.spec) for c in core.sent()]
    core.calls.clear()
    async_db = core.database(asynchronous=True)

    async def run():
        await async_db.c.update_one({"a": 1}, {"$set": {"b": 1}}, upsert=True)
        return await async_db.c.find({"a": 1}, limit=2).to_list()

    assert asyncio.run(run()) == []
    assert [(c.kind, c.op, c.spec) for c in core.sent()] == expected
