"""Transactions on a tenant's client (the replica-set test server): commit, abort, and with_transaction
retrying a callback that hits a transient error, as pymongo does."""

from __future__ import annotations

import pytest
from pymongo.errors import InvalidOperation, OperationFailure

from tenantpool import UserConnectionManager


@pytest.fixture
def manager(mongodb_uri):
    with UserConnectionManager(mongodb_uri, appName="tp-transactions") as m:
        yield m


def test_commit_and_abort(manager):
    db = manager.get_database("tx")
    db.accounts.drop()
    db.accounts.insert_many([{"_id": "a", "balance": 100}, {"_id": "b", "balance": 0}])
    client = manager.get_client("tx")
    with client.start_session() as s:
        with s.start_transaction():
            db.accounts.update_one({"_id": "a"}, {"$inc": {"balance": -30}}, session=s)
            db.accounts.update_one({"_id": "b"}, {"$inc": {"balance": 30}}, session=s)
            # Not visible outside the transaction before the commit.
            assert db.accounts.find_one({"_id": "b"})["balance"] == 0
        assert not s.in_transaction
    assert [d["balance"] for d in db.accounts.find().sort("_id")] == [70, 30]

    with client.start_session() as s:
        s.start_transaction()
        db.accounts.update_one({"_id": "a"}, {"$inc": {"balance": -70}}, session=s)
        s.abort_transaction()
    assert db.accounts.find_one({"_id": "a"})["balance"] == 70

    with pytest.raises(ZeroDivisionError), client.start_session() as s, s.start_transaction():
        db.accounts.update_one({"_id": "a"}, {"$set": {"balance": -1}}, session=s)
        1 / 0  # noqa: B018
    assert db.accounts.find_one({"_id": "a"})["balance"] == 70


def test_with_transaction_retries_a_transient_error(manager, pymongo_client):
    db = manager.get_database("txretry")
    db.items.drop()
    db.create_collection("items")
    # The server fails the first insert inside the transaction with a TransientTransactionError label.
    pymongo_client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={
            "failCommands": ["insert"],
            "errorCode": 112,
            "errorLabels": ["TransientTransactionError"],
            "appName": "tp-transactions",
        },
    )
    calls = []

    def callback(session):
        calls.append(1)
        db.items.insert_one({"attempt": len(calls)}, session=session)
        return "done"

    try:
        with manager.get_client("txretry").start_session() as s:
            assert s.with_transaction(callback) == "done"
    finally:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
    assert len(calls) == 2, "the callback was not retried after the transient error"
    assert [d["attempt"] for d in db.items.find()] == [2]


def test_non_transient_errors_abort_and_propagate(manager):
    db = manager.get_database("txfail")
    db.items.drop()
    db.items.insert_one({"_id": 1})

    def callback(session):
        db.items.insert_one({"_id": 2}, session=session)
        db.items.insert_one({"_id": 1}, session=session)  # duplicate key: not transient

    with manager.get_client("txfail").start_session() as s:
        with pytest.raises(OperationFailure) as info:
            s.with_transaction(callback)
        assert info.value.code == 11000
        assert not s.in_transaction
    assert db.items.count_documents({}) == 1


def test_a_session_belongs_to_its_tenant(manager):
    s = manager.get_client("owner").start_session()
    with pytest.raises(InvalidOperation, match="belongs to tenant"):
        manager.get_database("intruder").c.insert_one({}, session=s)
    s.end_session()
    with pytest.raises(InvalidOperation):
        manager.get_database("owner").c.insert_one({}, session=s)
