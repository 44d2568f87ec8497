"""What the single-document and multi-document writes send (no server): pymongo's write commands, the
single-document ones outside a session as the core's retryable writes; the driver's typed ops only for a
single-document write in an explicit session outside a transaction, which only the driver can number
(see ``numbered_by_the_driver``)."""

from __future__ import annotations

import pytest
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo import ReturnDocument
from pymongo.collation import Collation
from pymongo.errors import ConfigurationError, DuplicateKeyError, InvalidOperation, WriteError
from pymongo.write_concern import WriteConcern

W0 = WriteConcern(w=0)
MAJORITY = WriteConcern(w="majority", wtimeout=1000)


@pytest.fixture
def unack(db):
    return db.get_collection("c", write_concern=W0)


# -- insert ------------------------------------------------------------------------------------------


def test_insert_one_is_the_typed_op_with_the_document_apart(core, coll):
    result = coll.insert_one({"_id": 1, "a": 2}, comment="hi", bypass_document_validation=True)
    assert (result.inserted_id, result.acknowledged) == (1, True)
    call = core.last
    assert (call.op, call.docs) == ("insert_one", [{"_id": 1, "a": 2}])
    assert call.spec == {"collection": "c", "options": {"bypassDocumentValidation": True, "comment": "hi"}}


def test_insert_one_adds_an_id(core, coll):
    doc = {"a": 1}
    result = coll.insert_one(doc)
    assert result.inserted_id == doc["_id"] == core.last.docs[0]["_id"]


def test_insert_one_of_raw_bson_has_no_inserted_id(core, coll):
    result = coll.insert_one(RawBSONDocument(b"\x05\x00\x00\x00\x00"))
    assert result.inserted_id is None and core.last.op == "insert_one"


def test_insert_one_with_write_concern(core, db):
    db.get_collection("c", write_concern=MAJORITY).insert_one({"_id": 1})
    assert core.last.options == {"writeConcern": {"w": "majority", "wtimeout": 1000}}


def test_unacknowledged_insert_one_is_a_plain_insert_command(core, unack):
    result = unack.insert_one({"_id": 1})
    assert not result.acknowledged and result.inserted_id == 1
    assert core.last.op == "command"
    assert core.last.command == {
        "insert": "c",
        "ordered": True,
        "documents": [{"_id": 1}],
        "writeConcern": {"w": 0},
    }


def test_insert_one_with_a_non_bool_bypass_goes_as_a_retryable_command(core, coll):
    coll.insert_one({"_id": 1}, bypass_document_validation=1)
    assert core.last.op == "retryable_write"
    assert core.last.command["bypassDocumentValidation"] == 1


def test_insert_one_in_a_transaction_is_the_insert_command(core, db, coll):
    session = db.client.start_session()
    with session.start_transaction():
        coll.insert_one({"_id": 1}, session=session)
    insert = core.calls[1]
    assert insert.op == "command" and insert.session is session._raw
    assert insert.command == {"insert": "c", "ordered": True, "documents": [{"_id": 1}]}


def test_insert_one_write_error_in_the_reply(core, unack, coll):
    error = {"index": 0, "code": 11000, "errmsg": "E11000 dup", "keyValue": {"_id": 1}}
    core.reply({"n": 0, "writeErrors": [error], "ok": 1})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"_id": 1}, bypass_document_validation=0)
    assert info.value.details == error and info.value.code == 11000
    core.reply({"n": 0, "writeErrors": [{"index": 0, "code": 121, "errmsg": "invalid"}], "ok": 1})
    with pytest.raises(WriteError) as info:
        coll.insert_one({"_id": 2}, bypass_document_validation=0)
    assert type(info.value) is WriteError and info.value.code == 121


def test_explicit_session_refuses_unacknowledged_writes(core, db, unack):
    session = db.client.start_session()
    with pytest.raises(ConfigurationError, match="unacknowledged write concern"):
        unack.insert_one({"_id": 1}, session=session)
    assert core.calls == []


def test_insert_many_outside_a_session_is_pymongos_batched_insert(core, coll):
    result = coll.insert_many([{"_id": 1}, {"_id": 2}], ordered=False, comment="x")
    assert result.inserted_ids == [1, 2]
    assert core.last.op == "retryable_write"
    assert core.last.command == {
        "insert": "c",
        "ordered": False,
        "comment": "x",
        "documents": [{"_id": 1}, {"_id": 2}],
    }


