"""What the Flask and FastAPI integrations share, with no web framework imported: settings, tenant-id
resolution, admin authorisation, database-error statuses and the fallback Prometheus exposition.

Nothing here imports a web framework: callers pass header and query lookups (anything with
``.get(name)``) and turn :class:`HTTPProblem` into their framework's response.
"""

from __future__ import annotations

import base64
import difflib
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from pymongo.errors import ConfigurationError, ConnectionFailure, InvalidName, PyMongoError

logger = logging.getLogger("tenantpool.web")

PREFIX = "TENANTPOOL_"

# Every setting, by its lower-case name (``TENANTPOOL_`` + upper-case name in a config mapping).
DEFAULTS: dict[str, Any] = {
    "uri": None,
    "user_pool_size": 10,
    "idle_timeout": 3600,
    "max_connections": None,
    "max_server_connections": None,
    "db_name_template": "user_{user_id}_db",
    "mongo_options": None,
    "jwt_key": None,
    "jwt_algorithms": None,
    "jwt_audience": None,
    "jwt_issuer": None,
    "jwt_claim": "sub",
    "jwt_leeway": 0,
    "jwt_require_exp": True,
    "trust_header": False,
    "header_name": "X-User-ID",
    "trust_query": False,
    "query_param": "user_id",
    "admin_enabled": False,
    "admin_token": None,
    "admin_auth": None,
    "admin_url_prefix": "/admin",
    "metrics_path": "/metrics",
}


