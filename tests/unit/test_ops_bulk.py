"""bulk_write without a server: how requests are grouped into write commands, which are retryable
writes, how replies merge into pymongo's result, and its errors."""

from __future__ import annotations

import pytest
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, ConfigurationError, InvalidOperation, OperationFailure
from pymongo.write_concern import WriteConcern

import tenantpool.bulk as bulk_module

MIXED = [
    InsertOne({"_id": 1}),
    UpdateOne({"_id": 1}, {"$set": {"a": 1}}),
    InsertOne({"_id": 2}),
    DeleteOne({"_id": 3}),
]


def names(core):
    return [
        (next(iter(c)), len(c.get("documents") or c.get("updates") or c.get("deletes")))
        for c in core.commands()
    ]


def test_ordered_keeps_runs_in_request_order(core, coll):
    result = coll.bulk_write(MIXED)
    assert names(core) == [("insert", 1), ("update", 1), ("insert", 1), ("delete", 1)]
    assert all(c.op == "retryable_write" for c in core.sent("execute"))
    assert (result.inserted_count, result.matched_count, result.modified_count, result.deleted_count) == (
        2,
        1,
        1,
        1,
    )
    assert result.acknowledged


def test_unordered_groups_by_kind(core, coll):
    coll.bulk_write(MIXED, ordered=False)
    assert names(core) == [("insert", 2), ("update", 1), ("delete", 1)]
    assert all(c["ordered"] is False for c in core.commands())


def test_multi_document_ops_make_the_bulk_non_retryable(core, coll):
    coll.bulk_write([InsertOne({"_id": 1}), UpdateMany({}, {"$set": {"a": 1}})])
    assert {c.op for c in core.sent("execute")} == {"command"}
    core.calls.clear()
    coll.bulk_write([DeleteMany({})])
    assert core.last.op == "command"


def test_command_options(core, coll):
    coll.bulk_write(
        [
            UpdateOne({}, {"$set": {"a": 1}}, upsert=True, hint="a_1"),
            DeleteOne({}, collation={"locale": "fr"}),
        ],
        bypass_document_validation=True,
        comment="c",
        let={"x": 1},
    )
    update, delete = core.commands()
    assert update == {
        "update": "c",
        "ordered": True,
        "comment": "c",
        "bypassDocumentValidation": True,
        "let": {"x": 1},
        "updates": [{"q": {}, "u": {"$set": {"a": 1}}, "multi": False, "upsert": True, "hint": "a_1"}],
    }
    assert delete["deletes"] == [{"q": {}, "limit": 1, "collation": {"locale": "fr"}}]


def test_let_is_not_sent_with_inserts(core, coll):
    coll.bulk_write([InsertOne({"_id": 1})], let={"x": 1})
    assert "let" not in core.last.command


def test_replace_one_request(core, coll):
    coll.bulk_write([ReplaceOne({"a": 1}, {"b": 1}, sort={"a": 1})])
    assert core.last.command["updates"] == [{"q": {"a": 1}, "u": {"b": 1}, "sort": {"a": 1}}]


def test_batches_are_split_at_the_write_batch_size(core, coll, monkeypatch):
    monkeypatch.setattr(bulk_module, "MAX_WRITE_BATCH_SIZE", 2)
    result = coll.bulk_write([InsertOne({"_id": i}) for i in range(5)])
    assert names(core) == [("insert", 2), ("insert", 2), ("insert", 1)]
    assert [d["_id"] for c in core.commands() for d in c["documents"]] == [0, 1, 2, 3, 4]
    assert result.inserted_count == 5


def test_upserted_ids_map_back_to_request_indexes(core, coll):
    core.reply(
        {"n": 1, "ok": 1},
        {"n": 2, "nModified": 0, "upserted": [{"index": 1, "_id": "u"}], "ok": 1},
    )
    requests = [
        InsertOne({"_id": 1}),
        UpdateOne({"_id": 5}, {"$set": {"a": 1}}),
        UpdateOne({"_id": 6}, {"$set": {"a": 1}}, upsert=True),
    ]
    result = coll.bulk_write(requests, ordered=False)
    assert result.upserted_ids == {2: "u"}
    assert (result.upserted_count, result.matched_count) == (1, 1)


