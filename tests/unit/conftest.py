"""Fixtures of the server-free tests: a fake core and a tenant's database and collection around it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.fakecore import FakeCore

HERE = Path(__file__).resolve().parent
# tests/conftest.py's fixtures that start or reach a mongod.
SERVER_FIXTURES = {"mongodb_uri", "pymongo_client", "server_connections", "replica_set", "auth_mongod"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/unit must run in seconds without a server: a test there that asks for one is a mistake."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            wanted = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            if wanted:
                raise pytest.UsageError(f"{item.nodeid} is a unit test but uses {sorted(wanted)}")


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def db(core):
    return core.database()


@pytest.fixture
def coll(db):
    return db.c
