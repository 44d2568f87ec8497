"""Server-enforced isolation (issue 13, part 2): each per_user tenant's client authenticates as the
tenant's own MongoDB user, provisioned by the manager, so that the *server* refuses it every other
database, even with tenantpool's client-side guard off. Against a real mongod started with --auth.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading

import pytest
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, InvalidName, InvalidOperation, OperationFailure
from tests.helpers import app_connections, wait_until

from tenantpool import AsyncUserConnectionManager, TenantCredentials, UserConnectionManager

_ids = itertools.count()


def tenant(prefix: str = "t") -> str:
    """A tenant id no other test uses (the server, and its users, live for the whole session)."""
    return f"{prefix}{os.getpid()}_{next(_ids)}"


class Vault(dict):
    """The application's secret store: what the credentials callback reads."""

    def credentials(self, user_id: str) -> TenantCredentials:
        return TenantCredentials(user_id, self[user_id])


def manager(cls=UserConnectionManager, uri: str = "", **kwargs):
    """A manager with tenantpool's client-side namespace scope off (``isolation="off"``), so that
    whatever is refused below is refused by the server."""
    kwargs.setdefault("serverSelectionTimeoutMS", 3000)
    return cls(uri, isolation="off", **kwargs)


def assert_server_refused(exc: OperationFailure, what: str = "") -> None:
    """The server's own Unauthorized reply (it carries the server's operationTime), not a client-side
    refusal."""
    assert exc.code == 13, (what, exc)
    assert exc.details.get("codeName") == "Unauthorized", (what, exc.details)
    assert "operationTime" in exc.details, f"{what}: expected the server's reply, not a client-side error"


@pytest.fixture(scope="module")
def admin(auth_mongod):
    with MongoClient(auth_mongod.uri) as client:
        yield client


def user_doc(admin: MongoClient, user_id: str) -> dict | None:
    users = admin[f"user_{user_id}_db"].command("usersInfo", user_id)["users"]
    return users[0] if users else None


def test_harness_auth_mode(auth_mongod):
    assert auth_mongod.auth and auth_mongod.admin_password in auth_mongod.uri
    with MongoClient(f"mongodb://{auth_mongod.host}/?directConnection=true") as anonymous:
        with pytest.raises(OperationFailure) as info:
            anonymous.admin.command("listDatabases")
        assert info.value.code == 13


def test_provisioning_is_idempotent(auth_mongod, admin):
    a = tenant()
    with manager(uri=auth_mongod.uri) as m:
        creds = m.provision_tenant(a, "first-pw")
        assert creds == TenantCredentials(a, "first-pw")
        assert "first-pw" not in repr(creds)
        doc = user_doc(admin, a)
        assert doc["roles"] == [{"role": "readWrite", "db": f"user_{a}_db"}]
        # Again, with other roles and password: updated in place, still one user.
        m.provision_tenant(a, "second-pw", roles=("readWrite", "dbAdmin"))
        m.provision_tenant(a, "second-pw", roles=("readWrite", "dbAdmin"))
        users = admin[f"user_{a}_db"].command("usersInfo")["users"]
        assert [u["user"] for u in users] == [a]
        assert sorted(r["role"] for r in users[0]["roles"]) == ["dbAdmin", "readWrite"]
        assert {r["db"] for r in users[0]["roles"]} == {f"user_{a}_db"}
        assert m.deprovision_tenant(a) is True
        assert m.deprovision_tenant(a) is False
        assert user_doc(admin, a) is None


