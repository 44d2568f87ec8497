"""Differential cases: find and its cursor options, find_one, counts, distinct, aggregate, and
find_one_and_*."""

from __future__ import annotations

import enum

import pytest
from _harness import attempt, collect_cases, ids
from bson import SON
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collation import Collation
from pymongo.write_concern import WriteConcern


def seed(db, n=20):
    db.c.insert_many(
        [
            {
                "_id": i,
                "a": i % 4,
                "b": -i,
                "s": ["x", "Y", "z", "y"][i % 4] + str(i),
                "t": {"k": i, "l": [i, -i]},
            }
            for i in range(n)
        ]
    )


def seed_words(db):
    db.w.insert_many(
        [{"_id": i, "w": w} for i, w in enumerate(["apple", "Apple", "banana", "APPLE", "cherry"])]
    )


# -- find --------------------------------------------------------------------------------------------


def case_find_all(db):
    seed(db)
    return db.c.find()


def case_find_filter_and_projection(db):
    seed(db)
    return (
        db.c.find({"a": 1}, {"s": 1, "_id": 0}),
        db.c.find({"a": {"$gt": 2}}, ["b", "t.k"]),
        db.c.find({}, ("a",)),
        db.c.find({"a": 0}, {"t": 0, "s": 0}),
        db.c.find(filter={"b": {"$lt": -15}}, projection={"t.l": {"$slice": 1}, "a": 1}),
    )


def case_find_projection_invalid(db):
    seed(db)
    return (
        attempt(lambda: db.c.find({}, "a")),
        attempt(lambda: db.c.find({}, [1, 2])),
        attempt(lambda: list(db.c.find({}, {"a": 1, "b": 0}))),
        attempt(lambda: db.c.find({}, 5)),
    )


def case_find_sort(db):
    seed(db)
    return (
        db.c.find(sort=[("a", ASCENDING), ("b", DESCENDING)]),
        db.c.find().sort("b"),
        db.c.find().sort("a", -1).sort([("s", 1)]),
        db.c.find(sort={"a": -1, "_id": 1}),
        db.c.find().sort({"t.k": -1}),
        db.c.find(sort=SON([("a", 1), ("_id", -1)])),
    )


def case_find_sort_invalid(db):
    seed(db)
    return (
        attempt(lambda: db.c.find(sort="a")),
        attempt(lambda: db.c.find().sort(5)),
        attempt(lambda: db.c.find().sort("a", "sideways").to_list()),
        attempt(lambda: db.c.find().sort(["a", ("b", 1)]).to_list()),
        attempt(lambda: db.c.find().sort([]).to_list()),
    )


def case_find_skip_limit(db):
    seed(db)
    return (
        db.c.find(skip=3, limit=4, sort=[("_id", 1)]),
        db.c.find().sort("_id").skip(18).limit(10),
        db.c.find(limit=-3).sort("_id"),
        db.c.find().sort("_id").limit(0),
        db.c.find(skip=100),
        db.c.find().sort("_id").limit(-1).skip(2),
    )


def case_find_skip_limit_invalid(db):
    seed(db)
    return (
        attempt(lambda: db.c.find(skip=-1)),
        attempt(lambda: db.c.find(skip="1")),
        attempt(lambda: db.c.find(limit=1.5)),
        attempt(lambda: db.c.find().skip(-2)),
        attempt(lambda: db.c.find().limit("2")),
        attempt(lambda: db.c.find(skip=True).to_list()),
    )


def case_find_batch_size(db):
    seed(db, 50)
    cursor = db.c.find(batch_size=7).sort("_id")
    first = cursor.next()
    return first, cursor.retrieved, cursor.to_list(), cursor.retrieved, cursor.alive


def case_find_batch_size_with_limit(db):
    seed(db, 50)
    return db.c.find().sort("_id").batch_size(3).limit(10), db.c.find(batch_size=1, limit=-5).sort("_id")


def case_find_batch_size_invalid(db):
    return (
        attempt(lambda: db.c.find(batch_size=-1)),
        attempt(lambda: db.c.find(batch_size="5")),
        attempt(lambda: db.c.find().batch_size(-5)),
        attempt(lambda: db.c.find().batch_size(2.0)),
    )


