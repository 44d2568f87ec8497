"""Differential cases: Collection.bulk_write, its results, batching and BulkWriteError details."""

from __future__ import annotations

import pytest
from _harness import attempt, collect_cases, ids
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.collation import Collation
from pymongo.write_concern import WriteConcern


def seed(db, n=6):
    db.c.insert_many([{"_id": i, "a": i % 3, "s": "abc" if i % 2 else "ABC"} for i in range(n)])


def mixed():
    return [
        InsertOne({"_id": 10, "a": 1}),
        UpdateOne({"_id": 1}, {"$set": {"u": 1}}),
        UpdateMany({"a": 1}, {"$inc": {"m": 1}}),
        ReplaceOne({"_id": 2}, {"replaced": True}),
        UpdateOne({"_id": 50}, {"$set": {"up": 1}}, upsert=True),
        ReplaceOne({"_id": 51}, {"rep": 1}, upsert=True),
        DeleteOne({"_id": 3}),
        InsertOne({"_id": 11}),
        DeleteMany({"a": 2}),
        UpdateMany({"_id": {"$in": [60, 61]}}, {"$set": {"many": 1}}, upsert=True),
    ]


def case_bulk_mixed_ordered(db):
    seed(db)
    return db.c.bulk_write(mixed())


def case_bulk_mixed_unordered(db):
    seed(db)
    return db.c.bulk_write(mixed(), ordered=False)


def case_bulk_unordered_groups_by_kind(db):
    # Unordered, pymongo runs all inserts, then updates, then deletes: the delete does not see order.
    return db.c.bulk_write(
        [
            InsertOne({"_id": 1}),
            DeleteOne({"_id": 1}),
            InsertOne({"_id": 2}),
            UpdateOne({"_id": 2}, {"$set": {"x": 1}}),
        ],
        ordered=False,
    )


def case_bulk_ordered_error_stops(db):
    seed(db)
    return db.c.bulk_write(
        [
            InsertOne({"_id": 20}),
            UpdateOne({"_id": 1}, {"$set": {"x": 1}}),
            InsertOne({"_id": 1}),
            InsertOne({"_id": 21}),
            DeleteOne({"_id": 0}),
        ]
    )


def case_bulk_unordered_errors_continue(db):
    seed(db)
    return db.c.bulk_write(
        [
            InsertOne({"_id": 1}),
            UpdateOne({"_id": 2}, {"$set": {"y": 1}}),
            InsertOne({"_id": 30}),
            InsertOne({"_id": 2}),
            UpdateOne({"_id": 4}, {"$inc": {"s": 1}}),
            DeleteOne({"_id": 5}),
            UpdateOne({"_id": 70}, {"$set": {"z": 1}}, upsert=True),
        ],
        ordered=False,
    )


def case_bulk_error_in_later_run(db):
    seed(db)
    db.c.create_index("u", unique=True, sparse=True)
    return db.c.bulk_write(
        [
            DeleteOne({"_id": 0}),
            DeleteOne({"_id": 1}),
            UpdateOne({"_id": 2}, {"$set": {"u": 1}}),
            UpdateOne({"_id": 3}, {"$set": {"u": 1}}),
            InsertOne({"_id": 40}),
        ]
    )


def case_bulk_upserted_indexes(db):
    return db.c.bulk_write(
        [
            InsertOne({"_id": 1}),
            UpdateOne({"k": 1}, {"$set": {"v": 1}}, upsert=True),
            DeleteOne({"_id": 1}),
            ReplaceOne({"_id": "r"}, {"v": 2}, upsert=True),
            UpdateOne({"_id": "r"}, {"$set": {"v": 3}}, upsert=True),
            UpdateMany({"_id": "m"}, {"$set": {"v": 4}}, upsert=True),
        ]
    )


def case_bulk_options(db):
    seed(db)
    db.c.create_index("a")
    ci = Collation(locale="en", strength=2)
    return db.c.bulk_write(
        [
            UpdateMany({"s": "abc"}, {"$set": {"ci": True}}, collation=ci),
            UpdateOne({"a": 1}, {"$set": {"h": 1}}, hint="a_1"),
            UpdateOne({"a": 2}, {"$set": {"h": 2}}, hint=[("a", 1)]),
            UpdateOne({"_id": 0}, {"$set": {"arr": [1, 5, 9]}}),
            UpdateOne({"_id": 0}, {"$set": {"arr.$[e]": 0}}, array_filters=[{"e": {"$gt": 4}}]),
            ReplaceOne({"s": "ABC", "a": 0}, {"r": 1}, collation=ci, hint="a_1"),
            DeleteOne({"s": "ABC"}, collation=ci),
            DeleteMany({"a": 1}, hint="a_1"),
        ],
        comment="bulk comment",
    )


def case_bulk_let(db):
    seed(db)
    return db.c.bulk_write(
        [
            UpdateMany({"$expr": {"$eq": ["$a", "$$x"]}}, [{"$set": {"lv": "$$x"}}]),
            DeleteOne({"$expr": {"$eq": ["$_id", "$$d"]}}),
            InsertOne({"_id": 9}),
        ],
        let={"x": 2, "d": 1},
    )


def case_bulk_pipeline_update(db):
    seed(db)
    return db.c.bulk_write([UpdateMany({}, [{"$set": {"twice": {"$multiply": ["$a", 2]}}}])])


