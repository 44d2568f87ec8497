"""The tenant catalog: where each placed tenant lives, in MongoDB itself, so that every process agrees.

``tenantpool_catalog.tenants`` on the catalog's deployment holds one document per placed tenant::

    {_id: user_id, deployment: "eu", epoch: 2, state: "active"}                       # serving
    {_id: ..., state: "copying", to: "main", by: <process>, move_id: ...}               # claimed, serving
    {_id: ..., state: "moving", to: "main", by: <process>, move_id: ..., acks: [...]}   # paused everywhere

``tenantpool_catalog.processes`` holds one heartbeat per live manager that uses the catalog. Each
manager watches ``tenants`` (a change stream, on a thread of its own): when a tenant it serves turns
"moving", it closes that tenant's gate, lets its operations in flight finish, and adds itself to the
entry's ``acks``. The mover copies once every live process has acknowledged, so no write of any process
lands on the source after the copy started. When the entry turns "active" again, every process routes
the tenant to the deployment it names and opens its gate.

The catalog is reached with a small pymongo client of its own: it is the platform's, not a tenant's,
and takes its room in the catalog deployment's connection budget (listed as "(catalog)").
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from pymongo.errors import AutoReconnect, DuplicateKeyError, InvalidOperation, PyMongoError

from ._budgeted import BudgetedClient

if TYPE_CHECKING:
    from .placement import Router

logger = logging.getLogger("tenantpool")

CATALOG_DB = "tenantpool_catalog"
# The states of an entry whose tenant is claimed by a mover: being copied (still serving), being moved
# (paused everywhere).
_MOVING = ("copying", "moving")

_LIVE: weakref.WeakSet[Catalog] = weakref.WeakSet()


def _restart_in_child() -> None:
    for catalog in list(_LIVE):
        catalog._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)
# A manager's heartbeat period, and how old a heartbeat may be for the mover to wait for its process.
HEARTBEAT_SECONDS = 2.0
LIVE_SECONDS = 10.0
# The catalog client's pool: the watcher's change stream, the heartbeat and the lookups of tenants not
# resolved yet.
POOL_SIZE = 4


class Catalog:
    def __init__(self, name: str, core: Any, uri: str, router: Router, options: dict[str, Any]) -> None:
        self.name = name
        self._core = core
        self._uri = uri
        self._options = options
        self._router = router
        self._start()
        _LIVE.add(self)
        # Lookups made before the stream is open could miss a change: wait for it (bounded: a catalog
        # that is down makes lookups fail on their own, with a clear error).
        self._ready.wait(5.0)

    def _start(self) -> None:
        # A process of its own, with its own heartbeat: a forked child is one more manager to wait for.
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._client = BudgetedClient(
            self._core, "(catalog)", self._uri, self._options, POOL_SIZE, "tenantpool-catalog"
        )
        db = self._client[CATALOG_DB]
        self.tenants = db["tenants"]
        self.processes = db["processes"]
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._beat_indexed = False
        self._thread = threading.Thread(
            target=self._watch, name=f"tenantpool-catalog-{self.name}", daemon=True
        )
        self._thread.start()

    def _after_fork(self) -> None:
        # The watcher thread did not survive the fork, and the parent's pymongo client must not be used
        # here: without a new watcher and heartbeat, a mover would not wait for this process's writes.
        if not self._stop.is_set():
            self._router.after_fork()
            self._start()

    # -- lookups ----------------------------------------------------------------------------------------

    def lookup(self, user_id: str) -> dict[str, Any] | None:
        try:
            return self.tenants.find_one({"_id": user_id})
        except PyMongoError as exc:
            raise AutoReconnect(
                f"the tenant catalog on deployment {self.name!r} is unreachable, so where tenant {user_id!r} "
                f"lives is unknown: {exc}"
            ) from exc

    def place(self, user_id: str, deployment: str) -> None:
        """Records where a tenant lives (one not being moved)."""
        try:
            self.tenants.update_one(
                {"_id": user_id, "state": {"$nin": list(_MOVING)}},
                {"$set": {"deployment": deployment, "state": "active"}, "$setOnInsert": {"epoch": 0}},
                upsert=True,
            )
        except DuplicateKeyError:
            raise InvalidOperation(
                f"tenant {user_id!r} is being moved: place it once the move is done"
            ) from None

    # -- moves -----------------------------------------------------------------------------------------------

    def claim_move(self, user_id: str, entry: dict[str, Any] | None, source: str, to: str) -> tuple[str, int]:
        """Claims the tenant for one move (state "copying": it still serves, every process routes it to
        its source): a second mover is refused, and only the claimant ever drops a copy on the target."""
        move_id = uuid.uuid4().hex
        fields = {"state": "copying", "to": to, "by": self.token, "move_id": move_id, "acks": []}
        if entry is None:
            try:
                self.tenants.insert_one({"_id": user_id, "deployment": source, "epoch": 0, **fields})
            except DuplicateKeyError:
                raise InvalidOperation(
                    f"the catalog entry of tenant {user_id!r} appeared while its move began: retry the move"
                ) from None
            return move_id, 0
        if entry.get("state") in _MOVING:
            raise InvalidOperation(
                f"tenant {user_id!r} is already being moved to {entry.get('to')!r} "
                f"(by process {entry.get('by')}); wait for that move to finish"
            )
        epoch = int(entry.get("epoch", 0))
        done = self.tenants.update_one(
            {"_id": user_id, "state": {"$nin": list(_MOVING)}, "deployment": source, "epoch": epoch},
            {"$set": fields},
        )
        if done.matched_count != 1:
            raise InvalidOperation(
                f"the catalog entry of tenant {user_id!r} changed while its move began (another move?): retry"
            )
        return move_id, epoch

    def begin_pause(self, user_id: str, move_id: str) -> None:
        """ "moving": every process pauses the tenant and acknowledges."""
        done = self.tenants.update_one(
            {"_id": user_id, "move_id": move_id, "state": "copying"}, {"$set": {"state": "moving"}}
        )
        if done.matched_count != 1:
            raise InvalidOperation(f"the catalog entry of tenant {user_id!r} changed during its move")

    def live_processes(self) -> set[str]:
        """The managers whose heartbeat is recent (by the server's clock)."""
        fresh = {"$expr": {"$gte": ["$at", {"$subtract": ["$$NOW", int(LIVE_SECONDS * 1000)]}]}}
        return {p["_id"] for p in self.processes.find(fresh, {"_id": 1})}

    def recover_move(self, user_id: str) -> dict[str, Any]:
        """Ends a move whose mover died: the entry back to "active" on its source. Refused while the
        mover's heartbeat is fresh (it may still finish)."""
        entry = self.tenants.find_one({"_id": user_id})
        if entry is None or entry.get("state") not in _MOVING:
            raise InvalidOperation(f"tenant {user_id!r} is not being moved")
        if entry.get("by") in self.live_processes():
            raise InvalidOperation(
                f"tenant {user_id!r} is being moved by process {entry.get('by')}, which is alive: wait for "
                "its move to finish or fail"
            )
        self.end_move(user_id, entry["move_id"], str(entry["deployment"]), int(entry.get("epoch", 0)))
        return entry

    def wait_acks(self, user_id: str, move_id: str, deadline: float) -> None:
        """Until every other live manager has paused the tenant (or the deadline: TimeoutError)."""
        while True:
            live = self.live_processes()
            entry = self.tenants.find_one({"_id": user_id, "move_id": move_id}, {"acks": 1})
            if entry is None:
                raise InvalidOperation(f"the catalog entry of tenant {user_id!r} changed during its move")
            missing = live - set(entry.get("acks", ())) - {self.token}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"managers {sorted(missing)} did not pause the tenant in time")
            # The acknowledgements come from other processes: polled, at a short period.
            time.sleep(0.02)

    def end_move(self, user_id: str, move_id: str, deployment: str, epoch: int) -> None:
        done = self.tenants.update_one(
            {"_id": user_id, "move_id": move_id},
            {
                "$set": {"deployment": deployment, "state": "active", "epoch": epoch},
                "$unset": {"to": "", "by": "", "move_id": "", "acks": ""},
            },
        )
        if done.matched_count != 1:
            raise InvalidOperation(f"the catalog entry of tenant {user_id!r} changed during its move")

    # -- the watcher ------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        if not self._beat_indexed:
            # The heartbeats of processes gone without closing their manager expire on their own.
            self.processes.create_index("at", expireAfterSeconds=3600)
            self._beat_indexed = True
        self.processes.update_one({"_id": self.token}, [{"$set": {"at": "$$NOW"}}], upsert=True)

    def _watch(self) -> None:
        token = None
        while not self._stop.is_set():
            try:
                with self.tenants.watch(
                    full_document="updateLookup", resume_after=token, max_await_time_ms=500
                ) as stream:
                    if token is None:
                        # Missed changes (first start, or the stream could not resume): forget the cache,
                        # and pause (and acknowledge) the moves begun before the stream opened, as their
                        # movers may be waiting for this process since its heartbeat appeared.
                        self._router.forget_all()
                        for entry in self.tenants.find({"state": "moving"}):
                            self._changed({"documentKey": {"_id": entry["_id"]}, "fullDocument": entry})
                    self._ready.set()
                    beat = 0.0
                    while not self._stop.is_set():
                        if time.monotonic() - beat > HEARTBEAT_SECONDS:
                            self._heartbeat()
                            beat = time.monotonic()
                        change = stream.try_next()
                        if change is not None:
                            self._changed(change)
                        token = stream.resume_token
            except PyMongoError as exc:
                if self._stop.is_set():
                    return
                logger.warning(
                    "the tenant catalog's change stream on %r failed (%s): reopening it", self.name, exc
                )
                # ChangeStreamFatalError, ChangeStreamHistoryLost: the stream cannot resume where it was.
                if getattr(exc, "code", None) in (280, 286) or "resume" in str(exc).lower():
                    token = None
                self._stop.wait(1.0)
            except Exception:  # never let the watcher die silently: the cache would go stale
                logger.exception("the tenant catalog's watcher failed: reopening it")
                token = None
                self._stop.wait(1.0)

    def _changed(self, change: dict[str, Any]) -> None:
        user_id = change.get("documentKey", {}).get("_id")
        if not isinstance(user_id, str):
            return
        doc = change.get("fullDocument")
        router = self._router
        router.catalog_changed()
        if doc is None:
            router.forget(user_id)
            return
        if doc.get("state") == "moving":
            if doc.get("by") == self.token or self.token in doc.get("acks", ()):
                return
            r = router.pause(user_id, str(doc["deployment"]), int(doc.get("epoch", 0)), doc.get("to"))
            move_id = doc.get("move_id")
            threading.Thread(target=self._ack, args=(user_id, r, move_id), daemon=True).start()
            return
        cached = router.cached(user_id)
        if cached is not None:
            router.open_gate(cached, str(doc["deployment"]), int(doc.get("epoch", 0)))

    def _ack(self, user_id: str, r: Any, move_id: Any) -> None:
        if not self._router.drain(r, self._router.move_wait):
            logger.warning("tenant %r: operations still in flight, its move cannot be acknowledged", user_id)
            return
        try:
            self.tenants.update_one(
                {"_id": user_id, "move_id": move_id, "state": "moving"}, {"$addToSet": {"acks": self.token}}
            )
        except PyMongoError as exc:
            logger.warning("tenant %r: its move could not be acknowledged: %s", user_id, exc)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=3.0)
        try:
            self.processes.delete_one({"_id": self.token})
        except PyMongoError:
            pass  # its heartbeat goes stale on its own
        self._client.close()
