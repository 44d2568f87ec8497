"""The eight scenarios. Each module defines NAME, TITLE and:

- ``prepare(uri, settings)``: seeds the data it reads (in the driver, with pymongo; idempotent);
- ``jobs(settings)``: the measurements of one round, one per table row (and size);
- ``measure(uri, system, params)``: one measurement, run in a fresh worker process;
- ``brief(result)``: a one-line progress summary of one measurement;
- ``summarize(results, settings)``: medians, ratios and targets as a ``Section``;
- ``plot(ax, data)``: its panel of the chart.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ORDER = ("overhead", "throughput", "noisy", "scale", "async", "cursor", "cold", "placement")
_MODULES = {"async": "async_ops"}


def load(name: str) -> ModuleType:
    if name not in ORDER:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(ORDER)}")
    return importlib.import_module(f"scenarios.{_MODULES.get(name, name)}")
