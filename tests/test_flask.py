"""tenantpool.flask against a real mongod, through the blog example: CRUD, tenant isolation, the
error statuses, JWT resolution and the admin endpoints (issue: Flask and FastAPI integration)."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import jwt
import pytest
from bson import ObjectId
from flask import Flask, g, jsonify
from pymongo.errors import ConfigurationError, DuplicateKeyError

from tenantpool import UserConnectionManager
from tenantpool._web import metrics_text
from tenantpool.flask import TenantPool, require_user_db
from tenantpool.testing import free_port

ROOT = Path(__file__).resolve().parents[1]

from examples import blog_flask  # noqa: E402

JWT_KEY = "test-signing-key-" + "x" * 64
ADMIN_TOKEN = "admin-token-" + "y" * 24


@pytest.fixture
def tenants(pymongo_client):
    """Makes unique tenant ids; drops their databases afterwards."""
    made: list[str] = []

    def make(label: str = "t") -> str:
        made.append(f"{label}_{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for tenant in made:
        pymongo_client.drop_database(f"user_{tenant}_db")


@pytest.fixture
def make_app(mongodb_uri):
    """The blog example with extra config; closes each app's manager afterwards."""
    apps: list[Flask] = []

    def make(**config) -> Flask:
        app = blog_flask.create_app({"TENANTPOOL_URI": mongodb_uri, "TESTING": True, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        blog_flask.pool.close(app)


@pytest.fixture
def client(make_app):
    return make_app(TENANTPOOL_TRUST_HEADER=True).test_client()


def as_tenant(tenant: str) -> dict[str, str]:
    return {"X-User-ID": tenant}


def create_post(client, tenant: str, title: str, content: str = "body") -> str:
    r = client.post("/api/posts", json={"title": title, "content": content}, headers=as_tenant(tenant))
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["user_id"] == tenant
    return r.get_json()["post_id"]


def token(claims: dict | None = None, key: str | None = JWT_KEY, algorithm: str = "HS256", **extra) -> str:
    """A token for these claims; a claim set to None is left out."""
    payload = {"sub": "jwt_user", "exp": int(time.time()) + 300, **(claims or {}), **extra}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


# -- the blog example ---------------------------------------------------------------------------------


def test_blog_crud_pagination_views_and_stats(client, tenants, pymongo_client):
    alice = tenants("alice")
    ids = [create_post(client, alice, f"post {i}") for i in range(3)]

    r = client.get(f"/api/posts/{ids[1]}", headers=as_tenant(alice))
    assert r.status_code == 200
    post = r.get_json()["post"]
    assert post["created_at"].endswith("+00:00")
    assert (post["_id"], post["title"], post["content"], post["views"], post["likes"]) == (
        ids[1],
        "post 1",
        "body",
        0,
        0,
    )

    page1 = client.get("/api/posts?page=1&per_page=2", headers=as_tenant(alice)).get_json()
    page2 = client.get("/api/posts?page=2&per_page=2", headers=as_tenant(alice)).get_json()
    assert page1["total"] == page2["total"] == 3
    # Newest first, and the pages partition the posts.
    assert [p["_id"] for p in page1["posts"]] == [ids[2], ids[1]]
    assert [p["_id"] for p in page2["posts"]] == [ids[0]]

    for expected in (1, 2):
        r = client.post(f"/api/posts/{ids[0]}/views", headers=as_tenant(alice))
        assert r.status_code == 200 and r.get_json()["views"] == expected
    client.post(f"/api/posts/{ids[2]}/views", headers=as_tenant(alice))

    stats = client.get("/api/stats", headers=as_tenant(alice)).get_json()
    assert stats == {"user_id": alice, "total_posts": 3, "total_views": 3, "total_likes": 0}

    # Stored in the tenant's own database, with only the fields the app chose.
    stored = pymongo_client[f"user_{alice}_db"].posts.find_one({"_id": ObjectId(ids[0])})
    assert stored["views"] == 2
    assert set(stored) == {"_id", "title", "content", "tags", "created_at", "updated_at", "views", "likes"}


def test_blog_request_validation(client, tenants):
    alice = tenants("alice")
    h = as_tenant(alice)
    assert client.post("/api/posts", data="not json", headers=h).status_code == 400
    assert client.post("/api/posts", json={"title": "", "content": "x"}, headers=h).status_code == 400
    assert (
        client.post("/api/posts", json={"title": "t", "content": "x", "tags": "a"}, headers=h).status_code
        == 400
    )
    for query in (
        "page=0",
        "page=-1",
        "page=x",
        "page=²",
        "per_page=0",
        "per_page=101",
        "page=99999999999999999999",
    ):
        r = client.get(f"/api/posts?{query}", headers=h)
        assert r.status_code == 400, query
        assert "error" in r.get_json()
    assert client.get("/api/posts/not-an-object-id", headers=h).status_code == 400
    assert client.post("/api/posts/not-an-object-id/views", headers=h).status_code == 400
    missing = str(ObjectId())
    assert client.get(f"/api/posts/{missing}", headers=h).status_code == 404
    assert client.post(f"/api/posts/{missing}/views", headers=h).status_code == 404
    empty = client.get("/api/stats", headers=h).get_json()
    assert (empty["total_posts"], empty["total_views"]) == (0, 0)


def test_tenants_never_see_each_others_posts(client, tenants):
    alice, bob = tenants("alice"), tenants("bob")
    alice_post = create_post(client, alice, "alice's secret")
    bob_post = create_post(client, bob, "bob's post")

    assert client.get(f"/api/posts/{alice_post}", headers=as_tenant(bob)).status_code == 404
    assert client.post(f"/api/posts/{alice_post}/views", headers=as_tenant(bob)).status_code == 404
    listing = client.get("/api/posts?per_page=100", headers=as_tenant(bob)).get_json()
    assert listing["total"] == 1 and [p["_id"] for p in listing["posts"]] == [bob_post]
    assert client.get("/api/stats", headers=as_tenant(bob)).get_json()["total_views"] == 0

    # Bob's attempts changed nothing on Alice's side.
    post = client.get(f"/api/posts/{alice_post}", headers=as_tenant(alice)).get_json()["post"]
    assert post["views"] == 0 and post["title"] == "alice's secret"


def test_healthz_reports_the_process():
    import os

    app = Flask(__name__)
    app.register_blueprint(blog_flask.blog)
    assert app.test_client().get("/healthz").get_json() == {"status": "ok", "pid": os.getpid()}


# -- error statuses -----------------------------------------------------------------------------------


def test_no_tenant_id_is_400(client):
    r = client.get("/api/posts")
    assert r.status_code == 400
    assert "X-User-ID" in r.get_json()["error"]


def test_query_parameter_is_used_only_when_trusted(make_app, tenants):
    alice = tenants("alice")
    header_only = make_app(TENANTPOOL_TRUST_HEADER=True).test_client()
    assert header_only.get(f"/api/posts?user_id={alice}").status_code == 400
    query = make_app(TENANTPOOL_TRUST_QUERY=True).test_client()
    r = query.get(f"/api/posts?user_id={alice}")
    assert r.status_code == 200 and r.get_json()["user_id"] == alice


@pytest.mark.parametrize("bad_id", ["a.b", "has space", "x" * 60, "é", "a/b"])
def test_invalid_tenant_id_is_400_and_touches_no_database(client, pymongo_client, bad_id):
    before = set(pymongo_client.list_database_names())
    r = client.get("/api/posts", headers={"X-User-ID": bad_id})
    assert r.status_code == 400
    assert "tenant id" in r.get_json()["error"]
    assert set(pymongo_client.list_database_names()) == before


def test_unreachable_database_is_503_without_details(mongodb_uri, caplog):
    port = free_port()  # nothing listens here
    app = blog_flask.create_app(
        {
            "TENANTPOOL_URI": f"mongodb://127.0.0.1:{port}/",
            "TENANTPOOL_MONGO_OPTIONS": {"serverSelectionTimeoutMS": 300, "connectTimeoutMS": 300},
            "TENANTPOOL_TRUST_HEADER": True,
        }
    )
    try:
        with caplog.at_level(logging.ERROR, logger="tenantpool.web"):
            r = app.test_client().get("/api/posts", headers=as_tenant("alice"))
            w = app.test_client().post(
                "/api/posts", json={"title": "t", "content": "c"}, headers=as_tenant("alice")
            )
    finally:
        blog_flask.pool.close(app)
    for resp in (r, w):
        assert resp.status_code == 503
        assert resp.get_json() == {"error": "database unavailable, try again later"}
        assert str(port) not in resp.get_data(as_text=True)
    logged = [rec for rec in caplog.records if rec.name == "tenantpool.web" and rec.levelno >= logging.ERROR]
    assert len(logged) == 2 and all(rec.exc_info for rec in logged)
    assert "ServerSelectionTimeoutError" in caplog.text


def _bare_app(mongodb_uri: str, **config) -> tuple[Flask, TenantPool]:
    app = Flask(__name__)
    app.config.update(TENANTPOOL_URI=mongodb_uri, TENANTPOOL_TRUST_HEADER=True, **config)
    pool = TenantPool(app)

    @app.get("/command/<name>")
    @pool.require_user_db
    def command(name: str):
        return jsonify(g.db.command(name))

    @app.post("/dup")
    @require_user_db
    def dup():
        g.db.items.insert_one({"_id": 1})
        g.db.items.insert_one({"_id": 1})
        return jsonify({})

    @app.get("/whoami")
    @require_user_db
    def whoami():
        return jsonify({"user_id": g.user_id, "db": g.db.name})

    return app, pool


def test_other_database_errors_are_500_without_server_text(mongodb_uri, tenants, caplog):
    app, pool = _bare_app(mongodb_uri)
    try:
        with caplog.at_level(logging.ERROR, logger="tenantpool.web"):
            r = app.test_client().get("/command/noSuchCommandXyz", headers=as_tenant(tenants()))
    finally:
        pool.close(app)
    assert r.status_code == 500
    assert r.get_json() == {"error": "internal server error"}
    assert "noSuchCommandXyz" in caplog.text  # logged, not sent


def test_app_handlers_for_subclasses_take_precedence(mongodb_uri, tenants):
    app, pool = _bare_app(mongodb_uri)
    app.register_error_handler(DuplicateKeyError, lambda e: (jsonify({"error": "exists"}), 409))
    try:
        client = app.test_client()
        alice = tenants("alice")
        assert client.post("/dup", headers=as_tenant(alice)).status_code == 409
        assert client.get("/command/noSuchCommandXyz", headers=as_tenant(alice)).status_code == 500
        assert client.get("/whoami", headers=as_tenant(alice)).get_json() == {
            "user_id": alice,
            "db": f"user_{alice}_db",
        }
    finally:
        pool.close(app)


# -- JWT ----------------------------------------------------------------------------------------------


@pytest.fixture
def jwt_client(make_app):
    return make_app(
        TENANTPOOL_JWT_KEY=JWT_KEY,
        TENANTPOOL_JWT_ALGORITHMS=["HS256"],
        TENANTPOOL_JWT_AUDIENCE="blog",
        TENANTPOOL_JWT_ISSUER="https://issuer.test",
    ).test_client()


def good_claims(tenant: str) -> dict:
    return {"sub": tenant, "aud": "blog", "iss": "https://issuer.test"}


def test_jwt_accepted(jwt_client, tenants):
    alice = tenants("alice")
    post_id = jwt_client.post(
        "/api/posts", json={"title": "t", "content": "c"}, headers=bearer(token(good_claims(alice)))
    ).get_json()["post_id"]
    lower_case_scheme = {"Authorization": f"bearer {token(good_claims(alice))}"}
    r = jwt_client.get(f"/api/posts/{post_id}", headers=lower_case_scheme)
    assert r.status_code == 200 and r.get_json()["user_id"] == alice
    # Another tenant's valid token does not reach alice's post.
    bob = tenants("bob")
    assert jwt_client.get(f"/api/posts/{post_id}", headers=bearer(token(good_claims(bob)))).status_code == 404


def test_jwt_custom_integer_claim(make_app):
    client = make_app(
        TENANTPOOL_JWT_KEY=JWT_KEY, TENANTPOOL_JWT_ALGORITHMS="HS256", TENANTPOOL_JWT_CLAIM="tenant"
    ).test_client()
    # Reads only, so no database is created for tenant 42.
    r = client.get("/api/stats", headers=bearer(token({"tenant": 42})))
    assert r.status_code == 200 and r.get_json()["user_id"] == "42"
    assert client.get("/api/stats", headers=bearer(token({"tenant": ["x"]}))).status_code == 401


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda t: token(good_claims(t), key="a-different-key-" + "z" * 64), id="wrong-key"),
        pytest.param(lambda t: token(good_claims(t), exp=int(time.time()) - 60), id="expired"),
        pytest.param(lambda t: token({**good_claims(t), "aud": "other-app"}), id="wrong-audience"),
        pytest.param(lambda t: token({**good_claims(t), "aud": None}), id="no-audience"),
        pytest.param(lambda t: token({**good_claims(t), "iss": "https://evil.test"}), id="wrong-issuer"),
        pytest.param(lambda t: token(good_claims(t), key=None, algorithm="none"), id="alg-none"),
        pytest.param(lambda t: token({**good_claims(t), "exp": None}), id="no-exp"),
        pytest.param(lambda t: token({**good_claims(t), "sub": None}), id="no-sub"),
        pytest.param(lambda t: token(good_claims(t), algorithm="HS512"), id="algorithm-not-allowed"),
        pytest.param(lambda t: "not.a.jwt", id="malformed"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_jwt_rejected_with_401(jwt_client, tenants, make_token):
    r = jwt_client.get("/api/posts", headers=bearer(make_token(tenants("alice"))))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in r.get_json()


def test_expired_token_says_so(jwt_client, tenants):
    r = jwt_client.get("/api/posts", headers=bearer(token(good_claims(tenants()), exp=int(time.time()) - 60)))
    assert r.status_code == 401 and "expired" in r.get_json()["error"]


def test_bad_token_is_not_passed_over_for_a_trusted_header(make_app, tenants):
    alice = tenants("alice")
    client = make_app(
        TENANTPOOL_JWT_KEY=JWT_KEY, TENANTPOOL_JWT_ALGORITHMS=["HS256"], TENANTPOOL_TRUST_HEADER=True
    ).test_client()
    forged = token({"sub": alice}, key="attacker-key-" + "q" * 64)
    assert client.get("/api/posts", headers={**bearer(forged), **as_tenant(alice)}).status_code == 401
    # A valid token wins over the header.
    bob = tenants("bob")
    r = client.get("/api/posts", headers={**bearer(token({"sub": bob})), **as_tenant(alice)})
    assert r.get_json()["user_id"] == bob
    # No token at all: the trusted header applies.
    assert client.get("/api/posts", headers=as_tenant(alice)).get_json()["user_id"] == alice


def test_jwt_only_app_ignores_header_and_other_schemes(make_app, tenants):
    client = make_app(TENANTPOOL_JWT_KEY=JWT_KEY, TENANTPOOL_JWT_ALGORITHMS=["HS256"]).test_client()
    alice = tenants("alice")
    assert client.get("/api/posts", headers=as_tenant(alice)).status_code == 400
    assert client.get("/api/posts", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 400
    assert client.get(f"/api/posts?user_id={alice}").status_code == 400


# -- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "no tenant-id source"),
        ({"TENANTPOOL_TRUST_HEADER": "false"}, "must be True or False"),
        ({"TENANTPOOL_JWT_KEY": JWT_KEY}, "TENANTPOOL_JWT_ALGORITHMS is required"),
        (
            {"TENANTPOOL_JWT_ALGORITHMS": ["HS256"], "TENANTPOOL_TRUST_HEADER": True},
            "TENANTPOOL_JWT_KEY is not",
        ),
        ({"TENANTPOOL_JWT_KEY": JWT_KEY, "TENANTPOOL_JWT_ALGORITHMS": ["none"]}, "signing algorithms"),
        ({"TENANTPOOL_JWT_KEY": JWT_KEY, "TENANTPOOL_JWT_ALGORITHMS": ["HS256", "RS256"]}, "must not mix"),
        ({"TENANTPOOL_TRUST_HEADER": True, "TENANTPOOL_ADMIN_ENABLED": True}, "TENANTPOOL_ADMIN_TOKEN"),
        ({"TENANTPOOL_TRUST_HEADER": True, "TENANTPOOL_ADMIN_TOKEN": "  "}, "non-empty"),
        ({"TENANTPOOL_TRUST_HEADERS": True}, "did you mean 'trust_header'"),
        ({"TENANTPOOL_TRUST_HEADER": True, "TENANTPOOL_URI": None}, "TENANTPOOL_URI"),
        ({"TENANTPOOL_TRUST_HEADER": True, "TENANTPOOL_MONGO_OPTIONS": "w=1"}, "MONGO_OPTIONS"),
    ],
)
def test_configuration_errors_at_init(mongodb_uri, config, message):
    app = Flask(__name__)
    app.config.update({"TENANTPOOL_URI": mongodb_uri, **config})
    with pytest.raises(ConfigurationError, match=message):
        TenantPool(app)
    assert "tenantpool" not in app.extensions


def test_constructor_overrides_win_over_app_config(mongodb_uri, tenants):
    app = Flask(__name__)
    app.config.update(
        TENANTPOOL_URI="mongodb://unused.invalid/", TENANTPOOL_DB_NAME_TEMPLATE="nope_{user_id}"
    )
    pool = TenantPool(app, uri=mongodb_uri, trust_header=True, db_name_template="user_{user_id}_db")

    @app.get("/")
    @require_user_db
    def index():
        return jsonify({"db": g.db.name, "ok": g.db.command("ping")["ok"]})

    alice = tenants("alice")
    try:
        assert app.test_client().get("/", headers=as_tenant(alice)).get_json() == {
            "db": f"user_{alice}_db",
            "ok": 1.0,
        }
    finally:
        pool.close(app)
    with pytest.raises(ConfigurationError, match="unknown tenantpool setting 'trust_headr'"):
        TenantPool(trust_headr=True)
    with pytest.raises(RuntimeError, match="already set up"):
        pool.init_app(app)


def test_decorator_without_extension_is_a_clear_error():
    app = Flask(__name__)

    @app.get("/")
    @require_user_db
    def index():
        return "unreachable"

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="TenantPool"):
        app.test_client().get("/")


