"""The design document's multi-tenant SaaS platform (section 7.2) as a FastAPI app on tenantpool.fastapi:
each company has its own database, and its plan decides its share of connections (free 3, basic 5,
premium 10, enterprise 20 operations in flight).

    MONGODB_URI=mongodb://127.0.0.1:27017/ uvicorn examples.saas_fastapi:app --port 8000
    curl -H 'X-Company-ID: acme' -H 'Content-Type: application/json' \\
         -d '{"name": "ACME", "plan": "premium"}' http://127.0.0.1:8000/api/onboard
    curl -H 'X-Company-ID: acme' -H 'Content-Type: application/json' \\
         -d '{"email": "alice@acme.test", "name": "Alice", "role": "admin"}' http://127.0.0.1:8000/api/users
    curl -H 'X-Company-ID: acme' http://127.0.0.1:8000/api/analytics

``app`` is the demo app, which trusts the X-Company-ID header. For a deployment use the factory,
configured from ``TENANTPOOL_*`` environment variables (see ``settings_from_env``), e.g.
``TENANTPOOL_JWT_KEY=... uvicorn --factory examples.saas_fastapi:create_app``.

Where plans live: the document stores a company's plan in the company's own ``_metadata`` collection.
Here it lives in a platform catalog (database ``saas_platform``, reached as the reserved tenant
``_platform``), because the plan decides the size of the pool that reads the company's database, so it
must be known before that pool opens. ``tier_of`` is a plain callback (the manager calls it when it opens
a company's pool), so it reads an in-process copy of the catalog that the request dependency fills
first, and refreshes every ``PLAN_TTL`` seconds so that other workers pick up plan changes.

Endpoints (all but /healthz need the X-Company-ID header; all but /api/onboard need an onboarded company,
else 404). Errors are ``{"error": message}``; a body of the wrong shape is FastAPI's 422.
    POST   /api/onboard                 {"name", "plan"} -> 201; creates collections and indexes; 409 if done
    GET    /api/company                 name, plan, status, pool size
    PUT    /api/company/plan            {"plan"}: the company's pool reopens with the new plan's size
    DELETE /api/company                 offboarding: drops the company's database and catalog entry
    POST   /api/users                   {"email", "name", "role"} -> 201; 409 if the email exists
    GET    /api/users
    POST   /api/projects                {"name", "description"?} -> 201
    GET    /api/projects
    POST   /api/projects/{id}/tasks     {"title", "status"?} -> 201; 404 if the company has no such project
    PATCH  /api/tasks/{id}              {"status"}
    GET    /api/analytics               users, projects and tasks by status (aggregations)
    GET    /healthz                     liveness, with the serving process id
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime, and the
# Annotated aliases below are local to saas_router.
import asyncio
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional

from bson import ObjectId
from bson.errors import InvalidId
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, OperationFailure
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenantpool import DEFAULT_TIER_POOL_SIZES
from tenantpool.fastapi import TenantPool

Plan = Literal["free", "basic", "premium", "enterprise"]
PLAN_POOL_SIZES = dict(DEFAULT_TIER_POOL_SIZES)  # the document's tiers, one per plan
TaskStatus = Literal["open", "in_progress", "completed"]
Role = Literal["admin", "member", "viewer"]

CATALOG_TENANT = "_platform"
CATALOG_DB = "saas_platform"
# Every company's first request in a while reads the catalog: it gets a larger share than any company.
TIER_POOL_SIZES = {**PLAN_POOL_SIZES, "platform": 50}
PLAN_TTL = 60.0
# The platform's own rule for company ids (tenantpool accepts more): lower-case slugs, and never the
# catalog's reserved id, which starts with "_".
COMPANY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
NAMESPACE_EXISTS = 48
LIST_LIMIT = 100

COLLECTIONS = ("users", "projects", "tasks")
INDEXES: list[tuple[str, list[tuple[str, int]], bool]] = [
    ("users", [("email", ASCENDING)], True),
    ("projects", [("name", ASCENDING)], False),
    ("tasks", [("project_id", ASCENDING), ("status", ASCENDING)], False),
]


class Onboarding(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    plan: Plan = "basic"


class PlanChange(BaseModel):
    plan: Plan


class NewUser(BaseModel):
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str = Field(min_length=1, max_length=200)
    role: Role = "member"


class NewProject(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""


class NewTask(BaseModel):
    title: str = Field(min_length=1, max_length=500)
    status: TaskStatus = "open"


class TaskUpdate(BaseModel):
    status: TaskStatus


class PlanCache:
    """company id -> (plan, fresh until): what ``tier_of`` reads when the manager opens a pool."""

    def __init__(self, ttl: float = PLAN_TTL) -> None:
        self.ttl = ttl
        self._plans: dict[str, tuple[str, float]] = {}

    def tier_of(self, company_id: str) -> Optional[str]:
        if company_id == CATALOG_TENANT:
            return "platform"
        # None (a company not looked up yet) means the default pool size.
        entry = self._plans.get(company_id)
        return entry[0] if entry else None

    def fresh(self, company_id: str) -> Optional[str]:
        entry = self._plans.get(company_id)
        return entry[0] if entry and entry[1] > time.monotonic() else None

    def set(self, company_id: str, plan: str) -> None:
        self._plans[company_id] = (plan, time.monotonic() + self.ttl)

    def drop(self, company_id: str) -> None:
        self._plans.pop(company_id, None)


@dataclass
class Company:
    id: str
    plan: str
    db: Any


def now() -> datetime:
    return datetime.now(timezone.utc)


def oid(value: str) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise HTTPException(400, "malformed id") from None


def out(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as JSON: ids as strings, datetimes as UTC ISO 8601."""
    result: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, ObjectId):
            value = str(value)
        elif isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
        result[key] = value
    return result