def test_insert_many_in_a_session_is_the_typed_op(core, db, coll):
    session = db.client.start_session()
    coll.insert_many([{"_id": 1}, {"_id": 2}], session=session, bypass_document_validation=False)
    assert core.last.op == "insert_many"
    assert core.last.docs == [{"_id": 1}, {"_id": 2}]
    assert core.last.options == {"ordered": True, "bypassDocumentValidation": False}


def test_insert_many_refuses_what_pymongo_refuses(coll):
    with pytest.raises(TypeError, match="non-empty list"):
        coll.insert_many([])
    with pytest.raises(TypeError, match="non-empty list"):
        coll.insert_many({"_id": 1})
    with pytest.raises(TypeError):
        coll.insert_many([1])


# -- update and replace ------------------------------------------------------------------------------


def test_update_one_in_a_session_is_typed_with_every_option(core, db, coll):
    core.reply({"n": Int64(1), "nModified": Int64(0), "upserted": 7})
    result = coll.update_one(
        {"a": 1},
        {"$set": {"b.$[x]": 2}},
        upsert=True,
        array_filters=[{"x": {"$gt": 1}}],
        hint=[("a", 1)],
        collation=Collation("fr"),
        let={"v": 1},
        comment="c",
        bypass_document_validation=True,
        session=db.client.start_session(),
    )
    assert core.last.op == "update_one"
    assert core.last.spec == {
        "collection": "c",
        "filter": {"a": 1},
        "update": {"$set": {"b.$[x]": 2}},
        "options": {
            "upsert": True,
            "bypassDocumentValidation": True,
            "collation": {"locale": "fr"},
            "arrayFilters": [{"x": {"$gt": 1}}],
            "hint": {"a": 1},
            "let": {"v": 1},
            "comment": "c",
        },
    }
    assert result.upserted_id == 7 and result.matched_count == 0 and result.modified_count == 0
    assert result.raw_result == {"n": 1, "upserted": 7, "nModified": 0, "ok": 1.0, "updatedExisting": False}


def test_update_one_outside_a_session_is_a_retryable_update_command(core, coll):
    core.reply({"n": 1, "nModified": 0, "upserted": [{"index": 0, "_id": 7}], "ok": 1.0})
    result = coll.update_one({"a": 1}, {"$set": {"b": 2}}, upsert=True, hint=[("a", 1)], comment="c")
    assert core.last.op == "retryable_write"
    assert core.last.command == {
        "update": "c",
        "ordered": True,
        "updates": [
            {"q": {"a": 1}, "u": {"$set": {"b": 2}}, "multi": False, "upsert": True, "hint": {"a": 1}}
        ],
        "comment": "c",
    }
    # The server's reply, as pymongo reshapes it.
    assert result.upserted_id == 7 and result.matched_count == 0 and result.modified_count == 0
    assert result.raw_result == {"n": 1, "nModified": 0, "upserted": 7, "ok": 1.0, "updatedExisting": False}


def test_update_many_and_replace_one_ops(core, db, coll):
    coll.update_many({}, [{"$set": {"a": 1}}])
    # A multi-document write is not retryable (pymongo's rule): a plain command.
    assert core.last.op == "command" and core.last.command["updates"][0]["u"] == [{"$set": {"a": 1}}]
    coll.replace_one({"a": 1}, {"b": 2})
    assert core.last.op == "retryable_write" and core.last.command["updates"][0]["u"] == {"b": 2}
    coll.replace_one({"a": 1}, {"b": 2}, session=db.client.start_session())
    assert core.last.op == "replace_one"
    assert core.last.spec == {
        "collection": "c",
        "filter": {"a": 1},
        "replacement": {"b": 2},
        "options": {"upsert": False},
    }


def test_updated_existing_without_upsert(core, coll):
    core.reply({"n": 2, "nModified": 1})
    result = coll.update_many({}, {"$inc": {"a": 1}})
    assert result.raw_result["updatedExisting"] is True and result.matched_count == 2


def test_update_with_sort_goes_as_the_update_command(core, coll):
    core.reply({"n": 1, "nModified": 1, "upserted": [{"index": 0, "_id": 9}], "ok": 1})
    result = coll.update_one({}, {"$set": {"a": 1}}, sort={"a": -1}, let={"x": 1})
    assert core.last.op == "retryable_write"
    assert core.last.command == {
        "update": "c",
        "ordered": True,
        "updates": [{"q": {}, "u": {"$set": {"a": 1}}, "multi": False, "upsert": False, "sort": {"a": -1}}],
        "let": {"x": 1},
    }
    assert result.upserted_id == 9 and result.raw_result["updatedExisting"] is False


