"""aggregate, counts, distinct, index and database commands without a server: pymongo's own commands, the
reads marked for the core's read retries and causal consistency."""

from __future__ import annotations

import pytest
from pymongo import IndexModel
from pymongo.errors import ConfigurationError, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern
from tests.unit.fakecore import FakeRawCursor

MAJORITY = WriteConcern(w="majority")


# -- aggregate ---------------------------------------------------------------------------------------


def test_aggregate_with_options_is_pymongos_command(core, coll):
    core.reply([[{"n": 1}]])
    cursor = coll.aggregate(
        [{"$match": {}}],
        allowDiskUse=True,
        maxTimeMS=10,
        hint="a_1",
        batchSize=5,
        collation={"locale": "fr"},
        let={"x": 1},
        comment="c",
    )
    assert core.last.kind == "open_cursor" and core.last.op == "command"
    assert core.last.spec == {
        "command": {
            "aggregate": "c",
            "pipeline": [{"$match": {}}],
            "allowDiskUse": True,
            "maxTimeMS": 10,
            "hint": "a_1",
            "let": {"x": 1},
            "comment": "c",
            "cursor": {"batchSize": 5},
            "collation": {"locale": "fr"},
        },
        "options": {"batchSize": 5, "comment": "c"},
        "retryable": True,
        "causal": True,
    }
    assert cursor.to_list() == [{"n": 1}]


def test_aggregate_read_concern_and_write_concern(core, db):
    c = db.get_collection("c", read_concern=ReadConcern("majority"), write_concern=MAJORITY)
    c.aggregate([{"$match": {}}], batchSize=3)
    assert core.last.command["readConcern"] == {"level": "majority"}
    assert core.last.command["cursor"] == {"batchSize": 3} and "writeConcern" not in core.last.command
    c.aggregate([{"$match": {}}, {"$out": "other"}], batchSize=3)
    # A writing aggregation takes the write concern and no batch size, and is not retried.
    assert core.last.command["cursor"] == {} and core.last.command["writeConcern"] == {"w": "majority"}
    assert core.last.spec["retryable"] is False
    c.aggregate([{"$merge": {"into": "other"}}])
    assert core.last.command["writeConcern"] == {"w": "majority"}


def test_writing_aggregation_keeps_the_read_preference(core, db):
    c = db.get_collection("c", read_preference=ReadPreference.SECONDARY_PREFERRED)
    c.aggregate([{"$out": "x"}])
    assert core.last.spec["readPreference"] == {"mode": "secondaryPreferred"}


def test_database_aggregate_has_no_collection(core, db):
    db.aggregate([{"$currentOp": {}}])
    assert core.last.command["aggregate"] == 1


def test_aggregate_unknown_option_goes_as_the_command(core, coll):
    core.reply([[{"a": 1}]])
    cursor = coll.aggregate([{"$match": {}}], batchSize=2, someServerOption=1, collation={"locale": "fr"})
    assert core.last.op == "command"
    assert core.last.command == {
        "aggregate": "c",
        "pipeline": [{"$match": {}}],
        "someServerOption": 1,
        "cursor": {"batchSize": 2},
        "collation": {"locale": "fr"},
    }
    assert cursor.to_list() == [{"a": 1}]


@pytest.mark.parametrize("kwargs", [{"maxTimeMS": 1.5}, {"allowDiskUse": 1}, {"hint": 5}])
def test_aggregate_values_unfit_for_the_driver_go_as_the_command(core, coll, kwargs):
    coll.aggregate([], **kwargs)
    assert core.last.op == "command" and core.last.command["aggregate"] == "c"


def test_aggregate_command_with_a_write_stage_carries_the_concerns(core, db):
    c = db.get_collection("c", read_concern=ReadConcern("local"), write_concern=MAJORITY)
    c.aggregate([{"$out": "x"}], batchSize=2, other=True)
    assert core.last.command == {
        "aggregate": "c",
        "pipeline": [{"$out": "x"}],
        "other": True,
        "cursor": {},
        "readConcern": {"level": "local"},
        "writeConcern": {"w": "majority"},
    }


def test_aggregate_command_is_continued_with_getmore(core, coll):
    core.reply([[{"a": 1}], [{"a": 2}]])
    assert coll.aggregate([], other=1, batchSize=1).to_list() == [{"a": 1}, {"a": 2}]
    (call,) = core.sent()
    assert call.spec["options"] == {"batchSize": 1} and call.spec["retryable"] is True


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"explain": True}, "explain option is not supported"),
        ({"aggregate": "c"}, "aggregate option cannot be specified"),
    ],
)
def test_aggregate_refused_options(core, coll, kwargs, words):
    with pytest.raises(ConfigurationError, match=words):
        coll.aggregate([], **kwargs)
    assert core.calls == []


