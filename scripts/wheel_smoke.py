"""Smoke test of an INSTALLED tenantpool wheel, run by scripts/wheel_test.py inside a clean venv.

Run it from a directory outside the source tree, with the venv's python, so that ``import tenantpool``
finds the installed wheel and not ``python/``. It starts its own mongod (the wheel's
``tenantpool.testing.mongod``; ``$TENANTPOOL_MONGOD`` names the binary) and checks CRUD, a cursor over
several server batches, the asyncio API, and the Flask and FastAPI integrations (the ``flask`` and
``fastapi`` extras). Exits non-zero on the first failure.
"""

import asyncio
import os
import sys
import sysconfig
import time


def check_installed():
    import tenantpool
    from tenantpool import _core

    purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
    where = os.path.realpath(tenantpool.__file__)
    assert where.startswith(purelib + os.sep), f"tenantpool imported from {where}, not from {purelib}"
    # One abi3 extension serves every CPython from 3.9 on.
    assert ".abi3." in os.path.basename(_core.__file__), f"not an abi3 extension: {_core.__file__}"
    import pymongo

    print(f"python {sys.version.split()[0]}, pymongo {pymongo.version}, tenantpool {tenantpool.__version__}")


def check_sync(uri):
    import pymongo
    from pymongo.errors import DuplicateKeyError

    from tenantpool import UserConnectionManager

    with UserConnectionManager(uri, user_pool_size=2) as manager:
        db = manager.get_database("smoke")
        assert db.name == "user_smoke_db", db.name
        posts = db.posts
        posts.drop()
        post_id = posts.insert_one({"title": "Hello", "n": 0}).inserted_id
        assert posts.find_one({"_id": post_id})["title"] == "Hello"
        assert posts.update_one({"_id": post_id}, {"$inc": {"n": 1}}).modified_count == 1
        assert posts.find_one({"_id": post_id}, {"_id": 0}) == {"title": "Hello", "n": 1}
        try:
            posts.insert_one({"_id": post_id})
        except DuplicateKeyError as exc:  # pymongo's own class
            assert exc.code == 11000, exc.code
        else:
            raise AssertionError("a duplicate _id was accepted")
        assert posts.delete_one({"_id": post_id}).deleted_count == 1

        # A cursor over several server batches (batch_size 3, 10 documents: a find and 3 getMores).
        posts.insert_many([{"i": i} for i in range(10)])
        cursor = posts.find({}, {"_id": 0}).sort("i", pymongo.DESCENDING).batch_size(3)
        assert [d["i"] for d in cursor] == list(range(9, -1, -1))
        assert posts.count_documents({"i": {"$gte": 5}}) == 5
        assert manager.get_stats()["active_users"] == ["smoke"]


async def _async_checks(uri):
    from tenantpool import AsyncUserConnectionManager

    manager = AsyncUserConnectionManager(uri, user_pool_size=2)
    try:
        db = manager.get_database("smoke_async")
        await db.items.drop()
        await db.items.insert_many([{"i": i} for i in range(5)])
        seen = [d["i"] async for d in db.items.find().sort("i", 1).batch_size(2)]
        assert seen == [0, 1, 2, 3, 4], seen
        counts = await asyncio.gather(*(db.items.count_documents({"i": {"$lt": n}}) for n in range(5)))
        assert counts == [0, 1, 2, 3, 4], counts
    finally:
        await manager.close()


def check_async(uri):
    asyncio.run(_async_checks(uri))


def check_flask(uri):
    from flask import Flask, g

    from tenantpool.flask import TenantPool, require_user_db

    app = Flask("smoke")
    pool = TenantPool(app, uri=uri, trust_header=True)

    @app.post("/notes")
    @require_user_db
    def add():
        g.db.notes.insert_one({"text": "hi"})
        return {"count": g.db.notes.count_documents({})}

    client = app.test_client()
    try:
        first = client.post("/notes", headers={"X-User-ID": "flask_a"})
        assert first.status_code == 200 and first.get_json() == {"count": 1}, first.data
        assert client.post("/notes", headers={"X-User-ID": "flask_b"}).get_json() == {"count": 1}
        missing = client.post("/notes")
        assert missing.status_code == 400 and "error" in missing.get_json(), missing.data
    finally:
        with app.app_context():  # the manager belongs to the app (one per process, made on first use)
            for tenant in ("flask_a", "flask_b"):
                pool.manager.get_database(tenant).notes.drop()
        pool.close(app)


def check_fastapi(uri):
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from tenantpool.fastapi import TenantPool

    pool = TenantPool(uri, trust_header=True)
    app = FastAPI(lifespan=pool.lifespan)
    pool.init_app(app)

    @app.post("/notes")
    async def add(db=Depends(pool.user_database)):  # noqa: B008 (FastAPI's idiom)
        await db.notes.insert_one({"text": "hi"})
        return {"count": await db.notes.count_documents({}), "db": db.name}

    with TestClient(app) as client:  # runs the lifespan: the manager opens and closes with it
        for tenant in ("fastapi_a", "fastapi_a", "fastapi_b"):
            response = client.post("/notes", headers={"X-User-ID": tenant})
            assert response.status_code == 200, response.text
        assert response.json() == {"count": 1, "db": "user_fastapi_b_db"}, response.json()
        missing = client.post("/notes")
        assert missing.status_code == 400 and "error" in missing.json(), missing.text
        response = client.post("/notes", headers={"X-User-ID": "fastapi_a"})
        assert response.json()["count"] == 3, response.json()


def main():
    from tenantpool.testing.mongod import MongodProcess

    check_installed()
    started = time.monotonic()
    with MongodProcess() as server:
        print(f"  mongod up in {time.monotonic() - started:.1f} s")
        for check in (check_sync, check_async, check_flask, check_fastapi):
            t0 = time.monotonic()
            check(server.uri)
            print(f"  {check.__name__}: ok ({time.monotonic() - t0:.2f} s)")
    print(f"smoke: ok ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