def test_update_many_command_is_not_retryable(core, coll):
    coll.update_many({}, {"$set": {"a": 1}}, bypass_document_validation="yes")
    assert core.last.op == "command" and core.last.command["updates"][0]["multi"] is True


def test_unacknowledged_update(core, unack):
    result = unack.update_one({"a": 1}, {"$set": {"a": 2}}, upsert=True, hint="a_1")
    assert not result.acknowledged
    assert core.last.op == "command"
    assert core.last.command["updates"] == [
        {"q": {"a": 1}, "u": {"$set": {"a": 2}}, "multi": False, "upsert": True, "hint": "a_1"}
    ]
    assert core.last.command["writeConcern"] == {"w": 0}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"collation": {"locale": "fr"}}, "Collation is unsupported"),
        ({"array_filters": [{"x": 1}]}, "arrayFilters is unsupported"),
        ({"sort": {"a": 1}}, "MongoDB 8.0"),
    ],
)
def test_unacknowledged_update_refuses_options_before_sending(core, unack, kwargs, words):
    with pytest.raises(ConfigurationError, match=words):
        unack.update_one({}, {"$set": {"a": 1}}, **kwargs)
    assert core.calls == []


def test_update_argument_checks(coll):
    with pytest.raises(ValueError, match="update only works with \\$ operators"):
        coll.update_one({}, {"a": 1})
    with pytest.raises(ValueError, match="replace"):
        coll.replace_one({}, {"$set": {"a": 1}})
    with pytest.raises(TypeError, match="upsert must be True or False"):
        coll.update_one({}, {"$set": {"a": 1}}, upsert=1)
    with pytest.raises(TypeError, match="filter must be an instance of dict"):
        coll.update_one([], {"$set": {"a": 1}})


# -- delete ------------------------------------------------------------------------------------------


def test_delete_many_and_one_are_delete_commands(core, db, coll):
    core.reply({"n": 3, "ok": 1.0})
    result = coll.delete_many({"a": 1}, hint="a_1", let={"x": 1}, comment="c", collation={"locale": "en"})
    assert result.deleted_count == 3 and result.raw_result == {"n": 3, "ok": 1.0}
    assert core.last.op == "command"
    assert core.last.command == {
        "delete": "c",
        "ordered": True,
        "deletes": [{"q": {"a": 1}, "limit": 0, "collation": {"locale": "en"}, "hint": "a_1"}],
        "let": {"x": 1},
        "comment": "c",
    }
    coll.delete_one({})
    assert core.last.op == "retryable_write" and core.last.command["deletes"] == [{"q": {}, "limit": 1}]
    core.reply({"n": Int64(1)})
    result = coll.delete_one({}, session=db.client.start_session())
    assert core.last.op == "delete_one" and core.last.options == {}
    assert result.raw_result == {"n": 1, "ok": 1.0}


def test_unacknowledged_delete(core, unack):
    result = unack.delete_many({"a": 1})
    assert not result.acknowledged and result.raw_result == {"ok": 1}
    assert core.last.command == {
        "delete": "c",
        "ordered": True,
        "deletes": [{"q": {"a": 1}, "limit": 0}],
        "writeConcern": {"w": 0},
    }
    unack.delete_one({"a": 1})
    assert core.last.command["deletes"] == [{"q": {"a": 1}, "limit": 1}]
    with pytest.raises(ConfigurationError, match="Collation is unsupported"):
        unack.delete_one({}, collation={"locale": "en"})


# -- find_one_and_* ----------------------------------------------------------------------------------


def test_find_one_and_update_in_a_session_is_typed(core, db, coll):
    core.reply({"value": {"_id": 1, "a": 2}})
    doc = coll.find_one_and_update(
        {"a": 1},
        {"$inc": {"a": 1}},
        projection=["a"],
        sort=[("a", -1)],
        upsert=True,
        return_document=ReturnDocument.AFTER,
        array_filters=[{"x": 1}],
        hint="a_1",
        let={"v": 2},
        maxTimeMS=5,
        comment="c",
        session=db.client.start_session(),
    )
    assert doc == {"_id": 1, "a": 2}
    assert core.last.op == "find_one_and_update"
    assert core.last.spec == {
        "collection": "c",
        "filter": {"a": 1},
        "returnNew": True,
        "update": {"$inc": {"a": 1}},
        "options": {
            "projection": {"a": 1},
            "sort": {"a": -1},
            "upsert": True,
            "arrayFilters": [{"x": 1}],
            "hint": "a_1",
            "let": {"v": 2},
            "maxTimeMS": 5,
            "comment": "c",
        },
    }


