"""Where the demo's onboarding time goes: the calls of ``POST /api/onboard`` (examples/saas_fastapi.py),
made by tenantpool's async manager and by pymongo's AsyncMongoClient on the same throwaway mongod.

    python bench/onboarding.py [companies]

For each new company, in turn: insert its catalog entry, create its 3 collections (concurrently), create
its 3 indexes (concurrently), mark it active. Prints the median and p90 of each step per system (ms),
interleaving the systems company by company so that a busy machine weighs on both alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient

from tenantpool import AsyncUserConnectionManager
from tenantpool.testing.mongod import MongodProcess

COLLECTIONS = ("users", "projects", "tasks")
INDEXES = [
    ("users", [("email", ASCENDING)], True),
    ("projects", [("name", ASCENDING)], False),
    ("tasks", [("project_id", ASCENDING), ("status", ASCENDING)], False),
]
STEPS = ("catalog insert", "create x3", "createIndexes x3", "catalog update", "total")


async def onboard(catalog: Any, db: Any, cid: str) -> dict[str, float]:
    times, t0 = {}, time.perf_counter()
    await catalog.insert_one({"_id": cid, "status": "onboarding"})
    t1 = time.perf_counter()
    await asyncio.gather(*(db.command({"create": name}) for name in COLLECTIONS))
    t2 = time.perf_counter()
    await asyncio.gather(*(db[c].create_index(keys, unique=unique) for c, keys, unique in INDEXES))
    t3 = time.perf_counter()
    await catalog.update_one({"_id": cid}, {"$set": {"status": "active"}})
    t4 = time.perf_counter()
    for step, (a, b) in zip(STEPS, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4)]):
        times[step] = (b - a) * 1e3
    return times


async def main(uri: str, companies: int) -> None:
    manager = AsyncUserConnectionManager(uri)
    client: AsyncMongoClient = AsyncMongoClient(uri)
    results: dict[str, list[dict[str, float]]] = {"tenantpool per_user": [], "pymongo AsyncMongoClient": []}
    stamp = time.time_ns()
    try:
        for i in range(companies):
            cid = f"onb{stamp}x{i}"
            tp_catalog = manager.get_database("platform")["companies"]
            results["tenantpool per_user"].append(await onboard(tp_catalog, manager.get_database(cid), cid))
            pm_catalog = client["saas_platform_pm"]["companies"]
            results["pymongo AsyncMongoClient"].append(
                await onboard(pm_catalog, client[f"user_{cid}pm_db"], cid)
            )
    finally:
        await manager.close_all()
        await client.close()
    print(f"{companies} onboardings each; ms, median / p90")
    print(f"{'step':18s}" + "".join(f"{name:>28s}" for name in results))
    for step in STEPS:
        cells = []
        for runs in results.values():
            values = sorted(r[step] for r in runs)
            cells.append(f"{statistics.median(values):.1f} / {values[int(len(values) * 0.9) - 1]:.1f}")
        print(f"{step:18s}" + "".join(f"{c:>28s}" for c in cells))


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with MongodProcess() as server:
        asyncio.run(main(server.uri, n))
