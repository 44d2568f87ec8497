"""pymongo 4.17's ``ClientSession.bind()`` on tenantpool's sessions, against the replica-set test server:
inside ``with s.bind():`` (``async with`` for an AsyncClientSession) every operation of the session's
tenant given no ``session=`` runs in ``s`` (proved with a transaction whose writes stay invisible outside
until the commit), cursors made in the block too; leaving the block ends the session unless
``end_session=False``; another tenant's (or another manager's) operation raises pymongo's
InvalidOperation; an explicit ``session=`` wins; binds nest; the binding is the thread's and the asyncio
task's own. The same scenarios run through a real pymongo MongoClient where they can."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pymongo import InsertOne, MongoClient, UpdateOne
from pymongo.errors import ConfigurationError, InvalidOperation, OperationFailure
from pymongo.write_concern import WriteConcern

from tenantpool import AsyncUserConnectionManager, UserConnectionManager

OTHER_CLIENT = (
    "Only the client that created the bound session can perform operations within its context block. "
    "See <PLACEHOLDER> for more information."
)


@pytest.fixture
def manager(mongodb_uri):
    with UserConnectionManager(mongodb_uri, appName="tp-bind") as m:
        yield m


def fresh(db, name: str = "items"):
    db.drop_collection(name)
    db.create_collection(name)
    return db[name]


def outside(pymongo_client, coll) -> list:
    """What a client outside every session sees in ``coll``."""
    return sorted(d["_id"] for d in pymongo_client[coll.database.name][coll.name].find())


def test_pymongo_message_is_copied():
    import inspect

    from pymongo.synchronous.mongo_client import MongoClient as SyncClient

    source = inspect.getsource(SyncClient._get_bound_session)
    assert '"Only the client that created the bound session can perform operations within"' in source
    assert '" its context block. See <PLACEHOLDER> for more information."' in source


def test_operations_in_the_block_run_in_the_session(manager, pymongo_client):
    db = manager.get_database("bind-a")
    coll = fresh(db)
    coll.insert_one({"_id": 0, "n": 0})
    with manager.get_client("bind-a").start_session() as s, s.bind(end_session=False):
        with s.start_transaction():
            coll.insert_one({"_id": 1, "n": 1})
            coll.insert_many([{"_id": 2, "n": 2}, {"_id": 3, "n": 3}])
            coll.update_one({"_id": 0}, {"$set": {"n": 10}})
            coll.replace_one({"_id": 3}, {"n": 30})
            coll.bulk_write([InsertOne({"_id": 4, "n": 4}), UpdateOne({"_id": 4}, {"$inc": {"n": 1}})])
            assert coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})["n"] == 1
            coll.with_options(write_concern=WriteConcern("majority")).delete_one({"_id": 2})
            # Reads see the transaction's own writes: they ran in it.
            assert coll.find_one({"_id": 0})["n"] == 10
            assert coll.count_documents({}) == 4
            assert coll.count_documents({}, None) == 4  # a positional None is "no session" too
            assert sorted(coll.distinct("_id")) == [0, 1, 3, 4]
            assert [d["n"] for d in coll.aggregate([{"$sort": {"_id": 1}}])] == [10, 2, 30, 5]
            assert db.command("find", coll.name, filter={"_id": 4})["cursor"]["firstBatch"][0]["n"] == 5
            # Not visible outside before the commit.
            assert outside(pymongo_client, coll) == [0]
        assert outside(pymongo_client, coll) == [0, 1, 3, 4]
        assert not s.has_ended
        # Outside a transaction, the bound session is causally consistent: its times advance.
        before = s.operation_time
        coll.insert_one({"_id": 5})
        assert s.operation_time > before


def test_cursors_made_in_the_block_use_the_session(manager, pymongo_client):
    db = manager.get_database("bind-a")
    coll = fresh(db)
    s = manager.get_client("bind-a").start_session()
    with s.bind():
        assert coll.name in db.list_collection_names()
        assert [c["name"] for c in db.list_collections(filter={"name": coll.name})] == [coll.name]
        assert [i["name"] for i in coll.list_indexes()] == ["_id_"]
        # The server refuses these in a transaction: so they ran in the bound session's.
        for op in (
            db.list_collection_names,
            db.list_collections,
            coll.list_indexes,
            manager.get_client("bind-a").list_database_names,
        ):
            s.start_transaction()
            with pytest.raises(OperationFailure) as info:
                op()
            assert info.value.code == 263  # OperationNotSupportedInTransaction
            s.abort_transaction()
        s.start_transaction()
        coll.insert_one({"_id": 1})
        cursor = coll.find()
        command_cursor = coll.aggregate([{"$match": {}}])
        assert [d["_id"] for d in cursor] == [1]
        assert [d["_id"] for d in command_cursor] == [1]
        assert cursor._session is s and command_cursor._session is s
        assert coll.find().clone()._session is s
        s.commit_transaction()
    assert s.has_ended
    assert outside(pymongo_client, coll) == [1]
    # A cursor made outside the block has no session.
    assert coll.find()._session is None


def test_change_stream_made_in_the_block_uses_the_session(manager):
    coll = fresh(manager.get_database("bind-a"))
    with manager.get_client("bind-a").start_session() as s, s.bind(end_session=False):
        with coll.watch() as stream:
            assert stream._session is s


def test_end_session(manager):
    client = manager.get_client("bind-a")
    coll = client.get_database()["items"]
    s = client.start_session()
    with s.bind() as bound:
        assert bound is s
        coll.find_one()
    assert s.has_ended
    with pytest.raises(InvalidOperation, match="Cannot use ended session"):
        coll.find_one(session=s)

    s = client.start_session()
    with s.bind(end_session=False):
        coll.find_one()
    assert not s.has_ended
    coll.find_one(session=s)
    s.end_session()

    # The session ends on an error too (aborting its transaction), and the error goes through.
    s = client.start_session()
    with pytest.raises(ZeroDivisionError), s.bind():
        s.start_transaction()
        1 / 0  # noqa: B018
    assert s.has_ended and not s.in_transaction


def test_an_ended_bound_session_fails_operations(manager):
    client = manager.get_client("bind-a")
    coll = client.get_database()["items"]
    with client.start_session() as s, s.bind():
        s.end_session()
        with pytest.raises(InvalidOperation, match="Cannot use ended session"):
            coll.find_one()


def test_another_clients_operation_raises(manager, mongodb_uri):
    a = manager.get_client("bind-a")
    b_coll = manager.get_database("bind-b")["items"]
    with a.start_session() as s, s.bind(end_session=False):
        for op in (
            lambda: b_coll.find_one(),
            lambda: b_coll.insert_one({}),
            lambda: b_coll.find(),
            lambda: b_coll.aggregate([]),
            lambda: b_coll.count_documents({}),
            lambda: b_coll.database.command("ping"),
            lambda: b_coll.database.list_collection_names(),
            lambda: b_coll.database.client.list_database_names(),
        ):
            with pytest.raises(InvalidOperation) as info:
                op()
            assert str(info.value) == OTHER_CLIENT
        # The same tenant of another manager is another client too.
        with UserConnectionManager(mongodb_uri, appName="tp-bind-2") as other:
            with pytest.raises(InvalidOperation) as info:
                other.get_database("bind-a")["items"].find_one()
            assert str(info.value) == OTHER_CLIENT
        # An explicit session is not checked against the bound one (as in pymongo).
        with manager.get_client("bind-b").start_session() as s2:
            b_coll.find_one(session=s2)


def test_pymongo_raises_the_same(mongodb_uri, pymongo_client):
    with MongoClient(mongodb_uri) as other:
        with pymongo_client.start_session() as s, s.bind(end_session=False):
            with pytest.raises(InvalidOperation) as info:
                other.db.items.find_one()
            assert str(info.value) == OTHER_CLIENT


def test_explicit_session_wins(manager, pymongo_client):
    client = manager.get_client("bind-a")
    coll = fresh(client.get_database())
    with client.start_session() as s, client.start_session() as s2, s.bind(end_session=False):
        s.start_transaction()
        coll.insert_one({"_id": 1})
        coll.insert_one({"_id": 2}, session=s2)  # not in s's transaction: visible at once
        assert outside(pymongo_client, coll) == [2]
        assert coll.find(session=s2)._session is s2
        s.abort_transaction()
    assert outside(pymongo_client, coll) == [2]


def test_nested_binds(manager, pymongo_client):
    client = manager.get_client("bind-a")
    coll = fresh(client.get_database())
    outer = client.start_session()
    with outer.bind():
        outer.start_transaction()
        coll.insert_one({"_id": 1})
        inner = client.start_session()
        with inner.bind():
            assert coll.find()._session is inner
            coll.insert_one({"_id": 2})  # not in outer's transaction
            assert outside(pymongo_client, coll) == [2]
        assert inner.has_ended and not outer.has_ended
        assert coll.find()._session is outer
        # outer's transaction sees its own write, not inner's (committed after its snapshot)
        assert coll.count_documents({}) == 1
        outer.commit_transaction()
    assert outer.has_ended
    assert coll.find()._session is None
    assert outside(pymongo_client, coll) == [1, 2]


def test_unacknowledged_write_in_the_bound_session(manager, pymongo_client):
    # The bound session counts as an explicit one (pymongo: "Explicit sessions are incompatible...").
    coll = manager.get_database("bind-a")["items"].with_options(write_concern=WriteConcern(w=0))
    with manager.get_client("bind-a").start_session() as s, s.bind(end_session=False):
        with pytest.raises(ConfigurationError, match="Explicit sessions are incompatible"):
            coll.insert_one({})
    with pymongo_client.start_session() as s, s.bind(end_session=False):
        with pytest.raises(ConfigurationError, match="Explicit sessions are incompatible"):
            pymongo_client.db.items.with_options(write_concern=WriteConcern(w=0)).insert_one({})


def test_other_threads_do_not_see_the_binding(manager, pymongo_client):
    client = manager.get_client("bind-a")
    coll = fresh(client.get_database())
    other_tenant = manager.get_database("bind-b")["items"]
    seen: dict = {}

    def other_thread() -> None:
        seen["cursor_session"] = coll.find()._session
        coll.insert_one({"_id": 2})  # not in the bound session's transaction
        seen["other_tenant"] = other_tenant.find_one()  # no InvalidOperation: nothing bound here

    with client.start_session() as s, s.bind(end_session=False):
        s.start_transaction()
        coll.insert_one({"_id": 1})
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert seen["cursor_session"] is None and "other_tenant" in seen
        assert outside(pymongo_client, coll) == [2]
        s.commit_transaction()
    assert outside(pymongo_client, coll) == [1, 2]


def test_pymongo_does_the_same(manager, mongodb_uri, pymongo_client):
    # The reference: the same scenario through pymongo and through tenantpool, the same observations.
    def scenario(client, coll, observer) -> list:
        def observe() -> int:  # from another thread: pymongo refuses another client in the block
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(observer.count_documents, {}).result()

        seen = []
        with client.start_session() as s, s.bind(end_session=False):
            with s.start_transaction():
                coll.insert_one({"_id": 1})
                seen.append(coll.count_documents({}))
                seen.append(observe())
            seen.append(s.has_ended)
        seen.append(observe())
        return seen

    with MongoClient(mongodb_uri) as reference:
        reference.drop_database("bind-ref")
        reference["bind-ref"].create_collection("items")
        expected = scenario(reference, reference["bind-ref"]["items"], pymongo_client["bind-ref"]["items"])
    coll = fresh(manager.get_database("bind-a"))
    got = scenario(manager.get_client("bind-a"), coll, pymongo_client[coll.database.name][coll.name])
    assert got == expected == [1, 0, False, 1]


# -- asyncio --------------------------------------------------------------------------------------------


@pytest.fixture
def amanager_uri(mongodb_uri):
    return mongodb_uri


def test_async_bind(amanager_uri, pymongo_client):
    async def main() -> None:
        async with AsyncUserConnectionManager(amanager_uri, appName="tp-bind-async") as m:
            client = m.get_client("bind-a")
            db = client.get_database()
            await db.drop_collection("items")
            await db.create_collection("items")
            coll = db["items"]
            s = client.start_session()
            async with s.bind() as bound:
                assert bound is s
                await s.start_transaction()
                await coll.insert_one({"_id": 1})
                await coll.update_one({"_id": 1}, {"$set": {"x": 1}})
                assert await coll.count_documents({}) == 1
                assert (await coll.find_one({"_id": 1}))["x"] == 1
                assert [d["_id"] async for d in coll.find()] == [1]
                assert [d["_id"] async for d in await coll.aggregate([])] == [1]
                assert coll.find()._session is s
                assert outside(pymongo_client, coll) == []
                # Another tenant's operation raises pymongo's error.
                with pytest.raises(InvalidOperation) as info:
                    await m.get_database("bind-b")["items"].find_one()
                assert str(info.value) == OTHER_CLIENT
                with pytest.raises(InvalidOperation) as info:
                    m.get_database("bind-b")["items"].find()
                assert str(info.value) == OTHER_CLIENT
                await s.commit_transaction()
            assert s.has_ended
            assert outside(pymongo_client, coll) == [1]
            assert coll.find()._session is None

            s = client.start_session()
            async with s.bind(end_session=False):
                await coll.find_one()
            assert not s.has_ended
            await s.end_session()

            with pytest.raises(TypeError):
                with client.start_session().bind():
                    pass

    asyncio.run(main())


def test_async_tasks_do_not_see_each_others_binding(amanager_uri, pymongo_client):
    async def main() -> None:
        async with AsyncUserConnectionManager(amanager_uri, appName="tp-bind-async") as m:
            client = m.get_client("bind-a")
            db = client.get_database()
            await db.drop_collection("items")
            coll = await db.create_collection("items")
            bound = asyncio.Event()
            done = asyncio.Event()

            async def other_task() -> None:
                await bound.wait()
                assert coll.find()._session is None
                await coll.insert_one({"_id": 2})  # not in the other task's transaction
                await m.get_database("bind-b")["items"].find_one()  # nothing bound in this task
                done.set()

            task = asyncio.create_task(other_task())
            async with client.start_session() as s, s.bind(end_session=False):
                await s.start_transaction()
                await coll.insert_one({"_id": 1})
                bound.set()
                await done.wait()
                assert outside(pymongo_client, coll) == [2]
                # A task started inside the block copies the context: it sees the binding, as in pymongo
                # (it counts in the transaction, whose snapshot predates _id 2).
                inherited = await asyncio.create_task(coll.count_documents({}))
                assert inherited == 1
                await s.commit_transaction()
            await task
            assert outside(pymongo_client, coll) == [1, 2]

    asyncio.run(main())


def test_sync_and_async_bindings_are_separate(mongodb_uri):
    # As in pymongo (one ContextVar per API): a bound sync session is not the async API's, and back.
    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, appName="tp-bind-async") as am:
            with UserConnectionManager(mongodb_uri, appName="tp-bind") as m:
                with m.get_client("bind-a").start_session() as s, s.bind(end_session=False):
                    assert am.get_database("bind-a")["items"].find()._session is None
                    await am.get_database("bind-b")["items"].find_one()
                async with am.get_client("bind-a").start_session() as s, s.bind(end_session=False):
                    assert m.get_database("bind-a")["items"].find()._session is None
                    m.get_database("bind-b")["items"].find_one()

    asyncio.run(main())