def read_settings(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``DEFAULTS``, then ``TENANTPOOL_*`` keys of ``config``, then ``overrides`` (lower-case names).

    Unknown names are errors: a misspelt security setting must not be silently ignored.
    """
    settings = dict(DEFAULTS)
    for key, value in config.items():
        if isinstance(key, str) and key.startswith(PREFIX):
            settings[_known(key[len(PREFIX) :].lower(), key)] = value
    for key, value in overrides.items():
        settings[_known(key, key)] = value
    return settings


def _known(name: str, shown: str) -> str:
    if name not in DEFAULTS:
        close = difflib.get_close_matches(name, DEFAULTS, n=1)
        hint = f"; did you mean {close[0]!r} (TENANTPOOL_{close[0].upper()})?" if close else ""
        raise ConfigurationError(f"unknown tenantpool setting {shown!r}{hint}")
    return name


def manager_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``UserConnectionManager`` arguments; checks what can be checked without connecting."""
    uri = settings["uri"]
    if not isinstance(uri, str) or not uri:
        raise ConfigurationError("TENANTPOOL_URI (the MongoDB connection string) must be set")
    options = settings["mongo_options"] or {}
    if not isinstance(options, Mapping):
        raise ConfigurationError("TENANTPOOL_MONGO_OPTIONS must be a dict of MongoClient options")
    return {
        "connection_string": uri,
        "user_pool_size": settings["user_pool_size"],
        "idle_timeout": settings["idle_timeout"],
        "max_connections": settings["max_connections"],
        "max_server_connections": settings["max_server_connections"],
        "db_name_template": settings["db_name_template"],
        **options,
    }


class HTTPProblem(Exception):
    """A request the integration refuses: the status, a message safe to show the client, and headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.message}


def _unauthorized(message: str, error: str | None = None) -> HTTPProblem:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPProblem(401, message, {"WWW-Authenticate": challenge})


class Lookup(Protocol):
    """Headers or query parameters: Werkzeug's and Starlette's both fit."""

    def get(self, key: str, /) -> Any: ...


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def basic_password(authorization: str | None) -> str | None:
    """The password of an ``Authorization: Basic`` header, else None (also when it is malformed)."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def flag(settings: Mapping[str, Any], name: str) -> bool:
    value = settings[name]
    # Config often comes from the environment, where "false" is a truthy string.
    if not isinstance(value, bool):
        raise ConfigurationError(f"TENANTPOOL_{name.upper()} must be True or False, got {value!r}")
    return value


_HMAC_FAMILY = "HS"


@dataclass(frozen=True)
class TenantResolver:
    """Finds the tenant id of a request from the enabled sources, in order: a verified JWT bearer token,
    the ``X-User-ID`` header, the ``user_id`` query parameter. Nothing is enabled by default.

    Trusting the header or the query parameter lets any client claim any tenant: enable them only
    behind a gateway that sets them, or for demos. A bearer token, when JWT is enabled and the request
    carries one, must verify; a bad token is never passed over in favour of the header.
    """

    jwt_key: Any = field(default=None, repr=False)  # secrets stay out of logs
    jwt_algorithms: tuple[str, ...] = ()
    jwt_audience: str | Sequence[str] | None = None
    jwt_issuer: str | Sequence[str] | None = None
    jwt_claim: str = "sub"
    jwt_leeway: float = 0
    jwt_require_exp: bool = True
    trust_header: bool = False
    header_name: str = "X-User-ID"
    trust_query: bool = False
    query_param: str = "user_id"
    _sources: tuple[str, ...] = field(init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TenantResolver:
        algorithms = settings["jwt_algorithms"]
        if isinstance(algorithms, str):
            algorithms = [algorithms]
        return cls(
            jwt_key=settings["jwt_key"],
            jwt_algorithms=tuple(algorithms or ()),
            jwt_audience=settings["jwt_audience"],
            jwt_issuer=settings["jwt_issuer"],
            jwt_claim=settings["jwt_claim"],
            jwt_leeway=settings["jwt_leeway"],
            jwt_require_exp=flag(settings, "jwt_require_exp"),
            trust_header=flag(settings, "trust_header"),
            header_name=settings["header_name"],
            trust_query=flag(settings, "trust_query"),
            query_param=settings["query_param"],
        )

    def __post_init__(self) -> None:
        unverified = []
        if self.trust_header:
            unverified.append(f"the {self.header_name} header")
        if self.trust_query:
            unverified.append(f"the {self.query_param!r} query parameter")
        sources = list(unverified)
        if self.jwt_key is not None:
            self._check_jwt()
            sources.insert(0, "a bearer token")
        elif self.jwt_algorithms:
            raise ConfigurationError("TENANTPOOL_JWT_ALGORITHMS is set but TENANTPOOL_JWT_KEY is not")
        if not sources:
            raise ConfigurationError(
                "no tenant-id source is enabled: set TENANTPOOL_JWT_KEY and TENANTPOOL_JWT_ALGORITHMS, "
                "or (only behind a trusted gateway, or for demos) TENANTPOOL_TRUST_HEADER or "
                "TENANTPOOL_TRUST_QUERY"
            )
        if unverified:
            logger.warning(
                "tenant ids are taken from %s without verification: any client can claim any tenant",
                " and ".join(unverified),
            )
        object.__setattr__(self, "_sources", tuple(sources))

    def _check_jwt(self) -> None:
        try:
            import jwt  # noqa: F401
        except ImportError:
            raise ConfigurationError("JWT tenant resolution needs PyJWT: pip install pyjwt") from None
        if not self.jwt_algorithms:
            raise ConfigurationError('TENANTPOOL_JWT_ALGORITHMS is required with a JWT key, e.g. ["HS256"]')
        if any(not isinstance(a, str) or a.lower() == "none" for a in self.jwt_algorithms):
            raise ConfigurationError(
                f"TENANTPOOL_JWT_ALGORITHMS must name signing algorithms, got {list(self.jwt_algorithms)!r}"
            )
        # One key read as an HMAC secret by HS* and as a public key by the others is the classic
        # algorithm-confusion forgery.
        if len({a.startswith(_HMAC_FAMILY) for a in self.jwt_algorithms}) > 1:
            raise ConfigurationError(
                "TENANTPOOL_JWT_ALGORITHMS must not mix HMAC (HS*) and public-key algorithms"
            )
        if not isinstance(self.jwt_claim, str) or not self.jwt_claim:
            raise ConfigurationError("TENANTPOOL_JWT_CLAIM must be a claim name")

    @property
    def sources(self) -> tuple[str, ...]:
        return self._sources

    def resolve(self, headers: Lookup, query: Lookup) -> str:
        """The tenant id, or raises :class:`HTTPProblem` (400 none found, 401 bad token).

        The id is not validated here: the manager rejects invalid ids with ``InvalidName``.
        """
        if self.jwt_key is not None:
            token = bearer_token(headers.get("Authorization"))
            if token is not None:
                return self._from_token(token)
        if self.trust_header:
            value = headers.get(self.header_name)
            if value:
                return str(value)
        if self.trust_query:
            value = query.get(self.query_param)
            if value:
                return str(value)
        raise HTTPProblem(400, f"no tenant id in the request: send {' or '.join(self._sources)}")

    def _from_token(self, token: str) -> str:
        import jwt

        require = [self.jwt_claim, *(["exp"] if self.jwt_require_exp else [])]
        try:
            key = self.jwt_key(token) if callable(self.jwt_key) else self.jwt_key
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.jwt_algorithms),
                audience=self.jwt_audience,
                issuer=self.jwt_issuer,
                leeway=self.jwt_leeway,
                options={"require": require},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the bearer token has expired", "invalid_token") from None
        except jwt.PyJWTError as e:
            logger.info("rejected a bearer token: %s", e)
            raise _unauthorized("invalid bearer token", "invalid_token") from None
        tenant = claims.get(self.jwt_claim)
        # Integer user ids in a custom claim are common; anything else is not an id.
        if isinstance(tenant, int) and not isinstance(tenant, bool):
            tenant = str(tenant)
        if not isinstance(tenant, str) or not tenant:
            raise _unauthorized(
                f"the bearer token's {self.jwt_claim!r} claim is not a tenant id", "invalid_token"
            )
        return tenant


AdminAuth = Callable[[Any], bool]


@dataclass(frozen=True)
class AdminGuard:
    """Who may use the admin endpoints: a bearer ``token`` (constant-time comparison) or an ``auth``
    callable given the framework's request. With both, either suffices."""

    token: str | None = field(default=None, repr=False)
    auth: AdminAuth | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AdminGuard:
        return cls(token=settings["admin_token"], auth=settings["admin_auth"])

    def __post_init__(self) -> None:
        if self.token is None and self.auth is None:
            raise ConfigurationError(
                "the admin endpoints need TENANTPOOL_ADMIN_TOKEN or a "
                "TENANTPOOL_ADMIN_AUTH callable(request) -> bool"
            )
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ConfigurationError("TENANTPOOL_ADMIN_TOKEN must be a non-empty str")
        if self.auth is not None and not callable(self.auth):
            raise ConfigurationError("TENANTPOOL_ADMIN_AUTH must be a callable(request) -> bool")

    def check(self, authorization: str | None, request: Any, *, basic: bool = False) -> None:
        """Returns if allowed; raises :class:`HTTPProblem` 401 (no credentials) or 403 (refused).

        ``basic``: also take the token as the password of ``Authorization: Basic`` (any user name), and
        challenge with ``Basic``, so that a person's browser can open the admin page: browsers prompt
        for Basic credentials but cannot send a bearer token. Only for the read-only page, since a
        browser then sends the credentials by itself."""
        token = bearer_token(authorization)
        via_basic = False
        if token is None and basic:
            token = basic_password(authorization)
            via_basic = token is not None
        if (
            self.token is not None
            and token is not None
            and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self.token.encode("utf-8"))
        ):
            return
        if self.auth is not None and self.auth(request) is True:
            return
        # A wrong Basic password gets the challenge again, so that the browser asks again.
        if self.token is not None and (token is None or via_basic):
            if basic:
                raise HTTPProblem(
                    401,
                    "the admin page needs the admin token, as a Bearer token or as the Basic password",
                    {"WWW-Authenticate": 'Basic realm="tenantpool admin", charset="UTF-8"'},
                )
            raise _unauthorized("admin endpoints need an Authorization: Bearer token")
        raise HTTPProblem(403, "forbidden")


