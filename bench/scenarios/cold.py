"""7. Cold tenants: the first operation of a tenant whose pool does not exist yet.

Sync: one thread makes one ``find_one`` on each of N new tenants in turn, then a second one on the same
tenant (warm); the first one's latency includes whatever a new tenant costs (client construction, server
discovery, the first connection's handshake). Once alone, once while 8 threads keep ``find_one`` going on
warm tenants. Baseline: a pymongo ``MongoClient`` per tenant, created at the tenant's first request.

Async: 1,000 asyncio tasks over 200 tenants none of which has a pool yet (the async scenario's load,
without its warm-up), against a new ``AsyncMongoClient``: ops/s from the first request on.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

from common import (
    APP_PREFIX,
    SEED_ID,
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
    tenant_ids,
)
from systems import label, make_sync, tenantpool_options

NAME = "cold"
TITLE = "7. Cold tenants"
SYNC = ("tenantpool/per_user", "tenantpool/grouped", "tenantpool/shared", "pymongo/per-tenant")
ASYNC = ("tenantpool-async/per_user", "tenantpool-async/grouped", "tenantpool-async/shared")
ASYNC_BASELINE = "pymongo/async-shared"
LOAD_THREADS = 8
DEADLINE_S = 90.0


def prepare(uri: str, s: Settings) -> None:
    # Reads of databases that do not exist: a new tenant has no data yet either.
    return None


def jobs(s: Settings) -> list[Job]:
    sync = {"tenants": s.cold_tenants, "load_threads": LOAD_THREADS}
    aio = {
        "tasks": s.async_tasks,
        "tenants": s.async_tenants,
        "ops_per_task": s.async_ops_per_task,
        "read_fraction": s.read_fraction,
    }
    return [Job(key=system, system=system, params=sync, timeout=DEADLINE_S + 60) for system in SYNC] + [
        Job(key=system, system=system, params=aio, timeout=DEADLINE_S + 60)
        for system in (*ASYNC, ASYNC_BASELINE)
    ]


def _first_ops(get_db: Any, tenants: list[str], deadline: float) -> tuple[list[float], list[float]]:
    """(first, second) find_one latencies in seconds, tenant after tenant."""
    query = {"_id": SEED_ID}
    first, warm = [], []
    for tenant in tenants:
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        get_db(tenant).c.find_one(query)
        t1 = time.perf_counter()
        get_db(tenant).c.find_one(query)
        first.append(t1 - t0)
        warm.append(time.perf_counter() - t1)
    return first, warm


def _measure_sync(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    alone, loaded, busy = (tenant_ids(prefix, p["tenants"]) for prefix in ("ka", "kl", "kb"))
    target = make_sync(system, uri, {"appName": f"{APP_PREFIX}-cold"})
    deadline = time.perf_counter() + DEADLINE_S
    stop = threading.Event()
    background = Counter[str]()
    try:
        # The manager (or a first client) exists, and so do the load's tenants: only new tenants are cold.
        for tenant in busy[: LOAD_THREADS * 2]:
            target.get_db(tenant).c.find_one({"_id": SEED_ID})
        first_alone, warm_alone = _first_ops(target.get_db, alone, deadline)

        def load(i: int) -> None:
            mine = busy[i * 2 : i * 2 + 2]
            while not stop.is_set() and time.perf_counter() < deadline:
                try:
                    target.get_db(mine[background["ops"] % 2]).c.find_one({"_id": SEED_ID})
                    background["ops"] += 1
                except Exception as exc:
                    background[type(exc).__name__] += 1

        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(p["load_threads"])]
        for t in threads:
            t.start()
        first_loaded, warm_loaded = _first_ops(target.get_db, loaded, deadline)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        target.close()
    ms = 1e3
    return {
        "first_p50_ms": percentile(first_alone, 50) * ms,
        "first_p99_ms": percentile(first_alone, 99) * ms,
        "warm_p50_ms": percentile(warm_alone, 50) * ms,
        "warm_p99_ms": percentile(warm_alone, 99) * ms,
        "loaded_first_p50_ms": percentile(first_loaded, 50) * ms,
        "loaded_first_p99_ms": percentile(first_loaded, 99) * ms,
        "loaded_warm_p50_ms": percentile(warm_loaded, 50) * ms,
        "loaded_warm_p99_ms": percentile(warm_loaded, 99) * ms,
        "tenants": len(first_alone),
        "background_ops": background.pop("ops", 0),
        "errors": sum(background.values()),
    }


async def _run_async(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    app = f"{APP_PREFIX}-cold-async"
    if system == ASYNC_BASELINE:
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient = AsyncMongoClient(uri, appName=app)
        get_db, close = (lambda tenant: client[db_name(tenant)]), client.close
    else:
        from tenantpool import AsyncUserConnectionManager

        manager = AsyncUserConnectionManager(uri, **tenantpool_options(system, {"appName": app}))
        get_db, close = manager.get_database, manager.close_all
    tenants = tenant_ids("ks", p["tenants"])
    query = {"_id": SEED_ID}
    errors: Counter[str] = Counter()
    firsts: list[float] = []
    done = 0

    async def task(i: int, t0: float) -> None:
        nonlocal done
        rng = random.Random(i)
        tenant = tenants[i % len(tenants)]
        for k in range(p["ops_per_task"]):
            try:
                coll = get_db(tenant).c
                if rng.random() < p["read_fraction"]:
                    await coll.find_one(query)
                else:
                    await coll.insert_one({"k": k, "task": i, "s": "payload-0123456789"})
                if k == 0 and i < len(tenants):
                    firsts.append(time.perf_counter() - t0)
                done += 1
            except Exception as exc:
                errors[type(exc).__name__] += 1

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(task(i, t0) for i in range(p["tasks"]))), DEADLINE_S)
    finally:
        seconds = time.perf_counter() - t0
        await close()
    return {
        "ops_per_s": done / seconds if seconds > 0 else None,
        "seconds": seconds,
        "completed": done,
        "first_p50_ms": percentile(firsts, 50) * 1e3,
        "first_p99_ms": percentile(firsts, 99) * 1e3,
        "errors": sum(errors.values()),
        "error_types": dict(errors),
    }


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    if system in SYNC:
        return _measure_sync(uri, system, p)
    return asyncio.run(_run_async(uri, system, p))


def brief(r: dict[str, Any]) -> str:
    extra = f", {r['errors']} errors" if r["errors"] else ""
    if "ops_per_s" in r:
        return f"{r['ops_per_s']:,.0f} ops/s from cold; first op p50 {r['first_p50_ms']:.1f} ms{extra}"
    return (
        f"first op p50 {r['first_p50_ms']:.1f} ms (warm {r['warm_p50_ms']:.2f}), under load "
        f"{r['loaded_first_p50_ms']:.1f} ms (warm {r['loaded_warm_p50_ms']:.2f}){extra}"
    )


SYNC_METRICS = (
    "first_p50_ms",
    "first_p99_ms",
    "warm_p50_ms",
    "warm_p99_ms",
    "loaded_first_p50_ms",
    "loaded_first_p99_ms",
    "loaded_warm_p50_ms",
    "loaded_warm_p99_ms",
    "errors",
)


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {
        k: {m: median(r.get(m) for r in runs) for m in (*SYNC_METRICS, "ops_per_s")}
        for k, runs in results.items()
        if runs
    }
    rows, targets = [], []
    for system in SYNC:
        m = med.get(system, {})
        first, warm = m.get("first_p50_ms"), m.get("warm_p50_ms")
        cold_ratio = ratio(first, warm)
        rows.append(
            [
                label(system),
                f"{fmt(first, 1)} / {fmt(m.get('first_p99_ms'), 1)}",
                f"{fmt(warm, 2)} / {fmt(m.get('warm_p99_ms'), 2)}",
                fmt_ratio(cold_ratio),
                f"{fmt(m.get('loaded_first_p50_ms'), 1)} / {fmt(m.get('loaded_first_p99_ms'), 1)}",
                f"{fmt(m.get('loaded_warm_p50_ms'), 2)} / {fmt(m.get('loaded_warm_p99_ms'), 2)}",
                "",
                str(len(results.get(system, []))),
            ]
        )
        if system.startswith("tenantpool"):
            targets.append(
                Target(
                    f"cold: {label(system)} first op p50 ≤ 2{X} a warm one",
                    fmt_ratio(cold_ratio),
                    None if cold_ratio is None else cold_ratio <= 2.0,
                )
            )
    base = med.get(ASYNC_BASELINE, {}).get("ops_per_s")
    for system in (*ASYNC, ASYNC_BASELINE):
        m = med.get(system, {})
        r = ratio(m.get("ops_per_s"), base)
        rows.append(
            [
                label(system) + " (async, from cold)",
                f"{fmt(m.get('first_p50_ms'), 1)} / {fmt(m.get('first_p99_ms'), 1)}",
                "",
                "",
                "",
                "",
                f"{fmt(m.get('ops_per_s'))} ({fmt_ratio(r)})",
                str(len(results.get(system, []))),
            ]
        )
        if system != ASYNC_BASELINE:
            targets.append(
                Target(
                    f"cold async: {label(system)} ≥ 1.5{X} AsyncMongoClient",
                    fmt_ratio(r),
                    None if r is None else r >= 1.5,
                )
            )
    return Section(
        NAME,
        TITLE,
        f"Sync: one `find_one` on each of {s.cold_tenants} new tenants in turn (its pool does not exist), "
        f"then a second one on it (warm); alone, then while {LOAD_THREADS} threads keep `find_one` going on "
        "warm tenants. p50 / p99 in ms, lower is better. pymongo: a `MongoClient` per tenant, created at "
        f"its first request. Async: {s.async_tasks:,} tasks over {s.async_tenants} tenants with no pool yet "
        f"({s.async_ops_per_task} operations each, {s.read_fraction:.0%} reads), from a new manager or a new "
        "`AsyncMongoClient`; ops/s (vs AsyncMongoClient) and the first operation's latency per tenant.",
        [
            "system",
            "first op ms p50 / p99",
            "warm op ms p50 / p99",
            "first / warm p50",
            "under load: first op ms",
            "under load: warm op ms",
            "async ops/s from cold",
            "runs",
        ],
        rows,
        targets,
        data={"median": med},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med = data["median"]
    systems = [s for s in SYNC if med.get(s, {}).get("first_p50_ms") is not None]
    ys = range(len(systems))
    ax.barh(
        [y - 0.2 for y in ys], [med[s]["first_p50_ms"] for s in systems], height=0.4, label="first op p50"
    )
    ax.barh([y + 0.2 for y in ys], [med[s]["warm_p50_ms"] for s in systems], height=0.4, label="warm op p50")
    ax.set_yticks(list(ys), [label(s) for s in systems])
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.set_xlabel("ms (lower is better)")
    ax.set_title(TITLE)
