"""tenantpool.fastapi against a real mongod, through the blog and SaaS examples: CRUD, tenant isolation,
the error statuses, JWT resolution, the lifespan and the admin endpoints (issue: Flask and FastAPI
integration). Apps run in-process on the test's event loop (httpx.ASGITransport), with their lifespan.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the routes defined below at
# runtime, and they refer to local names.
import asyncio
import logging
import os
import threading
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import httpx
import jwt
import pytest
from bson import ObjectId
from examples import blog_fastapi, saas_fastapi
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pymongo.errors import ConfigurationError, DuplicateKeyError, InvalidOperation

from tenantpool.fastapi import TenantPool
from tenantpool.testing import free_port

pytestmark = pytest.mark.anyio

JWT_KEY = "test-signing-key-" + "x" * 64
ADMIN_TOKEN = "admin-token-" + "y" * 24


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_settings_from_environment(monkeypatch):
    # The examples read TENANTPOOL_* variables; a developer's shell (or `make demo`) must not change tests.
    for name in list(os.environ):
        if name.startswith("TENANTPOOL_") or name == "SAAS_STRATEGY":
            monkeypatch.delenv(name)


@pytest.fixture
def tenants(pymongo_client):
    """Makes unique tenant ids (lower-case, so they are valid company ids too); drops their databases
    and catalog entries afterwards."""
    made = []

    def make(label: str = "t") -> str:
        made.append(f"{label}_{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for tenant in made:
        pymongo_client.drop_database(f"user_{tenant}_db")
    if made:
        pymongo_client[saas_fastapi.CATALOG_DB].companies.delete_many({"_id": {"$in": made}})


@pytest.fixture
async def serve():
    """serve(app) runs the app's lifespan and returns an httpx client for it; both end with the test."""
    async with AsyncExitStack() as stack:

        async def start(app: FastAPI) -> httpx.AsyncClient:
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )

        yield start


@pytest.fixture
def blog(serve, mongodb_uri):
    """blog(**settings): a running blog example app's client."""

    async def make(**settings: Any) -> httpx.AsyncClient:
        return await serve(blog_fastapi.create_app({"uri": mongodb_uri, **settings}))

    return make


@pytest.fixture
async def client(blog):
    return await blog(trust_header=True)


def as_tenant(tenant: str) -> dict:
    return {"X-User-ID": tenant}


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def token(claims=None, key=JWT_KEY, algorithm="HS256", **extra) -> str:
    """A token for these claims; a claim set to None is left out."""
    payload = {"sub": "jwt_user", "exp": int(time.time()) + 300, **(claims or {}), **extra}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


async def create_post(client: httpx.AsyncClient, tenant: str, title: str, content: str = "body") -> str:
    r = await client.post("/api/posts", json={"title": title, "content": content}, headers=as_tenant(tenant))
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == tenant
    return r.json()["post_id"]


# -- the blog example ---------------------------------------------------------------------------------


async def test_blog_crud_pagination_views_and_stats(client, tenants, pymongo_client):
    alice = tenants("alice")
    ids = [await create_post(client, alice, f"post {i}") for i in range(3)]

    r = await client.get(f"/api/posts/{ids[1]}", headers=as_tenant(alice))
    assert r.status_code == 200
    post = r.json()["post"]
    assert post["created_at"].endswith("+00:00")
    assert (post["_id"], post["title"], post["content"], post["views"], post["likes"]) == (
        ids[1],
        "post 1",
        "body",
        0,
        0,
    )

    page1 = (await client.get("/api/posts?page=1&per_page=2", headers=as_tenant(alice))).json()
    page2 = (await client.get("/api/posts?page=2&per_page=2", headers=as_tenant(alice))).json()
    assert page1["total"] == page2["total"] == 3
    # Newest first, and the pages partition the posts.
    assert [p["_id"] for p in page1["posts"]] == [ids[2], ids[1]]
    assert [p["_id"] for p in page2["posts"]] == [ids[0]]

    for expected in (1, 2):
        r = await client.post(f"/api/posts/{ids[0]}/views", headers=as_tenant(alice))
        assert r.status_code == 200 and r.json()["views"] == expected
    await client.post(f"/api/posts/{ids[2]}/views", headers=as_tenant(alice))

    stats = (await client.get("/api/stats", headers=as_tenant(alice))).json()
    assert stats == {"user_id": alice, "total_posts": 3, "total_views": 3, "total_likes": 0}

    # Stored in the tenant's own database, with only the fields the app chose.
    stored = pymongo_client[f"user_{alice}_db"].posts.find_one({"_id": ObjectId(ids[0])})
    assert stored["views"] == 2
    assert set(stored) == {"_id", "title", "content", "tags", "created_at", "updated_at", "views", "likes"}