# -- one manager per process --------------------------------------------------------------------------


def test_manager_is_per_process_and_inherited_one_is_left_alone(make_app, monkeypatch, tenants):
    import tenantpool.flask as tp_flask

    app = make_app(TENANTPOOL_TRUST_HEADER=True)
    with app.app_context():
        parent = blog_flask.pool.manager
        assert blog_flask.pool.manager is parent
        assert app.extensions["tenantpool"].manager is parent
        real_pid = tp_flask.os.getpid()
        # As seen from a forked child: a different pid gets its own manager...
        monkeypatch.setattr(tp_flask.os, "getpid", lambda: real_pid + 1)
        child = blog_flask.pool.manager
        assert child is not parent and blog_flask.pool.manager is child
        # ...and the parent's is neither closed nor freed behind its back.
        assert not parent.closed
        alice = tenants("alice")
        r = app.test_client().get("/api/stats", headers=as_tenant(alice))
        assert r.status_code == 200
        assert child.get_stats()["active_users"] == [alice]
        assert alice not in parent.get_stats()["active_users"]
        blog_flask.pool.close(app)
        assert child.closed and not parent.closed
    parent.close_all()


def test_close_then_next_request_opens_a_new_manager(make_app, tenants):
    app = make_app(TENANTPOOL_TRUST_HEADER=True)
    client = app.test_client()
    alice = tenants("alice")
    assert client.get("/api/stats", headers=as_tenant(alice)).status_code == 200
    first = app.extensions["tenantpool"].manager
    blog_flask.pool.close(app)
    assert first.closed
    assert client.get("/api/stats", headers=as_tenant(alice)).status_code == 200
    assert app.extensions["tenantpool"].manager is not first


