"""GridFS with a 50 MB file: it goes up and comes down in bounded memory (a few upload or download
batches, never the whole file), also through the asyncio classes, and what tenantpool writes pymongo's
gridfs reads back byte for byte, and the other way round. Also prints both libraries' throughput on the
same server (``-s`` to see it)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import gridfs
import pytest

import tenantpool.gridfs
from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.gridfs._shared import DOWNLOAD_BATCH_BYTES, UPLOAD_BUFFER_BYTES

SIZE = 50 * 1024 * 1024
MiB = 1024 * 1024

pytestmark = pytest.mark.slow


class Source:
    """``size`` bytes made as they are read: each 64 KiB block is its own number repeated, so a chunk
    out of place changes the digest."""

    BLOCK = 64 * 1024

    def __init__(self, size: int) -> None:
        self.size = size
        self.offset = 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.offset if n < 0 else min(n, self.size - self.offset)
        parts = []
        while n > 0:
            block, within = divmod(self.offset, self.BLOCK)
            take = min(n, self.BLOCK - within)
            parts.append(block.to_bytes(8, "little") * (take // 8) + b"\x00" * (take % 8))
            self.offset += take
            n -= take
        data = b"".join(parts)
        self.digest.update(data)
        return data


class Sink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.length += len(data)


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def measure(fn: Callable[[], Any]) -> tuple[Any, int, int, float]:
    """``fn()``'s result, the peak of Python allocations during it, the growth of the process's peak
    RSS over the RSS before it (which counts the Rust core's buffers too), and its wall time."""
    gc.collect()
    # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    rss_before = _status("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - start
        _, python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, python_peak, _status("VmHWM") - rss_before, elapsed


@pytest.fixture(scope="module")
def databases(mongodb_uri, pymongo_client):
    with UserConnectionManager(mongodb_uri) as manager:
        db = manager.get_database("gridfs_large")
        pymongo_db = pymongo_client[db.name]
        pymongo_client.drop_database(db.name)
        yield db, pymongo_db
        pymongo_client.drop_database(db.name)


def test_50mb_up_and_down_in_bounded_memory_and_readable_by_pymongo(databases):
    db, pymongo_db = databases
    bucket = tenantpool.gridfs.GridFSBucket(db, "big")
    # The tenant's pool, its driver client and the bucket's indexes are made before measuring: they are
    # the same for any file size.
    bucket.delete(bucket.upload_from_stream("warm-up", b"x"))
    source = Source(SIZE)
    file_id, up_python, up_rss, up_time = measure(lambda: bucket.upload_from_stream("big.bin", source))
    sink = Sink()
    _, down_python, down_rss, down_time = measure(lambda: bucket.download_to_stream(file_id, sink))
    print(
        f"\ntenantpool 50 MB: upload {SIZE / MiB / up_time:.0f} MB/s, Python peak {up_python / MiB:.1f} MiB, "
        f"RSS peak +{up_rss / MiB:.1f} MiB; download {SIZE / MiB / down_time:.0f} MB/s, Python peak "
        f"{down_python / MiB:.1f} MiB, RSS peak +{down_rss / MiB:.1f} MiB"
    )
    assert (sink.length, sink.digest.hexdigest()) == (SIZE, source.digest.hexdigest())
    # An upload holds one batch of chunks and the copies insert_many makes of it on its way to the
    # core (about eight); a download one batch of chunks decoded and the next one read ahead. Bounded by
    # the batch sizes, never the 50 MB file (pymongo's upload: 91 MiB of Python allocations).
    assert up_python < 12 * UPLOAD_BUFFER_BYTES, up_python
    assert down_python < 3 * DOWNLOAD_BATCH_BYTES, down_python
    # The process's peak RSS, with the core's buffers and the allocator's slack: still far below the file.
    assert up_rss < 32 * MiB, up_rss
    assert down_rss < 32 * MiB, down_rss

    # pymongo's gridfs reads the same bytes, and the same file document.
    pymongo_sink = Sink()
    gridfs.GridFSBucket(pymongo_db, "big").download_to_stream(file_id, pymongo_sink)
    assert pymongo_sink.digest.hexdigest() == source.digest.hexdigest()
    assert pymongo_db.big.chunks.count_documents({"files_id": file_id}) == -(-SIZE // (255 * 1024))


def test_50mb_written_by_pymongo_read_by_tenantpool_and_throughput(databases):
    db, pymongo_db = databases
    pymongo_bucket = gridfs.GridFSBucket(pymongo_db, "theirs")
    source = Source(SIZE)
    file_id, pm_up_python, _, pm_up_time = measure(lambda: pymongo_bucket.upload_from_stream("x", source))
    pm_sink = Sink()
    _, pm_down_python, _, pm_down_time = measure(lambda: pymongo_bucket.download_to_stream(file_id, pm_sink))

    bucket = tenantpool.gridfs.GridFSBucket(db, "theirs")
    sink = Sink()
    _, down_python, _, down_time = measure(lambda: bucket.download_to_stream(file_id, sink))
    assert (sink.length, sink.digest.hexdigest()) == (SIZE, source.digest.hexdigest())
    grid_out = bucket.open_download_stream(file_id)
    their = pymongo_bucket.open_download_stream(file_id)
    assert (grid_out.filename, grid_out.length, grid_out.chunk_size, grid_out.upload_date) == (
        their.filename,
        their.length,
        their.chunk_size,
        their.upload_date,
    )
    # Reading at an offset deep in the file starts the chunk cursor there.
    grid_out.seek(SIZE - 100_000)
    their.seek(SIZE - 100_000)
    assert grid_out.read(50_000) == their.read(50_000)

    own_source = Source(SIZE)
    _, up_python, _, up_time = measure(lambda: bucket.upload_from_stream("y", own_source))
    print(
        f"\n50 MB, MB/s (Python peak MiB): upload tenantpool {SIZE / MiB / up_time:.0f} "
        f"({up_python / MiB:.1f}) "
        f"pymongo {SIZE / MiB / pm_up_time:.0f} ({pm_up_python / MiB:.1f}); download tenantpool "
        f"{SIZE / MiB / down_time:.0f} ({down_python / MiB:.1f}) pymongo {SIZE / MiB / pm_down_time:.0f} "
        f"({pm_down_python / MiB:.1f})"
    )
    assert down_python < 3 * DOWNLOAD_BATCH_BYTES


def test_50mb_async_up_and_down_in_bounded_memory(mongodb_uri, pymongo_client):
    async def transfer() -> tuple[Any, Any, Sink, Source]:
        async with AsyncUserConnectionManager(mongodb_uri) as manager:
            bucket = tenantpool.gridfs.AsyncGridFSBucket(manager.get_database("gridfs_large_async"))
            await bucket.drop()
            await bucket.delete(await bucket.upload_from_stream("warm-up", b"x"))
            source, sink = Source(SIZE), Sink()
            up = await measure_async(lambda: bucket.upload_from_stream("big", source))
            down = await measure_async(lambda: bucket.download_to_stream(up[0], sink))
            return up, down, sink, source

    up, down, sink, source = asyncio.run(transfer())
    print(f"\nasync 50 MB: Python peak upload {up[1] / MiB:.1f} MiB, download {down[1] / MiB:.1f} MiB")
    pymongo_client.drop_database("user_gridfs_large_async_db")
    assert (sink.length, sink.digest.hexdigest()) == (SIZE, source.digest.hexdigest())
    assert up[1] < 12 * UPLOAD_BUFFER_BYTES, up[1]
    assert down[1] < 3 * DOWNLOAD_BATCH_BYTES, down[1]


async def measure_async(fn: Callable[[], Any]) -> tuple[Any, int]:
    """The awaited result of ``fn()`` and the peak of Python allocations while it ran."""
    gc.collect()
    tracemalloc.start()
    try:
        result = await fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
