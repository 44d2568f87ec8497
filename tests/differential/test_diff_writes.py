"""Differential cases: inserts, updates, replaces and deletes, with their results and errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from _harness import attempt, collect_cases, ids
from bson import SON
from bson.raw_bson import RawBSONDocument
from pymongo.collation import Collation
from pymongo.write_concern import WriteConcern

BIG = "x" * (16 * 1024 * 1024)


def seed(db, n=5):
    db.c.insert_many([{"_id": i, "a": i % 3, "s": f"S{i}", "arr": [i, i + 1, i + 2]} for i in range(n)])


# -- insert_one -------------------------------------------------------------------------------------


def case_insert_one(db):
    doc = {"_id": 1, "x": "y", "nested": {"b": 1, "a": 2}}
    return db.c.insert_one(doc), doc, db.c.find_one()


def case_insert_one_generated_id(db):
    doc = {"x": 1}
    result = db.c.insert_one(doc)
    return result, doc, result.inserted_id == doc["_id"], db.c.find_one() == doc


def case_insert_one_son_keeps_order(db):
    db.c.insert_one(SON([("z", 1), ("_id", 7), ("a", 2)]))
    return db.c.find_one()


def case_insert_one_raw_bson(db):
    raw = RawBSONDocument(b"\x10\x00\x00\x00\x10_id\x00\x05\x00\x00\x00\x00")
    return db.c.insert_one(raw), db.c.find_one()


def case_insert_one_duplicate_key(db):
    db.c.insert_one({"_id": 1})
    return db.c.insert_one({"_id": 1, "again": True})


def case_insert_one_unique_index_violation(db):
    db.c.create_index("email", unique=True)
    db.c.insert_one({"_id": 1, "email": "a@b"})
    return db.c.insert_one({"_id": 2, "email": "a@b"})


def case_insert_one_not_a_document(db):
    return attempt(lambda: db.c.insert_one([("_id", 1)])), attempt(lambda: db.c.insert_one("x"))


def case_insert_one_document_too_large(db):
    return db.c.insert_one({"_id": 1, "big": BIG})


def case_insert_one_bad_key(db):
    return attempt(lambda: db.c.insert_one({"_id": 1, "a": {"$bad": 1}})), attempt(
        lambda: db.c.insert_one({"_id": 2, 3: "non-str key"})
    )


def case_insert_one_validation(db):
    db.create_collection("c", validator={"a": {"$type": "int"}})
    bad = attempt(lambda: db.c.insert_one({"_id": 1, "a": "str"}))
    bypass = db.c.insert_one({"_id": 2, "a": "str"}, bypass_document_validation=True)
    return bad, bypass


def case_insert_one_comment(db):
    return db.c.insert_one({"_id": 1}, comment={"why": "test"})


# -- insert_many ------------------------------------------------------------------------------------


def case_insert_many(db):
    docs = [{"_id": i, "v": i * 2} for i in range(5)]
    return db.c.insert_many(docs), docs


def case_insert_many_generated_ids(db):
    docs = [{"v": 1}, {"_id": "given"}, {"v": 3}]
    result = db.c.insert_many(docs)
    return result, [d["_id"] for d in docs] == result.inserted_ids


def case_insert_many_ordered_duplicate_in_middle(db):
    return db.c.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}])


def case_insert_many_unordered_duplicate_in_middle(db):
    return db.c.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}, {"_id": 2}], ordered=False)


def case_insert_many_duplicate_of_existing(db):
    db.c.insert_one({"_id": 0})
    return db.c.insert_many([{"_id": 0}, {"_id": 1}], ordered=False)


def case_insert_many_generator(db):
    return db.c.insert_many({"_id": i} for i in range(3))


def case_insert_many_empty(db):
    return attempt(lambda: db.c.insert_many([])), attempt(lambda: db.c.insert_many(iter([])))


def case_insert_many_bad_arguments(db):
    return (
        attempt(lambda: db.c.insert_many({"_id": 1})),
        attempt(lambda: db.c.insert_many([{"_id": 1}, "nope"])),
        attempt(lambda: db.c.insert_many([{"_id": 1}], ordered="yes")),
        attempt(lambda: db.c.insert_many(None)),
    )


def case_insert_many_document_too_large(db):
    return db.c.insert_many([{"_id": 1}, {"_id": 2, "big": BIG}])


def case_insert_many_large_batch(db):
    # ~18 MiB in total: more than one 16 MiB command on the wire.
    blob = "b" * (1024 * 1024)
    result = db.c.insert_many([{"_id": i, "blob": blob} for i in range(18)])
    return result.inserted_ids, db.c.count_documents({})


def case_insert_many_bypass_validation(db):
    db.create_collection("c", validator={"a": {"$type": "int"}})
    return (
        attempt(lambda: db.c.insert_many([{"_id": 1, "a": 1}, {"_id": 2, "a": "x"}])),
        db.c.insert_many([{"_id": 3, "a": "x"}], bypass_document_validation=True),
    )


# -- update_one / update_many / replace_one ---------------------------------------------------------


def case_update_one(db):
    seed(db)
    return db.c.update_one({"a": 1}, {"$set": {"x": 1}}), db.c.update_one({"a": 99}, {"$set": {"x": 1}})


def case_update_one_no_change(db):
    seed(db)
    return db.c.update_one({"_id": 1}, {"$set": {"a": 1}})


def case_update_many(db):
    seed(db)
    return db.c.update_many({"a": {"$gte": 1}}, {"$inc": {"a": 10}, "$set": {"t": True}})


def case_update_upsert(db):
    seed(db)
    return (
        db.c.update_one({"_id": 100}, {"$set": {"x": 1}}, upsert=True),
        db.c.update_many({"_id": 101}, {"$set": {"x": 2}}, upsert=True),
        db.c.update_one({"_id": 100}, {"$set": {"x": 3}}, upsert=True),
    )


def case_update_upsert_generated_id(db):
    result = db.c.update_one({"k": "v"}, {"$set": {"x": 1}}, upsert=True)
    return result, result.upserted_id == db.c.find_one()["_id"]


def case_update_array_filters(db):
    seed(db)
    return (
        db.c.update_many({}, {"$set": {"arr.$[e]": -1}}, array_filters=[{"e": {"$gte": 3}}]),
        db.c.update_one({"_id": 0}, {"$inc": {"arr.$[e]": 100}}, array_filters=[{"e": 0}]),
    )


def case_update_array_filters_not_a_list(db):
    seed(db)
    return db.c.update_one({"_id": 0}, {"$set": {"arr.$[e]": 1}}, array_filters={"e": 1})


def case_update_hint(db):
    seed(db)
    db.c.create_index("a")
    return (
        db.c.update_one({"a": 1}, {"$set": {"h": 1}}, hint="a_1"),
        db.c.update_many({"a": 1}, {"$set": {"h": 2}}, hint=[("a", 1)]),
        attempt(lambda: db.c.update_one({"a": 1}, {"$set": {"h": 3}}, hint="nope_1")),
    )


def case_update_collation(db):
    db.c.insert_many([{"_id": 1, "s": "abc"}, {"_id": 2, "s": "ABC"}])
    ci = Collation(locale="en", strength=2)
    return (
        db.c.update_many({"s": "abc"}, {"$set": {"hit": True}}, collation=ci),
        db.c.update_one({"s": "aBc"}, {"$set": {"one": True}}, collation={"locale": "en", "strength": 2}),
    )


def case_update_let(db):
    seed(db)
    return db.c.update_many(
        {"$expr": {"$eq": ["$a", "$$target"]}},
        [{"$set": {"y": "$$val"}}],
        let={"target": 2, "val": "from-let"},
    )


def case_update_pipeline(db):
    seed(db)
    return db.c.update_many({}, [{"$set": {"sum": {"$add": ["$a", "$_id"]}}}, {"$unset": "arr"}])


def case_update_bad_operator(db):
    seed(db)
    return db.c.update_one({"_id": 1}, {"$foo": {"a": 1}})


def case_update_bad_operator_many(db):
    seed(db)
    return db.c.update_many({}, {"$inc": {"s": 1}})


def case_update_invalid_update_documents(db):
    seed(db)
    return (
        attempt(lambda: db.c.update_one({}, {})),
        attempt(lambda: db.c.update_one({}, {"a": 1})),
        attempt(lambda: db.c.update_many({}, "x")),
        attempt(lambda: db.c.update_one("x", {"$set": {"a": 1}})),
        attempt(lambda: db.c.update_one({}, {"$set": {"a": 1}}, upsert=1)),
        attempt(lambda: db.c.update_one({}, [])),
    )


def case_update_immutable_id(db):
    seed(db)
    return db.c.update_one({"_id": 1}, {"$set": {"_id": 50}})


def case_update_too_large(db):
    seed(db)
    return attempt(lambda: db.c.update_one({"_id": 1}, {"$set": {"big": BIG}})), attempt(
        lambda: db.c.replace_one({"_id": 1}, {"big": BIG})
    )


def case_update_unacknowledged(db):
    seed(db)
    coll = db.c.with_options(write_concern=WriteConcern(w=0))
    result = coll.update_one({"_id": 1}, {"$set": {"x": 1}})
    db.command("ping")  # w=0 returns before the server applies the write; a reply after it orders them
    return result, attempt(lambda: result.matched_count), attempt(lambda: result.upserted_id)


def case_replace_one(db):
    seed(db)
    return (
        db.c.replace_one({"_id": 1}, {"new": "doc", "z": 1, "a": 0}),
        db.c.replace_one({"_id": 99}, {"x": 1}),
        db.c.find_one({"_id": 1}),
    )


def case_replace_one_upsert(db):
    return db.c.replace_one({"_id": 5}, {"x": 1}, upsert=True), db.c.replace_one(
        {"k": 1}, {"k": 1, "y": 2}, upsert=True
    )


def case_replace_one_invalid(db):
    seed(db)
    return (
        attempt(lambda: db.c.replace_one({}, {"$set": {"a": 1}})),
        attempt(lambda: db.c.replace_one({}, [{"$set": {"a": 1}}])),
        attempt(lambda: db.c.replace_one({"_id": 1}, {"_id": 2})),
        db.c.replace_one({"_id": 1}, {}),
    )


def case_replace_one_hint_collation_let(db):
    db.c.insert_many([{"_id": 1, "s": "abc"}, {"_id": 2, "s": "ABC"}])
    db.c.create_index("s")
    return db.c.replace_one({"s": "ABC"}, {"s": "q"}, collation=Collation("en", strength=2), hint="s_1")


# -- delete -----------------------------------------------------------------------------------------


def case_delete_one(db):
    seed(db)
    return db.c.delete_one({"a": 1}), db.c.delete_one({"a": 42}), db.c.count_documents({})


def case_delete_many(db):
    seed(db)
    return db.c.delete_many({"a": {"$in": [0, 2]}}), db.c.delete_many({}), db.c.delete_many({})


def case_delete_collation_hint_let(db):
    db.c.insert_many([{"_id": 1, "s": "abc"}, {"_id": 2, "s": "ABC"}, {"_id": 3, "s": "x"}])
    db.c.create_index("s")
    return (
        db.c.delete_many({"s": "abc"}, collation=Collation("en", strength=2), hint="s_1"),
        db.c.delete_one({"$expr": {"$eq": ["$s", "$$v"]}}, let={"v": "x"}),
        attempt(lambda: db.c.delete_one({}, hint="missing_1")),
    )


def case_delete_bad_filter(db):
    return attempt(lambda: db.c.delete_one("x")), attempt(lambda: db.c.delete_many({"$bad": 1}))


def case_delete_unacknowledged(db):
    seed(db)
    result = db.get_collection("c", write_concern=WriteConcern(w=0)).delete_many({})
    db.command("ping")
    return result, attempt(lambda: result.deleted_count)


# -- write concerns ---------------------------------------------------------------------------------


def case_write_concern_w0_insert(db):
    coll = db.c.with_options(write_concern=WriteConcern(w=0))
    r1 = coll.insert_one({"_id": 1})
    r2 = coll.insert_many([{"_id": 2}, {"_id": 3}])
    dup = coll.insert_one({"_id": 1})  # unacknowledged: the duplicate goes unreported
    db.command("ping")
    return r1, r2, dup, coll.write_concern.acknowledged


def case_write_concern_majority(db):
    coll = db.get_collection("c", write_concern=WriteConcern(w="majority", wtimeout=5000))
    return (
        coll.insert_one({"_id": 1}),
        coll.update_one({"_id": 1}, {"$set": {"a": 1}}),
        coll.delete_many({"a": 5}),
        coll.write_concern.document,
    )


def case_write_concern_unsatisfiable(db):
    coll = db.c.with_options(write_concern=WriteConcern(w=5, wtimeout=100))
    return attempt(lambda: coll.insert_one({"_id": 1})), attempt(lambda: coll.delete_many({}))


def case_insert_many_write_concern_unsatisfiable(db):
    # The write concern reaches the server (the driver's insert_many options would drop it silently).
    coll = db.c.with_options(write_concern=WriteConcern(w=5, wtimeout=100))
    return attempt(lambda: coll.insert_many([{"_id": 1}, {"_id": 2}])), db.c.count_documents({})


def case_write_concern_journal(db):
    return db.c.with_options(write_concern=WriteConcern(j=True)).insert_one({"_id": 1})


def case_mutable_mapping_document(db):
    doc = OrderedDict([("b", 1), ("a", 2)])
    return db.c.insert_one(doc), doc, db.c.find_one()


CASES = collect_cases(globals())


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_writes(differ, case):
    differ.check(case)
