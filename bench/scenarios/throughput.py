"""2. Throughput: many threads, many tenants, a read-mostly mix; operations per second.

64 threads share a fixed number of operations; each picks a random tenant of 1,000 and does
``find_one`` by _id (75%) or ``insert_one`` (25%). Every tenant is touched once before the clock starts,
so pools exist and the numbers are steady-state throughput, not pool creation.
"""

from __future__ import annotations

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
    fmt,
    fmt_ratio,
    median,
    ratio,
    seed_tenants,
    tenant_ids,
)
from systems import label, make_sync

NAME = "throughput"
TITLE = "2. Throughput"
SYSTEMS = ("tenantpool/per_user", "tenantpool/grouped", "tenantpool/shared", "pymongo/shared", "document")
DEADLINE_S = 90.0


def prepare(uri: str, s: Settings) -> None:
    seed_tenants(uri, tenant_ids("t", s.throughput_tenants))


def jobs(s: Settings) -> list[Job]:
    params = {
        "tenants": s.throughput_tenants,
        "threads": s.throughput_threads,
        "ops": s.throughput_ops,
        "read_fraction": s.read_fraction,
    }
    # 75% of the operations are reads (random, so expect a bit less), plus one per tenant to warm up.
    reads = int(s.throughput_ops * s.read_fraction * 0.9) + s.throughput_tenants
    return [
        Job(key=system, system=system, params=params, timeout=DEADLINE_S + 60, min_server_queries=reads)
        for system in SYSTEMS
    ]


def run_mix(
    get_db: Any,
    tenants: list[str],
    threads: int,
    ops: int,
    read_fraction: float,
    deadline: float,
    warm: bool = False,
) -> tuple[float, int, Counter[str]]:
    """Runs ``ops`` operations on ``threads`` threads; returns (seconds, completed, errors by type).

    ``warm``: each thread touches its share of the tenants in order, once (creates every pool)."""
    counts = [0] * threads
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    query = {"_id": SEED_ID}

    def worker(i: int) -> None:
        rng = random.Random(i)
        mine = tenants[i::threads] if warm else None
        n = len(mine) if mine is not None else ops // threads + (1 if i < ops % threads else 0)
        start.wait()
        done = 0
        for k in range(n):
            if time.perf_counter() > deadline:
                break
            tenant = mine[k] if mine is not None else tenants[rng.randrange(len(tenants))]
            try:
                coll = get_db(tenant).c
                if mine is not None or rng.random() < read_fraction:
                    coll.find_one(query)
                else:
                    coll.insert_one({"k": k, "w": i, "s": "payload-0123456789"})
                done += 1
            except Exception as exc:
                with lock:
                    errors[type(exc).__name__] += 1
        counts[i] = done

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join(max(0.0, deadline - time.perf_counter()) + 30)
    return time.perf_counter() - t0, sum(counts), errors


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    tenants = tenant_ids("t", p["tenants"])
    target = make_sync(system, uri, {"appName": f"{APP_PREFIX}-throughput"})
    deadline = time.perf_counter() + DEADLINE_S
    try:
        warm_s, _, warm_errors = run_mix(target.get_db, tenants, p["threads"], 0, 1.0, deadline, warm=True)
        cpu0 = time.process_time()
        seconds, done, errors = run_mix(
            target.get_db, tenants, p["threads"], p["ops"], p["read_fraction"], deadline
        )
        cpu = time.process_time() - cpu0
    finally:
        target.close()
    return {
        "ops_per_s": done / seconds if seconds > 0 else None,
        "seconds": seconds,
        "completed": done,
        "ops": p["ops"],
        "client_cpu_us_per_op": cpu / done * 1e6 if done else None,
        # For the driver's check that the reads reached the server (75% of what completed, roughly).
        "min_server_queries": int(done * p["read_fraction"] * 0.9) + len(tenants),
        "errors": sum(errors.values()),
        "error_types": dict(errors),
        "warmup_s": warm_s,
        "warmup_errors": sum(warm_errors.values()),
    }


def brief(r: dict[str, Any]) -> str:
    extra = f", {r['errors']} errors" if r["errors"] else ""
    return (
        f"{r['ops_per_s']:,.0f} ops/s ({r['completed']:,} ops in {r['seconds']:.1f} s{extra}; "
        f"client CPU {r['client_cpu_us_per_op']:.0f} µs/op; warm-up {r['warmup_s']:.1f} s)"
    )


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {
        k: {
            m: median(r.get(m) for r in runs)
            for m in ("ops_per_s", "errors", "warmup_s", "client_cpu_us_per_op")
        }
        for k, runs in results.items()
    }
    base = med.get("pymongo/shared", {}).get("ops_per_s")
    doc = med.get("document", {}).get("ops_per_s")
    rows, targets = [], []
    for system in SYSTEMS:
        m = med.get(system, {})
        value = m.get("ops_per_s")
        vs_pymongo, vs_doc = ratio(value, base), ratio(value, doc)
        incomplete = sum(r["completed"] < r["ops"] for r in results.get(system, []))
        rows.append(
            [
                label(system),
                fmt(value),
                fmt_ratio(vs_pymongo),
                fmt_ratio(vs_doc),
                fmt(m.get("client_cpu_us_per_op")),
                fmt(m.get("errors")),
                fmt(m.get("warmup_s"), 1),
                str(len(results.get(system, [])))
                + (f" ({incomplete} hit the deadline)" if incomplete else ""),
            ]
        )
        if system.startswith("tenantpool"):
            targets.append(
                Target(
                    f"throughput: {label(system)} ≥ 1.5{X} pymongo shared",
                    fmt_ratio(vs_pymongo),
                    None if vs_pymongo is None else vs_pymongo >= 1.5,
                )
            )
            targets.append(
                Target(
                    f"throughput: {label(system)} ≥ 4{X} the document's manager",
                    fmt_ratio(vs_doc),
                    None if vs_doc is None else vs_doc >= 4.0,
                )
            )
    return Section(
        NAME,
        TITLE,
        f"{s.throughput_threads} threads, {s.throughput_tenants:,} tenants, {s.throughput_ops:,} operations "
        f"per run ({s.read_fraction:.0%} `find_one` by _id, the rest `insert_one`), each on a random tenant "
        "through `get_database(tenant)`; ops/s, higher is better. Defaults of every system (tenantpool "
        "user_pool_size=10; pymongo maxPoolSize=100; the document's manager user_pool_size=10). Warm-up "
        "(not timed): every tenant once. Client CPU: the benchmark process's user+system CPU time per "
        "operation (the server runs on the same 2 cores).",
        [
            "system",
            "ops/s",
            "vs pymongo shared",
            "vs document's manager",
            "client CPU µs/op",
            "errors",
            "warm-up s",
            "runs",
        ],
        rows,
        targets,
        data={"median": med},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med = data["median"]
    systems = [s for s in SYSTEMS if med.get(s, {}).get("ops_per_s") is not None]
    ax.barh(
        [label(s) for s in systems],
        [med[s]["ops_per_s"] for s in systems],
        color=["tab:blue" if s.startswith("tenantpool") else "tab:gray" for s in systems],
    )
    ax.invert_yaxis()
    ax.set_xlabel("operations per second (higher is better)")
    ax.set_title(TITLE)
