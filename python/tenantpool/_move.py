"""Moving a tenant to another deployment while it is online (``UserConnectionManager.move_tenant``).

1. The tenant is claimed in the catalog ("copying"): a second mover is refused. Online, the tenant
   serving: a change stream opens on each of its source databases, then its
   collections (options, validators), documents (raw BSON, in batches), views and non-unique indexes
   are copied, and the changes made meanwhile replayed (upserts and deletes by ``documentKey``:
   idempotent, so a document both copied and changed converges), in rounds that shorten. Unique
   indexes are built after the first round; one that an intermediate state breaks (a unique value
   passing between documents) is dropped and built at the pause instead.
2. The tenant's gate closes here and its catalog entry turns "moving": its new operations wait
   (bounded), in every process (each acknowledges in the catalog once its operations in flight have
   finished). The changes up to the source's current time are replayed, the deferred unique indexes
   built, and the copy verified (counts, and ``dbHash`` on both sides).
3. The catalog records the new deployment, with the move count (``epoch``) one higher; the gates open
   and the waiting operations run on the new deployment. Cursors, change streams and sessions opened
   before then fail with ``TenantMovedError`` (their server state stayed on the source).
4. The source databases are dropped, unless ``keep_source``.

A collection or index created, changed or dropped during the copy fails the move. A tenant with a capped
collection (whose order is its content) is copied in step 2 only, paused throughout. Any failure before
step 3 drops the partial copy, leaves the tenant where it was, serving, and raises ``TenantMoveError``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, MongoClient, ReplaceOne
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WaitQueueTimeoutError,
)

from ._budgeted import BudgetedClient
from .placement import TenantMoveError

if TYPE_CHECKING:
    from .manager import UserConnectionManager

logger = logging.getLogger("tenantpool")

_RAW = CodecOptions(document_class=RawBSONDocument)
_BATCH_BYTES = 8 * 1024 * 1024
#: Documents per batch of the copy and of the replay: each batch holds the mover's GIL while it is
#: encoded, and the target's CPU while it is written. 2,000 took other tenants' p99 (same process, same
#: 2 cores) to several times their usual in the replay rounds.
DEFAULT_COPY_BATCH_DOCS = 500
#: The share of the time the copy and the first replay round may work while the tenant serves: after each
#: batch they rest in proportion (0.5: as long as the batch took), leaving the servers' CPU to the tenants
#: meanwhile. Not applied while the tenant is paused, where only the pause matters.
DEFAULT_COPY_SHARE = 0.5


# Each move client's pool: the copy's reads or writes, a change stream per database, and the
# verification hashing on both sides at once.
_POOL_SIZE = 4


def _client(core: Any, uri: str, options: dict[str, Any]) -> MongoClient[Any]:
    """A move's client on one deployment, holding its room in that deployment's connection budget."""
    return BudgetedClient(core, "(move)", uri, options, _POOL_SIZE, "tenantpool-move")


def _clients(
    router: Any, uris: dict[str, str], source: str, to: str, options: dict[str, Any]
) -> tuple[Any, Any]:
    src = _client(router.cores[source], uris[source], options)
    try:
        return src, _client(router.cores[to], uris[to], options)
    except BaseException:
        src.close()
        raise


def _token_time(token: Any) -> tuple[int, int] | None:
    """The cluster time a change stream's resume token stands for: its ``_data`` is a hex KeyString whose
    first value is that Timestamp (type byte 0x82, then time and increment, big-endian)."""
    data = token.get("_data") if token is not None else None
    if not isinstance(data, str) or len(data) < 18 or not data.startswith("82"):
        return None
    raw = bytes.fromhex(data[2:18])
    return int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big")


def _listing(db: Any) -> list[dict[str, Any]]:
    return [i for i in db.list_collections() if not i["name"].startswith("system.")]


def _digest(db: Any, names: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    counts = {name: db[name].estimated_document_count() for name in names}
    return counts, (db.command("dbHash", collections=names)["collections"] if names else {})


def _verify(src: Any, dst: Any) -> None:
    """The same documents on both sides: counts, and ``dbHash`` (an md5 over each collection in ``_id``
    order), both servers hashing at once."""
    names = [i["name"] for i in _listing(src) if i.get("type", "collection") == "collection"]
    with ThreadPoolExecutor(1) as pool:
        on_target = pool.submit(_digest, dst, names)
        counts, hashes = _digest(src, names)
        target_counts, target_hashes = on_target.result()
    for name in names:
        if counts[name] != target_counts[name]:
            raise TenantMoveError(
                f"{src.name}.{name}: {counts[name]} documents on the source, "
                f"{target_counts[name]} on the target"
            )
        if hashes.get(name) != target_hashes.get(name):
            raise TenantMoveError(f"{src.name}.{name}: its content hash differs on the target")


class _Copy:
    """The copy of a tenant's databases from ``src`` to ``dst`` (pymongo clients of the platform)."""

    def __init__(
        self,
        src: Any,
        dst: Any,
        databases: list[str],
        report: dict[str, Any],
        batch_docs: int = DEFAULT_COPY_BATCH_DOCS,
        share: float = DEFAULT_COPY_SHARE,
    ) -> None:
        self.src, self.dst, self.databases, self.report = src, dst, databases, report
        self.batch_docs, self.share = batch_docs, share
        # Whether batches are paced (while the tenant serves), see DEFAULT_COPY_SHARE.
        self.paced = False
        self.streams: dict[str, Any] = {}
        self.unique: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.built: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.infos = {name: _listing(src[name]) for name in databases}
        self.online = not any(
            i.get("options", {}).get("capped") for infos in self.infos.values() for i in infos
        )

    def check(self, to: str) -> None:
        for name, infos in self.infos.items():
            kinds = {i.get("type", "collection") for i in infos} - {"collection", "view"}
            if kinds:
                raise TenantMoveError(
                    f"database {name!r} has collections of type {sorted(kinds)}: not movable"
                )
            if self.dst[name].list_collection_names():
                raise TenantMoveError(
                    f"database {name!r} already holds collections on {to!r}: drop them, or move elsewhere"
                )

    def open_streams(self) -> None:
        for name in self.databases:
            db = self.src.get_database(name, codec_options=_RAW)
            self.streams[name] = db.watch(
                full_document="updateLookup", show_expanded_events=True, max_await_time_ms=50
            )
        # Listed after the streams opened: any later change is in a stream.
        self.infos = {name: _listing(self.src[name]) for name in self.databases}

    def copy(self, defer_unique: bool) -> None:
        started = time.monotonic()
        for name in self.databases:
            src, dst = self.src[name], self.dst[name]
            for info in self.infos[name]:
                if info.get("type", "collection") == "collection":
                    self._copy_collection(src, dst, info, defer_unique)
            for info in self.infos[name]:
                if info.get("type") == "view":
                    dst.command({"create": info["name"], **info.get("options", {})})
                    self.report["views"] += 1
        self.report["copy_seconds"] += time.monotonic() - started

    def _copy_collection(self, src: Any, dst: Any, info: dict[str, Any], defer_unique: bool) -> None:
        name = info["name"]
        dst.command({"create": name, **info.get("options", {})})
        target = dst.get_collection(name)
        batch: list[RawBSONDocument] = []
        size = 0
        for doc in src.get_collection(name, codec_options=_RAW).find(batch_size=self.batch_docs):
            batch.append(doc)
            size += len(doc.raw)
            if len(batch) >= self.batch_docs or size >= _BATCH_BYTES:
                self._insert(target, batch, size)
                batch, size = [], 0
        if batch:
            self._insert(target, batch, size)
        now: list[Any] = []
        later: list[Any] = []
        for index in src.get_collection(name).list_indexes():
            if index["name"] == "_id_":
                continue
            spec = dict(index)
            spec.pop("ns", None)
            (later if defer_unique and spec.get("unique") else now).append(spec)
        if now:
            dst.command({"createIndexes": name, "indexes": now})
        if later:
            self.unique.append((dst.name, name, later))
        self.report["collections"] += 1
        self.report["indexes"] += len(now) + len(later)

    def _insert(self, target: Any, batch: list[RawBSONDocument], size: int) -> None:
        began = time.monotonic()
        target.insert_many(batch, ordered=True, bypass_document_validation=True)
        self.report["documents"] += len(batch)
        self.report["bytes"] += size
        self._pace(began)

    def _pace(self, began: float) -> None:
        """Rests after a batch begun at ``began``, so that the work takes at most ``share`` of the time:
        a rate bound, not a wait for anything (see DEFAULT_COPY_SHARE)."""
        if self.paced and self.share < 1.0:
            worked = time.monotonic() - began
            time.sleep(worked * (1.0 / self.share - 1.0))

    def catch_up(self, until: tuple[int, int], deadline: float) -> None:
        """Replays each stream's changes up to the cluster time ``until``."""
        for name, stream in self.streams.items():
            pending: list[Any] = []
            # Paced from the batch's first read: reading and decoding the events is most of the work.
            began = time.monotonic()
            while True:
                event = stream.try_next()
                if event is not None:
                    pending.append(event)
                    if len(pending) >= self.batch_docs:
                        self._apply(name, pending)
                        self._pace(began)
                        pending, began = [], time.monotonic()
                    at = event["clusterTime"]
                    if (at.time, at.inc) >= until:
                        break
                    continue
                at = _token_time(stream.resume_token)
                if at is None:
                    raise TenantMoveError("a change stream resume token of an unknown format")
                if at >= until:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the source's last changes were not all read in time")
            self._apply(name, pending)

    def _apply(self, name: str, events: list[Any]) -> None:
        writes: dict[str, list[Any]] = {}
        for event in events:
            kind = event["operationType"]
            if kind in ("insert", "update", "replace"):
                doc = event.get("fullDocument")
                if doc is None:  # deleted since: its delete follows
                    continue
                op: Any = ReplaceOne(event["documentKey"], doc, upsert=True)
            elif kind == "delete":
                op = DeleteOne(event["documentKey"])
            else:
                coll = event.get("ns", {}).get("coll")
                raise TenantMoveError(
                    f"the tenant's collections changed during the copy ({kind} on {name}.{coll}): "
                    "move it again"
                )
            writes.setdefault(event["ns"]["coll"], []).append(op)
        for coll, ops in writes.items():
            target = self.dst[name][coll]
            try:
                target.bulk_write(ops, ordered=True, bypass_document_validation=True)
            except BulkWriteError as exc:
                built = self.built.pop((name, coll), None)
                if built is None or not any(
                    e.get("code") == 11000 for e in exc.details.get("writeErrors", ())
                ):
                    raise
                # A unique value passing between documents can collide in an intermediate state: those
                # indexes are built at the pause instead. (The replay is idempotent: replayed again.)
                for spec in built:
                    target.drop_index(spec["name"])
                self.unique.append((name, coll, built))
                target.bulk_write(ops, ordered=True, bypass_document_validation=True)
            self.report["replayed"] += len(ops)

    def build_unique(self, online: bool) -> None:
        """The unique indexes deferred so far. Online, one the copy's current state breaks is deferred
        again (to the pause, when the state is the source's)."""
        deferred, self.unique = self.unique, []
        for db, coll, specs in deferred:
            try:
                self.dst[db].command({"createIndexes": coll, "indexes": specs})
            except OperationFailure as exc:
                if not online or exc.code != 11000:
                    raise
                self.unique.append((db, coll, specs))
            else:
                if online:
                    self.built[(db, coll)] = specs

    def source_time(self) -> tuple[int, int]:
        reply = self.src.admin.command("ping")
        at = reply.get("operationTime") or reply["$clusterTime"]["clusterTime"]
        return at.time, at.inc

    def verify(self) -> None:
        for name in self.databases:
            _verify(self.src[name], self.dst[name])

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
        self.src.close()
        self.dst.close()