def case_bulk_bypass_validation(db):
    db.create_collection("c", validator={"n": {"$type": "int"}})
    bad = [InsertOne({"_id": 1, "n": "str"}), UpdateOne({"_id": 1}, {"$set": {"n": "x"}}, upsert=True)]
    return attempt(lambda: db.c.bulk_write(bad)), db.c.bulk_write(bad, bypass_document_validation=True)


def case_bulk_generated_ids(db):
    docs = [{"x": 1}, {"x": 2}]
    result = db.c.bulk_write([InsertOne(docs[0]), InsertOne(docs[1])])
    return result, [d["_id"] for d in docs], db.c.find().sort("x")


def case_bulk_raw_bson(db):
    raw = RawBSONDocument(b"\x10\x00\x00\x00\x10_id\x00\x07\x00\x00\x00\x00")
    return db.c.bulk_write(
        [InsertOne(raw), InsertOne(RawBSONDocument(b"\x0c\x00\x00\x00\x10x\x00\x01\x00\x00\x00\x00"))]
    )


def case_bulk_unacknowledged(db):
    seed(db)
    coll = db.c.with_options(write_concern=WriteConcern(w=0))
    result = coll.bulk_write(
        [InsertOne({"_id": 1}), InsertOne({"_id": 100}), UpdateOne({"_id": 2}, {"$set": {"w": 0}})]
    )
    unordered = coll.bulk_write([InsertOne({"_id": 101}), DeleteOne({"_id": 4})], ordered=False)
    db.command("ping")
    return (
        result,
        unordered,
        attempt(lambda: result.inserted_count),
        attempt(lambda: result.upserted_ids),
        attempt(lambda: coll.bulk_write([UpdateOne({}, {"$set": {"a": 1}}, collation={"locale": "en"})])),
        attempt(lambda: coll.bulk_write([UpdateOne({}, {"$set": {"a.$[e]": 1}}, array_filters=[{"e": 1}])])),
        attempt(lambda: coll.bulk_write([InsertOne({})], bypass_document_validation=True)),
    )


def case_bulk_write_concern_majority(db):
    coll = db.get_collection("c", write_concern=WriteConcern(w="majority", wtimeout=10000))
    return coll.bulk_write([InsertOne({"_id": 1}), UpdateOne({"_id": 1}, {"$set": {"x": 1}})])


def case_bulk_write_concern_unsatisfiable(db):
    coll = db.get_collection("c", write_concern=WriteConcern(w=3, wtimeout=100))
    return attempt(
        lambda: coll.bulk_write([InsertOne({"_id": 1}), DeleteOne({"_id": 1}), InsertOne({"_id": 2})])
    )


def case_bulk_invalid_requests(db):
    return (
        attempt(lambda: db.c.bulk_write([])),
        attempt(lambda: db.c.bulk_write(())),
        attempt(lambda: db.c.bulk_write([InsertOne({"_id": 1}), "nope"])),
        attempt(lambda: db.c.bulk_write([{"insertOne": {"document": {}}}])),
        attempt(lambda: db.c.bulk_write([UpdateOne({}, {"a": 1})])),
        attempt(lambda: db.c.bulk_write([ReplaceOne({}, {"$set": {"a": 1}})])),
        attempt(lambda: db.c.bulk_write([InsertOne([("a", 1)])])),
        attempt(lambda: db.c.bulk_write([UpdateOne({}, {"$set": {"a": 1}}, collation="en")])),
        attempt(lambda: db.c.bulk_write([InsertOne({})], let=5)),
        attempt(lambda: db.c.bulk_write([InsertOne({"_id": 1})], ordered="yes")),
        db.c.count_documents({}),
    )


def case_bulk_server_errors(db):
    seed(db)
    return (
        attempt(lambda: db.c.bulk_write([UpdateOne({}, {"$bogus": {"a": 1}}), InsertOne({"_id": 99})])),
        attempt(lambda: db.c.bulk_write([UpdateOne({"_id": 1}, {"$set": {"_id": 7}})], ordered=False)),
        attempt(
            lambda: db.c.bulk_write([DeleteOne({}, hint="nope_1"), InsertOne({"_id": 98})], ordered=False)
        ),
    )


def case_bulk_large_batches(db):
    # More ops than fit one command (by size), and more than one run of each kind.
    blob = "b" * 400_000
    requests = [InsertOne({"_id": i, "blob": blob}) for i in range(60)]
    requests += [UpdateOne({"_id": i}, {"$set": {"blob": "small"}}) for i in range(0, 60, 2)]
    requests += [InsertOne({"_id": 1000 + i}) for i in range(5)]
    requests.insert(45, InsertOne({"_id": 3}))
    return attempt(lambda: db.c.bulk_write(requests, ordered=False)), db.c.count_documents({"blob": "small"})


def case_bulk_many_small_ops(db):
    requests = [InsertOne({"_id": i}) for i in range(3000)] + [DeleteMany({"_id": {"$gte": 2500}})]
    return db.c.bulk_write(requests)


def case_bulk_just_over_16_mib(db):
    big = "z" * (16 * 1024 * 1024 + 50)
    return db.c.bulk_write(
        [InsertOne({"_id": 1}), InsertOne({"_id": 2, "big": big}), InsertOne({"_id": 3})], ordered=False
    )


CASES = collect_cases(globals())


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bulk(differ, case):
    differ.check(case)