def test_provisioned_tenant_works(auth_mongod):
    a = tenant()
    vault = Vault({a: "pw-" + a})
    with manager(uri=auth_mongod.uri, credentials=vault.credentials) as m:
        m.provision_tenant(a, vault[a], roles=("readWrite", "dbAdmin"))
        db = m.get_database(a)
        db.items.insert_many([{"_id": i, "n": i % 3} for i in range(250)])
        assert db.items.count_documents({"n": 0}) == 84
        db.items.update_one({"_id": 1}, {"$set": {"x": 1}})
        assert db.items.find_one({"_id": 1})["x"] == 1
        assert len(list(db.items.find().batch_size(20))) == 250  # getMores on the tenant's user
        pipeline = [{"$group": {"_id": "$n", "c": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
        groups = list(db.items.aggregate(pipeline))
        assert [g["c"] for g in groups] == [84, 83, 83]
        db.items.create_index("n")  # dbAdmin
        db.items.aggregate([{"$match": {"n": 1}}, {"$out": "ones"}])  # $out inside its own database
        assert db.ones.count_documents({}) == 83

        client = m.get_client(a)
        with client.start_session() as s:
            with s.start_transaction():
                db.accounts.insert_one({"_id": "x", "balance": 10}, session=s)
                db.accounts.update_one({"_id": "x"}, {"$inc": {"balance": 5}}, session=s)
        assert db.accounts.find_one({"_id": "x"})["balance"] == 15
        with client.start_session() as s:
            with pytest.raises(RuntimeError):
                with s.start_transaction():
                    db.accounts.insert_one({"_id": "y"}, session=s)
                    raise RuntimeError("abort")
        assert db.accounts.find_one({"_id": "y"}) is None
        db.items.delete_many({})
        assert db.items.count_documents({}) == 0


def test_server_refuses_other_databases(auth_mongod, admin):
    a, b = tenant("a"), tenant("b")
    vault = Vault({a: "pw-a", b: "pw-b"})
    admin[f"user_{b}_db"].secret.insert_one({"_id": 1, "card": "4111"})
    with manager(uri=auth_mongod.uri, credentials=vault.credentials) as m:
        m.provision_tenant(a, vault[a])
        m.provision_tenant(b, vault[b])
        m.get_database(a).mine.insert_one({"_id": 1})
        client = m.get_client(a)
        other = client[f"user_{b}_db"]
        attempts = {
            "find by name": lambda: other.secret.find_one(),
            "insert by name": lambda: other.secret.insert_one({"_id": 2}),
            "raw command": lambda: other.command("find", "secret"),
            "drop": lambda: other.drop_collection("secret"),
            "$out into another db": lambda: m.get_database(a).mine.aggregate(
                [{"$out": {"db": f"user_{b}_db", "coll": "stolen"}}]
            ),
            "$merge into another db": lambda: m.get_database(a).mine.aggregate(
                [{"$merge": {"into": {"db": f"user_{b}_db", "coll": "stolen"}}}]
            ),
            "admin command": lambda: client.admin.command("serverStatus"),
            "all databases": lambda: client.admin.command("listDatabases", authorizedDatabases=False),
        }
        for what, attempt in attempts.items():
            with pytest.raises(OperationFailure) as info:
                attempt()
            assert_server_refused(info.value, what)
        assert client.list_database_names() == [f"user_{a}_db"]
        listed = client.admin.command("listDatabases", nameOnly=True, authorizedDatabases=True)
        assert [d["name"] for d in listed["databases"]] == [f"user_{a}_db"]
        # Refused, and nothing happened; the tenant's own work goes on.
        assert admin[f"user_{b}_db"].secret.find_one() == {"_id": 1, "card": "4111"}
        assert "stolen" not in admin[f"user_{b}_db"].list_collection_names()
        assert m.get_database(a).mine.find_one() == {"_id": 1}


def test_deprovision_makes_the_next_pool_fail(auth_mongod):
    a = tenant()
    vault = Vault({a: "pw-" + a})
    with manager(uri=auth_mongod.uri, credentials=vault.credentials) as m:
        m.provision_tenant(a, vault[a])
        m.get_database(a).items.insert_one({"x": 1})
        assert m.deprovision_tenant(a) is True
        assert a not in m.get_stats()["active_users"]  # its pool was closed with the user
        for _ in range(2):  # the next pool, and the one after: each looks the credentials up again
            with pytest.raises(OperationFailure) as info:
                m.get_database(a).items.find_one()
            assert info.value.code == 18
            assert repr(a) in str(info.value) or f'"{a}"' in str(info.value)
        m.provision_tenant(a, vault[a])  # back, without a restart
        assert m.get_database(a).items.find_one({}, {"_id": 0}) == {"x": 1}


def test_rotation_takes_effect_for_the_next_pool(auth_mongod, admin):
    a = tenant()
    vault = Vault({a: "old-" + a})
    with manager(uri=auth_mongod.uri, credentials=vault.credentials) as m:
        m.provision_tenant(a, vault[a])
        db = m.get_database(a)
        db.items.insert_one({"_id": 1})
        created = m.get_stats()["pools"]["pools_created"]
        # Rotate: store the new password, then update the user (which closes the tenant's pool).
        vault[a] = "new-" + a
        m.provision_tenant(a, vault[a])
        assert db.items.find_one() == {"_id": 1}  # the same Database object, a new pool
        assert m.get_stats()["pools"]["pools_created"] == created + 1
    with manager(uri=auth_mongod.uri, credentials=lambda u: (u, "old-" + a)) as stale:
        with pytest.raises(OperationFailure) as info:
            stale.get_database(a).items.find_one()
        assert info.value.code == 18


def test_wrong_password_fails_that_tenant_only(auth_mongod):
    good, bad = tenant("good"), tenant("bad")
    vault = Vault({good: "pw-good", bad: "pw-bad"})
    with manager(uri=auth_mongod.uri, credentials=vault.credentials) as m:
        m.provision_tenant(good, vault[good])
        m.provision_tenant(bad, vault[bad])
        vault[bad] = "Wr0ng-Secret-Zq"
        errors: list[BaseException] = []
        done = threading.Event()

        def good_traffic() -> None:
            try:
                while not done.is_set():
                    m.get_database(good).items.insert_one({})
            except BaseException as exc:  # reported below
                errors.append(exc)

        worker = threading.Thread(target=good_traffic)
        worker.start()
        try:
            for _ in range(3):
                with pytest.raises(OperationFailure) as info:
                    m.get_database(bad).items.find_one()
                assert info.value.code == 18
                message = str(info.value)
                assert bad in message and "credentials callback" in message
                assert "Wr0ng-Secret-Zq" not in message and "pw-bad" not in message
                assert "Wr0ng-Secret-Zq" not in repr(info.value.details)
        finally:
            done.set()
            worker.join()
        assert not errors, errors
        assert m.get_database(good).items.count_documents({}) > 0
        # Fixing the secret is enough: the failed pool was retired, the next one looks it up again.
        vault[bad] = "pw-bad"
        assert m.get_database(bad).items.find_one() is None
        stats = repr(m.get_stats()) + repr(m.get_user_stats(bad)) + m.metrics_text()
        assert "Wr0ng" not in stats and "pw-bad" not in stats


@pytest.mark.parametrize("strategy", ["grouped", "shared"])
def test_grouped_and_shared_refuse_per_tenant_credentials(strategy):
    with pytest.raises(ConfigurationError) as info:
        UserConnectionManager("mongodb://127.0.0.1:1/", strategy=strategy, credentials=lambda u: (u, "pw"))
    message = str(info.value)
    assert "per_user" in message and strategy in message and "cannot authenticate" in message


def test_bad_credentials_are_clear_errors(auth_mongod):
    a = tenant()
    answers = {
        "none": None,
        "one-tuple": ("only-user",),
        "extra-key": {"username": a, "password": "Zq-secret-1", "pasword": "x"},
        "no-password": {"username": a},
    }
    with pytest.raises(ConfigurationError, match="mechanism"):
        TenantCredentials(a, "pw", mechanism="MONGODB-X509")
    with pytest.raises(ConfigurationError, match="password must be a non-empty str"):
        TenantCredentials(a, "")
    for name, answer in answers.items():
        with manager(uri=auth_mongod.uri, credentials=lambda u, answer=answer: answer) as m:
            with pytest.raises(ConfigurationError) as info:
                m.get_database(a)
            assert a in str(info.value), name
            assert "Zq-secret-1" not in str(info.value)

    def raising(user_id: str):
        raise KeyError(user_id)

    with manager(uri=auth_mongod.uri, credentials=raising) as m:
        with pytest.raises(ConfigurationError, match="credentials callback failed for tenant"):
            m.get_database(a)
    with pytest.raises(ConfigurationError, match="callable"):
        UserConnectionManager(auth_mongod.uri, credentials={"a": ("a", "pw")})
    with manager(uri=auth_mongod.uri) as m:
        for roles in (("root",), ("dbOwner",), "readWrite", ()):
            with pytest.raises(ConfigurationError):
                m.provision_tenant(a, "pw", roles=roles)
        with pytest.raises(InvalidName):
            m.provision_tenant("no/slash", "pw")
        with pytest.raises(ConfigurationError):
            m.provision_tenant(a, "")


def test_admin_client_opens_on_demand_and_closes_when_idle(auth_mongod, admin):
    class QuickAdmin(UserConnectionManager):
        _admin_idle_timeout = 0.3

    app = f"tp-admin-idle-{os.getpid()}"
    with manager(QuickAdmin, auth_mongod.uri, appName=app) as m:
        assert m.get_stats()["pools"]["admin_client_open"] is False
        # The connection budget's first look at serverStatus uses a short-lived client of its own.
        wait_until(lambda: app_connections(admin, app) == 0, 10, "the budget's probe to close")
        a = tenant()
        m.provision_tenant(a, "pw")
        assert m.get_stats()["pools"]["admin_client_open"] is True
        assert app_connections(admin, app) > 0
        wait_until(lambda: not m.get_stats()["pools"]["admin_client_open"], 10, "the admin client to close")
        wait_until(lambda: app_connections(admin, app) == 0, 10, "the admin client's connections to close")
        assert m.deprovision_tenant(a) is True  # opens it again on demand


def test_provisioning_without_user_admin_rights_is_refused(auth_mongod):
    a, b = tenant("a"), tenant("b")
    with manager(uri=auth_mongod.uri) as m:
        creds = m.provision_tenant(a, "pw-a-Zq")
    host = auth_mongod.host
    uri = f"mongodb://{a}:{creds.password}@{host}/?replicaSet=rs0&authSource=user_{a}_db"
    with manager(uri=uri) as tenant_admin:
        with pytest.raises(OperationFailure) as info:
            tenant_admin.provision_tenant(b, "New-Secret-Zq9")
        assert info.value.code == 13
        assert "New-Secret-Zq9" not in str(info.value) and "New-Secret-Zq9" not in repr(info.value.details)


# -- async -----------------------------------------------------------------------------------------------


def test_async_provisioning_and_isolation(auth_mongod, admin):
    a, b = tenant("a"), tenant("b")
    vault = Vault({a: "pw-a", b: "pw-b"})

    async def main() -> None:
        m = manager(AsyncUserConnectionManager, auth_mongod.uri, credentials=vault.credentials)
        async with m:
            assert (await m.provision_tenant(a, vault[a])) == TenantCredentials(a, vault[a])
            await m.provision_tenant(a, vault[a])  # idempotent
            await m.provision_tenant(b, vault[b])
            db = m.get_database(a)
            await db.items.insert_many([{"_id": i} for i in range(30)])
            assert len([d async for d in db.items.find().batch_size(7)]) == 30
            assert (await (await db.items.aggregate([{"$count": "n"}])).to_list())[0]["n"] == 30
            async with m.get_client(a).start_session() as s:
                async with await s.start_transaction():
                    await db.items.insert_one({"_id": "tx"}, session=s)
            assert await db.items.find_one({"_id": "tx"}) == {"_id": "tx"}
            with pytest.raises(OperationFailure) as info:
                await m.get_client(a)[f"user_{b}_db"].items.insert_one({})
            assert_server_refused(info.value)
            with pytest.raises(OperationFailure) as info:
                await db.items.aggregate([{"$out": {"db": f"user_{b}_db", "coll": "stolen"}}])
            assert_server_refused(info.value)
            assert await m.get_client(a).list_database_names() == [f"user_{a}_db"]

            vault[b] = "wrong-Zq-pw"
            await m.provision_tenant(b, "pw-b-2")  # closes b's pool; the vault still has a wrong one
            with pytest.raises(OperationFailure) as info:
                await m.get_database(b).items.find_one()
            assert info.value.code == 18 and b in str(info.value) and "wrong-Zq-pw" not in str(info.value)
            vault[b] = "pw-b-2"
            assert await m.get_database(b).items.find_one() is None

            assert await m.deprovision_tenant(a) is True
            assert await m.deprovision_tenant(a) is False
            with pytest.raises(OperationFailure) as info:
                await m.get_database(a).items.find_one()
            assert info.value.code == 18

    asyncio.run(main())
    assert user_doc(admin, a) is None and user_doc(admin, b) is not None


def test_client_side_scope_and_server_together(auth_mongod):
    """With the default isolation="strict" the client-side scope refuses first, before anything is
    sent (no server reply in the error); the server's refusal is the layer under it."""
    a, b = tenant("a"), tenant("b")
    vault = Vault({a: "pw-a", b: "pw-b"})
    with UserConnectionManager(auth_mongod.uri, credentials=vault.credentials) as m:
        assert m.isolation == "strict"
        m.provision_tenant(a, vault[a])
        m.get_database(a).items.insert_one({"_id": 1})
        with pytest.raises(OperationFailure) as info:
            m.get_client(a)[f"user_{b}_db"].items.find_one()
        assert info.value.code == 13 and "operationTime" not in (info.value.details or {})
        assert m.get_database(a).items.find_one() == {"_id": 1}


def test_concurrent_provisioning_shares_one_admin_client(auth_mongod, admin):
    ids = [tenant("c") for _ in range(8)]
    vault = Vault({u: "pw-" + u for u in ids})
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []
    with manager(uri=auth_mongod.uri, credentials=vault.credentials) as m:

        def provision(u: str) -> None:
            try:
                barrier.wait(10)
                m.provision_tenant(u, vault[u])
                m.get_database(u).items.insert_one({"u": u})
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=provision, args=(u,)) for u in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert all(user_doc(admin, u) is not None for u in ids)
        assert all(m.get_database(u).items.find_one({}, {"_id": 0}) == {"u": u} for u in ids)


def test_provisioning_in_a_forked_child(auth_mongod, admin):
    """A child forked while the admin client is open provisions through a client of its own (the
    parent's sockets are never used or closed by the child)."""
    from tests.reliability.test_process_lifecycle import in_child

    parent_t, child_t = tenant("p"), tenant("k")
    with manager(uri=auth_mongod.uri) as m:
        m.provision_tenant(parent_t, "pw-p")
        assert m.get_stats()["pools"]["admin_client_open"]

        def body() -> dict:
            m.provision_tenant(child_t, "pw-k")
            return {"ok": True}

        assert in_child(body) == {"ok": True, "status": 0}
        assert user_doc(admin, child_t) is not None
        assert m.provision_tenant(parent_t, "pw-p2") == TenantCredentials(parent_t, "pw-p2")


def test_credentials_are_looked_up_once_per_pool(auth_mongod):
    ids = [tenant("o") for _ in range(12)]
    vault = Vault({u: "pw-" + u for u in ids})
    calls: dict[str, int] = {}
    threads_seen: set[int] = set()
    lock = threading.Lock()

    def lookup(user_id: str) -> TenantCredentials:
        with lock:
            calls[user_id] = calls.get(user_id, 0) + 1
            threads_seen.add(threading.get_ident())
        return vault.credentials(user_id)

    with manager(uri=auth_mongod.uri, credentials=lookup) as m:
        for u in ids:
            m.provision_tenant(u, vault[u])
        # Many threads creating pools at once: each calls back into Python from the core.
        threads = [
            threading.Thread(target=lambda u=u: [m.get_database(u).items.insert_one({}) for _ in range(5)])
            for u in ids
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert calls == {u: 1 for u in ids}
        assert all(m.get_database(u).items.count_documents({}) == 5 for u in ids)
        m.close_user_connection(ids[0])
        m.get_database(ids[0]).items.find_one()
        assert calls[ids[0]] == 2

    async def from_the_event_loop() -> None:
        async with manager(AsyncUserConnectionManager, auth_mongod.uri, credentials=lookup) as am:
            db = am.get_database(ids[1])  # creates the pool on this thread
            am.close_user_connection(ids[1])
            # The next operation creates the pool on tenantpool's I/O thread, which calls back into
            # Python while the event loop waits.
            assert await db.items.count_documents({}) == 5

    calls.clear()
    threads_seen.clear()
    asyncio.run(from_the_event_loop())
    # get_database on an event loop opens the pool only if the connection budget has room at once;
    # either way the operation's pool was made on the I/O thread, calling back into Python there.
    assert set(calls) == {ids[1]} and calls[ids[1]] in (1, 2)
    assert threads_seen - {threading.get_ident()}, "no lookup ran on tenantpool's I/O thread"


def test_provisioning_with_wrong_admin_credentials(auth_mongod):
    uri = auth_mongod.uri.replace(auth_mongod.admin_password, "not-the-admin-pw")
    with manager(uri=uri) as m:
        with pytest.raises(OperationFailure) as info:
            m.provision_tenant(tenant(), "Tenant-Secret-Zq7")
    assert info.value.code == 18
    message = str(info.value)
    assert "connection string's credentials" in message and "userAdmin" in message
    assert "not-the-admin-pw" not in message and "Tenant-Secret-Zq7" not in message


def test_provisioning_after_close_raises(auth_mongod):
    m = manager(uri=auth_mongod.uri)
    m.provision_tenant(a := tenant(), "pw")
    m.close()
    with pytest.raises(InvalidOperation):
        m.provision_tenant(a, "pw2")
    with pytest.raises(InvalidOperation):
        m.deprovision_tenant(a)


def test_platform_client_still_runs_as_the_tenants_user(auth_mongod):
    a, b = tenant("a"), tenant("b")
    vault = Vault({a: "pw-a"})
    with UserConnectionManager(auth_mongod.uri, credentials=vault.credentials) as m:
        m.provision_tenant(a, vault[a])
        with pytest.raises(OperationFailure) as info:
            m.get_platform_client(a)[f"user_{b}_db"].items.find_one()
        assert_server_refused(info.value)