def test_aggregate_pipeline_must_be_a_list(coll):
    with pytest.raises(TypeError, match="pipeline must be a list"):
        coll.aggregate({"$match": {}})


# -- counts and distinct -----------------------------------------------------------------------------


def test_count_documents_is_pymongos_aggregation(core, coll):
    core.reply({"cursor": {"id": 0, "firstBatch": [{"_id": 1, "n": 4}]}, "ok": 1})
    assert coll.count_documents({"a": 1}, skip=1, limit=2, hint=[("a", 1)], maxTimeMS=9, comment="c") == 4
    assert core.last.op == "command"
    assert core.last.spec == {
        "command": {
            "aggregate": "c",
            "pipeline": [
                {"$match": {"a": 1}},
                {"$skip": 1},
                {"$limit": 2},
                {"$group": {"_id": 1, "n": {"$sum": 1}}},
            ],
            "cursor": {},
            "hint": {"a": 1},
            "maxTimeMS": 9,
            "comment": "c",
        },
        "retryable": True,
        "causal": True,
    }


@pytest.mark.parametrize("kwargs", [{"skip": -1}, {"limit": 0}, {"maxTimeMS": 1.5}, {"other": 1}])
def test_count_documents_unfit_goes_as_pymongos_aggregation(core, coll, kwargs):
    core.reply({"cursor": {"id": 0, "firstBatch": [{"_id": 1, "n": 3}]}, "ok": 1})
    assert coll.count_documents({"a": 1}, **kwargs) == 3
    pipeline = core.last.command["pipeline"]
    assert pipeline[0] == {"$match": {"a": 1}} and pipeline[-1] == {"$group": {"_id": 1, "n": {"$sum": 1}}}
    assert core.last.command["aggregate"] == "c"


def test_count_documents_command_stages(core, coll):
    assert coll.count_documents({}, skip=-1, limit=2) == 0
    assert core.last.command == {
        "aggregate": "c",
        "pipeline": [{"$match": {}}, {"$skip": -1}, {"$limit": 2}, {"$group": {"_id": 1, "n": {"$sum": 1}}}],
        "cursor": {},
    }


def test_estimated_document_count(core, coll):
    core.reply({"n": 12, "ok": 1})
    assert coll.estimated_document_count(maxTimeMS=3) == 12
    assert (core.last.op, core.last.spec) == (
        "command",
        {"command": {"count": "c", "maxTimeMS": 3}, "retryable": True, "causal": True},
    )
    core.reply({"n": 2, "ok": 1})
    assert coll.estimated_document_count(query={"a": 1}) == 2
    assert core.last.command == {"count": "c", "query": {"a": 1}}
    with pytest.raises(ConfigurationError, match="does not support sessions"):
        coll.estimated_document_count(session=None)


def test_distinct_is_pymongos_command(core, coll):
    core.reply({"values": [1, 2], "ok": 1})
    assert coll.distinct("a", {"b": 1}, maxTimeMS=4, hint="b_1", collation={"locale": "en"}) == [1, 2]
    assert core.last.op == "command"
    assert core.last.spec == {
        "command": {
            "distinct": "c",
            "key": "a",
            "query": {"b": 1},
            "maxTimeMS": 4,
            "hint": "b_1",
            "collation": {"locale": "en"},
        },
        "retryable": True,
        "causal": True,
    }
    coll.distinct("a", other=True)
    assert core.last.command == {"distinct": "c", "key": "a", "other": True}
    with pytest.raises(ConfigurationError, match="both filter and query"):
        coll.distinct("a", {"b": 1}, query={"b": 2})
    with pytest.raises(TypeError, match="key must be an instance of str"):
        coll.distinct(1)


# -- indexes -----------------------------------------------------------------------------------------


def test_create_index_names_and_command(core, coll):
    name = coll.create_index([("a", 1), ("b", -1)], unique=True, maxTimeMS=50, comment="c")
    assert name == "a_1_b_-1"
    assert core.last.op == "command"
    assert core.last.command == {
        "createIndexes": "c",
        "indexes": [{"key": {"a": 1, "b": -1}, "name": "a_1_b_-1", "unique": True}],
        "maxTimeMS": 50,
        "comment": "c",
    }


def test_create_indexes_with_names_and_write_concern(core, db):
    c = db.get_collection("c", write_concern=MAJORITY)
    names = c.create_indexes([IndexModel("a"), IndexModel([("b", "text")], name="txt")])
    assert names == ["a_1", "txt"]
    assert [i["name"] for i in core.last.command["indexes"]] == ["a_1", "txt"]
    assert core.last.command["writeConcern"] == {"w": "majority"}
    with pytest.raises(TypeError, match="IndexModel"):
        c.create_indexes([{"key": {"a": 1}}])


