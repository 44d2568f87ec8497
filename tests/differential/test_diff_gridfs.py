"""Differential cases for GridFS: each case runs once with pymongo's ``gridfs`` on a pymongo database and
once with ``tenantpool.gridfs`` on a tenantpool database, and returns what it read back, the exceptions it
got, and the bucket's documents and indexes as stored (every field, in order, with its type; the upload
dates, which differ between any two uploads, become their type)."""

from __future__ import annotations

import datetime
import io

import gridfs
import pytest
from _harness import attempt, collect_cases, ids
from bson import ObjectId
from pymongo.database import Database as PyMongoDatabase
from pymongo.write_concern import WriteConcern

import tenantpool.gridfs


def bucket(db, *args, **kwargs):
    """The library's GridFSBucket for this database: pymongo's on a pymongo database, tenantpool's on
    a tenantpool one."""
    module = gridfs if isinstance(db, PyMongoDatabase) else tenantpool.gridfs
    return module.GridFSBucket(db, *args, **kwargs)


def legacy(db, *args):
    module = gridfs if isinstance(db, PyMongoDatabase) else tenantpool.gridfs
    return module.GridFS(db, *args)


def _no_dates(doc):
    date = datetime.datetime
    return {k: ("<date>", type(v).__name__) if isinstance(v, date) else v for k, v in doc.items()}


def stored(db, name="fs"):
    """The bucket as stored: file documents, chunk documents, and both collections' indexes."""
    files = [_no_dates(d) for d in db[name].files.find().sort("_id")]
    chunks = list(db[name].chunks.find().sort([("files_id", 1), ("n", 1)]))
    indexes = [sorted(db[name][c].list_indexes(), key=lambda i: i["name"]) for c in ("files", "chunks")]
    return files, chunks, indexes


def contents(grid_out):
    """What a GridOut says about its file, and its data."""
    return (
        grid_out.filename,
        grid_out.name,
        grid_out.length,
        grid_out.chunk_size,
        grid_out.metadata,
        type(grid_out.upload_date).__name__,
        grid_out.md5,
        grid_out.aliases,
        grid_out._id,
        grid_out.read(),
    )


DATA = bytes(range(256)) * 14 + b"end"  # 3587 bytes: three full 1000-byte chunks and a partial one


# -- uploads and their layout ---------------------------------------------------------------------------


def case_upload_layout(db):
    fs = bucket(db, chunk_size_bytes=1000)
    file_id = fs.upload_from_stream("a.bin", DATA, metadata={"contentType": "x/y", "n": 1})
    return file_id, contents(fs.open_download_stream(file_id)), stored(db)


def case_upload_from_file_object_and_custom_bucket(db):
    fs = bucket(db, "attachments", chunk_size_bytes=512)
    file_id = fs.upload_from_stream("f", io.BytesIO(DATA))
    fs.upload_from_stream_with_id("my-id", "g", io.BytesIO(DATA[:1024]), chunk_size_bytes=256)
    return file_id, contents(fs.open_download_stream("my-id")), stored(db, "attachments")


def case_upload_empty_and_exact_multiple(db):
    fs = bucket(db, chunk_size_bytes=1000)
    empty = fs.upload_from_stream("empty", b"")
    exact = fs.upload_from_stream("exact", DATA[:3000])
    return contents(fs.open_download_stream(empty)), contents(fs.open_download_stream(exact)), stored(db)


def case_upload_with_existing_id(db):
    fs = bucket(db, chunk_size_bytes=1000)
    fs.upload_from_stream_with_id(7, "first", b"one")
    again = attempt(lambda: fs.upload_from_stream_with_id(7, "second", b"two"))
    many = attempt(lambda: fs.upload_from_stream_with_id(7, "third", DATA))
    return again, many, stored(db)


def case_upload_stream_writes_and_attributes(db):
    fs = bucket(db, chunk_size_bytes=1000)
    grid_in = fs.open_upload_stream("w", metadata={"m": True})
    before = (
        grid_in.filename,
        grid_in.chunk_size,
        grid_in.closed,
        type(grid_in._id).__name__,
        attempt(lambda: grid_in.length),
        attempt(lambda: grid_in.upload_date),
    )
    grid_in.write(DATA[:10])
    grid_in.write(io.BytesIO(DATA[10:2500]))
    grid_in.writelines([DATA[2500:3000], DATA[3000:]])
    grid_in.custom = "set before close"
    grid_in.close()
    grid_in.close()
    grid_in.later = "set after close"
    grid_in.set("also", [1, 2])
    after = (grid_in.length, grid_in.closed, grid_in.custom, attempt(lambda: grid_in.write(b"x")))
    with fs.open_upload_stream_with_id(ObjectId(), "ctx") as ctx:
        ctx.write(b"in a with block")
    return before, after, stored(db)


