"""Failover: 50 tenants write continuously through a 3-member replica set while the primary steps down or
is SIGKILLed. No acknowledged write may be lost, no retryable operation may fail (each is retried once,
after waiting for the new primary within serverSelectionTimeoutMS, as pymongo's are), and traffic must
resume on the same manager without restarting anything.

test_retryable_operations_survive_a_step_down_then_a_kill is issue 14's scenario (25 writers, 50
tenants, insert_one then find_one, the primary stepped down and then the new primary killed) in every
strategy, on the sync and the async API: pymongo's one shared client raises nothing there, and neither
may tenantpool.

Writes use w="majority" explicitly (MongoDB 6.0's implicit default for this topology too), because an
acknowledged w:1 write may legitimately be rolled back when its primary dies; retryWrites is left at
its default (on).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from tests.helpers import wait_until

from tenantpool import AsyncUserConnectionManager, UserConnectionManager

pytestmark = pytest.mark.slow

TENANTS = 50
WRITER_THREADS = 5
APP = "tp-failover"
# An error is attributed to the election if the failed operation overlapped the window from the fault
# until a new primary was seen, widened by this much: the driver learns of the new primary from its own
# monitor (it checks at most every 500 ms while an operation waits for a primary).
DISCOVERY_SLACK = 1.5
# Room for every tenant's pool at once (see test_retryable_operations_survive_a_step_down_then_a_kill).
FAILOVER_BUDGET = 1000


def tenant(i: int) -> str:
    return f"fo{i:02d}"


@dataclass
class Failure:
    tenant: str
    seq: int
    started: float
    ended: float
    error: str


@dataclass
class Load:
    """Writers that insert {_id: seq} per tenant and record a seq only once acknowledged."""

    manager: UserConnectionManager
    stop: threading.Event = field(default_factory=threading.Event)
    acked: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    unknown: dict[str, set[int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    crashed: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(TENANTS):
            self.acked[tenant(i)] = []
            self.unknown[tenant(i)] = set()
        for w in range(WRITER_THREADS):
            mine = [tenant(i) for i in range(TENANTS) if i % WRITER_THREADS == w]
            t = threading.Thread(target=self._write, args=(mine,), name=f"writer{w}", daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._newcomers, name="newcomers", daemon=True)
        t.start()
        self.threads.append(t)

    def _newcomers(self) -> None:
        """A new tenant every 0.2 s, whose pool is created (and first write made) whenever that happens
        to be, election included."""
        k = 0
        try:
            while not self.stop.is_set():
                k += 1
                t = f"fn{k:03d}"
                self.acked[t], self.unknown[t] = [], set()
                started = time.monotonic()
                try:
                    self.manager.get_database(t).writes.insert_one({"_id": 1, "at": started})
                except PyMongoError as exc:
                    self.unknown[t].add(1)
                    self.failures.append(
                        Failure(t, 1, started, time.monotonic(), f"{type(exc).__name__}: {str(exc)[:200]}")
                    )
                else:
                    self.acked[t].append((1, time.monotonic()))
                time.sleep(0.2)
        except BaseException as exc:
            self.crashed.append(exc)

    def _write(self, mine: list[str]) -> None:
        colls = {t: self.manager.get_database(t).writes for t in mine}
        seq = dict.fromkeys(mine, 0)
        try:
            while not self.stop.is_set():
                for t in mine:
                    seq[t] += 1
                    started = time.monotonic()
                    try:
                        colls[t].insert_one({"_id": seq[t], "at": started})
                    except PyMongoError as exc:
                        # Maybe written, maybe not: allowed either way, never counted as acknowledged.
                        self.unknown[t].add(seq[t])
                        self.failures.append(
                            Failure(
                                t,
                                seq[t],
                                started,
                                time.monotonic(),
                                f"{type(exc).__name__}: {str(exc)[:200]}",
                            )
                        )
                    else:
                        self.acked[t].append((seq[t], time.monotonic()))
                    # Keep the load modest on a shared machine.
                    time.sleep(0.002)
        except BaseException as exc:  # a bug in the test or a non-pymongo error: fail loudly
            self.crashed.append(exc)

    def finish(self, timeout: float) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not [t.name for t in self.threads if t.is_alive()], "writers hung"
        assert not self.crashed, self.crashed

    def all_started(self) -> bool:
        return all(self.acked.get(tenant(i)) for i in range(TENANTS))

    def total_acked(self) -> int:
        return sum(len(v) for v in list(self.acked.values()))


class PrimaryWatch:
    """Polls every member's hello every 100 ms and records when a writable primary is seen."""

    def __init__(self, rs) -> None:
        self.rs = rs
        self.seen: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._clients = {
            p: MongoClient(
                f"mongodb://127.0.0.1:{p}/?directConnection=true",
                serverSelectionTimeoutMS=300,
                connectTimeoutMS=300,
                socketTimeoutMS=1000,
            )
            for p in rs.ports
        }
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _primary(self) -> int | None:
        for port, client in self._clients.items():
            try:
                if client.admin.command("hello").get("isWritablePrimary"):
                    return port
            except PyMongoError:
                pass
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append((time.monotonic(), self._primary()))
            time.sleep(0.1)

    def first_primary_after(self, t0: float, other_than: int) -> float | None:
        for at, port in self.seen:
            if at >= t0 and port is not None and port != other_than:
                return at
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._clients.values():
            c.close()