def case_find_hint(db):
    seed(db)
    db.c.create_index([("a", 1), ("b", -1)])
    return (
        db.c.find({"a": 1}, hint="a_1_b_-1").sort("_id"),
        db.c.find({"a": 1}).hint([("a", 1), ("b", -1)]),
        db.c.find({"a": 2}, hint={"a": 1, "b": -1}),
        attempt(lambda: db.c.find(hint="nope_1").to_list()),
        attempt(lambda: db.c.find().hint(5)),
    )


def case_find_collation(db):
    seed_words(db)
    ci = Collation(locale="en", strength=2)
    return (
        db.w.find({"w": "apple"}, collation=ci).sort("_id"),
        db.w.find().sort("w").collation({"locale": "en"}),
        db.w.find({"w": "apple"}).collation(None),
        attempt(lambda: db.w.find(collation="en")),
        attempt(lambda: db.w.find(collation={"locale": "not-a-locale"}).to_list()),
    )


def case_find_max_time_ms(db):
    seed(db)
    return (
        db.c.find(max_time_ms=10_000).sort("_id").limit(3),
        db.c.find().max_time_ms(5000).max_time_ms(None),
        attempt(lambda: db.c.find().max_time_ms("1")),
        attempt(lambda: db.c.find().max_time_ms(-1).to_list()),
    )


def case_find_comment(db):
    seed(db)
    return db.c.find({"a": 1}, comment="hello").sort("_id"), db.c.find().comment({"doc": 1}).limit(2).sort(
        "_id"
    )


def case_find_allow_disk_use(db):
    seed(db)
    return (
        db.c.find(allow_disk_use=True).sort("s"),
        db.c.find().allow_disk_use(False).sort("b").limit(2),
        attempt(lambda: db.c.find(allow_disk_use="yes")),
        attempt(lambda: db.c.find().allow_disk_use(1)),
    )


def case_find_let(db):
    seed(db)
    return db.c.find({"$expr": {"$eq": ["$a", "$$x"]}}, let={"x": 3}).sort("_id")


def case_find_min_max(db):
    seed(db)
    db.c.create_index("b")
    return (
        db.c.find().min([("b", -10)]).max([("b", -5)]).hint("b_1"),
        attempt(lambda: db.c.find().min([("b", -10)]).to_list()),
        attempt(lambda: db.c.find(max={"b": 0}, hint=[("b", 1)]).to_list()),
    )


def case_find_return_key_show_record_id(db):
    seed(db, 3)
    db.c.create_index("a")
    return (
        db.c.find({"a": {"$gte": 0}}, return_key=True, hint="a_1").sort("a"),
        db.c.find(show_record_id=True, projection={"a": 1}).sort("_id"),
    )


def case_find_where(db):
    seed(db)
    return db.c.find({"a": 1}).where("this.b < -8").sort("_id"), db.c.find().where("this.a == 3").limit(2)


def case_find_slicing(db):
    seed(db)
    cursor = db.c.find().sort("_id")
    return (
        cursor[3],
        db.c.find().sort("_id")[2:5],
        db.c.find().sort("_id")[18:],
        db.c.find().sort("_id")[5:5],
        attempt(lambda: db.c.find()[-1]),
        attempt(lambda: db.c.find()[100]),
        attempt(lambda: db.c.find()[1:10:2]),
        attempt(lambda: db.c.find()["a"]),
    )


def case_find_chaining_after_start(db):
    seed(db)
    cursor = db.c.find()
    next(cursor)
    return (
        attempt(lambda: cursor.sort("a")),
        attempt(lambda: cursor.limit(1)),
        attempt(lambda: cursor.skip(1)),
        attempt(lambda: cursor.batch_size(1)),
        attempt(lambda: cursor.hint("_id_")),
        attempt(lambda: cursor.comment("x")),
        attempt(lambda: cursor.max_time_ms(1)),
        attempt(lambda: cursor.collation(None)),
        attempt(lambda: cursor[0]),
    )


def case_find_rewind_and_clone(db):
    seed(db, 5)
    cursor = db.c.find().sort("_id")
    first = cursor.to_list()
    again = cursor.rewind().to_list()
    clone = cursor.clone().limit(2)
    return first, again, clone, cursor.alive