def database_problem(exc: PyMongoError) -> HTTPProblem:
    """The status for a database error. Server and driver text is logged, never shown, except for an
    invalid tenant id or name, which is the client's own input."""
    if isinstance(exc, InvalidName):
        return HTTPProblem(400, str(exc))
    if isinstance(exc, ConnectionFailure):
        logger.exception("database unavailable", exc_info=exc)
        return HTTPProblem(503, "database unavailable, try again later")
    logger.exception("database error", exc_info=exc)
    return HTTPProblem(500, "internal server error")


def metrics_text(manager: Any) -> str:
    """Prometheus text exposition: the manager's own if it has one, else a minimal one from get_stats().

    Counters are per process: under a multi-process server each scrape reads one worker.
    """
    own = getattr(manager, "metrics_text", None)
    if callable(own):
        return str(own())
    pools = manager.get_stats()["pools"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: Sequence[tuple[str, Any]]) -> None:
        lines.extend((f"# HELP {name} {help_}", f"# TYPE {name} {kind}"))
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    metric("tenantpool_live_pools", "gauge", "Tenant pools currently open.", [("", pools["live_pools"])])
    metric(
        "tenantpool_pools_created_total", "counter", "Tenant pools created.", [("", pools["pools_created"])]
    )
    metric(
        "tenantpool_pools_closed_total",
        "counter",
        "Tenant pools closed, by cause.",
        [
            (f'{{cause="{cause}"}}', pools[f"closed_{cause}"])
            for cause in ("idle", "lru", "manual", "error", "shutdown")
        ],
    )
    metric(
        "tenantpool_operation_errors_total",
        "counter",
        "Operations that failed.",
        [("", pools["operation_errors"])],
    )
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULTS",
    "AdminGuard",
    "HTTPProblem",
    "TenantResolver",
    "basic_password",
    "bearer_token",
    "database_problem",
    "flag",
    "manager_kwargs",
    "metrics_text",
    "read_settings",
]