async def test_blog_request_validation(client, tenants):
    h = as_tenant(tenants("alice"))
    assert (await client.post("/api/posts", content=b"not json", headers=h)).status_code == 422
    for body in ({"title": " ", "content": "x"}, {"title": "t", "content": "x", "tags": "a"}, {"title": "t"}):
        assert (await client.post("/api/posts", json=body, headers=h)).status_code == 422, body
    # Fields the app does not know are not stored.
    r = await client.post("/api/posts", json={"title": "t", "content": "c", "views": 99, "_id": 1}, headers=h)
    assert r.status_code == 201
    post = (await client.get(f"/api/posts/{r.json()['post_id']}", headers=h)).json()["post"]
    assert post["views"] == 0 and post["_id"] == r.json()["post_id"]
    for query in ("page=0", "page=-1", "page=x", "per_page=0", "per_page=101", "page=99999999999999999999"):
        assert (await client.get(f"/api/posts?{query}", headers=h)).status_code == 422, query
    assert (await client.get("/api/posts/not-an-object-id", headers=h)).json() == {"error": "malformed id"}
    assert (await client.post("/api/posts/not-an-object-id/views", headers=h)).status_code == 400
    missing = str(ObjectId())
    r = await client.get(f"/api/posts/{missing}", headers=h)
    assert r.status_code == 404 and r.json() == {"error": "post not found"}
    assert (await client.post(f"/api/posts/{missing}/views", headers=h)).status_code == 404


async def test_tenants_never_see_each_others_posts(client, tenants):
    alice, bob = tenants("alice"), tenants("bob")
    alice_post = await create_post(client, alice, "alice's secret")
    bob_post = await create_post(client, bob, "bob's post")

    assert (await client.get(f"/api/posts/{alice_post}", headers=as_tenant(bob))).status_code == 404
    assert (await client.post(f"/api/posts/{alice_post}/views", headers=as_tenant(bob))).status_code == 404
    listing = (await client.get("/api/posts?per_page=100", headers=as_tenant(bob))).json()
    assert listing["total"] == 1 and [p["_id"] for p in listing["posts"]] == [bob_post]
    assert (await client.get("/api/stats", headers=as_tenant(bob))).json()["total_views"] == 0

    # Bob's attempts changed nothing on Alice's side.
    post = (await client.get(f"/api/posts/{alice_post}", headers=as_tenant(alice))).json()["post"]
    assert post["views"] == 0 and post["title"] == "alice's secret"


async def test_concurrent_requests_across_tenants_stay_isolated(client, tenants):
    ids = [tenants(f"c{i}") for i in range(8)]
    jobs = [(t, f"{t} post {n}") for t in ids for n in range(5)]
    created = await asyncio.gather(*(create_post(client, t, title) for t, title in jobs))

    async def listing(tenant: str) -> list:
        r = await client.get("/api/posts?per_page=100", headers=as_tenant(tenant))
        return sorted(p["title"] for p in r.json()["posts"])

    listings = await asyncio.gather(*(listing(t) for t in ids))
    for tenant, titles in zip(ids, listings):
        assert titles == sorted(f"{tenant} post {n}" for n in range(5))
    # Every post is reachable by its owner and by nobody else.
    others = [ids[(ids.index(t) + 1) % len(ids)] for t, _ in jobs]
    own = await asyncio.gather(
        *(client.get(f"/api/posts/{p}", headers=as_tenant(t)) for p, (t, _) in zip(created, jobs))
    )
    foreign = await asyncio.gather(
        *(client.get(f"/api/posts/{p}", headers=as_tenant(o)) for p, o in zip(created, others))
    )
    assert [r.status_code for r in own] == [200] * len(jobs)
    assert [r.status_code for r in foreign] == [404] * len(jobs)


async def test_healthz_reports_the_process(client):
    assert (await client.get("/healthz")).json() == {"status": "ok", "pid": os.getpid()}


# -- error statuses -----------------------------------------------------------------------------------


async def test_no_tenant_id_is_400(client):
    r = await client.get("/api/posts")
    assert r.status_code == 400
    assert r.json() == {"error": "no tenant id in the request: send the X-User-ID header"}


