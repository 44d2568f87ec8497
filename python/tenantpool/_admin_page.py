"""The admin HTML page of the Flask and FastAPI integrations: one renderer for both.

``snapshot(manager)`` reads the manager's statistics once; ``render_page(snapshot)`` turns them into one
self-contained page (inline CSS and a few lines of vanilla JavaScript, no external assets) that fetches
itself again every few seconds and swaps in the fresh ``<main>``, so there is a single renderer and a
single escaping path. Every value that reaches the page goes through :func:`_e`: tenant ids are user
data. ``PAGE_HEADERS`` carries a Content-Security-Policy that allows only this page's own script and
style (by hash), so markup that escaped escaping still could not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DEFAULT_TOP = 20
MAX_TOP = 500
DEFAULT_REFRESH = 5
MIN_REFRESH, MAX_REFRESH = 1, 300

_CLOSE_CAUSES = ("idle", "lru", "manual", "error", "shutdown", "budget")
_TENANT_COLUMNS = (
    ("in_flight", "in flight"),
    ("waiting", "waiting"),
    ("operations", "operations"),
    ("errors", "errors"),
)

_STYLE = """
:root{color-scheme:light dark;--bg:#f6f7f9;--fg:#1d232b;--mut:#5f6b7a;--card:#fff;--line:#dde2e8;
--acc:#1f6feb;--bad:#c62828;--warn:#b26a00}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e3e7ec;--mut:#9aa5b1;--card:#1a1f25;
--line:#2c333c;--acc:#58a6ff;--bad:#ff6b6b;--warn:#f0b429}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);
color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.4rem 1.5rem;align-items:baseline;padding:.8rem 1.4rem;
background:var(--card);border-bottom:1px solid var(--line)}
header h1{font-size:1.15rem;margin:0}
header .meta,#tp-status{color:var(--mut);font-size:.85rem}
main{padding:1rem 1.4rem;display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(360px,1fr))}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;
min-width:0;overflow-x:auto}
section.wide{grid-column:1/-1}
h2{font-size:.95rem;margin:0 0 .6rem;text-transform:uppercase;letter-spacing:.04em;color:var(--mut)}
table{border-collapse:collapse;width:100%}
th,td{padding:.3rem .55rem;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-weight:600;text-align:left;color:var(--mut);font-size:.8rem}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:normal;word-break:break-all}
tr.total td{font-weight:600}
.kv{display:grid;grid-template-columns:auto 1fr;gap:.2rem 1rem}
.kv dt{color:var(--mut)}.kv dd{margin:0;font-variant-numeric:tabular-nums}
.hot{color:var(--bad);font-weight:600}.warm{color:var(--warn);font-weight:600}
meter{width:100%;height:1.1rem}
.empty{color:var(--mut);font-style:italic}
p.wide{grid-column:1/-1;margin:0}
"""

_SCRIPT = """
(function () {
  var every = Number(document.body.dataset.refresh) * 1000;
  var status = document.getElementById("tp-status");
  function tick() {
    // The page fetches itself: one renderer (on the server) and one escaping path.
    fetch(location.pathname + location.search, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("tp-main");
        if (!fresh) { throw new Error("no data in the response"); }
        document.getElementById("tp-main").replaceWith(fresh);
        document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
        status.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (e) { status.textContent = "refresh failed: " + e.message; })
      .finally(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
"""


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CONTENT_TYPE = "text/html; charset=utf-8"


def _clamp(raw: Any, default: int, low: int, high: int) -> int:
    try:
        value = int(str(raw)) if raw is not None else default
    except ValueError:
        return default
    return max(low, min(high, value))


def page_options(query: Any) -> dict[str, int]:
    """``top`` and ``refresh`` (seconds) from the query string, clamped: bad values fall back quietly,
    as a dashboard in a browser tab should."""
    return {
        "top": _clamp(query.get("top"), DEFAULT_TOP, 1, MAX_TOP),
        "refresh": _clamp(query.get("refresh"), DEFAULT_REFRESH, MIN_REFRESH, MAX_REFRESH),
    }


def _tenant_infos(manager: Any, stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    core = getattr(manager, "_core", None)
    every = getattr(core, "all_tenant_info", None)
    if callable(every):
        return [dict(info) for info in every()]
    # A manager without the core's bulk read (a test double, another implementation): one by one.
    infos = (manager.get_user_stats(user) for user in stats.get("active_users", ()))
    return [dict(info) for info in infos if info]


def _busiest(infos: Iterable[Mapping[str, Any]], top: int) -> list[dict[str, Any]]:
    def key(info: Mapping[str, Any]) -> tuple[float, float, str]:
        return (-_num(info.get("in_flight")), -_num(info.get("operations")), str(info.get("user_id", "")))

    return [dict(info) for info in sorted(infos, key=key)[:top]]


def snapshot(manager: Any, top: int = DEFAULT_TOP) -> dict[str, Any]:
    """What the page shows, read from ``manager`` (sync or async: only in-memory reads)."""
    stats = manager.get_stats()
    infos = _tenant_infos(manager, stats)
    return {
        "stats": stats,
        "tiers": manager.get_tier_stats(),
        "busiest": _busiest(infos, top),
        "tenants": len(infos),
        "top": top,
        "pid": os.getpid(),
        "time": time.time(),
    }


# -- rendering ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _td(value: Any, key: str, *, hot: bool = False) -> str:
    cls = "n hot" if hot else "n"
    return f'<td class="{cls}" data-key="{_e(key)}">{_e(_fmt(value))}</td>'


def _table(table_id: str, head: Sequence[tuple[str, bool]], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{_e(table_id)}-empty">{_e(empty)}</p>'
    ths = "".join(f"<th{' class=n' if numeric else ''}>{_e(label)}</th>" for label, numeric in head)
    return f'<table id="{_e(table_id)}"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _kv(pairs: Iterable[tuple[str, str, Any]], hot: Iterable[str] = ()) -> str:
    hot = set(hot)
    items = "".join(
        f'<dt>{_e(label)}</dt><dd data-key="{_e(key)}"{" class=hot" if key in hot else ""}>'
        f"{_e(_fmt(value))}</dd>"
        for key, label, value in pairs
    )
    return f'<dl class="kv">{items}</dl>'


def _section(section_id: str, title: str, body: str, *, wide: bool = False) -> str:
    cls = ' class="wide"' if wide else ""
    return f'<section id="{_e(section_id)}"{cls}><h2>{_e(title)}</h2>{body}</section>'


def _tiers(tiers: Mapping[str, Mapping[str, Any]]) -> str:
    keys = ("pools", "capacity", "in_flight", "waiting", "operations", "errors")
    head = [("tier", False), ("pools", True), ("capacity", True), ("in flight", True), ("waiting", True)]
    head += [("operations", True), ("errors", True)]
    rows = []
    totals = dict.fromkeys(keys, 0.0)
    for name in sorted(tiers, key=str):
        tier = tiers[name]
        cells = "".join(
            _td(tier.get(k), k, hot=k in ("waiting", "errors") and _num(tier.get(k)) > 0) for k in keys
        )
        rows.append(f'<tr data-tier="{_e(name)}"><td class="id">{_e(name)}</td>{cells}</tr>')
        for k in keys:
            totals[k] += _num(tier.get(k))
    if len(rows) > 1:
        cells = "".join(_td(int(totals[k]), k) for k in keys)
        rows.append(f'<tr class="total" data-tier=""><td>all tiers</td>{cells}</tr>')
    table = _table("tiers-table", head, rows, "no live pools")
    return _section("tiers", "Live pools per tier", table, wide=True)


def _deployments(deployments: Any) -> str:
    """Only when the statistics carry deployments: a mapping name -> numbers, or a list of mappings."""
    if isinstance(deployments, Mapping):
        items = [(str(name), d) for name, d in deployments.items() if isinstance(d, Mapping)]
    elif isinstance(deployments, Sequence) and not isinstance(deployments, (str, bytes)):
        items = [(str(d.get("name", i)), d) for i, d in enumerate(deployments) if isinstance(d, Mapping)]
    else:
        return ""
    columns: list[str] = []
    for _, d in items:
        columns += [k for k, v in d.items() if k != "name" and isinstance(v, (int, float, str, bool))]
    columns = list(dict.fromkeys(columns))
    head = [("deployment", False), *((c.replace("_", " "), True) for c in columns)]
    rows = [
        f'<tr data-deployment="{_e(name)}"><td class="id">{_e(name)}</td>'
        + "".join(_td(d.get(c), c) for c in columns)
        + "</tr>"
        for name, d in items
    ]
    table = _table("deployments-table", head, rows, "none")
    return _section("deployments", "Deployments", table, wide=True)


def _busiest_section(snap: Mapping[str, Any]) -> str:
    busiest: list[Mapping[str, Any]] = snap["busiest"]
    with_deployment = any("deployment" in info for info in busiest)
    head = [("tenant", False), ("tier", False)] + ([("deployment", False)] if with_deployment else [])
    head += [(label, True) for _, label in _TENANT_COLUMNS] + [("pool age", True), ("idle", True)]
    rows = []
    for info in busiest:
        cells = [f'<td class="id" data-key="user_id">{_e(info.get("user_id"))}</td>']
        cells.append(f'<td data-key="tier">{_e(info.get("tier"))}</td>')
        if with_deployment:
            cells.append(f'<td data-key="deployment">{_e(info.get("deployment"))}</td>')
        for key, _ in _TENANT_COLUMNS:
            hot = key in ("waiting", "errors") and _num(info.get(key)) > 0
            cells.append(_td(info.get(key), key, hot=hot))
        for key in ("age_seconds", "idle_seconds"):
            value = info.get(key)
            cells.append(f'<td class="n" data-key="{key}" title="{_e(value)}">{_e(_duration(value))}</td>')
        rows.append(f'<tr data-tenant="{_e(info.get("user_id"))}">{"".join(cells)}</tr>')
    title = f"Busiest tenants: {len(busiest)} of {snap['tenants']} live pools, by in flight then operations"
    table = _table("busiest-table", head, rows, "no tenant has a live pool")
    return _section("busiest", title, table, wide=True)


def _budget(budget: Mapping[str, Any]) -> str:
    if not budget:
        return ""
    limit = budget.get("max_server_connections")
    reserved = _num(budget.get("reserved"))
    meter = ""
    if isinstance(limit, (int, float)) and limit > 0:
        share = reserved / limit
        meter = (
            f"<p>reserved {_e(_fmt(int(reserved)))} of {_e(_fmt(limit))} server connections "
            f'(<span data-key="budget_share">{share:.0%}</span>)</p>'
            f'<meter id="budget-meter" min="0" max="{_e(limit)}" low="{_e(limit * 0.75)}" '
            f'high="{_e(limit * 0.9)}" optimum="0" value="{_e(reserved)}"></meter>'
        )
    pairs = [
        ("max_server_connections", "limit", limit),
        ("source", "limit from", budget.get("source")),
        ("reserved", "reserved", budget.get("reserved")),
        ("in_use", "in use", budget.get("in_use")),
        ("releasing", "releasing", budget.get("releasing")),
        ("peak_reserved", "peak reserved", budget.get("peak_reserved")),
        ("waiting", "waiting for room", budget.get("waiting")),
        ("waits", "waits", budget.get("waits")),
        ("wait_timeouts", "wait timeouts", budget.get("wait_timeouts")),
        ("closed_for_budget", "pools closed for room", budget.get("closed_for_budget")),
        ("per_pool", "connections per pool", budget.get("per_pool")),
        ("server_capacity", "server capacity", budget.get("server_capacity")),
    ]
    hot = [k for k in ("waiting", "wait_timeouts") if _num(budget.get(k)) > 0]
    return _section("budget", "Connection budget", meter + _kv(pairs, hot))


def _overview(stats: Mapping[str, Any]) -> str:
    pools = stats.get("pools") or {}
    pairs = [
        ("live_pools", "live pools", pools.get("live_pools", stats.get("total_connections"))),
        ("pools_created", "pools created", pools.get("pools_created")),
        ("operations", "operations", pools.get("operations")),
        ("operation_errors", "operation errors", pools.get("operation_errors")),
        ("waits", "quota waits", pools.get("waits")),
        ("wait_timeouts", "quota wait timeouts", pools.get("wait_timeouts")),
        ("slow_operations", "slow operations", pools.get("slow_operations")),
        ("user_pool_size", "pool size", stats.get("user_pool_size")),
        ("max_connections", "max pools", stats.get("max_connections")),
        ("idle_timeout", "idle timeout (s)", stats.get("idle_timeout")),
    ]
    closed = [(f"closed_{c}", f"closed: {c}", pools.get(f"closed_{c}")) for c in _CLOSE_CAUSES]
    pairs += [p for p in closed if p[2] is not None]
    hot = [k for k in ("operation_errors", "wait_timeouts") if _num(pools.get(k)) > 0]
    return _section("overview", "Totals", _kv(pairs, hot))


def _isolation(isolation: Mapping[str, Any]) -> str:
    if not isolation:
        return ""
    refusals = isolation.get("refusals") or {}
    pairs = [("mode", "mode", isolation.get("mode"))]
    pairs += [(f"refusals_{route}", f"refused: {route}", n) for route, n in refusals.items()]
    hot = [f"refusals_{route}" for route, n in refusals.items() if _num(n) > 0]
    total = sum(_num(n) for n in refusals.values())
    note = (
        f"<p>accesses outside a tenant's databases refused: "
        f'<span class="{"hot" if total else ""}" data-key="refusals_total">{_e(_fmt(int(total)))}</span></p>'
    )
    return _section("isolation", "Isolation", note + _kv(pairs, hot))


def render_main(snap: Mapping[str, Any]) -> str:
    """The page's ``<main>``, the part the refresh replaces."""
    stats = snap["stats"]
    parts = [
        _overview(stats),
        _budget(stats.get("budget") or {}),
        _isolation(stats.get("isolation") or {}),
        _tiers(snap["tiers"]),
    ]
    if stats.get("deployments"):
        parts.append(_deployments(stats["deployments"]))
    parts.append(_busiest_section(snap))
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snap["time"]))
    return (
        f'<main id="tp-main" data-generated="{snap["time"]:.3f}" data-pid="{_e(snap["pid"])}">'
        f'<p class="meta wide" id="tp-generated">snapshot taken {_e(generated)}</p>{"".join(parts)}</main>'
    )


def render_page(
    snap: Mapping[str, Any], refresh: int = DEFAULT_REFRESH, title: str = "tenantpool admin"
) -> str:
    stats = snap["stats"]
    meta = f"process {_e(snap['pid'])} · strategy {_e(stats.get('strategy'))} · refreshes every {refresh}s"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head>"
        f'<body data-refresh="{int(refresh)}" data-refreshes="0">'
        f'<header><h1>{_e(title)}</h1><span class="meta">{meta}</span>'
        '<span id="tp-status">live</span></header>'
        f"{render_main(snap)}<script>{_SCRIPT}</script></body></html>"
    )


__all__ = ["CONTENT_TYPE", "PAGE_HEADERS", "page_options", "render_main", "render_page", "snapshot"]
