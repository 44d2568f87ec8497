"""Moving a tenant to another deployment while it is online (``UserConnectionManager.move_tenant``).

1. The tenant's gate closes here, the catalog entry turns "moving": its new operations wait (bounded),
   in every process (each acknowledges in the catalog once its operations in flight have finished).
2. Its databases are copied: collections with their options and validators, documents in batches of
   raw BSON, indexes, then views; the copy is verified (counts, and ``dbHash`` on both sides).
3. The catalog records the new deployment, with the move count (``epoch``) one higher; the gates open
   and the waiting operations run on the new deployment. Cursors, change streams and sessions opened
   before then fail with ``TenantMovedError`` (their server state stayed on the source).
4. The source databases are dropped, unless ``keep_source``.

Any failure before step 3 leaves the tenant where it was, serving, and raises ``TenantMoveError``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, InvalidOperation, PyMongoError

if TYPE_CHECKING:
    from .manager import UserConnectionManager

logger = logging.getLogger("tenantpool")

_RAW = CodecOptions(document_class=RawBSONDocument)
_BATCH_DOCS = 2000
_BATCH_BYTES = 8 * 1024 * 1024


class TenantMoveError(PyMongoError):
    """A move that failed: the tenant stayed on its deployment, and serves there."""


def _client(uri: str) -> MongoClient[Any]:
    return MongoClient(uri, maxPoolSize=4, serverSelectionTimeoutMS=5000, appname="tenantpool-move")


def _copy_database(src: Any, dst: Any, report: dict[str, Any]) -> None:
    infos = [i for i in src.list_collections() if not i["name"].startswith("system.")]
    for info in infos:
        if info.get("type", "collection") != "collection":
            continue
        name = info["name"]
        dst.command({"create": name, **info.get("options", {})})
        target = dst.get_collection(name)
        batch: list[RawBSONDocument] = []
        size = 0
        for doc in src.get_collection(name, codec_options=_RAW).find(batch_size=_BATCH_DOCS):
            batch.append(doc)
            size += len(doc.raw)
            if len(batch) >= _BATCH_DOCS or size >= _BATCH_BYTES:
                target.insert_many(batch, ordered=True, bypass_document_validation=True)
                report["documents"] += len(batch)
                report["bytes"] += size
                batch, size = [], 0
        if batch:
            target.insert_many(batch, ordered=True, bypass_document_validation=True)
            report["documents"] += len(batch)
            report["bytes"] += size
        indexes = []
        for index in src.get_collection(name).list_indexes():
            if index["name"] == "_id_":
                continue
            spec = dict(index)
            spec.pop("ns", None)
            indexes.append(spec)
        if indexes:
            dst.command({"createIndexes": name, "indexes": indexes})
        report["collections"] += 1
        report["indexes"] += len(indexes)
    for info in infos:
        if info.get("type") == "view":
            dst.command({"create": info["name"], **info.get("options", {})})
            report["views"] += 1


def _verify(src: Any, dst: Any) -> None:
    names = [
        i["name"]
        for i in src.list_collections()
        if i.get("type", "collection") == "collection" and not i["name"].startswith("system.")
    ]
    for name in names:
        a, b = src[name].count_documents({}), dst[name].count_documents({})
        if a != b:
            raise TenantMoveError(f"{src.name}.{name}: {a} documents on the source, {b} on the target")
    if names:
        a = src.command("dbHash", collections=names)["collections"]
        b = dst.command("dbHash", collections=names)["collections"]
        for name in names:
            if a.get(name) != b.get(name):
                raise TenantMoveError(f"{src.name}.{name}: its content hash differs on the target")


def move_tenant(
    manager: UserConnectionManager, user_id: str, to: str, keep_source: bool, timeout: float
) -> dict[str, Any]:
    from .placement import Router

    router = manager._core
    if not isinstance(router, Router):
        raise InvalidOperation("move_tenant needs a manager of several deployments (deployments=...)")
    catalog = router.catalog
    if catalog is None:
        raise InvalidOperation(
            "move_tenant needs a tenant catalog (catalog='<deployment>'): the catalog is what tells every "
            "process, and this one after a restart, where the tenant went"
        )
    user_id = manager._check_user(user_id)
    if to not in router.cores:
        raise ConfigurationError(
            f"cannot move tenant {user_id!r} to {to!r}: deployments are {sorted(router.cores)}"
        )
    entry = catalog.lookup(user_id)
    source = str(entry["deployment"]) if entry is not None else router.placement.static(user_id)[0]
    if source not in router.cores:
        raise ConfigurationError(f"tenant {user_id!r} is on {source!r}, which this manager does not know")
    if source == to:
        raise InvalidOperation(f"tenant {user_id!r} already lives on {to!r}")
    scope = manager._scope
    databases = sorted(scope.databases(user_id) if scope is not None else {router.db_name(user_id)})
    uris = manager._deployment_uris
    report: dict[str, Any] = {
        "user_id": user_id,
        "from": source,
        "to": to,
        "databases": databases,
        "collections": 0,
        "indexes": 0,
        "views": 0,
        "documents": 0,
        "bytes": 0,
    }
    deadline = time.monotonic() + timeout
    r = router.close_gate(user_id, to)
    paused = time.monotonic()
    step = "recording the move in the catalog"
    src, dst = _client(uris[source]), _client(uris[to])
    copied = False
    try:
        move_id, epoch = catalog.begin_move(user_id, entry, source, to)
        try:
            step = "waiting for its operations in flight"
            if not router.drain(r, max(deadline - time.monotonic(), 0.0)):
                raise TimeoutError("its operations in flight did not finish in time")
            step = "waiting for the other managers to pause it"
            catalog.wait_acks(user_id, move_id, deadline)
            step = "checking the target"
            for name in databases:
                if dst[name].list_collection_names():
                    raise TenantMoveError(
                        f"database {name!r} already holds collections on {to!r}: drop them, or move elsewhere"
                    )
            step = "copying"
            copied = True
            started = time.monotonic()
            for name in databases:
                _copy_database(src[name], dst[name], report)
            report["copy_seconds"] = time.monotonic() - started
            step = "verifying the copy"
            for name in databases:
                _verify(src[name], dst[name])
            step = "recording the new deployment in the catalog"
            catalog.end_move(user_id, move_id, to, epoch + 1)
        except BaseException:
            if copied:
                for name in databases:
                    try:
                        dst.drop_database(name)
                    except PyMongoError:
                        logger.warning(
                            "tenant %r: its partial copy in %r on %r could not be dropped", user_id, name, to
                        )
            try:
                catalog.end_move(user_id, move_id, source, epoch)
            except PyMongoError:
                logger.exception("tenant %r: its catalog entry could not be restored to %r", user_id, source)
            raise
    except BaseException as exc:
        router.open_gate(r)
        src.close()
        dst.close()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise TenantMoveError(
            f"moving tenant {user_id!r} from {source!r} to {to!r} failed while {step}: {exc}; "
            f"the tenant stays "
            f"on {source!r} and serves there"
        ) from exc
    router.open_gate(r, to, epoch + 1)
    report["pause_seconds"] = time.monotonic() - paused
    report["documents_per_second"] = report["documents"] / max(report.get("copy_seconds", 0.0), 1e-9)
    try:
        router.cores[source].close_tenant(user_id)
        if not keep_source:
            for name in databases:
                src.drop_database(name)
        report["source_dropped"] = not keep_source
    except PyMongoError as exc:
        logger.warning(
            "tenant %r moved to %r, but its source databases on %r stay: %s", user_id, to, source, exc
        )
        report["source_dropped"] = False
    finally:
        src.close()
        dst.close()
    logger.info(
        "moved tenant %r from %r to %r: %d documents in %.2fs, paused %.2fs",
        user_id,
        source,
        to,
        report["documents"],
        report.get("copy_seconds", 0.0),
        report["pause_seconds"],
    )
    return report


def recover_move(manager: UserConnectionManager, user_id: str) -> str:
    from .placement import router_of

    router = router_of(manager)
    if router.catalog is None:
        raise InvalidOperation("recover_move needs a tenant catalog (catalog='<deployment>')")
    entry = router.catalog.recover_move(user_id)
    source = str(entry["deployment"])
    r = router.cached(user_id)
    if r is not None:
        router.open_gate(r, source, int(entry.get("epoch", 0)))
    logger.warning(
        "tenant %r: the unfinished move to %r ended, the tenant serves on %r again; a partial copy may "
        "remain on %r",
        user_id,
        entry.get("to"),
        source,
        entry.get("to"),
    )
    return source
