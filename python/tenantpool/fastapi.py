"""FastAPI integration: a per-request tenant database, JSON error statuses, and optional admin endpoints.

    from fastapi import Depends, FastAPI
    from tenantpool.fastapi import TenantPool

    pool = TenantPool("mongodb://localhost:27017/", jwt_key=secret, jwt_algorithms=["HS256"])
    app = FastAPI(lifespan=pool.lifespan)
    pool.init_app(app)

    @app.get("/api/posts")
    async def posts(db=Depends(pool.user_database)):
        return {"posts": await db.posts.find({}, {"_id": 0}).to_list(100)}

Settings are those of the Flask integration (see :mod:`tenantpool.flask`), given as keyword arguments in
lower case (``trust_header=True``) and/or as a ``settings`` mapping whose keys are either those names or
``TENANTPOOL_*`` names; keyword arguments win over the mapping, and ``uri`` over both. Other
``AsyncUserConnectionManager`` arguments (``strategy``, ``tier_pool_sizes``, ``tier_of``, …) go in
``manager_options``. Everything is checked when the ``TenantPool`` is created.

``pool.lifespan`` creates the manager at startup and closes it at shutdown, so every server process
(uvicorn ``--workers``, gunicorn workers) opens its own pools after it starts. To combine it with an
app's own lifespan, enter it from yours::

    @asynccontextmanager
    async def lifespan(app):
        async with pool.lifespan(app):
            ...  # your startup; pool.manager is usable here
            yield

Dependencies: ``pool.user_id`` (the tenant id: a verified JWT, then the trusted header, then the trusted
query parameter, as enabled) and ``pool.user_database`` (that tenant's async database). Both also set
``request.state.user_id``.

``pool.init_app(app)`` installs the exception handlers that give the Flask integration's statuses and
``{"error": message}`` bodies: 400 no or invalid tenant id, 401 bad token (``WWW-Authenticate: Bearer``),
503 database unreachable (``ConnectionFailure``), 500 any other ``PyMongoError``, without server or driver
text (that is logged to ``tenantpool.web``). A handler the app adds for a subclass (``DuplicateKeyError``
-> 409) takes precedence. With ``admin_enabled=True`` it also includes :meth:`TenantPool.admin_router`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pymongo.errors import ConfigurationError, InvalidName, PyMongoError
from starlette.concurrency import run_in_threadpool

from . import AsyncUserConnectionManager, _admin_page
from ._web import (
    PREFIX,
    AdminGuard,
    HTTPProblem,
    TenantResolver,
    database_problem,
    flag,
    manager_kwargs,
    metrics_text,
    read_settings,
)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TenantPoolHTTPException(HTTPException):
    """A request the integration refused. A FastAPI ``HTTPException``, so that without ``init_app`` the
    status and headers are still right (the body is then FastAPI's ``{"detail": ...}``)."""

    def __init__(self, problem: HTTPProblem) -> None:
        super().__init__(problem.status, problem.message, problem.headers or None)
        self.problem = problem


def problem_response(problem: HTTPProblem) -> JSONResponse:
    return JSONResponse(problem.body(), status_code=problem.status, headers=problem.headers or None)


async def _handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TenantPoolHTTPException)
    return problem_response(exc.problem)


async def _handle_database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PyMongoError)
    return problem_response(database_problem(exc))