def case_find_to_list_length(db):
    seed(db)
    cursor = db.c.find().sort("_id").batch_size(4)
    return (
        cursor.to_list(3),
        cursor.to_list(5),
        cursor.to_list(),
        cursor.to_list(),
        attempt(lambda: db.c.find().to_list(0)),
        attempt(lambda: db.c.find().to_list(-2)),
    )


def case_find_next_and_alive(db):
    seed(db, 3)
    cursor = db.c.find().sort("_id")
    states = [cursor.alive]
    docs = []
    while cursor.alive:
        docs.append(cursor.next())
        states.append(cursor.alive)
    return docs, states, attempt(lambda: cursor.next()), attempt(lambda: next(cursor))


def case_find_empty_collection(db):
    cursor = db.missing.find()
    return cursor.alive, cursor.to_list(), cursor.alive, cursor.retrieved


def case_find_filter_invalid(db):
    seed(db)
    return (
        attempt(lambda: db.c.find("a")),
        attempt(lambda: db.c.find([("a", 1)])),
        attempt(lambda: db.c.find({"$bad": 1}).to_list()),
        attempt(lambda: db.c.find({"a": {"$in": 5}}).to_list()),
    )


def case_find_unknown_keyword(db):
    return attempt(lambda: db.c.find({}, foo=1)), attempt(lambda: db.c.find_one({}, bar=2))


def case_find_filter_too_large(db):
    return attempt(lambda: db.c.find_one({"big": "x" * (16 * 1024 * 1024 + 10)})), attempt(
        lambda: db.c.find({"big": "x" * (16 * 1024 * 1024 + 10)}).to_list()
    )


def case_find_distinct_explain(db):
    seed(db)
    cursor = db.c.find({"a": {"$lt": 2}})
    plan = db.c.find({"a": 1}).limit(3).explain()
    return sorted(cursor.distinct("a")), sorted(plan.keys() & {"queryPlanner", "executionStats", "ok"})


def case_find_no_cursor_timeout_partial(db):
    seed(db, 4)
    return (
        db.c.find(no_cursor_timeout=True).sort("_id"),
        db.c.find(allow_partial_results=True).limit(1),
        attempt(lambda: db.c.find(no_cursor_timeout=1)),
    )


# -- find_one ----------------------------------------------------------------------------------------


def case_find_one(db):
    seed(db)
    return (
        db.c.find_one(),
        db.c.find_one({"a": 3}, sort=[("_id", -1)]),
        db.c.find_one(7),
        db.c.find_one("no-such-id"),
        db.c.find_one({"a": 2}, {"s": 1}),
        db.c.find_one({"a": 1}, skip=2),
        db.c.find_one(None),
        db.c.find_one({}, projection=["t.k"], sort=[("b", 1)]),
        db.c.find_one({"a": 99}),
        db.missing.find_one(),
    )


def case_find_one_options(db):
    seed(db)
    db.c.create_index("a")
    return (
        db.c.find_one({"a": 1}, hint="a_1", max_time_ms=5000, comment="c"),
        db.c.find_one({"a": 1}, allow_disk_use=True, sort=[("s", -1)]),
        db.c.find_one({"s": "X0"}, collation=Collation("en", strength=1)),
        db.c.find_one({}, limit=5, batch_size=2, sort=[("_id", -1)]),
        attempt(lambda: db.c.find_one({}, hint="zzz")),
    )


# -- counts, distinct ---------------------------------------------------------------------------------


def case_count_documents(db):
    seed(db)
    db.c.create_index("a")
    return (
        db.c.count_documents({}),
        db.c.count_documents({"a": 1}),
        db.c.count_documents({}, skip=5),
        db.c.count_documents({}, limit=3),
        db.c.count_documents({}, skip=18, limit=10),
        db.c.count_documents({"a": 1}, hint="a_1"),
        db.c.count_documents({"a": 2}, hint=[("a", 1)]),
        db.c.count_documents({}, maxTimeMS=5000),
        db.c.count_documents({}, comment="x"),
        db.missing.count_documents({}),
    )