def equalise_priorities(rs) -> None:
    """Member 0 has priority 2 in the harness, so after a failover it would take over again as soon as it
    caught up: a second election inside the scenario. Equal priorities keep it to the one we cause."""
    with MongoClient(f"mongodb://127.0.0.1:{rs.primary_port()}/?directConnection=true") as c:
        cfg = c.admin.command("replSetGetConfig")["config"]
        for m in cfg["members"]:
            m["priority"] = 1
        cfg["version"] += 1
        c.admin.command("replSetReconfig", cfg)
    rs.wait_healthy()


def verify(load: Load, rs, window: tuple[float, float], label: str) -> dict:
    """Every acknowledged write is in the database, nothing unknown appeared from nowhere, errors only
    inside the window, and every tenant wrote again after it."""
    start, end = window
    with MongoClient(rs.uri, w="majority", readConcernLevel="majority") as client:
        lost: dict[str, list[int]] = {}
        phantom: dict[str, list[int]] = {}
        for t, acked in list(load.acked.items()):
            stored = {d["_id"] for d in client[f"user_{t}_db"].writes.find({}, {"_id": 1})}
            acked_ids = {s for s, _ in acked}
            if acked_ids - stored:
                lost[t] = sorted(acked_ids - stored)
            if stored - acked_ids - load.unknown[t]:
                phantom[t] = sorted(stored - acked_ids - load.unknown[t])
    assert not lost, f"{label}: acknowledged writes missing from the database: {lost}"
    assert not phantom, f"{label}: documents nobody wrote: {phantom}"

    # A retryable write or read is retried once, on the new primary: none may fail, in the election or
    # outside it.
    assert not load.failures, f"{label}: {len(load.failures)} operations failed: {load.failures[:5]}"

    # Traffic resumed for every tenant on the same manager.
    silent = [
        t
        for t, acked in load.acked.items()
        if t.startswith("fo") and not any(at > end + DISCOVERY_SLACK for _, at in acked)
    ]
    assert not silent, f"{label}: tenants with no acknowledged write after the election: {silent}"
    if not load.acked:
        return {}

    all_acks = sorted(at for acked in load.acked.values() for _, at in acked)
    gaps = [b - a for a, b in zip(all_acks, all_acks[1:])]
    newcomers_in_window = [
        t
        for t, acked in load.acked.items()
        if t.startswith("fn") and any(start <= at <= end + DISCOVERY_SLACK for _, at in acked)
    ]
    return {
        "election_window_s": round(end - start, 2),
        "new_tenants": sum(t.startswith("fn") for t in load.acked),
        "new_tenants_acked_in_window": len(newcomers_in_window),
        "acked": load.total_acked(),
        "errors": len(load.failures),
        "error_kinds": sorted({f.error.split(":")[0] for f in load.failures}),
        "longest_write_gap_s": round(max(gaps), 2),
    }


@pytest.fixture
def failover_setup(replica_set):
    equalise_priorities(replica_set)
    watch = PrimaryWatch(replica_set)
    manager = UserConnectionManager(
        replica_set.uri,
        user_pool_size=2,
        w="majority",
        appName=APP,
        max_server_connections=FAILOVER_BUDGET,
    )
    load = Load(manager)
    try:
        yield replica_set, watch, manager, load
    finally:
        load.stop.set()
        for t in load.threads:
            t.join(15)
        manager.close_all()
        watch.close()


