"""Spare pools and the connection budget (issue 15): the cold scenario's sync sequence (16 busy tenants,
then 100 new tenants in turn, a first and a second ``find_one`` each) for tenantpool per_user with the
default budget, with a budget that holds every pool (``max_server_connections=2000``) and with
``spare_pools=0``; per configuration the first/warm p50, how many new tenants a spare served, and the
first-op p50 of those served and not served. Starts its own mongod; two rounds.

    .venv/bin/python bench/cold_spares.py
"""

from __future__ import annotations

import statistics
import time

from tenantpool import UserConnectionManager
from tenantpool.testing import MongodProcess

srv = MongodProcess()
srv.start()


def run(tag: str, **kw: int) -> None:
    m = UserConnectionManager(srv.uri, appName="x", **kw)
    for i in range(16):
        m.get_database(f"busy{tag}{i}").c.find_one({"_id": 1})
    time.sleep(0.2)
    first: list[float] = []
    warm: list[float] = []
    spare: list[bool] = []
    for i in range(100):
        u0 = m.get_stats()["budget"]["spare_pools_used"]
        name = f"new{tag}{i}"
        t0 = time.perf_counter()
        m.get_database(name).c.find_one({"_id": 1})
        t1 = time.perf_counter()
        m.get_database(name).c.find_one({"_id": 1})
        t2 = time.perf_counter()
        first.append(t1 - t0)
        warm.append(t2 - t1)
        spare.append(m.get_stats()["budget"]["spare_pools_used"] > u0)
    f = [x * 1e3 for x in first]
    w = [x * 1e3 for x in warm]
    served = [x for x, s in zip(f, spare) if s] or [0.0]
    not_served = [x for x, s in zip(f, spare) if not s] or [0.0]
    p50f, p50w = statistics.median(f), statistics.median(w)
    tens = [sum(spare[i : i + 10]) for i in range(0, 100, 10)]
    print(
        f"{tag} {kw}: first p50 {p50f:.2f} ms, warm p50 {p50w:.2f} ms, {p50f / p50w:.2f}x; "
        f"served by a spare {sum(spare)} (first p50 {statistics.median(served):.2f} ms), "
        f"not served p50 {statistics.median(not_served):.2f} ms; by tens {tens}"
    )
    m.close_all()


for r in range(2):
    run(f"d{r}")
    run(f"b{r}", max_server_connections=2000)
    run(f"o{r}", spare_pools=0)
srv.stop()
