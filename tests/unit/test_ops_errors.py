"""Errors without a server: canned server replies and core errors become pymongo's exception classes,
with pymongo's code, details and labels."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)
from pymongo.write_concern import WriteConcern

from tenantpool._common import allowed_error

TIMEOUT_BY_INFO = {"code": 64, "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": True}}
TIMEOUT_BY_CODE = {"code": 50, "errmsg": "operation exceeded time limit"}
OTHER_WCE = {"code": 100, "errmsg": "unsatisfiable write concern"}


def insert_command(coll, doc):
    """An insert_one that goes as pymongo's insert command (a non-bool bypass_document_validation)."""
    return coll.insert_one(doc, bypass_document_validation=0)


# -- replies of write commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "wce, cls",
    [(TIMEOUT_BY_INFO, WTimeoutError), (TIMEOUT_BY_CODE, WTimeoutError), (OTHER_WCE, WriteConcernError)],
)
def test_write_concern_error_of_a_write_command(core, coll, wce, cls):
    core.reply({"n": 1, "writeConcernError": wce, "ok": 1})
    with pytest.raises(WriteConcernError) as info:
        insert_command(coll, {"_id": 1})
    assert type(info.value) is cls
    assert info.value.code == wce["code"] and info.value.details == wce


def test_the_top_level_labels_go_with_the_write_concern_error(core, coll):
    core.reply({"n": 1, "writeConcernError": OTHER_WCE, "errorLabels": ["RetryableWriteError"], "ok": 1})
    with pytest.raises(WriteConcernError) as info:
        insert_command(coll, {"_id": 1})
    assert info.value.has_error_label("RetryableWriteError")
    assert info.value.details["errorLabels"] == ["RetryableWriteError"]


def test_the_last_write_error_wins_over_a_write_concern_error(core, coll):
    errors = [{"index": 0, "code": 2, "errmsg": "first"}, {"index": 0, "code": 11000, "errmsg": "dup"}]
    core.reply({"n": 0, "writeErrors": errors, "writeConcernError": OTHER_WCE, "ok": 1})
    with pytest.raises(DuplicateKeyError) as info:
        insert_command(coll, {"_id": 1})
    assert info.value.details == errors[-1] and str(info.value).startswith("dup")


def test_write_error_of_an_update_command(core, coll):
    core.reply({"n": 0, "nModified": 0, "writeErrors": [{"index": 0, "code": 9, "errmsg": "bad"}], "ok": 1})
    with pytest.raises(WriteError) as info:
        coll.update_one({}, {"$set": {"a": 1}}, sort={"a": 1})
    assert info.value.code == 9 and not isinstance(info.value, DuplicateKeyError)


def test_find_and_modify_command_reply_is_checked(core, coll):
    core.reply({"value": None, "writeConcernError": TIMEOUT_BY_INFO, "ok": 1})
    with pytest.raises(WTimeoutError):
        coll.find_one_and_delete({}, other=1)


@pytest.mark.parametrize(
    "wce, cls",
    [(TIMEOUT_BY_INFO, WTimeoutError), (TIMEOUT_BY_CODE, WTimeoutError), (OTHER_WCE, WriteConcernError)],
)
def test_write_concern_error_of_drop_collection(core, db, wce, cls):
    # pymongo parses the write concern error of drop (not of createIndexes), WTimeoutError included.
    core.reply({"writeConcernError": wce, "ok": 1})
    with pytest.raises(WriteConcernError) as info:
        db.drop_collection("c")
    assert type(info.value) is cls


def test_unacknowledged_writes_raise_nothing_from_a_reply(core, db):
    coll = db.get_collection("c", write_concern=WriteConcern(w=0))
    core.reply({"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}], "ok": 1})
    assert not coll.insert_one({"_id": 1}).acknowledged


# -- errors of typed operations (single-document writes in a session outside a transaction) ----------


@pytest.mark.parametrize(
    "details, cls",
    [(TIMEOUT_BY_INFO, WTimeoutError), (TIMEOUT_BY_CODE, WTimeoutError), (OTHER_WCE, WriteConcernError)],
)
def test_write_concern_error_of_a_typed_write(core, coll, details, cls):
    core.reply(WriteConcernError(details["errmsg"], details["code"], details))
    with pytest.raises(WriteConcernError) as info:
        coll.update_one({}, {"$set": {"a": 1}}, session=coll.database.client.start_session())
    assert core.last.op == "update_one"
    assert type(info.value) is cls
    assert info.value.code == details["code"] and info.value.details == details


def test_a_wtimeout_error_from_the_core_is_kept(core, coll):
    error = WTimeoutError("timed out", 64, TIMEOUT_BY_INFO)
    core.reply(error)
    with pytest.raises(WTimeoutError) as info:
        coll.delete_one({})
    assert info.value is error


def test_core_errors_pass_through_with_their_labels(core, coll):
    error = OperationFailure("not primary", 10107, {"code": 10107, "errmsg": "not primary"})
    error._add_error_label("RetryableWriteError")
    core.reply(error)
    with pytest.raises(OperationFailure) as info:
        coll.find_one({})
    assert info.value is error and info.value.has_error_label("RetryableWriteError")


def test_typed_insert_many_bulk_error_gets_pymongos_details(core, db, coll):
    session = db.client.start_session()
    error = BulkWriteError(
        {
            "writeErrors": [{"index": 1, "code": 11000, "errmsg": "dup"}],
            "writeConcernErrors": [],
            "nInserted": 0,
        }
    )
    error._add_error_label("NoWritesPerformed")
    core.reply(error)
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"_id": 1}, {"_id": 1}, {"_id": 2}], session=session)
    details = info.value.details
    assert details["writeErrors"] == [{"index": 1, "code": 11000, "errmsg": "dup", "op": {"_id": 1}}]
    assert details["nInserted"] == 1  # ordered: the documents before the first error
    assert info.value.has_error_label("NoWritesPerformed")


def test_unordered_typed_insert_many_counts_all_but_the_failed(core, db, coll):
    session = db.client.start_session()
    core.reply(BulkWriteError({"writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}]}))
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}], ordered=False, session=session)
    assert info.value.details["nInserted"] == 2


# -- database commands -------------------------------------------------------------------------------


def test_drop_collection_write_concern_error(core, db):
    core.reply({"ok": 1, "writeConcernError": OTHER_WCE})
    with pytest.raises(WriteConcernError) as info:
        db.drop_collection("c")
    assert info.value.code == 100


def test_rename_write_concern_error(core, coll):
    core.reply({"ok": 1, "writeConcernError": OTHER_WCE})
    with pytest.raises(WriteConcernError) as info:
        coll.rename("d")
    assert info.value.details == OTHER_WCE


def test_create_index_write_concern_error_is_left_in_the_reply(core, coll):
    # As pymongo: createIndexes is not parsed for a write concern error.
    core.reply({"ok": 1, "writeConcernError": OTHER_WCE})
    assert coll.create_index("a") == "a_1"


def test_allowable_errors_by_code_or_by_message():
    assert allowed_error(OperationFailure("ns not found", 26), ["ns not found", 26])
    assert not allowed_error(OperationFailure("ns not found", 27), ["ns not found"])
    by_message = OperationFailure("ns not found", None, {"errmsg": "ns not found"})
    assert allowed_error(by_message, ["ns not found"])
    assert not allowed_error(by_message, None)
