"""What the run ran on: versions, tenantpool's build, and how busy the machine was meanwhile."""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from common import Settings

BENCH_DIR = Path(__file__).resolve().parent


def extension_build() -> tuple[str, str]:
    """Whether the installed ``tenantpool._core`` is an optimized build, judged from the binary:
    ("release" | "debug" | "unknown", detail).

    Rust's debug builds keep the standard library's precondition checks (``debug_assertions``) in
    the code they compile, and each check carries the message "unsafe precondition(s) violated";
    release builds compile them out. Hundreds of occurrences mean an unoptimized build, whose numbers
    say little about a release build's.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("tenantpool._core")
    except Exception as exc:
        return "unknown", str(exc)
    if spec is None or not spec.origin:
        return "unknown", "tenantpool._core not found"
    needle, count, tail = b"unsafe precondition(s) violated", 0, b""
    with open(spec.origin, "rb") as binary:
        while chunk := binary.read(1 << 24):
            data = tail + chunk
            count += data.count(needle)
            tail = data[-(len(needle) - 1) :]
    detail = f"{spec.origin}: {count} debug-assertion checks"
    return ("debug" if count > 20 else "release"), detail


def environment(uri: str, settings: Settings) -> dict[str, Any]:
    import pymongo
    from pymongo import MongoClient

    try:
        import tenantpool

        tp_version = tenantpool.__version__
    except Exception as exc:  # a broken tree still gets its baselines measured
        tp_version = f"import failed: {exc}"
    build, build_detail = extension_build()
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    with client:
        server_version = client.admin.command("buildInfo")["version"]
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": "quick" if settings.quick else "full",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "tenantpool": tp_version,
        "tenantpool_build": build,
        "tenantpool_build_detail": build_detail,
        "pymongo": pymongo.version,
        "mongod": server_version,
        "commit": commit,
        "settings": dataclasses.asdict(settings),
    }


class MachineCpu:
    """How much of the machine's CPU other processes used while the benchmark ran: the machine's busy
    CPU time minus this process's and its children's (workers, and the mongod it started)."""

    def __init__(self) -> None:
        self._start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        import psutil

        t = psutil.cpu_times()
        busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
        return time.monotonic(), busy, ours

    def others_share(self) -> float:
        """Other processes' CPU time as a fraction of all the machine's CPU time since start."""
        (t0, busy0, ours0), (t1, busy1, ours1) = self._start, self._snapshot()
        capacity = (t1 - t0) * (os.cpu_count() or 1)
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / capacity if capacity > 0 else 0.0
