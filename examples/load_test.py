"""The design document's load test (section 5.2): N tenants at once, each sending M requests one after
another, against a running app; prints a live progress line, then requests, req/s, p50/p95/p99/max and
errors per operation.

    uvicorn examples.saas_fastapi:app --port 8000 &
    python examples/load_test.py http://127.0.0.1:8000 --scenario saas --users 200 --requests 5

Scenarios: ``blog`` (examples/blog_fastapi.py or blog_flask.py: create posts, every fifth request lists
them) and ``saas`` (examples/saas_fastapi.py: onboarding each company with a plan, reported separately
as the "setup" phase, then users, projects, tasks, task updates and analytics). ``--cleanup`` offboards
the SaaS companies afterwards (their databases are dropped). Onboarding and offboarding create and drop
collections, which the server serialises, so only ``--setup-concurrency`` companies do it at once.

Latency is measured from the moment a request is issued, including any wait for one of the
``--connections`` client connections, as in the document. Bounded: at most ``--deadline`` seconds in all
(unfinished requests are cancelled and reported), ``--timeout`` per request. Exits 1 if any request
failed or did not finish. ``--admin-stats`` also prints the server's per-tier pool statistics from
``GET /admin/connections``, with the bearer token in ``$TENANTPOOL_ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

PLANS = ("free", "basic", "premium", "enterprise")


@dataclass
class Phase:
    """The samples of one phase: (operation, seconds, error or None)."""

    name: str
    expected: int
    samples: list[tuple[str, float, str | None]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def errors(self) -> int:
        return sum(1 for _, _, error in self.samples if error is not None)

    @property
    def duration(self) -> float:
        return (self.finished or time.perf_counter()) - self.started


class Tenant:
    """One tenant's HTTP calls, each timed and recorded in the current phase."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, header: str, tenant_id: str) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {header: tenant_id}
        self.id = tenant_id
        self.phase: Phase | None = None
        self.state: dict[str, str] = {}

    async def call(self, op: str, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        """The JSON response of a 2xx answer, else None (the failure is recorded)."""
        assert self.phase is not None
        error: str | None = None
        result: dict[str, Any] | None = None
        start = time.perf_counter()
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, headers=self.headers
            ) as response:
                payload = await response.read()
                if 200 <= response.status < 300:
                    result = json.loads(payload)
                else:
                    error = f"HTTP {response.status}"
        except asyncio.TimeoutError:
            error = "timeout"
        except (aiohttp.ClientError, ValueError) as exc:
            error = type(exc).__name__
        self.phase.samples.append((op, time.perf_counter() - start, error))
        return result


Step = Callable[[Tenant, int], Awaitable[None]]


async def blog_request(t: Tenant, i: int) -> None:
    if i % 5 == 4:
        await t.call("GET /api/posts", "GET", "/api/posts?per_page=10")
    else:
        body = {"title": f"Post {i} from {t.id}", "content": "load test", "tags": ["load"]}
        await t.call("POST /api/posts", "POST", "/api/posts", body)


async def saas_setup(t: Tenant, n: int) -> None:
    await t.call(
        "POST /api/onboard", "POST", "/api/onboard", {"name": f"Company {t.id}", "plan": PLANS[n % 4]}
    )


async def saas_request(t: Tenant, i: int) -> None:
    step = i % 5
    project, task = t.state.get("project"), t.state.get("task")
    if step == 0:
        body = {"email": f"user{i}@{t.id}.test", "name": f"User {i}", "role": "member"}
        await t.call("POST /api/users", "POST", "/api/users", body)
    elif step == 1 or (step == 2 and project is None):
        r = await t.call("POST /api/projects", "POST", "/api/projects", {"name": f"Project {i}"})
        if r:
            t.state["project"] = r["project_id"]
    elif step == 2:
        path = f"/api/projects/{project}/tasks"
        r = await t.call("POST /api/projects/{id}/tasks", "POST", path, {"title": f"Task {i}"})
        if r:
            t.state["task"] = r["task_id"]
    elif step == 3 and task is not None:
        await t.call("PATCH /api/tasks/{id}", "PATCH", f"/api/tasks/{task}", {"status": "completed"})
    else:
        await t.call("GET /api/analytics", "GET", "/api/analytics")


