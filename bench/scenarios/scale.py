"""4. Tenant scale: N tenants each doing one ``find_one``; wall time, threads, memory, server connections.

Each configuration runs in a fresh process. After the tenants' requests (32 threads share them) and a
1 s settle, the driver measures the worker from outside: its OS threads (/proc/<pid>/task), its RSS
growth since before the manager or clients were created, and the number of connections the server has
open for the run's appName ($currentOp with idleConnections, so monitoring connections count too).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from common import (
    APP_PREFIX,
    PROBE_MARKER,
    STATE_MARKER,
    Job,
    Section,
    Settings,
    Target,
    fd_limit,
    fmt,
    median,
    rss_mb,
    server_connections,
    tenant_ids,
    thread_count,
)
from systems import label, make_sync

NAME = "scale"
TITLE = "4. Tenant scale"
SYSTEMS = (
    "tenantpool/per_user",
    "tenantpool/grouped",
    "tenantpool/shared",
    "pymongo/per-tenant",
    "pymongo/shared",
)
OPTIONS = {"user_pool_size": 5, "groups": 4, "shared_pool_size": 20, "pymongo_pool_size": 20}
#: Sockets a driver client keeps per server beyond its pool: the monitor's and the RTT monitor's.
MONITOR_SOCKETS = 2
# tenantpool's driver clients poll (serverMonitoringMode=poll): no RTT monitor socket.
TENANTPOOL_MONITOR_SOCKETS = 1
SETTLE_S = 1.0
RSS_BUDGET_MB = 100.0
#: Tenants not reached by then are left out, and the row says so (a machine can take a pymongo client
#: per tenant, 3 threads each, much longer than linearly when it is busy).
DEADLINE_S = 60.0


def budget(system: str) -> int | None:
    """The most connections a configuration may open, whatever the number of tenants (counting two
    monitoring sockets per client, as a tenantpool client has with serverMonitoringMode=stream)."""
    per_client = OPTIONS["shared_pool_size"] + MONITOR_SOCKETS
    if system == "tenantpool/grouped":
        return OPTIONS["groups"] * per_client
    if system == "tenantpool/shared":
        return per_client
    if system == "pymongo/shared":
        return OPTIONS["pymongo_pool_size"] + MONITOR_SOCKETS
    return None


def skip_reason(system: str, n: int) -> str | None:
    sockets = n * (1 + MONITOR_SOCKETS)
    limit = fd_limit()
    if system == "tenantpool/per_user":
        # tenantpool's clients poll their server: one monitoring socket, not pymongo's two.
        sockets = n * (1 + TENANTPOOL_MONITOR_SOCKETS)
    if system == "pymongo/per-tenant" and (n >= 10_000 or sockets > 0.8 * limit):
        return (
            f"a MongoClient per tenant runs 3 threads and opens 3 sockets: {3 * n:,} threads "
            f"and {sockets:,} sockets for {n:,} tenants (fd limit here {limit:,})"
        )
    # tenantpool/per_user runs at every size: its connection budget (max_server_connections, default
    # 256) closes idle tenants' clients to make room, so its sockets do not grow with the tenants.
    return None


def prepare(uri: str, s: Settings) -> None:
    pass  # reads of collections that do not exist: nothing to seed, nothing created


def jobs(s: Settings) -> list[Job]:
    return [
        Job(
            key=f"{system}@{n}",
            system=system,
            params={"tenants": n, "threads": s.scale_threads},
            skip=skip_reason(system, n),
            timeout=DEADLINE_S + 45,
        )
        for n in s.scale_sizes
        for system in SYSTEMS
    ]


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    import pymongo  # noqa: F401  (imported before the baseline is taken, as tenantpool is)

    if system.startswith("tenantpool"):
        import tenantpool  # noqa: F401
    n, workers = p["tenants"], p["threads"]
    tenants = tenant_ids("s", n)
    app = f"{APP_PREFIX}-scale-{os.getpid()}"
    gc.collect()
    threads_before, rss_before = thread_count(), rss_mb()
    state = {"app": app, "threads_before": threads_before, "rss_before_mb": rss_before, "tenants": n}
    sys.stdout.write(STATE_MARKER + json.dumps(state) + "\n")
    sys.stdout.flush()
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    t0 = time.perf_counter()
    target = make_sync(system, uri, {**OPTIONS, "appName": app})

    done = [0] * workers
    deadline = t0 + DEADLINE_S

    def work(i: int) -> None:
        for tenant in tenants[i::workers]:
            if time.perf_counter() > deadline:
                return
            try:
                target.get_db(tenant).c.find_one({})
            except Exception as exc:
                with lock:
                    errors[type(exc).__name__] += 1
            done[i] += 1

    pool = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(max(0.0, deadline - time.perf_counter()) + 30)
    wall = time.perf_counter() - t0
    budget_stats = target.stats().get("budget", {})
    # Threads, memory and connections are measured by the driver from outside (``probe``): with a
    # thousand pymongo clients this process may not get the GIL back for a long time.
    data = {
        "wall_s": wall,
        "threads_before": threads_before,
        "rss_before_mb": rss_before,
        "app": app,
        "errors": sum(errors.values()),
        "error_types": dict(errors),
        "clients": target.clients(),
        "done": sum(done),
        "tenants": n,
        "budget_limit": budget_stats.get("max_server_connections"),
        "closed_for_budget": budget_stats.get("closed_for_budget"),
    }
    sys.stdout.write(PROBE_MARKER + json.dumps(data) + "\n")
    sys.stdout.flush()
    time.sleep(3600)  # the driver kills this process once it has measured it
    raise AssertionError("not probed")


def probe(uri: str, pid: int, data: dict[str, Any]) -> dict[str, Any]:
    """Runs in the driver: the worker's threads and RSS from /proc, its connections from the server."""
    if not data.get("timed_out"):
        time.sleep(SETTLE_S)
    threads = len(os.listdir(f"/proc/{pid}/task"))
    with open(f"/proc/{pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    connections = server_connections(uri, data["app"])
    return {
        **data,
        "threads": threads,
        "threads_delta": threads - data["threads_before"],
        "rss_mb": rss_kb / 1024,
        "rss_delta_mb": rss_kb / 1024 - data["rss_before_mb"],
        "connections": connections,
    }


def unfinished(r: dict[str, Any]) -> bool:
    """The run did not serve every tenant: it hit its deadline, or the worker its time limit."""
    return bool(r.get("timed_out")) or r["done"] < r["tenants"]


def reached(r: dict[str, Any]) -> int:
    """Tenants served: the worker's count, or, if it never reported, the finds the server saw."""
    return r["done"] if r.get("done") is not None else r.get("server_ops", {}).get("query", 0)


def brief(r: dict[str, Any]) -> str:
    if r.get("timed_out"):
        head = f"stuck: no report within {r['limit_s']:.0f} s; measured from outside then: "
    elif unfinished(r):
        head = f"only {r['done']:,} of {r['tenants']:,} tenants within {DEADLINE_S:.0f} s: "
    else:
        head = f"{r['wall_s']:.2f} s, "
    errors = "" if r.get("errors") is None else f", {r['errors']} errors"
    return head + (
        f"{r['threads']} threads (+{r['threads_delta']}), RSS +{r['rss_delta_mb']:.0f} MB, "
        f"{r['connections']} server connections{errors}"
    )


METRICS = (
    "wall_s",
    "threads",
    "threads_delta",
    "rss_mb",
    "rss_delta_mb",
    "connections",
    "errors",
    "budget_limit",
    "closed_for_budget",
)


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {key: {m: median(r.get(m) for r in runs) for m in METRICS} for key, runs in results.items() if runs}
    rows, notes = [], []
    for n in s.scale_sizes:
        for system in SYSTEMS:
            key = f"{system}@{n}"
            b = budget(system) or med.get(key, {}).get("budget_limit")
            if key in skipped:
                rows.append([f"{n:,}", label(system), f"skipped: {skipped[key]}", "", "", "", "", ""])
                continue
            m = med.get(key)
            if m is None:
                rows.append([f"{n:,}", label(system), "no successful run", "", "", "", "", ""])
                continue
            stuck = [r for r in results[key] if unfinished(r)]
            unseen = [
                r
                for r in results[key]
                if r.get("done") is not None
                and r.get("server_ops")
                and r["server_ops"].get("query", 0) < r["done"]
            ]
            if unseen:
                notes.append(
                    f"{label(system)} {n:,}: only {min(r['server_ops'].get('query', 0) for r in unseen):,} "
                    f"find commands reached the server for {n:,} tenants' find_one"
                )
            wall = fmt(m["wall_s"], 2)
            if stuck:
                wall = (
                    f"{'' if m['wall_s'] is None else wall + ' — '}{len(stuck)} of {len(results[key])} runs "
                    f"did not finish (one reached {min(reached(r) for r in stuck):,} tenants in "
                    f"{max(r.get('limit_s', DEADLINE_S) for r in stuck):.0f} s; threads, RSS and "
                    "connections then)"
                )
            rows.append(
                [
                    f"{n:,}",
                    label(system),
                    wall,
                    f"{fmt(m['threads'])} (+{fmt(m['threads_delta'])})",
                    fmt(m["rss_delta_mb"], 0),
                    fmt(m["connections"]),
                    fmt(b) if b else "—",
                    fmt(m["errors"]),
                ]
            )
    targets = []
    small, large = min(s.scale_sizes), max(s.scale_sizes)
    for system in ("tenantpool/grouped", "tenantpool/shared"):
        lo, hi = med.get(f"{system}@{small}", {}), med.get(f"{system}@{large}", {})
        where = f"{label(system)} at {large:,} tenants"
        threads_lo, threads_hi = lo.get("threads"), hi.get("threads")
        connections, rss = hi.get("connections"), hi.get("rss_delta_mb")
        if threads_lo is None or threads_hi is None or connections is None or rss is None:
            targets += [
                Target(f"scale: {where}: {what}", "—", None)
                for what in ("constant threads", "connections ≤ budget", f"RSS ≤ +{RSS_BUDGET_MB:.0f} MB")
            ]
            continue
        if any(unfinished(r) for r in results[f"{system}@{large}"]):
            targets.append(Target(f"scale: {where}: all tenants served in {DEADLINE_S:.0f} s", "no", False))
        targets.append(
            Target(
                f"scale: {where}: constant threads (vs {small:,} tenants)",
                f"{fmt(threads_lo)} → {fmt(threads_hi)}",
                threads_hi - threads_lo <= 1,
            )
        )
        b = budget(system)
        targets.append(
            Target(
                f"scale: {where}: server connections ≤ budget ({b})",
                fmt(connections),
                b is not None and connections <= b,
            )
        )
        targets.append(
            Target(
                f"scale: {where}: RSS ≤ +{RSS_BUDGET_MB:.0f} MB", f"+{fmt(rss, 0)} MB", rss <= RSS_BUDGET_MB
            )
        )
    per_user = med.get(f"tenantpool/per_user@{large}", {})
    if per_user.get("connections") is not None and per_user.get("budget_limit") is not None:
        where = f"{label('tenantpool/per_user')} at {large:,} tenants (default max_server_connections)"
        targets.append(
            Target(
                f"scale: {where}: server connections ≤ its budget ({fmt(per_user['budget_limit'])})",
                fmt(per_user["connections"]),
                per_user["connections"] <= per_user["budget_limit"],
            )
        )
        targets.append(Target(f"scale: {where}: no errors", fmt(per_user["errors"]), per_user["errors"] == 0))
        notes.append(
            f"{label('tenantpool/per_user')} {large:,}: {fmt(per_user.get('closed_for_budget'))} idle pools "
            "closed to keep within the connection budget (max_server_connections)."
        )
    if large < 10_000:
        notes.append(
            f"--quick: the largest size is {large:,} tenants, not 10,000; the scale targets are "
            f"checked at {large:,}."
        )
    return Section(
        NAME,
        TITLE,
        f"N tenants each do one `find_one` (on {s.scale_threads} threads); fresh process per configuration "
        "and run. Threads: OS threads of the process afterwards (3 are the benchmark worker's own: main and "
        "two watchdogs), and in brackets their growth since before the manager or clients existed. "
        "RSS: growth in MB. Server connections: counted by appName with `$currentOp` "
        "(idleConnections: true), monitoring sockets included. Budget: most connections the configuration "
        f"can open whatever N is (pool + {MONITOR_SOCKETS} monitoring sockets per driver client; for "
        "tenantpool per_user its max_server_connections, default settings). tenantpool "
        f"user_pool_size={OPTIONS['user_pool_size']}, grouped groups={OPTIONS['groups']}, "
        f"shared_pool_size={OPTIONS['shared_pool_size']}; pymongo per tenant maxPoolSize="
        f"{OPTIONS['user_pool_size']}; pymongo shared maxPoolSize={OPTIONS['pymongo_pool_size']}.",
        [
            "tenants",
            "system",
            "wall s",
            "threads (+growth)",
            "RSS +MB",
            "server connections",
            "budget",
            "errors",
        ],
        rows,
        targets,
        notes,
        data={"median": med, "sizes": list(s.scale_sizes)},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med, sizes = data["median"], data["sizes"]
    for system in SYSTEMS:
        points = [(n, med[f"{system}@{n}"]["connections"]) for n in sizes if f"{system}@{n}" in med]
        if points:
            style = "-o" if system.startswith("tenantpool") else "--s"
            ax.plot([p[0] for p in points], [max(1, p[1]) for p in points], style, label=label(system))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tenants (each did one find_one)")
    ax.set_ylabel("server connections")
    ax.legend(fontsize=7)
    ax.set_title(TITLE)
