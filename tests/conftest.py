from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import pytest
from pymongo import MongoClient

try:
    from tenantpool.testing import mongod as _mongod
except ImportError:
    # The extension isn't built yet; the harness itself doesn't need it.
    _path = Path(__file__).resolve().parents[1] / "python" / "tenantpool" / "testing" / "mongod.py"
    _spec = importlib.util.spec_from_file_location("_tenantpool_testing_mongod", _path)
    _mongod = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _mongod
    _spec.loader.exec_module(_mongod)


@pytest.fixture(scope="session")
def mongodb_uri():
    """$MONGODB_URI if set, else a throwaway single-node replica set."""
    uri = _mongod.server_uri()
    if uri:
        yield uri
        return
    with _mongod.MongodProcess() as server:
        yield server.uri


@pytest.fixture(scope="session")
def pymongo_client(mongodb_uri):
    client = MongoClient(mongodb_uri)
    yield client
    client.close()


@pytest.fixture
def server_connections(pymongo_client):
    """Call to get the server's current connection count (includes the
    connections of ``pymongo_client`` itself, so compare deltas)."""

    def current() -> int:
        return pymongo_client.admin.command("serverStatus")["connections"]["current"]

    return current


@pytest.fixture
def replica_set():
    """A fresh 3-member replica set (member 0 preferred primary), for
    failover tests; ~3 s to start."""
    with _mongod.ReplicaSet(3) as rs:
        yield rs


@pytest.fixture(scope="session")
def auth_mongod():
    """A single-node replica set started with ``--auth`` and a keyFile; its ``uri`` carries the
    credentials of a root user created through the localhost exception (tests/test_auth.py)."""
    with _mongod.MongodProcess(auth=True) as server:
        yield server


@pytest.fixture
def db_name(request, pymongo_client):
    """A database name of this test's own (after its module's name), the database dropped afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"{module}_{uuid.uuid4().hex[:12]}"
    yield name
    pymongo_client.drop_database(name)
