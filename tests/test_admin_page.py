"""The admin HTML page (issue 19, item 4) in a real browser: headless Chromium loads it from a Flask app
(werkzeug server in a thread) and from a FastAPI app (uvicorn process), both under a small bounded load
against the harness mongod, lets its refresh run, and the test compares what the DOM shows with the
manager's statistics. Screenshots are kept under test-artifacts/ (git-ignored)."""

from __future__ import annotations

import base64
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from pymongo.errors import OperationFailure
from tests._browser import Chromium, require_chromium
from tests.helpers import wait_until as wait_for
from tests.test_uvicorn import Uvicorn, server_env
from werkzeug.serving import make_server

from tenantpool.flask import TenantPool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "admin-page-token-" + "z" * 24
# Tier names are the application's (tier_of), here one that is markup: the page must show it as text.
HOSTILE = "<script>window.__pwned = 1</script>"
TIER_SIZES = {"free": 2, "pro": 4, HOSTILE: 3}
LOAD_THREADS = 4
LOAD_ROUNDS = 15

# The busiest-tenants, tiers and budget sections as the page shows them (text content, numbers as text).
READ_PAGE = """(() => {
  const cells = (row) => Object.fromEntries(
      Array.from(row.querySelectorAll("[data-key]")).map((c) => [c.dataset.key, c.textContent]));
  const rows = (id, attr) => Object.fromEntries(
      Array.from(document.querySelectorAll(`#${id} tbody tr`)).map((r) => [r.getAttribute(attr), {
          name: r.querySelector("td").textContent, ...cells(r)}]));
  const kv = (id) => cells(document.getElementById(id) || document.createElement("div"));
  return {
    generated: Number(document.getElementById("tp-main").dataset.generated),
    refreshes: Number(document.body.dataset.refreshes),
    tenants: rows("busiest-table", "data-tenant"),
    tiers: rows("tiers-table", "data-tier"),
    budget: kv("budget"),
    isolation: kv("isolation"),
    overview: kv("overview"),
    deployments: document.getElementById("deployments") !== null,
    pwned: window.__pwned === undefined ? null : window.__pwned,
  };
})()"""


def tier_of(tenant: str) -> str:
    return {"pro": "pro", "evil": HOSTILE}.get(tenant.split("_")[0], "free")


def n(text: str) -> int:
    return int(text.replace(",", ""))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_screenshot(path: Path) -> None:
    width, height = png_size(path)
    # A blank or error page compresses to a few kB; the dashboard's tables and text do not.
    assert width >= 1200 and height >= 600 and path.stat().st_size > 30_000, (width, height, path.stat())


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    started = time.monotonic()
    chromium = Chromium()
    print(f"chromium started in {time.monotonic() - started:.2f}s")
    yield chromium
    chromium.close()


@pytest.fixture
def ids(pymongo_client) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tenant in made:
        pymongo_client.drop_database(f"user_{tenant}_db")


def check_escaped(page: dict[str, Any], dom: str) -> None:
    assert page["pwned"] is None, "the tier name ran as a script"
    assert page["tiers"][HOSTILE]["name"] == HOSTILE  # shown as text, character for character
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in dom
    assert HOSTILE not in dom


# -- Flask ----------------------------------------------------------------------------------------------


