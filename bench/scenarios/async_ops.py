"""5. Async: 1,000 asyncio tasks over 200 tenants; ops/s and event-loop lag.

Each task makes a fixed number of operations (75% ``find_one`` by _id, 25% ``insert_one``) on its tenant.
A heartbeat task sleeps 10 ms in a loop; how late it wakes up is the event-loop lag -- what every other
request on that loop would wait for if a call blocked the loop.

tenantpool's async API (``tenantpool.AsyncUserConnectionManager``: the same constructor,
``get_database(tenant)`` whose collections' methods are awaitable, ``await manager.close_all()``) is
feature-detected: without it, its rows are skipped with a note. Baseline: pymongo's AsyncMongoClient.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import Counter
from collections.abc import Callable
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
    seed_tenants,
    tenant_ids,
)
from systems import label, tenantpool_options

NAME = "async"
TITLE = "5. Async"
SYSTEMS = (
    "tenantpool-async/per_user",
    "tenantpool-async/grouped",
    "tenantpool-async/shared",
    "pymongo/async-shared",
)
BASELINE = "pymongo/async-shared"
HEARTBEAT_S = 0.010
DEADLINE_S = 90.0
MISSING = (
    "tenantpool.AsyncUserConnectionManager does not exist in this tenantpool yet "
    "(the async API is being built)"
)


def prepare(uri: str, s: Settings) -> None:
    seed_tenants(uri, tenant_ids("t", s.throughput_tenants)[: s.async_tenants])


def jobs(s: Settings) -> list[Job]:
    params = {
        "tasks": s.async_tasks,
        "tenants": s.async_tenants,
        "ops_per_task": s.async_ops_per_task,
        "read_fraction": s.read_fraction,
        "universe": s.throughput_tenants,
    }
    reads = int(s.async_tasks * s.async_ops_per_task * s.read_fraction * 0.9) + s.async_tenants
    return [
        Job(key=system, system=system, params=params, timeout=DEADLINE_S + 90, min_server_queries=reads)
        for system in SYSTEMS
    ]


async def _open(uri: str, system: str) -> tuple[Callable[[str], Any], Callable[[], Any]] | str:
    app = f"{APP_PREFIX}-async"
    if system == BASELINE:
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient = AsyncMongoClient(uri, appName=app)
        return (lambda tenant: client[db_name(tenant)]), client.close
    import tenantpool

    manager_class = getattr(tenantpool, "AsyncUserConnectionManager", None)
    if manager_class is None:
        return MISSING
    manager = manager_class(uri, **tenantpool_options(system, {"appName": app}))
    return manager.get_database, manager.close_all


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _run(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    opened = await _open(uri, system)
    if isinstance(opened, str):
        return {"skipped": opened}
    get_db, close = opened
    tenants = tenant_ids("t", p["universe"])[: p["tenants"]]
    query = {"_id": SEED_ID}
    errors: Counter[str] = Counter()
    done = 0
    try:
        for tenant in tenants:  # warm-up, not timed: every tenant's pool exists
            await (await _maybe_await(get_db(tenant))).c.find_one(query)

        async def task(i: int) -> None:
            nonlocal done
            rng = random.Random(i)
            tenant = tenants[i % len(tenants)]
            for k in range(p["ops_per_task"]):
                try:
                    coll = (await _maybe_await(get_db(tenant))).c
                    if rng.random() < p["read_fraction"]:
                        await coll.find_one(query)
                    else:
                        await coll.insert_one({"k": k, "task": i, "s": "payload-0123456789"})
                    done += 1
                except Exception as exc:
                    errors[type(exc).__name__] += 1

        lags: list[float] = []
        stop = asyncio.Event()

        async def heartbeat() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(HEARTBEAT_S)
                lags.append(max(0.0, time.perf_counter() - t0 - HEARTBEAT_S))

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(HEARTBEAT_S * 2)
        t0 = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(*(task(i) for i in range(p["tasks"]))), DEADLINE_S)
        except asyncio.TimeoutError:
            timed_out = True
        seconds = time.perf_counter() - t0
        stop.set()
        await beat
    finally:
        await _maybe_await(close())
    total = p["tasks"] * p["ops_per_task"]
    return {
        "ops_per_s": done / seconds if seconds > 0 else None,
        "seconds": seconds,
        "completed": done,
        "ops": total,
        "timed_out": timed_out,
        "errors": sum(errors.values()),
        "error_types": dict(errors),
        "lag_p99_ms": percentile(lags, 99) * 1e3,
        "lag_max_ms": max(lags, default=0.0) * 1e3,
        "heartbeats": len(lags),
        "min_server_queries": int(done * p["read_fraction"] * 0.9) + len(tenants),
    }


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_run(uri, system, p))


def brief(r: dict[str, Any]) -> str:
    extra = f", {r['errors']} errors {r['error_types']}" if r["errors"] else ""
    return (
        f"{r['ops_per_s']:,.0f} ops/s ({r['completed']:,} ops in {r['seconds']:.1f} s{extra}); "
        f"loop lag p99 {r['lag_p99_ms']:.1f} ms, max {r['lag_max_ms']:.1f} ms"
    )


METRICS = ("ops_per_s", "lag_p99_ms", "lag_max_ms", "errors")


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {k: {m: median(r[m] for r in runs) for m in METRICS} for k, runs in results.items() if runs}
    base = med.get(BASELINE, {}).get("ops_per_s")
    rows, targets = [], []
    for system in SYSTEMS:
        if system in skipped:
            rows.append([label(system), f"skipped: {skipped[system]}", "", "", "", "", ""])
        else:
            m = med.get(system, {})
            rows.append(
                [
                    label(system),
                    fmt(m.get("ops_per_s")),
                    fmt_ratio(ratio(m.get("ops_per_s"), base)),
                    fmt(m.get("lag_p99_ms"), 1),
                    fmt(m.get("lag_max_ms"), 1),
                    fmt(m.get("errors")),
                    str(len(results.get(system, []))),
                ]
            )
        if system != BASELINE:
            r = ratio(med.get(system, {}).get("ops_per_s"), base)
            targets.append(
                Target(
                    f"async: {label(system)} ≥ 1.5{X} AsyncMongoClient",
                    "skipped (no async API yet)" if system in skipped else fmt_ratio(r),
                    None if r is None else r >= 1.5,
                )
            )
    return Section(
        NAME,
        TITLE,
        f"{s.async_tasks:,} asyncio tasks over {s.async_tenants} tenants, {s.async_ops_per_task} operations "
        f"each ({s.read_fraction:.0%} `find_one` by _id, the rest `insert_one`) — "
        f"{s.async_tasks * s.async_ops_per_task:,} per run; ops/s, higher is better. Event-loop lag: how "
        f"late a heartbeat sleeping {HEARTBEAT_S * 1e3:.0f} ms wakes up (p99 and max over the run), lower is "
        "better. "
        "Defaults of every system (tenantpool user_pool_size=10; AsyncMongoClient maxPoolSize=100).",
        ["system", "ops/s", "vs AsyncMongoClient", "loop lag p99 ms", "loop lag max ms", "errors", "runs"],
        rows,
        targets,
        data={"median": med, "skipped": skipped},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med = data["median"]
    systems = [s for s in SYSTEMS if med.get(s, {}).get("ops_per_s") is not None]
    ax.barh(
        [label(s) for s in systems],
        [med[s]["ops_per_s"] for s in systems],
        color=["tab:blue" if s.startswith("tenantpool") else "tab:gray" for s in systems],
    )
    for i, s in enumerate(systems):
        ax.annotate(
            f" lag max {med[s]['lag_max_ms']:.0f} ms", (med[s]["ops_per_s"], i), va="center", fontsize=7
        )
    if data.get("skipped"):
        ax.text(
            0.02, 0.02, "tenantpool async: skipped (API not there yet)", transform=ax.transAxes, fontsize=8
        )
    if systems:  # room for the annotations
        ax.set_xlim(0, 1.4 * max(med[s]["ops_per_s"] for s in systems))
    ax.invert_yaxis()
    ax.set_xlabel("operations per second (higher is better)")
    ax.set_title(TITLE)
