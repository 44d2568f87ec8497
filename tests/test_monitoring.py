"""Command monitoring, pymongo's way (issue 19, item 2): ``event_listeners`` and listeners registered
with ``pymongo.monitoring.register`` get pymongo's command events, with the tenant, for every command
tenantpool sends; OpenTelemetry's pymongo instrumentation traces tenantpool's traffic. Against the
real mongod.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections.abc import Iterator

import pytest
from bson.codec_options import CodecOptions
from pymongo import monitoring
from pymongo.errors import OperationFailure

from tenantpool import AsyncUserConnectionManager, UserConnectionManager
from tenantpool.monitoring import command_publisher

_ids = itertools.count()


def tenant(prefix: str = "m") -> str:
    return f"{prefix}{os.getpid()}_{next(_ids)}"


class Recorder(monitoring.CommandListener):
    """Keeps every event; ``wait_for(name)`` waits for a command's succeeded event from a task of the
    driver's own (killCursors after a close)."""

    def __init__(self) -> None:
        self.events: list = []
        self._cond = threading.Condition()

    def _add(self, event) -> None:
        if event.command_name == "endSessions":
            # Sent by a closed client's shutdown, in the background, whenever it runs: not part of what
            # the tests below count.
            return
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    started = succeeded = failed = _add

    def of(self, kind: type, name: str | None = None) -> list:
        return [e for e in self.events if isinstance(e, kind) and (name is None or e.command_name == name)]

    def names(self, kind: type = monitoring.CommandStartedEvent) -> list[str]:
        return [e.command_name for e in self.of(kind)]

    def wait_for(self, name: str, timeout: float = 10.0) -> monitoring.CommandSucceededEvent:
        with self._cond:
            assert self._cond.wait_for(lambda: self.of(monitoring.CommandSucceededEvent, name), timeout), (
                f"no succeeded {name} event within {timeout}s: {self.names()}"
            )
            return self.of(monitoring.CommandSucceededEvent, name)[0]


@pytest.fixture
def clean_global_listeners() -> Iterator[None]:
    """pymongo's global listeners are process-wide: put them back as they were (other tests' clients
    must not inherit ours)."""
    saved = [list(lst) for lst in monitoring._LISTENERS]
    yield
    for lst, before in zip(monitoring._LISTENERS, saved):
        lst[:] = before


def assert_pairs(recorder: Recorder, tenant_id: str, db_name: str) -> None:
    """Every started event has exactly one succeeded or failed event of the same request, connection
    and operation, and all carry the tenant and the database."""
    started = recorder.of(monitoring.CommandStartedEvent)
    finished = recorder.of(monitoring.CommandSucceededEvent) + recorder.of(monitoring.CommandFailedEvent)
    assert started and len(started) == len(finished), recorder.events
    by_request = {e.request_id: e for e in finished}
    for s in started:
        f = by_request[s.request_id]
        same = ("command_name", "connection_id", "operation_id")
        assert [getattr(f, k) for k in same] == [getattr(s, k) for k in same]
        assert s.tenant == f.tenant == tenant_id
        assert s.database_name == f.database_name == db_name
        assert isinstance(s.connection_id, tuple) and isinstance(s.connection_id[1], int)
        assert f.duration_micros >= 0
        assert s.command[s.command_name] is not None and "$db" not in s.command


def test_crud_events_carry_pymongos_fields_and_the_tenant(mongodb_uri):
    rec = Recorder()
    a = tenant()
    with UserConnectionManager(mongodb_uri, event_listeners=[rec]) as m:
        coll = m.get_database(a).things
        coll.insert_one({"_id": 1, "x": 1})
        assert coll.find_one({"_id": 1}) == {"_id": 1, "x": 1}
        coll.update_one({"_id": 1}, {"$set": {"x": 2}})
        coll.delete_one({"_id": 1})
        assert coll.count_documents({}) == 0
    assert rec.names() == ["insert", "find", "update", "delete", "aggregate"]
    assert_pairs(rec, a, f"user_{a}_db")
    insert = rec.of(monitoring.CommandStartedEvent, "insert")[0]
    assert insert.command["insert"] == "things" and insert.command["documents"] == [{"_id": 1, "x": 1}]
    assert type(insert).__name__ == "TenantCommandStartedEvent"
    reply = rec.of(monitoring.CommandSucceededEvent, "insert")[0].reply
    assert reply["ok"] == 1 and reply["n"] == 1
    found = rec.of(monitoring.CommandSucceededEvent, "find")[0].reply
    assert found["cursor"]["firstBatch"] == [{"_id": 1, "x": 1}]
    # One operation, one operation id; another operation, another.
    assert len({e.operation_id for e in rec.of(monitoring.CommandStartedEvent)}) == 5