def saas_router(pool: TenantPool, plans: PlanCache) -> APIRouter:
    router = APIRouter()

    def catalog() -> Any:
        return pool.manager.get_database(CATALOG_TENANT, CATALOG_DB).companies

    async def company_id(tenant: Annotated[str, Depends(pool.user_id)]) -> str:
        if not COMPANY_ID.fullmatch(tenant):
            raise HTTPException(400, "company ids are 1-40 lower-case letters, digits, '_' or '-'")
        return tenant

    async def company(cid: Annotated[str, Depends(company_id)]) -> Company:
        plan = plans.fresh(cid)
        if plan is None:
            entry = await catalog().find_one({"_id": cid, "status": "active"}, {"plan": 1})
            if entry is None:
                plans.drop(cid)
                raise HTTPException(404, "company not onboarded: POST /api/onboard first")
            plan, previous = entry["plan"], plans.tier_of(cid)
            plans.set(cid, plan)
            if previous is not None and previous != plan:
                # Changed by another worker: reopen this worker's pool with the new plan's size.
                pool.manager.close_user_connection(cid)
        # Opens the company's pool on first use; tier_of now knows the plan.
        return Company(cid, plan, pool.manager.get_database(cid))

    CompanyId = Annotated[str, Depends(company_id)]
    Tenant = Annotated[Company, Depends(company)]

    @router.post("/api/onboard", status_code=201)
    async def onboard(body: Onboarding, cid: CompanyId) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "_id": cid,
            "name": body.name,
            "plan": body.plan,
            "status": "onboarding",
            "created_at": now(),
        }
        try:
            await catalog().insert_one(entry)
        except DuplicateKeyError:
            existing = await catalog().find_one({"_id": cid})
            if existing is None or existing["status"] == "active":
                raise HTTPException(409, "company already onboarded") from None
            entry = existing  # an onboarding that failed half-way: finish it, with its recorded plan
        plan = entry["plan"]
        plans.set(cid, plan)  # before the pool opens, so it opens with the plan's size
        db = pool.manager.get_database(cid)
        await asyncio.gather(*(_create_collection(db, name) for name in COLLECTIONS))
        await asyncio.gather(*(db[c].create_index(keys, unique=unique) for c, keys, unique in INDEXES))
        await catalog().update_one({"_id": cid}, {"$set": {"status": "active", "onboarded_at": now()}})
        return {"company_id": cid, "plan": plan, "pool_size": PLAN_POOL_SIZES[plan]}

    @router.get("/api/company")
    async def get_company(c: Tenant) -> dict[str, Any]:
        entry = await catalog().find_one({"_id": c.id})
        if entry is None:  # offboarded by another request since the dependency ran
            raise HTTPException(404, "company not onboarded")
        return {**out(entry), "pool_size": PLAN_POOL_SIZES[entry["plan"]]}

    @router.put("/api/company/plan")
    async def change_plan(body: PlanChange, c: Tenant) -> dict[str, Any]:
        await catalog().update_one({"_id": c.id}, {"$set": {"plan": body.plan}})
        plans.set(c.id, body.plan)
        # The pool's size is fixed when it opens: close it (after its in-flight operations) so the next
        # request opens one with the new size.
        pool.manager.close_user_connection(c.id)
        return {"company_id": c.id, "plan": body.plan, "pool_size": PLAN_POOL_SIZES[body.plan]}

    @router.delete("/api/company")
    async def offboard(c: Tenant) -> dict[str, Any]:
        await catalog().update_one({"_id": c.id}, {"$set": {"status": "offboarding"}})
        await c.db.command("dropDatabase")
        await catalog().delete_one({"_id": c.id})
        plans.drop(c.id)
        pool.manager.close_user_connection(c.id)
        return {"deleted": c.id}

    @router.post("/api/users", status_code=201)
    async def add_user(body: NewUser, c: Tenant) -> dict[str, Any]:
        # Lower-cased so that the unique index also catches Alice@x.test vs alice@x.test.
        user = {**body.model_dump(), "email": body.email.lower(), "created_at": now()}
        try:
            result = await c.db.users.insert_one(user)
        except DuplicateKeyError:
            raise HTTPException(409, "a user with this email already exists") from None
        return {"company_id": c.id, "user_id": str(result.inserted_id)}

    @router.get("/api/users")
    async def list_users(c: Tenant) -> dict[str, Any]:
        cursor = c.db.users.find({}).sort("email", ASCENDING).limit(LIST_LIMIT)
        return {"company_id": c.id, "users": [out(u) async for u in cursor]}

    @router.post("/api/projects", status_code=201)
    async def create_project(body: NewProject, c: Tenant) -> dict[str, Any]:
        project = {**body.model_dump(), "status": "active", "created_at": now()}
        result = await c.db.projects.insert_one(project)
        return {"company_id": c.id, "project_id": str(result.inserted_id)}

    @router.get("/api/projects")
    async def list_projects(c: Tenant) -> dict[str, Any]:
        cursor = c.db.projects.find({}).sort("name", ASCENDING).limit(LIST_LIMIT)
        return {"company_id": c.id, "projects": [out(p) async for p in cursor]}

    @router.post("/api/projects/{project_id}/tasks", status_code=201)
    async def create_task(project_id: str, body: NewTask, c: Tenant) -> dict[str, Any]:
        # Looked up in this company's database only: another company's project id is simply not there.
        if await c.db.projects.find_one({"_id": oid(project_id)}, {"_id": 1}) is None:
            raise HTTPException(404, "project not found")
        task = {**body.model_dump(), "project_id": oid(project_id), "created_at": now()}
        result = await c.db.tasks.insert_one(task)
        return {"company_id": c.id, "task_id": str(result.inserted_id)}

    @router.patch("/api/tasks/{task_id}")
    async def update_task(task_id: str, body: TaskUpdate, c: Tenant) -> dict[str, Any]:
        result = await c.db.tasks.update_one({"_id": oid(task_id)}, {"$set": {"status": body.status}})
        if result.matched_count == 0:
            raise HTTPException(404, "task not found")
        return {"company_id": c.id, "task_id": task_id, "status": body.status}

    @router.get("/api/analytics")
    async def analytics(c: Tenant) -> dict[str, Any]:
        by_status = [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        users, projects, tasks = await asyncio.gather(
            c.db.users.count_documents({}),
            _counts(c.db.projects, by_status),
            _counts(c.db.tasks, by_status),
        )
        return {
            "company_id": c.id,
            "plan": c.plan,
            "total_users": users,
            "total_projects": sum(projects.values()),
            "active_projects": projects.get("active", 0),
            "total_tasks": sum(tasks.values()),
            "completed_tasks": tasks.get("completed", 0),
            "tasks_by_status": tasks,
        }

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid()}

    return router


