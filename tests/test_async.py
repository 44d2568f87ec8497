"""The asyncio API against a real mongod (issue: asyncio for FastAPI): correctness under 1,000 concurrent
tasks, an event loop that keeps ticking during a burst, and cancellation that leaks nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymongo.errors import DuplicateKeyError, InvalidOperation
from pymongo.results import InsertOneResult
from tests.helpers import LOOPS, PATIENT, app_connections, run

from tenantpool import AsyncCollection, AsyncCursor, AsyncDatabase, AsyncUserConnectionManager


@pytest.mark.parametrize("loop", LOOPS)
def test_crud_cursors_and_errors(mongodb_uri, loop):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, **PATIENT) as manager:
            db = manager.get_database("async_crud")
            assert isinstance(db, AsyncDatabase) and isinstance(db.posts, AsyncCollection)
            await db.posts.drop()
            result = await db.posts.insert_one({"title": "a", "n": 0})
            assert isinstance(result, InsertOneResult)
            assert (await db.posts.find_one({"_id": result.inserted_id}))["title"] == "a"
            await db.posts.insert_many([{"n": i} for i in range(1, 250)])
            cursor = db.posts.find({}, {"_id": 0, "n": 1}).sort("n", -1).skip(5).limit(200)
            assert isinstance(cursor, AsyncCursor)
            assert [d["n"] async for d in cursor] == list(range(244, 44, -1))
            assert len(await db.posts.find().batch_size(7).to_list(20)) == 20
            update = await db.posts.update_many({"n": {"$lt": 10}}, {"$set": {"small": True}})
            assert update.modified_count == 10
            assert await db.posts.count_documents({"small": True}) == 10
            agg = await db.posts.aggregate([{"$match": {"small": True}}, {"$count": "k"}])
            assert await agg.to_list(None) == [{"k": 10}]
            await db.posts.create_index("n", unique=True)
            with pytest.raises(DuplicateKeyError):
                await db.posts.insert_one({"n": 3})
            assert (await db.posts.delete_many({"small": True})).deleted_count == 10
            assert "posts" in await db.list_collection_names()
            with pytest.raises(TypeError, match="async for"):
                iter(db.posts.find())
        with pytest.raises(InvalidOperation):
            await db.posts.find_one()

    run(main(), loop)


def test_thousand_concurrent_tasks_over_hundred_tenants(mongodb_uri):
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, user_pool_size=5, **PATIENT) as manager:

            async def task(i: int) -> tuple[int, int]:
                coll = manager.get_database(f"at{i % 100}").items
                await coll.insert_one({"task": i})
                doc = await coll.find_one({"task": i})
                return i, doc["task"]

            results = await asyncio.gather(*(task(i) for i in range(1000)))
            assert results == [(i, i) for i in range(1000)]
            counts = await asyncio.gather(
                *(manager.get_database(f"at{t}").items.count_documents({}) for t in range(100))
            )
            assert counts == [10] * 100
            assert manager.get_stats()["pools"]["operation_errors"] == 0
            for t in range(100):
                await manager.get_database(f"at{t}").items.drop()

    asyncio.run(main())


def test_event_loop_keeps_ticking_during_a_burst(mongodb_uri):
    lags: list[float] = []

    async def main():
        async with AsyncUserConnectionManager(
            mongodb_uri, strategy="shared", user_pool_size=10, **PATIENT
        ) as manager:
            for t in range(50):
                await manager.get_database(f"burst{t}").c.insert_one({"x": t})
            done = asyncio.Event()

            async def heartbeat() -> None:
                while not done.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.01)
                    lags.append(time.perf_counter() - before - 0.01)

            beat = asyncio.create_task(heartbeat())
            # A fast burst can be over before the heartbeat has ticked five times: burst again.
            for _ in range(20):
                await asyncio.gather(
                    *(manager.get_database(f"burst{i % 50}").c.find_one({}) for i in range(5000))
                )
                if len(lags) >= 5:
                    break
            done.set()
            await beat

    asyncio.run(main())
    assert len(lags) >= 5, "the heartbeat never ran during the burst"
    # Generous: decoding 5,000 replies is Python work on the loop; the database waits are not.
    assert max(lags) < 1.0, f"event loop lag {max(lags):.3f}s"


def test_cancelled_tasks_release_quota_and_connections(mongodb_uri, pymongo_client):
    app = "tp-async-cancel"

    async def main():
        async with AsyncUserConnectionManager(
            mongodb_uri, user_pool_size=5, appName=app, **PATIENT
        ) as manager:
            coll = manager.get_database("cancelme").c
            await coll.insert_one({"x": 1})
            baseline = app_connections(pymongo_client, app)
            slow = {"$where": "sleep(2000) || true"}
            tasks = [asyncio.ensure_future(coll.find_one(slow)) for _ in range(500)]
            # Wait until the quota is really full (5 in flight, the rest queued) before cancelling.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                info = manager.get_user_stats("cancelme")
                if info["in_flight"] == 5 and info["waiting"] >= 400:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail(f"quota never filled: {manager.get_user_stats('cancelme')}")
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)

            # The full quota is usable again: 5 concurrent operations run at once.
            deadline = time.monotonic() + 10
            while manager.get_user_stats("cancelme")["in_use"] > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            info = manager.get_user_stats("cancelme")
            assert (info["in_use"], info["in_flight"], info["waiting"]) == (0, 0, 0)
            # A leaked slot would make these wait for ever: waitQueueTimeoutMS turns that into an error.
            docs = await asyncio.gather(*(coll.find_one({"x": 1}) for _ in range(5)))
            assert all(d["x"] == 1 for d in docs)

            # Connections cut mid-operation are closed, not leaked: back to the baseline.
            deadline = time.monotonic() + 20
            while app_connections(pymongo_client, app) > baseline + 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert app_connections(pymongo_client, app) <= baseline + 5

    asyncio.run(main())
