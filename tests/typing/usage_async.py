"""The asyncio API as a user's code uses it, for ``mypy --strict`` (``make lint``): every line must
type-check as written, with no cast or ignore. Not a test module (pytest collects ``test_*.py``);
importing it runs nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from pymongo import DeleteOne, InsertOne, ReturnDocument
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

from tenantpool.asynchronous import (
    AsyncClientSession,
    AsyncCollection,
    AsyncCommandCursor,
    AsyncCursor,
    AsyncDatabase,
    AsyncTenantClient,
    AsyncUserConnectionManager,
)
from tenantpool.fastapi import TenantPool


async def crud(manager: AsyncUserConnectionManager) -> None:
    db: AsyncDatabase = manager.get_database("user_a")
    posts: AsyncCollection = db.posts
    same: AsyncCollection = db["posts"]
    other: AsyncCollection = db.get_collection("other").with_options()
    assert posts == same and other.database is db
    inserted: InsertOneResult = await posts.insert_one({"title": "Hello"})
    many: InsertManyResult = await posts.insert_many([{"n": 1}, {"n": 2}])
    updated: UpdateResult = await posts.update_many({}, {"$set": {"seen": True}})
    deleted: DeleteResult = await posts.delete_one({"n": 1})
    print(inserted.inserted_id, many.inserted_ids, updated.modified_count, deleted.deleted_count)
    doc: dict[str, Any] | None = await posts.find_one({"_id": inserted.inserted_id})
    count: int = await posts.count_documents({})
    values: list[Any] = await posts.distinct("title")
    found = await posts.find_one_and_replace({"n": 2}, {"n": 20}, return_document=ReturnDocument.AFTER)
    print(doc, count, values, found, await posts.estimated_document_count())
    result: BulkWriteResult = await posts.bulk_write([InsertOne({"n": 5}), DeleteOne({"n": 5})])
    names: list[str] = await db.list_collection_names()
    print(result.deleted_count, names, await db.command("ping"), await posts.create_index("n"))


async def cursors(db: AsyncDatabase) -> None:
    cursor: AsyncCursor = db.posts.find({"n": {"$gte": 0}}).sort("n", -1).skip(1).limit(10)
    async for post in cursor:
        print(post["n"])
    firsts: list[Any] = await db.posts.find().to_list(5)
    page: AsyncCursor = db.posts.find()[10:20]
    print(await page.to_list())
    async with db.posts.find().batch_size(2) as c:
        print(await c.next(), c.alive, c.retrieved, firsts)
        await c.close()
    pipeline: AsyncCommandCursor = await db.posts.aggregate([{"$match": {"n": 1}}])
    async for row in pipeline:
        print(row)
    print(await pipeline.try_next(), await (await db.posts.list_indexes()).to_list())
    print(await (await db.list_collections()).to_list())
    async with await db.posts.watch([{"$match": {"operationType": "insert"}}]) as stream:
        change = await stream.try_next()
        print(change, stream.resume_token)


async def sessions(manager: AsyncUserConnectionManager) -> None:
    client: AsyncTenantClient = manager.get_client("user_a")
    db: AsyncDatabase = client.get_database()
    async with client.start_session() as session:
        s: AsyncClientSession = session
        assert s.client is client
        async with await s.start_transaction():
            await db.posts.insert_one({"in": "transaction"}, session=s)

        async def callback(sess: AsyncClientSession) -> str:
            await db.posts.insert_one({"in": "with_transaction"}, session=sess)
            return "done"

        committed: str = await s.with_transaction(callback)
        print(committed, s.in_transaction)
    print(await client.list_database_names(), client["other"].name)


def fastapi_app() -> FastAPI:
    pool = TenantPool("mongodb://localhost:27017/")
    app = FastAPI(lifespan=pool.lifespan)
    pool.init_app(app)

    @app.get("/posts")
    async def posts(db: Annotated[AsyncDatabase, Depends(pool.user_database)]) -> dict[str, Any]:
        return {"posts": await db.posts.find({}, {"_id": 0}).to_list(100)}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        manager: AsyncUserConnectionManager = pool.manager
        return manager.get_stats()

    return app


async def lifecycle() -> None:
    async with AsyncUserConnectionManager("mongodb://localhost:27017/") as manager:
        await manager.provision_tenant("user_a", "secret")
        print(await manager.deprovision_tenant("user_a"))
        await manager.close_all()
