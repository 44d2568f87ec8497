"""Transactions on a tenant's client (the replica-set test server): commit, abort, and with_transaction
retrying a callback that hits a transient error, as pymongo does."""

from __future__ import annotations

import gc

import pytest
from bson import Binary
from pymongo.client_session import SessionOptions, TransactionOptions
from pymongo.errors import ConfigurationError, InvalidOperation, OperationFailure, WriteConcernError
from pymongo.write_concern import WriteConcern

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


def test_session_options_and_properties(manager):
    db = manager.get_database("txopts")
    db.c.drop()
    client = manager.get_client("txopts")
    options = TransactionOptions(write_concern=WriteConcern(w=5, wtimeout=100))
    with client.start_session(causal_consistency=False, default_transaction_options=options) as s:
        assert isinstance(s.options, SessionOptions) and s.options.causal_consistency is False
        assert s.client == client and isinstance(s.session_id["id"], Binary)
        # The session's default write concern (w: 5, more than one node can do) applies to the commit.
        with pytest.raises(WriteConcernError), s.start_transaction():
            db.c.insert_one({"x": 1}, session=s)
        assert not s.in_transaction
        with s.start_transaction(write_concern=WriteConcern(w=1)):
            db.c.insert_one({"x": 2}, session=s)
    assert s.has_ended
    with pytest.raises(InvalidOperation, match="ended session"):
        s.session_id  # noqa: B018
    with pytest.raises(TypeError, match="TransactionOptions"):
        client.start_session(default_transaction_options={"writeConcern": {"w": 1}})
    # pymongo's rule: a snapshot session is not causally consistent.
    with pytest.raises(ConfigurationError, match="snapshot reads do not support causal_consistency=True"):
        client.start_session(snapshot=True, causal_consistency=True)


def test_ending_a_session_returns_its_lease_at_once(manager):
    """end_session lets go of the core session even while a reference cycle (an exception's traceback)
    still holds the Python session: the transaction is aborted and the lease returned without a GC."""
    db = manager.get_database("txlease")
    db.c.drop()
    db.c.insert_one({"_id": 1})
    gc.disable()
    try:
        s = manager.get_client("txlease").start_session()
        s.start_transaction()
        db.c.insert_one({"_id": 2}, session=s)
        try:
            db.c.insert_one({"_id": 1}, session=s)
        except OperationFailure as exc:
            kept = exc  # its traceback refers to frames that refer to the session
        assert manager.get_user_stats("txlease")["in_use"] == 1
        s.end_session()
        assert manager.get_user_stats("txlease")["in_use"] == 0
        assert kept is not None
    finally:
        gc.enable()
    assert db.c.count_documents({}) == 1