async def test_query_parameter_is_used_only_when_trusted(blog, tenants):
    alice = tenants("alice")
    header_only = await blog(trust_header=True)
    assert (await header_only.get(f"/api/posts?user_id={alice}")).status_code == 400
    query = await blog(trust_query=True)
    r = await query.get(f"/api/posts?user_id={alice}")
    assert r.status_code == 200 and r.json()["user_id"] == alice


@pytest.mark.parametrize("bad_id", ["a.b", "has space", "x" * 60, "é", "a/b"])
async def test_invalid_tenant_id_is_400_and_touches_no_database(client, pymongo_client, bad_id):
    before = set(pymongo_client.list_database_names())
    r = await client.get("/api/posts", headers={"X-User-ID": bad_id.encode()})
    assert r.status_code == 400
    assert "tenant id" in r.json()["error"]
    assert set(pymongo_client.list_database_names()) == before


async def test_unreachable_database_is_503_without_details(serve, caplog):
    port = free_port()  # nothing listens here
    app = blog_fastapi.create_app(
        {
            "uri": f"mongodb://127.0.0.1:{port}/",
            "mongo_options": {"serverSelectionTimeoutMS": 300, "connectTimeoutMS": 300},
            "trust_header": True,
        }
    )
    client = await serve(app)
    with caplog.at_level(logging.ERROR, logger="tenantpool.web"):
        r = await client.get("/api/posts", headers=as_tenant("alice"))
        w = await client.post("/api/posts", json={"title": "t", "content": "c"}, headers=as_tenant("alice"))
    for resp in (r, w):
        assert resp.status_code == 503
        assert resp.json() == {"error": "database unavailable, try again later"}
        assert str(port) not in resp.text
    logged = [rec for rec in caplog.records if rec.name == "tenantpool.web" and rec.levelno >= logging.ERROR]
    assert len(logged) == 2 and all(rec.exc_info for rec in logged)
    assert "ServerSelectionTimeoutError" in caplog.text


def bare_app(mongodb_uri: str, init: bool = True, **settings: Any) -> FastAPI:
    pool = TenantPool(mongodb_uri, trust_header=True, **settings)
    app = FastAPI(lifespan=pool.lifespan)
    if init:
        pool.init_app(app)
    Db = Annotated[Any, Depends(pool.user_database)]

    @app.get("/command/{name}")
    async def command(name: str, db: Db) -> dict:
        return await db.command(name)

    @app.post("/dup")
    async def dup(db: Db) -> dict:
        await db.items.insert_one({"_id": 1})
        await db.items.insert_one({"_id": 1})
        return {}

    @app.get("/whoami")
    async def whoami(db: Db, user_id: Annotated[str, Depends(pool.user_id)]) -> dict:
        return {"user_id": user_id, "db": db.name}

    return app


async def test_other_database_errors_are_500_without_server_text(serve, mongodb_uri, tenants, caplog):
    client = await serve(bare_app(mongodb_uri))
    with caplog.at_level(logging.ERROR, logger="tenantpool.web"):
        r = await client.get("/command/noSuchCommandXyz", headers=as_tenant(tenants()))
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error"}
    assert "noSuchCommandXyz" in caplog.text  # logged, not sent


async def test_app_handlers_for_subclasses_take_precedence(serve, mongodb_uri, tenants):
    app = bare_app(mongodb_uri)
    app.add_exception_handler(DuplicateKeyError, lambda request, exc: JSONResponse({"error": "exists"}, 409))
    client = await serve(app)
    alice = tenants("alice")
    assert (await client.post("/dup", headers=as_tenant(alice))).status_code == 409
    assert (await client.get("/command/noSuchCommandXyz", headers=as_tenant(alice))).status_code == 500
    assert (await client.get("/whoami", headers=as_tenant(alice))).json() == {
        "user_id": alice,
        "db": f"user_{alice}_db",
    }