def test_drop_index_by_name_or_keys(core, coll):
    coll.drop_index([("a", 1), ("b", -1)])
    assert core.last.command == {"dropIndexes": "c", "index": "a_1_b_-1"}
    coll.drop_indexes(comment="x")
    assert core.last.command == {"dropIndexes": "c", "index": "*", "comment": "x"}
    with pytest.raises(TypeError, match="index_or_name must be"):
        coll.drop_index(5)


def test_drop_index_tolerates_ns_not_found(core, coll):
    core.reply(OperationFailure("ns not found", 26, {"ok": 0, "errmsg": "ns not found", "code": 26}))
    coll.drop_index("a_1")
    core.reply(OperationFailure("index not found", 27))
    with pytest.raises(OperationFailure):
        coll.drop_index("a_1")


def test_list_indexes_with_and_without_a_comment(core, coll):
    core.reply(FakeRawCursor([{"v": 2, "key": {"_id": 1}, "name": "_id_"}]))
    assert [i["name"] for i in coll.list_indexes()] == ["_id_"]
    assert core.last.kind == "next_batch"
    assert core.calls[0].op == "command"
    assert core.calls[0].spec == {
        "command": {"listIndexes": "c", "cursor": {}},
        "options": {},
        "retryable": True,
        "causal": False,
    }
    core.calls.clear()
    core.reply({"cursor": {"id": 0, "firstBatch": [{"v": 2, "key": {"a": 1}, "name": "a_1"}]}, "ok": 1})
    assert coll.index_information(comment="x") == {"a_1": {"v": 2, "key": [("a", 1)]}}
    assert core.sent()[-1].command == {"listIndexes": "c", "cursor": {}, "comment": "x"}


def test_list_indexes_of_a_missing_collection_is_empty(core, coll):
    core.reply(OperationFailure("ns does not exist", 26))
    assert coll.list_indexes().to_list() == []


# -- database commands -------------------------------------------------------------------------------


def test_command_as_given_on_the_primary(core, db):
    core.reply({"ok": 1, "x": 1})
    assert db.command("ping", comment="c") == {"ok": 1, "x": 1}
    assert core.last.spec == {"command": {"ping": 1, "comment": "c"}}
    db.command({"collMod": "c"}, validator={"a": 1})
    assert core.last.command == {"collMod": "c", "validator": {"a": 1}}


def test_command_errors_check_and_allowable(core, db):
    error = OperationFailure("no", 59, {"ok": 0, "errmsg": "no", "code": 59})
    core.reply(error, error, error)
    with pytest.raises(OperationFailure):
        db.command("nope")
    assert db.command("nope", check=False) == {"ok": 0, "errmsg": "no", "code": 59}
    assert db.command("nope", allowable_errors=[59])["code"] == 59


def test_create_collection_checks_it_does_not_exist(core, db):
    core.reply([[{"name": "other", "type": "collection"}]])
    coll = db.create_collection("new", capped=True, size=1024)
    list_call, create = core.calls[0], core.calls[-1]
    assert list_call.command == {
        "listCollections": 1,
        "cursor": {},
        "filter": {"name": "new"},
        "nameOnly": True,
    }
    assert create.command == {"create": "new", "capped": True, "size": 1024.0}
    assert coll.name == "new"


def test_drop_collection_tolerates_a_missing_one(core, db):
    core.reply(OperationFailure("ns not found", 26, {"ok": 0, "errmsg": "ns not found", "code": 26}))
    assert db.drop_collection("c")["code"] == 26
    assert core.last.command == {"drop": "c"}


def test_list_collection_names(core, db):
    core.reply([[{"name": "a", "type": "collection", "options": {}}]])
    assert db.list_collection_names() == ["a"]
    assert core.calls[0].command == {"listCollections": 1, "cursor": {}, "nameOnly": True}
    core.reply({"cursor": {"id": 0, "firstBatch": [{"name": "b"}]}, "ok": 1})
    assert db.list_collection_names(comment="x") == ["b"]
    assert core.sent()[-1].command == {"listCollections": 1, "cursor": {}, "nameOnly": True, "comment": "x"}


def test_rename_runs_on_admin_with_both_full_names(core, db):
    db.get_collection("c", write_concern=MAJORITY).rename("d", dropTarget=True)
    assert core.last.db == "admin"
    assert core.last.command == {
        "renameCollection": "alice_db.c",
        "to": "alice_db.d",
        "dropTarget": True,
        "writeConcern": {"w": "majority"},
    }
