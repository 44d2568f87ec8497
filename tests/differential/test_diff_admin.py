"""Differential cases: indexes, collection and database administration, Database.command, options."""

from __future__ import annotations

import pytest
from _harness import attempt, collect_cases, ids
from bson import SON
from bson.codec_options import CodecOptions
from pymongo import ASCENDING, DESCENDING, TEXT, IndexModel
from pymongo.collation import Collation
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

# -- indexes -----------------------------------------------------------------------------------------


def case_create_index(db):
    return (
        db.c.create_index("a"),
        db.c.create_index([("b", ASCENDING), ("c", DESCENDING)]),
        db.c.create_index([("d", -1)], name="custom", unique=True, sparse=True),
        db.c.create_index("e", expireAfterSeconds=3600),
        db.c.create_index({"f": 1, "g": 1}),
        db.c.create_index([("h", 1)], partialFilterExpression={"h": {"$gt": 5}}),
        db.c.create_index([("s", 1)], collation=Collation("en", strength=2)),
        db.c.create_index([("txt", TEXT)]),
        db.c.create_index("a"),
        db.c.create_index([("z", 1)], maxTimeMS=10000, comment="idx"),
    )


def case_create_index_errors(db):
    db.c.create_index("a", name="a_idx")
    db.c.insert_many([{"_id": 1, "u": 1}, {"_id": 2, "u": 1}])
    return (
        attempt(lambda: db.c.create_index("a", name="a_idx", unique=True)),
        attempt(lambda: db.c.create_index("a", name="other")),
        attempt(lambda: db.c.create_index("u", unique=True)),
        attempt(lambda: db.c.create_index([("x", "nope")])),
        attempt(lambda: db.c.create_index(5)),
        attempt(lambda: db.c.create_index([])),
        attempt(lambda: db.c.create_index("y", bogusOption=True)),
    )


def case_create_indexes(db):
    models = [
        IndexModel([("a", 1)]),
        IndexModel([("b", -1), ("c", 1)], name="bc", unique=True),
        IndexModel("d", sparse=True),
    ]
    return (
        db.c.create_indexes(models),
        attempt(lambda: db.c.create_indexes([{"key": {"a": 1}}])),
        attempt(lambda: db.c.create_indexes(IndexModel("x"))),
        attempt(lambda: db.c.create_indexes([])),
        db.c.create_indexes([IndexModel("e")], comment="many"),
    )


def case_list_indexes_and_information(db):
    db.c.create_index([("a", 1), ("b", -1)], unique=True)
    db.c.create_index("t", expireAfterSeconds=60)
    return (
        db.c.list_indexes(),
        db.c.index_information(),
        db.missing.list_indexes(),
        db.missing.index_information(),
    )


def case_list_indexes_comment(db):
    db.c.create_index("a")
    return db.c.list_indexes(comment="li"), db.missing.list_indexes(comment="li")


def case_drop_index(db):
    db.c.create_index("a")
    db.c.create_index([("b", 1), ("c", -1)])
    db.c.create_index("d", name="dee")
    return (
        db.c.drop_index("a_1"),
        db.c.drop_index([("b", 1), ("c", -1)]),
        db.c.drop_index("dee", comment="x"),
        db.c.index_information(),
        attempt(lambda: db.c.drop_index("a_1")),
        attempt(lambda: db.c.drop_index({"a": 1})),
        attempt(lambda: db.c.drop_index("_id_")),
        db.missing.drop_index("a_1"),
    )


def case_drop_indexes(db):
    db.c.create_index("a")
    db.c.create_index("b")
    return (
        db.c.drop_indexes(),
        db.c.index_information(),
        db.missing.drop_indexes(),
        db.c.drop_indexes(comment="x"),
    )


# -- collections -------------------------------------------------------------------------------------


def case_create_collection(db):
    coll = db.create_collection("c")
    capped = db.create_collection("capped", capped=True, size=4096, max=3)
    validated = db.create_collection(
        "v", validator={"$jsonSchema": {"required": ["x"]}}, validationAction="error"
    )
    return (
        coll.name,
        capped.options(),
        validated.options(),
        db.c.options(),
        db.missing.options(),
        sorted(db.list_collection_names()),
    )


def case_create_collection_exists(db):
    db.create_collection("c")
    return (
        attempt(lambda: db.create_collection("c")),
        db.create_collection("c", check_exists=False).name,
        attempt(lambda: db.create_collection("c", check_exists=False, capped=True, size=100)),
    )