async def test_a_tenant_over_its_quota_gets_503_while_others_are_served(
    serve, mongodb_uri, tenants, pymongo_client
):
    pool = TenantPool(
        mongodb_uri, trust_header=True, user_pool_size=1, mongo_options={"waitQueueTimeoutMS": 200}
    )
    app = FastAPI(lifespan=pool.lifespan)
    pool.init_app(app)
    Db = Annotated[Any, Depends(pool.user_database)]

    @app.get("/slow")
    async def slow(db: Db) -> dict:
        return {"found": await db.items.find_one({"$where": "sleep(1500) || true"}, {"_id": 0})}

    @app.get("/fast")
    async def fast(db: Db) -> dict:
        return {"n": await db.items.count_documents({})}

    client = await serve(app)
    alice, bob = tenants("alice"), tenants("bob")
    pymongo_client[f"user_{alice}_db"].items.insert_one({"x": 1})
    slow_request = asyncio.ensure_future(client.get("/slow", headers=as_tenant(alice)))
    # Until alice's slow query holds her only slot (polled, bounded).
    deadline = time.monotonic() + 10
    while pool.manager.get_tier_stats().get("default", {}).get("in_flight") != 1:
        assert time.monotonic() < deadline and not slow_request.done()
        await asyncio.sleep(0.01)
    started = time.monotonic()
    over_quota = await client.get("/fast", headers=as_tenant(alice))
    assert over_quota.status_code == 503, over_quota.text
    assert over_quota.json() == {"error": "database unavailable, try again later"}
    assert time.monotonic() - started < 1.2  # the quota's wait, not the slow query
    other = await client.get("/fast", headers=as_tenant(bob))
    assert other.status_code == 200 and other.json() == {"n": 0}
    r = await slow_request
    assert r.status_code == 200 and r.json() == {"found": {"x": 1}}


async def test_without_init_app_the_statuses_still_hold(serve, mongodb_uri):
    client = await serve(bare_app(mongodb_uri, init=False, jwt_key=JWT_KEY, jwt_algorithms=["HS256"]))
    r = await client.get("/whoami")
    assert r.status_code == 400 and "X-User-ID" in r.json()["detail"]
    r = await client.get("/whoami", headers=bearer("not.a.jwt"))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/whoami", headers=as_tenant("a.b"))).status_code == 400


# -- JWT ----------------------------------------------------------------------------------------------


@pytest.fixture
async def jwt_client(blog):
    return await blog(
        jwt_key=JWT_KEY, jwt_algorithms=["HS256"], jwt_audience="blog", jwt_issuer="https://issuer.test"
    )


def good_claims(tenant: str) -> dict:
    return {"sub": tenant, "aud": "blog", "iss": "https://issuer.test"}


async def test_jwt_accepted(jwt_client, tenants):
    alice = tenants("alice")
    r = await jwt_client.post(
        "/api/posts", json={"title": "t", "content": "c"}, headers=bearer(token(good_claims(alice)))
    )
    post_id = r.json()["post_id"]
    lower_case_scheme = {"Authorization": f"bearer {token(good_claims(alice))}"}
    r = await jwt_client.get(f"/api/posts/{post_id}", headers=lower_case_scheme)
    assert r.status_code == 200 and r.json()["user_id"] == alice
    # Another tenant's valid token does not reach alice's post.
    bob = tenants("bob")
    assert (
        await jwt_client.get(f"/api/posts/{post_id}", headers=bearer(token(good_claims(bob))))
    ).status_code == 404


async def test_jwt_custom_integer_claim(blog):
    client = await blog(jwt_key=JWT_KEY, jwt_algorithms="HS256", jwt_claim="tenant")
    # Reads only, so no database is created for tenant 42.
    r = await client.get("/api/stats", headers=bearer(token({"tenant": 42})))
    assert r.status_code == 200 and r.json()["user_id"] == "42"
    assert (await client.get("/api/stats", headers=bearer(token({"tenant": ["x"]})))).status_code == 401


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
async def test_jwt_rejected_with_401(jwt_client, tenants, make_token):
    r = await jwt_client.get("/api/posts", headers=bearer(make_token(tenants("alice"))))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(r.json()) == {"error"}


