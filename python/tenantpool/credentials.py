"""Per-tenant MongoDB users: ``TenantCredentials`` and the ``credentials=`` callback of the manager.

With ``strategy="per_user"`` each tenant has its own driver client, so it can authenticate as its own
MongoDB user, one whose only roles are on the tenant's database. The server then refuses the tenant
any other database, whatever the Python layer lets through::

    manager = UserConnectionManager(admin_uri, credentials=lambda user_id: (user_id, vault[user_id]))
    manager.provision_tenant("a", password=vault["a"])      # creates user "a" in user_a_db

The callback is called once per pool creation (not per operation), from whichever thread creates the
pool; keep it fast (a dict or a cached secret store), and do not call the manager from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

from pymongo.errors import ConfigurationError

#: Mechanisms a tenant credential may name; None lets the driver negotiate (SCRAM-SHA-256 on 4.0+).
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")

#: Roles ``provision_tenant`` may give, always on the tenant's own database only.
TENANT_ROLES = ("read", "readWrite", "dbAdmin")


class TenantCredentials:
    """A tenant's MongoDB user: ``username``, ``password``, the database it is defined in (``source``,
    default the tenant's own database, where ``provision_tenant`` creates it) and the auth
    ``mechanism`` (default negotiated). The password never appears in its ``repr``."""

    __slots__ = ("mechanism", "password", "source", "username")
    username: str
    password: str
    source: str | None
    mechanism: str | None

    def __init__(
        self, username: str, password: str, source: str | None = None, mechanism: str | None = None
    ) -> None:
        for name, value in (("username", username), ("password", password)):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"TenantCredentials: {name} must be a non-empty str, got a {type(value).__name__}"
                    + ("" if not isinstance(value, str) else " that is empty")
                )
        if source is not None and (not isinstance(source, str) or not source):
            raise ConfigurationError("TenantCredentials: source must be a database name (a str) or None")
        if mechanism is not None and mechanism not in MECHANISMS:
            raise ConfigurationError(
                f"TenantCredentials: mechanism must be one of {MECHANISMS} or None (negotiated), "
                f"got {mechanism!r}"
            )
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "mechanism", mechanism)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TenantCredentials is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TenantCredentials):
            return NotImplemented
        return (self.username, self.password, self.source, self.mechanism) == (
            other.username,
            other.password,
            other.source,
            other.mechanism,
        )

    def __hash__(self) -> int:
        return hash((self.username, self.source, self.mechanism))

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle rebuild it through __init__ (attribute assignment is refused).
        return (TenantCredentials, (self.username, self.password, self.source, self.mechanism))

    def __repr__(self) -> str:
        return (
            f"TenantCredentials(username={self.username!r}, password='***', source={self.source!r}, "
            f"mechanism={self.mechanism!r})"
        )


CredentialsLike = Union[TenantCredentials, "tuple[str, str]", Mapping[str, Any]]

_KEYS = ("username", "password", "source", "mechanism")


def as_credentials(value: Any, user_id: str) -> TenantCredentials:
    """What a credentials callback returned, as ``TenantCredentials``; errors name the tenant and the
    type, never a value (it may be a password)."""
    if isinstance(value, TenantCredentials):
        return value
    try:
        if isinstance(value, tuple) and len(value) == 2:
            return TenantCredentials(*value)
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in _KEYS]
            if unknown:
                raise ConfigurationError(f"unknown keys {sorted(map(str, unknown))}; allowed: {_KEYS}")
            if "username" not in value or "password" not in value:
                raise ConfigurationError("a mapping needs 'username' and 'password'")
            return TenantCredentials(**value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"the credentials for tenant {user_id!r}: {exc}") from None
    raise ConfigurationError(
        f"the credentials callback returned a {type(value).__name__} for tenant {user_id!r}; it must "
        "return TenantCredentials, a (username, password) tuple, or a mapping with 'username' and "
        "'password' (and optionally 'source' and 'mechanism')"
    )


def core_callback(
    credentials: Callable[[str], CredentialsLike],
) -> Callable[[str], tuple[str, str, str | None, str | None]]:
    """The application's callback as the core calls it: a tuple, validated here."""
    if not callable(credentials):
        raise ConfigurationError(
            "credentials must be a callable taking a user id and returning TenantCredentials or a "
            "(username, password) tuple"
        )

    def lookup(user_id: str) -> tuple[str, str, str | None, str | None]:
        c = as_credentials(credentials(user_id), user_id)
        return c.username, c.password, c.source, c.mechanism

    return lookup


def check_roles(roles: Any) -> list[str]:
    if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
        raise ConfigurationError(
            f"roles must be a sequence of role names (e.g. ('readWrite',) or ('readWrite', 'dbAdmin')), "
            f"got {roles!r}"
        )
    return list(roles)


__all__ = ["MECHANISMS", "TENANT_ROLES", "TenantCredentials"]
