"""Secrets: the connection string's password, and the tenants' own passwords (``credentials=``,
``provision_tenant``), never show up in a repr, the stats, the metrics, the logs or an error message,
against a real server with authentication (--auth plus a keyFile, as replica sets require) and against
unreachable or misconfigured ones.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from urllib.parse import quote, quote_plus

import pytest
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError, ServerSelectionTimeoutError

from tenantpool import AsyncUserConnectionManager, TenantCredentials, UserConnectionManager
from tenantpool.testing import MongodProcess, free_port

# Characters that need percent-encoding, so both the raw and the encoded form are checked.
PASSWORD = "Tp-S3cr3t/P@ss:w0rd%Zq"
USER = "tpadmin"


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret)}


# For URIs where the password is pasted unencoded: only letters and digits, plus the one character tried.
PLAIN_PASSWORD = "Tp9PlainSecretZq"
# Tenants' own passwords (per-tenant credentials): the right one, a wrong one, a rotated one.
TENANT_PASSWORD = "Tn-S3cr3t/T@nant:pw%Zq"
TENANT_WRONG = "Tn-Wr0ng/T@nant:pw%Zq"
TENANT_ROTATED = "Tn-R0tated/T@nant:pw%Zq"
SECRET_FORMS = (
    forms(PASSWORD)
    | forms("wrong" + PASSWORD)
    | {PLAIN_PASSWORD}
    | forms(TENANT_PASSWORD)
    | forms(TENANT_WRONG)
    | forms(TENANT_ROTATED)
)


def assert_clean(text: str, where: str) -> None:
    leaked = [f for f in SECRET_FORMS if f in text]
    assert not leaked, f"password leaked in {where}: {text[:500]!r}"


def assert_exception_clean(exc: BaseException, where: str) -> None:
    texts = ["".join(traceback.format_exception(exc)), repr(exc), repr(exc.args)]
    details = getattr(exc, "details", None)
    if details is not None:
        texts.append(repr(details))
    for t in texts:
        assert_clean(t, where)


@pytest.fixture(scope="module")
def auth_server():
    # --auth and a generated keyFile; the harness creates the root user through the localhost exception.
    with MongodProcess(auth=True, admin_user=USER, admin_password=PASSWORD) as srv:
        yield srv


def uri_with(srv: MongodProcess, password: str) -> str:
    return f"mongodb://{USER}:{quote(password, safe='')}@{srv.host}/?replicaSet={srv.replset}"


def test_password_absent_from_reprs_stats_and_logs(auth_server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, tenantpool's included
    caplog.set_level(logging.DEBUG, logger="tenantpool")
    with UserConnectionManager(uri_with(auth_server, PASSWORD), appName="tp-secrets") as manager:
        db = manager.get_database("sec1")
        coll = db.items
        coll.insert_one({"x": 1})
        assert coll.find_one({}, {"_id": 0}) == {"x": 1}
        cursor = coll.find()
        next(cursor)
        command_cursor = db.aggregate([{"$listLocalSessions": {}}])
        things = {
            "repr(manager)": repr(manager),
            "str(manager)": str(manager),
            "repr(manager._core)": repr(manager._core),
            "vars(manager)": repr(vars(manager)),
            "repr(client)": repr(manager.get_client("sec1")),
            "repr(database)": repr(db),
            "repr(collection)": repr(coll),
            "repr(cursor)": repr(cursor),
            "repr(command cursor)": repr(command_cursor),
            "repr(list_indexes)": repr(coll.list_indexes()),
            "get_stats()": repr(manager.get_stats()),
            "get_user_stats()": repr(manager.get_user_stats("sec1")),
        }
        cursor.close()
        manager.close_user_connection("sec1")
    for where, text in things.items():
        assert_clean(text, where)
    assert "***" in things["repr(manager)"]
    assert any(r.name == "tenantpool" for r in caplog.records), "expected the manager to log something"
    for r in caplog.records:
        assert_clean(r.getMessage(), f"log record {r.name}")
        assert_clean(r.exc_text or "", f"log record {r.name} traceback")
    assert_clean(caplog.text, "captured logs")


@pytest.mark.parametrize("how", ["uri", "keywords"])
def test_wrong_password_error_has_no_password(auth_server, how, caplog):
    caplog.set_level(logging.DEBUG)
    if how == "uri":
        manager = UserConnectionManager(
            uri_with(auth_server, "wrong" + PASSWORD), serverSelectionTimeoutMS=1000
        )
    else:
        manager = UserConnectionManager(
            f"mongodb://{auth_server.host}/?replicaSet={auth_server.replset}",
            username=USER,
            password="wrong" + PASSWORD,
            serverSelectionTimeoutMS=1000,
        )
    with manager:
        assert_clean(repr(manager), "repr(manager)")
        with pytest.raises(OperationFailure) as info:
            manager.get_database("sec2").items.find_one()
        assert info.value.code == 18
        assert_exception_clean(info.value, "authentication error")
        # The failed handshake marks the server Unknown (SDAM), so the next call may instead time out in
        # server selection, as pymongo's does; either way its message must be clean.
        with pytest.raises(PyMongoError) as info:
            manager.get_database("sec2").items.insert_one({"x": 1})
        assert_exception_clean(info.value, "error on the next call")
    assert_clean(caplog.text, "captured logs")


def test_unreachable_server_error_has_no_password(caplog):
    caplog.set_level(logging.DEBUG)
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    uri = f"mongodb://{USER}:{quote(PASSWORD, safe='')}@{hosts}/?replicaSet=rs9"
    with UserConnectionManager(uri, serverSelectionTimeoutMS=300) as manager:
        assert_clean(repr(manager), "repr(manager)")
        for call in (
            lambda: manager.get_database("sec3").items.find_one(),
            lambda: list(manager.get_database("sec3").items.find()),
            lambda: manager.get_database("sec3").command("ping"),
        ):
            with pytest.raises(ServerSelectionTimeoutError) as info:
                call()
            assert_exception_clean(info.value, "server selection error")
    assert_clean(caplog.text, "captured logs")


BAD_CONFIGS = {
    "bad keyword value": ({"connectTimeoutMS": "soon"}, "?replicaSet=rs0"),
    "unknown keyword": ({"maxPoolSiz": 3}, "?replicaSet=rs0"),
    "bad uri option value": ({}, "?replicaSet=rs0&wtimeoutMS=never"),
    "unknown uri option": ({}, "?replicaSet=rs0&noSuchOption=1"),
    "bad auth mechanism": ({}, "?authMechanism=NOPE"),
    "bad template": ({"db_name_template": "no placeholder"}, ""),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_configuration_errors_have_no_password(case):
    kwargs, query = BAD_CONFIGS[case]
    uri = f"mongodb://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/{query}"
    with pytest.raises((ConfigurationError, PyMongoError, TypeError, ValueError)) as info:
        UserConnectionManager(uri, **kwargs)
    assert_exception_clean(info.value, case)


@pytest.mark.parametrize(
    "char",
    [
        "/",
        "@",
        ":",
        "#",
        "%",
        "?",
    ],
)
def test_malformed_password_in_uri_does_not_leak(char):
    """A classic mistake: a password with a reserved character pasted into the URI unencoded."""
    raw = f"mongodb://{USER}:{PLAIN_PASSWORD}{char}x@127.0.0.1:{free_port()}/"
    with pytest.raises(PyMongoError) as info:
        with UserConnectionManager(raw, serverSelectionTimeoutMS=300) as manager:
            assert_clean(repr(manager), "repr(manager)")
            manager.get_database("sec4").items.find_one()
    assert_exception_clean(info.value, f"error for a password containing {char!r}")


def test_tenant_passwords_absent_everywhere(auth_server, caplog):
    """Per-tenant credentials: the tenants' passwords never show up, whether right, wrong or rotated,
    nor in what provisioning logs or raises."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tenantpool")
    vault = {"sect1": TENANT_PASSWORD, "sect2": TENANT_WRONG}
    things: dict[str, str] = {}
    with UserConnectionManager(
        uri_with(auth_server, PASSWORD),
        credentials=lambda u: TenantCredentials(u, vault[u]),
        appName="tp-tenant-secrets",
    ) as manager:
        things["provision_tenant()"] = repr(manager.provision_tenant("sect1", TENANT_PASSWORD))
        manager.provision_tenant("sect2", TENANT_PASSWORD)  # sect2's vault entry is wrong
        db = manager.get_database("sect1")
        db.items.insert_one({"x": 1})
        cursor = db.items.find()
        next(cursor)
        with pytest.raises(OperationFailure) as info:
            manager.get_database("sect2").items.find_one()
        assert info.value.code == 18 and "sect2" in str(info.value)
        assert_exception_clean(info.value, "a tenant's authentication error")
        with pytest.raises(OperationFailure) as info:  # the server's Unauthorized: another database
            manager.get_client("sect1")["user_sect2_db"].command("find", "items")
        assert_exception_clean(info.value, "an Unauthorized error")
        vault["sect1"] = TENANT_ROTATED
        manager.provision_tenant("sect1", TENANT_ROTATED)
        assert db.items.find_one({}, {"_id": 0}) == {"x": 1}
        things.update(
            {
                "repr(manager)": repr(manager),
                "vars(manager)": repr(vars(manager)),
                "repr(database)": repr(db),
                "repr(cursor)": repr(cursor),
                "get_stats()": repr(manager.get_stats()),
                "get_user_stats()": repr(manager.get_user_stats("sect1")),
                "get_tier_stats()": repr(manager.get_tier_stats()),
                "metrics_text()": manager.metrics_text(),
            }
        )
        cursor.close()
        manager.deprovision_tenant("sect2")
    # A manager logged in as a tenant may not provision: the server's refusal, without the new password.
    tenant_uri = (
        f"mongodb://sect1:{quote(TENANT_ROTATED, safe='')}@{auth_server.host}/"
        f"?replicaSet={auth_server.replset}&authSource=user_sect1_db"
    )
    with UserConnectionManager(tenant_uri) as tenant_manager:
        things["repr(tenant manager)"] = repr(tenant_manager)
        with pytest.raises(OperationFailure) as info:
            tenant_manager.provision_tenant("sect3", TENANT_WRONG)
        assert info.value.code == 13
        assert_exception_clean(info.value, "a provisioning error")
    for where, text in things.items():
        assert_clean(text, where)
    for r in caplog.records:
        assert_clean(r.getMessage(), f"log record {r.name}")
    assert_clean(caplog.text, "captured logs")


def test_tenant_passwords_absent_from_async_errors(auth_server):
    async def main() -> None:
        async with AsyncUserConnectionManager(
            uri_with(auth_server, PASSWORD), credentials=lambda u: (u, TENANT_WRONG)
        ) as manager:
            await manager.provision_tenant("sect4", TENANT_PASSWORD)
            with pytest.raises(OperationFailure) as info:
                await manager.get_database("sect4").items.find_one()
            assert info.value.code == 18
            assert_exception_clean(info.value, "an async authentication error")
            await manager.deprovision_tenant("sect4")

    asyncio.run(main())