def test_step_down_loses_no_acknowledged_write(failover_setup, record_property):
    rs, watch, manager, load = failover_setup
    load.start()
    wait_until(load.all_started, 15, "every tenant's first acknowledged write")
    time.sleep(2)
    old = rs.primary_port()
    fault = time.monotonic()
    with MongoClient(f"mongodb://127.0.0.1:{old}/?directConnection=true") as c:
        c.admin.command("replSetStepDown", 60, secondaryCatchUpPeriodSecs=10)
    new = rs.primary_port(timeout=30)
    assert new != old
    elected = wait_until(
        lambda: watch.first_primary_after(fault, old), 10, "the watcher to see the new primary"
    )
    time.sleep(6)
    load.finish(timeout=20)
    numbers = verify(load, rs, (fault, elected), "stepdown")
    record_property("stepdown", numbers)
    print("stepdown:", numbers)
    assert manager.get_stats()["total_connections"] == len(load.acked)


def test_killed_primary_loses_no_acknowledged_write_and_rejoins(failover_setup, record_property):
    rs, watch, manager, load = failover_setup
    load.start()
    wait_until(load.all_started, 15, "every tenant's first acknowledged write")
    time.sleep(2)
    old = rs.primary_port()
    fault = time.monotonic()
    rs.kill(old)
    new = rs.primary_port(timeout=30)
    assert new != old
    elected = wait_until(
        lambda: watch.first_primary_after(fault, old), 10, "the watcher to see the new primary"
    )
    time.sleep(4)
    # The old primary comes back as a secondary; writes go on meanwhile.
    rs.restart(old)
    rs.wait_healthy(30)
    time.sleep(3)
    load.finish(timeout=20)
    numbers = verify(load, rs, (fault, elected), "kill")
    record_property("kill", numbers)
    print("kill:", numbers)
    assert manager.get_stats()["total_connections"] == len(load.acked)


WRITERS = 25