async def saas_cleanup(t: Tenant, n: int) -> None:
    await t.call("DELETE /api/company", "DELETE", "/api/company")


@dataclass(frozen=True)
class Scenario:
    header: str
    request: Step
    setup: Step | None = None
    cleanup: Step | None = None


SCENARIOS = {
    "blog": Scenario("X-User-ID", blog_request),
    "saas": Scenario("X-Company-ID", saas_request, saas_setup, saas_cleanup),
}


# -- statistics and output ----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least q of the values at or below it)."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summary(name: str, samples: list[tuple[str, float, str | None]], duration: float) -> dict[str, Any]:
    times = sorted(s for _, s, _ in samples)
    row: dict[str, Any] = {
        "operation": name,
        "requests": len(samples),
        "errors": sum(1 for _, _, e in samples if e is not None),
        "req_per_s": len(samples) / duration if duration > 0 else 0.0,
    }
    for key, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99), ("max_ms", 1.0)):
        row[key] = percentile(times, q) * 1000 if times else None
    return row


def phase_report(phase: Phase) -> dict[str, Any]:
    ops: dict[str, list[tuple[str, float, str | None]]] = {}
    for sample in phase.samples:
        ops.setdefault(sample[0], []).append(sample)
    return {
        "duration_s": phase.duration,
        "expected_requests": phase.expected,
        "unfinished": phase.expected - len(phase.samples),
        "total": summary("all", phase.samples, phase.duration),
        "operations": [summary(op, s, phase.duration) for op, s in sorted(ops.items())],
        "errors": dict(Counter(e for _, _, e in phase.samples if e is not None)),
    }