def case_create_collection_options(db):
    ts = db.create_collection("ts", timeseries={"timeField": "t", "metaField": "m"})
    collated = db.create_collection("coll", collation=Collation("fr"))
    view = db.create_collection("view", viewOn="coll", pipeline=[{"$match": {"x": 1}}])
    clustered = db.create_collection("clu", clusteredIndex={"key": {"_id": 1}, "unique": True})
    return (
        ts.options(),
        collated.options(),
        view.options(),
        clustered.options(),
        attempt(lambda: db.create_collection("bad", bogus=1)),
        attempt(lambda: db.create_collection("a$b")),
        attempt(lambda: db.create_collection("")),
    )


def case_create_collection_with_options(db):
    coll = db.create_collection(
        "c",
        codec_options=CodecOptions(document_class=SON),
        write_concern=WriteConcern(w=1),
        read_concern=ReadConcern("local"),
    )
    coll.insert_one({"_id": 1, "b": 2, "a": 1})
    return type(coll.find_one()).__name__, coll.write_concern.document, coll.read_concern.level


def case_list_collection_names(db):
    db.create_collection("a")
    db.create_collection("b", capped=True, size=1024)
    db.create_collection("vw", viewOn="a", pipeline=[])
    return (
        sorted(db.list_collection_names()),
        db.list_collection_names(filter={"name": "a"}),
        sorted(db.list_collection_names(filter={"type": "view"})),
        sorted(db.list_collection_names(filter={"options.capped": True})),
        sorted(db.list_collection_names(comment="lc")),
        attempt(lambda: db.list_collection_names(filter="a")),
    )


def case_list_collections(db):
    db.create_collection("a", validator={"x": {"$exists": True}})
    db.create_collection("b")
    infos = sorted(db.list_collections(), key=lambda i: i["name"])
    for info in infos:
        info.pop("info", None)
    return infos, [i["name"] for i in db.list_collections(filter={"name": "b"})]


def case_drop_collection(db):
    db.c.insert_one({"_id": 1})
    db.d.insert_one({"_id": 1})
    return (
        db.drop_collection("c"),
        db.drop_collection(db.d),
        db.drop_collection("never"),
        sorted(db.list_collection_names()),
        attempt(lambda: db.drop_collection(5)),
    )


def case_collection_drop(db):
    db.c.insert_one({"_id": 1})
    return db.c.drop(), db.c.drop(), db.list_collection_names(), db.c.drop(comment="again")


def case_rename(db):
    db.c.insert_many([{"_id": 1}, {"_id": 2}])
    db.c.create_index("a")
    return db.c.rename("renamed"), sorted(db.list_collection_names()), db.renamed.index_information()


def case_rename_errors(db):
    db.c.insert_one({"_id": 1})
    db.other.insert_one({"_id": 2})
    return (
        attempt(lambda: db.c.rename("other")),
        attempt(lambda: db.missing.rename("x")),
        attempt(lambda: db.c.rename("")),
        attempt(lambda: db.c.rename("a$b")),
        attempt(lambda: db.c.rename(".x")),
        attempt(lambda: db.c.rename(5)),
        db.c.rename("other", dropTarget=True),
        db.other.find_one(),
    )


def case_collection_names_and_identity(db):
    coll = db.c
    return (
        coll.name,
        coll.full_name.split(".", 1)[1],
        coll["sub"].name,
        coll.sub.name,
        coll == db["c"],
        coll != db.d,
        coll.database == db,
        db.get_collection("x").name,
        attempt(lambda: db[""]),
        attempt(lambda: db["a..b"]),
        attempt(lambda: db["$x"]),
        attempt(lambda: db[".x"]),
        attempt(lambda: db["x."]),
        attempt(lambda: db[5]),
        attempt(lambda: bool(coll)),
        attempt(lambda: coll._private),
        attempt(lambda: coll.nonexistent_method()),
        attempt(lambda: list(coll)),
    )


def case_with_options(db):
    coll = db.c.with_options(write_concern=WriteConcern(w=0))
    son = db.c.with_options(codec_options=CodecOptions(document_class=SON))
    db.c.insert_one({"_id": 1, "z": 1, "a": 2})
    return (
        coll.write_concern.acknowledged,
        coll.write_concern.document,
        type(son.find_one()).__name__,
        son.codec_options.document_class.__name__,
        db.c.write_concern.document,
        db.c.read_concern.level,
        db.c.with_options(read_concern=ReadConcern("majority")).find_one(),
        db.c.with_options(read_concern=ReadConcern("majority")).count_documents({}),
    )