def test_the_drivers_typed_operations_are_delivered(mongodb_uri):
    rec = Recorder()
    a = tenant("typed")
    with UserConnectionManager(mongodb_uri, event_listeners=[rec]) as m:
        db = m.get_database(a)
        db.c.create_index("x")
        db.c.insert_many([{"x": i} for i in range(3)])
        assert sorted(db.c.distinct("x")) == [0, 1, 2]
        assert db.c.find_one_and_update({"x": 1}, {"$set": {"y": 1}})["x"] == 1
        assert db.c.estimated_document_count() == 3
        assert db.list_collection_names() == ["c"]
        db.c.drop()
    assert rec.names() == [
        "createIndexes",
        "insert",
        "distinct",
        "findAndModify",
        "count",
        "listCollections",
        "drop",
    ]
    assert_pairs(rec, a, f"user_{a}_db")


def test_cursor_getmores_and_killcursors_are_delivered(mongodb_uri):
    rec = Recorder()
    a = tenant()
    with UserConnectionManager(mongodb_uri, event_listeners=[rec]) as m:
        coll = m.get_database(a).items
        coll.insert_many([{"_id": i} for i in range(10)])
        assert len(list(coll.find().batch_size(3))) == 10
        getmores = rec.of(monitoring.CommandStartedEvent, "getMore")
        assert len(getmores) >= 3 and all(e.tenant == a for e in getmores)
        assert getmores[0].command["collection"] == "items"
        cursor = coll.find().batch_size(2)
        next(cursor)
        cursor.close()
        killed = rec.wait_for("killCursors")
    assert killed.tenant == a
    assert killed.reply["cursorsKilled"], killed.reply


def test_a_server_error_is_a_failed_event_with_the_servers_reply(mongodb_uri):
    rec = Recorder()
    a = tenant()
    with UserConnectionManager(mongodb_uri, event_listeners=[rec]) as m:
        with pytest.raises(OperationFailure) as info:
            m.get_database(a).c.find_one({"$bogus": 1})
    (failed,) = rec.of(monitoring.CommandFailedEvent)
    assert failed.command_name == "find" and failed.tenant == a
    assert failed.failure["code"] == info.value.code == 2
    assert failed.failure["codeName"] == "BadValue" and "$bogus" in failed.failure["errmsg"]
    assert failed.database_name == f"user_{a}_db"


@pytest.mark.parametrize("strategy", ["per_user", "shared"])
def test_transaction_commit_and_abort_are_delivered(mongodb_uri, strategy):
    rec = Recorder()
    a = tenant("tx")
    with UserConnectionManager(mongodb_uri, strategy=strategy, event_listeners=[rec]) as m:
        m.get_database(a).c.insert_one({"_id": 0})  # the collection exists before the transactions
        client = m.get_client(a)
        with client.start_session() as s:
            with s.start_transaction():
                client[f"user_{a}_db"].c.insert_one({"_id": 1}, session=s)
            s.start_transaction()
            client[f"user_{a}_db"].c.insert_one({"_id": 2}, session=s)
            s.abort_transaction()
        assert m.get_database(a).c.count_documents({}) == 2
    assert rec.names() == ["insert", "insert", "commitTransaction", "insert", "abortTransaction", "aggregate"]
    commit = rec.of(monitoring.CommandStartedEvent, "commitTransaction")[0]
    assert commit.tenant == a and commit.database_name == "admin"
    in_transaction = rec.of(monitoring.CommandStartedEvent, "insert")[1]
    assert commit.command["txnNumber"] == in_transaction.command["txnNumber"]
    for name in ("commitTransaction", "abortTransaction"):
        (done,) = rec.of(monitoring.CommandSucceededEvent, name)
        assert done.tenant == a and done.reply["ok"] == 1