async def test_expired_token_says_so(jwt_client, tenants):
    expired = token(good_claims(tenants()), exp=int(time.time()) - 60)
    r = await jwt_client.get("/api/posts", headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_bad_token_is_not_passed_over_for_a_trusted_header(blog, tenants):
    alice = tenants("alice")
    client = await blog(jwt_key=JWT_KEY, jwt_algorithms=["HS256"], trust_header=True)
    forged = token({"sub": alice}, key="attacker-key-" + "q" * 64)
    assert (await client.get("/api/posts", headers={**bearer(forged), **as_tenant(alice)})).status_code == 401
    # A valid token wins over the header.
    bob = tenants("bob")
    r = await client.get("/api/posts", headers={**bearer(token({"sub": bob})), **as_tenant(alice)})
    assert r.json()["user_id"] == bob
    # No token at all: the trusted header applies.
    assert (await client.get("/api/posts", headers=as_tenant(alice))).json()["user_id"] == alice


async def test_jwt_only_app_ignores_header_query_and_other_schemes(blog, tenants):
    client = await blog(jwt_key=JWT_KEY, jwt_algorithms=["HS256"])
    alice = tenants("alice")
    assert (await client.get("/api/posts", headers=as_tenant(alice))).status_code == 400
    assert (
        await client.get("/api/posts", headers={"Authorization": "Basic YWxpY2U6eA=="})
    ).status_code == 400
    assert (await client.get(f"/api/posts?user_id={alice}")).status_code == 400


async def test_callable_jwt_key_runs_off_the_event_loop(blog, tenants):
    # A key callable may fetch keys over the network (a JWKS client does): it must not run on the loop.
    threads = []

    def key(tok: str) -> str:
        threads.append(threading.get_ident())
        return JWT_KEY

    client = await blog(jwt_key=key, jwt_algorithms=["HS256"])
    alice = tenants("alice")
    r = await client.get("/api/stats", headers=bearer(token({"sub": alice})))
    assert r.status_code == 200 and r.json()["user_id"] == alice
    assert threads and threading.get_ident() not in threads


# -- configuration and lifespan -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({}, "no tenant-id source"),
        ({"trust_header": "false"}, "must be True or False"),
        ({"TENANTPOOL_TRUST_HEADER": "false"}, "must be True or False"),
        ({"jwt_key": JWT_KEY}, "TENANTPOOL_JWT_ALGORITHMS is required"),
        ({"jwt_algorithms": ["HS256"], "trust_header": True}, "TENANTPOOL_JWT_KEY is not"),
        ({"jwt_key": JWT_KEY, "jwt_algorithms": ["none"]}, "signing algorithms"),
        ({"jwt_key": JWT_KEY, "jwt_algorithms": ["HS256", "RS256"]}, "must not mix"),
        ({"trust_header": True, "admin_enabled": True}, "TENANTPOOL_ADMIN_TOKEN"),
        ({"trust_header": True, "admin_token": "  "}, "non-empty"),
        ({"trust_headers": True}, "did you mean 'trust_header'"),
        ({"TENANTPOOL_TRUST_HEADERS": True}, "did you mean 'trust_header'"),
        ({"trust_header": True, "uri": None}, "TENANTPOOL_URI"),
        ({"trust_header": True, "mongo_options": "w=1"}, "MONGO_OPTIONS"),
    ],
)
def test_configuration_errors_at_construction(mongodb_uri, settings, message):
    with pytest.raises(ConfigurationError, match=message):
        TenantPool(settings={"uri": mongodb_uri, **settings})


def test_settings_precedence_and_manager_options():
    pool = TenantPool(
        "mongodb://first.invalid/",
        settings={
            "TENANTPOOL_URI": "mongodb://third.invalid/",
            "TENANTPOOL_USER_POOL_SIZE": 4,
            "idle_timeout": 60,
        },
        idle_timeout=30,
        trust_header=True,
    )
    s = pool.settings
    assert (s["uri"], s["user_pool_size"], s["idle_timeout"], s["trust_header"]) == (
        "mongodb://first.invalid/",
        4,
        30,
        True,
    )
    with pytest.raises(ConfigurationError, match="through the tenantpool settings"):
        TenantPool("mongodb://x.invalid/", trust_header=True, manager_options={"user_pool_size": 3})


async def test_lifespan_creates_and_closes_the_manager(serve, mongodb_uri, tenants):
    pool = TenantPool(mongodb_uri, trust_header=True)
    with pytest.raises(RuntimeError, match="lifespan is not running"):
        pool.manager  # noqa: B018
    app = FastAPI(lifespan=pool.lifespan)
    alice = tenants("alice")
    async with pool.lifespan(app):
        manager = pool.manager
        await manager.get_database(alice).command("ping")
        assert manager.get_stats()["active_users"] == [alice]
        # Dependencies find the manager through the pool: a second app may not share it.
        with pytest.raises(RuntimeError, match="already running"):
            async with pool.lifespan(FastAPI()):
                pass
        assert pool.manager is manager
    with pytest.raises(RuntimeError, match="lifespan is not running"):
        pool.manager  # noqa: B018
    with pytest.raises(InvalidOperation):
        manager.get_stats()
    # A later lifespan (a restarted app) gets a new manager.
    async with pool.lifespan(app):
        assert pool.manager is not manager