# -- admin --------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(make_app):
    return make_app(
        TENANTPOOL_TRUST_HEADER=True, TENANTPOOL_ADMIN_ENABLED=True, TENANTPOOL_ADMIN_TOKEN=ADMIN_TOKEN
    ).test_client()


def test_admin_is_off_unless_enabled(client, make_app):
    assert client.get("/admin/connections").status_code == 404
    assert client.get("/metrics").status_code == 404
    # A token alone does not enable the endpoints.
    token_only = make_app(TENANTPOOL_TRUST_HEADER=True, TENANTPOOL_ADMIN_TOKEN=ADMIN_TOKEN).test_client()
    assert token_only.get("/admin/connections", headers=bearer(ADMIN_TOKEN)).status_code == 404


@pytest.mark.parametrize(
    "method, path", [("GET", "/admin/connections"), ("DELETE", "/admin/connections/x"), ("GET", "/metrics")]
)
def test_admin_refused_without_the_token(admin_client, method, path):
    r = admin_client.open(path, method=method)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in (
        bearer(ADMIN_TOKEN + "x"),
        bearer(ADMIN_TOKEN[:-1]),
        bearer("é"),
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ):
        r = admin_client.open(path, method=method, headers=wrong)
        assert r.status_code in (401, 403), wrong
        assert "active_users" not in r.get_data(as_text=True)
    assert admin_client.open(path, method=method, headers=bearer(ADMIN_TOKEN + "x")).status_code == 403


