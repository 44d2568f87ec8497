"""Settings, statistics and process probes shared by the driver (run.py) and the workers (worker.py)."""

from __future__ import annotations

import math
import os
import resource
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Every client the benchmark opens carries an appName starting with this, so server-side connection
#: counts ($currentOp) can be attributed to one configuration.
APP_PREFIX = "tpbench"

#: Tenant ids are prefixed so that databases created on a user-supplied server ($MONGODB_URI) are
#: recognisable (``user_tpb..._db``) and can be dropped afterwards.
TENANT_PREFIX = "tpb"

#: How a worker's stdout line carries its result to the driver (run.py) ...
MARKER = "BENCH-RESULT "
#: ... or asks the driver to measure it from outside (see run.py's _run_worker) ...
PROBE_MARKER = "BENCH-PROBE "
#: ... or tells the driver what it needs to measure it from outside should it not get that far.
STATE_MARKER = "BENCH-STATE "

#: Every quiet-tenant request and every seeded lookup reads this document.
SEED_ID = "seed"

#: The collection every scenario reads and writes in a tenant's database.
COLL = "c"


def db_name(tenant: str) -> str:
    """tenantpool's default ``db_name_template`` applied by hand, for the pymongo baselines."""
    return f"user_{tenant}_db"


def tenant_ids(prefix: str, n: int) -> list[str]:
    width = max(1, len(str(n - 1)))
    return [f"{TENANT_PREFIX}{prefix}{i:0{width}d}" for i in range(n)]


@dataclass(frozen=True)
class Settings:
    """Sizes of every scenario; ``FULL`` is ``make bench``, ``QUICK`` is ``--quick``."""

    quick: bool
    runs: int
    # 1. request overhead
    overhead_tenants: int
    overhead_requests: int
    overhead_warmup: int
    # 2. throughput
    throughput_tenants: int
    throughput_threads: int
    throughput_ops: int
    # 3. noisy neighbour
    noisy_quiet_tenants: int
    noisy_quiet_requests: int
    noisy_ops: int
    noisy_sleep_ms: int
    noisy_runs: int
    # 4. tenant scale
    scale_sizes: tuple[int, ...]
    scale_threads: int
    scale_runs: int
    # 5. async
    async_tasks: int
    async_tenants: int
    async_ops_per_task: int
    # 6. cursor
    cursor_docs: int
    cursor_runs: int
    # 7. cold tenants (its async part reuses the async sizes)
    cold_tenants: int
    # Fraction of find_one (the rest insert_one) in throughput and async.
    read_fraction: float = 0.75

    def runs_for(self, scenario: str) -> int:
        return {"noisy": self.noisy_runs, "scale": self.scale_runs, "cursor": self.cursor_runs}.get(
            scenario, self.runs
        )


FULL = Settings(
    quick=False,
    runs=5,
    overhead_tenants=4,
    overhead_requests=3000,
    overhead_warmup=300,
    throughput_tenants=1000,
    throughput_threads=64,
    throughput_ops=10_000,
    noisy_quiet_tenants=20,
    noisy_quiet_requests=30,
    noisy_ops=40,
    noisy_sleep_ms=200,
    noisy_runs=3,
    scale_sizes=(100, 1000, 10_000),
    scale_threads=32,
    scale_runs=3,
    async_tasks=1000,
    async_tenants=200,
    async_ops_per_task=10,
    cursor_docs=100_000,
    cursor_runs=3,
    cold_tenants=100,
)

QUICK = Settings(
    quick=True,
    runs=1,
    overhead_tenants=4,
    overhead_requests=300,
    overhead_warmup=50,
    throughput_tenants=100,
    throughput_threads=64,
    throughput_ops=2000,
    noisy_quiet_tenants=20,
    noisy_quiet_requests=10,
    noisy_ops=40,
    noisy_sleep_ms=200,
    noisy_runs=1,
    scale_sizes=(100, 1000),
    scale_threads=32,
    scale_runs=1,
    async_tasks=200,
    async_tenants=50,
    async_ops_per_task=10,
    cursor_docs=10_000,
    cursor_runs=1,
    cold_tenants=30,
)


# -- what scenarios hand the driver and the report ----------------------------------------------------


@dataclass
class Job:
    """One measurement: run in a fresh worker process once per round."""

    key: str  # the row it belongs to, e.g. "tenantpool/grouped" or "tenantpool/grouped@1000"
    system: str
    params: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None  # a reason shown in the table instead of numbers
    timeout: float = 300.0
    #: The run is an error if fewer find commands than this reached the server (serverStatus opcounters).
    min_server_queries: int = 0


@dataclass
class Target:
    text: str
    measured: str
    met: bool | None  # None: not measured in this run (skipped, failed, or --quick without the size)


@dataclass
class Section:
    name: str
    title: str
    what: str
    columns: list[str]
    rows: list[list[str]]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # medians for the chart and results.json


# -- statistics ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- process probes -----------------------------------------------------------------------------------


def thread_count() -> int:
    """OS threads of this process."""
    return len(os.listdir("/proc/self/task"))


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS so far: VmHWM, the high-water mark of its own address space.

    Not ``ru_maxrss``: Linux carries that across fork and exec, so a worker would report the driver's
    peak whenever it is higher than its own."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_connections(uri: str, app_name: str) -> int:
    """Connections the server has open for clients with this appName (idle ones included).

    ``$currentOp`` lists every connection once, with the appName of its handshake, so this counts
    monitoring connections as well as pooled ones, and nothing of other processes.
    """
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(uri, appName=f"{APP_PREFIX}-probe", timeoutMS=30_000)
    with client:
        pipeline: list[dict[str, Any]] = [
            {"$currentOp": {"allUsers": True, "idleConnections": True, "localOps": False}},
            {"$match": {"appName": app_name}},
            {"$count": "n"},
        ]
        rows = list(client.admin.aggregate(pipeline))
    return int(rows[0]["n"]) if rows else 0


# -- formatting ---------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    """A table cell: thousands separators, fixed digits, an em dash for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}{unit}"


#: The multiplication sign of ratios, spelled out for ruff's ambiguous-character check.
X = "\N{MULTIPLICATION SIGN}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}{X}"


def mark(met: bool | None) -> str:
    return {True: "✅ met", False: "❌ missed", None: "— not measured"}[met]


# -- data ---------------------------------------------------------------------------------------------


def seed_tenants(uri: str, tenants: Sequence[str], collection: str = COLL) -> None:
    """Gives each tenant's database one document with ``_id`` SEED_ID (idempotent), via pymongo."""
    from concurrent.futures import ThreadPoolExecutor

    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(uri, appName=f"{APP_PREFIX}-seed", maxPoolSize=16)
    with client:

        def seed(tenant: str) -> None:
            client[db_name(tenant)][collection].replace_one(
                {"_id": SEED_ID}, {"_id": SEED_ID, "tenant": tenant, "pad": "x" * 64}, upsert=True
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(seed, tenants))
