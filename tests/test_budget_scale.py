"""The connection budget against servers that cannot hold what per_user would open: 10,000 tenants,
each touched once by one of 32 threads, on a mongod started with a low ``--maxConns`` and on one started
under a low ``ulimit -n`` (where mongod 6.0 announces more connections than it can open). Every
operation succeeds, the server never sees more connections than the budget (plus the sampler's own),
and it is still up at the end.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pymongo import MongoClient

from tenantpool import UserConnectionManager
from tenantpool.testing import MongodProcess

TENANTS = 10_000
THREADS = 32


class Sampler:
    """Samples the server's ``connections.current`` from a client of its own until stopped."""

    def __init__(self, uri: str) -> None:
        # One pooled connection; its monitors (pymongo streams: two sockets) are in the baseline.
        self.client = MongoClient(uri, maxPoolSize=1, appName="budget-sampler")
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        return self.client.admin.command("serverStatus")["connections"]["current"]

    def baseline(self) -> int:
        """The connections open before the manager opens any: the sampler's and the server's own.
        Waits until the sampler's monitors have connected (the count is steady)."""
        last, steady = -1, 0
        deadline = time.monotonic() + 10
        while steady < 3 and time.monotonic() < deadline:
            n = self.current()
            steady = steady + 1 if n == last else 0
            last = n
            time.sleep(0.1)
        return last

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.current())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(
    "server_args",
    [
        pytest.param({"extra_args": ["--maxConns", "200"]}, id="maxConns-200"),
        pytest.param({"nofile": 512}, id="ulimit-n-512"),
    ],
)
def test_ten_thousand_per_user_tenants_stay_within_what_the_server_holds(server_args):
    with MongodProcess(**server_args) as server:
        sampler = Sampler(server.uri)
        baseline = sampler.baseline()
        errors: list[BaseException] = []
        # user_pool_size=1 keeps the pool churn (a client opened and shut down per tenant) fast; the
        # bound itself is the default one, lowered at first contact to what this server can hold.
        with UserConnectionManager(server.uri, user_pool_size=1, waitQueueTimeoutMS=30_000) as manager:

            def touch(i: int) -> None:
                try:
                    assert manager.get_database(f"t{i}").items.find_one({"_id": i}) is None
                except BaseException as exc:  # every failure is reported below
                    errors.append(exc)

            started = time.monotonic()
            with sampler, ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(touch, range(TENANTS)))
            elapsed = time.monotonic() - started
            budget = manager.get_stats()["budget"]

        assert errors == [], f"{len(errors)} errors, first: {errors[0]!r}"
        capacity = budget["server_capacity"]
        assert capacity is not None and budget["source"] == "server", budget
        limit = budget["max_server_connections"]
        assert limit == capacity * 2 // 5 < 256
        assert budget["peak_reserved"] <= limit
        assert budget["closed_for_budget"] >= TENANTS - limit // 2
        assert len(sampler.samples) > 10, "the sampler must have seen the run"
        peak = max(sampler.samples)
        assert peak <= baseline + limit, (peak, baseline, limit)
        # Still up, and it kept its data files: a ping and a write on a fresh client.
        assert server.running
        with MongoClient(server.uri, serverSelectionTimeoutMS=5000) as c:
            c.budget_check.c.insert_one({"ok": 1})
        print(
            f"\n{server_args}: {TENANTS} tenants in {elapsed:.1f} s, budget {limit} (server capacity "
            f"{capacity}), server connections peak {peak} (baseline {baseline}), "
            f"{budget['closed_for_budget']} pools closed for the budget, {budget['waits']} waits"
        )