@pytest.mark.parametrize("strategy", ["per_user", "grouped", "shared"])
def test_each_event_names_its_tenant_in_every_strategy(mongodb_uri, strategy):
    rec = Recorder()
    tenants = [tenant(strategy[0]) for _ in range(3)]
    with UserConnectionManager(mongodb_uri, strategy=strategy, groups=2, event_listeners=[rec]) as m:
        for t in tenants:
            m.get_database(t).c.insert_one({"t": t})
        threads = [threading.Thread(target=m.get_database(t).c.find_one, args=({"t": t},)) for t in tenants]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    started = rec.of(monitoring.CommandStartedEvent)
    assert len(started) == 6
    for e in started:
        assert e.database_name == f"user_{e.tenant}_db", e
        if e.command_name == "insert":
            assert e.command["documents"][0]["t"] == e.tenant
        else:
            assert e.command["filter"] == {"t": e.tenant}
    assert sorted(e.tenant for e in started) == sorted(tenants * 2)


@pytest.mark.parametrize("strategy", ["per_user", "shared"])
def test_async_events(mongodb_uri, strategy):
    rec = Recorder()
    a, b = tenant("a"), tenant("b")

    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, strategy=strategy, event_listeners=[rec]) as m:
            for t in (a, b):
                await m.get_database(t).c.insert_many([{"i": i} for i in range(5)])
            docs = await asyncio.gather(*(m.get_database(t).c.find().batch_size(2).to_list() for t in (a, b)))
            assert [len(d) for d in docs] == [5, 5]

    asyncio.run(main())
    for t in (a, b):
        mine = [e for e in rec.events if e.tenant == t]
        assert [e.command_name for e in mine if isinstance(e, monitoring.CommandStartedEvent)] == [
            "insert",
            "find",
            "getMore",
            "getMore",
        ]
        assert all(e.database_name == f"user_{t}_db" for e in mine)


def test_a_raising_listener_is_logged_and_the_operation_goes_on(mongodb_uri, caplog):
    class Broken(monitoring.CommandListener):
        def started(self, event):
            raise RuntimeError("listener bug")

        def succeeded(self, event):
            raise ValueError("listener bug too")

        def failed(self, event):
            pass

    rec = Recorder()
    a = tenant()
    with caplog.at_level(logging.ERROR, logger="tenantpool.monitoring"):
        with UserConnectionManager(mongodb_uri, event_listeners=[Broken(), rec]) as m:
            m.get_database(a).c.insert_one({"_id": 1})
            assert m.get_database(a).c.find_one() == {"_id": 1}
    assert rec.names() == ["insert", "find"]
    assert len(rec.of(monitoring.CommandSucceededEvent)) == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "tenantpool.monitoring"]
    messages = [msg for msg in messages if "endSessions" not in msg]  # the closed client's, in the background
    assert len(messages) == 4 and all("raised" in msg for msg in messages)


def test_globally_registered_listeners_are_taken_at_creation(mongodb_uri, clean_global_listeners):
    before, after = Recorder(), Recorder()
    monitoring.register(before)
    a = tenant()
    with UserConnectionManager(mongodb_uri) as m:
        monitoring.register(after)  # as with MongoClient: too late for this manager
        m.get_database(a).c.insert_one({"_id": 1})
    assert before.names() == ["insert"] and before.events[0].tenant == a
    assert after.events == []


def test_no_listener_no_publisher_and_bad_listeners_are_refused():
    codec = CodecOptions()
    assert command_publisher(None, codec) is None
    assert command_publisher([], codec) is None

    class Servers(monitoring.ServerListener):
        def opened(self, event):
            pass

        def description_changed(self, event):
            pass

        def closed(self, event):
            pass

    assert command_publisher([Servers()], codec) is None
    with pytest.raises(TypeError, match="event_listeners"):
        UserConnectionManager("mongodb://127.0.0.1:1/", event_listeners=[object()])
    with pytest.raises(TypeError, match="event_listeners"):
        UserConnectionManager("mongodb://127.0.0.1:1/", event_listeners=object())


