"""The design document's blog platform (section 7.1) as a Flask app on tenantpool.flask: every tenant's
posts live in its own database, reached through its own connection pool.

    MONGODB_URI=mongodb://127.0.0.1:27017/ python examples/blog_flask.py
    curl -H 'X-User-ID: alice' -H 'Content-Type: application/json' \\
         -d '{"title": "Hello", "content": "First post"}' http://127.0.0.1:5000/api/posts
    curl -H 'X-User-ID: alice' 'http://127.0.0.1:5000/api/posts?page=1&per_page=10'

As a factory (gunicorn, tests): ``examples.blog_flask:create_app(config)``, e.g.
``gunicorn -w 2 --preload 'examples.blog_flask:create_app()'`` with tenant resolution configured through
``config`` or ``TENANTPOOL_*`` environment variables (see ``_from_env``).

Endpoints (all but /healthz need a tenant id):
    POST /api/posts                     {"title", "content", "tags"?} -> 201 {"post_id"}
    GET  /api/posts?page=&per_page=     newest first
    GET  /api/posts/<id>                400 for a malformed id, 404 if the tenant has no such post
    POST /api/posts/<id>/views          increments and returns the view counter
    GET  /api/stats                     the tenant's post, view and like totals
    GET  /healthz                       liveness, with the serving process id
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from flask import Blueprint, Flask, g, jsonify, request
from pymongo import DESCENDING, ReturnDocument

from tenantpool.flask import TenantPool, require_user_db

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

pool = TenantPool()
blog = Blueprint("blog", __name__)


def _error(status: int, message: str) -> Any:
    return jsonify({"error": message}), status


def _post_json(post: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(post)
    out["_id"] = str(out["_id"])
    for key in ("created_at", "updated_at"):
        value = out.get(key)
        if isinstance(value, datetime):
            # BSON datetimes are UTC but decode without a timezone; say so to the client.
            out[key] = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return out


def _object_id(post_id: str) -> ObjectId | None:
    try:
        return ObjectId(post_id)
    except (InvalidId, TypeError):
        return None


def _positive_arg(name: str, default: int, maximum: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        return None
    return int(raw)


@blog.post("/api/posts")
@require_user_db
def create_post() -> Any:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return _error(400, "send a JSON object with 'title' and 'content'")
    title, content, tags = data.get("title"), data.get("content"), data.get("tags", [])
    if not isinstance(title, str) or not title.strip() or not isinstance(content, str):
        return _error(400, "'title' (non-empty) and 'content' must be strings")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return _error(400, "'tags' must be a list of strings")
    now = datetime.now(timezone.utc)
    # Only known fields are stored: the request body never chooses _id, views or likes.
    post = {
        "title": title,
        "content": content,
        "tags": tags,
        "created_at": now,
        "updated_at": now,
        "views": 0,
        "likes": 0,
    }
    result = g.db.posts.insert_one(post)
    return jsonify({"user_id": g.user_id, "post_id": str(result.inserted_id)}), 201


@blog.get("/api/posts")
@require_user_db
def list_posts() -> Any:
    page = _positive_arg("page", 1, MAX_PAGE)
    per_page = _positive_arg("per_page", 10, MAX_PER_PAGE)
    if page is None or per_page is None:
        return _error(
            400, f"'page' must be an integer from 1 to {MAX_PAGE}, 'per_page' from 1 to {MAX_PER_PAGE}"
        )
    # _id breaks created_at ties, so pages never overlap or skip a post.
    cursor = (
        g.db.posts.find({})
        .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        .skip((page - 1) * per_page)
        .limit(per_page)
    )
    return jsonify(
        {
            "user_id": g.user_id,
            "page": page,
            "per_page": per_page,
            "total": g.db.posts.count_documents({}),
            "posts": [_post_json(p) for p in cursor],
        }
    )


@blog.get("/api/posts/<post_id>")
@require_user_db
def get_post(post_id: str) -> Any:
    oid = _object_id(post_id)
    if oid is None:
        return _error(400, "malformed post id")
    post = g.db.posts.find_one({"_id": oid})
    if post is None:
        return _error(404, "post not found")
    return jsonify({"user_id": g.user_id, "post": _post_json(post)})


@blog.post("/api/posts/<post_id>/views")
@require_user_db
def increment_views(post_id: str) -> Any:
    oid = _object_id(post_id)
    if oid is None:
        return _error(400, "malformed post id")
    post = g.db.posts.find_one_and_update(
        {"_id": oid}, {"$inc": {"views": 1}}, projection={"views": 1}, return_document=ReturnDocument.AFTER
    )
    if post is None:
        return _error(404, "post not found")
    return jsonify({"user_id": g.user_id, "post_id": post_id, "views": post["views"]})


@blog.get("/api/stats")
@require_user_db
def stats() -> Any:
    totals = list(g.db.posts.aggregate(_TOTALS))
    result = totals[0] if totals else {"total_posts": 0, "total_views": 0, "total_likes": 0}
    result.pop("_id", None)
    return jsonify({"user_id": g.user_id, **result})


@blog.get("/healthz")
def healthz() -> Any:
    # The pid shows which worker answered (a multi-worker server's workers each have their own pools).
    return jsonify({"status": "ok", "pid": os.getpid()})


def _from_env() -> dict[str, Any]:
    """TENANTPOOL_URI (or MONGODB_URI), and the tenant-id sources a deployment may switch on."""
    config: dict[str, Any] = {
        "TENANTPOOL_URI": os.environ.get("TENANTPOOL_URI")
        or os.environ.get("MONGODB_URI", "mongodb://localhost:27017/")
    }
    if os.environ.get("TENANTPOOL_JWT_KEY"):
        config["TENANTPOOL_JWT_KEY"] = os.environ["TENANTPOOL_JWT_KEY"]
        config["TENANTPOOL_JWT_ALGORITHMS"] = os.environ.get("TENANTPOOL_JWT_ALGORITHMS", "HS256").split(",")
    if os.environ.get("TENANTPOOL_TRUST_HEADER") == "1":
        config["TENANTPOOL_TRUST_HEADER"] = True
    if os.environ.get("TENANTPOOL_ADMIN_TOKEN"):
        config["TENANTPOOL_ADMIN_ENABLED"] = True
        config["TENANTPOOL_ADMIN_TOKEN"] = os.environ["TENANTPOOL_ADMIN_TOKEN"]
    return config


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The blog app. ``config`` (``TENANTPOOL_*`` keys and any Flask settings) overrides the
    environment."""
    app = Flask(__name__)
    app.config.update(_from_env())
    app.config.update(config or {})
    pool.init_app(app)
    app.register_blueprint(blog)
    return app


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    # !!! DEMO ONLY: the X-User-ID header is trusted, so ANY client can read and write ANY tenant's
    # !!! posts by sending that header. Real deployments verify a token instead:
    # !!! TENANTPOOL_JWT_KEY=... TENANTPOOL_JWT_ALGORITHMS=HS256 (and leave TENANTPOOL_TRUST_HEADER unset).
    create_app({"TENANTPOOL_TRUST_HEADER": True}).run(host="127.0.0.1", port=5000)
