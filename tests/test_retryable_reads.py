"""Reads on the command path as pymongo runs them: one retry after a network error or a retryable error
code (the core's, since the driver's generic command retries nothing), none after any other error, none
inside a transaction or with retryReads=false; and, in a causally consistent session, the read ordered
after the session's operation time (``readConcern.afterClusterTime``), which the driver adds to its typed
reads only. pymongo runs beside each case with the same fail point, so each outcome is compared with
pymongo's own, not only with what the test expects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, PyMongoError
from tests.helpers import profiled

from tenantpool import UserConnectionManager

APP = "tp-retry-reads"
PM_APP = "pm-retry-reads"

# Each read, the server command it sends, and how to run it on a collection (tenantpool's or pymongo's).
READS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "find": ("find", lambda c: c.find({"n": {"$gte": 0}}).sort("_id", 1).to_list()),
    "find_one": ("find", lambda c: c.find_one({"_id": 1})),
    "aggregate": ("aggregate", lambda c: c.aggregate([{"$sort": {"_id": 1}}]).to_list()),
    "count_documents": ("aggregate", lambda c: c.count_documents({})),
    "distinct": ("distinct", lambda c: sorted(c.distinct("n"))),
    "estimated_document_count": ("count", lambda c: c.estimated_document_count()),
}


@contextmanager
def failing(client: MongoClient, app: str, command: str, times: int, **data: Any) -> Iterator[None]:
    client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": times},
        data={"appName": app, "failCommands": [command], **data},
    )
    try:
        yield
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except PyMongoError as exc:
        return type(exc).__name__, getattr(exc, "code", None)


@pytest.fixture
def colls(mongodb_uri, pymongo_client):
    # Polling monitors, as pymongo's: a streaming monitor would see the closed connection's server
    # recover on its own schedule, not pymongo's.
    with UserConnectionManager(mongodb_uri, appName=APP, serverMonitoringMode="poll") as manager:
        tp = manager.get_database("retry_reads").c
        pm = MongoClient(mongodb_uri, appName=PM_APP)[tp.database.name].c
        pm.drop()
        pm.insert_many([{"_id": i, "n": i % 3} for i in range(5)])
        try:
            yield manager, tp, pm
        finally:
            pm.database.client.close()


@pytest.mark.parametrize("name", sorted(READS))
@pytest.mark.parametrize(
    "failure",
    [{"closeConnection": True}, {"errorCode": 91}, {"errorCode": 10107, "errorLabels": ["RetryableError"]}],
    ids=["network", "shutdown", "not-primary"],
)
def test_a_read_is_retried_exactly_once_after_a_retryable_error(colls, pymongo_client, name, failure):
    _, tp, pm = colls
    command, read = READS[name]
    expected = read(pm)
    # One failure: the retry answers.
    with failing(pymongo_client, APP, command, 1, **failure):
        assert read(tp) == expected
    # Two: the retry fails too and is reported, as pymongo reports it (a third attempt would succeed).
    with failing(pymongo_client, APP, command, 2, **failure):
        got = outcome(lambda: read(tp))
    with failing(pymongo_client, PM_APP, command, 2, **failure):
        want = outcome(lambda: read(pm))
    assert got[0] != "ok"
    assert got == want


@pytest.mark.parametrize("name", sorted(READS))
def test_other_errors_are_not_retried(colls, pymongo_client, name):
    _, tp, pm = colls
    command, read = READS[name]
    # BadValue once: a retry would have succeeded.
    with failing(pymongo_client, APP, command, 1, errorCode=2):
        got = outcome(lambda: read(tp))
    with failing(pymongo_client, PM_APP, command, 1, errorCode=2):
        want = outcome(lambda: read(pm))
    assert got == want == ("OperationFailure", 2)


def test_retry_reads_false_runs_a_read_once(mongodb_uri, pymongo_client, colls):
    with UserConnectionManager(mongodb_uri, appName=APP, retryReads=False) as manager:
        coll = manager.get_database("retry_reads").c
        for name, (command, read) in READS.items():
            with failing(pymongo_client, APP, command, 1, closeConnection=True):
                with pytest.raises(AutoReconnect):
                    read(coll)
            assert read(coll) is not None, name


def test_reads_in_a_session_are_retried_but_not_in_a_transaction(colls, pymongo_client):
    manager, tp, _ = colls
    client = manager.get_client("retry_reads")
    with client.start_session() as s:
        with failing(pymongo_client, APP, "find", 1, closeConnection=True):
            assert tp.find_one({"_id": 1}, session=s) == {"_id": 1, "n": 1}
        with failing(pymongo_client, APP, "aggregate", 1, closeConnection=True):
            assert tp.count_documents({}, session=s) == 5
        # In a transaction nothing is retried: the error ends (and aborts) the transaction.
        with pytest.raises(AutoReconnect) as raised:
            with s.start_transaction():
                with failing(pymongo_client, APP, "find", 1, closeConnection=True):
                    tp.find_one({"_id": 1}, session=s)
        assert raised.value.has_error_label("TransientTransactionError")


def test_reads_in_a_causal_session_come_after_its_operation_time(colls, pymongo_client):
    manager, tp, _ = colls
    client = manager.get_client("retry_reads")
    reads = {name: read for name, (_, read) in READS.items() if name != "estimated_document_count"}
    with profiled(pymongo_client, tp.database.name) as profile:
        with client.start_session() as s:
            tp.insert_one({"_id": 10, "n": 0}, session=s)
            times = {}
            for name, read in reads.items():
                times[name] = s.operation_time
                _in_session(read, tp, s)
        with client.start_session(causal_consistency=False) as plain:
            tp.insert_one({"_id": 11, "n": 0}, session=plain)
            tp.find_one({"_id": 11}, session=plain)
        entries = list(profile.find({"op": {"$in": ["query", "command"]}, "ns": tp.full_name}).sort("ts", 1))
    sent = [e["command"] for e in entries if e["command"].get("lsid") is not None]
    by_name = {"find": [], "aggregate": [], "distinct": []}
    for cmd in sent:
        for key in by_name:
            if key in cmd:
                by_name[key].append(cmd.get("readConcern", {}).get("afterClusterTime"))
    # find, find_one: 2 finds; aggregate, count_documents: 2 aggregates; distinct: 1. Each after the time
    # the session had when it was sent; the non-causal session's find carries none.
    assert by_name["find"][:2] == [times["find"], times["find_one"]]
    assert by_name["find"][2] is None
    assert by_name["aggregate"] == [times["aggregate"], times["count_documents"]]
    assert by_name["distinct"] == [times["distinct"]]
    assert all(t is not None for t in times.values())


def _in_session(read: Callable[[Any], Any], coll: Any, session: Any) -> Any:
    """Runs one of READS in ``session``: each takes it as a keyword, find and aggregate too."""

    class InSession:
        def __getattr__(self, name: str) -> Any:
            method = getattr(coll, name)
            return lambda *a, **k: method(*a, session=session, **k)

    return read(InSession())
