"""Sessions and transactions in the asyncio API (AsyncTenantClient.start_session, AsyncClientSession),
against the replica-set test server, under asyncio and uvloop: commit, abort, the transaction block,
with_transaction's retries, two tenants at once, the tenant check, and cancellation that leaves the
session, its transaction and the tenant's quota clean."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from bson import Binary
from pymongo.client_session import SessionOptions, TransactionOptions
from pymongo.errors import InvalidOperation, OperationFailure, WriteConcernError
from pymongo.write_concern import WriteConcern
from tests.helpers import LOOPS, PATIENT, eventually, run

from tenantpool import AsyncClientSession, AsyncTenantClient, AsyncUserConnectionManager


def transactions(pymongo_client) -> dict:
    return pymongo_client.admin.command("serverStatus")["transactions"]


def fail_point(pymongo_client, mode, **data) -> None:
    pymongo_client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)


def fail_point_off(pymongo_client) -> None:
    pymongo_client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.mark.parametrize("loop", LOOPS)
def test_commit_abort_and_the_transaction_block(mongodb_uri, loop):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, **PATIENT) as manager:
            db = manager.get_database("atx")
            await db.accounts.drop()
            await db.accounts.insert_many([{"_id": "a", "balance": 100}, {"_id": "b", "balance": 0}])
            client = manager.get_client("atx")

            # pymongo's shape: start_session() is not a coroutine, start_transaction() is awaited.
            async with client.start_session() as s:
                assert isinstance(s, AsyncClientSession)
                assert s.client is client and isinstance(s.client, AsyncTenantClient)
                assert isinstance(s.options, SessionOptions)
                assert isinstance(s.session_id["id"], Binary) and s.session_id["id"].subtype == 4
                assert not s.in_transaction and not s.has_ended
                async with await s.start_transaction() as inner:
                    assert inner is s and s.in_transaction
                    await db.accounts.update_one({"_id": "a"}, {"$inc": {"balance": -30}}, session=s)
                    await db.accounts.update_one({"_id": "b"}, {"$inc": {"balance": 30}}, session=s)
                    # The transaction sees its own writes; nobody else does before the commit.
                    assert (await db.accounts.find_one({"_id": "b"}, session=s))["balance"] == 30
                    assert [d["balance"] async for d in db.accounts.find({}, session=s).sort("_id")] == [
                        70,
                        30,
                    ]
                    assert await db.accounts.count_documents({"balance": 30}, session=s) == 1
                    agg = await db.accounts.aggregate([{"$match": {"_id": "a"}}], session=s)
                    assert (await agg.to_list())[0]["balance"] == 70
                    assert (await db.accounts.find_one({"_id": "b"}))["balance"] == 0
                assert not s.in_transaction
            assert s.has_ended
            assert [d["balance"] async for d in db.accounts.find().sort("_id")] == [70, 30]

            # Motor's shape: the session awaited, the transaction block entered without await.
            async with await client.start_session() as s:
                async with s.start_transaction():
                    await db.accounts.update_one({"_id": "a"}, {"$inc": {"balance": -10}}, session=s)
            assert (await db.accounts.find_one({"_id": "a"}))["balance"] == 60

            # Explicit commit and abort.
            async with client.start_session() as s:
                await s.start_transaction()
                await db.accounts.update_one({"_id": "a"}, {"$inc": {"balance": -60}}, session=s)
                await s.abort_transaction()
                assert not s.in_transaction
                await s.start_transaction()
                with pytest.raises(InvalidOperation, match="already in progress"):
                    await s.start_transaction()
                await db.accounts.update_one({"_id": "b"}, {"$inc": {"balance": 1}}, session=s)
                await s.commit_transaction()
                assert not s.in_transaction
            assert [d["balance"] async for d in db.accounts.find().sort("_id")] == [60, 31]

            # An error inside the block aborts, and propagates.
            with pytest.raises(ZeroDivisionError):
                async with client.start_session() as s, s.start_transaction():
                    await db.accounts.update_one({"_id": "a"}, {"$set": {"balance": -1}}, session=s)
                    await db.accounts.insert_one({"_id": "c"}, session=s)
                    1 / 0  # noqa: B018
            assert not s.in_transaction and s.has_ended
            assert [d["balance"] async for d in db.accounts.find().sort("_id")] == [60, 31]

            # end_session aborts an open transaction; an ended session is refused everywhere.
            s = client.start_session()
            await s.start_transaction()
            await db.accounts.insert_one({"_id": "d"}, session=s)
            await s.end_session()
            assert s.has_ended and not s.in_transaction
            await s.end_session()  # twice is fine
            assert await db.accounts.count_documents({"_id": "d"}) == 0
            with pytest.raises(InvalidOperation, match="ended session"):
                await db.accounts.insert_one({}, session=s)
            with pytest.raises(InvalidOperation, match="ended session"):
                db.accounts.find({}, session=s)
            with pytest.raises(InvalidOperation, match="ended session"):
                await s.start_transaction()

            # default_transaction_options are inherited (w: 5 cannot be satisfied by one node), and an
            # option given to start_transaction wins.
            wc = WriteConcern(w=5, wtimeout=100)
            options = TransactionOptions(write_concern=wc)
            async with client.start_session(default_transaction_options=options) as s:
                assert s.options.default_transaction_options.write_concern == wc
                with pytest.raises(WriteConcernError) as info:
                    async with await s.start_transaction():
                        await db.accounts.insert_one({"_id": "e"}, session=s)
                assert info.value.code == 100  # UnsatisfiableWriteConcern
                async with await s.start_transaction(write_concern=WriteConcern(w=1)):
                    await db.accounts.insert_one({"_id": "e2"}, session=s)
            assert await db.accounts.count_documents({"_id": "e2"}) == 1
            # Sync use of the async session is refused; a snapshot session has no transactions.
            with pytest.raises(TypeError, match="async with"):
                with client.start_session():
                    pass
            # (A snapshot read sees majority-committed data.)
            await db.accounts.with_options(write_concern=WriteConcern(w="majority")).insert_one({"_id": "m"})
            async with client.start_session(snapshot=True) as s:
                assert s.options.snapshot and not s.options.causal_consistency
                with pytest.raises(InvalidOperation, match="not supported in snapshot sessions"):
                    await s.start_transaction()
                assert await db.accounts.count_documents({"_id": "m"}, session=s) == 1
                await db.accounts.delete_one({"_id": "m"})
                assert await db.accounts.find_one({"_id": "m"}, session=s) == {"_id": "m"}
                assert s.operation_time is not None and s.cluster_time["clusterTime"] is not None

            # Change streams take the session too (outside a transaction, as the server requires).
            async with client.start_session() as s:
                stream = await db.accounts.watch(session=s, max_await_time_ms=100)
                async with stream:
                    await db.accounts.insert_one({"_id": "f"}, session=s)
                    change = await stream.next()
                    assert change["documentKey"] == {"_id": "f"}

            await eventually(
                lambda: manager.get_user_stats("atx")["in_use"] == 0, what="the sessions' leases to go"
            )

    run(main(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_with_transaction_retries_a_transient_error(mongodb_uri, pymongo_client, loop):
    app = f"tp-async-tx-{loop}"

    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, appName=app, **PATIENT) as manager:
            db = manager.get_database("atxretry")
            await db.items.drop()
            await db.create_collection("items")
            calls = []

            async def callback(session):
                calls.append(1)
                await db.items.insert_one({"attempt": len(calls)}, session=session)
                return "done"

            # The server fails the first insert inside the transaction with a TransientTransactionError.
            fail_point(
                pymongo_client,
                {"times": 1},
                failCommands=["insert"],
                errorCode=112,
                errorLabels=["TransientTransactionError"],
                appName=app,
            )
            try:
                async with manager.get_client("atxretry").start_session() as s:
                    assert await s.with_transaction(callback) == "done"
                    assert not s.in_transaction
            finally:
                fail_point_off(pymongo_client)
            assert len(calls) == 2, "the callback was not retried after the transient error"
            assert [d["attempt"] async for d in db.items.find()] == [2]

            # The commit is retried on UnknownTransactionCommitResult, and commits once.
            calls.clear()
            fail_point(
                pymongo_client,
                {"times": 2},
                failCommands=["commitTransaction"],
                errorCode=8,  # not a state change error, which would send the driver rediscovering
                errorLabels=["UnknownTransactionCommitResult"],
                appName=app,
            )
            try:
                async with manager.get_client("atxretry").start_session() as s:
                    assert await s.with_transaction(callback) == "done"
            finally:
                fail_point_off(pymongo_client)
            assert len(calls) == 1
            assert await db.items.count_documents({}) == 2

            # A non-transient error aborts and propagates, with nothing written.
            async def failing(session):
                await db.items.insert_one({"_id": "x"}, session=session)
                await db.items.insert_one({"_id": "x"}, session=session)  # duplicate key

            async with manager.get_client("atxretry").start_session() as s:
                with pytest.raises(OperationFailure) as info:
                    await s.with_transaction(failing)
                assert info.value.code == 11000
                assert not s.in_transaction
            assert await db.items.count_documents({"_id": "x"}) == 0

            # A callback that commits itself is left alone.
            async def commits_itself(session):
                await db.items.insert_one({"_id": "self"}, session=session)
                await session.commit_transaction()
                return 7

            async with manager.get_client("atxretry").start_session() as s:
                assert await s.with_transaction(commits_itself) == 7
            assert await db.items.count_documents({"_id": "self"}) == 1

    run(main(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_two_tenants_transactions_at_once(mongodb_uri, loop):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, user_pool_size=4, **PATIENT) as manager:
            tenants = ["atx_one", "atx_two"]
            for t in tenants:
                coll = manager.get_database(t).counter
                await coll.drop()
                await coll.insert_one({"_id": "n", "value": 0, "log": []})

            async def worker(tenant: str, w: int) -> None:
                coll = manager.get_database(tenant).counter

                async def increment(session):
                    doc = await coll.find_one({"_id": "n"}, session=session)
                    await coll.update_one(
                        {"_id": "n"},
                        {"$set": {"value": doc["value"] + 1}, "$push": {"log": f"{tenant}-{w}"}},
                        session=session,
                    )

                async with manager.get_client(tenant).start_session() as s:
                    for _ in range(4):
                        # Concurrent read-modify-writes of one document conflict: WriteConflict is a
                        # TransientTransactionError, which with_transaction retries.
                        await s.with_transaction(increment)

            async def aborter(tenant: str) -> None:
                coll = manager.get_database(tenant).counter
                for _ in range(5):
                    async with manager.get_client(tenant).start_session() as s:
                        await s.start_transaction()
                        await coll.insert_one({"_id": f"never-{time.monotonic_ns()}"}, session=s)
                        await s.abort_transaction()

            await asyncio.gather(
                *(worker(t, w) for t in tenants for w in range(4)), aborter(tenants[0]), aborter(tenants[1])
            )
            for t in tenants:
                coll = manager.get_database(t).counter
                doc = await coll.find_one({"_id": "n"})
                assert doc["value"] == 16, f"{t}: lost updates {doc}"
                assert sorted(set(doc["log"])) == sorted(f"{t}-{w}" for w in range(4))
                assert await coll.count_documents({}) == 1  # no aborted insert landed
            for t in tenants:
                info = manager.get_user_stats(t)
                assert (info["in_use"], info["in_flight"], info["waiting"]) == (0, 0, 0)

    run(main(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_session_belongs_to_its_tenant(mongodb_uri, loop):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, **PATIENT) as manager:
            intruder = manager.get_database("atx_intruder").c
            async with manager.get_client("atx_owner").start_session() as s:
                with pytest.raises(InvalidOperation, match="belongs to tenant"):
                    await intruder.insert_one({}, session=s)
                with pytest.raises(InvalidOperation, match="belongs to tenant"):
                    intruder.find({}, session=s)
                with pytest.raises(InvalidOperation, match="belongs to tenant"):
                    await intruder.aggregate([], session=s)
                with pytest.raises(InvalidOperation, match="belongs to tenant"):
                    await intruder.watch(session=s)
                with pytest.raises(InvalidOperation, match="belongs to tenant"):
                    await manager.get_database("atx_intruder").command("ping", session=s)
                async with await s.start_transaction():
                    with pytest.raises(InvalidOperation, match="belongs to tenant"):
                        await intruder.insert_one({}, session=s)
                    await manager.get_database("atx_owner").c.insert_one({"ok": 1}, session=s)
            assert await intruder.count_documents({}) == 0
            assert await manager.get_database("atx_owner").c.count_documents({"ok": 1}) >= 1
            with pytest.raises(ValueError, match="ClientSession"):
                intruder.find({}, session="not a session")

    run(main(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_task_mid_transaction_leaves_nothing_behind(mongodb_uri, pymongo_client, loop):
    app = f"tp-async-tx-cancel-{loop}"
    tenant = "atx_cancel"

    async def main():
        async with AsyncUserConnectionManager(
            mongodb_uri, user_pool_size=3, appName=app, **PATIENT
        ) as manager:
            coll = manager.get_database(tenant).c
            await coll.drop()
            await coll.insert_one({"_id": "seed"})
            client = manager.get_client(tenant)
            open_before = transactions(pymongo_client)["currentOpen"]

            def quota_free() -> bool:
                info = manager.get_user_stats(tenant)
                return (info["in_flight"], info["waiting"]) == (0, 0)

            async def blocked_in(command: str, body) -> None:
                """Runs ``body`` in a task, cancels it once ``command`` is held by the server."""
                fail_point(
                    pymongo_client,
                    "alwaysOn",
                    failCommands=[command],
                    blockConnection=True,
                    blockTimeMS=1500,
                    appName=app,
                )
                try:
                    task = asyncio.ensure_future(body())
                    await eventually(
                        lambda: manager.get_user_stats(tenant)["in_flight"] >= 1 or task.done(),
                        what=f"{command} in flight",
                    )
                    assert not task.done(), task
                    await asyncio.sleep(0.1)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                finally:
                    fail_point_off(pymongo_client)

            # 1. Cancelled inside an operation of the transaction block: the block aborts.
            s = client.start_session()

            async def block_body():
                async with await s.start_transaction():
                    await coll.insert_one({"_id": "block"}, session=s)
                    await coll.find_one({"_id": "seed"}, session=s)  # held by the server, then cancelled

            await blocked_in("find", block_body)
            assert not s.in_transaction and not s.has_ended
            # The session's lock is free: it runs a new transaction at once.
            async with await s.start_transaction():
                await coll.insert_one({"_id": "after-block"}, session=s)
            await s.end_session()

            # 2. Cancelled inside with_transaction's callback: aborted, not retried.
            s = client.start_session()
            calls = []

            async def callback(session):
                calls.append(1)
                await coll.insert_one({"_id": "callback"}, session=session)
                await coll.find_one({"_id": "seed"}, session=session)

            await blocked_in("find", lambda: s.with_transaction(callback))
            assert calls == [1] and not s.in_transaction
            await s.end_session()

            # 3. Cancelled during the commit: the session is out of the transaction and usable.
            s = client.start_session()

            async def commit_body():
                async with await s.start_transaction():
                    await coll.insert_one({"_id": "commit"}, session=s)

            await blocked_in("commitTransaction", commit_body)
            assert not s.in_transaction
            await s.start_transaction()
            await coll.insert_one({"_id": "after-commit"}, session=s)
            await s.commit_transaction()
            await s.end_session()

            # 4. Cancelled while the task held a session with an open transaction that it never ends:
            # dropping the session aborts the transaction on the server.
            async def forgotten():
                fs = client.start_session()
                await fs.start_transaction()
                await coll.insert_one({"_id": "forgotten"}, session=fs)
                await coll.find_one({"_id": "seed"}, session=fs)

            await blocked_in("find", forgotten)
            gc.collect()

            # Nothing of the aborted transactions landed; what committed did.
            ids = {d["_id"] async for d in coll.find()}
            assert {"seed", "after-block", "after-commit"} <= ids
            assert not ids & {"block", "callback", "forgotten"}
            # The server has no transaction of ours left open.
            await eventually(
                lambda: transactions(pymongo_client)["currentOpen"] <= open_before,
                timeout=30,
                what="the server's open transactions to be aborted",
            )
            # The tenant's whole quota is available: no lease or slot leaked.
            await eventually(quota_free, what="the quota to be free")
            await eventually(lambda: manager.get_user_stats(tenant)["in_use"] == 0, what="leases")
            docs = await asyncio.gather(*(coll.find_one({"_id": "seed"}) for _ in range(3)))
            assert all(d == {"_id": "seed"} for d in docs)

    run(main(), loop)


def test_a_garbage_collected_session_aborts_its_transaction(mongodb_uri, pymongo_client):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, **PATIENT) as manager:
            coll = manager.get_database("atx_gc").c
            await coll.drop()
            await coll.insert_one({"_id": "x", "v": 0})
            before = transactions(pymongo_client)
            s = manager.get_client("atx_gc").start_session()
            await s.start_transaction()
            await coll.update_one({"_id": "x"}, {"$set": {"v": 1}}, session=s)
            assert transactions(pymongo_client)["currentOpen"] == before["currentOpen"] + 1
            del s
            gc.collect()
            await eventually(
                lambda: transactions(pymongo_client)["totalAborted"] > before["totalAborted"],
                what="the dropped session's transaction to be aborted",
            )
            assert transactions(pymongo_client)["currentOpen"] == before["currentOpen"]
            # The document is free: a write outside any transaction does not conflict.
            await coll.update_one({"_id": "x"}, {"$set": {"v": 2}})
            assert (await coll.find_one({"_id": "x"}))["v"] == 2
            await eventually(lambda: manager.get_user_stats("atx_gc")["in_use"] == 0, what="the lease")

    asyncio.run(main())