def test_admin_endpoints_with_the_token(admin_client, tenants):
    import os

    alice, bob = tenants("alice"), tenants("bob")
    for tenant in (alice, bob):
        assert admin_client.get("/api/stats", headers=as_tenant(tenant)).status_code == 200
    stats = admin_client.get("/admin/connections", headers=bearer(ADMIN_TOKEN)).get_json()
    assert set(stats["active_users"]) >= {alice, bob}
    assert stats["pid"] == os.getpid()
    assert {
        "total_connections",
        "user_pool_size",
        "idle_timeout",
        "total_potential_connections",
        "max_connections",
        "pools",
    } <= set(stats)

    r = admin_client.delete(f"/admin/connections/{alice}", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 200 and r.get_json() == {"closed": alice}
    assert admin_client.delete(f"/admin/connections/{alice}", headers=bearer(ADMIN_TOKEN)).status_code == 404
    assert admin_client.delete("/admin/connections/a.b", headers=bearer(ADMIN_TOKEN)).status_code == 400
    after = admin_client.get("/admin/connections", headers=bearer(ADMIN_TOKEN)).get_json()
    assert alice not in after["active_users"] and bob in after["active_users"]

    r = admin_client.get("/metrics", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert "# TYPE tenantpool_pools_created_total counter" in text
    assert 'tenantpool_pools_closed_total{cause="manual"}' in text


def test_admin_auth_callable_and_own_blueprint():
    app = Flask(__name__)
    app.config.update(
        TENANTPOOL_URI="mongodb://127.0.0.1:1/",
        TENANTPOOL_TRUST_HEADER=True,
        TENANTPOOL_ADMIN_AUTH=lambda request: request.headers.get("X-Role") == "ops",
    )
    pool = TenantPool(app)
    app.register_blueprint(pool.admin_blueprint(url_prefix="/ops", metrics_path="/ops/metrics"))
    client = app.test_client()
    try:
        assert client.get("/ops/connections").status_code == 403
        assert client.get("/ops/connections", headers={"X-Role": "dev"}).status_code == 403
        r = client.get("/ops/connections", headers={"X-Role": "ops"})
        assert r.status_code == 200 and r.get_json()["active_users"] == []
        assert client.get("/ops/metrics", headers={"X-Role": "ops"}).status_code == 200
        assert client.get("/admin/connections", headers={"X-Role": "ops"}).status_code == 404
    finally:
        pool.close(app)


def test_admin_blueprint_refuses_to_register_without_credentials(mongodb_uri):
    app = Flask(__name__)
    app.config.update(TENANTPOOL_URI=mongodb_uri, TENANTPOOL_TRUST_HEADER=True)
    pool = TenantPool(app)
    with pytest.raises(ConfigurationError, match="TENANTPOOL_ADMIN_TOKEN"):
        app.register_blueprint(pool.admin_blueprint())
    other = Flask(__name__)
    with pytest.raises(RuntimeError, match="init_app"):
        other.register_blueprint(pool.admin_blueprint())


def test_fallback_metrics_exposition(mongodb_uri):
    class OldManager:
        # A manager without metrics_text(): only get_stats().
        def __init__(self, real: UserConnectionManager) -> None:
            self.get_stats = real.get_stats

    with UserConnectionManager(mongodb_uri) as real:
        real.get_database("m1")
        real.get_database("m2")
        real.close_user_connection("m1")
        text = metrics_text(OldManager(real))
    lines = text.splitlines()
    for name, kind in [
        ("tenantpool_live_pools", "gauge"),
        ("tenantpool_pools_created_total", "counter"),
        ("tenantpool_pools_closed_total", "counter"),
        ("tenantpool_operation_errors_total", "counter"),
    ]:
        assert f"# TYPE {name} {kind}" in lines
        assert any(line.startswith(f"# HELP {name} ") for line in lines)
    assert "tenantpool_live_pools 1" in lines
    assert "tenantpool_pools_created_total 2" in lines
    assert 'tenantpool_pools_closed_total{cause="manual"} 1' in lines
    assert 'tenantpool_pools_closed_total{cause="idle"} 0' in lines
    assert text.endswith("\n")