def test_find_one_and_replace_and_delete_outside_a_session_are_retryable_commands(core, db):
    coll = db.get_collection("c", write_concern=MAJORITY)
    core.reply({"value": {"_id": 1, "b": 1}, "ok": 1.0})
    assert coll.find_one_and_replace({"a": 1}, {"b": 1}) == {"_id": 1, "b": 1}
    assert core.last.op == "retryable_write"
    assert core.last.command == {
        "findAndModify": "c",
        "query": {"a": 1},
        "new": False,
        "update": {"b": 1},
        "upsert": False,
        "writeConcern": {"w": "majority", "wtimeout": 1000},
    }
    coll.find_one_and_delete({"a": 1}, sort={"a": 1})
    assert core.last.op == "retryable_write"
    assert core.last.command == {
        "findAndModify": "c",
        "query": {"a": 1},
        "new": False,
        "remove": True,
        "sort": {"a": 1},
        "writeConcern": {"w": "majority", "wtimeout": 1000},
    }


def test_find_one_and_replace_and_delete_in_a_session_are_typed(core, db):
    coll = db.get_collection("c", write_concern=MAJORITY)
    session = db.client.start_session()
    coll.find_one_and_replace({"a": 1}, {"b": 1}, session=session)
    assert core.last.op == "find_one_and_replace"
    assert core.last.spec == {
        "collection": "c",
        "filter": {"a": 1},
        "returnNew": False,
        "replacement": {"b": 1},
        "options": {"upsert": False, "writeConcern": {"w": "majority", "wtimeout": 1000}},
    }
    coll.find_one_and_delete({"a": 1}, sort={"a": 1}, session=session)
    assert core.last.op == "find_one_and_delete"
    assert core.last.spec == {
        "collection": "c",
        "filter": {"a": 1},
        "options": {"sort": {"a": 1}, "writeConcern": {"w": "majority", "wtimeout": 1000}},
    }


def test_find_one_and_update_with_an_unknown_option_is_the_command(core, coll):
    core.reply({"value": {"a": 1}, "ok": 1})
    assert coll.find_one_and_update({}, {"$set": {"a": 1}}, bypassDocumentValidation=True) == {"a": 1}
    assert core.last.op == "retryable_write"
    assert core.last.command == {
        "findAndModify": "c",
        "query": {},
        "new": False,
        "update": {"$set": {"a": 1}},
        "bypassDocumentValidation": True,
        "upsert": False,
    }


def test_unacknowledged_find_one_and_delete_is_a_plain_command(core, unack):
    unack.find_one_and_delete({"a": 1})
    assert core.last.op == "command"
    assert core.last.command == {
        "findAndModify": "c",
        "query": {"a": 1},
        "new": False,
        "remove": True,
        "writeConcern": {"w": 0},
    }


def test_find_one_and_modify_checks(coll, unack):
    with pytest.raises(TypeError, match="return_document must be ReturnDocument"):
        coll.find_one_and_update({}, {"$set": {"a": 1}}, return_document=1)
    with pytest.raises(ConfigurationError, match="arrayFilters is unsupported"):
        unack.find_one_and_update({}, {"$set": {"a": 1}}, array_filters=[{"x": 1}])


# -- argument checks ---------------------------------------------------------------------------------


def test_session_argument_must_be_a_session(coll):
    with pytest.raises(ValueError, match="'session' argument must be a ClientSession"):
        coll.find({}, session=object())


@pytest.mark.parametrize("op", ["delete_one", "update_one", "aggregate"])
def test_a_write_given_a_non_session_raises_pymongos_value_error(core, coll, op):
    with pytest.raises(ValueError, match="'session' argument must be a ClientSession"):
        if op == "aggregate":
            coll.aggregate([], session=object())
        else:
            getattr(coll, op)({}, {"$set": {"a": 1}} if op == "update_one" else None, session=object())


def test_a_session_of_another_tenant_is_refused(core, coll):
    other = core.client("bob").start_session()
    with pytest.raises(InvalidOperation, match="belongs to tenant 'bob'"):
        coll.delete_one({}, session=other)
