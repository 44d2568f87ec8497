"""Hostile tenant ids. Every id is either rejected (InvalidName; TypeError for a non-str) or mapped to a
valid MongoDB database name, the same way on every entry point, and no two distinct ids ever share a
database. Ids differing only by case map to different names, which MongoDB refuses to hold side by side
(code 13297 DatabaseDifferCase): the second tenant must get an error, never the first tenant's data.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo.errors import InvalidName, OperationFailure

from tenantpool import UserConnectionManager

PREFIX, SUFFIX = "user_", "_db"
FORBIDDEN = set('/\\. "$\x00*<>:|?')
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Characters that matter for database names and look-alikes, mixed with ordinary ones.
NASTY = 'aAzZ09_-.$/\\ \t\n\r\x00"*<>:|?é\u0301\u00c5\u212b\u0130\u0131\u017fKß\uff21\u200b\U0001f600'
ids = st.one_of(
    st.text(max_size=70),
    st.text(alphabet=NASTY, max_size=70),
    st.text(alphabet="abcXYZ019_-", min_size=0, max_size=70),
    st.from_regex(r"\A[A-Za-z0-9_-]{50,60}\Z"),
)


@pytest.fixture(scope="module")
def manager(mongodb_uri):
    # A small cap: valid ids open a (lazily connecting) pool in get_database/get_client.
    with UserConnectionManager(mongodb_uri, max_connections=3, idle_timeout=60, appName="tp-ids") as m:
        yield m


seen_names: dict[str, str] = {}


def mapped(manager: UserConnectionManager, tenant: str) -> str | None:
    """The database name of ``tenant``, or None if every entry point rejects it with InvalidName."""
    try:
        name = manager._core.db_name(tenant)
    except InvalidName:
        for entry in (manager.get_database, manager.get_client):
            with pytest.raises(InvalidName):
                entry(tenant)
        return None
    assert manager.get_database(tenant).name == name
    assert manager.get_client(tenant).get_database().name == name
    return name


def check_valid(tenant: str, name: str) -> None:
    assert name == f"{PREFIX}{tenant}{SUFFIX}"
    assert 0 < len(name.encode()) < 64, name
    assert not FORBIDDEN & set(name), name
    assert name.isascii() and name.isprintable(), name


@SETTINGS
@given(ids)
@example("")
@example("a" * 55)
@example("a" * 56)
@example("../admin")
@example("admin")
@example("a\x00b")
@example(" a")
@example("a\u0301")
@example("\u00e1")
def test_every_id_is_rejected_or_mapped_to_a_valid_name_of_its_own(manager, tenant):
    name = mapped(manager, tenant)
    if name is None:
        return
    check_valid(tenant, name)
    assert seen_names.setdefault(name, tenant) == tenant, f"{tenant!r} and {seen_names[name]!r} share {name}"


@SETTINGS
@given(ids)
def test_case_and_normalisation_variants_never_share_a_database(manager, tenant):
    variants = {tenant, tenant.upper(), tenant.lower(), tenant.casefold(), tenant.swapcase()}
    variants |= {unicodedata.normalize(form, tenant) for form in ("NFC", "NFD", "NFKC", "NFKD")}
    names = {}
    for v in variants:
        name = mapped(manager, v)
        if name is not None:
            check_valid(v, name)
            assert names.setdefault(name, v) == v, f"{v!r} and {names[name]!r} share {name}"


@SETTINGS
@given(
    st.one_of(
        st.integers(),
        st.binary(),
        st.none(),
        st.floats(),
        st.lists(st.text(max_size=3), max_size=2),
        st.tuples(st.text(max_size=3)),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    )
)
def test_non_string_ids_raise_type_error(manager, tenant):
    for entry in (
        manager.get_database,
        manager.get_client,
        manager.get_user_stats,
        manager.close_user_connection,
    ):
        with pytest.raises(TypeError):
            entry(tenant)


@pytest.mark.parametrize("tenant", ["\ud800", "a\udfffb"])
def test_lone_surrogates_are_rejected_with_invalid_name(manager, tenant):
    # json.loads('"\\ud800"') yields such a str, so a request can carry one. It is refused (not encodable,
    # never reaches the server), but with UnicodeEncodeError, which an `except InvalidName` does not catch.
    for entry in (manager.get_database, manager.get_client, manager.get_user_stats):
        with pytest.raises(InvalidName):
            entry(tenant)


@pytest.mark.parametrize("tenant", ["\ud800", "a\udfffb"])
def test_lone_surrogates_never_reach_a_database(manager, tenant):
    for entry in (manager.get_database, manager.get_client):
        with pytest.raises((InvalidName, ValueError)):
            entry(tenant)


def test_str_subclass_ids_map_like_their_value(manager):
    class Id(str):
        pass

    assert manager.get_database(Id("sub1")).name == "user_sub1_db"


def test_case_only_different_tenants_get_an_error_never_each_others_data(manager, pymongo_client):
    """MongoDB 6.0 refuses to create a database whose name differs only by case from an existing one
    (code 13297, DatabaseDifferCase). With the default template, tenants "CaseCo" and "caseco" therefore
    cannot both hold data: the second one to write is refused. It must never be served the first one's
    documents, and nothing it does may touch the first one's database."""
    a_name, b_name = "user_CaseCo_db", "user_caseco_db"
    for n in (a_name, b_name):
        pymongo_client.drop_database(n)
    a = manager.get_database("CaseCo")
    b = manager.get_database("caseco")
    assert (a.name, b.name) == (a_name, b_name)

    a.docs.insert_one({"secret": "A's"})
    with pytest.raises(OperationFailure) as info:
        b.docs.insert_one({"mine": "B's"})
    assert info.value.code == 13297, info.value.details
    with pytest.raises(OperationFailure) as info:
        b.create_collection("other")
    assert info.value.code == 13297

    # Reads of B see B's (non-existent) database, not A's.
    assert b.docs.find_one() is None
    assert list(b.docs.find()) == []
    assert b.docs.count_documents({}) == 0
    assert b.list_collection_names() == []
    assert b.command("dbStats")["db"] == b_name
    assert b.command("dbStats")["objects"] == 0
    # Destructive calls by B do not reach A.
    b.docs.delete_many({})
    b.docs.drop()
    b.command("dropDatabase")
    assert pymongo_client[a_name].docs.count_documents({"secret": "A's"}) == 1
    assert b_name not in pymongo_client.list_database_names()


@pytest.mark.parametrize(
    "template, tenant",
    [
        ("{user_id}", "admin"),
        ("{user_id}", "local"),
        ("{user_id}", "config"),
        ("a{user_id}", "dmin"),
        ("{user_id}n", "admi"),
        ("conf{user_id}", "ig"),
    ],
)
def test_no_tenant_id_maps_to_a_system_database(template, tenant):
    # No server needed: the mapping happens without I/O.
    with UserConnectionManager("mongodb://127.0.0.1:1/", db_name_template=template) as m:
        with pytest.raises(InvalidName):
            m._core.db_name(tenant)
        with pytest.raises(InvalidName):
            m.get_database(tenant)