@dataclass
class Writes:
    """Issue 14's load: ``WRITERS`` threads (or asyncio tasks) over ``TENANTS`` tenants, each writing
    ``{_id: seq}`` with insert_one and reading it back with find_one (both retryable). Records what
    ``verify`` reads, like ``Load``."""

    stop: threading.Event = field(default_factory=threading.Event)
    acked: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    unknown: dict[str, set[int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    crashed: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    reads: int = 0

    def _tenants(self, w: int) -> list[str]:
        return [tenant(i) for i in range(TENANTS) if i % WRITERS == w]

    def _record(self, t: str, seq: int, started: float, exc: BaseException | None, read: bool) -> None:
        if exc is None:
            if not read:
                self.acked[t].append((seq, time.monotonic()))
            return
        if not read:
            self.unknown[t].add(seq)
        what = "find_one" if read else "insert_one"
        self.failures.append(
            Failure(t, seq, started, time.monotonic(), f"{type(exc).__name__} ({what}): {str(exc)[:200]}")
        )

    def _prepare(self) -> None:
        for i in range(TENANTS):
            self.acked[tenant(i)] = []
            self.unknown[tenant(i)] = set()

    def start_sync(self, manager: UserConnectionManager) -> None:
        self._prepare()
        for w in range(WRITERS):
            t = threading.Thread(target=self._write, args=(manager, w), name=f"writer{w}", daemon=True)
            t.start()
            self.threads.append(t)

    def _write(self, manager: UserConnectionManager, w: int) -> None:
        colls = {t: manager.get_database(t).writes for t in self._tenants(w)}
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                for t, coll in colls.items():
                    started = time.monotonic()
                    try:
                        coll.insert_one({"_id": seq})
                    except PyMongoError as exc:
                        self._record(t, seq, started, exc, read=False)
                        continue
                    self._record(t, seq, started, None, read=False)
                    try:
                        found = coll.find_one({"_id": seq})
                    except PyMongoError as exc:
                        self._record(t, seq, started, exc, read=True)
                    else:
                        assert found == {"_id": seq}, (t, seq, found)
                        self.reads += 1
                time.sleep(0.005)
        except BaseException as exc:
            self.crashed.append(exc)

    def start_async(self, uri: str, **options) -> None:
        """The same load on an AsyncUserConnectionManager, its tasks on an event loop of their own thread."""
        self._prepare()
        t = threading.Thread(target=asyncio.run, args=(self._main(uri, options),), name="loop", daemon=True)
        t.start()
        self.threads.append(t)

    async def _main(self, uri: str, options: dict) -> None:
        manager = AsyncUserConnectionManager(uri, **options)
        try:
            await asyncio.gather(*(self._write_async(manager, w) for w in range(WRITERS)))
        except BaseException as exc:
            self.crashed.append(exc)
        finally:
            await manager.close_all()

    async def _write_async(self, manager: AsyncUserConnectionManager, w: int) -> None:
        colls = {t: manager.get_database(t).writes for t in self._tenants(w)}
        seq = 0
        while not self.stop.is_set():
            seq += 1
            for t, coll in colls.items():
                started = time.monotonic()
                try:
                    await coll.insert_one({"_id": seq})
                except PyMongoError as exc:
                    self._record(t, seq, started, exc, read=False)
                    continue
                self._record(t, seq, started, None, read=False)
                try:
                    found = await coll.find_one({"_id": seq})
                except PyMongoError as exc:
                    self._record(t, seq, started, exc, read=True)
                else:
                    assert found == {"_id": seq}, (t, seq, found)
                    self.reads += 1
            await asyncio.sleep(0.005)

    def finish(self, timeout: float) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not [t.name for t in self.threads if t.is_alive()], "writers hung"
        assert not self.crashed, self.crashed

    def all_started(self) -> bool:
        return all(self.acked.get(tenant(i)) for i in range(TENANTS))

    def total_acked(self) -> int:
        return sum(len(v) for v in list(self.acked.values()))


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("strategy", ["per_user", "grouped", "shared"])
def test_retryable_operations_survive_a_step_down_then_a_kill(replica_set, strategy, api, record_property):
    rs = replica_set
    equalise_priorities(rs)
    watch = PrimaryWatch(rs)
    # A connection budget that holds every tenant's pool (50 tenants x 3 members x 3 sockets): this test
    # is about retries through a failover, not about the budget's churn (see test_budget.py).
    options = dict(
        user_pool_size=2,
        w="majority",
        appName=APP,
        strategy=strategy,
        serverSelectionTimeoutMS=30000,
        max_server_connections=FAILOVER_BUDGET,
    )
    load = Writes()
    manager = None
    try:
        if api == "sync":
            manager = UserConnectionManager(rs.uri, **options)
            load.start_sync(manager)
        else:
            load.start_async(rs.uri, **options)
        wait_until(load.all_started, 15, "every tenant's first acknowledged write")
        time.sleep(1)

        first = rs.primary_port()
        fault = time.monotonic()
        with MongoClient(f"mongodb://127.0.0.1:{first}/?directConnection=true") as c:
            c.admin.command("replSetStepDown", 60, secondaryCatchUpPeriodSecs=10)
        second = rs.primary_port(timeout=30)
        assert second != first
        wait_until(lambda: watch.first_primary_after(fault, first), 10, "the watcher to see the new primary")
        # Writes go on through the new primary before it is killed in turn.
        acked = load.total_acked()
        wait_until(lambda: load.total_acked() > acked + 200, 15, "writes through the new primary")

        killed = time.monotonic()
        rs.kill(second)
        third = rs.primary_port(timeout=30)
        assert third not in (first, second)
        elected = wait_until(
            lambda: watch.first_primary_after(killed, second), 15, "the watcher to see the third primary"
        )
        wait_until(
            lambda: all(
                any(at > elected + DISCOVERY_SLACK for _, at in list(load.acked[tenant(i)]))
                for i in range(TENANTS)
            ),
            20,
            "every tenant's write through the third primary",
        )
        load.finish(timeout=30)
        numbers = verify(load, rs, (fault, elected), f"{strategy}/{api}")
        numbers["reads"] = load.reads
        record_property("step_down_then_kill", numbers)
        print(f"{strategy}/{api}:", numbers)
        assert load.reads > 0
    finally:
        load.stop.set()
        for t in load.threads:
            t.join(15)
        if manager is not None:
            manager.close_all()
        watch.close()
