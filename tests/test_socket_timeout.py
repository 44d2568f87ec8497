"""socketTimeoutMS: the Rust driver refuses it, so the core applies it to each attempt of an operation
(src/core/deadline.rs). An operation the server holds longer raises pymongo's NetworkTimeout, labelled
as pymongo labels it, and its connection is closed rather than handed to the next operation."""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager

import pytest
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, NetworkTimeout
from tests.helpers import wait_until

from tenantpool import AsyncUserConnectionManager, UserConnectionManager

TIMEOUT_MS = 300
BLOCK_MS = 1500


@contextmanager
def blocked(client: MongoClient, app_name: str, commands: list[str], times: int):
    """The next ``times`` of ``commands`` from ``app_name`` are held by the server for BLOCK_MS."""
    data = {"appName": app_name, "failCommands": commands, "blockConnection": True, "blockTimeMS": BLOCK_MS}
    client.admin.command("configureFailPoint", "failCommand", mode={"times": times}, data=data)
    try:
        yield
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


def held_connections(client: MongoClient, app_name: str) -> set[int]:
    """The server's ids of the app's connections that are running a command the fail point holds."""
    ops = client.admin.aggregate(
        [{"$currentOp": {"allUsers": True, "idleConnections": True}}, {"$match": {"appName": app_name}}]
    )
    return {op["connectionId"] for op in ops if "connectionId" in op and op.get("active")}


def open_connections(client: MongoClient, app_name: str) -> set[int]:
    ops = client.admin.aggregate(
        [{"$currentOp": {"allUsers": True, "idleConnections": True}}, {"$match": {"appName": app_name}}]
    )
    return {op["connectionId"] for op in ops if "connectionId" in op}


@pytest.fixture
def manager(mongodb_uri):
    app = "tp-socket-timeout"
    sep = "&" if "?" in mongodb_uri else "?"
    m = UserConnectionManager(f"{mongodb_uri}{sep}socketTimeoutMS={TIMEOUT_MS}", appName=app)
    yield m, app
    m.close_all()


def test_an_operation_outliving_socket_timeout_raises_network_timeout(manager, pymongo_client):
    m, app = manager
    coll = m.get_database("st").c
    coll.insert_one({"_id": 1})
    # A read: each attempt cut at socketTimeoutMS, and retried once, as pymongo does.
    with blocked(pymongo_client, app, ["find"], times=2):
        started = time.monotonic()
        with pytest.raises(NetworkTimeout) as read:
            coll.find_one({"_id": 1})
        took = time.monotonic() - started
    assert 2 * TIMEOUT_MS / 1000 <= took < BLOCK_MS / 1000, took
    assert f"socketTimeoutMS: {TIMEOUT_MS:.1f}ms" in str(read.value)
    assert not read.value._error_labels
    # A retryable write: both attempts cut, and the error labelled as pymongo labels it.
    writes = (lambda: coll.insert_one({"_id": 2}), lambda: coll.update_one({"_id": 1}, {"$set": {"a": 1}}))
    for write in writes:
        with blocked(pymongo_client, app, ["insert", "update"], times=2):
            with pytest.raises(NetworkTimeout) as caught:
                write()
        assert caught.value.has_error_label("RetryableWriteError")
    # A read whose retry is not held succeeds; faster operations are unaffected, on the same manager.
    with blocked(pymongo_client, app, ["find", "aggregate"], times=1):
        assert coll.find_one({"_id": 1}) is not None
    with blocked(pymongo_client, app, ["aggregate"], times=1):
        assert coll.count_documents({"_id": 1}) == 1
    assert coll.find_one({"_id": 1}) is not None


def test_the_timed_out_connection_is_closed_not_reused(manager, pymongo_client):
    m, app = manager
    coll = m.get_database("st2").c
    coll.insert_one({"_id": 1})
    with blocked(pymongo_client, app, ["find"], times=2):
        with pytest.raises(NetworkTimeout):
            coll.find_one({"_id": 1})
        # The server still holds the command, on the connection the client gave up on.
        held = wait_until(lambda: held_connections(pymongo_client, app), 5, "the held command on the server")
    assert coll.find_one({"_id": 1}) == {"_id": 1}
    # Once the server is done holding it, it finds the connection closed by the client: had the pool kept
    # it, it would still be open (idle, or serving the read above).
    wait_until(
        lambda: not (held & open_connections(pymongo_client, app)), 10, "the timed-out connection to close"
    )


def test_async_operations_time_out_too(mongodb_uri, pymongo_client):
    app = "tp-socket-timeout-async"

    async def main() -> None:
        m = AsyncUserConnectionManager(mongodb_uri, socketTimeoutMS=TIMEOUT_MS, appName=app)
        try:
            coll = m.get_database("st3").c
            await coll.insert_one({"_id": 1})
            with blocked(pymongo_client, app, ["insert"], times=2):
                with pytest.raises(NetworkTimeout) as caught:
                    await coll.insert_one({"_id": 2})
            assert caught.value.has_error_label("RetryableWriteError")
            # The server held both attempts past the timeout; whether it applied one is unknown to the
            # client, but never twice (the retry carries the same txnNumber).
            assert await coll.count_documents({"_id": 2}) <= 1
        finally:
            await m.close_all()

    asyncio.run(main())


def test_socket_timeout_options(mongodb_uri):
    sep = "&" if "?" in mongodb_uri else "?"
    # 0 and None mean no timeout, as in pymongo; a keyword overrides the URI.
    for options in ({"socketTimeoutMS": 0}, {"socketTimeoutMS": None}, {"socketTimeoutMS": 20000}):
        m = UserConnectionManager(f"{mongodb_uri}{sep}socketTimeoutMS=1", **options)
        try:
            assert m.get_database("st4").command("ping")["ok"] == 1
        finally:
            m.close_all()
    with pytest.raises(ConfigurationError, match="socketTimeoutMS"):
        UserConnectionManager(mongodb_uri, socketTimeoutMS=-5)
    with pytest.raises(ConfigurationError, match="socketTimeoutMS"):
        UserConnectionManager(f"{mongodb_uri}{sep}socketTimeoutMS=soon")
