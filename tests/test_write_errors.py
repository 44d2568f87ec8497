"""A refused write's exception carries the server's whole writeErrors entry as pymongo's does, so an app can
read ``keyPattern`` / ``keyValue`` to tell which unique field collided. The differential suite compares only
the keys both sides have; this compares the whole ``details``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from tenantpool import AsyncUserConnectionManager, UserConnectionManager


def neutral(details: Any, db_name: str) -> Any:
    """``details`` with the database's name (which errmsg holds) replaced, and index types unified."""
    if isinstance(details, dict):
        return {k: neutral(v, db_name) for k, v in details.items()}
    if isinstance(details, list):
        return [neutral(v, db_name) for v in details]
    if isinstance(details, str):
        return details.replace(db_name, "<db>")
    if isinstance(details, int) and not isinstance(details, bool):
        return int(details)
    return details


def prepare(db) -> None:
    db.users.drop()
    db.users.create_index("email", unique=True)
    db.users.insert_many([{"_id": 1, "email": "a@x"}, {"_id": 2, "email": "b@x"}])
    db.strict.drop()
    db.create_collection("strict", validator={"age": {"$type": "int"}})


def failures(db) -> list[tuple[str, Any]]:
    """Each refused write's exception class and details."""
    attempts = [
        lambda: db.users.insert_one({"email": "a@x"}),
        lambda: db.users.insert_one({"_id": 2}),
        lambda: db.users.update_one({"_id": 2}, {"$set": {"email": "a@x"}}),
        lambda: db.users.replace_one({"_id": 2}, {"email": "a@x"}),
        lambda: db.users.update_one({"_id": 9}, {"$set": {"email": "b@x"}}, upsert=True),
        lambda: db.strict.insert_one({"_id": 3, "age": "old"}),
        lambda: db.users.insert_many([{"_id": 4, "email": "c@x"}, {"_id": 5, "email": "a@x"}]),
        lambda: db.users.insert_many([{"_id": 1}, {"_id": 6}, {"_id": 2}], ordered=False),
        lambda: db.users.bulk_write(
            [InsertOne({"email": "b@x"}), UpdateOne({"_id": 1}, {"$set": {"email": "c@x"}})], ordered=False
        ),
    ]
    seen = []
    for attempt in attempts:
        with pytest.raises((DuplicateKeyError, WriteError, BulkWriteError)) as info:
            attempt()
        details = dict(info.value.details)
        if isinstance(info.value, BulkWriteError):
            # Generated ids differ between the two runs.
            for entry in details["writeErrors"]:
                entry["op"] = {k: v for k, v in entry["op"].items() if k != "_id"} if "op" in entry else None
        seen.append((type(info.value).__name__, neutral(details, db.name)))
    return seen


def test_write_errors_carry_the_servers_entry_like_pymongo(mongodb_uri, pymongo_client):
    reference = pymongo_client["tp_write_errors_reference"]
    prepare(reference)
    expected = failures(reference)
    with UserConnectionManager(mongodb_uri) as manager:
        db = manager.get_database("write_errors")
        prepare(db)
        got = failures(db)
    for (exp_cls, exp), (got_cls, details) in zip(expected, got, strict=True):
        assert got_cls == exp_cls
        assert details == exp
    # The point of it: which unique field collided, and with what.
    assert got[0][1]["keyPattern"] == {"email": 1}
    assert got[0][1]["keyValue"] == {"email": "a@x"}


def test_async_insert_one_duplicate_key_details(mongodb_uri):
    async def main() -> dict[str, Any]:
        async with AsyncUserConnectionManager(mongodb_uri) as manager:
            db = manager.get_database("write_errors_async")
            await db.users.drop()
            await db.users.create_index("email", unique=True)
            await db.users.insert_one({"email": "a@x"})
            with pytest.raises(DuplicateKeyError) as info:
                await db.users.insert_one({"email": "a@x"})
            return info.value.details

    details = asyncio.run(main())
    assert details["keyPattern"] == {"email": 1} and details["keyValue"] == {"email": "a@x"}
    assert details["code"] == 11000 and details["index"] == 0
