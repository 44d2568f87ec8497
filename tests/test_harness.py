"""The real-mongod test harness itself works."""

from __future__ import annotations

import time

import pytest
from pymongo import MongoClient


def test_server_is_replica_set_primary(pymongo_client):
    hello = pymongo_client.admin.command("hello")
    assert hello["isWritablePrimary"]
    assert hello["setName"]


def test_server_connections_counts_new_clients(mongodb_uri, server_connections):
    before = server_connections()
    with MongoClient(mongodb_uri) as client:
        client.admin.command("ping")
        assert server_connections() > before


def test_fail_point_blocks_only_matching_app(mongodb_uri, pymongo_client):
    pymongo_client.harness.items.insert_one({"x": 1})
    pymongo_client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode="alwaysOn",
        data={
            "failCommands": ["find"],
            "blockConnection": True,
            "blockTimeMS": 300,
            "appName": "harness-test",
        },
    )
    try:
        with MongoClient(mongodb_uri, appName="harness-test") as client:
            client.admin.command("ping")  # connect outside the timed part
            start = time.monotonic()
            assert client.harness.items.find_one({"x": 1}) is not None
            assert time.monotonic() - start >= 0.25
        start = time.monotonic()
        pymongo_client.harness.items.find_one({"x": 1})
        assert time.monotonic() - start < 0.25  # other appNames are unaffected
    finally:
        pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.mark.slow
def test_replica_set_elects_new_primary_after_kill(replica_set):
    rs = replica_set
    first = rs.primary_port()
    assert first == rs.ports[0]  # highest priority
    with MongoClient(rs.uri, w="majority") as client:
        client.harness.items.insert_one({"before": True})
        rs.kill(first)
        second = rs.primary_port(timeout=30)
        assert second != first
        client.harness.items.insert_one({"after": True})
        assert client.harness.items.count_documents({}) == 2
    rs.restart(first)
    rs.wait_healthy()
