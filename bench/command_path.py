"""Spike measurement for issue 16 ("one execution path"): tenantpool's typed read path (the driver's
find / find_one / aggregate) against its command-cursor path (pymongo's own command, run by the core
and continued with getMore), and pymongo, in one process, interleaved round by round so that load on
the machine hits all three alike. Test-only: it flips the ``COMMAND_PATH`` switch that
``TENANTPOOL_COMMAND_PATH=1`` sets at import.

    .venv/bin/python bench/command_path.py [--rounds 7] [--docs 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pymongo import MongoClient

import tenantpool.collection
import tenantpool.cursor
from tenantpool import UserConnectionManager
from tenantpool.testing.mongod import MongodProcess


def set_command_path(on: bool) -> None:
    tenantpool.cursor.COMMAND_PATH = on
    tenantpool.collection.COMMAND_PATH = on


def workloads(coll, docs: int) -> dict[str, float]:
    """Per-workload cost: µs per call (find_one, small find, small aggregate) or µs per document
    (large find / aggregate)."""
    out: dict[str, float] = {}
    n = 1500
    t = time.perf_counter()
    for i in range(n):
        coll.small.find_one({"_id": i % 100})
    out["find_one by _id (us/call)"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(n // 2):
        coll.small.find({"_id": {"$lt": 10}}).to_list()
    out["find 10 docs (us/call)"] = (time.perf_counter() - t) / (n // 2) * 1e6
    t = time.perf_counter()
    for _ in range(n // 2):
        coll.small.aggregate([{"$match": {"_id": {"$lt": 10}}}]).to_list()
    out["aggregate 10 docs (us/call)"] = (time.perf_counter() - t) / (n // 2) * 1e6
    t = time.perf_counter()
    got = sum(1 for _ in coll.docs.find({}))
    assert got == docs
    out["find all (us/doc)"] = (time.perf_counter() - t) / docs * 1e6
    t = time.perf_counter()
    got = sum(1 for _ in coll.docs.aggregate([{"$match": {}}]))
    assert got == docs
    out["aggregate all (us/doc)"] = (time.perf_counter() - t) / docs * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--docs", type=int, default=20_000)
    args = parser.parse_args()
    with MongodProcess() as server:
        pm = MongoClient(server.uri)
        db = pm.cp_bench
        db.docs.insert_many([{"_id": i, "pad": "x" * 1000, "n": i} for i in range(args.docs)])
        db.small.insert_many([{"_id": i, "n": i} for i in range(100)])
        with UserConnectionManager(server.uri, isolation="off") as manager:
            tp = manager.get_database("bench", "cp_bench")
            systems = {
                "tenantpool typed": (tp, False),
                "tenantpool command": (tp, True),
                "pymongo": (db, False),
            }
            for target, on in systems.values():  # warm-up
                set_command_path(on)
                workloads(target, args.docs)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
            names = list(systems)
            for r in range(args.rounds):
                for name in names[r % 3 :] + names[: r % 3]:
                    target, on = systems[name]
                    set_command_path(on)
                    results[name].append(workloads(target, args.docs))
            set_command_path(False)
        pm.close()
    metrics = list(results["pymongo"][0])
    med = {n: {m: statistics.median(run[m] for run in runs) for m in metrics} for n, runs in results.items()}
    print(f"median of {args.rounds} interleaved rounds; lower is better; ratio = x / pymongo")
    header = ("typed", "command", "pymongo", "typed/pm", "cmd/pm", "cmd/typed")
    print(f"{'workload':30}", *(f"{h:>10}" for h in header))
    for m in metrics:
        t, c, p = med["tenantpool typed"][m], med["tenantpool command"][m], med["pymongo"][m]
        print(f"{m:30} {t:10.1f} {c:10.1f} {p:10.1f} {t / p:10.2f} {c / p:10.2f} {c / t:10.2f}")


if __name__ == "__main__":
    main()
