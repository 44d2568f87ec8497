"""Runs one measurement in a fresh process and prints its result as one JSON line.

    python bench/worker.py '{"scenario": ..., "system": ..., "uri": ..., "params": {...}}'

The driver (run.py) starts one worker per measurement, so threads, sockets and memory left over by one
system (or one run) never show up in another's numbers.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter

import scenarios
from common import MARKER


def _watchdog(after: float) -> None:
    time.sleep(after)
    frames = sys._current_frames()
    main_frame = frames.get(threading.main_thread().ident or 0)
    print(f"worker still running after {after:.0f} s; main thread:", file=sys.stderr)
    if main_frame is not None:
        traceback.print_stack(main_frame, file=sys.stderr)
    census = Counter(
        f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}" for f in frames.values()
    )
    print(f"{len(frames)} threads, by innermost frame:", file=sys.stderr)
    for where, count in census.most_common(12):
        print(f"  {count:6d}  {where}", file=sys.stderr)
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    if job.get("timeout"):
        # A hang shows where it is stuck, on stderr, which the driver reports: the main thread and a
        # census of the others from Python, then (if even that could not run) faulthandler's dump.
        threading.Thread(target=_watchdog, args=(max(1.0, job["timeout"] - 15),), daemon=True).start()
        faulthandler.dump_traceback_later(max(1.0, job["timeout"] - 5), exit=False)
    try:
        module = scenarios.load(job["scenario"])
        result = module.measure(job["uri"], job["system"], job["params"])
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a baseline may leave threads behind (the document's manager leaks
    # the clients whose ping failed), and they must not delay or hang the next measurement.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
