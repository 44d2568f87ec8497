"""The isolation scope's decisions, without a server: what is refused, what is sent instead."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import ConfigurationError, OperationFailure

from tenantpool._isolation import IsolationScope


def scope(extra: Any = None) -> IsolationScope:
    return IsolationScope(lambda user_id: f"user_{user_id}_db", extra)


def refused(fn: Any, *args: Any) -> OperationFailure:
    with pytest.raises(OperationFailure) as info:
        fn(*args)
    assert info.value.code == 13
    return info.value


def test_databases_by_name() -> None:
    s = scope()
    s.check_database("a", "user_a_db")
    s.check_database("a", "admin")  # commands there are checked one by one
    for name in ("user_b_db", "config", "local", "user_a_db2", "USER_A_DB"):
        refused(s.check_database, "a", name)
    refused(s.check_collection, "a", "admin", "system.users")
    refused(s.check_database_operation, "a", "admin", "aggregate")
    s.check_database_operation("a", "user_a_db", "aggregate")


def test_tenant_databases_templates_and_callable() -> None:
    s = scope(["files_{user_id}", "{user_id}_logs"])
    assert s.databases("a") == {"user_a_db", "files_a", "a_logs"}
    s.check_database("a", "files_a")
    refused(s.check_database, "a", "files_b")
    c = scope(lambda user_id: {"shared_catalog"} if user_id == "a" else set())
    c.check_database("a", "shared_catalog")
    refused(c.check_database, "b", "shared_catalog")
    with pytest.raises(ConfigurationError):
        scope(["files"])
    with pytest.raises(ConfigurationError):
        scope("files_{user_id}")
    with pytest.raises(ConfigurationError):
        scope(lambda user_id: "one_name").databases("a")


@pytest.mark.parametrize(
    "command",
    [
        {"ping": 1},
        {"hello": 1},
        {"isMaster": 1},
        {"buildInfo": 1},
        {"renameCollection": "user_a_db.x", "to": "user_a_db.y"},
    ],
)
def test_admin_allows_server_information_and_own_renames(command: dict[str, Any]) -> None:
    assert scope().check_command("a", "admin", command) is command


@pytest.mark.parametrize(
    "command",
    [
        {"serverStatus": 1},
        {"currentOp": 1},
        {"killOp": 1, "op": 1},
        {"aggregate": 1, "pipeline": [{"$currentOp": {}}], "cursor": {}},
        {"find": "system.users"},
        {"renameCollection": "user_a_db.x", "to": "user_b_db.y"},
        {"renameCollection": "user_b_db.x", "to": "user_a_db.y"},
        {"renameCollection": 1, "to": "user_a_db.y"},
        {"configureFailPoint": "failCommand"},
    ],
)
def test_admin_refuses_the_rest(command: dict[str, Any]) -> None:
    refused(scope().check_command, "a", "admin", command)


def test_list_databases_is_narrowed_to_the_tenants_own() -> None:
    s = scope(["files_{user_id}"])
    sent = s.check_command("a", "admin", {"listDatabases": 1, "nameOnly": True})
    assert sent == {
        "listDatabases": 1,
        "nameOnly": True,
        "filter": {"name": {"$in": ["files_a", "user_a_db"]}},
    }
    given = {"name": {"$regex": "^user"}}
    sent = s.check_command("a", "admin", {"listDatabases": 1, "filter": given})
    assert sent["filter"] == {"$and": [given, {"name": {"$in": ["files_a", "user_a_db"]}}]}


OUT_B = {"db": "user_b_db", "coll": "x"}


@pytest.mark.parametrize(
    "pipeline",
    [
        [{"$out": OUT_B}],
        [{"$merge": {"into": OUT_B}}],
        [{"$lookup": {"from": OUT_B, "as": "x", "pipeline": []}}],
        [{"$graphLookup": {"from": OUT_B}}],
        [{"$unionWith": {"coll": OUT_B}}],
        [{"$unionWith": {"db": "user_b_db", "coll": "x"}}],
        [{"$lookup": {"from": "x", "as": "x", "pipeline": [{"$unionWith": {"coll": OUT_B}}]}}],
        [{"$facet": {"f": [{"$lookup": {"from": OUT_B, "as": "x"}}]}}],
        [{"$out": {"db": 5, "coll": "x"}}],
    ],
)
def test_pipelines_naming_another_database(pipeline: list[dict[str, Any]]) -> None:
    s = scope()
    refused(s.check_pipeline, "a", pipeline)
    refused(s.check_command, "a", "user_a_db", {"aggregate": "x", "pipeline": pipeline, "cursor": {}})
    refused(s.check_command, "a", "user_a_db", {"explain": {"aggregate": "x", "pipeline": pipeline}})
    refused(s.check_command, "a", "user_a_db", {"create": "v", "viewOn": "x", "pipeline": pipeline})


@pytest.mark.parametrize(
    "pipeline",
    [
        [{"$out": "x"}],
        [{"$out": {"db": "user_a_db", "coll": "x"}}],
        [{"$merge": "x"}],
        [{"$merge": {"into": {"db": "user_a_db", "coll": "x"}}}],
        [{"$match": {"db": "user_b_db"}}],  # a field called db is not a database
        [{"$lookup": {"from": "x", "as": "y", "pipeline": [{"$match": {"db": "user_b_db"}}]}}],
    ],
)
def test_pipelines_inside_the_scope(pipeline: list[dict[str, Any]]) -> None:
    scope().check_pipeline("a", pipeline)


def test_commands_on_the_own_database() -> None:
    s = scope()
    for command in ({"find": "x"}, {"insert": "x", "documents": []}, {"dropDatabase": 1}, {"dbStats": 1}):
        assert s.check_command("a", "user_a_db", command) is command
    refused(s.check_command, "a", "user_a_db", {"find": "x", "$db": "user_b_db"})
    refused(s.check_command, "a", "user_a_db", {"createUser": "u", "pwd": "p", "roles": []})
    refused(s.check_command, "a", "user_a_db", {"grantRolesToUser": "u", "roles": []})
    refused(s.check_command, "a", "user_a_db", {"mapReduce": "x", "out": {"replace": "y", "db": "user_b_db"}})
    s.check_command("a", "user_a_db", {"mapReduce": "x", "out": {"replace": "y", "db": "user_a_db"}})
    refused(s.check_command, "a", "user_a_db", {"dataSize": "user_b_db.secrets"})
    s.check_command("a", "user_a_db", {"dataSize": "user_a_db.x"})


def test_refusals_are_counted_by_route_and_say_what_to_do() -> None:
    s = scope()
    error = refused(s.check_database, "a", "user_b_db")
    message = str(error)
    assert "'a'" in message and "'user_b_db'" in message and "'user_a_db'" in message
    assert "tenant_databases" in message and "isolation='off'" in message
    assert error.details == {
        "ok": 0.0,
        "errmsg": error.details["errmsg"],
        "code": 13,
        "codeName": "Unauthorized",
    }
    refused(s.check_pipeline, "a", [{"$out": OUT_B}])
    refused(s.check_dereference, "a", "user_b_db")
    assert s.refusals() == {"database": 1, "command": 0, "pipeline": 1, "dereference": 1}
    assert 'tenantpool_isolation_refusals_total{route="pipeline"} 1' in s.metrics_text()
