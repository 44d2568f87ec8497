"""Read preferences other than primary, as pymongo has them, against real mongods.

On a 3-member replica set (tagged ``name: m0..m2``, ``dc: east|west``), each member's profiler records
which member ran each read (matched by a unique ``comment``), so the tests prove where reads went rather
than only that they succeeded. Data is written with ``w=3`` before it is read from a secondary. On the
single-node set, the ``read_preference`` properties, validation and transaction rules are compared with
pymongo's own objects and errors.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import warnings

import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.errors import ConfigurationError, InvalidOperation, ServerSelectionTimeoutError
from pymongo.read_preferences import Nearest, Primary, PrimaryPreferred, Secondary, SecondaryPreferred
from pymongo.write_concern import WriteConcern

from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.testing.mongod import ReplicaSet

TAGS = [{"name": "m0", "dc": "east"}, {"name": "m1", "dc": "east"}, {"name": "m2", "dc": "west"}]
# Server monitoring every 500 ms: maxStalenessSeconds may then be as low as 90 (pymongo's and the
# driver's minimum).
RS_OPTIONS = {"heartbeatFrequencyMS": 500, "appName": "tp-readpref"}
_comments = itertools.count()


def comment() -> str:
    return f"rp-{next(_comments)}-{time.monotonic_ns()}"


class Members:
    """Direct pymongo clients to each member: roles, and which member ran what (by profiler)."""

    def __init__(self, rs: ReplicaSet) -> None:
        self.rs = rs
        self.clients = {
            port: MongoClient(
                f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=10000
            )
            for port in rs.ports
        }

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def name(self, port: int) -> str:
        return TAGS[self.rs.ports.index(port)]["name"]

    def primary(self) -> str:
        return self.name(self.rs.primary_port())

    def secondaries(self) -> set[str]:
        return {t["name"] for t in TAGS} - {self.primary()}

    def profile(self, db_name: str) -> None:
        # After the database exists on every member (written with w=3): each member profiles its own reads.
        for c in self.clients.values():
            c[db_name].command("profile", 2)

    def ran(self, db_name: str, tag: str, **extra: object) -> list[str]:
        """The members whose profiler saw a command (not a getMore) with this comment."""
        found = []
        query = {"command.comment": tag, "op": {"$ne": "getmore"}, **extra}
        for port, c in self.clients.items():
            n = c[db_name]["system.profile"].count_documents(query)
            found += [self.name(port)] * n
        return found

    def getmores(self, db_name: str, tag: str) -> list[str]:
        found = []
        for port, c in self.clients.items():
            n = c[db_name]["system.profile"].count_documents({"op": "getmore", "command.comment": tag})
            found += [self.name(port)] * n
        return found


@pytest.fixture(scope="module")
def tagged_set():
    with ReplicaSet(3, tags=TAGS) as rs:
        yield rs


@pytest.fixture(scope="module")
def members(tagged_set):
    m = Members(tagged_set)
    yield m
    m.close()


@pytest.fixture(scope="module")
def rs_manager(tagged_set):
    with UserConnectionManager(tagged_set.uri, **RS_OPTIONS) as m:
        yield m


_tenants = itertools.count()


@pytest.fixture
def seeded(rs_manager, members):
    """A fresh tenant database holding ``c`` = 10 documents on every member, profiled everywhere."""
    user = f"rp{next(_tenants)}"
    db = rs_manager.get_database(user)
    db.c.with_options(write_concern=WriteConcern(w=3)).insert_many(
        [{"_id": i, "k": i % 3} for i in range(10)]
    )
    members.profile(db.name)
    return db


def run_reads(coll, db):
    """Every kind of read, each with its own comment: {kind: comment}."""
    tags = {
        k: comment() for k in ("find", "find_one", "count", "estimated", "distinct", "aggregate", "db_agg")
    }
    assert len(list(coll.find({}, comment=tags["find"], batch_size=3))) == 10
    assert coll.find_one({"_id": 4}, comment=tags["find_one"]) == {"_id": 4, "k": 1}
    assert coll.count_documents({"k": 0}, comment=tags["count"]) == 4
    assert coll.estimated_document_count(comment=tags["estimated"]) == 10
    assert sorted(coll.distinct("k", comment=tags["distinct"])) == [0, 1, 2]
    pipeline = [{"$group": {"_id": "$k", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    assert [d["n"] for d in coll.aggregate(pipeline, comment=tags["aggregate"])] == [4, 3, 3]
    # A database aggregate (reading c too: the profiler skips one that reads no collection).
    union = {"$unionWith": {"coll": "c", "pipeline": [{"$match": {"_id": 0}}]}}
    docs = db.aggregate([{"$documents": [{"x": 1}]}, union], comment=tags["db_agg"]).to_list()
    assert docs == [{"x": 1}, {"_id": 0, "k": 0}]
    return tags


# -- where reads go (3-member replica set) ----------------------------------------------------------


def test_secondary_reads_run_on_a_secondary(seeded, members):
    db = seeded.with_options(read_preference=ReadPreference.SECONDARY)
    tags = run_reads(db.c, db)
    secondaries = members.secondaries()
    for kind, tag in tags.items():
        ran = members.ran(seeded.name, tag)
        assert len(ran) == 1 and ran[0] in secondaries, (kind, ran)
    # The cursor's getMores follow its find to the same member.
    assert set(members.getmores(seeded.name, tags["find"])) == set(members.ran(seeded.name, tags["find"]))
    assert len(members.getmores(seeded.name, tags["find"])) >= 3


def test_primary_reads_run_on_the_primary(seeded, members):
    tags = run_reads(seeded.c, seeded)
    primary = members.primary()
    for kind, tag in tags.items():
        assert members.ran(seeded.name, tag) == [primary], kind
    # Explicitly primary, over a secondary default.
    coll = seeded.with_options(read_preference=ReadPreference.SECONDARY).c.with_options(
        read_preference=Primary()
    )
    tag = comment()
    assert coll.find_one({}, comment=tag) is not None
    assert members.ran(seeded.name, tag) == [primary]


def test_command_uses_primary_unless_given_a_read_preference(seeded, members):
    db = seeded.with_options(read_preference=ReadPreference.SECONDARY)
    # pymongo's rule: Database.command ignores the database's read preference.
    tag = comment()
    assert db.command("count", "c", comment=tag)["n"] == 10
    assert members.ran(seeded.name, tag) == [members.primary()]
    tag = comment()
    assert seeded.command("count", "c", comment=tag, read_preference=Secondary([{"name": "m2"}]))["n"] == 10
    assert members.ran(seeded.name, tag) == ["m2"]


def test_secondary_preferred_and_nearest(seeded, members):
    tag = comment()
    coll = seeded.c.with_options(read_preference=SecondaryPreferred())
    assert coll.count_documents({}, comment=tag) == 10
    assert members.ran(seeded.name, tag)[0] in members.secondaries()
    # Nearest: any member within the latency window (all of them, on loopback); each read runs once.
    seen = []
    for _ in range(6):
        tag = comment()
        assert seeded.get_collection("c", read_preference=Nearest()).find_one({"_id": 1}, comment=tag)
        ran = members.ran(seeded.name, tag)
        assert len(ran) == 1
        seen += ran
    assert set(seen) <= {"m0", "m1", "m2"}
    # Nearest with a tag set: only that member.
    tag = comment()
    assert seeded.c.with_options(read_preference=Nearest([{"name": "m0"}])).find_one({}, comment=tag)
    assert members.ran(seeded.name, tag) == ["m0"]


def test_tag_sets_route_reads(seeded, members):
    for tag_sets, expected in (
        ([{"name": "m2"}], {"m2"}),
        ([{"dc": "west"}], {"m2"}),
        # The first tag set matching a secondary wins.
        ([{"dc": "north"}, {"name": "m1"}], {"m1"}),
        # {"dc": "east"} matches m0 and m1, of which only a secondary is eligible.
        ([{"dc": "east"}], {"m0", "m1"} - {members.primary()}),
    ):
        coll = seeded.c.with_options(read_preference=Secondary(tag_sets))
        for _ in range(3):
            tag = comment()
            assert len(coll.find({}, comment=tag).to_list()) == 10
            assert set(members.ran(seeded.name, tag)) == expected, tag_sets
    # secondaryPreferred with unmatched tags falls back to the primary, as the spec says.
    tag = comment()
    coll = seeded.c.with_options(read_preference=SecondaryPreferred([{"dc": "north"}]))
    assert coll.count_documents({}, comment=tag) == 10
    assert members.ran(seeded.name, tag) == [members.primary()]


def test_max_staleness_routes_and_is_validated_like_pymongo(seeded, members, tagged_set):
    tag = comment()
    coll = seeded.c.with_options(read_preference=Secondary(max_staleness=120))
    assert coll.estimated_document_count(comment=tag) == 10
    assert members.ran(seeded.name, tag)[0] in members.secondaries()
    # Below what the replica set's heartbeat allows: pymongo raises ConfigurationError at server selection.
    with MongoClient(tagged_set.uri, **RS_OPTIONS) as client:
        with pytest.raises(ConfigurationError):
            client[seeded.name].c.with_options(read_preference=Secondary(max_staleness=30)).find_one()
    with pytest.raises(ConfigurationError, match="maxStalenessSeconds"):
        seeded.c.with_options(read_preference=Secondary(max_staleness=30)).find_one()


def test_unmatched_tags_fail_within_server_selection_timeout(tagged_set, members):
    with UserConnectionManager(tagged_set.uri, serverSelectionTimeoutMS=500, **RS_OPTIONS) as m:
        db = m.get_database("rpnomatch")
        db.c.insert_one({"_id": 1})  # writes still go to the primary
        coll = db.c.with_options(read_preference=Secondary([{"dc": "mars"}]))
        for read in (lambda: coll.find_one(), lambda: coll.count_documents({}), lambda: list(coll.find())):
            started = time.monotonic()
            with pytest.raises(ServerSelectionTimeoutError):
                read()
            assert time.monotonic() - started < 5
        # Primary reads of the same manager are unaffected.
        assert db.c.find_one() == {"_id": 1}


def test_manager_read_preference_from_the_uri(tagged_set, members):
    uri = tagged_set.uri + "&readPreference=secondary&readPreferenceTags=name:m1&maxStalenessSeconds=120"
    with UserConnectionManager(uri, **RS_OPTIONS) as m, MongoClient(uri, **RS_OPTIONS) as client:
        assert m.read_preference == client.read_preference == Secondary([{"name": "m1"}], 120)
        db = m.get_database("rpuri")
        # Writes ignore it.
        db.c.with_options(write_concern=WriteConcern(w=3)).insert_many([{"_id": i} for i in range(5)])
        members.profile(db.name)
        assert db.read_preference == client[db.name].read_preference
        tag = comment()
        assert len(db.c.find({}, comment=tag).to_list()) == 5
        assert members.ran(db.name, tag) == ["m1"]
        # with_options overrides it.
        tag = comment()
        assert db.c.with_options(read_preference=Primary()).count_documents({}, comment=tag) == 5
        assert members.ran(db.name, tag) == [members.primary()]
        tag = comment()
        assert (
            db.with_options(read_preference=Secondary([{"name": "m2"}])).c.count_documents({}, comment=tag)
            == 5
        )
        assert members.ran(db.name, tag) == ["m2"]
        # Database.command stays on the primary.
        tag = comment()
        db.command("count", "c", comment=tag)
        assert members.ran(db.name, tag) == [members.primary()]
    # A keyword wins over the URI, as in pymongo.
    with UserConnectionManager(uri, readPreferenceTags="name:m2", **RS_OPTIONS) as m:
        assert m.read_preference == Secondary([{"name": "m2"}], 120)
        db = m.get_database("rpuri")
        tag = comment()
        assert db.c.find_one({}, comment=tag) is not None
        assert members.ran(db.name, tag) == ["m2"]


def test_aggregate_out_and_change_streams_with_a_secondary_read_preference(seeded, members):
    coll = seeded.c.with_options(read_preference=ReadPreference.SECONDARY)
    # $out: MongoDB 5.0+ runs it on the secondary, which writes through the primary (pymongo's rule too).
    tag = comment()
    assert coll.aggregate([{"$match": {"k": 0}}, {"$out": "zeros"}], comment=tag).to_list() == []
    ran = members.ran(seeded.name, tag, **{"command.aggregate": "c"})
    assert len(ran) == 1 and ran[0] in members.secondaries()
    assert seeded.zeros.count_documents({}) == 4
    # A change stream opened on a secondary sees the majority-committed changes.
    with coll.watch(max_await_time_ms=200) as stream:
        seeded.c.with_options(write_concern=WriteConcern(w="majority")).insert_one({"_id": 100, "k": 1})
        change = None
        for _ in range(50):
            change = stream.try_next()
            if change is not None:
                break
        assert change is not None and change["documentKey"] == {"_id": 100}
        # The stream's server cursor lives on a secondary (the profiler skips change stream aggregates).
        holders = [
            members.name(port)
            for port, c in members.clients.items()
            for op in c.admin.aggregate([{"$currentOp": {"idleCursors": True, "allUsers": True}}])
            if op.get("ns") == f"{seeded.name}.c"
            and "$changeStream" in str((op.get("cursor") or {}).get("originatingCommand", {}).get("pipeline"))
        ]
        assert len(holders) == 1 and holders[0] in members.secondaries(), holders


def test_writes_ignore_the_read_preference(seeded, members):
    coll = seeded.c.with_options(read_preference=ReadPreference.SECONDARY)
    coll.insert_one({"_id": "w"})
    coll.update_one({"_id": "w"}, {"$set": {"x": 1}})
    assert coll.find_one_and_update({"_id": "w"}, {"$inc": {"x": 1}}, return_document=True)["x"] == 2
    coll.delete_one({"_id": "w"})
    seeded.with_options(read_preference=ReadPreference.SECONDARY).command("create", "made_here")
    assert "made_here" in seeded.list_collection_names()


# -- single-node replica set: properties, validation, transactions ---------------------------------


@pytest.fixture
def single(mongodb_uri):
    with UserConnectionManager(mongodb_uri, appName="tp-readpref-1") as m:
        yield m


def test_preferred_modes_work_on_a_single_node(single):
    db = single.get_database("rpone")
    db.c.drop()
    db.c.insert_many([{"_id": i, "k": i % 2} for i in range(4)])
    for mode in (PrimaryPreferred(), SecondaryPreferred(), Nearest(), SecondaryPreferred([{"dc": "x"}, {}])):
        coll = db.c.with_options(read_preference=mode)
        assert coll.find().sort("_id").to_list() == [{"_id": i, "k": i % 2} for i in range(4)]
        assert coll.find_one({"_id": 2}) == {"_id": 2, "k": 0}
        assert coll.count_documents({"k": 1}) == 2
        assert coll.estimated_document_count() == 4
        assert sorted(coll.distinct("k")) == [0, 1]
        assert len(coll.aggregate([{"$match": {}}]).to_list()) == 4
        assert db.command("count", "c", read_preference=mode)["n"] == 4


def test_secondary_on_a_single_node_times_out(mongodb_uri):
    with UserConnectionManager(mongodb_uri, serverSelectionTimeoutMS=300) as m:
        coll = m.get_database("rpone").c.with_options(read_preference=ReadPreference.SECONDARY)
        with pytest.raises(ServerSelectionTimeoutError):
            coll.find_one()


@pytest.mark.parametrize(
    ("query", "keywords"),
    [
        ("", {}),
        ("readPreference=secondaryPreferred", {}),
        (
            "readPreference=secondary&readPreferenceTags=dc:ny,rack:1&readPreferenceTags=&maxStalenessSeconds=120",
            {},
        ),
        ("readPreference=nearest&maxStalenessSeconds=95", {}),
        ("readPreference=secondary", {"readPreference": "nearest"}),
        ("readPreference=secondary", {"readPreferenceTags": ["dc:ny", ""], "maxStalenessSeconds": 100}),
        ("readPreference=secondary", {"read_preference": PrimaryPreferred([{"a": "b"}])}),
        ("", {"readpreference": "primaryPreferred"}),
    ],
)
def test_read_preference_properties_match_pymongo(mongodb_uri, query, keywords):
    sep = "&" if "?" in mongodb_uri else "?"
    uri = mongodb_uri + (sep + query if query else "")
    with UserConnectionManager(uri, **keywords) as m, MongoClient(uri, connect=False, **keywords) as client:
        assert m.read_preference == client.read_preference
        assert m.get_client("u").read_preference == client.read_preference
        ours, theirs = m.get_database("u"), client["user_u_db"]
        pairs = [
            (ours, theirs),
            (ours.c, theirs.c),
            (ours.c.sub, theirs.c.sub),
            (ours.with_options(), theirs.with_options()),
        ]
        for rp in (
            Secondary(),
            SecondaryPreferred([{"dc": "ny"}], 120),
            Nearest(max_staleness=90),
            Primary(),
        ):
            pairs += [
                (ours.with_options(read_preference=rp), theirs.with_options(read_preference=rp)),
                (ours.with_options(read_preference=rp).c, theirs.with_options(read_preference=rp).c),
                (
                    ours.get_collection("c", read_preference=rp),
                    theirs.get_collection("c", read_preference=rp),
                ),
                (ours.c.with_options(read_preference=rp), theirs.c.with_options(read_preference=rp)),
                (ours.c.with_options(read_preference=rp).sub, theirs.c.with_options(read_preference=rp).sub),
                (
                    ours.c.with_options(read_preference=rp).with_options(),
                    theirs.c.with_options(read_preference=rp).with_options(),
                ),
                (
                    m.get_client("u").get_database("user_u_db", read_preference=rp),
                    client.get_database("user_u_db", read_preference=rp),
                ),
            ]
        for a, b in pairs:
            assert a.read_preference == b.read_preference
            assert repr(a.read_preference) == repr(b.read_preference)


def test_hedge_is_kept_as_given(single):
    db = single.get_database("rpone")
    with warnings.catch_warnings():
        # pymongo deprecates hedge (and warns on reading it, comparisons included).
        warnings.simplefilter("ignore", DeprecationWarning)
        rp = Nearest(hedge={"enabled": True})
        assert db.with_options(read_preference=rp).read_preference == rp
        # Hedging applies to sharded clusters only; a replica set ignores it.
        assert db.c.with_options(read_preference=rp).count_documents({}) >= 0


def test_invalid_read_preferences_raise_like_pymongo(mongodb_uri, single, pymongo_client):
    db, theirs = single.get_database("rpone"), pymongo_client["user_rpone_db"]

    def same_error(ours, pymongos):
        with pytest.raises(Exception) as expected:
            pymongos()
        with pytest.raises(type(expected.value)) as got:
            ours()
        assert str(got.value) == str(expected.value)

    for bad in ("secondary", 1, {"mode": "secondary"}):
        same_error(
            lambda bad=bad: db.with_options(read_preference=bad),
            lambda bad=bad: theirs.with_options(read_preference=bad),
        )
        same_error(
            lambda bad=bad: db.c.with_options(read_preference=bad),
            lambda bad=bad: theirs.c.with_options(read_preference=bad),
        )
        same_error(
            lambda bad=bad: db.get_collection("c", read_preference=bad),
            lambda bad=bad: theirs.get_collection("c", read_preference=bad),
        )
    for keywords in (
        {"readPreference": "bogus"},
        {"read_preference": "secondary"},
        {"readPreference": "primary", "readPreferenceTags": "dc:ny"},
        {"readPreference": "primary", "maxStalenessSeconds": 120},
        {"readPreference": "secondary", "maxStalenessSeconds": "soon"},
        {"readPreference": "secondary", "readPreferenceTags": [{"dc": "ny"}]},
    ):
        same_error(
            lambda: UserConnectionManager(mongodb_uri, **keywords),  # noqa: B023
            lambda: MongoClient(mongodb_uri, connect=False, **keywords),  # noqa: B023
        )
    # An invalid value in the URI: pymongo warns and ignores it.
    sep = "&" if "?" in mongodb_uri else "?"
    uri = mongodb_uri + sep + "readPreference=bogus&maxStalenessSeconds=abc"
    with pytest.warns(UserWarning) as expected:
        pymongo_default = MongoClient(uri, connect=False).read_preference
    with pytest.warns(UserWarning) as got:
        m = UserConnectionManager(uri)
    with m:
        assert m.read_preference == pymongo_default == Primary()
        assert m.get_database("rpone").c.estimated_document_count() >= 0
    assert [str(w.message) for w in got] == [str(w.message) for w in expected]
    with pytest.raises(ConfigurationError, match="primary cannot be combined with tags"):
        UserConnectionManager(mongodb_uri + sep + "readPreferenceTags=dc:ny")


def test_a_transaction_reads_only_from_the_primary_like_pymongo(mongodb_uri, single, pymongo_client):
    db = single.get_database("rptxn")
    db.c.drop()
    db.c.insert_one({"_id": 1})
    theirs = pymongo_client[db.name]

    # pymongo: with a non-primary transaction read preference, a read raises (writes are fine).
    with pymongo_client.start_session() as ps:
        ps.start_transaction(read_preference=SecondaryPreferred())
        with pytest.raises(InvalidOperation) as expected:
            theirs.c.find_one({}, session=ps)
        ps.abort_transaction()
    assert str(expected.value).startswith("read preference in a transaction must be primary")

    client = single.get_client("rptxn")
    with client.start_session() as s:
        s.start_transaction(read_preference=SecondaryPreferred())
        reads = [
            lambda: db.c.find_one({}, session=s),
            lambda: db.c.find({}, session=s).to_list(),
            lambda: db.c.count_documents({}, session=s),
            lambda: db.c.distinct("_id", session=s),
            lambda: db.c.aggregate([], session=s),
            lambda: db.command("find", "c", session=s),
            lambda: db.c.with_options(read_preference=Primary()).find_one({}, session=s),
        ]
        for read in reads:
            with pytest.raises(InvalidOperation) as got:
                read()
            assert str(got.value) == str(expected.value)
        # Writes ignore the read preference, in a transaction too.
        db.c.insert_one({"_id": 2}, session=s)
        s.commit_transaction()
    assert db.c.count_documents({}) == 2

    # The collection's read preference does not apply inside a transaction: the transaction's (primary) does.
    with client.start_session() as s, s.start_transaction():
        db.c.insert_one({"_id": 3}, session=s)
        coll = db.c.with_options(read_preference=SecondaryPreferred())
        assert coll.find_one({"_id": 3}, session=s) == {"_id": 3}
        assert coll.count_documents({}, session=s) == 3
        assert db.command("find", "c", filter={"_id": 3}, session=s)["cursor"]["firstBatch"] == [{"_id": 3}]
        with pytest.raises(InvalidOperation, match="must be primary"):
            db.command("find", "c", session=s, read_preference=Nearest())
    with pymongo_client.start_session() as ps, ps.start_transaction():
        assert theirs.c.with_options(read_preference=SecondaryPreferred()).find_one({"_id": 3}, session=ps)

    # The transaction inherits the client's read preference, as in pymongo.
    with (
        UserConnectionManager(mongodb_uri, readPreference="secondaryPreferred") as m,
        MongoClient(mongodb_uri, readPreference="secondaryPreferred") as pc,
    ):
        with pc.start_session() as ps, ps.start_transaction():
            with pytest.raises(InvalidOperation) as expected:
                pc[db.name].c.find_one({}, session=ps)
        with m.get_client("rptxn").start_session() as s, s.start_transaction():
            with pytest.raises(InvalidOperation) as got:
                m.get_database("rptxn").c.find_one({}, session=s)
        assert str(got.value) == str(expected.value)
    with pytest.raises(TypeError, match="is not valid for read_preference"):
        with client.start_session() as s:
            s.start_transaction(read_preference="secondary")


def test_async_classes_route_reads_too(mongodb_uri):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, readPreference="secondaryPreferred") as m:
            db = m.get_database("rpasync")
            assert db.read_preference == SecondaryPreferred()
            await db.c.drop()
            await db.c.insert_many([{"_id": i} for i in range(3)])
            coll = db.c.with_options(read_preference=Nearest())
            assert coll.read_preference == Nearest()
            assert [d["_id"] async for d in coll.find().sort("_id")] == [0, 1, 2]
            assert await coll.count_documents({}) == 3
            assert await coll.find_one({"_id": 1}) == {"_id": 1}
            assert len(await (await coll.aggregate([])).to_list()) == 3
            assert (await db.command("count", "c", read_preference=PrimaryPreferred()))["n"] == 3

    asyncio.run(main())
