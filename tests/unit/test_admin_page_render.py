"""The admin page's renderer on hand-made statistics: escaping, ordering, optional sections, options,
and the Basic form of the admin token (no server, no browser: tests/test_admin_page.py has those)."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from typing import Any

import pytest

from tenantpool import _admin_page as page
from tenantpool._web import AdminGuard, HTTPProblem, basic_password

EVIL = '<script>alert("x")</script>&amp;'


def info(user_id: str, in_flight: int = 0, operations: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "tier": "free",
        "pool_size": 2,
        "in_flight": in_flight,
        "waiting": 0,
        "operations": operations,
        "errors": 0,
        "age_seconds": 125.0,
        "idle_seconds": 1.5,
        **extra,
    }


class FakeManager:
    def __init__(self, infos: list[dict[str, Any]], **stats: Any) -> None:
        self.infos = infos
        self.stats = {
            "active_users": [i["user_id"] for i in infos],
            "strategy": "per_user",
            "pools": {"live_pools": len(infos), "operations": 7},
            "isolation": {"mode": "strict", "refusals": {"database": 2, "command": 0}},
            "budget": {"max_server_connections": 100, "reserved": 95, "in_use": 3, "waiting": 1},
            **stats,
        }

    def get_stats(self) -> dict[str, Any]:
        return self.stats

    def get_tier_stats(self) -> dict[str, Any]:
        return {"free": {"pools": len(self.infos), "capacity": 4, "in_flight": 1, "waiting": 0}}

    def get_user_stats(self, user_id: str) -> dict[str, Any] | None:
        return next((i for i in self.infos if i["user_id"] == user_id), None)


class Tags(HTMLParser):
    """Every start tag and every text node: what a browser would build, minus the layout."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def test_a_script_in_a_tenant_id_is_text():
    manager = FakeManager([info(EVIL, operations=3)], deployments=None)
    html = page.render_page(page.snapshot(manager))
    tags = parse(html)
    assert [t for t, _ in tags.tags].count("script") == 1  # the page's own
    assert EVIL in tags.text  # the browser shows the id as it is
    assert ("tr", {"data-tenant": EVIL}) in tags.tags  # and an attribute holds it whole
    assert "<script>alert" not in html


def test_busiest_by_in_flight_then_operations_and_top():
    infos = [info("a", 0, 50), info("b", 2, 1), info("c", 0, 70), info("d", 2, 9), info("e", 0, 1)]
    snap = page.snapshot(FakeManager(infos), top=3)
    assert [i["user_id"] for i in snap["busiest"]] == ["d", "b", "c"]
    assert snap["tenants"] == 5
    html = page.render_main(snap)
    assert "3 of 5 live pools" in html
    assert 'data-tenant="a"' not in html


def test_deployments_appear_only_when_the_statistics_carry_them():
    manager = FakeManager([info("a"), info("b", deployment="eu<1>")])
    assert 'id="deployments"' not in page.render_main(page.snapshot(FakeManager([info("a")])))
    manager.stats["deployments"] = {"eu<1>": {"pools": 3, "reserved": 12}, "us": {"pools": 1}}
    tags = parse(page.render_main(page.snapshot(manager)))
    assert ("section", {"id": "deployments", "class": "wide"}) in tags.tags
    assert ("tr", {"data-deployment": "eu<1>"}) in tags.tags and "eu<1>" in tags.text
    assert ("td", {"data-key": "deployment"}) in tags.tags  # the tenants' column
    as_list = FakeManager([info("a")], deployments=[{"name": "x", "pools": 2}])
    assert 'data-deployment="x"' in page.render_main(page.snapshot(as_list))


def test_budget_refusals_and_hot_values():
    html = page.render_main(page.snapshot(FakeManager([info("a")])))
    tags = parse(html)
    assert ("meter", {"id": "budget-meter", "min": "0", "max": "100", "low": "75.0", "high": "90.0",
                      "optimum": "0", "value": "95.0"}) in tags.tags  # fmt: skip
    assert "95%" in tags.text
    assert ("dd", {"data-key": "waiting", "class": "hot"}) in tags.tags
    assert ("dd", {"data-key": "refusals_database", "class": "hot"}) in tags.tags
    assert ("dd", {"data-key": "refusals_command"}) in tags.tags


def test_no_live_pools():
    html = page.render_main(page.snapshot(FakeManager([])))
    assert "no tenant has a live pool" in html


def test_the_csp_allows_exactly_the_inline_script_and_style():
    csp = page.PAGE_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp
    html = page.render_page(page.snapshot(FakeManager([info("a")])))
    assert f"<script>{page._SCRIPT}</script>" in html and f"<style>{page._STYLE}</style>" in html
    assert "style=" not in html  # inline style attributes would need 'unsafe-inline'


@pytest.mark.parametrize(
    "query, expected",
    [
        ({}, {"top": 20, "refresh": 5}),
        ({"top": "3", "refresh": "2"}, {"top": 3, "refresh": 2}),
        ({"top": "0", "refresh": "100000"}, {"top": 1, "refresh": 300}),
        ({"top": "x", "refresh": "-1"}, {"top": 20, "refresh": 1}),
    ],
)
def test_page_options(query, expected):
    assert page.page_options(query) == expected


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_password():
    assert basic_password(basic("admin", "s3:cret")) == "s3:cret"
    assert basic_password(basic("", "tok")) == "tok"
    assert basic_password("Basic !!!") is None
    assert basic_password("Basic " + base64.b64encode(b"no-colon").decode()) is None
    assert basic_password("Bearer tok") is None and basic_password(None) is None


def test_the_guard_takes_basic_only_where_asked():
    guard = AdminGuard(token="tok")
    guard.check(basic("anyone", "tok"), None, basic=True)
    guard.check("Bearer tok", None, basic=True)
    with pytest.raises(HTTPProblem) as refused:
        guard.check(basic("anyone", "tok"), None)  # the JSON endpoints: bearer only, as before
    assert refused.value.status == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
    for header in (None, basic("anyone", "wrong")):
        with pytest.raises(HTTPProblem) as challenged:
            guard.check(header, None, basic=True)
        assert challenged.value.status == 401
        assert challenged.value.headers["WWW-Authenticate"].startswith("Basic realm=")
    with pytest.raises(HTTPProblem) as wrong_bearer:
        guard.check("Bearer wrong", None, basic=True)
    assert wrong_bearer.value.status == 403
