"""Flask integration: a per-request tenant database, JSON error statuses, and optional admin endpoints.

    from tenantpool.flask import TenantPool, require_user_db

    app.config.update(TENANTPOOL_URI="mongodb://localhost:27017/",
                      TENANTPOOL_JWT_KEY=secret, TENANTPOOL_JWT_ALGORITHMS=["HS256"])
    pool = TenantPool(app)

    @app.get("/api/posts")
    @require_user_db
    def posts():
        return {"posts": g.db.posts.find({}, {"_id": 0}).to_list()}

Settings are ``TENANTPOOL_*`` keys of ``app.config``; keyword arguments of ``TenantPool`` (the same
names in lower case, e.g. ``trust_header=True``) take precedence over them:

``URI`` (required), ``USER_POOL_SIZE``, ``IDLE_TIMEOUT``, ``MAX_CONNECTIONS``, ``MAX_SERVER_CONNECTIONS``,
``DB_NAME_TEMPLATE``, ``MONGO_OPTIONS`` (dict): the ``UserConnectionManager`` arguments.

Tenant-id sources, tried in this order; at least one must be enabled:

* ``JWT_KEY`` + ``JWT_ALGORITHMS`` (e.g. ``["HS256"]``), optional ``JWT_AUDIENCE``, ``JWT_ISSUER``,
  ``JWT_CLAIM`` (default ``"sub"``), ``JWT_LEEWAY``, ``JWT_REQUIRE_EXP`` (default True): a verified
  ``Authorization: Bearer`` token. ``JWT_KEY`` may be a callable(token) -> key, e.g. for a JWKS client.
* ``TRUST_HEADER`` (``HEADER_NAME``, default ``X-User-ID``) and ``TRUST_QUERY`` (``QUERY_PARAM``,
  default ``user_id``). **Anyone can send any header or parameter: trusting them lets any client
  claim any tenant.** Enable them only behind a gateway that sets them, or for demos.

Statuses: no tenant id 400; bad, expired or wrong-audience token 401 (``WWW-Authenticate: Bearer``);
invalid tenant id (``InvalidName``) 400; database unreachable (``ConnectionFailure``) 503; any other
``PyMongoError`` 500. Bodies are ``{"error": message}`` and never carry server or driver text for 500
and 503 (that is logged). Database errors raised by any view map the same way, through an app error
handler for ``PyMongoError``; a handler you register for a subclass (say ``DuplicateKeyError`` -> 409)
takes precedence.

Admin endpoints (``ADMIN_ENABLED``, or register ``pool.admin_blueprint()`` yourself):
``GET <ADMIN_URL_PREFIX>/connections``, ``DELETE <ADMIN_URL_PREFIX>/connections/<user_id>`` and
``GET <METRICS_PATH>``, guarded by ``ADMIN_TOKEN`` (``Authorization: Bearer <token>``) and/or an
``ADMIN_AUTH`` callable(request) -> bool. ``GET <ADMIN_URL_PREFIX>/dashboard`` is an HTML page of the
same statistics that refreshes itself (``?refresh=<seconds>&top=<tenants>``); a browser opens it with
any user name and the admin token as password. They report and act on the worker process that serves the
request: under a multi-process server each worker has its own pools.

The manager is created on first use in each process, so an app imported by a pre-forking server
(gunicorn ``--preload``) never shares a manager, or its sockets, between processes; it is closed at
interpreter exit, or by ``pool.close()``.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from pymongo.errors import InvalidName, PyMongoError
from werkzeug.exceptions import default_exceptions

from . import _admin_page
from ._web import (
    AdminGuard,
    HTTPProblem,
    TenantResolver,
    database_problem,
    flag,
    manager_kwargs,
    metrics_text,
    read_settings,
)
from .manager import UserConnectionManager

EXTENSION_KEY = "tenantpool"

F = TypeVar("F", bound=Callable[..., Any])


def _response(problem: HTTPProblem) -> Response:
    response = jsonify(problem.body())
    response.status_code = problem.status
    response.headers.update(problem.headers)
    return response


def _abort(problem: HTTPProblem) -> Exception:
    # A Werkzeug HTTPException carrying our JSON response: the app's own errorhandler(400) etc. still
    # gets the first say, and without one the JSON is sent as is.
    return default_exceptions[problem.status](description=problem.message, response=_response(problem))


def _handle_database_error(exc: PyMongoError) -> Response:
    return _response(database_problem(exc))


class _AppState:
    """One app's settings and its manager in the current process."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.manager_kwargs = manager_kwargs(settings)
        self.resolver = TenantResolver.from_settings(settings)
        self.admin_enabled = flag(settings, "admin_enabled")
        self.admin: AdminGuard | None = None
        if self.admin_enabled or settings["admin_token"] is not None or settings["admin_auth"] is not None:
            self.admin = AdminGuard.from_settings(settings)  # enabled without credentials: an error
        self._manager: UserConnectionManager | None = None
        self._pid = 0
        # A manager inherited through fork is never closed or freed in the child: its sockets and
        # background tasks belong to the parent.
        self._inherited: list[UserConnectionManager] = []
        self._lock = threading.Lock()
        ref: weakref.ref[_AppState] = weakref.ref(self)
        # A lock held by another thread at fork time would stay locked forever in the child.
        os.register_at_fork(after_in_child=lambda: _reset_lock(ref))
        atexit.register(_close_at_exit, ref)

    @property
    def manager(self) -> UserConnectionManager:
        pid = os.getpid()
        manager = self._manager
        if manager is not None and self._pid == pid:
            return manager
        with self._lock:
            if self._manager is not None and self._pid != pid:
                self._inherited.append(self._manager)
                self._manager = None
            if self._manager is None:
                self._manager = UserConnectionManager(**self.manager_kwargs)
                self._pid = pid
            return self._manager

    def close(self) -> None:
        with self._lock:
            if self._manager is not None and self._pid == os.getpid():
                self._manager.close()
                self._manager = None

    def database(self) -> Any:
        user_id = self.resolver.resolve(request.headers, request.args)
        g.user_id = user_id
        g.db = self.manager.get_database(user_id)
        return g.db


