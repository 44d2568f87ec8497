"""ClientSession's cluster time and operation time (``cluster_time``, ``operation_time``,
``advance_cluster_time``, ``advance_operation_time``) and snapshot sessions
(``start_session(snapshot=True)``), against a real mongod and beside pymongo's own sessions."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64, Timestamp
from pymongo.errors import ConfigurationError, InvalidOperation, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from tenantpool import UserConnectionManager

MAJORITY = WriteConcern(w="majority")


@pytest.fixture(scope="module")
def manager(mongodb_uri):
    # isolation="off": these tests name their databases explicitly.
    with UserConnectionManager(mongodb_uri, isolation="off") as m:
        yield m


@pytest.fixture
def coll(manager, db_name):
    """The tenant's collection ``c`` with documents 0..3, written with w: majority (a snapshot read sees
    the majority-committed data)."""
    c = manager.get_database("alice", db_name).get_collection("c", write_concern=MAJORITY)
    c.insert_many([{"_id": i, "a": i % 2} for i in range(4)])
    return c


@pytest.fixture
def profiled(pymongo_client, db_name):
    db = pymongo_client[db_name]
    db.command("profile", 2)

    def commands(tag: str) -> list[dict]:
        return [e["command"] for e in db.system.profile.find({"command.comment": tag}).sort("ts", 1)]

    yield commands
    db.command("profile", 0)


def outcome(fn) -> tuple[str, str]:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return ("no error", "")


# -- cluster time and operation time -----------------------------------------------------------------


def test_times_follow_the_sessions_commands_like_pymongos(manager, coll, pymongo_client, db_name):
    with manager.get_client("alice").start_session() as s, pymongo_client.start_session() as p:
        assert s.cluster_time is None and s.operation_time is None
        assert p.cluster_time is None and p.operation_time is None
        coll.insert_one({"_id": "w"}, session=s)
        pymongo_client[db_name].c.find_one({}, session=p)
        ct, pct = s.cluster_time, p.cluster_time
        # The same shape and types as pymongo's: the server's $clusterTime document as decoded.
        assert list(ct) == list(pct) == ["clusterTime", "signature"]
        assert isinstance(ct["clusterTime"], Timestamp)
        assert {k: type(v) for k, v in ct["signature"].items()} == {
            k: type(v) for k, v in pct["signature"].items()
        }
        assert type(ct["signature"]["keyId"]) is Int64
        first = s.operation_time
        assert isinstance(first, Timestamp)
        coll.insert_one({"_id": "w2"}, session=s)
        assert s.operation_time > first
        assert s.cluster_time["clusterTime"] >= ct["clusterTime"]
    # An ended session still reports them, as pymongo's does.
    assert s.has_ended and s.operation_time > first and s.cluster_time is not None


def test_advance_operation_time_makes_the_next_read_wait_for_it(manager, coll, profiled):
    client = manager.get_client("alice")
    with client.start_session() as writer, client.start_session() as reader:
        coll.update_one({"_id": 1}, {"$set": {"seen": True}}, session=writer)
        at = writer.operation_time
        reader.advance_operation_time(at)
        assert reader.operation_time == at
        # Never backwards.
        reader.advance_operation_time(Timestamp(1, 1))
        assert reader.operation_time == at
        assert coll.find_one({"_id": 1}, session=reader, comment="causal")["seen"] is True
    (find,) = profiled("causal")
    assert find["readConcern"]["afterClusterTime"] == at


def test_advance_cluster_time_is_gossiped_with_the_next_command(manager, coll):
    client = manager.get_client("alice")
    with client.start_session() as a, client.start_session() as b:
        coll.find_one({}, session=a)
        before = a.cluster_time
        # Never backwards.
        a.advance_cluster_time({"clusterTime": Timestamp(1, 1), "signature": before["signature"]})
        assert a.cluster_time == before
        # A cluster time far in the future: the server refuses the command that carries it, which shows
        # the session sends it.
        future = {"clusterTime": Timestamp(2**31, 1), "signature": before["signature"]}
        b.advance_cluster_time(future)
        assert b.cluster_time == future
        with pytest.raises(OperationFailure, match=r"\$clusterTime.*too far"):
            coll.find_one({}, session=b)
    # It stays in that session: the client's other sessions are unaffected.
    with client.start_session() as c:
        assert coll.find_one({"_id": 0}, session=c) == {"_id": 0, "a": 0}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.advance_cluster_time([("clusterTime", Timestamp(1, 1))]),
        lambda s: s.advance_cluster_time({"signature": {}}),
        lambda s: s.advance_cluster_time({"clusterTime": 5, "signature": {}}),
        lambda s: s.advance_operation_time(5),
        lambda s: s.advance_operation_time({"ts": Timestamp(1, 1)}),
    ],
)
def test_validation_errors_are_pymongos(manager, pymongo_client, call):
    with manager.get_client("alice").start_session() as s, pymongo_client.start_session() as p:
        ours, theirs = outcome(lambda: call(s)), outcome(lambda: call(p))
    assert ours == theirs
    assert ours[0] == "TypeError"


def test_a_cluster_time_without_signature_is_refused_at_once(manager):
    # pymongo takes it and the server refuses the next command ("Missing expected field").
    with manager.get_client("alice").start_session() as s:
        with pytest.raises(ValueError, match="signature"):
            s.advance_cluster_time({"clusterTime": Timestamp(1, 1)})


def test_advancing_an_ended_session(manager, coll):
    with manager.get_client("alice").start_session() as s:
        coll.find_one({}, session=s)
    at = s.operation_time
    later = Timestamp(at.time + 1, 0)
    s.advance_operation_time(later)
    assert s.operation_time == later
    s.advance_operation_time(at)
    assert s.operation_time == later
    ct = dict(s.cluster_time, clusterTime=later)
    s.advance_cluster_time(ct)
    assert s.cluster_time == ct


# -- snapshot sessions -------------------------------------------------------------------------------

FIRST_READS = {
    "find": lambda c, s: c.find({}, session=s).to_list(),
    "find_one": lambda c, s: c.find_one({}, session=s),
    "aggregate": lambda c, s: c.aggregate([{"$match": {}}], session=s).to_list(),
    "count_documents": lambda c, s: c.count_documents({}, session=s),
    "distinct": lambda c, s: c.distinct("_id", session=s),
}


@pytest.mark.parametrize("first", list(FIRST_READS))
def test_snapshot_reads_all_see_the_first_reads_snapshot(manager, coll, first):
    # Whatever read comes first, its atClusterTime is the session's snapshot for the later ones.
    with manager.get_client("alice").start_session(snapshot=True) as s:
        FIRST_READS[first](coll, s)
        coll.insert_one({"_id": 10, "a": 1})
        coll.delete_one({"_id": 0})
        assert [d["_id"] for d in coll.find({}, session=s).sort("_id")] == [0, 1, 2, 3]
        assert coll.find_one({"_id": 10}, session=s) is None
        assert coll.count_documents({}, session=s) == 4
        assert sorted(coll.distinct("_id", session=s)) == [0, 1, 2, 3]
        assert coll.aggregate([{"$count": "n"}], session=s).to_list() == [{"n": 4}]
        # A cursor's later batches come from the same snapshot.
        assert len(coll.find({}, session=s, batch_size=1).to_list()) == 4
    # Outside the session, the writes are there.
    assert sorted(coll.distinct("_id")) == [1, 2, 3, 10]


def test_snapshot_session_sends_snapshot_read_concern(manager, coll, profiled):
    majority = coll.with_options(read_concern=ReadConcern("majority"))
    with manager.get_client("alice").start_session(snapshot=True) as s:
        coll.find_one({}, session=s, comment="snap")
        # The collection's own read concern gives way to the session's, as in pymongo.
        majority.find({}, session=s, comment="snap").to_list()
        majority.count_documents({}, session=s, comment="snap")
    first, second, third = profiled("snap")
    assert first["readConcern"]["level"] == "snapshot" and "atClusterTime" not in first["readConcern"]
    for later in (second, third):
        assert later["readConcern"]["level"] == "snapshot"
        assert later["readConcern"]["atClusterTime"] is not None


def test_snapshot_session_refusals(manager, coll, pymongo_client, db_name):
    client = manager.get_client("alice")
    with pytest.raises(ConfigurationError, match="snapshot reads do not support causal_consistency=True"):
        client.start_session(snapshot=True, causal_consistency=True)
    with client.start_session(snapshot=True) as s, pymongo_client.start_session(snapshot=True) as p:
        assert s.options.snapshot is True and s.options.causal_consistency is False
        with pytest.raises(InvalidOperation, match="Transactions are not supported in snapshot sessions"):
            s.start_transaction()
        with pytest.raises(InvalidOperation, match="Transactions are not supported in snapshot sessions"):
            s.with_transaction(lambda _: None)
        coll.find_one({}, session=s)
        pymongo_client[db_name].c.find_one({}, session=p)
        # Writes (and commands without snapshot support) are refused by the server, as under pymongo.
        errors: list[Any] = []
        for session, target in ((s, coll), (p, pymongo_client[db_name].c)):
            with pytest.raises(OperationFailure) as info:
                target.insert_one({"_id": "x"}, session=session)
            errors.append((info.value.code, "does not support" in str(info.value)))
        assert errors[0] == errors[1] == (72, True)
