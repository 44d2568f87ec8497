"""Shared by tests/test_placement.py and tests/test_move.py: two single-node replica sets and their
pymongo clients (each module has its own pair, through fixtures of its own), and small helpers."""

from __future__ import annotations

import statistics
from collections.abc import Iterator

from pymongo import MongoClient
from tests import helpers

from tenantpool.testing.mongod import MongodProcess


def two_servers() -> Iterator[tuple[MongodProcess, MongodProcess]]:
    with MongodProcess() as a, MongodProcess() as b:
        yield a, b


def clients_of(servers) -> Iterator[tuple[MongoClient, MongoClient]]:
    a, b = (MongoClient(s.uri) for s in servers)
    yield a, b
    a.close()
    b.close()


def wait_until(condition, timeout=10.0, what="the condition"):
    # The other manager's catalog watcher reacts on its own thread: nothing to await from here.
    return helpers.wait_until(condition, timeout, what, every=0.01)


def p99(samples):
    return statistics.quantiles(samples, n=100)[98]
