"""docs/grafana/tenantpool-dashboard.json against what a real manager's metrics_text() emits: every
metric a query names must exist, and every label it groups or filters by (Prometheus adds job and
instance), so the dashboard cannot drift silently from src/core/exposition.rs and _isolation.py."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenantpool import UserConnectionManager

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "tenantpool-dashboard.json"
NOT_ON_DASHBOARD: set[str] = set()
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus at scrape time
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
METRIC = re.compile(r"\btenantpool_[a-z0-9_]*[a-z0-9]\b")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$")


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def exprs(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as f:
        return json.load(f)


@pytest.fixture(scope="module")
def exposition(mongodb_uri, pymongo_client) -> Iterator[dict[str, set[str]]]:
    """Metric name -> label names, from the text of a manager with pools in two tiers and a refusal."""
    tenants = [f"dash_{tier}_{uuid.uuid4().hex[:8]}" for tier in ("free", "pro")]
    manager = UserConnectionManager(
        mongodb_uri, tier_pool_sizes={"free": 2, "pro": 4}, tier_of=lambda t: t.split("_")[1]
    )
    try:
        for tenant in tenants:
            manager.get_database(tenant).items.insert_one({"x": 1})
        with pytest.raises(Exception, match="isolation"):
            manager.get_client(tenants[0])[f"user_{tenants[1]}_db"]
        text = manager.metrics_text()
    finally:
        manager.close()
        for tenant in tenants:
            pymongo_client.drop_database(f"user_{tenant}_db")
    metrics: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            metrics.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = {
                pair.split("=", 1)[0] for pair in re.findall(r'\w+="(?:[^"\\]|\\.)*"', m.group(2) or "")
            }
            metrics.setdefault(m.group(1), set()).update(labels)
    yield metrics


def test_the_dashboard_is_grafana_json(dashboard):
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= names
    for panel in panels(dashboard["panels"]):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"][
            "w"
        ] <= 24
        for target in panel.get("targets", []):
            # Queries go to the data source the viewer picks, not to one fixed uid.
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["refId"]


def test_every_query_names_metrics_and_labels_that_exist(dashboard, exposition):
    queries = exprs(dashboard)
    assert len(queries) >= 20
    used: set[str] = set()
    for expr in queries:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        names = set(METRIC.findall(expr))
        assert names, f"query names no tenantpool metric: {expr}"
        unknown = names - set(exposition)
        assert not unknown, f"{expr}\n  names {sorted(unknown)}, which metrics_text() does not emit"
        used |= names
        labels = set().union(*(exposition[n] for n in names)) | SCRAPE_LABELS
        grouped = {
            label.strip()
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in group.split(",")
        }
        matched = set(re.findall(r"(\w+)\s*!?=~?", re.sub(r"\[[^\]]*\]", "", expr))) - PROMQL_WORDS
        assert not (grouped | matched) - labels, (
            f"{expr}\n  uses labels {sorted((grouped | matched) - labels)}"
        )
    # Every metric is on the dashboard: a new one needs a panel, or a place in NOT_ON_DASHBOARD.
    assert not set(exposition) - used - NOT_ON_DASHBOARD, sorted(set(exposition) - used - NOT_ON_DASHBOARD)


def test_legends_use_labels_the_query_keeps(dashboard):
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert re.search(rf"\bby\s*\([^)]*\b{label}\b", target["expr"]), (panel["title"], label)