def print_table(reports: dict[str, dict[str, Any]]) -> None:
    head = f"{'phase':<8} {'operation':<30} {'requests':>8} {'errors':>6} {'req/s':>8}"
    head += "".join(f" {h:>8}" for h in ("p50 ms", "p95 ms", "p99 ms", "max ms"))
    print(head)
    print("-" * len(head))
    for name, report in reports.items():
        rows = report["operations"] + ([report["total"]] if len(report["operations"]) > 1 else [])
        for row in rows:
            line = f"{name:<8} {row['operation']:<30} {row['requests']:>8} {row['errors']:>6}"
            line += f" {row['req_per_s']:>8.1f}"
            line += "".join(
                f" {row[k]:>8.1f}" if row[k] is not None else f" {'-':>8}"
                for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
            )
            print(line)
    for name, report in reports.items():
        if report["errors"]:
            print(f"{name} errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(report["errors"].items())))
        if report["unfinished"]:
            print(f"{name}: {report['unfinished']} requests did not finish before the deadline")


def print_server(stats: dict[str, Any]) -> None:
    print(f"\nserver (pid {stats.get('pid')}): {stats.get('total_connections')} tenant pools open")
    cols = ("pools", "capacity", "in_flight", "waiting", "operations", "errors")
    print(f"{'tier':<12}" + "".join(f" {c:>10}" for c in cols))
    for tier, row in sorted(stats.get("tiers", {}).items()):
        print(f"{tier:<12}" + "".join(f" {row.get(c, '-'):>10}" for c in cols))


class Progress:
    """One status line, rewritten in place on a terminal and printed every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = 0.25 if self.tty else 3.0

    def show(self, phase: Phase, final: bool = False) -> None:
        done = len(phase.samples)
        line = (
            f"{phase.name:<8} {done:>6}/{phase.expected:<6} {done / max(phase.duration, 1e-9):>8.1f} req/s"
            f"  errors {phase.errors:<5} {phase.duration:6.1f}s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        elif final or done:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    async def run(self, phase: Phase) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.show(phase)


# -- running ------------------------------------------------------------------------------------------


async def run_phase(
    name: str,
    tenants: list[Tenant],
    work: Callable[[Tenant, int], Awaitable[None]],
    expected: int,
    deadline: float,
    concurrency: int | None = None,
) -> Phase:
    phase = Phase(name, expected)
    for t in tenants:
        t.phase = phase
    limit = asyncio.Semaphore(concurrency or len(tenants))

    async def limited(t: Tenant, n: int) -> None:
        async with limit:
            await work(t, n)

    progress = Progress()
    ticker = asyncio.ensure_future(progress.run(phase))
    try:
        await asyncio.wait_for(
            asyncio.gather(*(limited(t, n) for n, t in enumerate(tenants))),
            timeout=None if deadline == math.inf else max(deadline - time.monotonic(), 0.001),
        )
    except asyncio.TimeoutError:
        pass  # reported as unfinished requests
    finally:
        phase.finished = time.perf_counter()
        ticker.cancel()
        progress.show(phase, final=True)
    return phase


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} not ready after {timeout}s")
        await asyncio.sleep(0.1)


async def admin_stats(session: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    token = os.environ.get("TENANTPOOL_ADMIN_TOKEN")
    if not token:
        raise SystemExit("--admin-stats needs the admin token in $TENANTPOOL_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base_url}/admin/connections", headers=headers) as response:
        if response.status != 200:
            raise SystemExit(f"GET /admin/connections answered {response.status}")
        result: dict[str, Any] = await response.json()
        return result


async def load_test(args: argparse.Namespace) -> dict[str, Any]:
    scenario = SCENARIOS[args.scenario]
    base_url = args.base_url.rstrip("/")
    deadline = time.monotonic() + args.deadline
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    reports: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "json"}}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.wait_ready:
            await wait_ready(session, f"{base_url}/healthz", args.wait_ready)
        tenants = [Tenant(session, base_url, scenario.header, f"{args.prefix}{i}") for i in range(args.users)]
        if scenario.setup is not None:
            reports["setup"] = phase_report(
                await run_phase(
                    "setup", tenants, scenario.setup, len(tenants), deadline, args.setup_concurrency
                )
            )

        async def user_requests(t: Tenant, _: int) -> None:
            for i in range(args.requests):
                await scenario.request(t, i)

        load = await run_phase("load", tenants, user_requests, len(tenants) * args.requests, deadline)
        reports["load"] = phase_report(load)
        if args.admin_stats:
            result["server"] = await admin_stats(session, base_url)
        if args.cleanup and scenario.cleanup is not None:
            # Not bounded by --deadline: leaving databases behind is worse than a slow finish.
            reports["cleanup"] = phase_report(
                await run_phase(
                    "cleanup", tenants, scenario.cleanup, len(tenants), math.inf, args.setup_concurrency
                )
            )
    result["phases"] = reports
    return result


def positive(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be from 1 to {limit}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="blog")
    parser.add_argument("--users", type=positive(10_000), default=100, help="tenants (default 100)")
    parser.add_argument(
        "--requests", type=positive(1_000), default=10, help="requests per tenant (default 10)"
    )
    parser.add_argument("--connections", type=positive(1_000), default=100, help="client connections")
    parser.add_argument(
        "--setup-concurrency",
        type=positive(1_000),
        default=16,
        help="tenants set up (or cleaned up) at once (default 16): both are DDL, which the server serialises",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds for the run (default 120)")
    parser.add_argument("--prefix", default=f"lt{secrets.token_hex(3)}_", help="tenant id prefix")
    parser.add_argument("--wait-ready", type=float, default=0, metavar="SECONDS", help="poll /healthz first")
    parser.add_argument("--admin-stats", action="store_true", help="print the server's per-tier stats")
    parser.add_argument("--cleanup", action="store_true", help="offboard the tenants afterwards (saas)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    if not (0 < args.timeout <= 300 and 0 < args.deadline <= 3600):
        parser.error("--timeout must be in (0, 300] and --deadline in (0, 3600] seconds")

    what = f"{args.users} tenants x {args.requests} requests ({args.scenario})"
    print(f"load test: {what} against {args.base_url}", file=sys.stderr)
    result = asyncio.run(load_test(args))
    print()
    print_table(result["phases"])
    if "server" in result:
        print_server(result["server"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    failed = sum(r["total"]["errors"] + r["unfinished"] for r in result["phases"].values())
    if failed:
        print(f"\n{failed} requests failed or did not finish", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