def case_count_documents_edge_arguments(db):
    seed(db)
    return (
        attempt(lambda: db.c.count_documents({}, limit=0)),
        attempt(lambda: db.c.count_documents({}, skip=-1)),
        attempt(lambda: db.c.count_documents({}, limit=-2)),
        attempt(lambda: db.c.count_documents("x")),
        attempt(lambda: db.c.count_documents({}, hint="nope")),
        attempt(lambda: db.c.count_documents({}, bogus=1)),
        attempt(lambda: db.c.count_documents({"a": {"$bad": 1}})),
        db.c.count_documents({}, collation={"locale": "en"}, skip=0),
    )


def case_estimated_document_count(db):
    seed(db)
    return (
        db.c.estimated_document_count(),
        db.c.estimated_document_count(maxTimeMS=1000),
        db.c.estimated_document_count(comment="c"),
        db.missing.estimated_document_count(),
        attempt(lambda: db.c.estimated_document_count(session=None)),
        attempt(lambda: db.c.estimated_document_count(bogus=True)),
    )


def case_distinct(db):
    seed(db)
    seed_words(db)
    return (
        sorted(db.c.distinct("a")),
        sorted(db.c.distinct("a", {"b": {"$lt": -10}})),
        sorted(db.c.distinct("t.l")),
        db.c.distinct("nope"),
        db.missing.distinct("x"),
        sorted(db.w.distinct("w", collation=Collation("en", strength=2))),
        sorted(db.c.distinct("a", maxTimeMS=1000, comment="c")),
        sorted(db.c.distinct("a", query={"a": 1})),
        attempt(lambda: db.c.distinct(5)),
        attempt(lambda: db.c.distinct("a", {"a": 1}, query={})),
        attempt(lambda: db.c.distinct("a", bogus=1)),
    )


# -- aggregate ---------------------------------------------------------------------------------------


def case_aggregate_group_sort(db):
    seed(db)
    return db.c.aggregate(
        [{"$group": {"_id": "$a", "n": {"$sum": 1}, "total": {"$sum": "$b"}}}, {"$sort": {"_id": -1}}]
    )


def case_aggregate_options(db):
    seed(db)
    db.c.create_index("a")
    pipeline = [{"$match": {"a": {"$gte": 1}}}, {"$sort": {"s": 1}}, {"$project": {"s": 1}}]
    return (
        db.c.aggregate(pipeline, allowDiskUse=True, batchSize=2),
        db.c.aggregate(pipeline, maxTimeMS=5000, comment="agg", hint="a_1"),
        db.c.aggregate(pipeline, collation=Collation("en", strength=1)),
        db.c.aggregate([{"$match": {"$expr": {"$eq": ["$a", "$$v"]}}}, {"$sort": {"_id": 1}}], let={"v": 2}),
        db.c.aggregate([{"$sort": {"_id": 1}}], batchSize=0),
    )


def case_aggregate_out(db):
    seed(db)
    cursor = db.c.aggregate([{"$match": {"a": 1}}, {"$out": "out"}])
    return cursor, db.out.find().sort("_id")


def case_aggregate_merge(db):
    seed(db)
    db.target.insert_one({"_id": 1, "old": True})
    result = db.c.aggregate(
        [
            {"$match": {"a": 1}},
            {"$project": {"b": 1}},
            {"$merge": {"into": "target", "whenMatched": "merge", "whenNotMatched": "insert"}},
        ]
    )
    return result, db.target.find().sort("_id")


def case_aggregate_errors(db):
    seed(db)
    return (
        attempt(lambda: db.c.aggregate([{"$bogus": {}}])),
        attempt(lambda: db.c.aggregate({"$match": {}})),
        attempt(lambda: db.c.aggregate([], explain=True)),
        attempt(lambda: db.c.aggregate([], pipeline=[])),
        attempt(lambda: db.c.aggregate([], batchSize=-1)),
        attempt(lambda: db.c.aggregate([], batchSize="1")),
        attempt(lambda: db.c.aggregate([], bogusOption=1)),
        attempt(lambda: db.c.aggregate([], let=5)),
        attempt(lambda: db.c.aggregate([{"$project": {"x": {"$divide": [1, 0]}}}])),
    )


def case_aggregate_unmodelled_option(db):
    seed(db, 3)
    return db.c.aggregate([{"$sort": {"_id": 1}}], cursor={}), db.c.aggregate([], allow_disk_use=True)


