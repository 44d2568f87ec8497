"""Differential cases: the ``session=`` argument of every operation, in and out of transactions.

The sessions themselves (ClientSession, transactions) belong to the core; these cases check that the
Database, Collection and cursor methods carry a session to the server as pymongo does.
"""

from __future__ import annotations

import pytest
from _harness import attempt, collect_cases, ids
from pymongo import DeleteOne, InsertOne, UpdateOne
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern


def prepare(db):
    # Collections cannot be created implicitly by every operation inside a transaction.
    db.create_collection("c")
    db.c.insert_many([{"_id": i, "a": i % 2} for i in range(4)])


def case_transaction_commit(db):
    prepare(db)
    with db.client.start_session() as s:
        with s.start_transaction():
            db.c.insert_one({"_id": 10}, session=s)
            db.c.update_many({"a": 1}, {"$set": {"t": True}}, session=s)
            db.c.delete_one({"_id": 0}, session=s)
            db.c.bulk_write([InsertOne({"_id": 11}), UpdateOne({"_id": 2}, {"$inc": {"a": 5}})], session=s)
            db.c.insert_many([{"_id": 12}, {"_id": 13}], session=s)
            inside = (
                db.c.find({}, session=s).sort("_id").to_list(),
                db.c.find_one({"_id": 10}, session=s),
                db.c.count_documents({}, session=s),
                sorted(db.c.distinct("a", session=s)),
                db.c.aggregate(
                    [{"$group": {"_id": "$a", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}], session=s
                ),
                db.c.find_one_and_update({"_id": 10}, {"$set": {"x": 1}}, session=s, return_document=True),
                db.command("count", "c", session=s)["n"],
            )
            outside = db.c.count_documents({})
    return inside, outside, db.c.count_documents({}), s.has_ended


def case_transaction_abort(db):
    prepare(db)
    with db.client.start_session() as s:
        s.start_transaction()
        db.c.insert_one({"_id": 10}, session=s)
        db.c.replace_one({"_id": 1}, {"r": 1}, session=s)
        db.c.find_one_and_delete({"_id": 2}, session=s)
        s.abort_transaction()
    return db.c.find().sort("_id")


def case_transaction_exception_aborts(db):
    prepare(db)
    with db.client.start_session() as s:
        try:
            with s.start_transaction():
                db.c.insert_one({"_id": 20}, session=s)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    return db.c.find_one({"_id": 20}), s.in_transaction


def case_transaction_write_error(db):
    prepare(db)
    with db.client.start_session() as s:
        s.start_transaction()
        error = attempt(lambda: db.c.insert_one({"_id": 1}, session=s))
        after = attempt(lambda: db.c.insert_one({"_id": 30}, session=s))
        commit = attempt(s.commit_transaction)
    return error, after, commit, db.c.count_documents({})


def case_with_transaction(db):
    prepare(db)

    def callback(session):
        db.c.insert_one({"_id": 40}, session=session)
        db.c.update_one({"_id": 1}, {"$set": {"w": 1}}, session=session)
        return db.c.count_documents({}, session=session)

    with db.client.start_session() as s:
        result = s.with_transaction(
            callback, read_concern=ReadConcern("snapshot"), write_concern=WriteConcern(w="majority")
        )
    return result, db.c.find().sort("_id")


def case_session_without_transaction(db):
    prepare(db)
    with db.client.start_session() as s:
        return (
            db.c.insert_one({"_id": 50}, session=s),
            db.c.find({"a": 1}, session=s).sort("_id").to_list(),
            db.c.find(session=s).batch_size(1).to_list(),
            db.c.create_index("a", session=s),
            db.c.index_information(session=s),
            db.c.estimated_document_count(),
            db.list_collection_names(session=s),
            db.c.drop_index("a_1", session=s),
            db.c.bulk_write([DeleteOne({"_id": 50})], session=s),
        )


def case_session_errors(db):
    prepare(db)
    unacknowledged = db.c.with_options(write_concern=WriteConcern(w=0))
    with db.client.start_session() as s:
        refused = (
            attempt(lambda: unacknowledged.insert_one({"_id": 60}, session=s)),
            attempt(lambda: unacknowledged.insert_many([{"_id": 61}], session=s)),
            attempt(lambda: unacknowledged.bulk_write([InsertOne({"_id": 62})], session=s)),
            attempt(lambda: unacknowledged.delete_one({"_id": 1}, session=s)),
            attempt(lambda: db.c.estimated_document_count(session=s)),
        )
    ended = attempt(lambda: db.c.find_one({}, session=s))
    return refused, ended, db.c.count_documents({})


def case_create_collection_in_transaction(db):
    with db.client.start_session() as s, s.start_transaction():
        db.create_collection("made_in_txn", session=s)
        db.made_in_txn.insert_one({"_id": 1}, session=s)
    return db.list_collection_names(), db.made_in_txn.find_one()


def case_snapshot_session_reads(db):
    # Written with w: majority: a snapshot read sees the majority-committed data.
    c = db.get_collection("c", write_concern=WriteConcern(w="majority"))
    c.insert_many([{"_id": i, "a": i % 2} for i in range(4)])
    with db.client.start_session(snapshot=True) as s:
        first = c.find_one({"_id": 1}, session=s)
        c.insert_one({"_id": 10, "a": 1})
        c.update_one({"_id": 2}, {"$set": {"a": 5}})
        reads = (
            first,
            c.find({}, session=s).sort("_id").to_list(),
            c.find({}, session=s, batch_size=1).to_list(),
            c.count_documents({"a": 1}, session=s),
            sorted(c.distinct("a", session=s)),
            c.aggregate([{"$group": {"_id": "$a", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}], session=s),
            c.with_options(read_concern=ReadConcern("majority")).find_one({"_id": 10}, session=s),
        )
        options = (s.options.snapshot, s.options.causal_consistency)
        refused = (
            attempt(s.start_transaction),
            attempt(lambda: db.client.start_session(snapshot=True, causal_consistency=True)),
        )
    return reads, options, refused, c.count_documents({})


CASES = collect_cases(globals())


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_sessions(differ, case):
    differ.check(case)
