"""The benchmark driver: ``make bench`` / ``python bench/run.py [--quick] [--only SCENARIO] [--runs N]``.

Starts a throwaway mongod (or uses $MONGODB_URI), seeds the data, then runs every scenario for
tenantpool and for its baselines in the same run: round after round, each measurement in a fresh
worker process (bench/worker.py), the systems interleaved so that load drifting on the machine hits
them all alike. Writes bench/results/results.json (every raw measurement), results.md (medians, ratios
and the targets, met or missed) and chart.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import report
import scenarios
from common import FULL, QUICK, Job, Section, Settings
from execution import ServerCounters, log, run_job
from machine import MachineCpu, environment
from systems import label

BENCH_DIR = Path(__file__).resolve().parent
# The databases the benchmark creates (tenant ids start with TENANT_PREFIX); dropped afterwards on a
# server given by $MONGODB_URI.
BENCH_DB = re.compile(r"^user_tpb[a-z]+\d*_db$")


@contextmanager
def mongodb(drop_after: bool) -> Iterator[tuple[str, str]]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        log("using $MONGODB_URI")
        try:
            yield uri, "$MONGODB_URI"
        finally:
            if drop_after:
                _drop_bench_databases(uri)
        return
    from tenantpool.testing.mongod import MongodProcess

    log("starting a throwaway mongod ...")
    with MongodProcess() as server:
        log(f"mongod on {server.host}")
        yield server.uri, "throwaway local mongod, loopback"


def _drop_bench_databases(uri: str) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    with client:
        for name in client.list_database_names():
            if BENCH_DB.match(name):
                client.drop_database(name)


def run_scenario(
    name: str, uri: str, settings: Settings, counters: ServerCounters
) -> tuple[Section, dict[str, Any]]:
    module = scenarios.load(name)
    started = time.perf_counter()
    log(f"\n=== {module.TITLE} ===")
    module.prepare(uri, settings)
    jobs: list[Job] = module.jobs(settings)
    results: dict[str, list[dict[str, Any]]] = {job.key: [] for job in jobs}
    skipped: dict[str, str] = {job.key: job.skip for job in jobs if job.skip}
    rounds = settings.runs_for(name)
    gave_up: set[str] = set()  # timed out once: not repeated, so one stuck baseline cannot eat the budget
    for round_no in range(rounds):
        for job in jobs:
            if job.key in skipped or job.key in gave_up:
                continue
            result = run_job(name, job, uri, counters)
            where = f"[{name} {round_no + 1}/{rounds}] {label(job.system)} {job.key.partition('@')[2]}"
            if "skipped" in result:
                skipped[job.key] = result["skipped"]
                log(f"{where}: skipped: {result['skipped']}")
                continue
            results[job.key].append(result)
            if result.get("error", "").startswith("timed out"):
                gave_up.add(job.key)
                result["error"] += " (not repeated in later rounds)"
            elif result.get("timed_out"):
                gave_up.add(job.key)
            log(f"{where}: " + (f"ERROR {result['error']}" if "error" in result else module.brief(result)))
    ok = {key: [r for r in runs if "error" not in r] for key, runs in results.items()}
    section: Section = module.summarize(ok, settings, skipped)
    errors = {key: [r["error"] for r in runs if "error" in r] for key, runs in results.items()}
    by_key = {job.key: job for job in jobs}
    section.notes += [
        f"{label(by_key[key].system)} {key.partition('@')[2]}: {len(errs)} of {rounds} measurement(s) "
        f"failed: {errs[0].splitlines()[0]}"
        for key, errs in errors.items()
        if errs
    ]
    seconds = time.perf_counter() - started
    log(f"--- {name}: {seconds:.0f} s")
    raw = {"raw": results, "skipped": skipped, "seconds": round(seconds, 1)}
    return section, raw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one run: a smoke test")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help=f"run only these scenarios (repeatable or comma-separated): {', '.join(scenarios.ORDER)}",
    )
    parser.add_argument(
        "--runs",
        type=int,
        help="runs per measurement for every scenario (default: 5; "
        "3 for noisy, scale and cursor; 1 with --quick)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="output directory")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="with $MONGODB_URI, keep the user_tpb*_db databases the benchmark created",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for arg in (args.only or []) for n in arg.split(",") if n.strip()]
    for n in names:
        if n not in scenarios.ORDER:
            parser.error(f"unknown scenario {n!r}; choose from {', '.join(scenarios.ORDER)}")
    args.scenarios = [n for n in scenarios.ORDER if not names or n in names]
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.runs:
        settings = dataclasses.replace(
            settings, runs=args.runs, noisy_runs=args.runs, scale_runs=args.runs, cursor_runs=args.runs
        )
    started = time.perf_counter()
    cpu = MachineCpu()
    sections: list[Section] = []
    raw: dict[str, Any] = {}
    with mongodb(drop_after=not args.keep_data) as (uri, source):
        env = environment(uri, settings)
        env["server"] = source
        log(
            f"tenantpool {env['tenantpool']} ({env['tenantpool_build']} build), pymongo {env['pymongo']}, "
            f"mongod {env['mongod']}, "
            f"{env['cpus']} CPUs, load {env['loadavg_start']}"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        counters = ServerCounters(uri)
        for name in args.scenarios:
            try:
                section, raw[name] = run_scenario(name, uri, settings, counters)
            except Exception as exc:  # one broken scenario must not cost the others' results
                log(f"--- {name} failed: {type(exc).__name__}: {exc}")
                module = scenarios.load(name)
                section = Section(
                    name, module.TITLE, "", [], [], notes=[f"failed: {type(exc).__name__}: {exc}"]
                )
                raw[name] = {"error": f"{type(exc).__name__}: {exc}"}
            sections.append(section)
            # Written after every scenario, so an interrupted run still leaves what it measured.
            env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
            env["seconds"] = round(time.perf_counter() - started, 1)
            report.write(args.out, env, sections, raw)
        counters.close()
    # mongod (our child) has exited by now, so its CPU time is in RUSAGE_CHILDREN and not counted as
    # "other processes".
    env["other_cpu_share"] = round(cpu.others_share(), 3)
    env["seconds"] = round(time.perf_counter() - started, 1)
    report.write(args.out, env, sections, raw)
    log(
        f"\nwrote {args.out / 'results.md'}, {args.out / 'chart.png'} and {args.out / 'results.json'} "
        f"in {env['seconds']:.0f} s"
    )
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
