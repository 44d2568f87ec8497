"""A fake of the Rust core, for tests that need no server.

Every operation of Database, Collection, Cursor and ClientSession is a generator yielding core calls
(``tenantpool._calls``) that ``run_sync``/``run_async`` hand to ``call.core``, so a Database built around a
``FakeCore`` runs its real public methods end to end: the fake records what each call would send (its spec
decoded from BSON) and answers with canned replies.

    core = FakeCore()
    db = core.database()                    # Database "alice_db" of tenant "alice"
    core.reply({"n": 1, "nModified": 1})    # the next call's reply (a document, bytes, a FakeRawCursor,
                                            # None, or an exception to raise into the operation)
    db.c.update_one({"a": 1}, {"$set": {"b": 2}})
    call = core.last                        # op "update_one", spec {"collection": "c", "filter": ...}

A call finding no canned reply gets a plausible default (``DEFAULTS``; for the generic ``command`` op, one
shaped after the command), so a test cans only the replies it cares about.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo.read_preferences import ReadPreference

from tenantpool.asynchronous import AsyncTenantClient
from tenantpool.client import TenantClient
from tenantpool.database import Database

USER = "alice"


@dataclass
class Call:
    """One call an operation made to the core."""

    kind: str  # execute, open_cursor, watch, next_batch, session
    op: str | None = None  # the core op ("insert_one", "command"...), or a session's method
    db: str | None = None
    tenant: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    docs: list[dict[str, Any]] | None = None
    session: Any = None

    @property
    def command(self) -> dict[str, Any]:
        """The command of a generic ``command``/``retryable_write`` op."""
        return self.spec["command"]

    @property
    def options(self) -> dict[str, Any]:
        return self.spec.get("options", {})


class FakeRawCursor:
    """A core cursor handing out canned batches (lists of documents), then None."""

    def __init__(self, *batches: list[dict[str, Any]], core: FakeCore | None = None) -> None:
        self.batches = deque(batches)
        self.core = core
        self.closed = False

    def next_batch(self) -> bytes | None:
        if self.core is not None:
            self.core.calls.append(Call("next_batch"))
        if not self.batches:
            return None
        reply = self.batches.popleft()
        if isinstance(reply, BaseException):
            raise reply
        return b"".join(bson.encode(d) for d in reply)

    async def next_batch_async(self) -> bytes | None:
        return self.next_batch()

    def close(self) -> None:
        self.closed = True


class FakeRawChangeStream:
    """A core change stream handing out canned events (documents with an ``_id`` token), then None."""

    def __init__(self, *events: dict[str, Any], initial_token: dict[str, Any] | None = None) -> None:
        self.events = deque(events)
        self.initial_token = None if initial_token is None else bson.encode({"_id": initial_token})
        self.alive = True

    def try_next(self) -> tuple[bytes | None, bytes | None]:
        if not self.events:
            return None, None
        event = self.events.popleft()
        return bson.encode(event), bson.encode({"_id": event["_id"]})

    async def try_next_async(self) -> tuple[bytes | None, bytes | None]:
        return self.try_next()

    def close(self) -> None:
        self.alive = False


class FakeRawSession:
    """A core session: records its transaction steps in the core's calls."""

    def __init__(self, core: FakeCore, snapshot: bool = False) -> None:
        self.core = core
        self.in_transaction = False
        self.snapshot = snapshot
        self.session_id = bson.encode({"id": "fake"})
        self.cluster_time = None
        self.operation_time = None

    def _step(self, method: str, *args: Any) -> None:
        spec = bson.decode(args[0]) if args and args[0] else {}
        self.core.calls.append(Call("session", method, spec=spec))
        error = self.core.step_errors.popleft() if self.core.step_errors else None
        if error is not None:
            raise error
        self.in_transaction = method == "start_transaction"

    def start_transaction(self, spec: Any = None) -> None:
        self._step("start_transaction", spec)

    def commit_transaction(self) -> None:
        self._step("commit_transaction")

    def abort_transaction(self) -> None:
        self._step("abort_transaction")

    async def start_transaction_async(self, spec: Any = None) -> None:
        self.start_transaction(spec)

    async def commit_transaction_async(self) -> None:
        self.commit_transaction()

    async def abort_transaction_async(self) -> None:
        self.abort_transaction()

    def end(self) -> tuple[None, None]:
        return None, None


def _command_default(command: dict[str, Any]) -> dict[str, Any]:
    """The reply of a server that accepted ``command`` and had nothing to say."""
    name = next(iter(command))
    if name in ("insert", "delete"):
        return {"n": len(command["documents" if name == "insert" else "deletes"]), "ok": 1.0}
    if name == "update":
        n = len(command["updates"])
        return {"n": n, "nModified": n, "ok": 1.0}
    if name in ("aggregate", "find", "listIndexes", "listCollections"):
        return {"cursor": {"id": 0, "ns": f"alice_db.{command[name]}", "firstBatch": []}, "ok": 1.0}
    if name == "count":
        return {"n": 0, "ok": 1.0}
    if name == "distinct":
        return {"values": [], "ok": 1.0}
    if name == "findAndModify":
        return {"value": None, "ok": 1.0}
    return {"ok": 1.0}


