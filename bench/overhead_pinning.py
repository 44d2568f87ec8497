"""Where the per_user / grouped request overhead gap comes from (issues 15 and 16): the overhead
scenario's loop (one thread, ``get_database(tenant).c.find_one``) over 4 tenants' clients in turn, and
over one tenant, for tenantpool per_user and pymongo, first with the scheduler free to place threads,
then with this process and mongod pinned to one CPU (``sched_setaffinity``). If the gap is tenantpool's
work it stays when pinned; if it is cross-CPU wake-ups between the caller, the I/O thread and mongod's
connection threads, it goes.

Starts its own mongod (pinning needs its pid), every configuration in a fresh process:

    .venv/bin/python bench/overhead_pinning.py [--rounds 3] [--cpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TENANTS = ["a", "b", "c", "d"]
REQUESTS, WARMUP, RUNS = 3000, 300, 5


def child(uri: str, mongod_pid: int, cpu: int | None) -> dict[str, float]:
    from pymongo import MongoClient

    from tenantpool import UserConnectionManager

    if cpu is not None:
        os.sched_setaffinity(mongod_pid, {cpu})
        for task in os.listdir(f"/proc/{mongod_pid}/task"):
            os.sched_setaffinity(int(task), {cpu})
        os.sched_setaffinity(0, {cpu})  # threads started from here on (tokio's) inherit it
    manager = UserConnectionManager(uri, strategy="per_user")
    pymongo_client: MongoClient = MongoClient(uri)

    def run(get_db, tenants: list[str]) -> float:
        for i in range(WARMUP):
            get_db(tenants[i % len(tenants)]).c.find_one({"_id": 1})
        t0 = time.perf_counter()
        for i in range(REQUESTS):
            get_db(tenants[i % len(tenants)]).c.find_one({"_id": 1})
        return (time.perf_counter() - t0) / REQUESTS * 1e6

    for t in TENANTS:
        pymongo_client[f"user_{t}_db"].c.replace_one({"_id": 1}, {"_id": 1}, upsert=True)
    systems = {
        "tenantpool per_user, 4 tenants": (manager.get_database, TENANTS),
        "tenantpool per_user, 1 tenant": (manager.get_database, TENANTS[:1]),
        "pymongo shared, 4 tenants": (lambda t: pymongo_client[f"user_{t}_db"], TENANTS),
    }
    out: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(RUNS):  # interleaved, so that load hits every system alike
        for name, (get_db, tenants) in systems.items():
            out[name].append(run(get_db, tenants))
    manager.close_all()
    pymongo_client.close()
    if cpu is not None:
        all_cpus = set(range(os.cpu_count() or 1))
        for task in os.listdir(f"/proc/{mongod_pid}/task"):
            os.sched_setaffinity(int(task), all_cpus)
    return {name: statistics.median(v) for name, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        uri, pid, cpu = json.loads(args.child)
        print(json.dumps(child(uri, pid, cpu)))
        return
    from tenantpool.testing.mongod import MongodProcess

    with MongodProcess(replset="rs0") as server:
        assert server.pid is not None
        for r in range(args.rounds):
            for cpu in (None, args.cpu):
                spec = json.dumps([server.uri, server.pid, cpu])
                raw = subprocess.run(
                    [sys.executable, __file__, "--child", spec], check=True, capture_output=True, text=True
                ).stdout
                figures = json.loads(raw.strip().splitlines()[-1])
                base = figures["pymongo shared, 4 tenants"]
                where = "unpinned" if cpu is None else f"pinned to CPU {cpu}"
                print(
                    f"round {r + 1}, {where}: "
                    + ", ".join(f"{k} {v:.0f} µs ({v / base:.2f}x)" for k, v in figures.items()),
                    flush=True,
                )


if __name__ == "__main__":
    main()
