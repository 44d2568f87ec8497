"""Database operations and collection administration without a server: what is sent, and what is
decided before sending."""

from __future__ import annotations

import pytest
from bson.dbref import DBRef
from pymongo.errors import CollectionInvalid, ConfigurationError
from pymongo.write_concern import WriteConcern
from tests.unit.fakecore import FakeRawCursor


def test_create_collection_refuses_an_existing_one(core, db):
    core.reply([[{"name": "c", "type": "collection"}]])
    with pytest.raises(CollectionInvalid, match="collection c already exists"):
        db.create_collection("c")
    assert [c.command for c in core.sent()] == [
        {"listCollections": 1, "cursor": {}, "filter": {"name": "c"}, "nameOnly": True}
    ]


def test_create_collection_in_a_transaction_skips_the_check(core, db):
    session = db.client.start_session()
    with session.start_transaction():
        db.create_collection("c", session=session, collation={"locale": "fr"})
    create = core.calls[1]
    assert create.command == {"create": "c", "collation": {"locale": "fr"}}
    assert create.session is not None


def test_create_collection_refuses_encrypted_fields(core, db):
    with pytest.raises(ConfigurationError, match="queryable encryption"):
        db.create_collection("c", check_exists=False, encryptedFields={"fields": []})
    assert core.calls == []


def test_drop_collection_with_the_databases_write_concern(core, db):
    db.with_options(write_concern=WriteConcern(w=1)).drop_collection(db.c, comment="x")
    assert core.last.command == {"drop": "c", "comment": "x", "writeConcern": {"w": 1}}
    with pytest.raises(TypeError, match="name_or_collection must be"):
        db.drop_collection(5)


def test_collection_drop_uses_the_collections_write_concern(core, db):
    db.get_collection("c", write_concern=WriteConcern(w="majority")).drop()
    assert core.last.command == {"drop": "c", "writeConcern": {"w": "majority"}}


def test_list_collection_names_with_a_filter(core, db):
    core.reply([[{"name": "a", "type": "collection", "options": {}, "info": {}}]])
    assert db.list_collection_names(filter={"name": "a"}) == ["a"]
    assert core.calls[0].command == {
        "listCollections": 1,
        "cursor": {},
        "filter": {"name": "a"},
        "nameOnly": True,
    }


def test_list_collections_keeps_whole_documents(core, db):
    doc = {"name": "a", "type": "collection", "options": {"capped": True}}
    core.reply([[doc]])
    assert db.list_collections().to_list() == [doc]


def test_list_collections_with_server_options_is_the_command(core, db):
    db.list_collections(authorizedCollections=True).to_list()
    assert core.sent()[-1].command == {"listCollections": 1, "cursor": {}, "authorizedCollections": True}


def test_collection_options(core, coll):
    core.reply([[{"name": "c", "type": "collection", "options": {"capped": True, "size": 4096}}]])
    assert coll.options() == {"capped": True, "size": 4096}
    assert core.calls[0].command == {"listCollections": 1, "cursor": {}, "filter": {"name": "c"}}
    assert coll.options() == {}


def test_validate_collection(core, db):
    core.reply({"valid": True, "ok": 1})
    assert db.validate_collection("c", full=True)["valid"]
    assert core.last.command == {"validate": "c", "scandata": False, "full": True}
    core.reply({"valid": False, "ok": 1})
    with pytest.raises(CollectionInvalid, match="c invalid"):
        db.validate_collection(db.c)


def test_dereference(core, db):
    core.reply([[{"_id": 1, "a": 2}]])
    assert db.dereference(DBRef("c", 1)) == {"_id": 1, "a": 2}
    assert core.last.op == "command" and core.last.command["filter"] == {"_id": 1}
    with pytest.raises(ValueError, match="points to another database"):
        db.dereference(DBRef("c", 1, "other"))
    with pytest.raises(TypeError, match="cannot dereference"):
        db.dereference({"$ref": "c", "$id": 1})


def test_the_tenants_default_database_is_the_cores(core):
    assert core.client().get_database().name == "alice_db"


def test_index_information_from_the_listing(core, coll):
    core.reply(
        FakeRawCursor(
            [{"v": 2, "key": {"_id": 1}, "name": "_id_"}, {"v": 2, "key": {"a": -1}, "name": "a_-1"}]
        )
    )
    assert coll.index_information() == {
        "_id_": {"v": 2, "key": [("_id", 1)]},
        "a_-1": {"v": 2, "key": [("a", -1)]},
    }


def test_database_aggregate_command_is_on_the_database(core, db):
    db.aggregate([{"$documents": [{"a": 1}]}], other=True)
    assert core.last.command == {
        "aggregate": 1,
        "pipeline": [{"$documents": [{"a": 1}]}],
        "other": True,
        "cursor": {},
    }