# The reply of each typed write when a test cans none (shapes of src/core/ops/typed.rs).
DEFAULTS: dict[str, Any] = {
    "insert_one": {},
    "insert_many": {},
    "update_one": {"n": 1, "nModified": 1},
    "replace_one": {"n": 1, "nModified": 1},
    "delete_one": {"n": 1},
    "find_one_and_update": {"value": None},
    "find_one_and_replace": {"value": None},
    "find_one_and_delete": {"value": None},
}

_NO_REPLY = object()


class FakeCore:
    """Stands for ``tenantpool._core.Manager``: records calls, answers with canned replies."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.replies: deque[Any] = deque()
        # What the next session steps (start/commit/abort_transaction) raise, in order (None: nothing).
        self.step_errors: deque[BaseException | None] = deque()

    # -- for tests ------------------------------------------------------------------------------------

    def reply(self, *replies: Any) -> FakeCore:
        """Cans the replies of the next calls, in order: a document (sent as BSON), bytes, None, a
        FakeRawCursor (or a list of batches for one), an exception to raise into the operation, or a
        function of the Call returning one of those."""
        self.replies.extend(replies)
        return self

    def manager(
        self,
        read_preference: Any = ReadPreference.PRIMARY,
        codec: CodecOptions | None = None,
        scope: Any = None,
    ) -> Any:
        """What TenantClient reads of a UserConnectionManager; ``scope``: an IsolationScope, or None as
        under ``isolation="off"``."""
        return SimpleNamespace(
            _core=self,
            _scope=scope,
            codec_options=codec or DEFAULT_CODEC_OPTIONS,
            read_preference=read_preference,
        )

    def client(self, user_id: str = USER, asynchronous: bool = False, **manager: Any) -> TenantClient:
        cls = AsyncTenantClient if asynchronous else TenantClient
        return cls(self.manager(**manager), user_id)  # type: ignore[arg-type]

    def database(self, name: str = "alice_db", asynchronous: bool = False, **kwargs: Any) -> Database:
        manager = {k: kwargs.pop(k) for k in ("read_preference", "codec", "scope") if k in kwargs}
        return self.client(asynchronous=asynchronous, **manager).get_database(name, **kwargs)

    @property
    def last(self) -> Call:
        assert self.calls, "the operation made no core call"
        return self.calls[-1]

    def sent(self, kind: str | None = None) -> list[Call]:
        """The calls that reached the server (not the cursor's batches or the session's steps)."""
        return [c for c in self.calls if c.kind not in ("next_batch", "session") and kind in (None, c.kind)]

    def commands(self) -> list[dict[str, Any]]:
        """The generic commands sent, in order (run for a reply, or opened as a cursor)."""
        return [c.command for c in self.sent() if "command" in c.spec]

    # -- the core's surface ---------------------------------------------------------------------------

    def _next(self) -> Any:
        return self.replies.popleft() if self.replies else _NO_REPLY

    def _answer(self, call: Call, default: Any) -> Any:
        reply = self._next()
        if reply is _NO_REPLY:
            reply = default
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply) and not isinstance(reply, FakeRawCursor):
            reply = reply(call)
        if isinstance(reply, dict):
            return bson.encode(reply)
        return reply

    def execute(self, tenant: str, db_name: str, op: str, spec: bytes, docs: Any, session: Any = None) -> Any:
        decoded = bson.decode(spec)
        call = Call(
            "execute",
            op,
            db_name,
            tenant,
            decoded,
            None if docs is None else [bson.decode(d) for d in docs],
            session,
        )
        self.calls.append(call)
        if op == "command" and self.replies and isinstance(self.replies[0], list):
            # Batches canned for a one-reply cursor command (find_one's find): its first, in the reply.
            batches = self.replies.popleft()
            first = batches[0] if batches else []
            name = next(iter(decoded["command"]))
            cursor = {"id": 0, "ns": f"{db_name}.{decoded['command'][name]}", "firstBatch": first}
            self.replies.appendleft({"cursor": cursor, "ok": 1.0})
        if op in ("command", "retryable_write"):
            default = _command_default(decoded["command"])
        else:
            default = DEFAULTS.get(op, {"ok": 1.0})
        return self._answer(call, default)

    def open_cursor(self, tenant: str, db_name: str, op: str, spec: bytes, session: Any = None) -> Any:
        call = Call("open_cursor", op, db_name, tenant, bson.decode(spec), session=session)
        self.calls.append(call)
        if self.replies and isinstance(self.replies[0], dict) and "cursor" in self.replies[0]:
            # A server's reply canned for a cursor command: its first batch, the cursor's only one.
            self.replies[0] = [self.replies[0]["cursor"]["firstBatch"]]
        reply = self._answer(call, FakeRawCursor(core=self))
        if isinstance(reply, list):
            reply = FakeRawCursor(*reply, core=self)
        elif isinstance(reply, FakeRawCursor):
            reply.core = self
        return reply

    def watch(self, tenant: str, db_name: str, spec: bytes, session: Any = None) -> Any:
        call = Call("watch", "watch", db_name, tenant, bson.decode(spec), session=session)
        self.calls.append(call)
        return self._answer(call, FakeRawChangeStream())

    def start_session(self, user_id: str, causal_consistency: Any, snapshot: bool) -> FakeRawSession:
        return FakeRawSession(self, snapshot)

    def db_name(self, user_id: str) -> str:
        return f"{user_id}_db"

    async def execute_async(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        return self.execute(*args)

    async def open_cursor_async(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        return self.open_cursor(*args)

    async def watch_async(self, *args: Any) -> Any:
        return self.watch(*args)
