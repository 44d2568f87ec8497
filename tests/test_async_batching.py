"""How async results reach the event loop: finished operations are queued per event loop and handed over
in batches (see src/py/aio.rs). Covers what that path does on its own: futures cancelled after their
operation finished but before the batch was handed over, results that arrive while the loop is stopped
or after it closed, several loops in several threads, and loops without ``add_reader``."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
from tests.helpers import PATIENT, wait_until

from tenantpool import AsyncUserConnectionManager


class _NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch file descriptors, like Windows' proactor loop: results are handed over
    with ``call_soon_threadsafe`` instead."""

    def add_reader(self, *args, **kwargs):
        raise NotImplementedError


LOOPS = ["asyncio", "no_add_reader"]
try:
    import uvloop

    LOOPS.append("uvloop")
except ImportError:
    uvloop = None


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        return uvloop.new_event_loop()
    if kind == "no_add_reader":
        return _NoReaderLoop()
    return asyncio.new_event_loop()


def idle(manager, tenant: str) -> bool:
    info = manager.get_user_stats(tenant)
    return (info["in_use"], info["in_flight"], info["waiting"]) == (0, 0, 0)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_cancelled_before_handover_others_resolve(mongodb_uri, loop_kind):
    """The loop is kept busy until every operation has finished on the I/O thread; then half of the
    futures are cancelled. The others get their results, the cancelled ones' results are dropped, and
    the leases they held (an open cursor's too) are returned."""
    tenant = f"abatch_cancel_{loop_kind}"
    loop = new_loop(loop_kind)

    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, user_pool_size=50, **PATIENT) as manager:
            coll = manager.get_database(tenant).c
            await coll.drop()
            await coll.insert_many([{"_id": i} for i in range(20)])
            finds = [asyncio.ensure_future(coll.find_one({"_id": i})) for i in range(20)]
            # Batches of 2 out of 20: each cursor holds a lease until it is drained or dropped.
            lists = [asyncio.ensure_future(coll.find().batch_size(2).to_list(None)) for _ in range(10)]
            await asyncio.sleep(0)  # the tasks start their first operation
            # Block the loop (no await) until the I/O thread has finished every operation.
            wait_until(
                lambda: manager.get_user_stats(tenant)["in_flight"] == 0,
                30,
                "the operations to finish",
                every=0.005,
            )
            for t in finds[::2] + lists[::2]:
                t.cancel()
            results = await asyncio.gather(*finds, *lists, return_exceptions=True)
            found, listed = results[:20], results[20:]
            for i, r in enumerate(found):
                assert isinstance(r, asyncio.CancelledError) if i % 2 == 0 else r == {"_id": i}
            for i, r in enumerate(listed):
                if i % 2 == 0:
                    assert isinstance(r, asyncio.CancelledError)
                else:
                    assert sorted(d["_id"] for d in r) == list(range(20))
            deadline = time.monotonic() + 30
            while not idle(manager, tenant):
                assert time.monotonic() < deadline, manager.get_user_stats(tenant)
                await asyncio.sleep(0.01)
            await coll.drop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_results_arriving_while_the_loop_is_stopped(mongodb_uri, loop_kind):
    """Operations finish while their loop is not running; they are handed over when it runs again."""
    tenant = f"abatch_stopped_{loop_kind}"
    loop = new_loop(loop_kind)
    manager = AsyncUserConnectionManager(mongodb_uri, **PATIENT)
    try:
        coll = manager.get_database(tenant).c
        loop.run_until_complete(coll.drop())
        loop.run_until_complete(coll.insert_one({"_id": 1}))

        async def start() -> list[asyncio.Future]:
            return [asyncio.ensure_future(coll.find_one({"_id": 1})) for _ in range(100)]

        # Returns at once: the tasks have not even started. One more step starts them.
        tasks = loop.run_until_complete(start())
        loop.run_until_complete(asyncio.sleep(0))
        wait_until(
            lambda: idle(manager, tenant),
            30,
            "the operations to finish while the loop is stopped",
            every=0.005,
        )
        results = loop.run_until_complete(asyncio.gather(*tasks))
        assert results == [{"_id": 1}] * 100
        loop.run_until_complete(coll.drop())
    finally:
        loop.run_until_complete(manager.close_all())
        loop.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_results_after_the_loop_closed(mongodb_uri, loop_kind):
    """A loop closed while its operations are in flight: their results are dropped without error, the
    leases are returned, and a new loop on the same thread works."""
    tenant = f"abatch_closed_{loop_kind}"
    manager = AsyncUserConnectionManager(mongodb_uri, user_pool_size=5, **PATIENT)
    loop = new_loop(loop_kind)
    coll = manager.get_database(tenant).c
    loop.run_until_complete(coll.insert_many([{"x": 1}, {"x": 2}, {"x": 3}]))

    async def start() -> None:
        tasks = [asyncio.ensure_future(coll.find_one({"x": 1})) for _ in range(50)]
        tasks += [asyncio.ensure_future(coll.find({}).batch_size(1).to_list(None)) for _ in range(50)]
        for task in tasks:
            task._log_destroy_pending = False  # they are left pending on purpose
        await asyncio.sleep(0)  # the tasks start their operations

    loop.run_until_complete(start())
    loop.close()

    def released() -> bool:
        # A task that got its cursor before the close holds it, and its lease, until the task is
        # collected (it is in a reference cycle with the future it waits for).
        gc.collect()
        return idle(manager, tenant)

    wait_until(released, 30, "the orphaned operations to return their leases", every=0.005)

    async def again() -> list:
        docs = await asyncio.gather(*(coll.find_one({"x": 1}) for _ in range(20)))
        await coll.drop()
        await manager.close_all()
        return docs

    loop = new_loop(loop_kind)
    try:
        assert [d["x"] for d in loop.run_until_complete(again())] == [1] * 20
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_loops_in_several_threads(mongodb_uri, loop_kind):
    """Each thread's loop gets its own results, concurrently, with one manager shared by all."""
    manager = AsyncUserConnectionManager(mongodb_uri, **PATIENT)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        async def main() -> None:
            coll = manager.get_database(f"abatch_threads_{loop_kind}_{n}").c
            await coll.drop()
            await coll.insert_many([{"_id": i, "n": n} for i in range(50)])
            barrier.wait()  # every loop has operations in flight at the same time
            for _ in range(3):
                docs = await asyncio.gather(*(coll.find_one({"_id": i}) for i in range(50)))
                assert docs == [{"_id": i, "n": n} for i in range(50)]
            await coll.drop()

        loop = new_loop(loop_kind)
        try:
            loop.run_until_complete(main())
        except BaseException as e:  # reported by the test's thread
            errors.append(e)
            barrier.abort()
        finally:
            loop.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    asyncio.run(manager.close_all())
    assert not errors, errors