def case_aggregate_unmodelled_option_over_batches(db):
    seed(db, 20)
    pipeline = [{"$sort": {"_id": 1}}]
    cursor = db.c.aggregate(pipeline, cursor={}, batchSize=3)
    first = cursor.next()
    return (
        first,
        cursor.to_list(),
        db.c.aggregate(pipeline, readConcern={"level": "majority"}, batchSize=2, comment="unmodelled"),
        attempt(lambda: db.c.aggregate(pipeline, allowDiskUse=1)),
        db.c.aggregate([{"$match": {"a": 1}}, {"$project": {"s": 1}}], cursor={"batchSize": 1}),
        attempt(lambda: db.c.aggregate(pipeline, cursor={"batchSize": -1})),
        attempt(lambda: db.c.aggregate(pipeline, cursor={}, bogus=1)),
    )


class Two(enum.IntEnum):
    TWO = 2


def case_find_values_the_driver_refuses_over_batches(db):
    seed(db, 20)
    return (
        db.c.find(limit=True, batch_size=2).sort("_id"),
        db.c.find(skip=Two.TWO, batch_size=3).sort("_id"),
        db.c.find(skip=Two.TWO, limit=5, batch_size=2).sort("_id"),
        db.c.find(skip=Two.TWO, limit=-4, batch_size=2).sort("_id"),
        db.c.find({"a": {"$gte": 1}}, skip=Two.TWO, batch_size=1).sort("_id", -1),
    )