def case_upload_errors(db):
    fs = bucket(db)
    return (
        attempt(lambda: fs.upload_from_stream(5, b"data")),
        attempt(lambda: fs.upload_from_stream("s", "a str without an encoding")),
        attempt(lambda: fs.upload_from_stream("n", 12345)),
        attempt(lambda: fs.open_upload_stream_with_id(1, None)),
        attempt(lambda: bucket(db, write_concern=WriteConcern(w=0))),
        stored(db),
    )


def case_abort(db):
    fs = bucket(db, chunk_size_bytes=100)
    grid_in = fs.open_upload_stream("aborted")
    grid_in.write(DATA)
    grid_in.abort()
    kept = fs.upload_from_stream("kept", b"k")
    return grid_in.closed, attempt(lambda: grid_in.write(b"more")), kept, stored(db)


def case_failed_source_read(db):
    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise OSError("disk went away")
            return DATA[:150]

    fs = bucket(db, chunk_size_bytes=100)
    grid_in = fs.open_upload_stream("half")
    grid_in.write(DATA[:50])
    # The second read fails while completing the buffered chunk: pymongo aborts the file then.
    return attempt(lambda: grid_in.write(Broken())), grid_in.closed, stored(db)


def case_indexes_only_on_an_empty_bucket(db):
    db.fs.files.insert_one({"_id": "pre-existing", "filename": "x", "length": 0, "chunkSize": 10})
    fs = bucket(db)
    fs.upload_from_stream("after", b"data")
    return stored(db)


def case_indexes_kept_when_present(db):
    db.fs.files.create_index([("filename", 1), ("uploadDate", 1)], name="custom_name")
    fs = bucket(db)
    fs.upload_from_stream("after", b"data")
    return stored(db)


# -- downloads ------------------------------------------------------------------------------------------


def case_revisions(db):
    fs = bucket(db)
    for i in range(3):
        fs.upload_from_stream("r", f"version {i}".encode())
    fs.upload_from_stream("other", b"other")
    read = [fs.open_download_stream_by_name("r", rev).read() for rev in (0, 1, 2, -1, -2, -3)]
    default = fs.open_download_stream_by_name("r").read()
    missing = [attempt(lambda rev=rev: fs.open_download_stream_by_name("r", rev)) for rev in (3, -4)]
    out = io.BytesIO()
    fs.download_to_stream_by_name("r", out, revision=1)
    return read, default, missing, out.getvalue(), attempt(lambda: fs.open_download_stream_by_name(3))


def case_download_to_stream(db):
    fs = bucket(db, chunk_size_bytes=1000)
    file_id = fs.upload_from_stream("d", DATA)
    out = io.BytesIO()
    fs.download_to_stream(file_id, out)
    return out.getvalue() == DATA, attempt(lambda: fs.download_to_stream(ObjectId(), io.BytesIO()))


def case_missing_files(db):
    fs = bucket(db)
    return (
        attempt(lambda: fs.open_download_stream(ObjectId())),
        attempt(lambda: fs.open_download_stream_by_name("nope")),
        attempt(lambda: fs.delete("nope")),
        attempt(lambda: fs.delete_by_name("nope")),
        attempt(lambda: fs.rename("nope", "new")),
        attempt(lambda: fs.rename_by_name("nope", "new")),
    )


def case_grid_out_reads(db):
    fs = bucket(db, chunk_size_bytes=7)
    text = b"first line\nsecond\n\nfourth line is longer than a chunk\nlast, no newline"
    file_id = fs.upload_from_stream("lines", text)
    g = fs.open_download_stream(file_id)
    steps = [g.read(3), g.tell(), g.readline(), g.readchunk(), g.tell(), g.readline(4), g.read(0)]
    steps += [g.seek(0), g.readlines(), g.tell(), g.read(), g.read(10)]
    steps += [g.seek(-5, 2), g.read(), g.seek(3, 0), g.seek(2, 1), g.read(6)]
    steps += [attempt(lambda: g.seek(-1)), attempt(lambda: g.seek(0, 7)), g.seek(1000), g.read()]
    g.seek(0)
    lines = list(g)
    chunks = []
    g2 = fs.open_download_stream(file_id)
    while chunk := g2.readchunk():
        chunks.append(chunk)
    flags = (g.readable(), g.seekable(), g.writable(), attempt(lambda: g.write(b"x")))
    g.close()
    return steps, lines, chunks, flags


def case_corrupt_files(db):
    fs = bucket(db, chunk_size_bytes=10)
    missing = fs.upload_from_stream("missing", DATA[:45])
    db.fs.chunks.delete_one({"files_id": missing, "n": 2})
    truncated = fs.upload_from_stream("truncated", DATA[:45])
    db.fs.chunks.update_one({"files_id": truncated, "n": 1}, {"$set": {"data": b"short"}})
    extra = fs.upload_from_stream("extra", DATA[:45])
    db.fs.chunks.insert_one({"files_id": extra, "n": 5, "data": b"surplus"})
    empty_extra = fs.upload_from_stream("empty extra", DATA[:45])
    db.fs.chunks.insert_one({"files_id": empty_extra, "n": 5, "data": b""})
    return [
        attempt(lambda f=f: fs.open_download_stream(f).read())
        for f in (missing, truncated, extra, empty_extra)
    ]


