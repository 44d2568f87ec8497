"""Where the async scenario's event-loop lag comes from (issue 15): the benchmark's own async scenario
(``scenarios/async_ops.py``: 1,000 tasks over 200 tenants, a heartbeat sleeping 10 ms) for tenantpool's
three strategies and AsyncMongoClient, first with mongod on the same CPUs as the client (as ``make
bench`` runs it), then with mongod on CPU 1 and the client process on CPU 0 (``sched_setaffinity``): a
server with cores of its own, as in any deployment where the database is not on the web server's
machine.

A scheduler trace (``perf record -e sched:sched_switch``) of the co-located run shows why that matters:
in a late heartbeat the event loop's thread is not working (its CPU time is 5-30 % of the wall time)
but runnable and not scheduled, behind ~100 mongod connection threads that tenantpool's requests woke at
once. If the lag is tenantpool's own work on the loop it stays when the server has its own core; if it
is the server's threads taking the client's CPU, it goes.

Starts its own mongod (pinning needs its pid), every configuration in a fresh process:

    .venv/bin/python bench/lag_pinning.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SYSTEMS = (
    "tenantpool-async/per_user",
    "tenantpool-async/grouped",
    "tenantpool-async/shared",
    "pymongo/async-shared",
)
PARAMS = {"tasks": 1000, "tenants": 200, "ops_per_task": 10, "read_fraction": 0.75, "universe": 200}
RUNS = 3


def _pin(pid: int, cpus: set[int]) -> None:
    # Every thread that exists now; threads started later inherit their creator's mask.
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except ProcessLookupError:  # a connection thread that has ended since
            pass


def child(uri: str, mongod_pid: int, pinned: bool) -> dict[str, dict[str, float]]:
    from scenarios.async_ops import _run

    all_cpus = set(range(os.cpu_count() or 1))
    if pinned:
        _pin(mongod_pid, {1})
        os.sched_setaffinity(0, {0})  # tokio's threads, started from here on, inherit it
    out: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}
    try:
        for _ in range(RUNS):  # interleaved, so that drifting load hits every system alike
            for system in SYSTEMS:
                out[system].append(asyncio.run(_run(uri, system, PARAMS)))
    finally:
        if pinned:
            _pin(mongod_pid, all_cpus)
    keys = ("ops_per_s", "lag_p99_ms", "lag_max_ms")
    return {s: {k: statistics.median(r[k] for r in runs) for k in keys} for s, runs in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        uri, pid, pinned = json.loads(args.child)
        print(json.dumps(child(uri, pid, pinned)))
        return
    if (os.cpu_count() or 1) < 2:
        sys.exit("lag_pinning needs two CPUs: one for mongod, one for the client")
    from common import seed_tenants, tenant_ids

    from tenantpool.testing.mongod import MongodProcess

    with MongodProcess(replset="rs0") as server:
        assert server.pid is not None
        seed_tenants(server.uri, tenant_ids("t", PARAMS["universe"]))
        for r in range(args.rounds):
            for pinned in (False, True):
                spec = json.dumps([server.uri, server.pid, pinned])
                argv = [sys.executable, __file__, "--child", spec]
                done = subprocess.run(argv, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"the measuring process failed:\n{done.stderr}")
                raw = done.stdout
                figures = json.loads(raw.strip().splitlines()[-1])
                base = figures["pymongo/async-shared"]
                where = "mongod on CPU 1, client on CPU 0" if pinned else "co-located"
                print(f"round {r + 1}, {where}:", flush=True)
                for system, f in figures.items():
                    speed = f["ops_per_s"] / base["ops_per_s"]
                    print(
                        f"  {system:26} {f['ops_per_s']:7,.0f} ops/s ({speed:.2f}x)"
                        f"  lag p99 {f['lag_p99_ms']:6.1f} ms (AsyncMongoClient {base['lag_p99_ms']:.1f})"
                        f"  max {f['lag_max_ms']:6.1f} ms",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