async def _create_collection(db: Any, name: str) -> None:
    try:
        await db.command({"create": name})
    except OperationFailure as exc:
        if exc.code != NAMESPACE_EXISTS:  # exists: a resumed onboarding
            raise


async def _counts(collection: Any, pipeline: list[dict[str, Any]]) -> dict[str, int]:
    rows = await (await collection.aggregate(pipeline)).to_list(None)
    return {str(row["_id"]): row["n"] for row in rows}


async def _json_error(request: Request, exc: Exception) -> JSONResponse:
    # The app's own HTTP errors in the integration's {"error": message} shape.
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def settings_from_env() -> dict[str, Any]:
    """TENANTPOOL_URI (or MONGODB_URI), and the tenant-id sources a deployment may switch on."""
    settings: dict[str, Any] = {
        "uri": os.environ.get("TENANTPOOL_URI")
        or os.environ.get("MONGODB_URI", "mongodb://localhost:27017/"),
        "header_name": "X-Company-ID",
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


def catalog_databases(user_id: str) -> set[str]:
    """The isolation scope's one widening: the catalog's reserved tenant may use the catalog database;
    every company reaches only its own database."""
    return {CATALOG_DB} if user_id == CATALOG_TENANT else set()


def create_app(settings: Optional[Mapping[str, Any]] = None, strategy: Optional[str] = None) -> FastAPI:
    """The SaaS app; ``settings`` (tenantpool settings) override the environment, ``strategy``
    (default ``$SAAS_STRATEGY``, else ``per_user``) is the manager's."""
    plans = PlanCache()
    pool = TenantPool(
        settings={**settings_from_env(), **(settings or {})},
        manager_options={
            "strategy": strategy or os.environ.get("SAAS_STRATEGY", "per_user"),
            "tier_pool_sizes": TIER_POOL_SIZES,
            "tier_of": plans.tier_of,
            "tenant_databases": catalog_databases,
        },
    )
    app = FastAPI(title="tenantpool SaaS", lifespan=pool.lifespan)
    app.state.tenantpool = pool
    app.state.plans = plans
    pool.init_app(app)
    app.add_exception_handler(StarletteHTTPException, _json_error)
    app.include_router(saas_router(pool, plans))
    return app


# !!! DEMO ONLY: this app trusts the X-Company-ID header, so ANY client can read, change and DELETE ANY
# !!! company's data by sending that header. Deployments use the factory with a verified token instead:
# !!! TENANTPOOL_JWT_KEY=... uvicorn --factory examples.saas_fastapi:create_app
app = create_app({"trust_header": True})