async def test_lifespan_composes_with_the_apps_own(serve, mongodb_uri, tenants):
    pool = TenantPool(mongodb_uri, trust_header=True)
    events = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with pool.lifespan(app):
            events.append("startup")
            pool.manager.get_stats()  # usable in the app's own startup
            yield
            events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    pool.init_app(app)

    @app.get("/db")
    async def db_name(db: Annotated[Any, Depends(pool.user_database)]) -> dict:
        return {"db": db.name}

    alice = tenants("alice")
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        )
        await stack.enter_async_context(app.router.lifespan_context(app))
        assert (await client.get("/db", headers=as_tenant(alice))).json() == {"db": f"user_{alice}_db"}
        manager = pool.manager
    assert events == ["startup", "shutdown"]
    with pytest.raises(InvalidOperation):
        manager.get_stats()


async def test_requests_without_the_lifespan_are_a_clear_error(mongodb_uri):
    app = bare_app(mongodb_uri)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with client:
        with pytest.raises(RuntimeError, match=r"FastAPI\(lifespan=pool\.lifespan\)"):
            await client.get("/whoami", headers=as_tenant("alice"))


def test_init_app_twice_is_an_error(mongodb_uri):
    pool = TenantPool(mongodb_uri, trust_header=True)
    app = FastAPI(lifespan=pool.lifespan)
    pool.init_app(app)
    with pytest.raises(RuntimeError, match="already set up"):
        pool.init_app(app)


# -- admin --------------------------------------------------------------------------------------------


@pytest.fixture
async def admin_client(blog):
    return await blog(trust_header=True, admin_enabled=True, admin_token=ADMIN_TOKEN)


async def test_admin_is_off_unless_enabled(client, blog):
    assert (await client.get("/admin/connections")).status_code == 404
    assert (await client.get("/metrics")).status_code == 404
    # A token alone does not enable the endpoints.
    token_only = await blog(trust_header=True, admin_token=ADMIN_TOKEN)
    assert (await token_only.get("/admin/connections", headers=bearer(ADMIN_TOKEN))).status_code == 404


@pytest.mark.parametrize(
    "method, path", [("GET", "/admin/connections"), ("DELETE", "/admin/connections/x"), ("GET", "/metrics")]
)
async def test_admin_refused_without_the_token(admin_client, method, path):
    r = await admin_client.request(method, path)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(r.json()) == {"error"}
    for wrong in (
        bearer(ADMIN_TOKEN + "x"),
        bearer(ADMIN_TOKEN[:-1]),
        {"Authorization": "Bearer é".encode()},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ):
        r = await admin_client.request(method, path, headers=wrong)
        assert r.status_code in (401, 403), wrong
        assert "active_users" not in r.text and "tenantpool_" not in r.text
    assert (await admin_client.request(method, path, headers=bearer(ADMIN_TOKEN + "x"))).status_code == 403


