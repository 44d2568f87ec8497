"""8. Placement overhead: what routing a tenant to its deployment costs per request.

The overhead scenario's request (``get_database(tenant)`` + ``find_one`` by _id, one thread, a few
tenants) through a manager of two deployments -- both on the benchmark's server, so the round trip is the
same -- against a manager of that one server. Placement by callable (half the tenants on each
deployment), and by the tenant catalog (the entries written first; lookups cached, the catalog's change
stream watched on a thread of its own, as in production). Same tenants, same server, same pool size.
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
from systems import label

NAME = "placement"
TITLE = "8. Placement overhead"
SYSTEMS = ("tenantpool/single", "tenantpool/placement-callable", "tenantpool/placement-catalog")
BASELINE = "tenantpool/single"
TARGET = 1.05
DEADLINE_S = 90.0


def prepare(uri: str, s: Settings) -> None:
    seed_tenants(uri, tenant_ids("p", s.overhead_tenants))


def jobs(s: Settings) -> list[Job]:
    params = {"tenants": s.overhead_tenants, "requests": s.overhead_requests, "warmup": s.overhead_warmup}
    n = s.overhead_requests + s.overhead_warmup
    return [
        Job(key=system, system=system, params=params, timeout=DEADLINE_S + 60, min_server_queries=n)
        for system in SYSTEMS
    ]


def _manager(system: str, uri: str, tenants: list[str]) -> Any:
    from tenantpool import UserConnectionManager

    app = {"appName": f"{APP_PREFIX}-placement"}
    if system == "tenantpool/single":
        return UserConnectionManager(uri, **app)
    deployments = {"a": uri, "b": uri}
    if system == "tenantpool/placement-callable":
        where = {t: "b" for t in tenants[::2]}
        return UserConnectionManager(deployments=deployments, placement=where.get, **app)
    manager = UserConnectionManager(deployments=deployments, catalog="a", **app)
    for i, tenant in enumerate(tenants):
        manager.place_tenant(tenant, "ab"[i % 2])
    return manager


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    tenants = tenant_ids("p", p["tenants"])
    n_tenants, n = len(tenants), p["requests"]
    manager = _manager(system, uri, tenants)
    get_db = manager.get_database
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
        where = sorted({manager.deployment_of(t) for t in tenants}) if system != BASELINE else ["-"]
    finally:
        if system == "tenantpool/placement-catalog":
            # The catalog's entries are the benchmark's: not left on a $MONGODB_URI server.
            from pymongo import MongoClient

            with MongoClient(uri) as client:
                client.tenantpool_catalog.tenants.delete_many({"_id": {"$in": tenants}})
        manager.close_all()
    return {
        "us_per_request": total / n * 1e6,
        "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
        "requests": n,
        "deployments": where,
    }


def brief(r: dict[str, Any]) -> str:
    return f"{r['us_per_request']:.0f} µs/request (p50 {r['p50_us']:.0f}, p99 {r['p99_us']:.0f} µs)"


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {
        k: {m: median(r.get(m) for r in runs) for m in ("us_per_request", "p50_us", "p99_us")}
        for k, runs in results.items()
    }
    base = med.get(BASELINE, {})
    rows, targets = [], []
    for system in SYSTEMS:
        m = med.get(system, {})
        r50 = ratio(m.get("p50_us"), base.get("p50_us"))
        rows.append(
            [
                label(system),
                fmt(m.get("us_per_request"), 0),
                fmt(m.get("p50_us"), 0),
                fmt(m.get("p99_us"), 0),
                fmt_ratio(r50),
                fmt_ratio(ratio(m.get("us_per_request"), base.get("us_per_request"))),
                str(len(results.get(system, []))),
            ]
        )
        if system != BASELINE:
            targets.append(
                Target(
                    f"placement: {label(system)} p50 ≤ {TARGET:.2f}{X} one deployment",
                    fmt_ratio(r50),
                    None if r50 is None else r50 <= TARGET,
                )
            )
    return Section(
        NAME,
        TITLE,
        f"`get_database(tenant).c.find_one({{'_id': ...}})` in one thread over {s.overhead_tenants} tenants, "
        f"{s.overhead_requests:,} requests per run after {s.overhead_warmup} warm-up requests, through a "
        "manager of two deployments (both on this server; tenants split between them) against a manager "
        "of one. The ratio is of the per-request latency medians (each run's p50, then the median over "
        "the runs); lower is better.",
        ["system", "µs/request", "p50 µs", "p99 µs", "p50 vs one deployment", "µs/request vs one", "runs"],
        rows,
        targets,
        data={"median": med},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med = data["median"]
    systems = [s for s in SYSTEMS if med.get(s, {}).get("p50_us") is not None]
    ax.barh(
        [label(s) for s in systems],
        [med[s]["p50_us"] for s in systems],
        color=["tab:gray" if s == BASELINE else "tab:blue" for s in systems],
    )
    ax.invert_yaxis()
    ax.set_xlabel("p50 µs per request (lower is better)")
    ax.set_title(TITLE)
