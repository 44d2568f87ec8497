"""The design document's blog platform (section 7.1) as a FastAPI app on tenantpool.fastapi: every
tenant's posts live in its own database, reached through its own share of connections, with awaits that
never block the event loop.

    MONGODB_URI=mongodb://127.0.0.1:27017/ uvicorn examples.blog_fastapi:app --port 8000
    curl -H 'X-User-ID: alice' -H 'Content-Type: application/json' \\
         -d '{"title": "Hello", "content": "First post"}' http://127.0.0.1:8000/api/posts
    curl -H 'X-User-ID: alice' 'http://127.0.0.1:8000/api/posts?page=1&per_page=10'

``app`` is the demo app, which trusts the X-User-ID header. For a deployment use the factory, configured
from ``TENANTPOOL_*`` environment variables (see ``settings_from_env``), e.g.
``TENANTPOOL_JWT_KEY=... uvicorn --factory examples.blog_fastapi:create_app``.

Endpoints (all but /healthz need a tenant id); the same as examples/blog_flask.py, errors included
(``{"error": message}``), except that a request body or query parameter of the wrong shape is FastAPI's
422 rather than 400:
    POST /api/posts                     {"title", "content", "tags"?} -> 201 {"post_id"}
    GET  /api/posts?page=&per_page=     newest first
    GET  /api/posts/{id}                400 for a malformed id, 404 if the tenant has no such post
    POST /api/posts/{id}/views          increments and returns the view counter
    GET  /api/stats                     the tenant's post, view and like totals
    GET  /healthz                       liveness, with the serving process id
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime, and the
# Annotated aliases below are local to blog_router.
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from bson import ObjectId
from bson.errors import InvalidId
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, field_validator
from pymongo import DESCENDING, ReturnDocument
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenantpool.fastapi import TenantPool

MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000  # keeps skip() within a 64-bit int

# One pass over the posts instead of the document's count + two aggregations.
_TOTALS = [
    {
        "$group": {
            "_id": None,
            "total_posts": {"$sum": 1},
            "total_views": {"$sum": "$views"},
            "total_likes": {"$sum": "$likes"},
        }
    }
]


class NewPost(BaseModel):
    # Only these fields are stored: the request body never chooses _id, views or likes.
    title: str
    content: str
    tags: list[str] = []

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, title: str) -> str:
        if not title.strip():
            raise ValueError("must not be blank")
        return title


def post_json(post: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(post)
    out["_id"] = str(out["_id"])
    for key in ("created_at", "updated_at"):
        value = out.get(key)
        if isinstance(value, datetime):
            # BSON datetimes are UTC but decode without a timezone; say so to the client.
            out[key] = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return out


def object_id(value: str) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise HTTPException(400, "malformed id") from None


def blog_router(pool: TenantPool) -> APIRouter:
    router = APIRouter()
    UserId = Annotated[str, Depends(pool.user_id)]
    Db = Annotated[Any, Depends(pool.user_database)]

    @router.post("/api/posts", status_code=201)
    async def create_post(post: NewPost, user_id: UserId, db: Db) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        doc = {**post.model_dump(), "created_at": now, "updated_at": now, "views": 0, "likes": 0}
        result = await db.posts.insert_one(doc)
        return {"user_id": user_id, "post_id": str(result.inserted_id)}

    @router.get("/api/posts")
    async def list_posts(
        user_id: UserId,
        db: Db,
        page: int = Query(1, ge=1, le=MAX_PAGE),
        per_page: int = Query(10, ge=1, le=MAX_PER_PAGE),
    ) -> dict[str, Any]:
        # _id breaks created_at ties, so pages never overlap or skip a post.
        cursor = (
            db.posts.find({})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .skip((page - 1) * per_page)
            .limit(per_page)
        )
        return {
            "user_id": user_id,
            "page": page,
            "per_page": per_page,
            "total": await db.posts.count_documents({}),
            "posts": [post_json(p) async for p in cursor],
        }

    @router.get("/api/posts/{post_id}")
    async def get_post(post_id: str, user_id: UserId, db: Db) -> dict[str, Any]:
        post = await db.posts.find_one({"_id": object_id(post_id)})
        if post is None:
            raise HTTPException(404, "post not found")
        return {"user_id": user_id, "post": post_json(post)}

    @router.post("/api/posts/{post_id}/views")
    async def increment_views(post_id: str, user_id: UserId, db: Db) -> dict[str, Any]:
        post = await db.posts.find_one_and_update(
            {"_id": object_id(post_id)},
            {"$inc": {"views": 1}},
            projection={"views": 1},
            return_document=ReturnDocument.AFTER,
        )
        if post is None:
            raise HTTPException(404, "post not found")
        return {"user_id": user_id, "post_id": post_id, "views": post["views"]}

    @router.get("/api/stats")
    async def stats(user_id: UserId, db: Db) -> dict[str, Any]:
        totals = await (await db.posts.aggregate(_TOTALS)).to_list(None)
        result = totals[0] if totals else {"total_posts": 0, "total_views": 0, "total_likes": 0}
        result.pop("_id", None)
        return {"user_id": user_id, **result}

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # The pid shows which worker answered (each worker has its own pools).
        return {"status": "ok", "pid": os.getpid()}

    return router


async def json_error(request: Request, exc: Exception) -> JSONResponse:
    # The app's own HTTP errors in the integration's {"error": message} shape, as in the Flask blog.
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def settings_from_env() -> dict[str, Any]:
    """TENANTPOOL_URI (or MONGODB_URI), and the tenant-id sources a deployment may switch on."""
    settings: dict[str, Any] = {
        "uri": os.environ.get("TENANTPOOL_URI") or os.environ.get("MONGODB_URI", "mongodb://localhost:27017/")
    }
    if os.environ.get("TENANTPOOL_JWT_KEY"):
        settings["jwt_key"] = os.environ["TENANTPOOL_JWT_KEY"]
        settings["jwt_algorithms"] = os.environ.get("TENANTPOOL_JWT_ALGORITHMS", "HS256").split(",")
    if os.environ.get("TENANTPOOL_TRUST_HEADER") == "1":
        settings["trust_header"] = True
    if os.environ.get("TENANTPOOL_ADMIN_TOKEN"):
        settings["admin_enabled"] = True
        settings["admin_token"] = os.environ["TENANTPOOL_ADMIN_TOKEN"]
    return settings


def create_app(settings: Optional[Mapping[str, Any]] = None) -> FastAPI:
    """The blog app; ``settings`` (tenantpool settings, see tenantpool.fastapi) override the environment.
    Each app gets its own TenantPool, so tests can build several."""
    pool = TenantPool(settings={**settings_from_env(), **(settings or {})})
    app = FastAPI(title="tenantpool blog", lifespan=pool.lifespan)
    app.state.tenantpool = pool
    pool.init_app(app)
    app.add_exception_handler(StarletteHTTPException, json_error)
    app.include_router(blog_router(pool))
    return app


# !!! DEMO ONLY: this app trusts the X-User-ID header, so ANY client can read and write ANY tenant's
# !!! posts by sending that header. Deployments use the factory with a verified token instead:
# !!! TENANTPOOL_JWT_KEY=... uvicorn --factory examples.blog_fastapi:create_app
app = create_app({"trust_header": True})
