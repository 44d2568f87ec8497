"""1. Request overhead: ``get_database(tenant)`` + ``find_one`` by _id, one thread, a few tenants.

What an application pays per request on an idle system: the manager lookup plus one round trip.
The document's manager adds a ``ping`` round trip to every ``get_database``.
"""

from __future__ import annotations

import time
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
    percentile,
    ratio,
    seed_tenants,
    tenant_ids,
)
from systems import label, make_sync

NAME = "overhead"
TITLE = "1. Request overhead"
SYSTEMS = (
    "tenantpool/per_user",
    "tenantpool/grouped",
    "tenantpool/shared",
    "pymongo/shared",
    "document",
    # Command monitoring's cost: one no-op command listener (pymongo's event_listeners).
    "tenantpool/per_user+listener",
    "tenantpool/shared+listener",
    "pymongo/shared+listener",
)
BASELINE = "pymongo/shared"
DEADLINE_S = 90.0


def prepare(uri: str, s: Settings) -> None:
    seed_tenants(uri, tenant_ids("o", s.overhead_tenants))


def jobs(s: Settings) -> list[Job]:
    params = {"tenants": s.overhead_tenants, "requests": s.overhead_requests, "warmup": s.overhead_warmup}
    n = s.overhead_requests + s.overhead_warmup
    return [
        Job(key=system, system=system, params=params, timeout=DEADLINE_S + 60, min_server_queries=n)
        for system in SYSTEMS
    ]


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    tenants = tenant_ids("o", p["tenants"])
    n_tenants, n = len(tenants), p["requests"]
    target = make_sync(system, uri, {"appName": f"{APP_PREFIX}-overhead"})
    get_db = target.get_db
    query = {"_id": SEED_ID}
    try:
        for i in range(p["warmup"]):
            get_db(tenants[i % n_tenants]).c.find_one(query)
        latencies = [0.0] * n
        clock = time.perf_counter
        start = clock()
        deadline = start + DEADLINE_S
        for i in range(n):
            if i % 100 == 0 and clock() > deadline:
                raise TimeoutError(f"{i} of {n} requests in {DEADLINE_S:.0f} s")
            t0 = clock()
            doc = get_db(tenants[i % n_tenants]).c.find_one(query)
            latencies[i] = clock() - t0
            if doc is None:
                raise AssertionError("seed document missing")
        total = clock() - start
    finally:
        target.close()
    return {
        "us_per_request": total / n * 1e6,
        "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
        "requests": n,
    }


def brief(r: dict[str, Any]) -> str:
    return f"{r['us_per_request']:.0f} µs/request (p99 {r['p99_us']:.0f} µs)"


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {
        k: {m: median(r.get(m) for r in runs) for m in ("us_per_request", "p50_us", "p99_us")}
        for k, runs in results.items()
    }
    base = med.get(BASELINE, {}).get("us_per_request")
    rows, targets = [], []
    for system in SYSTEMS:
        m = med.get(system, {})
        value = m.get("us_per_request")
        r = ratio(value, base)
        rows.append(
            [
                label(system),
                fmt(value, 0),
                fmt(m.get("p50_us"), 0),
                fmt(m.get("p99_us"), 0),
                fmt_ratio(r),
                str(len(results.get(system, []))),
            ]
        )
        if system.startswith("tenantpool") and not system.endswith("+listener"):
            targets.append(
                Target(
                    f"overhead: {label(system)} ≤ 1.0{X} pymongo shared",
                    fmt_ratio(r),
                    None if r is None else r <= 1.0,
                )
            )
    return Section(
        NAME,
        TITLE,
        f"`get_database(tenant).c.find_one({{'_id': ...}})` in one thread over {s.overhead_tenants} tenants, "
        f"{s.overhead_requests:,} requests per run after {s.overhead_warmup} warm-up requests; "
        "µs per request (wall time / requests), lower is better. pymongo shared: "
        "`client[f'user_{u}_db'].c.find_one`.",
        ["system", "µs/request", "p50 µs", "p99 µs", "vs pymongo shared", "runs"],
        rows,
        targets,
        data={"median": med},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med = data["median"]
    systems = [s for s in SYSTEMS if med.get(s, {}).get("us_per_request") is not None]
    ax.barh(
        [label(s) for s in systems],
        [med[s]["us_per_request"] for s in systems],
        color=["tab:blue" if s.startswith("tenantpool") else "tab:gray" for s in systems],
    )
    ax.invert_yaxis()
    ax.set_xlabel("µs per request (lower is better)")
    ax.set_title(TITLE)
