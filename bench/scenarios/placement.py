"""8. Placement overhead: what routing a tenant to its deployment costs per request.

The overhead scenario's request (``get_database(tenant)`` + ``find_one`` by _id, one thread, a few
tenants) through a manager of two deployments -- both on the benchmark's server, so the round trip is the
same -- against a manager of that one server. Placement by callable (half the tenants on each
deployment), and by the tenant catalog (the entries written first; lookups cached, the catalog's change
stream watched on a thread of its own, as in production). Same tenants, same server, same pool size.
Both managers run in the same worker, request by request in turn (which goes first alternating): on a
shared machine, drifting load moved separate processes' medians by ±30 %, far more than the 5 % at stake.
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
    seed_tenants,
    tenant_ids,
)
from systems import label

NAME = "placement"
TITLE = "8. Placement overhead"
SYSTEMS = ("tenantpool/single", "tenantpool/placement-callable", "tenantpool/placement-catalog")
BASELINE = "tenantpool/single"
ROUTED = SYSTEMS[1:]
TARGET = 1.05
DEADLINE_S = 90.0


def prepare(uri: str, s: Settings) -> None:
    seed_tenants(uri, tenant_ids("p", s.overhead_tenants))


def jobs(s: Settings) -> list[Job]:
    params = {"tenants": s.overhead_tenants, "requests": s.overhead_requests, "warmup": s.overhead_warmup}
    n = 2 * (s.overhead_requests + s.overhead_warmup)
    return [
        Job(key=system, system=system, params=params, timeout=2 * DEADLINE_S + 60, min_server_queries=n)
        for system in ROUTED
    ]


def _manager(system: str, uri: str, tenants: list[str]) -> Any:
    from tenantpool import UserConnectionManager

    app = {"appName": f"{APP_PREFIX}-placement"}
    if system == BASELINE:
        return UserConnectionManager(uri, **app)
    deployments = {"a": uri, "b": uri}
    if system == "tenantpool/placement-callable":
        where = {t: "b" for t in tenants[::2]}
        return UserConnectionManager(deployments=deployments, placement=where.get, **app)
    manager = UserConnectionManager(deployments=deployments, catalog="a", **app)
    for i, tenant in enumerate(tenants):
        manager.place_tenant(tenant, "ab"[i % 2])
    return manager


def _figures(latencies: list[float]) -> dict[str, float]:
    return {
        "us_per_request": sum(latencies) / len(latencies) * 1e6,
        "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
    }


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    """The routed manager and a manager of one deployment in the same process, request by request in
    turn: whatever else the machine does hits both alike, and the ratio is theirs."""
    tenants = tenant_ids("p", p["tenants"])
    n_tenants, n = len(tenants), p["requests"]
    single = _manager(BASELINE, uri, tenants)
    try:
        routed = _manager(system, uri, tenants)
    except BaseException:
        single.close_all()
        raise
    pair = (single.get_database, routed.get_database)
    query = {"_id": SEED_ID}
    try:
        for i in range(p["warmup"]):
            for get_db in pair:
                get_db(tenants[i % n_tenants]).c.find_one(query)
        latencies: tuple[list[float], list[float]] = ([0.0] * n, [0.0] * n)
        clock = time.perf_counter
        deadline = clock() + 2 * DEADLINE_S
        for i in range(n):
            if i % 100 == 0 and clock() > deadline:
                raise TimeoutError(f"{i} of {n} request pairs in {2 * DEADLINE_S:.0f} s")
            tenant = tenants[i % n_tenants]
            # Which goes first alternates: neither always follows the other's round trip.
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                t0 = clock()
                doc = pair[k](tenant).c.find_one(query)
                latencies[k][i] = clock() - t0
                if doc is None:
                    raise AssertionError("seed document missing")
        where = sorted({routed.deployment_of(t) for t in tenants})
    finally:
        if system == "tenantpool/placement-catalog":
            # The catalog's entries are the benchmark's: not left on a $MONGODB_URI server.
            from pymongo import MongoClient

            with MongoClient(uri) as client:
                client.tenantpool_catalog.tenants.delete_many({"_id": {"$in": tenants}})
        routed.close_all()
        single.close_all()
    one, two = _figures(latencies[0]), _figures(latencies[1])
    return {
        **two,
        "single": one,
        "p50_ratio": two["p50_us"] / one["p50_us"],
        "requests": n,
        "deployments": where,
    }


def brief(r: dict[str, Any]) -> str:
    return (
        f"p50 {r['p50_us']:.0f} µs against {r['single']['p50_us']:.0f} µs with one deployment "
        f"({r['p50_ratio']:.3f}{X})"
    )


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    keys = ("us_per_request", "p50_us", "p99_us")
    med: dict[str, dict[str, float | None]] = {
        k: {
            **{m: median(r.get(m) for r in runs) for m in keys},
            "p50_ratio": median(r.get("p50_ratio") for r in runs),
        }
        for k, runs in results.items()
    }
    everyone = [r["single"] for runs in results.values() for r in runs]
    med[BASELINE] = {m: median(r.get(m) for r in everyone) for m in keys}
    med[BASELINE]["p50_ratio"] = 1.0 if everyone else None
    rows, targets = [], []
    for system in SYSTEMS:
        m = med.get(system, {})
        runs = len(everyone) if system == BASELINE else len(results.get(system, []))
        rows.append(
            [
                label(system),
                fmt(m.get("us_per_request"), 0),
                fmt(m.get("p50_us"), 0),
                fmt(m.get("p99_us"), 0),
                fmt_ratio(m.get("p50_ratio")),
                str(runs),
            ]
        )
        if system != BASELINE:
            r50 = m.get("p50_ratio")
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
        "manager of two deployments (both on this server; tenants split between them) and a manager of "
        "one, in the same process, request by request in turn. The ratio is each run's p50 against the "
        "one-deployment manager's in that run, then the median over the runs; lower is better.",
        ["system", "µs/request", "p50 µs", "p99 µs", "p50 vs one deployment", "runs"],
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