def test_credentials_never_reach_a_listener(auth_mongod):
    rec = Recorder()
    a = tenant("cred")
    password = f"s3cret-{a}-pw"
    with UserConnectionManager(
        auth_mongod.uri, event_listeners=[rec], credentials=lambda user_id: (user_id, password)
    ) as m:
        m.provision_tenant(a, password)
        db = m.get_database(a)
        db.c.insert_one({"_id": 1})
        assert db.c.find_one() == {"_id": 1}
    assert {"createUser", "insert", "find"} <= set(rec.names()), rec.names()
    for e in rec.events:
        text = "".join(repr(getattr(e, k, None)) for k in ("command", "reply", "failure"))
        assert password not in text and auth_mongod.admin_password not in text, e
        if e.command_name.lower() in monitoring._SENSITIVE_COMMANDS:
            assert getattr(e, "command", {}) == {} and getattr(e, "reply", {}) == {}, e
    create = rec.of(monitoring.CommandStartedEvent, "createUser")[0]
    assert create.tenant == a


@pytest.fixture
def otel(clean_global_listeners):
    """OpenTelemetry's pymongo instrumentation, exporting to memory, with the tenant as a span attribute
    set by its request hook; uninstrumented afterwards."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def request_hook(span, event):
        span.set_attribute("tenant", getattr(event, "tenant", None) or "")

    instrumentor = PymongoInstrumentor()
    instrumentor.instrument(tracer_provider=provider, request_hook=request_hook)
    try:
        yield provider.get_tracer("app"), exporter
    finally:
        instrumentor.uninstrument()
        # The instrumentor is a singleton that registers its listener once: forget it, so that a
        # later instrument() registers afresh (the fixture above unregisters this one).
        instrumentor._commandtracer_instance = None


def _finished_spans(exporter) -> list:
    """The spans of the test's requests: a closed client's endSessions, sent in the background whenever
    its shutdown runs, is no part of them."""
    return [s for s in exporter.get_finished_spans() if not s.name.endswith(".endSessions")]


def _check_spans(exporter, tenant_id: str, commands: list[str]) -> None:
    spans = _finished_spans(exporter)
    request = [s for s in spans if s.name == "handle-request"]
    assert len(request) == 1
    db_spans = [s for s in spans if s.name != "handle-request"]
    assert [s.name for s in db_spans] == [f"user_{tenant_id}_db.{c}" for c in commands]
    for s in db_spans:
        assert s.attributes["tenant"] == tenant_id
        assert s.parent is not None and s.parent.span_id == request[0].context.span_id
        assert s.context.trace_id == request[0].context.trace_id
        assert s.end_time >= s.start_time


def test_opentelemetry_pymongo_instrumentation_traces_each_command(mongodb_uri, otel):
    tracer, exporter = otel
    a = tenant("otel")
    with UserConnectionManager(mongodb_uri) as m:
        with tracer.start_as_current_span("handle-request"):
            m.get_database(a).c.insert_one({"_id": 1})
            assert m.get_database(a).c.find_one() == {"_id": 1}
    _check_spans(exporter, a, ["insert", "find"])


def test_opentelemetry_parent_span_in_asyncio(mongodb_uri, otel):
    tracer, exporter = otel
    a, b = tenant("oa"), tenant("ob")

    async def request(m, t: str) -> None:
        with tracer.start_as_current_span("handle-request"):
            await m.get_database(t).c.insert_one({})
            await m.get_database(t).c.find_one()

    async def main() -> None:
        async with AsyncUserConnectionManager(mongodb_uri, strategy="shared") as m:
            await request(m, a)
            _check_spans(exporter, a, ["insert", "find"])
            exporter.clear()
            # Two requests at once: each command's span is a child of its own request's span.
            await asyncio.gather(request(m, b), request(m, a))

    asyncio.run(main())
    spans = _finished_spans(exporter)
    requests = {s.context.span_id: s for s in spans if s.name == "handle-request"}
    assert len(requests) == 2
    by_parent: dict[int, set[str]] = {}
    for s in spans:
        if s.name != "handle-request":
            by_parent.setdefault(s.parent.span_id, set()).add(s.attributes["tenant"])
    assert set(by_parent) == set(requests)
    assert sorted(len(v) for v in by_parent.values()) == [1, 1]
    assert {t for v in by_parent.values() for t in v} == {a, b}
