"""tenantpool.gridfs beyond what the differential cases compare with pymongo: a tenant's bucket lives in
its own database, retryable writes and reads, bound sessions, clear errors for wrong arguments, and the
asyncio classes awaiting an async source and destination."""

from __future__ import annotations

import asyncio
import io
from contextlib import contextmanager

import gridfs
import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import InvalidOperation, OperationFailure

from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.gridfs import (
    AsyncGridFS,
    AsyncGridFSBucket,
    GridFS,
    GridFSBucket,
    GridOut,
    NoFile,
)


@contextmanager
def fail_point(client: MongoClient, app_name: str, **data):
    client.admin.command(
        "configureFailPoint", "failCommand", mode={"times": 1}, data={"appName": app_name, **data}
    )
    try:
        yield
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.fixture
def manager(mongodb_uri):
    with UserConnectionManager(mongodb_uri, appName="tp-gridfs") as manager:
        yield manager


def test_pymongo_gridfs_refuses_a_tenant_database_and_tenantpool_takes_it(manager):
    db = manager.get_database("gfs_types")
    # The issue: pymongo's classes check for pymongo's Database.
    with pytest.raises(TypeError, match="database must be an instance of Database"):
        gridfs.GridFSBucket(db)
    with pytest.raises(TypeError, match="database must be an instance of Database"):
        gridfs.GridFS(db)
    assert isinstance(GridFSBucket(db), GridFSBucket) and isinstance(GridFS(db), GridFS)


def test_wrong_arguments_say_what_to_do(manager, pymongo_client, mongodb_uri):
    db = manager.get_database("gfs_args")
    with pytest.raises(TypeError, match="pymongo's own gridfs"):
        GridFSBucket(pymongo_client[db.name])
    with pytest.raises(TypeError, match="AsyncGridFSBucket"):
        GridFSBucket(AsyncUserConnectionManager(mongodb_uri).get_database("gfs_args"))
    with pytest.raises(TypeError, match="GridFSBucket"):
        AsyncGridFSBucket(db)
    with pytest.raises(ValueError, match="positive"):
        GridFSBucket(db, chunk_size_bytes=0)
    with pytest.raises(TypeError, match="chunk_size_bytes must be an integer"):
        GridFSBucket(db, chunk_size_bytes="255k")
    bucket = GridFSBucket(db)
    with pytest.raises(ValueError, match="positive"):
        bucket.upload_from_stream("f", b"data", chunk_size_bytes=-1)
    with pytest.raises(TypeError, match="revision must be an int"):
        bucket.open_download_stream_by_name("f", "1")
    # A file opened in text mode: pymongo fails deep in its buffer with "a bytes-like object is required".
    with pytest.raises(TypeError, match="binary mode"):
        bucket.upload_from_stream("f", io.StringIO("text"))

    class AsyncSource:
        async def read(self, n):
            return b""

    with pytest.raises(TypeError, match="AsyncGridFSBucket"):
        bucket.upload_from_stream("f", AsyncSource())
    # None of these left a file behind.
    assert db.fs.files.count_documents({}) == 0


def test_a_tenants_bucket_lives_in_its_own_database(manager, pymongo_client):
    a, b = manager.get_database("gfs_tenant_a"), manager.get_database("gfs_tenant_b")
    assert (a.name, b.name) == ("user_gfs_tenant_a_db", "user_gfs_tenant_b_db")
    for db in (a, b):
        pymongo_client.drop_database(db.name)
    file_id = GridFSBucket(a).upload_from_stream("secret.txt", b"tenant a's data")
    # Stored in a's database, with pymongo's layout, readable by pymongo's gridfs there.
    assert pymongo_client[a.name].fs.files.find_one({"_id": file_id})["filename"] == "secret.txt"
    theirs = gridfs.GridFSBucket(pymongo_client[a.name])
    assert theirs.open_download_stream(file_id).read() == b"tenant a's data"
    # Tenant b's bucket of the same name is another one.
    bucket_b = GridFSBucket(b)
    assert list(bucket_b.find()) == []
    with pytest.raises(NoFile):
        bucket_b.open_download_stream(file_id)
    with pytest.raises(NoFile):
        bucket_b.open_download_stream_by_name("secret.txt")
    assert not {"fs.files", "fs.chunks"} & set(pymongo_client[b.name].list_collection_names())


def test_uploads_and_downloads_are_retried_after_a_network_error(manager, pymongo_client):
    db = manager.get_database("gfs_retry")
    pymongo_client.drop_database(db.name)
    bucket = GridFSBucket(db, chunk_size_bytes=1000)
    data = bytes(range(256)) * 40
    # The fail point reaches tenantpool's commands: a non-retryable error fails the upload.
    with fail_point(pymongo_client, "tp-gridfs", failCommands=["insert"], errorCode=2):
        with pytest.raises(OperationFailure):
            bucket.upload_from_stream("not retried", data)
    # The first insert (the chunks) loses its connection: insert_many retries it, applied once.
    with fail_point(pymongo_client, "tp-gridfs", failCommands=["insert"], closeConnection=True):
        file_id = bucket.upload_from_stream("r", data)
    assert pymongo_client[db.name].fs.chunks.count_documents({"files_id": file_id}) == 11
    # The file document's lookup loses its connection: a retryable read.
    with fail_point(pymongo_client, "tp-gridfs", failCommands=["find"], closeConnection=True):
        grid_out = bucket.open_download_stream(file_id)
    with fail_point(pymongo_client, "tp-gridfs", failCommands=["find"], closeConnection=True):
        assert grid_out.read() == data
    with fail_point(pymongo_client, "tp-gridfs", failCommands=["delete"], closeConnection=True):
        bucket.delete(file_id)
    assert pymongo_client[db.name].fs.chunks.count_documents({}) == 0


