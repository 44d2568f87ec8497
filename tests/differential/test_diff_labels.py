"""Differential cases: the errors of retryable operations whose retry fails too, with their labels.

Applications and frameworks decide whether to retry from ``has_error_label()``, so each case compares,
besides class, ``code`` and ``details``, the labels of what is raised (``_harness.Raised.labels``) after
a fail point made the first attempt and the retry fail: a closed connection, not-primary and shutdown
codes (which make both drivers mark the server unknown and select it again), server-given labels
(``NoWritesPerformed``: the first error is reported), and retryable write concern errors.

Each operation runs under a fail point of its own, ``times`` = 2 (the attempt and the retry), switched off
again before the next one, so an operation never sees another's leftover failure.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from _harness import attempt, collect_cases, ids, params
from pymongo import DeleteOne, InsertOne, UpdateOne

# (the command the fail point targets, the operation) for every retryable kind pymongo labels.
OPERATIONS = (
    ("insert", lambda db: db.c.insert_one({"_id": 100})),
    ("insert", lambda db: db.c.insert_many([{"_id": 101}, {"_id": 102}])),
    ("insert", lambda db: db.c.bulk_write([InsertOne({"_id": 103}), InsertOne({"_id": 104})])),
    ("update", lambda db: db.c.bulk_write([UpdateOne({"_id": 1}, {"$inc": {"n": 1}})], ordered=False)),
    ("delete", lambda db: db.c.bulk_write([DeleteOne({"_id": 2})])),
    ("update", lambda db: db.c.update_one({"_id": 1}, {"$inc": {"n": 1}})),
    ("delete", lambda db: db.c.delete_one({"_id": 3})),
    ("find", lambda db: db.c.find_one({"_id": 1})),
)


@contextmanager
def fail_point(db, data, times):
    admin = db.client.admin
    admin.command({"configureFailPoint": "failCommand", "mode": {"times": times}, "data": data})
    try:
        yield
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def each_failing(db, data, times=2, commands=None):
    """Every operation of ``OPERATIONS`` (those on ``commands`` if given) under its own fail point."""
    db.c.insert_many([{"_id": i, "n": 0} for i in range(10)])
    outcomes = []
    for command, operation in OPERATIONS:
        if commands is not None and command not in commands:
            continue
        with fail_point(db, {"failCommands": [command], **data}, times):
            outcomes.append(attempt(lambda operation=operation: operation(db)))
    return (*outcomes, db.c.find_one({"_id": 1}), db.c.count_documents({}))


def case_closed_connection_twice(db):
    return each_failing(db, {"closeConnection": True})


def case_not_writable_primary_twice(db):
    return each_failing(db, {"errorCode": 10107})


def case_shutdown_in_progress_twice(db):
    return each_failing(db, {"errorCode": 91})


def case_interrupted_at_shutdown_twice(db):
    return each_failing(db, {"errorCode": 11600})


def case_three_times(db):
    # One failure more than the retry: the third attempt never happens, on either side.
    return each_failing(db, {"errorCode": 10107}, times=3)


def case_no_writes_performed_reports_the_first_error(db):
    labels = ["RetryableWriteError", "NoWritesPerformed"]
    return each_failing(db, {"errorCode": 10107, "errorLabels": labels})


def case_server_labels_pass_through(db):
    # Labels the server gives are kept as they are, retryable or not (no retry without RetryableWriteError).
    labels = ["TransientTransactionError", "ResetPool"]
    return each_failing(db, {"errorCode": 112, "errorLabels": labels})


def case_retryable_write_concern_error_twice(db):
    wce = {"code": 91, "codeName": "ShutdownInProgress", "errmsg": "Replication is being shut down"}
    data = {"writeConcernError": wce, "errorLabels": ["RetryableWriteError"]}
    return each_failing(db, data, commands=("insert", "update", "delete"))


CASES = collect_cases(globals())
KNOWN: dict[str, str] = {}


@pytest.mark.parametrize("case", params(CASES, KNOWN), ids=ids(CASES))
def test_labels(differ, case):
    # Polling, on both sides (tenantpool's default): after a shutdown error pymongo's streaming monitor
    # leaves the server unselectable for 10 s, which would make these cases take minutes.
    differ.check(case, serverMonitoringMode="poll")
