"""The Flask blog example under gunicorn with 2 pre-forked workers and --preload: every worker must get
its own manager, including when the master used one before forking (issue: Flask and FastAPI
integration)."""

from __future__ import annotations

import os
import re
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.helpers import ServerProcess, wait_until

gunicorn_config = pytest.importorskip("gunicorn.config")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# gunicorn >= 25 opens a control socket at a fixed path in $HOME, shared by every gunicorn of the user.
NO_CONTROL_SOCKET = (
    ["--no-control-socket"]
    if any(s.name == "control_socket_disable" for s in gunicorn_config.KNOWN_SETTINGS)
    else []
)
ADMIN_TOKEN = "gunicorn-test-admin-token-0123456789"
TENANTS = 5
POSTS_PER_TENANT = 5

# Imported by the gunicorn master (--preload), which then uses the manager before forking: the
# case where a worker could inherit a manager with live sockets and a runtime whose threads are gone.
WARM_APP = """
from examples.blog_flask import create_app

app = create_app({"TENANTPOOL_TRUST_HEADER": True})
with app.app_context():
    app.extensions["tenantpool"].manager.get_database(WARMUP_TENANT).command("ping")
"""


class Gunicorn(ServerProcess):
    def __init__(self, app_spec: str, log: Path, env: dict[str, str], pythonpath: list[Path]) -> None:
        args = ["--workers", "2", "--preload", "--bind", "127.0.0.1:0", "--graceful-timeout", "10"]
        args += ["--pythonpath", ",".join(map(str, pythonpath)), *NO_CONTROL_SOCKET, app_spec]
        argv = [sys.executable, "-m", "gunicorn", *args]
        super().__init__("gunicorn", argv, r"Listening at: http://127\.0\.0\.1:(\d+)", log, env, ROOT)


@pytest.fixture
def tenant_ids(pymongo_client):
    ids = [f"g{i}_{uuid.uuid4().hex[:8]}" for i in range(TENANTS)]
    warmup = f"warm_{uuid.uuid4().hex[:8]}"
    yield ids, warmup
    for tenant in [*ids, warmup]:
        pymongo_client.drop_database(f"user_{tenant}_db")


@pytest.mark.parametrize("master_uses_manager", [False, True], ids=["lazy", "master-used-manager"])
def test_two_preloaded_workers_serve_every_tenant(tmp_path, mongodb_uri, tenant_ids, master_uses_manager):
    ids, warmup = tenant_ids
    env = {**os.environ, "MONGODB_URI": mongodb_uri, "TENANTPOOL_ADMIN_TOKEN": ADMIN_TOKEN}
    env.pop("TENANTPOOL_URI", None)
    if master_uses_manager:
        (tmp_path / "warm_app.py").write_text(f"WARMUP_TENANT = {warmup!r}\n{WARM_APP}")
        spec, pythonpath = "warm_app:app", [tmp_path, ROOT]
    else:
        spec, pythonpath = "examples.blog_flask:create_app({'TENANTPOOL_TRUST_HEADER': True})", [ROOT]
    server = Gunicorn(spec, tmp_path / "gunicorn.log", env, pythonpath)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # The master accepts connections before the workers finish booting; wait for a worker.
            wait_until(lambda: _healthy(http), 30, "a worker to answer /healthz")
            with ThreadPoolExecutor(max_workers=8) as pool:
                _exercise(http, pool, ids)
                worker_pids = _both_workers(http, pool)
                _check_admin_views(http, pool, worker_pids, ids, warmup)
    finally:
        code = server.stop()
    output = server.output()
    assert code == 0, output
    assert "Traceback" not in output and "exited with code" not in output, output
    # No worker died and was replaced.
    assert len(re.findall(r"Booting worker with pid", output)) == 2, output


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _exercise(http: httpx.Client, pool: ThreadPoolExecutor, ids: list[str]) -> None:
    def create(job: tuple[str, int]) -> tuple[str, str, str]:
        tenant, i = job
        title = f"{tenant} post {i}"
        r = http.post("/api/posts", json={"title": title, "content": "c"}, headers={"X-User-ID": tenant})
        assert r.status_code == 201, r.text
        return tenant, r.json()["post_id"], title

    created = list(pool.map(create, [(t, i) for t in ids for i in range(POSTS_PER_TENANT)]))

    def read(job: tuple[str, str, str]) -> None:
        tenant, post_id, title = job
        r = http.get(f"/api/posts/{post_id}", headers={"X-User-ID": tenant})
        assert r.status_code == 200, r.text
        assert r.json()["post"]["title"] == title
        other = ids[(ids.index(tenant) + 1) % len(ids)]
        assert http.get(f"/api/posts/{post_id}", headers={"X-User-ID": other}).status_code == 404

    list(pool.map(read, created))

    def listing(tenant: str) -> None:
        r = http.get("/api/posts?per_page=100", headers={"X-User-ID": tenant})
        assert r.status_code == 200, r.text
        assert sorted(p["title"] for p in r.json()["posts"]) == sorted(
            f"{tenant} post {i}" for i in range(POSTS_PER_TENANT)
        )

    list(pool.map(listing, ids))


def _both_workers(http: httpx.Client, pool: ThreadPoolExecutor) -> set[int]:
    """Concurrent /healthz calls until both sync workers have answered (one is busy while the other
    accepts); bounded by a deadline."""
    pids: set[int] = set()

    def seen() -> bool:
        pids.update(pool.map(lambda _: http.get("/healthz").json()["pid"], range(16)))
        return len(pids) >= 2

    wait_until(seen, 30, "responses from both workers", every=0)
    assert len(pids) == 2, pids
    return pids


def _check_admin_views(
    http: httpx.Client, pool: ThreadPoolExecutor, worker_pids: set[int], ids: list[str], warmup: str
) -> None:
    """Each worker's manager belongs to that worker: it reports the worker's pid and never the
    tenant the master used before forking."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    stats: dict[int, dict] = {}

    def collect() -> bool:
        for s in pool.map(lambda _: http.get("/admin/connections", headers=headers).json(), range(16)):
            stats[s["pid"]] = s
        return set(stats) == worker_pids

    wait_until(collect, 30, "admin stats from both workers", every=0)
    served = set()
    for s in stats.values():
        assert warmup not in s["active_users"]
        assert set(s["active_users"]) <= set(ids)
        served |= set(s["active_users"])
    assert served == set(ids)