def _reset_lock(ref: weakref.ref[_AppState]) -> None:
    state = ref()
    if state is not None:
        state._lock = threading.Lock()


def _close_at_exit(ref: weakref.ref[_AppState]) -> None:
    state = ref()
    if state is not None:
        state.close()


def _state(app: Flask) -> _AppState:
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError(
            "tenantpool is not set up on this app: call TenantPool(app) or pool.init_app(app) first"
        )
    return cast(_AppState, state)


def require_user_db(view: F) -> F:
    """Sets ``g.user_id`` and ``g.db`` (the tenant's database) before the view runs, or answers
    400/401/503 itself. Uses the app's ``TenantPool``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _state(current_app).database()
        except HTTPProblem as problem:
            raise _abort(problem) from None
        return view(*args, **kwargs)

    return cast(F, wrapper)


class TenantPool:
    """The Flask extension: ``TenantPool(app)``, or ``pool = TenantPool()`` then ``pool.init_app(app)``
    in an app factory. One instance may serve several apps; each gets its own manager."""

    def __init__(self, app: Flask | None = None, **overrides: Any) -> None:
        read_settings({}, overrides)  # unknown names fail here, not at init_app
        self._overrides = overrides
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("tenantpool is already set up on this app")
        state = _AppState(read_settings(app.config, self._overrides))
        app.extensions[EXTENSION_KEY] = state
        # Don't replace a handler the app already has for PyMongoError.
        if PyMongoError not in app.error_handler_spec[None][None]:
            app.register_error_handler(PyMongoError, _handle_database_error)
        if state.admin_enabled:
            app.register_blueprint(
                self.admin_blueprint(state.settings["admin_url_prefix"], state.settings["metrics_path"])
            )

    @property
    def manager(self) -> UserConnectionManager:
        """The current app's manager in this process (needs an app context)."""
        return _state(current_app).manager

    def close(self, app: Flask | None = None) -> None:
        """Closes the app's manager in this process; a later request opens a new one."""
        _state(app or current_app).close()

    def require_user_db(self, view: F) -> F:
        return require_user_db(view)

    def admin_blueprint(self, url_prefix: str = "/admin", metrics_path: str = "/metrics") -> Blueprint:
        """``GET {url_prefix}/connections``, ``DELETE {url_prefix}/connections/<user_id>``,
        ``GET {metrics_path}`` and the HTML page ``GET {url_prefix}/dashboard``, each refused (401/403)
        without the admin credentials (the page also takes the token as a Basic password)."""
        bp = Blueprint("tenantpool_admin", __name__)

        @bp.record_once
        def _check(setup: BlueprintSetupState) -> None:
            state = _state(cast(Flask, setup.app))
            if state.admin is None:
                AdminGuard.from_settings(state.settings)  # raises the configuration error

        @bp.before_request
        def _guard() -> None:
            admin = _state(current_app).admin
            if admin is None:  # fail closed, whatever happened at registration
                raise _abort(HTTPProblem(403, "forbidden"))
            try:
                page = request.endpoint == f"{request.blueprint}.dashboard"
                admin.check(request.headers.get("Authorization"), request, basic=page)
            except HTTPProblem as problem:
                raise _abort(problem) from None

        @bp.get(f"{url_prefix}/connections")
        def connections() -> Any:
            return jsonify({**_state(current_app).manager.get_stats(), "pid": os.getpid()})

        @bp.delete(f"{url_prefix}/connections/<user_id>")
        def close_connection(user_id: str) -> Any:
            try:
                closed = _state(current_app).manager.close_user_connection(user_id)
            except InvalidName as exc:
                return _response(HTTPProblem(400, str(exc)))
            if closed:
                return jsonify({"closed": user_id})
            return _response(HTTPProblem(404, f"no open pool for tenant {user_id!r} in this process"))

        @bp.get(f"{url_prefix}/dashboard")
        def dashboard() -> Response:
            options = _admin_page.page_options(request.args)
            snap = _admin_page.snapshot(_state(current_app).manager, options["top"])
            return Response(
                _admin_page.render_page(snap, options["refresh"]),
                content_type=_admin_page.CONTENT_TYPE,
                headers=_admin_page.PAGE_HEADERS,
            )

        @bp.get(metrics_path)
        def metrics() -> Response:
            return Response(
                metrics_text(_state(current_app).manager),
                content_type="text/plain; version=0.0.4; charset=utf-8",
            )

        return bp


__all__ = ["EXTENSION_KEY", "TenantPool", "require_user_db"]