def move_tenant(
    manager: UserConnectionManager,
    user_id: str,
    to: str,
    keep_source: bool,
    timeout: float,
    copy_batch_docs: int = DEFAULT_COPY_BATCH_DOCS,
    copy_share: float = DEFAULT_COPY_SHARE,
) -> dict[str, Any]:
    from .placement import Router, platform_options

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
    if isinstance(copy_batch_docs, bool) or not isinstance(copy_batch_docs, int) or copy_batch_docs < 1:
        raise ConfigurationError(f"copy_batch_docs must be a positive int, got {copy_batch_docs!r}")
    if isinstance(copy_share, bool) or not isinstance(copy_share, (int, float)) or not 0 < copy_share <= 1:
        raise ConfigurationError(
            f"copy_share must be a number in (0, 1] (the share of the time the copy may work), "
            f"got {copy_share!r}"
        )
    if to not in router.cores:
        raise ConfigurationError(
            f"cannot move tenant {user_id!r} to {to!r}: deployments are {sorted(router.cores)}"
        )
    entry = catalog.lookup(user_id)
    if entry is not None and entry.get("state") in ("copying", "moving"):
        raise InvalidOperation(f"tenant {user_id!r} is already being moved to {entry.get('to')!r}")
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
        "replayed": 0,
        "copy_seconds": 0.0,
    }
    deadline = time.monotonic() + timeout
    step = "checking the source and the target"
    options = platform_options(manager)
    try:
        src, dst = _clients(router, uris, source, to, options)
    except WaitQueueTimeoutError as exc:
        raise TenantMoveError(
            f"moving tenant {user_id!r} from {source!r} to {to!r} did not begin: {exc}; the tenant stays "
            f"on {source!r} and serves there"
        ) from exc
    try:
        copy = _Copy(src, dst, databases, report, copy_batch_docs, float(copy_share))
    except BaseException:
        src.close()
        dst.close()
        raise
    r = None
    timings: dict[str, float] = {}
    report["steps"] = timings
    clock = [time.monotonic()]

    def mark(done: str) -> None:
        now = time.monotonic()
        timings[done] = round(now - clock[0], 4)
        clock[0] = now

    copied = False
    move_id, epoch = "", 0
    began = False
    try:
        copy.check(to)
        step = "claiming the tenant in the catalog"
        move_id, epoch = catalog.claim_move(user_id, entry, source, to)
        began = True
        if copy.online:
            step = "copying while the tenant serves"
            try:
                copy.open_streams()
            except OperationFailure as exc:
                # Before MongoDB 6.0 a stream cannot show collection and index changes: copy paused.
                logger.info("tenant %r: copied while paused (no online copy: %s)", user_id, exc)
                copy.online = False
        if copy.online:
            copied = True
            copy.paced = True
            copy.copy(defer_unique=True)
            mark(step)
            step = "replaying the changes made during the copy"
            # Rounds up to the time each begins, while they shorten: what is left for the pause is what
            # came during the last one. Unique indexes after the first, so the pause does not build them.
            for n in range(1, 5):
                # Paced in the first round only: later rounds are short, unless pacing makes the replay
                # fall behind the tenant's writes, and what is left then lands in the pause (2.2 s once,
                # every round paced, against 0.3 s).
                copy.paced = n == 1
                began_round = time.monotonic()
                copy.catch_up(copy.source_time(), deadline)
                if n == 1:
                    copy.build_unique(online=True)
                mark(f"{step} (round {n})")
                if time.monotonic() - began_round < 0.5:
                    break
            copy.paced = False
        step = "recording the move in the catalog"
        r = router.close_gate(user_id, to)
        paused = time.monotonic()
        catalog.begin_pause(user_id, move_id)
        step = "waiting for its operations in flight"
        if not router.drain(r, max(deadline - time.monotonic(), 0.0)):
            raise TimeoutError("its operations in flight did not finish in time")
        mark(step)
        step = "waiting for the other managers to pause it"
        catalog.wait_acks(user_id, move_id, deadline)
        mark(step)
        if copy.online:
            step = "replaying the last changes"
            copy.catch_up(copy.source_time(), deadline)
            mark(step)
            step = "building unique indexes"
            copy.build_unique(online=False)
            mark(step)
        else:
            step = "copying"
            copied = True
            copy.copy(defer_unique=False)
            mark(step)
        step = "verifying the copy"
        copy.verify()
        mark(step)
        step = "recording the new deployment in the catalog"
        catalog.end_move(user_id, move_id, to, epoch + 1)
        mark(step)
    except BaseException as exc:
        if copied:
            for name in databases:
                try:
                    copy.dst.drop_database(name)
                except PyMongoError:
                    logger.warning(
                        "tenant %r: its partial copy in %r on %r could not be dropped", user_id, name, to
                    )
        if began:
            try:
                catalog.end_move(user_id, move_id, source, epoch)
            except PyMongoError:
                logger.exception("tenant %r: its catalog entry could not be restored to %r", user_id, source)
        if r is not None:
            router.open_gate(r)
        copy.close()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise TenantMoveError(
            f"moving tenant {user_id!r} from {source!r} to {to!r} failed while {step}: {exc}; "
            f"the tenant stays on {source!r} and serves there"
        ) from exc
    router.open_gate(r, to, epoch + 1)
    report["pause_seconds"] = time.monotonic() - paused
    report["documents_per_second"] = report["documents"] / max(report["copy_seconds"], 1e-9)
    try:
        router.cores[source].close_tenant(user_id)
        if not keep_source:
            for name in databases:
                copy.src.drop_database(name)
        report["source_dropped"] = not keep_source
    except PyMongoError as exc:
        logger.warning(
            "tenant %r moved to %r, but its source databases on %r stay: %s", user_id, to, source, exc
        )
        report["source_dropped"] = False
    finally:
        copy.close()
    logger.info(
        "moved tenant %r from %r to %r: %d documents copied in %.2fs, %d changes replayed, paused %.2fs",
        user_id,
        source,
        to,
        report["documents"],
        report["copy_seconds"],
        report["replayed"],
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
