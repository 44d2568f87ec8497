"""The figures of a manager of several deployments: each deployment's metrics under a ``deployment``
label, and its statistics added up."""

from __future__ import annotations

import re
from typing import Any

_NOT_ADDED = frozenset({"per_pool", "monitors_per_server", "shared_pool_size", "longest_wait_seconds"})


def _sum_dicts(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts added up (each deployment has its own budget: the totals are the manager's); sizes and
    anything else (a bound's source, say) kept when all agree, else listed."""
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if key not in out:
                out[key] = value
            elif (
                key not in _NOT_ADDED
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and isinstance(out[key], (int, float))
            ):
                out[key] = out[key] + value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = _sum_dicts([out[key], value])
            elif out[key] != value:
                out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
    return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?(\s.*)$")


def merge_metrics(texts: dict[str, str]) -> str:
    """One exposition from each deployment's: every sample gets a ``deployment`` label, and each metric
    family keeps one HELP/TYPE header with the samples of all deployments under it."""
    families: dict[str, list[str]] = {}
    headers: dict[str, list[str]] = {}
    for name, text in texts.items():
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    families.setdefault(family, [])
                    if line not in headers.setdefault(family, []):
                        headers[family].append(line)
                continue
            m = _SAMPLE.match(line)
            if m is None:
                continue
            metric, labels, rest = m.groups()
            label = f'deployment="{name}"'
            labels = "{" + label + ("," + labels[1:] if labels and labels != "{}" else "}")
            families.setdefault(family or metric, []).append(f"{metric}{labels}{rest}")
    out = []
    for family, samples in families.items():
        out.extend(headers.get(family, []))
        out.extend(samples)
    return "\n".join(out) + "\n"
