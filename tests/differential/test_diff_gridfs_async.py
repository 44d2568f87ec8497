"""Differential cases for the asyncio GridFS classes: each case runs with pymongo's ``AsyncGridFSBucket``
/ ``AsyncGridFS`` on an ``AsyncMongoClient`` database and with tenantpool's on an ``AsyncDatabase``, and
the outcomes (results, exceptions, the bucket as stored) are compared by the differential harness."""

from __future__ import annotations

import asyncio
import datetime
import io
import itertools
from typing import Any

import gridfs
import pytest
from _harness import collect_cases, compare, ids, run_case
from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase as PyMongoAsyncDatabase

import tenantpool.gridfs
from tenantpool import AsyncUserConnectionManager

DATA = bytes(range(256)) * 14 + b"end"


def module(db: Any) -> Any:
    return gridfs if isinstance(db, PyMongoAsyncDatabase) else tenantpool.gridfs


async def attempt(coro: Any) -> Any:
    """The coroutine's result, or the exception it raised (compared like a result)."""
    try:
        return await coro
    except Exception as exc:
        return exc


async def stored(db: Any, name: str = "fs") -> Any:
    date = datetime.datetime
    files = await db[name].files.find().sort("_id").to_list()
    files = [{k: "<date>" if isinstance(v, date) else v for k, v in d.items()} for d in files]
    chunks = await db[name].chunks.find().sort([("files_id", 1), ("n", 1)]).to_list()
    indexes = []
    for coll in ("files", "chunks"):
        cursor = await db[name][coll].list_indexes()
        indexes.append(sorted(await cursor.to_list(), key=lambda i: i["name"]))
    return files, chunks, indexes


async def case_upload_and_read(db):
    fs = module(db).AsyncGridFSBucket(db, chunk_size_bytes=1000)
    file_id = await fs.upload_from_stream("a", DATA, metadata={"k": 1})
    await fs.upload_from_stream_with_id("id", "b", io.BytesIO(DATA[:10]))
    g = await fs.open_download_stream(file_id)
    attrs = (g.filename, g.length, g.chunk_size, g.metadata, g._id, type(g.upload_date).__name__)
    steps = [await g.read(5), g.tell(), await g.readchunk(), await g.seek(-3, 2), await g.read()]
    out = io.BytesIO()
    await fs.download_to_stream("id", out)
    again = await attempt(fs.upload_from_stream_with_id("id", "c", b""))
    return attrs, steps, out.getvalue(), again, await stored(db)


async def case_upload_stream(db):
    m = module(db)
    fs = m.AsyncGridFSBucket(db, chunk_size_bytes=4)
    async with fs.open_upload_stream("w") as grid_in:
        await grid_in.write(b"hello ")
        await grid_in.writelines([b"async ", io.BytesIO(b"world\nline two\n")])
        grid_in.custom = "before close"
    after_close = await attempt(asyncio.sleep(0, result=None))
    try:
        grid_in.later = 1
    except Exception as exc:
        after_close = exc
    try:
        grid_in.filename = "renamed"
    except Exception as exc:
        property_after_close = exc
    await grid_in.set("later", 2)
    aborted = fs.open_upload_stream("aborted")
    await aborted.write(DATA)
    await aborted.abort()
    g = m.AsyncGridOut(db.fs, grid_in._id)
    before_open = await attempt(asyncio.sleep(0))
    try:
        g.filename  # noqa: B018
    except Exception as exc:
        before_open = exc
    await g.open()
    lines = [line async for line in g]
    return (
        grid_in.length,
        grid_in.closed,
        after_close,
        property_after_close,
        before_open,
        lines,
        await stored(db),
    )


async def case_revisions_and_errors(db):
    fs = module(db).AsyncGridFSBucket(db)
    for i in range(3):
        await fs.upload_from_stream("r", f"v{i}".encode())
    read = []
    for rev in (0, 2, -1, -3):
        read.append(await (await fs.open_download_stream_by_name("r", rev)).read())
    return (
        read,
        await attempt(fs.open_download_stream_by_name("r", 3)),
        await attempt(fs.open_download_stream(ObjectId())),
        await attempt(fs.delete("nope")),
        await attempt(fs.rename("nope", "x")),
    )


async def case_find_delete_rename(db):
    fs = module(db).AsyncGridFSBucket(db)
    for name in ("b", "a", "c", "a"):
        await fs.upload_from_stream(name, name.encode() * 2)
    found = [(g.filename, await g.read()) async for g in fs.find({}, sort=[("filename", 1)], limit=3)]
    listed = [g.filename for g in await fs.find({"filename": "a"}).to_list()]
    await fs.delete_by_name("a")
    await fs.rename_by_name("b", "bee")
    return found, listed, await stored(db)


async def case_legacy(db):
    fs = module(db).AsyncGridFS(db)
    a = await fs.put(b"one", filename="f", n=1)
    await fs.put("two", filename="f", encoding="utf-8", n=2)
    return (
        await (await fs.get(a)).read(),
        await (await fs.get_version("f", 0)).read(),
        await (await fs.get_last_version("f")).read(),
        await attempt(fs.get_version("f", 5)),
        await fs.exists(a),
        await fs.exists(n=2),
        await fs.list(),
        await (await fs.find_one({"n": 2})).read(),
        await fs.delete(a),
        await fs.exists(a),
        await stored(db),
    )


CASES = collect_cases(globals())
_numbers = itertools.count()


def _replay(kind: str, value: Any) -> Any:
    def case(_db: Any) -> Any:
        if kind == "raised":
            raise value
        return value

    return case


async def _outcome(case: Any, db: Any) -> tuple[str, Any]:
    try:
        return "ok", await case(db)
    except Exception as exc:
        return "raised", exc


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_gridfs_async(mongodb_uri, pymongo_client, case):
    suffix = f"{case.__name__.removeprefix('case_')[:40]}_{next(_numbers)}"
    pm_name, tp_name = f"diff_pm_{suffix}", f"diff_tp_{suffix}"

    async def main() -> tuple[Any, Any]:
        client = AsyncMongoClient(mongodb_uri)
        try:
            # The case's database, widened into the tenant's isolation scope: GridFS runs under it.
            async with AsyncUserConnectionManager(
                mongodb_uri, tenant_databases=lambda user_id: {tp_name}
            ) as manager:
                expected = await _outcome(case, client[pm_name])
                actual = await _outcome(case, manager.get_database("differential", tp_name))
        finally:
            await client.close()
        return expected, actual

    try:
        expected, actual = asyncio.run(main())
        # The harness's normalisation and comparison, as for the blocking cases.
        expected = run_case(_replay(*expected), pymongo_client[pm_name])
        actual = run_case(_replay(*actual), pymongo_client[tp_name])
    finally:
        for name in (pm_name, tp_name):
            pymongo_client.drop_database(name)
    result = compare(expected, actual)
    assert not (result.differences or result.notes), "\n".join(
        ["pymongo and tenantpool differ:", *result.differences, *result.notes, repr(expected), repr(actual)]
    )
