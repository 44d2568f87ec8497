"""TenantCredentials and the normalisation of what a credentials callback returns (no server)."""

from __future__ import annotations

import copy
import pickle

import pytest
from pymongo.errors import ConfigurationError

from tenantpool import TenantCredentials
from tenantpool.credentials import as_credentials, check_roles, core_callback

SECRET = "Zq-Very-Secret-9"


def test_repr_hides_the_password_and_values_are_immutable():
    c = TenantCredentials("alice", SECRET, source="admin", mechanism="SCRAM-SHA-256")
    assert SECRET not in repr(c) and SECRET not in str(c) and "password='***'" in repr(c)
    with pytest.raises(AttributeError):
        c.password = "other"
    assert copy.copy(c) == c == pickle.loads(pickle.dumps(c))
    assert c != TenantCredentials("alice", "other", source="admin", mechanism="SCRAM-SHA-256")


@pytest.mark.parametrize(
    "value",
    [
        TenantCredentials("alice", SECRET),
        ("alice", SECRET),
        {"username": "alice", "password": SECRET},
    ],
)
def test_accepted_forms(value):
    assert as_credentials(value, "t1") == TenantCredentials("alice", SECRET)


@pytest.mark.parametrize(
    "value, words",
    [
        (None, "returned a NoneType for tenant 't1'"),
        (["alice", SECRET], "returned a list"),
        (("alice", SECRET, "admin"), "returned a tuple"),
        ({"username": "alice", "password": SECRET, "pwd": SECRET}, "unknown keys ['pwd']"),
        ({"username": "alice"}, "needs 'username' and 'password'"),
        (("alice", ""), "password must be a non-empty str"),
        (("alice", 42), "password must be a non-empty str, got a int"),
        ({"username": "alice", "password": SECRET, "mechanism": "PLAIN"}, "mechanism must be one of"),
    ],
)
def test_refused_forms_name_the_tenant_never_the_value(value, words):
    with pytest.raises(ConfigurationError) as info:
        as_credentials(value, "t1")
    assert words in str(info.value)
    assert SECRET not in str(info.value)


def test_core_callback_and_roles():
    lookup = core_callback(lambda user_id: (user_id, SECRET))
    assert lookup("bob") == ("bob", SECRET, None, None)
    with pytest.raises(ConfigurationError, match="callable"):
        core_callback({"bob": ("bob", SECRET)})  # type: ignore[arg-type]
    assert check_roles(("readWrite", "dbAdmin")) == ["readWrite", "dbAdmin"]
    for bad in ("readWrite", [1]):
        with pytest.raises(ConfigurationError, match="sequence of role names"):
            check_roles(bad)
