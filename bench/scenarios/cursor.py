"""6. Cursor throughput: iterate 100,000 documents of ~1 KB; documents/s and peak memory.

``for doc in db.docs.find({})`` with default batch sizes, every document decoded to a dict. Each
measurement runs in a fresh process, so its peak RSS (VmHWM) is that iteration's (or the imports').
"""

from __future__ import annotations

import gc
import time
from typing import Any

import bson
from common import (
    APP_PREFIX,
    TENANT_PREFIX,
    Job,
    Section,
    Settings,
    Target,
    X,
    db_name,
    fmt,
    fmt_ratio,
    median,
    peak_rss_mb,
    ratio,
    rss_mb,
)
from systems import label, make_sync

NAME = "cursor"
TITLE = "6. Cursor throughput"
SYSTEMS = ("tenantpool/per_user", "pymongo/shared")
TENANT = f"{TENANT_PREFIX}cursor"
COLLECTION = "docs"


def document(i: int) -> dict[str, Any]:
    return {
        "_id": i,
        "n": i,
        "name": f"document number {i}",
        "f": i / 7,
        "ok": i % 2 == 0,
        "tags": ["alpha", "beta", "gamma", "delta"],
        "nested": {"a": i, "b": "nested-value", "c": [1, 2, 3]},
        "payload": "x" * 860,
    }


def prepare(uri: str, s: Settings) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(uri, appName=f"{APP_PREFIX}-seed")
    with client:
        coll = client[db_name(TENANT)][COLLECTION]
        if coll.estimated_document_count() == s.cursor_docs and coll.find_one({"_id": s.cursor_docs - 1}):
            return
        coll.drop()
        batch = 2000
        for start in range(0, s.cursor_docs, batch):
            coll.insert_many(
                [document(i) for i in range(start, min(start + batch, s.cursor_docs))], ordered=False
            )


def jobs(s: Settings) -> list[Job]:
    return [Job(key=system, system=system, params={"docs": s.cursor_docs}, timeout=120) for system in SYSTEMS]


def measure(uri: str, system: str, p: dict[str, Any]) -> dict[str, Any]:
    target = make_sync(system, uri, {"appName": f"{APP_PREFIX}-cursor"})
    try:
        coll = target.get_db(TENANT)[COLLECTION]
        coll.find_one({"_id": 0})  # connect before the clock starts
        gc.collect()
        rss_before = rss_mb()
        t0 = time.perf_counter()
        n = 0
        for doc in coll.find({}):
            n += 1
            del doc
        seconds = time.perf_counter() - t0
        peak = peak_rss_mb()
    finally:
        target.close()
    if n != p["docs"]:
        raise AssertionError(f"iterated {n} documents, expected {p['docs']}")
    return {
        "docs_per_s": n / seconds,
        "seconds": seconds,
        "docs": n,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "peak_growth_mb": peak - rss_before,
    }


def brief(r: dict[str, Any]) -> str:
    return (
        f"{r['docs_per_s']:,.0f} docs/s ({r['docs']:,} in {r['seconds']:.2f} s), peak RSS "
        f"{r['peak_rss_mb']:.0f} MB (+{r['peak_growth_mb']:.0f} MB over the start of iteration)"
    )


METRICS = ("docs_per_s", "peak_rss_mb", "peak_growth_mb")


def summarize(results: dict[str, list[dict[str, Any]]], s: Settings, skipped: dict[str, str]) -> Section:
    med = {k: {m: median(r[m] for r in runs) for m in METRICS} for k, runs in results.items() if runs}
    base = med.get("pymongo/shared", {}).get("docs_per_s")
    rows, targets = [], []
    for system in SYSTEMS:
        m = med.get(system, {})
        r = ratio(m.get("docs_per_s"), base)
        rows.append(
            [
                label(system),
                fmt(m.get("docs_per_s")),
                fmt_ratio(r),
                fmt(m.get("peak_rss_mb"), 0),
                fmt(m.get("peak_growth_mb"), 0),
                str(len(results.get(system, []))),
            ]
        )
        if system.startswith("tenantpool"):
            targets.append(
                Target(
                    f"cursor: {label(system)} ≥ 1.0{X} pymongo", fmt_ratio(r), None if r is None else r >= 1.0
                )
            )
    size = len(bson.encode(document(0)))
    return Section(
        NAME,
        TITLE,
        f"`for doc in db.{COLLECTION}.find({{}})` over {s.cursor_docs:,} documents of {size:,} bytes (BSON), "
        "default batch sizes; documents/s, higher is better. Peak RSS of the process (fresh per "
        "measurement) and its growth over the RSS just before iterating.",
        ["system", "docs/s", "vs pymongo", "peak RSS MB", "peak growth MB", "runs"],
        rows,
        targets,
        data={"median": med},
    )


def plot(ax: Any, data: dict[str, Any]) -> None:
    med = data["median"]
    systems = [s for s in SYSTEMS if s in med]
    ax.barh(
        [label(s) for s in systems],
        [med[s]["docs_per_s"] for s in systems],
        color=["tab:blue" if s.startswith("tenantpool") else "tab:gray" for s in systems],
    )
    for i, s in enumerate(systems):
        ax.annotate(
            f" peak RSS {med[s]['peak_rss_mb']:.0f} MB", (med[s]["docs_per_s"], i), va="center", fontsize=7
        )
    if systems:  # room for the annotations
        ax.set_xlim(0, 1.4 * max(med[s]["docs_per_s"] for s in systems))
    ax.invert_yaxis()
    ax.set_xlabel("documents per second (higher is better)")
    ax.set_title(TITLE)