def test_a_bound_session_is_used_and_a_transaction_refused(manager):
    db = manager.get_database("gfs_bound")
    bucket = GridFSBucket(db)
    session = manager.get_client("gfs_bound").start_session()
    with session.bind():
        file_id = bucket.upload_from_stream("in session", b"x")
        assert bucket.open_download_stream(file_id).read() == b"x"
        session.start_transaction()
        # Given no session, GridFS runs in the bound one, where pymongo's rule refuses transactions.
        with pytest.raises(InvalidOperation, match="multi-document transactions"):
            bucket.upload_from_stream("in a transaction", b"x")
        with pytest.raises(InvalidOperation, match="multi-document transactions"):
            GridFS(db).get(file_id)
        session.abort_transaction()
    assert session.has_ended


def test_grid_out_objects_do_no_io_until_needed(manager):
    db = manager.get_database("gfs_lazy")
    grid_out = GridOut(db.fs, file_id=ObjectId())
    # io.IOBase's own attributes (``closed``) must not fetch the file document.
    assert grid_out.closed is False
    with pytest.raises(NoFile):
        grid_out.filename  # noqa: B018
    bucket = GridFSBucket(db)
    bucket.upload_from_stream("c", b"1")
    bucket.upload_from_stream("c", b"2")
    cursor = bucket.find({"filename": "c"}).sort("uploadDate", -1)
    clone = cursor.clone()
    assert [g.read() for g in cursor] == [b"2", b"1"]
    assert [g.read() for g in clone.to_list()] == [b"2", b"1"]


def test_async_source_and_destination_are_awaited(mongodb_uri):
    data = bytes(range(256)) * 100

    class AsyncSource:
        def __init__(self):
            self.stream = io.BytesIO(data)

        async def read(self, n):
            await asyncio.sleep(0)
            return self.stream.read(n)

    class AsyncDestination:
        def __init__(self):
            self.parts = []

        async def write(self, chunk):
            await asyncio.sleep(0)
            self.parts.append(chunk)

    async def main():
        async with AsyncUserConnectionManager(mongodb_uri) as manager:
            db = manager.get_database("gfs_async_io")
            await db.fs.files.drop()
            await db.fs.chunks.drop()
            bucket = AsyncGridFSBucket(db, chunk_size_bytes=1000)
            file_id = await bucket.upload_from_stream("a", AsyncSource())
            destination = AsyncDestination()
            await bucket.download_to_stream(file_id, destination)
            assert b"".join(destination.parts) == data and len(destination.parts) == 26
            legacy = AsyncGridFS(db)
            assert await (await legacy.get(file_id)).read() == data
            with pytest.raises(NoFile):
                await bucket.open_download_stream(ObjectId())
            # Other tasks keep running during a transfer: the event loop is never blocked.
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.ensure_future(ticker())
            await bucket.upload_from_stream("b", data * 20)
            task.cancel()
            assert ticks > 10

    asyncio.run(main())


def test_a_download_resumes_after_its_chunk_cursor_is_killed(manager, pymongo_client):
    # pymongo's rule: a read resumed after the server dropped the chunk cursor (its 10-minute timeout)
    # opens a new cursor from the next chunk.
    db = manager.get_database("gfs_cursor_killed")
    pymongo_client.drop_database(db.name)
    chunk = 1024 * 1024
    data = b"".join(bytes([i]) * chunk for i in range(12))
    bucket = GridFSBucket(db, chunk_size_bytes=chunk)
    file_id = bucket.upload_from_stream("k", data)
    grid_out = bucket.open_download_stream(file_id)
    first = grid_out.readchunk()
    cursors = [
        op["cursor"]["cursorId"]
        for op in pymongo_client.admin.aggregate(
            [{"$currentOp": {"idleCursors": True}}, {"$match": {"ns": f"{db.name}.fs.chunks"}}]
        )
        if "cursor" in op
    ]
    assert len(cursors) == 1, cursors
    pymongo_client[db.name].command("killCursors", "fs.chunks", cursors=cursors)
    assert first + grid_out.read() == data


def test_concurrent_async_transfers_of_several_tenants(mongodb_uri):
    # Each GridIn / GridOut keeps its own state: 40 transfers interleaved on the event loop, through
    # tenants whose quota (2 operations in flight) makes them wait for each other, all come back intact.
    async def main():
        async with AsyncUserConnectionManager(mongodb_uri, user_pool_size=2) as manager:

            async def transfer(tenant: int, i: int) -> None:
                bucket = AsyncGridFSBucket(manager.get_database(f"gfs_conc_{tenant}"), chunk_size_bytes=4096)
                data = bytes([tenant, i]) * (50_000 + i)
                file_id = await bucket.upload_from_stream(f"f{i}", data)
                assert await (await bucket.open_download_stream(file_id)).read() == data

            buckets = [AsyncGridFSBucket(manager.get_database(f"gfs_conc_{t}")) for t in range(5)]
            for bucket in buckets:
                await bucket.drop()
            await asyncio.gather(*(transfer(t, i) for t in range(5) for i in range(8)))
            for bucket in buckets:
                names = sorted(g.filename for g in await bucket.find().to_list())
                assert names == [f"f{i}" for i in range(8)]
                await bucket.drop()

    asyncio.run(main())