async def test_admin_endpoints_with_the_token(admin_client, tenants):
    alice, bob = tenants("alice"), tenants("bob")
    for tenant in (alice, bob):
        assert (await admin_client.get("/api/stats", headers=as_tenant(tenant))).status_code == 200
    stats = (await admin_client.get("/admin/connections", headers=bearer(ADMIN_TOKEN))).json()
    assert set(stats["active_users"]) == {alice, bob}
    assert stats["pid"] == os.getpid()
    assert stats["tiers"]["default"]["pools"] == 2 and stats["tiers"]["default"]["capacity"] == 20
    assert {
        "total_connections",
        "user_pool_size",
        "idle_timeout",
        "total_potential_connections",
        "max_connections",
        "pools",
    } <= set(stats)

    r = await admin_client.delete(f"/admin/connections/{alice}", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 200 and r.json() == {"closed": alice}
    r = await admin_client.delete(f"/admin/connections/{alice}", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 404 and "error" in r.json()
    r = await admin_client.delete("/admin/connections/a.b", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 400 and "error" in r.json()
    after = (await admin_client.get("/admin/connections", headers=bearer(ADMIN_TOKEN))).json()
    assert after["active_users"] == [bob]

    r = await admin_client.get("/metrics", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE tenantpool_pools_created_total counter" in r.text
    assert 'tenantpool_pools_closed_total{cause="manual"}' in r.text
    # Not advertised in the API schema.
    assert "/admin/connections" not in (await admin_client.get("/openapi.json")).text


async def test_admin_auth_callable_and_own_router(serve):
    pool = TenantPool(
        "mongodb://127.0.0.1:1/",
        trust_header=True,
        admin_auth=lambda request: request.headers.get("X-Role") == "ops",
    )
    app = FastAPI(lifespan=pool.lifespan)
    pool.init_app(app)
    app.include_router(pool.admin_router(prefix="/ops", metrics_path="/ops/metrics"))
    client = await serve(app)
    assert (await client.get("/ops/connections")).status_code == 403
    assert (await client.get("/ops/connections", headers={"X-Role": "dev"})).status_code == 403
    r = await client.get("/ops/connections", headers={"X-Role": "ops"})
    assert r.status_code == 200 and r.json()["active_users"] == []
    assert (await client.get("/ops/metrics", headers={"X-Role": "ops"})).status_code == 200
    assert (await client.get("/admin/connections", headers={"X-Role": "ops"})).status_code == 404


def test_admin_router_refuses_without_credentials(mongodb_uri):
    pool = TenantPool(mongodb_uri, trust_header=True)
    with pytest.raises(ConfigurationError, match="TENANTPOOL_ADMIN_TOKEN"):
        pool.admin_router()


# -- the SaaS example ---------------------------------------------------------------------------------


@pytest.fixture
def saas(serve, mongodb_uri):
    """saas(**settings): (client, app) of a running SaaS example app."""

    async def make(**settings: Any):
        app = saas_fastapi.create_app({"uri": mongodb_uri, "trust_header": True, **settings})
        return await serve(app), app

    return make


def as_company(company: str) -> dict:
    return {"X-Company-ID": company}


async def onboard(client: httpx.AsyncClient, company: str, plan: str = "basic") -> None:
    r = await client.post(
        "/api/onboard", json={"name": company.upper(), "plan": plan}, headers=as_company(company)
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"company_id": company, "plan": plan, "pool_size": saas_fastapi.PLAN_POOL_SIZES[plan]}


async def test_saas_onboarding_creates_collections_indexes_and_catalog_entry(saas, tenants, pymongo_client):
    client, _ = await saas()
    acme = tenants("acme")
    assert (await client.get("/api/analytics", headers=as_company(acme))).status_code == 404
    await onboard(client, acme, "premium")
    db = pymongo_client[f"user_{acme}_db"]
    assert {"users", "projects", "tasks"} <= set(db.list_collection_names())
    email = [i for i in db.users.index_information().values() if i["key"] == [("email", 1)]]
    assert len(email) == 1 and email[0].get("unique") is True
    assert [("project_id", 1), ("status", 1)] in [i["key"] for i in db.tasks.index_information().values()]
    entry = pymongo_client[saas_fastapi.CATALOG_DB].companies.find_one({"_id": acme})
    assert (entry["plan"], entry["status"], entry["name"]) == ("premium", "active", acme.upper())

    again = await client.post("/api/onboard", json={"name": "x", "plan": "free"}, headers=as_company(acme))
    assert again.status_code == 409 and again.json() == {"error": "company already onboarded"}
    company = (await client.get("/api/company", headers=as_company(acme))).json()
    assert (company["plan"], company["pool_size"]) == ("premium", 10)


async def test_saas_users_projects_tasks_and_analytics(saas, tenants):
    client, _ = await saas()
    acme, globex = tenants("acme"), tenants("globex")
    await asyncio.gather(onboard(client, acme), onboard(client, globex))
    h = as_company(acme)

    alice = {"email": "Alice@Acme.test", "name": "Alice", "role": "admin"}
    assert (await client.post("/api/users", json=alice, headers=h)).status_code == 201
    dup = await client.post("/api/users", json={**alice, "email": "alice@acme.TEST"}, headers=h)
    assert dup.status_code == 409 and dup.json() == {"error": "a user with this email already exists"}
    # The same email in another company is another user.
    assert (await client.post("/api/users", json=alice, headers=as_company(globex))).status_code == 201
    assert (await client.post("/api/users", json={**alice, "email": "nope"}, headers=h)).status_code == 422
    users = (await client.get("/api/users", headers=h)).json()["users"]
    assert [(u["email"], u["role"]) for u in users] == [("alice@acme.test", "admin")]

    p1 = (await client.post("/api/projects", json={"name": "Alpha"}, headers=h)).json()["project_id"]
    p2 = (await client.post("/api/projects", json={"name": "Beta"}, headers=h)).json()["project_id"]
    tasks = [
        (await client.post(f"/api/projects/{p}/tasks", json={"title": f"t{i}"}, headers=h)).json()["task_id"]
        for i, p in enumerate([p1, p1, p2])
    ]
    r = await client.patch(f"/api/tasks/{tasks[0]}", json={"status": "completed"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert (
        await client.patch(f"/api/tasks/{tasks[1]}", json={"status": "done"}, headers=h)
    ).status_code == 422

    # Another company can neither add tasks to these projects nor change these tasks.
    g = as_company(globex)
    assert (await client.post(f"/api/projects/{p1}/tasks", json={"title": "x"}, headers=g)).status_code == 404
    assert (
        await client.patch(f"/api/tasks/{tasks[1]}", json={"status": "completed"}, headers=g)
    ).status_code == 404
    assert (await client.get("/api/projects", headers=g)).json()["projects"] == []

    analytics = (await client.get("/api/analytics", headers=h)).json()
    assert analytics == {
        "company_id": acme,
        "plan": "basic",
        "total_users": 1,
        "total_projects": 2,
        "active_projects": 2,
        "total_tasks": 3,
        "completed_tasks": 1,
        "tasks_by_status": {"open": 2, "completed": 1},
    }
    names = [p["name"] for p in (await client.get("/api/projects", headers=h)).json()["projects"]]
    assert names == ["Alpha", "Beta"]


async def test_saas_plans_decide_the_pool_size(saas, tenants, pymongo_client):
    client, app = await saas()
    companies = {plan: tenants(plan) for plan in saas_fastapi.PLAN_POOL_SIZES}
    await asyncio.gather(*(onboard(client, c, plan) for plan, c in companies.items()))
    manager = app.state.tenantpool.manager
    tiers = manager.get_tier_stats()
    for plan, size in saas_fastapi.PLAN_POOL_SIZES.items():
        assert (tiers[plan]["pools"], tiers[plan]["capacity"]) == (1, size), plan
    # The catalog every company's requests read has its own, larger share.
    assert (tiers["platform"]["pools"], tiers["platform"]["capacity"]) == (1, 50)
    assert "default" not in tiers

    # An upgrade reopens the company's pool with the new plan's size.
    free = companies["free"]
    r = await client.put("/api/company/plan", json={"plan": "enterprise"}, headers=as_company(free))
    assert r.json() == {"company_id": free, "plan": "enterprise", "pool_size": 20}
    assert (await client.get("/api/analytics", headers=as_company(free))).json()["plan"] == "enterprise"
    tiers = manager.get_tier_stats()
    assert "free" not in tiers and (tiers["enterprise"]["pools"], tiers["enterprise"]["capacity"]) == (2, 40)

    # A change made elsewhere (another worker) is picked up once the cached plan expires.
    basic = companies["basic"]
    app.state.plans.ttl = 0
    await onboard(client, other := tenants("other"), "basic")
    pymongo_client[saas_fastapi.CATALOG_DB].companies.update_one(
        {"_id": other}, {"$set": {"plan": "premium"}}
    )
    assert (await client.get("/api/analytics", headers=as_company(other))).json()["plan"] == "premium"
    tiers = manager.get_tier_stats()
    assert (tiers["premium"]["pools"], tiers["basic"]["pools"]) == (2, 1)
    assert basic in manager.get_stats()["active_users"]


async def test_saas_offboarding_drops_the_company(saas, tenants, pymongo_client):
    client, app = await saas()
    acme = tenants("acme")
    await onboard(client, acme)
    await client.post("/api/projects", json={"name": "Alpha"}, headers=as_company(acme))
    assert f"user_{acme}_db" in pymongo_client.list_database_names()
    r = await client.delete("/api/company", headers=as_company(acme))
    assert r.status_code == 200 and r.json() == {"deleted": acme}
    assert f"user_{acme}_db" not in pymongo_client.list_database_names()
    assert pymongo_client[saas_fastapi.CATALOG_DB].companies.find_one({"_id": acme}) is None
    assert acme not in app.state.tenantpool.manager.get_stats()["active_users"]
    assert (await client.get("/api/projects", headers=as_company(acme))).status_code == 404


@pytest.mark.parametrize("bad", ["ACME", "_platform", "a.b", "x" * 41])
async def test_saas_company_ids_are_slugs(saas, bad, pymongo_client):
    client, _ = await saas()
    before = set(pymongo_client.list_database_names())
    r = await client.post("/api/onboard", json={"name": "x", "plan": "free"}, headers=as_company(bad))
    assert r.status_code == 400 and "company ids" in r.json()["error"]
    assert set(pymongo_client.list_database_names()) == before
    assert (await client.post("/api/onboard", json={"name": "x"})).json() == {
        "error": "no tenant id in the request: send the X-Company-ID header"
    }
