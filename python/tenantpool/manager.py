"""UserConnectionManager: the design document's API over the Rust tenant registry."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from bson.codec_options import CodecOptions
from pymongo.errors import ConfigurationError

from . import _core
from ._options import split_options, with_credentials
from .client import TenantClient
from .database import Database

logger = logging.getLogger("tenantpool")

# The document's defaults, except minPoolSize: it set 1, which keeps a socket open per idle tenant.
_DEFAULT_OPTIONS = {"minPoolSize": 0, "connectTimeoutMS": 5000, "serverSelectionTimeoutMS": 5000}


class UserConnectionManager:
    """One isolated MongoDB connection pool per tenant, created on first use and closed when idle.

    ``get_database(user_id)`` returns a pymongo-compatible ``Database`` named from
    ``db_name_template`` (default ``user_{user_id}_db``). Each tenant's operations use that tenant's own
    pool of at most ``user_pool_size`` connections, so one tenant's load cannot exhaust another's.
    """

    def __init__(
        self,
        connection_string: str,
        user_pool_size: int = 10,
        idle_timeout: float | None = 3600,
        max_connections: int | None = None,
        db_name_template: str = "user_{user_id}_db",
        use_weak_ref: bool = False,
        **mongo_options: Any,
    ) -> None:
        if not isinstance(connection_string, str):
            raise TypeError(f"connection_string must be a str, not {type(connection_string).__name__}")
        if not isinstance(user_pool_size, int) or isinstance(user_pool_size, bool) or user_pool_size < 1:
            raise ConfigurationError(f"user_pool_size must be a positive int, got {user_pool_size!r}")
        if idle_timeout is not None and (
            not isinstance(idle_timeout, (int, float)) or isinstance(idle_timeout, bool) or idle_timeout <= 0
        ):
            raise ConfigurationError(f"idle_timeout must be a positive number of seconds or None, "
                                     f"got {idle_timeout!r}")
        if max_connections is not None and (
            not isinstance(max_connections, int) or isinstance(max_connections, bool) or max_connections < 1
        ):
            raise ConfigurationError(f"max_connections must be a positive int or None, got {max_connections!r}")
        if not isinstance(db_name_template, str):
            raise ConfigurationError("db_name_template must be a str containing '{user_id}'")
        # use_weak_ref is accepted for the document's signature; pools are owned by the registry and
        # closed by the idle reaper, which is what weak references were approximating.
        del use_weak_ref
        options = dict(_DEFAULT_OPTIONS)
        if idle_timeout is not None:
            options["maxIdleTimeMS"] = int(idle_timeout * 1000)
        options.update(mongo_options)
        # An explicit maxPoolSize keyword wins over user_pool_size, as it does in the document.
        for key in list(options):
            if key.lower() == "maxpoolsize":
                user_pool_size = options.pop(key)
        uri_options, codec, credentials = split_options(options)
        self._codec: CodecOptions = codec
        self.user_pool_size: int = user_pool_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._core = _core.Manager(
            with_credentials(connection_string, credentials),
            user_pool_size,
            None if idle_timeout is None else float(idle_timeout),
            max_connections,
            db_name_template,
            uri_options,
        )
        logger.info("UserConnectionManager for %s: pool_size=%s idle_timeout=%s max_connections=%s",
                    self._core.redacted_uri, user_pool_size, idle_timeout, max_connections)

    @property
    def codec_options(self) -> CodecOptions:
        return self._codec

    def _check_user(self, user_id: Any) -> str:
        if not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str, not {type(user_id).__name__}")
        return user_id

    def get_client(self, user_id: str) -> TenantClient:
        """The tenant's client, creating its pool on first use. No network round trip."""
        self._core.ensure(self._check_user(user_id))
        return TenantClient(self, user_id)

    def get_database(self, user_id: str, db_name: str | None = None) -> Database:
        """The tenant's database: ``db_name``, or the template's name for this tenant."""
        user_id = self._check_user(user_id)
        if db_name is None:
            db_name = self._core.db_name(user_id)
        elif not isinstance(db_name, str):
            raise TypeError(f"db_name must be a str, not {type(db_name).__name__}")
        self._core.ensure(user_id)
        return Database(TenantClient(self, user_id), db_name)

    def close_user_connection(self, user_id: str) -> bool:
        """Closes the tenant's pool (after its in-flight operations finish). False if it had none."""
        self._core.check_open()
        closed = self._core.close_tenant(self._check_user(user_id))
        if closed:
            logger.info("closed the pool of tenant %r", user_id)
        return closed

    def get_stats(self) -> dict[str, Any]:
        """The document's statistics, plus lifecycle counters under ``pools``."""
        self._core.check_open()
        users = self._core.tenants()
        return {
            "total_connections": len(users),
            "user_pool_size": self.user_pool_size,
            "idle_timeout": self.idle_timeout,
            "active_users": users,
            "total_potential_connections": len(users) * self.user_pool_size,
            "max_connections": self.max_connections,
            "pools": self._core.counters(),
        }

    def get_user_stats(self, user_id: str) -> dict[str, Any] | None:
        """The tenant's pool: size, operations and errors, leases in use, age and idle time."""
        self._core.check_open()
        return self._core.tenant_info(self._check_user(user_id))

    def close_all(self) -> None:
        """Closes every pool; any later call raises InvalidOperation. Safe to call twice."""
        if not self._core.closed:
            n = self._core.close()
            logger.info("closed all %d tenant pools", n)

    @property
    def closed(self) -> bool:
        return self._core.closed

    def __enter__(self) -> UserConnectionManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_all()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self._core.redacted_uri!r}, user_pool_size={self.user_pool_size}, "
                f"idle_timeout={self.idle_timeout!r}, max_connections={self.max_connections!r})")


__all__ = ["UserConnectionManager"]
