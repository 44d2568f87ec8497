"""The FastAPI examples under a real uvicorn server process, on the stdlib asyncio loop and on uvloop,
driven over HTTP with concurrent requests across tenants (issue: Flask and FastAPI integration)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from tests.helpers import ServerProcess

pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "uvicorn-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TENANTS = 8
POSTS_PER_TENANT = 6

# The blog example plus a route that names the running event loop, so the test can check that
# --loop took effect.
LOOP_APP = """
import asyncio

from examples.blog_fastapi import app


@app.get("/loop")
async def loop() -> dict:
    return {"loop": type(asyncio.get_running_loop()).__module__}
"""


class Uvicorn(ServerProcess):
    def __init__(self, app_spec: str, loop: str, log: Path, env: dict[str, str]) -> None:
        args = ["--host", "127.0.0.1", "--port", "0", "--loop", loop, "--no-access-log", app_spec]
        argv = [sys.executable, "-m", "uvicorn", *args]
        # Logged after the lifespan's startup completed.
        super().__init__("uvicorn", argv, r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log, env, ROOT)


def server_env(mongodb_uri: str, pythonpath: list[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTPOOL_")}
    env.update(
        MONGODB_URI=mongodb_uri,
        TENANTPOOL_ADMIN_TOKEN=ADMIN_TOKEN,
        PYTHONPATH=os.pathsep.join(map(str, [*pythonpath, env.get("PYTHONPATH", "")])).rstrip(os.pathsep),
    )
    return env


def check_clean_exit(server: Uvicorn, code: int) -> None:
    output = server.output()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (recent versions) or exits 0.
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output and "ERROR" not in output, output


@pytest.fixture
def dbs(pymongo_client):
    """Names databases to drop (and catalog entries to delete) afterwards."""
    made: list[str] = []
    yield made
    for tenant in made:
        pymongo_client.drop_database(f"user_{tenant}_db")
    pymongo_client["saas_platform"].companies.delete_many({"_id": {"$in": made}})


# uvicorn's default, --loop auto, is uvloop whenever uvloop is installed (as here), so the two loops
# are named explicitly; "asyncio" is what auto gives without uvloop.
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_blog_under_uvicorn_serves_concurrent_tenants(tmp_path, mongodb_uri, dbs, loop):
    ids = [f"u{i}_{uuid.uuid4().hex[:8]}" for i in range(TENANTS)]
    dbs.extend(ids)
    (tmp_path / "loop_app.py").write_text(LOOP_APP)
    server = Uvicorn(
        "loop_app:app", loop, tmp_path / "uvicorn.log", server_env(mongodb_uri, [tmp_path, ROOT])
    )
    try:
        asyncio.run(_exercise_blog(server.url, ids, loop))
    finally:
        code = server.stop()
    check_clean_exit(server, code)


async def _exercise_blog(url: str, ids: list[str], loop: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/loop")).json()["loop"].startswith(loop)
        pid = (await http.get("/healthz")).json()["pid"]

        async def create(tenant: str, i: int) -> tuple[str, str, str]:
            title = f"{tenant} post {i}"
            r = await http.post(
                "/api/posts", json={"title": title, "content": "c"}, headers={"X-User-ID": tenant}
            )
            assert r.status_code == 201, r.text
            return tenant, r.json()["post_id"], title

        created = await asyncio.gather(*(create(t, i) for t in ids for i in range(POSTS_PER_TENANT)))

        async def read(tenant: str, post_id: str, title: str) -> None:
            r = await http.get(f"/api/posts/{post_id}", headers={"X-User-ID": tenant})
            assert r.status_code == 200, r.text
            assert r.json()["post"]["title"] == title
            other = ids[(ids.index(tenant) + 1) % len(ids)]
            assert (await http.get(f"/api/posts/{post_id}", headers={"X-User-ID": other})).status_code == 404
            r = await http.post(f"/api/posts/{post_id}/views", headers={"X-User-ID": tenant})
            assert r.json()["views"] == 1

        await asyncio.gather(*(read(*c) for c in created))

        async def listing(tenant: str) -> None:
            r = await http.get("/api/posts?per_page=100", headers={"X-User-ID": tenant})
            assert r.status_code == 200, r.text
            assert sorted(p["title"] for p in r.json()["posts"]) == sorted(
                f"{tenant} post {i}" for i in range(POSTS_PER_TENANT)
            )
            stats = (await http.get("/api/stats", headers={"X-User-ID": tenant})).json()
            assert (stats["total_posts"], stats["total_views"]) == (POSTS_PER_TENANT, POSTS_PER_TENANT)

        await asyncio.gather(*(listing(t) for t in ids))

        stats = (await http.get("/admin/connections", headers=ADMIN)).json()
        assert stats["pid"] == pid
        assert sorted(stats["active_users"]) == sorted(ids)
        assert (await http.get("/admin/connections")).status_code == 401


def test_saas_under_uvicorn_tiers_and_concurrent_duplicates(tmp_path, mongodb_uri, dbs):
    plans = ["free", "basic", "premium", "enterprise"]
    companies = {f"{plan}-{uuid.uuid4().hex[:8]}": plan for plan in plans for _ in range(2)}
    dbs.extend(companies)
    env = server_env(mongodb_uri, [ROOT])
    server = Uvicorn("examples.saas_fastapi:app", "uvloop", tmp_path / "uvicorn.log", env)
    try:
        asyncio.run(_exercise_saas(server.url, companies))
    finally:
        code = server.stop()
    check_clean_exit(server, code)


async def _exercise_saas(url: str, companies: dict[str, str]) -> None:
    sizes = {"free": 3, "basic": 5, "premium": 10, "enterprise": 20}
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:

        async def onboard(company: str, plan: str) -> None:
            h = {"X-Company-ID": company}
            r = await http.post("/api/onboard", json={"name": company, "plan": plan}, headers=h)
            assert r.status_code == 201, r.text

        await asyncio.gather(*(onboard(c, p) for c, p in companies.items()))

        # Ten concurrent sign-ups with one email per company: the unique index lets exactly one in.
        async def sign_up(company: str, n: int) -> int:
            body = {"email": f"Same@{company}.test", "name": f"User {n}"}
            r = await http.post("/api/users", json=body, headers={"X-Company-ID": company})
            return r.status_code

        statuses = await asyncio.gather(*(sign_up(c, n) for c in companies for n in range(10)))
        for i, company in enumerate(companies):
            assert sorted(statuses[i * 10 : (i + 1) * 10]) == [201] + [409] * 9, company

        analytics = await asyncio.gather(
            *(http.get("/api/analytics", headers={"X-Company-ID": c}) for c in companies)
        )
        for company, r in zip(companies, analytics):
            assert r.json()["plan"] == companies[company] and r.json()["total_users"] == 1

        tiers = (await http.get("/admin/connections", headers=ADMIN)).json()["tiers"]
        for plan, size in sizes.items():
            assert (tiers[plan]["pools"], tiers[plan]["capacity"]) == (2, 2 * size), plan
