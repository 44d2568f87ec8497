"""3. Noisy neighbour: one tenant keeps 40 slow operations in flight; 20 quiet tenants' latency.

The noisy tenant runs 40 threads, each looping ``find_one({"$where": "sleep(200) || true"})`` on a
one-document collection, so the server holds each of its operations ~200 ms -- like a ``failCommand``
fail point with ``blockConnection``, but only for that tenant. While it does, 20 quiet tenants each make
30 ``find_one`` by _id requests, one after another, all 20 concurrently. The same quiet load is first
run without the noise: the ratio of the two p99s is what the noise costs a quiet tenant.

Every system gets waitQueueTimeoutMS=1000, so a request that cannot get a connection (or a slot of its
tenant's quota) fails after a second instead of hanging: errors are counted, not hidden.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from common import (
    APP_PREFIX,
    SEED_ID,
    TENANT_PREFIX,
    Job,
    Section,
    Settings,
    Target,
    X,
    db_name,
    fmt,
    fmt_ratio,
    median,
    percentile,
    ratio,
    seed_tenants,
    tenant_ids,
)
from systems import label, make_sync

NAME = "noisy"
TITLE = "3. Noisy neighbour"
SYSTEMS = ("tenantpool/per_user", "tenantpool/grouped", "tenantpool/shared", "pymongo/shared", "document")
#: The configurations of the issue: per-tenant share 5; grouped 4 groups of 20; shared 20; pymongo 20.
OPTIONS = {
    "user_pool_size": 5,
    "groups": 4,
    "shared_pool_size": 20,
    "pymongo_pool_size": 20,
    "waitQueueTimeoutMS": 1000,
}
NOISY = f"{TENANT_PREFIX}noisy"
SLOW_COLL = "slow"
#: A quiet pass stops after this long; requests it did not get to count as errors ("not run").
QUIET_DEADLINE_S = 25.0
MAX_OPS_PER_THREAD = 1000


def prepare(uri: str, s: Settings) -> None:
    from pymongo import MongoClient

    seed_tenants(uri, [*tenant_ids("q", s.noisy_quiet_tenants), NOISY])
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    with client:
        slow = client[db_name(NOISY)][SLOW_COLL]
        slow.delete_many({"_id": {"$ne": 1}})
        slow.replace_one({"_id": 1}, {"_id": 1}, upsert=True)


def jobs(s: Settings) -> list[Job]:
    params = {
        "quiet_tenants": s.noisy_quiet_tenants,
        "quiet_requests": s.noisy_quiet_requests,
        "noisy_ops": s.noisy_ops,
        "sleep_ms": s.noisy_sleep_ms,
    }
    return [
        Job(key=system, system=system, params=params, timeout=2 * QUIET_DEADLINE_S + 120)
        for system in SYSTEMS
    ]


def quiet_pass(get_db: Any, tenants: list[str], requests: int) -> dict[str, Any]:
    """Every tenant's requests in its own thread, all tenants at once; latencies include failures."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(len(tenants) + 1)
    deadline = time.perf_counter() + QUIET_DEADLINE_S
    query = {"_id": SEED_ID}

    def tenant_loop(tenant: str) -> None:
        mine: list[float] = []
        start.wait()
        for _ in range(requests):
            if time.perf_counter() > deadline:
                with lock:
                    errors["not run (deadline)"] += 1
                continue
            t0 = time.perf_counter()
            try:
                get_db(tenant).c.find_one(query)
            except Exception as exc:
                with lock:
                    errors[type(exc).__name__] += 1
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=tenant_loop, args=(t,), daemon=True) for t in tenants]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(QUIET_DEADLINE_S + 30)
    return {
        "seconds": time.perf_counter() - t0,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies, default=0.0) * 1e3,
        "errors": sum(errors.values()),
        "error_types": dict(errors),
    }


class Noise:
    """``ops`` threads of the noisy tenant, each looping one slow operation until stopped."""

    def __init__(self, get_db: Any, ops: int, sleep_ms: int) -> None:
        self.stop = threading.Event()
        self.started = threading.Barrier(ops + 1)
        self.completed = 0
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._where = {"$where": f"sleep({sleep_ms}) || true"}
        self._get_db = get_db
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(ops)]

    def _loop(self) -> None:
        self.started.wait()
        deadline = time.perf_counter() + QUIET_DEADLINE_S + 10
        # Bounded in count and in time, like every load loop here.
        for _ in range(MAX_OPS_PER_THREAD):
            if self.stop.is_set() or time.perf_counter() > deadline:
                break
            try:
                self._get_db(NOISY)[SLOW_COLL].find_one(self._where)
                ok = True
            except Exception as exc:
                ok = False
                err = type(exc).__name__
            with self._lock:
                if ok:
                    self.completed += 1
                else:
                    self.errors[err] += 1

    def __enter__(self) -> Noise:
        for t in self._threads:
            t.start()
        self.started.wait()
        time.sleep(0.3)  # every slow operation is in flight (or queued) before the quiet load starts
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    quiet = tenant_ids("q", p["quiet_tenants"])
    target = make_sync(system, uri, {**OPTIONS, "appName": f"{APP_PREFIX}-noisy"})
    try:
        target.get_db(NOISY).c.find_one({"_id": SEED_ID})
        quiet_pass(target.get_db, quiet, 3)  # warm-up: pools, threads and caches exist before timing
        unloaded = quiet_pass(target.get_db, quiet, p["quiet_requests"])
        with Noise(target.get_db, p["noisy_ops"], p["sleep_ms"]) as noise:
            loaded = quiet_pass(target.get_db, quiet, p["quiet_requests"])
        noisy = {
            "completed": noise.completed,
            "errors": sum(noise.errors.values()),
            "error_types": dict(noise.errors),
        }
    finally:
        target.close()
    return {
        "unloaded": unloaded,
        "loaded": loaded,
        "noisy": noisy,
        "p99_ratio": ratio(loaded["p99_ms"], unloaded["p99_ms"]),
    }


