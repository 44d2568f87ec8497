"""Writes results.json (raw), results.md (medians, ratios, targets) and chart.png."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import scenarios
from common import Section, mark


def write(out: Path, env: dict[str, Any], sections: list[Section], raw: dict[str, Any]) -> None:
    doc = {"environment": env, "sections": [dataclasses.asdict(s) for s in sections], "raw": raw}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(env, sections))
    chart(out / "chart.png", env, sections)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def markdown(env: dict[str, Any], sections: list[Section]) -> str:
    s = env["settings"]
    lines = [
        "# tenantpool benchmark results",
        "",
        f"{env['date']} · **{env['mode']} run** · {env['seconds']:.0f} s · commit `{env['commit']}`  ",
        f"tenantpool {env['tenantpool']} ({env.get('tenantpool_build', '?')} build) · "
        f"pymongo {env['pymongo']} · mongod {env['mongod']} ({env.get('server', '?')}) · "
        f"Python {env['python']} · {env['cpus']} CPUs · load average "
        f"{env['loadavg_start'][0]:.2f} at start, {env['loadavg_end'][0]:.2f} at end"
        + (
            f"; other processes used {env['other_cpu_share']:.0%} of the CPU during the run  "
            if env.get("other_cpu_share") is not None
            else "  "
        ),
        f"Each cell is the median of the runs shown (default {s['runs']}; noisy {s['noisy_runs']}, scale "
        f"{s['scale_runs']}, cursor {s['cursor_runs']}), every measurement in a fresh process, the systems "
        "interleaved round by round. Regenerate with `make bench` (see bench/README.md).",
        "",
    ]
    if env["mode"] == "quick":
        lines += ["> **--quick run**: small sizes and a single run — a smoke test, not a measurement.", ""]
    if env.get("tenantpool_build", "release") != "release":
        lines += [
            f"> **tenantpool's extension is a {env['tenantpool_build']} build** "
            f"({env.get('tenantpool_build_detail', '')}): its numbers are not representative of a release "
            "build. `make bench` builds one with `maturin develop --release` first.",
            "",
        ]
    others = env.get("other_cpu_share")
    if (others is not None and others > 0.1) or (
        others is None and env["loadavg_start"][0] > (env["cpus"] or 1)
    ):
        busy = (
            f"other processes used {others:.0%} of its CPU time"
            if others is not None
            else (f"load average {env['loadavg_start'][0]:.1f} on {env['cpus']} CPUs")
        )
        lines += [
            f"> The machine was busy ({busy}): absolute numbers are noisy; ratios within one run (the "
            "systems interleaved round by round) are more trustworthy.",
            "",
        ]
    targets = [t for sec in sections for t in sec.targets]
    if targets:
        lines += ["## Targets", ""]
        lines += _table(
            ["target", "measured", "result"], [[t.text, t.measured, mark(t.met)] for t in targets]
        )
        met = sum(t.met is True for t in targets)
        lines += [
            "",
            f"{met} of {len(targets)} targets met"
            f"{'' if all(t.met is not None for t in targets) else ' (some not measured)'}.",
            "",
        ]
    lines += ["![chart](chart.png)", ""]
    for sec in sections:
        lines += [f"## {sec.title}", "", sec.what, ""]
        if sec.columns:
            lines += _table(sec.columns, sec.rows)
        if sec.notes:
            lines += [""] + [f"- {note}" for note in sec.notes]
        lines.append("")
    return "\n".join(lines)


def chart(path: Path, env: dict[str, Any], sections: list[Section]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(sections))
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.2 * rows), squeeze=False)
    for ax, sec in zip(axes.flat, sections):
        try:
            scenarios.load(sec.name).plot(ax, sec.data)
        except Exception as exc:  # a panel without data must not lose the others
            ax.set_title(sec.title)
            ax.text(0.5, 0.5, f"no data: {exc}", ha="center", va="center", transform=ax.transAxes)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(
        f"tenantpool vs pymongo vs the design document — {env['mode']} run, {env['date']}"
        f"{'  (QUICK: smoke test)' if env['mode'] == 'quick' else ''}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