def case_get_collection_write_concern(db):
    coll = db.get_collection("c", write_concern=WriteConcern(w="majority", j=True))
    result = coll.insert_one({"_id": 1})
    db_w0 = db.with_options(write_concern=WriteConcern(w=0))
    unack = db_w0.c.insert_one({"_id": 2})
    db.command("ping")
    return result, unack, coll.write_concern.document, db_w0.c.write_concern.document


def case_codec_options_document_class(db):
    db.c.insert_one({"_id": 1, "n": {"b": 1, "a": 2}})
    son = db.get_collection("c", codec_options=CodecOptions(document_class=SON))
    doc = son.find_one()
    return type(doc).__name__, type(doc["n"]).__name__, list(doc["n"].items())


# -- Database.command --------------------------------------------------------------------------------


def case_command_variants(db):
    db.c.insert_many([{"_id": i, "a": i % 2} for i in range(5)])
    return (
        db.command("ping"),
        db.command("count", "c"),
        db.command({"count": "c", "query": {"a": 1}}),
        db.command(SON([("count", "c"), ("query", {"a": 0})])),
        db.command("count", "c", query={"a": 1}),
        db.command("distinct", "c", key="a"),
        db.command({"listCollections": 1, "nameOnly": True})["ok"],
        db.command("dbStats")["collections"],
        db.command("collStats", "c")["count"],
        db.command("ping", comment="c"),
    )


def case_command_errors(db):
    return (
        attempt(lambda: db.command("nosuchcommand")),
        attempt(lambda: db.command({"count": 5})),
        db.command("nosuchcommand", check=False)["code"],
        db.command("nosuchcommand", allowable_errors=[59])["codeName"],
        attempt(lambda: db.command("drop", "missing")),
        db.command("drop", "missing", allowable_errors=["ns not found"])["ok"],
        attempt(lambda: db.command(5)),
        attempt(lambda: db.command({})),
    )


def case_command_codec_options(db):
    db.c.insert_one({"_id": 1, "n": {"b": 1, "a": 2}})
    reply = db.command("find", "c", codec_options=CodecOptions(document_class=SON))
    return type(reply).__name__, reply["cursor"]["firstBatch"], type(db.command("ping")).__name__


def case_command_find_cursor(db):
    db.c.insert_many([{"_id": i} for i in range(5)])
    reply = db.command("find", "c", filter={"_id": {"$gt": 1}}, sort={"_id": -1}, batchSize=2)
    return reply["cursor"]["firstBatch"], bool(reply["cursor"]["id"]), reply["cursor"]["ns"]


def case_command_write_commands(db):
    return (
        db.command("insert", "c", documents=[{"_id": 1}, {"_id": 1}]),
        db.command("update", "c", updates=[{"q": {"_id": 1}, "u": {"$set": {"x": 1}}, "upsert": True}]),
        db.command("delete", "c", deletes=[{"q": {}, "limit": 0}]),
    )


def case_dereference(db):
    from bson import DBRef

    db.c.insert_one({"_id": 1, "v": "x"})
    return (
        db.dereference(DBRef("c", 1)),
        db.dereference(DBRef("c", 2)),
        attempt(lambda: db.dereference({"$ref": "c"})),
        attempt(lambda: db.dereference(DBRef("c", 1, "otherdb"))),
    )


def case_database_identity(db):
    return (
        db.name.startswith("diff_"),
        db == db.client[db.name],
        db["c"].name,
        db.get_collection("d").name,
        attempt(lambda: bool(db)),
        attempt(lambda: db._x),
        attempt(lambda: list(db)),
        attempt(lambda: db.client["a b"]),
        attempt(lambda: db.client["a.b"]),
        attempt(lambda: db.client[""]),
        attempt(lambda: db.client[5]),
    )


def case_validate_collection(db):
    db.c.insert_many([{"_id": i} for i in range(3)])
    db.c.create_index("x")
    result = db.validate_collection("c")
    full = db.validate_collection(db.c, full=True, comment="v")
    return (
        result["valid"],
        result["nrecords"],
        result["nIndexes"],
        full["valid"],
        attempt(lambda: db.validate_collection("missing")),
        attempt(lambda: db.validate_collection(5)),
    )


CASES = collect_cases(globals())


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_admin(differ, case):
    differ.check(case)


# The same cases through the manager's db_name_template: the tenant's own database on its own pool.
TEMPLATE_CASES = [case_create_collection, case_rename, case_command_variants, case_drop_collection]


@pytest.mark.parametrize("case", TEMPLATE_CASES, ids=ids(TEMPLATE_CASES))
def test_admin_on_template_database(differ, case):
    differ.check(case, template=True)