def case_cursor_command(db):
    seed(db, 20)
    db.create_collection("other")
    return (
        db.cursor_command("find", "c", sort={"_id": 1}, batchSize=3),
        db.cursor_command("find", "c", filter={"a": 2}, projection={"s": 1}, batchSize=1, comment="cc"),
        db.cursor_command(
            SON(
                [
                    ("aggregate", "c"),
                    ("pipeline", [{"$group": {"_id": "$a", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]),
                    ("cursor", {"batchSize": 1}),
                ]
            )
        ),
        db.cursor_command(
            "aggregate", 1, pipeline=[{"$documents": [{"x": i} for i in range(5)]}], cursor={"batchSize": 2}
        ),
        sorted(c["name"] for c in db.cursor_command("listCollections", cursor={"batchSize": 1})),
        db.cursor_command("listIndexes", "c"),
        attempt(lambda: db.cursor_command("ping")),
        attempt(lambda: db.cursor_command("find", "c", filter=5)),
        attempt(lambda: db.cursor_command("bogusCommand")),
        attempt(lambda: db.cursor_command("find", "c", max_await_time_ms=1.5)),
    )


def case_cursor_command_partly_read_and_closed(db):
    seed(db, 20)
    cursor = db.cursor_command("find", "c", sort={"_id": 1}, batchSize=4)
    head = [cursor.next() for _ in range(6)]
    cursor.close()
    return head


def case_aggregate_empty_and_missing(db):
    return db.missing.aggregate([]), db.missing.aggregate([{"$count": "n"}])


def case_aggregate_write_concern(db):
    seed(db, 4)
    coll = db.get_collection("c", write_concern=WriteConcern(w="majority"))
    return coll.aggregate([{"$out": "copy"}]), db.copy.count_documents({})


def case_database_aggregate(db):
    return (
        db.aggregate([{"$documents": [{"x": 1}, {"x": 2}]}, {"$project": {"y": {"$add": ["$x", 1]}}}]),
        attempt(lambda: db.aggregate([{"$documents": 5}])),
    )


# -- find_one_and_* -----------------------------------------------------------------------------------


def case_find_one_and_update(db):
    seed(db)
    return (
        db.c.find_one_and_update({"a": 1}, {"$inc": {"b": 100}}),
        db.c.find_one_and_update({"a": 1}, {"$inc": {"b": 100}}, return_document=ReturnDocument.AFTER),
        db.c.find_one_and_update({"a": 2}, {"$set": {"z": 1}}, sort=[("_id", -1)], projection={"z": 1}),
        db.c.find_one_and_update(
            {"a": 3}, {"$set": {"z": 2}}, projection=["z"], sort={"b": 1}, return_document=True
        ),
        db.c.find_one_and_update({"a": 77}, {"$set": {"z": 3}}),
        db.c.find_one_and_update({"_id": "new"}, {"$set": {"z": 4}}, upsert=True),
        db.c.find_one_and_update(
            {"_id": "new2"}, {"$set": {"z": 5}}, upsert=True, return_document=ReturnDocument.AFTER
        ),
        db.c.find_one_and_update(
            {"_id": 0}, [{"$set": {"p": {"$add": ["$a", 10]}}}], return_document=ReturnDocument.AFTER
        ),
    )


def case_find_one_and_update_options(db):
    seed(db)
    db.c.create_index("a")
    return (
        db.c.find_one_and_update(
            {"_id": 1},
            {"$set": {"t.l.$[e]": 0}},
            array_filters=[{"e": {"$lt": 0}}],
            return_document=ReturnDocument.AFTER,
        ),
        db.c.find_one_and_update({"a": 2}, {"$set": {"h": 1}}, hint="a_1", maxTimeMS=5000, comment="c"),
        db.c.find_one_and_update(
            {"s": "Y1"},
            {"$set": {"coll": 1}},
            collation={"locale": "en", "strength": 1},
            return_document=ReturnDocument.AFTER,
        ),
        db.c.find_one_and_update(
            {"$expr": {"$eq": ["$_id", "$$i"]}},
            {"$set": {"l": 1}},
            let={"i": 4},
            return_document=ReturnDocument.AFTER,
        ),
    )


def case_find_one_and_update_errors(db):
    seed(db)
    db.c.create_index("s", unique=True)
    return (
        attempt(lambda: db.c.find_one_and_update({}, {"$bogus": {"a": 1}})),
        attempt(lambda: db.c.find_one_and_update({}, {"a": 1})),
        attempt(lambda: db.c.find_one_and_update({}, {"$set": {"a": 1}}, return_document="after")),
        attempt(lambda: db.c.find_one_and_update({"_id": 1}, {"$set": {"s": "x0"}})),
        attempt(lambda: db.c.find_one_and_update({}, {"$set": {"a": 1}}, upsert="yes")),
        attempt(lambda: db.c.find_one_and_update({}, {"$set": {"a": 1}}, max_time_ms=5)),
        attempt(lambda: db.c.find_one_and_update({}, {"$set": {"a": 1}}, hint="nope")),
        attempt(lambda: db.c.find_one_and_update("x", {"$set": {"a": 1}})),
        attempt(lambda: db.c.find_one_and_update({}, {"$set": {"a": 1}}, array_filters={"e": 1})),
    )


def case_find_one_and_replace(db):
    seed(db)
    return (
        db.c.find_one_and_replace({"_id": 3}, {"replaced": True}),
        db.c.find_one_and_replace(
            {"_id": 4}, {"replaced": 2}, return_document=ReturnDocument.AFTER, projection={"_id": 0}
        ),
        db.c.find_one_and_replace({"_id": 99}, {"new": 1}, upsert=True, return_document=ReturnDocument.AFTER),
        db.c.find_one_and_replace({"a": 1}, {}, sort=[("_id", -1)]),
        attempt(lambda: db.c.find_one_and_replace({}, {"$set": {"a": 1}})),
        attempt(lambda: db.c.find_one_and_replace({"_id": 5}, {"_id": 6})),
    )


def case_find_one_and_delete(db):
    seed(db)
    return (
        db.c.find_one_and_delete({"a": 1}),
        db.c.find_one_and_delete({"a": 1}, sort=[("_id", -1)]),
        db.c.find_one_and_delete({"a": 2}, projection={"s": 1, "_id": 0}),
        db.c.find_one_and_delete({"a": 9}),
        db.c.find_one_and_delete({}, sort=[("b", 1)], comment="c", maxTimeMS=5000),
        attempt(lambda: db.c.find_one_and_delete({}, bogus=1)),
    )


def case_find_one_and_unacknowledged(db):
    seed(db, 3)
    coll = db.c.with_options(write_concern=WriteConcern(w=0))
    result = (
        coll.find_one_and_update({"_id": 1}, {"$set": {"w0": True}}),
        coll.find_one_and_delete({"_id": 2}),
        attempt(lambda: coll.find_one_and_update({}, {"$set": {"x": 1}}, array_filters=[])),
    )
    db.command("ping")
    return result


CASES = collect_cases(globals())


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_reads(differ, case):
    differ.check(case)
