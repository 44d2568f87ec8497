"""Issue 16 ("one execution path"): tenantpool's reads, which all go as pymongo's own command run by
the core (find_one in one call; find and aggregate continued with getMore), against pymongo, in one
process, interleaved round by round so that load on the machine hits both alike. The typed path this
was first compared with is gone; its last figures are in docs/execution-paths.md.

    .venv/bin/python bench/command_path.py [--rounds 7] [--docs 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pymongo import MongoClient

from tenantpool import UserConnectionManager
from tenantpool.testing.mongod import MongodProcess


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
            systems = {"tenantpool": tp, "pymongo": db}
            for target in systems.values():  # warm-up
                workloads(target, args.docs)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
            names = list(systems)
            for r in range(args.rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    results[name].append(workloads(systems[name], args.docs))
        pm.close()
    metrics = list(results["pymongo"][0])
    med = {n: {m: statistics.median(run[m] for run in runs) for m in metrics} for n, runs in results.items()}
    print(f"median of {args.rounds} interleaved rounds; lower is better; ratio = x / pymongo")
    header = ("tenantpool", "pymongo", "tp/pm")
    print(f"{'workload':30}", *(f"{h:>10}" for h in header))
    for m in metrics:
        t, p = med["tenantpool"][m], med["pymongo"][m]
        print(f"{m:30} {t:10.1f} {p:10.1f} {t / p:10.2f}")


if __name__ == "__main__":
    main()