class TenantPool:
    """Tenant resolution, the tenant's database and admin endpoints for one FastAPI app."""

    def __init__(
        self,
        uri: str | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
        manager_options: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        config: dict[str, Any] = {}
        named: dict[str, Any] = {}
        for key, value in (settings or {}).items():
            (config if isinstance(key, str) and key.startswith(PREFIX) else named)[key] = value
        named.update(overrides)
        if uri is not None:
            named["uri"] = uri
        self.settings = read_settings(config, named)
        kwargs = manager_kwargs(self.settings)
        extra = dict(manager_options or {})
        clash = sorted(set(extra) & set(kwargs))
        if clash:
            raise ConfigurationError(f"set {clash} through the tenantpool settings, not manager_options")
        self._manager_kwargs = {**kwargs, **extra}
        self.resolver = TenantResolver.from_settings(self.settings)
        self.admin_enabled = flag(self.settings, "admin_enabled")
        self._admin: AdminGuard | None = None
        s = self.settings
        if self.admin_enabled or s["admin_token"] is not None or s["admin_auth"] is not None:
            self._admin = AdminGuard.from_settings(s)  # enabled without credentials: an error
        self._manager: AsyncUserConnectionManager | None = None
        self.user_id: Callable[..., Awaitable[str]]
        self.user_database: Callable[..., Awaitable[Any]]
        self.user_id, self.user_database = self._dependencies()

    # -- lifecycle --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Creates the manager, and closes it (awaiting in-flight operations' pools) on exit."""
        if self._manager is not None:
            # Dependencies find the manager through this pool, so two apps cannot share it.
            raise RuntimeError("this TenantPool's lifespan is already running: use one TenantPool per app")
        manager = AsyncUserConnectionManager(**self._manager_kwargs)
        self._manager = manager
        try:
            yield
        finally:
            self._manager = None
            await manager.close()

    @property
    def manager(self) -> AsyncUserConnectionManager:
        """The running app's ``AsyncUserConnectionManager``."""
        manager = self._manager
        if manager is None:
            raise RuntimeError(
                "the TenantPool lifespan is not running: create the app with FastAPI(lifespan=pool.lifespan) "
                "or enter pool.lifespan(app) from the app's own lifespan"
            )
        return manager

    def init_app(self, app: FastAPI) -> None:
        """Installs the JSON error handlers and, if ``admin_enabled``, the admin router."""
        if app.exception_handlers.get(TenantPoolHTTPException) is _handle_problem:
            raise RuntimeError("tenantpool is already set up on this app")
        app.add_exception_handler(TenantPoolHTTPException, _handle_problem)
        # Don't replace a handler the app already has for PyMongoError.
        if PyMongoError not in app.exception_handlers:
            app.add_exception_handler(PyMongoError, _handle_database_error)
        if self.admin_enabled:
            app.include_router(self.admin_router())

    # -- dependencies -----------------------------------------------------------------------------------

    def _dependencies(self) -> tuple[Callable[..., Awaitable[str]], Callable[..., Awaitable[Any]]]:
        resolver = self.resolver
        # A callable key may fetch keys over the network (a JWKS client does, synchronously): keep it
        # off the event loop. A static key only costs a signature check.
        blocking = callable(resolver.jwt_key)

        async def user_id(request: Request) -> str:
            try:
                if blocking:
                    tenant = await run_in_threadpool(resolver.resolve, request.headers, request.query_params)
                else:
                    tenant = resolver.resolve(request.headers, request.query_params)
            except HTTPProblem as problem:
                raise TenantPoolHTTPException(problem) from None
            request.state.user_id = tenant
            return tenant

        # FastAPI caches a dependency per request, so a route that also asks for pool.user_id gets the
        # same value without decoding the token twice.
        async def user_database(tenant: str = Depends(user_id)) -> Any:
            try:
                return self.manager.get_database(tenant)
            except PyMongoError as exc:  # an invalid tenant id: 400, whether or not init_app ran
                raise TenantPoolHTTPException(database_problem(exc)) from None

        return user_id, user_database

    # -- admin ------------------------------------------------------------------------------------------

    def admin_router(self, prefix: str | None = None, metrics_path: str | None = None) -> APIRouter:
        """``GET {prefix}/connections``, ``DELETE {prefix}/connections/{user_id}``, ``GET
        {metrics_path}`` (defaults: the ``admin_url_prefix`` and ``metrics_path`` settings) and the HTML
        page ``GET {prefix}/dashboard``, each refused (401/403) without the admin credentials (the page
        also takes the token as a Basic password, which a browser can send). Raises
        ``ConfigurationError`` if there are none."""
        guard = self._admin or AdminGuard.from_settings(self.settings)
        prefix = self.settings["admin_url_prefix"] if prefix is None else prefix
        metrics_path = self.settings["metrics_path"] if metrics_path is None else metrics_path

        # Sync on purpose: FastAPI runs it in a worker thread, so an admin_auth callable that does I/O
        # does not block the event loop.
        def check_admin(request: Request) -> None:
            try:
                guard.check(request.headers.get("Authorization"), request)
            except HTTPProblem as problem:
                raise TenantPoolHTTPException(problem) from None

        def check_page(request: Request) -> None:
            try:
                guard.check(request.headers.get("Authorization"), request, basic=True)
            except HTTPProblem as problem:
                raise TenantPoolHTTPException(problem) from None

        # Not in the OpenAPI schema: no need to advertise the admin surface to API clients.
        outer = APIRouter(include_in_schema=False)
        router = APIRouter(dependencies=[Depends(check_admin)], include_in_schema=False)
        page = APIRouter(dependencies=[Depends(check_page)], include_in_schema=False)

        @page.get(f"{prefix}/dashboard")
        async def dashboard(request: Request) -> Response:
            options = _admin_page.page_options(request.query_params)
            snap = _admin_page.snapshot(self.manager, options["top"])
            return Response(
                _admin_page.render_page(snap, options["refresh"]),
                media_type=_admin_page.CONTENT_TYPE,
                headers=_admin_page.PAGE_HEADERS,
            )

        @router.get(f"{prefix}/connections")
        async def connections() -> dict[str, Any]:
            # Per process: under several workers each reports its own pools, hence the pid.
            manager = self.manager
            return {**manager.get_stats(), "tiers": manager.get_tier_stats(), "pid": os.getpid()}

        @router.delete(f"{prefix}/connections/{{user_id}}")
        async def close_connection(user_id: str) -> Response:
            try:
                closed = self.manager.close_user_connection(user_id)
            except InvalidName as exc:
                return problem_response(HTTPProblem(400, str(exc)))
            if closed:
                return JSONResponse({"closed": user_id})
            return problem_response(HTTPProblem(404, f"no open pool for tenant {user_id!r} in this process"))

        @router.get(metrics_path)
        async def metrics() -> Response:
            return Response(metrics_text(self.manager), media_type=METRICS_CONTENT_TYPE)

        outer.include_router(router)
        outer.include_router(page)
        return outer


__all__ = ["TenantPool", "TenantPoolHTTPException", "problem_response"]