def test_ordered_bulk_stops_at_a_write_error(core, coll):
    core.reply({"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}], "ok": 1})
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(MIXED)
    assert len(core.commands()) == 1
    details = info.value.details
    assert details["nInserted"] == 0
    assert details["writeErrors"] == [{"index": 0, "code": 11000, "errmsg": "dup", "op": {"_id": 1}}]


def test_unordered_bulk_goes_on_and_maps_error_indexes(core, coll):
    error = {"index": 1, "code": 11000, "errmsg": "dup"}
    core.reply({"n": 1, "writeErrors": [error], "ok": 1})
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(MIXED, ordered=False)
    assert len(core.commands()) == 3
    # The second insert of the run was request 2.
    assert info.value.details["writeErrors"][0]["index"] == 2
    assert info.value.details["writeErrors"][0]["op"] == {"_id": 2}
    assert info.value.details["nRemoved"] == 1


def test_write_concern_errors_do_not_stop_an_ordered_bulk(core, coll):
    wce = {"code": 64, "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": True}}
    core.reply({"n": 1, "writeConcernError": wce, "ok": 1})
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(MIXED)
    assert len(core.commands()) == 4
    assert info.value.details["writeConcernErrors"] == [wce]


def test_a_retryable_write_concern_error_stops_the_bulk_labelled(core, coll):
    wce = {"code": 91, "errmsg": "shutting down"}
    core.reply({"n": 1, "writeConcernError": wce, "errorLabels": ["RetryableWriteError"], "ok": 1})
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(MIXED)
    assert len(core.commands()) == 1
    assert info.value.has_error_label("RetryableWriteError")
    assert info.value.details["writeConcernErrors"][0]["errorLabels"] == ["RetryableWriteError"]


def test_empty_bulk_and_bad_requests(core, coll):
    with pytest.raises(InvalidOperation, match="No operations to execute"):
        coll.bulk_write([])
    with pytest.raises(TypeError, match="is not a valid request"):
        coll.bulk_write([{"insertOne": {}}])
    assert core.calls == []


# -- unacknowledged ----------------------------------------------------------------------------------


@pytest.fixture
def unack(db):
    return db.get_collection("c", write_concern=WriteConcern(w=0))


def test_unacknowledged_unordered_bulk_sends_w0(core, unack):
    result = unack.bulk_write(MIXED, ordered=False)
    assert not result.acknowledged
    assert {c.op for c in core.sent("execute")} == {"command"}
    assert all(c["writeConcern"] == {"w": 0} for c in core.commands())


def test_unacknowledged_ordered_bulk_is_acknowledged_but_for_its_last_op(core, unack):
    unack.bulk_write(MIXED)
    commands = core.commands()
    assert ["writeConcern" in c for c in commands] == [False, False, False, True]
    assert commands[-1]["writeConcern"] == {"w": 0}


def test_unacknowledged_ordered_bulk_stops_quietly_at_a_write_error(core, unack):
    core.reply({"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}], "ok": 1})
    assert not unack.bulk_write(MIXED).acknowledged
    assert len(core.commands()) == 1
    core.calls.clear()
    core.reply(OperationFailure("boom", 2))
    unack.bulk_write(MIXED)
    assert len(core.commands()) == 1


@pytest.mark.parametrize(
    "request_, words",
    [
        (UpdateOne({}, {"$set": {"a": 1}}, collation={"locale": "fr"}), "Collation is unsupported"),
        (UpdateOne({}, {"$set": {"a.$[x]": 1}}, array_filters=[{"x": 1}]), "arrayFilters is unsupported"),
        (UpdateOne({}, {"$set": {"a": 1}}, sort={"a": 1}), "MongoDB 8.0"),
    ],
)
def test_unacknowledged_bulk_refuses_options(core, unack, request_, words):
    with pytest.raises(ConfigurationError, match=words):
        unack.bulk_write([request_])
    assert core.calls == []


def test_unacknowledged_bulk_refuses_bypass_document_validation(core, unack):
    with pytest.raises(OperationFailure, match="bypass_document_validation"):
        unack.bulk_write(MIXED, bypass_document_validation=True)
