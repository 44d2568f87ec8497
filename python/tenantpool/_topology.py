"""What a tenant's client tells about its deployment, in pymongo's types: ``ClientOptions`` from the
manager's connection string (with the tenant's own pool size), and the topology as a ``hello`` on the
tenant's pool describes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pymongo import common, uri_parser
from pymongo.client_options import ClientOptions
from pymongo.common import _CaseInsensitiveDictionary
from pymongo.hello import Hello
from pymongo.server_description import ServerDescription
from pymongo.synchronous.settings import TopologySettings
from pymongo.topology_description import TOPOLOGY_TYPE, TopologyDescription, updated_topology_description

if TYPE_CHECKING:
    from .manager import UserConnectionManager

Address = tuple[str, int]


def _deployment(manager: UserConnectionManager, user_id: str | None) -> str | None:
    """The tenant's deployment on a manager of several (see placement), else None: the manager's one."""
    from .placement import Router

    core = manager._core
    if user_id is None or not isinstance(core, Router):
        return None
    return core.deployment_of(user_id)


def parsed_uri(manager: UserConnectionManager, user_id: str | None = None) -> dict[str, Any]:
    """The manager's connection string (the tenant's deployment's), parsed by pymongo, once; from the
    redacted form, so no password ever reaches an options object."""
    deployment = _deployment(manager, user_id)
    if deployment is not None:
        cache: dict[str, dict[str, Any]] = manager.__dict__.setdefault("_parsed_uris", {})
        if deployment not in cache:
            cache[deployment] = uri_parser.parse_uri(manager._core.cores[deployment].redacted_uri)
        return cache[deployment]
    parsed: dict[str, Any] | None = getattr(manager, "_parsed_uri", None)
    if parsed is None:
        parsed = uri_parser.parse_uri(manager._core.redacted_uri)
        manager._parsed_uri = parsed  # type: ignore[attr-defined]
    return parsed


def seeds(manager: UserConnectionManager, user_id: str | None = None) -> list[Address]:
    return [(host, int(port)) for host, port in parsed_uri(manager, user_id)["nodelist"]]


def client_options(manager: UserConnectionManager, user_id: str) -> ClientOptions:
    """pymongo's ``ClientOptions`` of the manager's URI and keywords, whose ``pool_options.max_pool_size``
    is the tenant's own share: its pool size (per_user) or quota (grouped, shared), tier included."""
    parsed = parsed_uri(manager, user_id)
    # pymongo's case-insensitive options dictionary, as ClientOptions expects it.
    options = _CaseInsensitiveDictionary(parsed["options"])
    # The manager's keyword options, as the core applies them over the URI's.
    options.update(dict(common.validate(name, value) for name, value in manager._uri_options))
    stats = manager._core.tenant_info(user_id)
    options["maxPoolSize"] = int(stats["pool_size"]) if stats else manager._pool_size_for(user_id)[0]
    # No credentials at all: pymongo's would hold the password, which never leaves the core.
    return ClientOptions(None, None, parsed.get("database"), options)  # type: ignore[arg-type]


def _address(host: str) -> Address:
    name, _, port = host.rpartition(":")
    return (name, int(port)) if name else (host, 27017)


def describe(
    manager: UserConnectionManager, reply: dict[str, Any], user_id: str | None = None
) -> TopologyDescription:
    """The deployment as one ``hello`` reply shows it: the answering server described by the reply,
    the other members it names known by address only. Cached on the manager for the async client's
    ``topology_description``, a property that cannot wait for a round trip."""
    hello = Hello(reply)
    if hello.me:
        me = hello.me
    elif hello.primary and hello.is_writable:
        me = hello.primary
    else:
        me = seeds(manager, user_id)[0]
    set_name = hello.replica_set_name or parsed_uri(manager, user_id)["options"].get("replicaSet")
    kind = TOPOLOGY_TYPE.ReplicaSetNoPrimary if set_name else TOPOLOGY_TYPE.Unknown
    initial = TopologyDescription(
        kind,
        {a: ServerDescription(a) for a in seeds(manager, user_id)},
        set_name,
        None,
        None,
        TopologySettings(seeds(manager, user_id), set_name),
    )
    description = updated_topology_description(initial, ServerDescription(me, hello, round_trip_time=0.0))
    deployment = _deployment(manager, user_id)
    if deployment is not None:
        manager.__dict__.setdefault("_last_topologies", {})[deployment] = description
    else:
        manager._last_topology = description  # type: ignore[attr-defined]
    return description


def last_described(manager: UserConnectionManager, user_id: str | None = None) -> TopologyDescription:
    """The description the last ``hello`` (on the tenant's deployment) gave, or the seeds, all unknown."""
    deployment = _deployment(manager, user_id)
    known: TopologyDescription | None = (
        getattr(manager, "_last_topology", None)
        if deployment is None
        else manager.__dict__.get("_last_topologies", {}).get(deployment)
    )
    if known is not None:
        return known
    return TopologyDescription(
        TOPOLOGY_TYPE.Unknown,
        {a: ServerDescription(a) for a in seeds(manager, user_id)},
        None,
        None,
        None,
        TopologySettings(seeds(manager, user_id)),
    )


def _tcp(address: tuple[str, int | None]) -> Address:
    # The descriptions built here are of the core's TCP servers: a port always.
    return cast(Address, address)


def primary(description: TopologyDescription) -> Address | None:
    for sd in description.server_descriptions().values():
        if sd.server_type_name == "RSPrimary":
            return _tcp(sd.address)
    return None


def members(description: TopologyDescription, type_name: str) -> set[Address]:
    return {
        _tcp(a) for a, sd in description.server_descriptions().items() if sd.server_type_name == type_name
    }


def address(description: TopologyDescription) -> Address | None:
    """pymongo's ``MongoClient.address``: the primary, the standalone, or the (single) mongos."""
    kinds = {sd.server_type_name: _tcp(a) for a, sd in description.server_descriptions().items()}
    for kind in ("RSPrimary", "Standalone", "Mongos"):
        if kind in kinds:
            return kinds[kind]
    return None
