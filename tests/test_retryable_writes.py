"""bulk_write as a retryable write, as pymongo runs it: numbered with a session's lsid and txnNumber, retried
once after a network error, applied at most once. The differential cases (tests/differential/
test_diff_errors.py) compare the outcomes with pymongo's; these check what they cannot see: the numbering on
the wire, concurrent batches, sessions handed back when pools close, retryWrites=false and standalone
servers."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from pymongo import DeleteOne, InsertOne, MongoClient, UpdateMany, UpdateOne
from pymongo.errors import AutoReconnect, PyMongoError
from tests.helpers import app_connections, profiled, wait_until

from tenantpool import UserConnectionManager
from tenantpool.testing.mongod import MongodProcess


@contextmanager
def fail_point(client: MongoClient, app_name: str, times: int, **data):
    client.admin.command(
        "configureFailPoint", "failCommand", mode={"times": times}, data={"appName": app_name, **data}
    )
    try:
        yield
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


def test_batches_carry_a_session_and_increasing_transaction_numbers(mongodb_uri, pymongo_client):
    with UserConnectionManager(mongodb_uri, appName="tp-retry-numbers") as manager:
        db = manager.get_database("numbers")
        db.c.drop()
        with profiled(pymongo_client, db.name) as profile:
            for i in range(3):
                db.c.bulk_write([InsertOne({"_id": i}), UpdateOne({"_id": i}, {"$set": {"x": i}})])
            db.c.bulk_write([InsertOne({"_id": 3}), UpdateMany({}, {"$inc": {"y": 1}})])
            inserts = [p["command"] for p in profile.find({"op": "insert"}).sort("ts", 1)]
    # The profiler shows an update's statements, not its command: the inserts show the numbering.
    assert [c["documents"][0]["_id"] for c in inserts] == [0, 1, 2, 3]
    # A bulk holding an UpdateMany is not a retryable write (pymongo's rule): its insert is not numbered.
    assert "txnNumber" not in inserts[3]
    # One thread, one session; each batch (insert, then update) takes the next number, far above any number
    # the driver may have used on the session before.
    assert len({repr(c["lsid"]) for c in inserts[:3]}) == 1
    numbers = [c["txnNumber"] for c in inserts[:3]]
    assert numbers == [numbers[0], numbers[0] + 2, numbers[0] + 4] and numbers[0] > 2**32


def test_concurrent_bulk_writes_never_share_a_transaction_number(mongodb_uri, pymongo_client):
    with UserConnectionManager(mongodb_uri, user_pool_size=8, appName="tp-retry-concurrent") as manager:
        db = manager.get_database("concurrent")
        db.c.drop()
        db.c.insert_one({"_id": "counter", "n": 0})
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def work(t: int) -> None:
            start.wait()
            try:
                for i in range(10):
                    db.c.bulk_write(
                        [InsertOne({"_id": f"{t}-{i}"}), UpdateOne({"_id": "counter"}, {"$inc": {"n": 1}})],
                        ordered=(i % 2 == 0),
                    )
            except BaseException as e:
                errors.append(e)

        with profiled(pymongo_client, db.name) as profile:
            threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            inserts = [p["command"] for p in profile.find({"op": "insert"})]
        assert errors == []
        assert db.c.count_documents({}) == 81
        assert db.c.find_one({"_id": "counter"})["n"] == 80
        # A session is lent to one batch at a time, so no (lsid, txnNumber) is ever sent twice, and no more
        # sessions are kept than batches ran at once. (The profiler shows an update's statements, not its
        # command, so the inserts stand for all.)
        keys = [(repr(c["lsid"]), c["txnNumber"]) for c in inserts if "txnNumber" in c]
        assert len(keys) == 80 and len(set(keys)) == 80
        assert len({lsid for lsid, _ in keys}) <= 8


def test_a_write_applied_before_its_reply_was_lost_is_not_applied_again(mongodb_uri, pymongo_client):
    app = "tp-retry-once"
    with UserConnectionManager(mongodb_uri, appName=app) as manager:
        db = manager.get_database("once")
        db.c.drop()
        db.c.insert_one({"_id": 1, "n": 0})
        # The server applies the update, then answers with a retryable write concern error: the retry must be
        # recognised by its txnNumber and answered from the server's record.
        with fail_point(
            pymongo_client,
            app,
            1,
            failCommands=["update"],
            writeConcernError={"code": 91, "errmsg": "Replication is being shut down"},
            errorLabels=["RetryableWriteError"],
        ):
            result = db.c.bulk_write([UpdateOne({"_id": 1}, {"$inc": {"n": 1}})])
        assert result.modified_count == 1
        assert db.c.find_one({"_id": 1})["n"] == 1


def test_retry_writes_false_sends_each_batch_once(mongodb_uri, pymongo_client):
    app = "tp-retry-off"
    with UserConnectionManager(mongodb_uri, appName=app, retryWrites=False) as manager:
        db = manager.get_database("off")
        db.c.drop()
        with profiled(pymongo_client, db.name) as profile:
            with fail_point(pymongo_client, app, 1, failCommands=["insert"], closeConnection=True):
                with pytest.raises(AutoReconnect):
                    db.c.bulk_write([InsertOne({"_id": 1})])
            db.c.bulk_write([InsertOne({"_id": 2})])
            sent = list(profile.find({"op": "insert"}))
        assert db.c.distinct("_id") == [2]
        assert [("txnNumber" in s["command"]) for s in sent] == [False]


def test_bulk_write_in_a_session_outside_a_transaction_runs_in_that_session(mongodb_uri, pymongo_client):
    with UserConnectionManager(mongodb_uri, appName="tp-retry-session") as manager:
        db = manager.get_database("insession")
        db.c.drop()
        with profiled(pymongo_client, db.name) as profile:
            with manager.get_client("insession").start_session() as s:
                db.c.bulk_write([InsertOne({"_id": 1}), DeleteOne({"_id": 2})], session=s)
                lsid = s.session_id
            sent = list(profile.find({"op": "insert"}))
        assert len(sent) == 1 and sent[0]["command"]["lsid"] == lsid
        assert "txnNumber" not in sent[0]["command"]
        assert db.c.count_documents({}) == 1


@pytest.mark.parametrize("strategy", ["per_user", "grouped"])
def test_closing_pools_hands_back_the_retry_sessions(mongodb_uri, pymongo_client, strategy):
    # The driver's shutdown waits for every session to be dropped: a session kept for retryable writes that
    # was not handed back would keep the client's connections open forever.
    app = f"tp-retry-close-{strategy}"
    manager = UserConnectionManager(mongodb_uri, strategy=strategy, appName=app)
    barrier = threading.Barrier(6)

    def work(t: int) -> None:
        db = manager.get_database(f"close{t % 3}")
        barrier.wait()
        for i in range(5):
            db.c.bulk_write([InsertOne({"t": t, "i": i})])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert app_connections(pymongo_client, app) > 0
    manager.close_all()
    wait_until(lambda: app_connections(pymongo_client, app) == 0, 15, "the closed clients' connections to go")


def test_a_standalone_server_takes_bulk_writes_without_retries():
    with MongodProcess(replset=None) as mongod, UserConnectionManager(mongod.uri) as manager:
        db = manager.get_database("alone")
        # The first batch learns that the server refuses transaction numbers and is sent again without one;
        # later ones go without at once.
        for i in range(3):
            result = db.c.bulk_write([InsertOne({"_id": i}), UpdateOne({"_id": i}, {"$set": {"x": i}})])
            assert (result.inserted_count, result.modified_count) == (1, 1)
        assert sorted(db.c.distinct("x")) == [0, 1, 2]


# Every single-document write outside a session is pymongo's command, numbered and retried by the core:
# name -> (server command, the write on a collection, the value of document 1's n after one application).
SINGLE_WRITES = {
    "update_one": ("update", lambda c: c.update_one({"_id": 1}, {"$inc": {"n": 1}}), 1),
    "replace_one": ("update", lambda c: c.replace_one({"_id": 1}, {"n": 5}), 5),
    "delete_one": ("delete", lambda c: c.delete_one({"_id": 1}), None),
    "find_one_and_update": (
        "findAndModify",
        lambda c: c.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}),
        1,
    ),
    "find_one_and_replace": ("findAndModify", lambda c: c.find_one_and_replace({"_id": 1}, {"n": 5}), 5),
    "find_one_and_delete": ("findAndModify", lambda c: c.find_one_and_delete({"_id": 1}), None),
}


def _n_of_one(pymongo_coll):
    doc = pymongo_coll.find_one({"_id": 1})
    return None if doc is None else doc["n"]


@pytest.mark.parametrize("name", sorted(SINGLE_WRITES))
def test_single_writes_are_retried_once_and_applied_once(mongodb_uri, pymongo_client, name):
    command, write, after = SINGLE_WRITES[name]
    app = "tp-retry-single"
    with UserConnectionManager(mongodb_uri, appName=app, serverMonitoringMode="poll") as manager:
        coll = manager.get_database("single").c
        theirs = pymongo_client[coll.database.name].c
        theirs.drop()
        theirs.insert_one({"_id": 1, "n": 0})
        # The server applies the write, then the reply is lost with its connection: the retry, under the
        # same txnNumber, is answered from the server's record instead of applied again.
        with fail_point(pymongo_client, app, 1, failCommands=[command], closeConnection=True):
            write(coll)
        assert _n_of_one(theirs) == after
        # Two failures: the retry's error is reported, labelled as pymongo labels it.
        theirs.replace_one({"_id": 1}, {"n": 0}, upsert=True)
        with fail_point(
            pymongo_client, app, 2, failCommands=[command], errorCode=91, errorLabels=["RetryableWriteError"]
        ):
            with pytest.raises(PyMongoError) as raised:
                write(coll)
        assert raised.value.has_error_label("RetryableWriteError")
        assert _n_of_one(theirs) == 0


def test_multi_document_writes_are_not_retried(mongodb_uri, pymongo_client):
    app = "tp-retry-multi"
    with UserConnectionManager(mongodb_uri, appName=app, serverMonitoringMode="poll") as manager:
        coll = manager.get_database("multi").c
        coll.drop()
        coll.insert_many([{"_id": i, "n": 0} for i in range(3)])
        for command, write in [
            ("update", lambda: coll.update_many({}, {"$inc": {"n": 1}})),
            ("delete", lambda: coll.delete_many({"_id": 0})),
        ]:
            # A retry would succeed; pymongo does not retry a multi-document write, nor does tenantpool.
            with fail_point(
                pymongo_client,
                app,
                1,
                failCommands=[command],
                errorCode=91,
                errorLabels=["RetryableWriteError"],
            ):
                with pytest.raises(PyMongoError):
                    write()
        assert sorted(d["n"] for d in coll.find()) == [0, 0, 0]
