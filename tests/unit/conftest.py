"""Fixtures of the server-free tests: a fake core and a tenant's database and collection around it."""

from __future__ import annotations

import pytest
from tests.unit.fakecore import FakeCore


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def db(core):
    return core.database()


@pytest.fixture
def coll(db):
    return db.c