# -- find, delete, rename, drop -------------------------------------------------------------------------


def case_find(db):
    fs = bucket(db)
    for name in ("b", "a", "c", "a"):
        fs.upload_from_stream(name, name.encode() * 3, metadata={"name": name})
    sorted_files = [(g.filename, g.read()) for g in fs.find({}, sort=[("filename", 1)], skip=1, limit=2)]
    chained = [g.metadata for g in fs.find({"filename": "a"}).sort("uploadDate", -1)]
    to_list = [g.filename for g in fs.find({"filename": {"$gt": "a"}}).to_list()]
    first = fs.find().sort("filename", -1)[0].filename
    return sorted_files, chained, to_list, first, attempt(lambda: fs.find().add_option(2))


def case_delete_and_rename(db):
    fs = bucket(db, chunk_size_bytes=1000)
    one = fs.upload_from_stream("one", DATA)
    fs.upload_from_stream("two", DATA)
    fs.upload_from_stream("two", b"again")
    fs.upload_from_stream("three", b"3")
    fs.delete(one)
    fs.delete_by_name("two")
    fs.rename_by_name("three", "drei")
    three = fs.open_download_stream_by_name("drei")._id
    fs.rename(three, "tres")
    return stored(db)


def case_transactions_refused(db):
    fs = bucket(db)
    file_id = fs.upload_from_stream("t", b"data")
    with db.client.start_session() as session, session.start_transaction():
        return (
            attempt(lambda: fs.upload_from_stream("t", b"data", session=session)),
            attempt(lambda: fs.open_download_stream(file_id, session=session)),
            attempt(lambda: fs.delete(file_id, session=session)),
            attempt(lambda: fs.find(session=session)),
        )


def case_session(db):
    fs = bucket(db)
    with db.client.start_session() as session:
        file_id = fs.upload_from_stream("s", b"in a session", session=session)
        return fs.open_download_stream(file_id, session=session).read(), stored(db)


# -- the legacy GridFS API ------------------------------------------------------------------------------


def case_legacy_put_get(db):
    fs = legacy(db)
    a = fs.put(b"hello", filename="h", contentType="text/plain", custom={"k": 1}, chunkSize=2)
    b = fs.put("héllo", encoding="utf-8", filename="h")
    c = fs.put(io.BytesIO(b"from a file"), _id="given")
    got = fs.get(a)
    return (
        (got.read(), got.contentType, got.custom, got.chunk_size),
        fs.get(b).read(),
        fs.get("given").read(),
        fs.get_version("h", 0).read(),
        fs.get_version("h").read(),
        fs.get_last_version("h").read(),
        fs.get_version(custom={"k": 1}).read(),
        attempt(lambda: fs.get_version("h", 2)),
        attempt(lambda: fs.get("nope")),
        attempt(lambda: fs.put(b"again", _id="given")),
        attempt(lambda: fs.put("no encoding")),
        c,
        stored(db),
    )


def case_legacy_queries(db):
    fs = legacy(db, "legacy")
    ids_ = [fs.put(bytes([i]) * i, filename=f"f{i % 2}", n=i) for i in range(1, 5)]
    fs.put(b"nameless")
    found = [(g.filename, g.read()) for g in fs.find({"n": {"$gte": 2}}).sort("n", -1)]
    one = fs.find_one({"filename": "f1"}).read()
    by_id = fs.find_one(ids_[0]).read()
    none = fs.find_one({"filename": "nope"})
    exists = (fs.exists(ids_[1]), fs.exists({"n": 3}), fs.exists(n=4), fs.exists(filename="nope"))
    names = sorted(fs.list())
    fs.delete(ids_[0])
    fs.delete("not there")
    return found, one, by_id, none, exists, names, sorted(fs.list()), stored(db, "legacy")


def case_legacy_new_file(db):
    fs = legacy(db)
    with fs.new_file(filename="nf", content_type="a/b", chunk_size=4, encoding="utf-8") as f:
        f.write("ünïcode")
        f.write(b" and bytes")
        f.extra = 1
    return f.closed, fs.get(f._id).read(), fs.get(f._id).extra, stored(db)


CASES = collect_cases(globals())


# pymongo 4 deprecates GridOut.md5 and .aliases (compared all the same, they still exist).
@pytest.mark.filterwarnings("ignore:GridOut property:DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_gridfs(differ, case):
    # The bucket's documents are compared by the cases themselves (``stored``), without upload dates.
    differ.check(case, state=False)
