"""The isolation scope applied by the operations themselves (no server): what leaves the tenant's scope is
refused before anything is sent, and ``listDatabases`` is narrowed to the tenant's databases."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from tenantpool._isolation import IsolationScope


@pytest.fixture
def scoped(core):
    return core.database("user_alice_db", scope=IsolationScope(lambda user_id: f"user_{user_id}_db", None))


def refused(core, fn, *args, **kwargs):
    with pytest.raises(OperationFailure) as info:
        fn(*args, **kwargs)
    assert info.value.code == 13
    assert core.calls == []


def test_the_tenants_own_database_works(core, scoped):
    scoped.c.insert_one({"_id": 1})
    scoped.command("ping")
    assert [c.db for c in core.calls] == ["user_alice_db", "user_alice_db"]


def test_another_tenants_database_is_refused_at_the_handle(core):
    client = core.client(scope=IsolationScope(lambda user_id: f"user_{user_id}_db", None))
    with pytest.raises(OperationFailure):
        client["user_bob_db"]
    assert core.calls == []


def test_pipelines_naming_another_database_are_refused(core, scoped):
    refused(core, scoped.c.aggregate, [{"$out": {"db": "user_bob_db", "coll": "x"}}])
    refused(core, scoped.c.aggregate, [{"$lookup": {"from": {"db": "other", "coll": "x"}, "as": "y"}}])
    refused(core, scoped.c.aggregate, [{"$merge": {"into": {"db": "other", "coll": "x"}}}], other=1)


def test_commands_leaving_the_scope_are_refused(core, scoped):
    admin = scoped.client.admin
    refused(core, admin.command, {"renameCollection": "user_alice_db.c", "to": "user_bob_db.c"})
    refused(core, admin.command, "shutdown")
    refused(core, scoped.command, "createUser", "eve", pwd="x", roles=[])
    refused(
        core,
        scoped.command,
        {"explain": {"aggregate": "c", "pipeline": [{"$out": {"db": "o", "coll": "x"}}]}},
    )


def test_rename_within_the_tenants_database_goes_through_admin(core, scoped):
    scoped.c.rename("d")
    assert (core.last.db, core.last.command["to"]) == ("admin", "user_alice_db.d")


def test_admin_collections_are_refused(core, scoped):
    with pytest.raises(OperationFailure):
        scoped.client.admin["system.users"]


def test_list_databases_is_narrowed_to_the_tenants(core, scoped):
    scoped.client.admin.command("listDatabases")
    assert core.last.command == {"listDatabases": 1, "filter": {"name": {"$in": ["user_alice_db"]}}}
    scoped.client.admin.command("listDatabases", filter={"sizeOnDisk": {"$gt": 0}})
    assert core.last.command["filter"] == {
        "$and": [{"sizeOnDisk": {"$gt": 0}}, {"name": {"$in": ["user_alice_db"]}}]
    }
