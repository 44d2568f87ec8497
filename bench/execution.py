"""Running one measurement: a fresh worker process, its time limit, and the server's view of it."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import scenarios
from common import APP_PREFIX, MARKER, PROBE_MARKER, STATE_MARKER, Job

BENCH_DIR = Path(__file__).resolve().parent
WORKER = BENCH_DIR / "worker.py"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ServerCounters:
    """The server's operation counters (serverStatus opcounters), read by the driver around every job, so
    each result also says how many operations actually reached the server."""

    def __init__(self, uri: str) -> None:
        from pymongo import MongoClient

        self._client: Any = MongoClient(uri, appName=f"{APP_PREFIX}-driver", timeoutMS=30_000)

    def read(self) -> dict[str, int]:
        try:
            return dict(self._client.admin.command("serverStatus")["opcounters"])
        except Exception:
            return {}

    def leftover_connections(self) -> int | None:
        """Connections the server still has for a benchmark worker (appName ``{APP_PREFIX}-...``, but
        not this driver's or its probes'); other clients of a shared server do not count."""
        pipeline: list[dict[str, Any]] = [
            {"$currentOp": {"allUsers": True, "idleConnections": True, "localOps": False}},
            {
                "$match": {
                    "appName": {
                        "$regex": f"^{APP_PREFIX}-",
                        "$nin": [f"{APP_PREFIX}-driver", f"{APP_PREFIX}-probe"],
                    }
                }
            },
            {"$count": "n"},
        ]
        try:
            rows = list(self._client.admin.aggregate(pipeline))
        except Exception:
            return None
        return int(rows[0]["n"]) if rows else 0

    def settle(self, timeout: float = 60.0) -> float:
        """Waits until the server has closed the connections a finished worker left (a thousand
        clients' worth take mongod a while), so the next job does not pay for them. Returns the wait."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            left = self.leftover_connections()
            if not left:
                break
            time.sleep(0.5)
        return time.monotonic() - started

    @staticmethod
    def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
        return {k: int(after[k]) - int(before[k]) for k in before if k in after}

    def close(self) -> None:
        self._client.close()


def run_job(name: str, job: Job, uri: str, counters: ServerCounters) -> dict[str, Any]:
    before = counters.read()
    result = _run_worker(name, job, uri)
    result["server_ops"] = ops = counters.delta(before, counters.read())
    result["settle_s"] = round(counters.settle(), 2)
    # A system that answered without asking the server (a cache, a short-circuit, a broken build) must
    # not pass for a fast one.
    expected = result.pop("min_server_queries", job.min_server_queries)  # a worker may know better
    if expected and "error" not in result and "skipped" not in result and ops:
        if ops.get("query", 0) < expected:
            result["error"] = (
                f"only {ops.get('query', 0):,} find commands reached the server, "
                f"expected at least {expected:,}"
            )
    return result


def _run_worker(name: str, job: Job, uri: str) -> dict[str, Any]:
    """Runs the job in a fresh worker process and returns its result.

    A worker prints its result on a line starting with MARKER. Or, for measurements that must be taken
    from outside (a process with thousands of threads may not get its own GIL back for minutes), a line
    starting with PROBE_MARKER, then waits: the driver calls the scenario's ``probe(uri, pid, data)``,
    which reads the worker's /proc entries and the server's view of it, and then kills the worker.
    """
    payload = json.dumps(
        {"scenario": name, "system": job.system, "uri": uri, "params": job.params, "timeout": job.timeout}
    )
    started = time.perf_counter()
    deadline = time.monotonic() + job.timeout
    result: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    timed_out = False
    module = scenarios.load(name)
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), payload],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=BENCH_DIR,
        )
        assert proc.stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                while result is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        timed_out = True
                        break
                    if not selector.select(remaining):
                        continue
                    line = proc.stdout.readline()
                    if not line:  # the worker exited
                        break
                    if line.startswith(MARKER):
                        result = json.loads(line[len(MARKER) :])
                    elif line.startswith(PROBE_MARKER):
                        data = json.loads(line[len(PROBE_MARKER) :])
                        result = module.probe(uri, proc.pid, data)
                    elif line.startswith(STATE_MARKER):
                        state = json.loads(line[len(STATE_MARKER) :])
            if timed_out and state is not None and hasattr(module, "probe"):
                # Stuck, but still measurable from outside: what it holds at the time limit.
                result = module.probe(uri, proc.pid, {**state, "timed_out": True, "limit_s": job.timeout})
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        stderr.seek(0)
        lines = stderr.read().splitlines()
    if timed_out:
        marks = [i for i, ln in enumerate(lines) if ln.startswith("worker still running")]
        # The worker's own account of where it is stuck, if it got to write one.
        log("\n".join(lines[marks[-1] : marks[-1] + 40] if marks else lines[-40:]))
        if result is None:
            return {"error": f"timed out after {job.timeout:.0f} s"}
    if result is None:
        tail = "\n".join(lines[-15:])
        return {"error": f"worker exited with {proc.returncode} and no result:\n{tail}"}
    if "error" in result:
        log("\n".join(lines[-15:]))
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result
