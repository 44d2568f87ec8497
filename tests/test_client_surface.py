"""The tenant's client is MongoClient-shaped where users look: pymongo's names are never shadowed by a
database of that name, and each answers with pymongo's types, compared with a real MongoClient on the
same server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.client_options import ClientOptions
from pymongo.read_concern import ReadConcern
from pymongo.topology_description import TopologyDescription
from pymongo.write_concern import WriteConcern
from tests.helpers import wait_until

from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.database import Database


def test_no_name_of_mongoclient_is_a_database(mongodb_uri: str) -> None:
    names = [n for n in dir(MongoClient) if not n.startswith("_")]
    with UserConnectionManager(mongodb_uri) as manager:
        client = manager.get_client("surface")
        for name in names:
            assert hasattr(type(client), name), f"TenantClient lacks pymongo's {name!r}"
            if not isinstance(getattr(type(client), name), property):
                assert not isinstance(getattr(client, name), Database), name


def test_topology_answers_match_pymongo(mongodb_uri: str, pymongo_client: MongoClient) -> None:
    with UserConnectionManager(mongodb_uri) as manager:
        client = manager.get_client("surface")
        assert client.address == pymongo_client.address
        assert client.primary == pymongo_client.primary
        assert client.secondaries == pymongo_client.secondaries
        assert client.arbiters == pymongo_client.arbiters
        assert client.is_primary is pymongo_client.is_primary is True
        assert client.is_mongos is pymongo_client.is_mongos is False
        assert client.nodes == pymongo_client.nodes
        description = client.topology_description
        assert isinstance(description, TopologyDescription)
        theirs = pymongo_client.topology_description
        assert description.topology_type_name == theirs.topology_type_name == "ReplicaSetWithPrimary"
        assert {a: sd.server_type_name for a, sd in description.server_descriptions().items()} == {
            a: sd.server_type_name for a, sd in theirs.server_descriptions().items()
        }
        assert client.server_info()["version"] == pymongo_client.server_info()["version"]
        assert (client.HOST, client.PORT) == (MongoClient.HOST, MongoClient.PORT)


def test_a_three_member_set(replica_set: Any) -> None:
    with UserConnectionManager(replica_set.uri) as manager, MongoClient(replica_set.uri) as theirs:
        # pymongo's monitor discovers the members one by one: compare once it has seen them all.
        wait_until(lambda: len(theirs.secondaries) == 2, timeout=10, what="pymongo to see 2 secondaries")
        client = manager.get_client("surface")
        assert client.primary == theirs.primary
        assert client.secondaries == theirs.secondaries and len(client.secondaries) == 2
        assert client.nodes == theirs.nodes


@pytest.mark.parametrize(("tier", "size"), [("free", 3), ("enterprise", 20)])
@pytest.mark.parametrize("strategy", ["per_user", "grouped", "shared"])
def test_options_show_the_tenants_share(mongodb_uri: str, strategy: str, tier: str, size: int) -> None:
    uri = mongodb_uri + ("&" if "?" in mongodb_uri else "?") + "w=majority&readConcernLevel=majority"
    with UserConnectionManager(uri, strategy=strategy, tier_of=lambda user_id: tier) as manager:
        client = manager.get_client("surface")
        options = client.options
        assert isinstance(options, ClientOptions)
        assert options.pool_options.max_pool_size == size
        theirs = MongoClient(uri, connect=False)
        assert client.write_concern == theirs.write_concern == WriteConcern(w="majority")
        assert client.read_concern == theirs.read_concern == ReadConcern("majority")
        assert options.replica_set_name == theirs.options.replica_set_name
        theirs.close()


def test_options_include_the_managers_keywords(mongodb_uri: str) -> None:
    with UserConnectionManager(mongodb_uri, w="majority", appName="surface-app", maxPoolSize=7) as manager:
        client = manager.get_client("surface")
        assert client.write_concern == WriteConcern(w="majority")
        assert client.options.pool_options.metadata["application"]["name"] == "surface-app"
        assert client.options.pool_options.max_pool_size == 7


def test_options_never_show_the_password(mongodb_uri: str) -> None:
    with UserConnectionManager(mongodb_uri, username="someone", password="hunter2-secret") as manager:
        options = manager.get_client("surface").options
        assert "hunter2-secret" not in repr(vars(options)) and "hunter2-secret" not in repr(options._options)


def test_what_makes_no_sense_for_a_tenant_says_the_alternative(mongodb_uri: str) -> None:
    with UserConnectionManager(mongodb_uri) as manager:
        client = manager.get_client("surface")
        with pytest.raises(NotImplementedError, match=r"Collection\.bulk_write"):
            client.bulk_write([])
        with pytest.raises(NotImplementedError, match="appName"):
            client.append_metadata(None)
        with pytest.raises(TypeError, match="not iterable"):
            next(client)


def test_drop_and_list_databases(mongodb_uri: str, pymongo_client: MongoClient) -> None:
    with UserConnectionManager(mongodb_uri) as manager:
        client = manager.get_client("surface")
        client.get_database().c.insert_one({})
        listed = client.list_databases().to_list()
        assert [d["name"] for d in listed] == ["user_surface_db"]
        assert set(listed[0]) == {"name", "sizeOnDisk", "empty"}
        client.drop_database("user_surface_db")
        assert "user_surface_db" not in pymongo_client.list_database_names()
        client.get_database().c.insert_one({})
        client.drop_database(client.get_database())
        assert client.list_database_names() == []


def test_async_client_has_pymongos_awaitable_properties(
    mongodb_uri: str, pymongo_client: MongoClient
) -> None:
    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri) as manager:
            client = manager.get_client("surface")
            assert await client.address == pymongo_client.address
            assert await client.primary == pymongo_client.primary
            assert await client.is_primary is True
            assert await client.is_mongos is False
            assert await client.nodes == pymongo_client.nodes
            assert (await client.server_info())["version"] == pymongo_client.server_info()["version"]
            assert client.options.pool_options.max_pool_size == 10
            assert isinstance(client.topology_description, TopologyDescription)
            await client.get_database().c.insert_one({})
            assert [d["name"] async for d in await client.list_databases()] == ["user_surface_db"]
            await client.drop_database("user_surface_db")
            assert await client.list_database_names() == []

    asyncio.run(main())
