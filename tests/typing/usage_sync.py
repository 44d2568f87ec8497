"""The sync API as a user's code uses it, for ``mypy --strict`` (``make lint``): every line must type-check
as written, with no cast or ignore. Not a test module (pytest collects ``test_*.py``); importing it runs
nothing."""

from __future__ import annotations

from typing import Any

from flask import Flask
from pymongo import ASCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

from tenantpool import ClientSession, Collection, Cursor, Database, TenantClient, UserConnectionManager
from tenantpool.cursor import CommandCursor
from tenantpool.flask import TenantPool


def crud(manager: UserConnectionManager) -> None:
    db: Database = manager.get_database("user_a")
    posts: Collection = db.posts
    same: Collection = db["posts"]
    assert posts == same and posts.name == "posts" and posts.full_name == "user_a_db.posts"
    inserted: InsertOneResult = posts.insert_one({"title": "Hello"})
    many: InsertManyResult = posts.insert_many([{"n": 1}, {"n": 2}])
    updated: UpdateResult = posts.update_one({"_id": inserted.inserted_id}, {"$set": {"seen": True}})
    replaced: UpdateResult = posts.replace_one({"n": 1}, {"n": 10}, upsert=True)
    deleted: DeleteResult = posts.delete_many({"n": {"$gt": 5}})
    print(many.inserted_ids, updated.modified_count, replaced.upserted_id, deleted.deleted_count)
    doc: dict[str, Any] | None = posts.find_one({"_id": inserted.inserted_id})
    print(doc, posts.count_documents({}), posts.estimated_document_count(), posts.distinct("title"))
    found = posts.find_one_and_update({"n": 2}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
    print(found, posts.find_one_and_delete({"n": 3}))
    name: str = posts.create_index([("title", ASCENDING)], unique=True)
    print(name, posts.index_information(), posts.drop_index(name))
    result: BulkWriteResult = posts.bulk_write([InsertOne({"n": 4}), UpdateOne({"n": 4}, {"$set": {"m": 1}})])
    print(result.inserted_count, db.list_collection_names(), db.command("ping"))


def cursors(db: Database) -> None:
    cursor: Cursor = db.posts.find({"n": {"$gte": 0}}, {"_id": 0}).sort("n", -1).skip(1).limit(10)
    for post in cursor:
        print(post["n"])
    firsts: list[Any] = db.posts.find().batch_size(2).to_list(5)
    page: Cursor = db.posts.find()[10:20]
    print(db.posts.find()[0], list(page))
    with db.posts.find() as c:
        print(c.next(), c.alive, c.retrieved, firsts)
        c.close()
    pipeline: CommandCursor = db.posts.aggregate([{"$match": {"n": 1}}])
    for row in pipeline:
        print(row)
    print(pipeline.try_next(), db.posts.list_indexes().to_list(), db.list_collections().to_list())


def sessions(manager: UserConnectionManager) -> None:
    client: TenantClient = manager.get_client("user_a")
    db: Database = client.get_database()
    with client.start_session() as session:
        s: ClientSession = session
        with s.start_transaction():
            db.posts.insert_one({"in": "transaction"}, session=s)
        committed: str = s.with_transaction(lambda sess: "done")
        print(committed, s.in_transaction, s.session_id)
    print(client.list_database_names(), client["other"].name, client.admin.name)


def flask_app() -> Flask:
    app = Flask(__name__)
    pool = TenantPool(app)

    @app.get("/posts")
    @pool.require_user_db
    def posts() -> dict[str, Any]:
        manager: UserConnectionManager = pool.manager
        return {"n": manager.get_database("user_a").posts.count_documents({})}

    return app


def lifecycle() -> None:
    with UserConnectionManager("mongodb://localhost:27017/", user_pool_size=5) as manager:
        print(manager.get_stats(), manager.get_user_stats("user_a"), manager.close_user_connection("user_a"))
        manager.close_all()