def test_flask_admin_page_in_chromium(browser, mongodb_uri, ids):
    tenants = [f"{kind}_{i}_{uuid.uuid4().hex[:8]}" for kind in ("free", "pro", "evil") for i in range(2)]
    hog = f"free_hog_{uuid.uuid4().hex[:8]}"
    ids.extend([*tenants, hog])
    app = Flask(__name__)
    pool = TenantPool(
        app,
        uri=mongodb_uri,
        trust_header=True,
        admin_enabled=True,
        admin_token=TOKEN,
        mongo_options={"tier_pool_sizes": TIER_SIZES, "tier_of": tier_of},
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with app.app_context():
            manager = pool.manager
        _exercise_flask(browser, manager, url, tenants, hog)
    finally:
        server.shutdown()
        serving.join(10)
        pool.close(app)


def _exercise_flask(browser: Chromium, manager: Any, url: str, tenants: list[str], hog: str) -> None:
    manager.get_database(hog).items.insert_one({"_id": 1})
    # The hog's pool (tier "free", 2 slots) gets two slow operations in flight and a quick one waiting.
    find_one = manager.get_database(hog).items.find_one
    slow = {"$where": "sleep(4000) || true"}
    hogs = [threading.Thread(target=find_one, args=(slow,)) for _ in range(2)]
    for t in hogs:
        t.start()
    wait_for(lambda: manager.get_user_stats(hog)["in_flight"] == 2, 15, "the hog's slow operations")
    hogs.append(threading.Thread(target=find_one, args=({},)))
    hogs[-1].start()
    wait_for(lambda: manager.get_user_stats(hog)["waiting"] == 1, 15, "the hog's waiting operation")

    errors: list[BaseException] = []

    def load(k: int) -> None:
        try:
            for i in range(LOAD_ROUNDS):
                db = manager.get_database(tenants[(k + i) % len(tenants)])
                db.items.insert_one({"k": k, "i": i})
                db.items.find_one({"k": k})
        except BaseException as e:  # surfaced below
            errors.append(e)

    workers = [threading.Thread(target=load, args=(k,)) for k in range(LOAD_THREADS)]
    for t in workers:
        t.start()
    # One access outside the tenant's databases: refused, and counted on the page.
    with pytest.raises(OperationFailure):
        manager.get_client(tenants[0])[f"user_{tenants[1]}_db"]

    started = time.monotonic()
    browser.open(f"{url}/admin/dashboard?refresh=1", {"Authorization": f"Bearer {TOKEN}"})
    first = browser.evaluate(READ_PAGE)
    loaded = time.monotonic() - started
    # Rendered while the hog's operations were held: the busiest tenant, with its slots in use.
    assert next(iter(first["tenants"])) == hog
    assert (first["tenants"][hog]["in_flight"], first["tenants"][hog]["waiting"]) == ("2", "1")
    assert n(first["tiers"]["free"]["in_flight"]) >= 2
    ARTIFACTS.mkdir(exist_ok=True)
    check_screenshot(browser.screenshot(ARTIFACTS / "admin-page-flask-under-load.png"))

    for t in [*workers, *hogs]:
        t.join(30)
    assert not errors, errors
    quiet = time.time()
    # A refresh rendered after the load stopped: its numbers must equal the manager's, exactly.
    browser.wait_for(f"Number(document.getElementById('tp-main').dataset.generated) > {quiet}", 20)
    refreshed = time.monotonic() - started
    page = browser.evaluate(READ_PAGE)
    dom = browser.dom()
    stats, tiers = manager.get_stats(), manager.get_tier_stats()

    assert page["refreshes"] >= 1
    assert set(page["tenants"]) == set(stats["active_users"]) == {*tenants, hog}
    for tenant, row in page["tenants"].items():
        info = manager.get_user_stats(tenant)
        assert row["tier"] == info["tier"]
        for key in ("in_flight", "waiting", "operations", "errors"):
            assert n(row[key]) == info[key], (tenant, key)
    # Sorted by in flight then operations: all idle now, so by operations.
    ops = [n(row["operations"]) for row in page["tenants"].values()]
    assert ops == sorted(ops, reverse=True)
    assert set(page["tiers"]) == {*tiers, ""}  # "" is the all-tiers total
    for tier, row in tiers.items():
        for key in ("pools", "capacity", "in_flight", "waiting", "operations", "errors"):
            assert n(page["tiers"][tier][key]) == row[key], (tier, key)
    assert n(page["tiers"][""]["operations"]) == sum(t["operations"] for t in tiers.values())
    budget = stats["budget"]
    for key in ("max_server_connections", "reserved", "in_use", "waiting", "closed_for_budget"):
        assert n(page["budget"][key]) == budget[key], key
    assert page["isolation"]["mode"] == "strict"
    assert n(page["isolation"]["refusals_database"]) == stats["isolation"]["refusals"]["database"] == 1
    assert n(page["overview"]["operations"]) == stats["pools"]["operations"]
    assert not page["deployments"]  # no deployments in the statistics: no section
    check_escaped(page, dom)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot(ARTIFACTS / "admin-page-flask.png")
    check_screenshot(shot)
    print(f"flask: first render {loaded:.2f}s, refreshed after the load {refreshed:.2f}s, screenshot {shot}")

    # Without the token: the Basic challenge (a browser asks for the token), and no statistics.
    r = httpx.get(f"{url}/admin/dashboard", timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic "), r.headers
    assert hog not in r.text


# -- Flask, chromium --dump-dom -------------------------------------------------------------------------


class TenantCells(HTMLParser):
    """tenant -> data-key -> text, from the busiest-tenants rows of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.body: dict[str, str | None] = {}
        self._tenant: str | None = None
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "tr":
            self._tenant = a.get("data-tenant")
            if self._tenant is not None:
                self.rows[self._tenant] = {}
        elif tag == "td" and self._tenant is not None:
            self._key = a.get("data-key")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None

    def handle_data(self, data: str) -> None:
        if self._tenant is not None and self._key is not None:
            self.rows[self._tenant][self._key] = self.rows[self._tenant].get(self._key, "") + data


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_chromium()
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_flask_admin_page_with_admin_auth_in_chromium_dump_dom(mongodb_uri, ids, tmp_path):
    """The plain command line: with an ``admin_auth`` callable (here: loopback clients only) there is no
    credential to send, and ``--virtual-time-budget`` lets the page's refresh run before the dump."""
    tenants = [f"free_{i}_{uuid.uuid4().hex[:8]}" for i in range(4)]
    ids.extend(tenants)
    asked: list[str] = []

    def loopback_only(request: Any) -> bool:
        asked.append(request.path)
        return request.remote_addr == "127.0.0.1"

    app = Flask(__name__)
    pool = TenantPool(app, uri=mongodb_uri, trust_header=True, admin_enabled=True, admin_auth=loopback_only)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    page = f"http://127.0.0.1:{server.server_port}/admin/dashboard?refresh=1"
    try:
        with app.app_context():
            manager = pool.manager
        for i, tenant in enumerate(tenants):
            for j in range(i + 1):
                manager.get_database(tenant).items.insert_one({"j": j})
        started = time.monotonic()
        dumped = chromium("--virtual-time-budget=4000", "--dump-dom", page).stdout
        dumped_in = time.monotonic() - started
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "admin-page-flask-dump-dom.png"
        chromium("--virtual-time-budget=2000", "--window-size=1400,900", f"--screenshot={shot}", page)
        check_screenshot(shot)
        expected = {t: manager.get_user_stats(t) for t in tenants}
    finally:
        server.shutdown()
        serving.join(10)
        pool.close(app)
    print(f"chromium --dump-dom: {dumped_in:.2f}s")

    cells = TenantCells()
    cells.feed(dumped)
    assert int(cells.body["data-refreshes"] or 0) >= 1, "the page's refresh did not run before the dump"
    assert list(cells.rows) == tenants[::-1]  # the busiest first: the last did the most operations
    for tenant, row in cells.rows.items():
        assert n(row["operations"]) == expected[tenant]["operations"]
        assert row["user_id"] == tenant and row["tier"] == expected[tenant]["tier"]
    assert asked and set(asked) == {"/admin/dashboard"}  # the page and its refreshes asked the callable


# -- FastAPI under uvicorn -------------------------------------------------------------------------------

FASTAPI_APP = f"""
import os

from fastapi import Depends, FastAPI

from tenantpool.fastapi import TenantPool

HOSTILE = {HOSTILE!r}


def tier_of(tenant):
    return {{"pro": "pro", "evil": HOSTILE}}.get(tenant.split("_")[0], "free")


pool = TenantPool(
    os.environ["MONGODB_URI"],
    trust_header=True,
    admin_enabled=True,
    admin_token=os.environ["TENANTPOOL_ADMIN_TOKEN"],
    manager_options={{"tier_pool_sizes": {TIER_SIZES!r}, "tier_of": tier_of}},
)
app = FastAPI(lifespan=pool.lifespan)
pool.init_app(app)


@app.post("/work")
async def work(db=Depends(pool.user_database)):
    await db.items.insert_one({{"x": 1}})
    return {{"n": await db.items.count_documents({{}})}}
"""


def test_fastapi_admin_page_under_uvicorn_in_chromium(browser, tmp_path, mongodb_uri, ids):
    tenants = [f"{kind}_{i}_{uuid.uuid4().hex[:8]}" for kind in ("free", "pro", "evil") for i in range(2)]
    ids.extend(tenants)
    (tmp_path / "admin_page_app.py").write_text(FASTAPI_APP)
    env = {**server_env(mongodb_uri, [tmp_path, ROOT]), "TENANTPOOL_ADMIN_TOKEN": TOKEN}
    server = Uvicorn("admin_page_app:app", "uvloop", tmp_path / "uvicorn.log", env)
    try:
        _exercise_fastapi(browser, server.url, tenants)
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


def _exercise_fastapi(browser: Chromium, url: str, tenants: list[str]) -> None:
    requests: dict[str, int] = dict.fromkeys(tenants, 0)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def load(k: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=20) as http:
                for i in range(LOAD_ROUNDS):
                    tenant = tenants[(k + i) % len(tenants)]
                    r = http.post("/work", headers={"X-User-ID": tenant})
                    assert r.status_code == 200, r.text
                    with lock:
                        requests[tenant] += 1
        except BaseException as e:  # surfaced below
            errors.append(e)

    workers = [threading.Thread(target=load, args=(k,)) for k in range(LOAD_THREADS)]
    for t in workers:
        t.start()
    # The page also takes the token as a Basic password: what a person's browser sends.
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}
    started = time.monotonic()
    browser.open(f"{url}/admin/dashboard?refresh=1&top=50", basic)
    loaded = time.monotonic() - started
    for t in workers:
        t.join(60)
    assert not errors, errors
    quiet = time.time()
    browser.wait_for(f"Number(document.getElementById('tp-main').dataset.generated) > {quiet}", 20)
    refreshed = time.monotonic() - started
    page = browser.evaluate(READ_PAGE)
    dom = browser.dom()
    with httpx.Client(base_url=url, timeout=10) as http:
        stats = http.get("/admin/connections", headers={"Authorization": f"Bearer {TOKEN}"}).json()

    assert page["refreshes"] >= 1
    assert set(page["tenants"]) == set(stats["active_users"]) == set(tenants)
    per_request = {n(row["operations"]) / requests[tenant] for tenant, row in page["tenants"].items()}
    assert len(per_request) == 1, per_request  # every request runs the same operations
    for tenant, row in page["tenants"].items():
        assert (row["in_flight"], row["waiting"], row["errors"]) == ("0", "0", "0")
        assert row["tier"] == tier_of(tenant)
    for tier, row in stats["tiers"].items():
        for key in ("pools", "capacity", "operations", "errors"):
            assert n(page["tiers"][tier][key]) == row[key], (tier, key)
        shown = [n(r["operations"]) for r in page["tenants"].values() if r["tier"] == tier]
        assert sum(shown) == row["operations"], tier
    for key in ("max_server_connections", "reserved", "in_use"):
        assert n(page["budget"][key]) == stats["budget"][key], key
    check_escaped(page, dom)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot(ARTIFACTS / "admin-page-fastapi.png")
    check_screenshot(shot)
    print(f"fastapi: first render {loaded:.2f}s, refreshed after the load {refreshed:.2f}s: {shot}")

    # A wrong Basic password is challenged again (a browser asks again); no statistics either way.
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    with httpx.Client(base_url=url, timeout=10) as http:
        for headers in ({}, wrong):
            r = http.get("/admin/dashboard", headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic "), r.headers
            assert tenants[0] not in r.text
        # The JSON endpoints still take only the bearer token.
        assert http.get("/admin/connections", headers=basic).status_code in (401, 403)


# -- off by default, and the guard, without a browser -----------------------------------------------------


def test_flask_page_is_off_by_default_and_guarded(mongodb_uri):
    off = Flask(__name__)
    TenantPool(off, uri=mongodb_uri, trust_header=True, admin_token=TOKEN)  # a token alone enables nothing
    assert (
        off.test_client().get("/admin/dashboard", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        == 404
    )

    on = Flask(__name__)
    pool = TenantPool(on, uri=mongodb_uri, trust_header=True, admin_enabled=True, admin_token=TOKEN)
    try:
        client = on.test_client()
        r = client.get("/admin/dashboard")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith(
            'Basic realm="tenantpool admin"'
        )
        assert client.get("/admin/dashboard", headers={"Authorization": "Bearer wrong"}).status_code == 403
        for auth in (f"Bearer {TOKEN}", "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()):
            r = client.get("/admin/dashboard?top=5&refresh=9", headers={"Authorization": auth})
            assert r.status_code == 200 and r.content_type == "text/html; charset=utf-8"
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["Cache-Control"] == "no-store"
            assert 'data-refresh="9"' in r.text
        # Basic stays the page's: the JSON endpoints take the bearer token only.
        basic = "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()
        assert client.get("/admin/connections", headers={"Authorization": basic}).status_code == 401
    finally:
        pool.close(on)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_fastapi_page_is_off_by_default(mongodb_uri):
    from fastapi import FastAPI

    from tenantpool.fastapi import TenantPool as FastAPITenantPool

    for enabled, expected in ((False, 404), (True, 200)):
        pool = FastAPITenantPool(mongodb_uri, trust_header=True, admin_enabled=enabled, admin_token=TOKEN)
        app = FastAPI(lifespan=pool.lifespan)
        pool.init_app(app)
        async with pool.lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                r = await http.get("/admin/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
                assert r.status_code == expected
                assert (await http.get("/admin/dashboard")).status_code == (401 if enabled else 404)