def brief(r: dict[str, Any]) -> str:
    lo, un = r["loaded"], r["unloaded"]
    return (
        f"quiet p99 {lo['p99_ms']:.1f} ms loaded vs {un['p99_ms']:.1f} ms unloaded "
        f"({r['p99_ratio']:.1f}{X}), max {lo['max_ms']:.0f} ms, "
        f"{lo['errors']} errors {lo['error_types'] or ''}"
        f"; noisy tenant: {r['noisy']['completed']} done, {r['noisy']['errors']} failed"
    )


def _med(runs: list[dict[str, Any]], *path: str) -> float | None:
    def get(r: dict[str, Any]) -> Any:
        for key in path:
            r = r[key]
        return r

    return median(get(r) for r in runs)


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    rows, targets, data = [], [], {}
    for system in SYSTEMS:
        runs = results.get(system, [])
        m = {
            "p50_ms": _med(runs, "loaded", "p50_ms"),
            "p99_ms": _med(runs, "loaded", "p99_ms"),
            "max_ms": _med(runs, "loaded", "max_ms"),
            "errors": _med(runs, "loaded", "errors"),
            "unloaded_p99_ms": _med(runs, "unloaded", "p99_ms"),
            "ratio": _med(runs, "p99_ratio"),
            "noisy_completed": _med(runs, "noisy", "completed"),
            "noisy_errors": _med(runs, "noisy", "errors"),
        }
        max_errors = max((r["loaded"]["errors"] for r in runs), default=None)
        data[system] = m
        rows.append(
            [
                label(system),
                fmt(m["p50_ms"], 1),
                fmt(m["p99_ms"], 1),
                fmt(m["max_ms"], 0),
                fmt(m["errors"]) + ("" if max_errors in (None, m["errors"]) else f" (max {max_errors})"),
                fmt(m["unloaded_p99_ms"], 1),
                fmt_ratio(m["ratio"]),
                f"{fmt(m['noisy_completed'])} / {fmt(m['noisy_errors'])}",
                str(len(runs)),
            ]
        )
        if system.startswith("tenantpool"):
            r = m["ratio"]
            met = None if r is None or max_errors is None else (r <= 3.0 and max_errors == 0)
            targets.append(
                Target(
                    f"noisy neighbour: {label(system)} quiet p99 ≤ 3{X} unloaded, 0 errors",
                    f"{fmt_ratio(r)}, {fmt(max_errors)} errors (worst run)",
                    met,
                )
            )
    notes = []
    if (data.get("pymongo/shared", {}).get("errors") or 0) > 0:
        notes.append(
            "pymongo retries a read once after a WaitQueueTimeoutError (retryReads=true), so its failed "
            "requests take about twice waitQueueTimeoutMS."
        )
    return Section(
        NAME,
        TITLE,
        f"One noisy tenant keeps {s.noisy_ops} operations in flight, each held {s.noisy_sleep_ms} ms by the "
        f"server (`find_one({{'$where': 'sleep({s.noisy_sleep_ms}) || true'}})` on a 1-document collection, "
        f"{s.noisy_ops} threads looping), while {s.noisy_quiet_tenants} quiet tenants make "
        f"{s.noisy_quiet_requests} `find_one` requests each (one thread per tenant, all at once). Quiet "
        "latencies include failed requests. Configurations: tenantpool user_pool_size=5 (per_user; grouped "
        "groups=4, shared_pool_size=20; shared shared_pool_size=20), pymongo maxPoolSize=20, the "
        "document's manager user_pool_size=5; waitQueueTimeoutMS=1000 everywhere. *Unloaded*: the same "
        "quiet load without the noisy tenant, same process, just before (after an untimed warm-up pass). "
        f"A quiet pass stops after {QUIET_DEADLINE_S:.0f} s; requests it did not get to count as errors.",
        [
            "system",
            "quiet p50 ms",
            "quiet p99 ms",
            "quiet max ms",
            "quiet errors",
            "unloaded p99 ms",
            "p99 loaded/unloaded",
            "noisy ops done / failed",
            "runs",
        ],
        rows,
        targets,
        notes,
        data=data,
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    systems = [s for s in SYSTEMS if data.get(s, {}).get("p99_ms") is not None]
    y = range(len(systems))
    ax.barh(
        [i - 0.2 for i in y],
        [data[s]["unloaded_p99_ms"] for s in systems],
        height=0.4,
        label="unloaded",
        color="tab:green",
    )
    ax.barh(
        [i + 0.2 for i in y],
        [data[s]["p99_ms"] for s in systems],
        height=0.4,
        label="with the noisy tenant",
        color="tab:red",
    )
    ax.set_yticks(list(y), [label(s) for s in systems])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("quiet tenants' p99 latency, ms (log; lower is better)")
    ax.legend(fontsize=8)
    ax.set_title(TITLE)
