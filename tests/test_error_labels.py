"""Error labels on the async API: the differential suite (tests/differential/test_diff_labels.py) compares
the sync API's labels with pymongo's; the async operations run the same generators on the awaitable core
calls, and these check that the labels reach their exceptions too, on the core's retryable writes (raw
commands) and on the driver's typed operations."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager

import pytest
from pymongo import InsertOne
from pymongo.errors import AutoReconnect, NotPrimaryError

from tenantpool import AsyncUserConnectionManager

APP = "tp-labels-async"


@contextmanager
def failing(client, commands: list[str], times: int, **data):
    client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": times},
        data={"appName": APP, "failCommands": commands, **data},
    )
    try:
        yield
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


def test_async_errors_carry_pymongo_labels_after_a_failed_retry(mongodb_uri, pymongo_client):
    async def main() -> dict[str, tuple[type, set[str]]]:
        m = AsyncUserConnectionManager(mongodb_uri, appName=APP, serverMonitoringMode="poll")
        seen: dict[str, tuple[type, set[str]]] = {}
        try:
            coll = m.get_database("labels_async").c
            await coll.insert_one({"_id": 1, "n": 0})
            operations = {
                "insert_one": ("insert", lambda: coll.insert_one({"_id": 2})),
                "bulk_write": ("insert", lambda: coll.bulk_write([InsertOne({"_id": 3})])),
                "update_one": ("update", lambda: coll.update_one({"_id": 1}, {"$inc": {"n": 1}})),
                "find_one": ("find", lambda: coll.find_one({"_id": 1})),
            }
            for name, (command, operation) in operations.items():
                with failing(pymongo_client, [command], 2, closeConnection=True):
                    try:
                        await operation()
                    except AutoReconnect as exc:
                        seen[name] = (type(exc), set(exc._error_labels))
            with failing(pymongo_client, ["insert"], 2, errorCode=10107):
                try:
                    await coll.insert_one({"_id": 4})
                except NotPrimaryError as exc:
                    seen["not_primary"] = (type(exc), set(exc._error_labels))
                    assert exc.details["errorLabels"] == ["RetryableWriteError"]
        finally:
            await m.close_all()
        return seen

    seen = asyncio.run(main())
    retryable = {"RetryableWriteError"}
    assert seen == {
        "insert_one": (AutoReconnect, retryable),
        "bulk_write": (AutoReconnect, retryable),
        "update_one": (AutoReconnect, retryable),
        # pymongo labels no read.
        "find_one": (AutoReconnect, set()),
        "not_primary": (NotPrimaryError, retryable),
    }


@pytest.mark.parametrize("labels", [["RetryableWriteError", "NoWritesPerformed"], ["ResetPool"]])
def test_async_server_labels_pass_through(mongodb_uri, pymongo_client, labels):
    async def main() -> set[str]:
        m = AsyncUserConnectionManager(mongodb_uri, appName=APP)
        try:
            coll = m.get_database("labels_async2").c
            with failing(pymongo_client, ["insert"], 2, errorCode=10107, errorLabels=labels):
                with pytest.raises(NotPrimaryError) as caught:
                    await coll.insert_one({"_id": 1})
            return set(caught.value._error_labels)
        finally:
            await m.close_all()

    assert asyncio.run(main()) == set(labels)
