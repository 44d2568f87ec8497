"""What find, find_one and the cursor send (no server): pymongo's find command, whatever the options, a
cursor the core continues; find_one as that command with a limit of -1, in one call."""

from __future__ import annotations

import pytest
from bson.code import Code
from pymongo import CursorType
from pymongo.collation import Collation
from pymongo.errors import InvalidOperation, OperationFailure
from pymongo.read_concern import ReadConcern
from tests.unit.fakecore import FakeRawCursor


def opened(core):
    calls = [c for c in core.calls if c.kind == "open_cursor"]
    assert len(calls) == 1, core.calls
    return calls[0]


def test_plain_find_opens_a_command_cursor(core, coll):
    assert coll.find().to_list() == []
    call = opened(core)
    assert (call.op, call.db, call.tenant) == ("command", "alice_db", "alice")
    assert call.spec == {
        "command": {"find": "c", "filter": {}},
        "options": {},
        "retryable": True,
        "causal": True,
    }


@pytest.mark.parametrize(
    "kwargs, options",
    [
        ({"skip": 3}, {"skip": 3}),
        ({"limit": 5}, {"limit": 5}),
        ({"limit": -5}, {"limit": 5, "singleBatch": True}),
        ({"batch_size": 7}, {"batchSize": 7}),
        ({"max_time_ms": 90}, {"maxTimeMS": 90}),
        ({"projection": ["a", "b"]}, {"projection": {"a": 1, "b": 1}}),
        ({"projection": {"a": 0}}, {"projection": {"a": 0}}),
        ({"sort": [("a", -1), ("b", 1)]}, {"sort": {"a": -1, "b": 1}}),
        ({"hint": [("a", 1)]}, {"hint": {"a": 1}}),
        ({"hint": "a_1"}, {"hint": "a_1"}),
        ({"collation": Collation("fr")}, {"collation": {"locale": "fr"}}),
        ({"comment": "why"}, {"comment": "why"}),
        ({"comment": ""}, {}),  # pymongo sends a comment only if it is truthy
        ({"allow_disk_use": True}, {"allowDiskUse": True}),
        ({"no_cursor_timeout": True}, {"noCursorTimeout": True}),
        ({"allow_partial_results": True}, {"allowPartialResults": True}),
        ({"cursor_type": CursorType.TAILABLE}, {"tailable": True}),
        ({"cursor_type": CursorType.TAILABLE_AWAIT}, {"tailable": True, "awaitData": True}),
        ({"return_key": True, "show_record_id": False}, {"returnKey": True, "showRecordId": False}),
        ({"let": {"x": 1}}, {"let": {"x": 1}}),
        (
            {"max": {"a": 9}, "min": {"a": 1}, "hint": "a_1"},
            {"max": {"a": 9}, "min": {"a": 1}, "hint": "a_1"},
        ),
    ],
)
def test_find_arguments_become_command_fields(core, coll, kwargs, options):
    coll.find({"x": 1}, **kwargs).to_list()
    assert opened(core).command == {"find": "c", "filter": {"x": 1}, **options}


def test_chained_options_are_the_same_as_arguments(core, coll):
    cursor = coll.find().sort("a", -1).skip(2).limit(4).batch_size(3).max_time_ms(50)
    cursor.hint("a_1").comment("c").allow_disk_use(False).collation({"locale": "en"})
    cursor.where("this.a > 1").to_list()
    assert opened(core).command == {
        "find": "c",
        "filter": {"$where": Code("this.a > 1")},
        "skip": 2,
        "limit": 4,
        "batchSize": 3,
        "sort": {"a": -1},
        "collation": {"locale": "en"},
        "hint": "a_1",
        "maxTimeMS": 50,
        "comment": "c",
        "allowDiskUse": False,
    }
    # The getMores' options.
    assert opened(core).options == {"batchSize": 3, "comment": "c"}


def test_max_await_time_ms_only_on_a_tailable_await_cursor(core, coll):
    coll.find().max_await_time_ms(100).to_list()
    assert "maxAwaitTimeMS" not in opened(core).options
    core.calls.clear()
    coll.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(100).to_list()
    # A getMore option, not the find command's.
    assert opened(core).options["maxAwaitTimeMS"] == 100
    assert "maxAwaitTimeMS" not in opened(core).command


def test_collection_read_concern_goes_with_the_find(core, db):
    c = db.get_collection("c", read_concern=ReadConcern("majority"))
    c.find().to_list()
    assert opened(core).command == {"find": "c", "filter": {}, "readConcern": {"level": "majority"}}


def test_min_without_hint_is_refused_before_sending(core, coll):
    with pytest.raises(InvalidOperation, match="hint"):
        coll.find(min=[("a", 1)]).to_list()
    assert core.calls == []


@pytest.mark.parametrize("kwargs", [{"oplog_replay": True}, {"max_scan": 5}, {"snapshot": True}])
def test_removed_server_features_are_refused(coll, kwargs):
    with pytest.raises(InvalidOperation, match="not supported by tenantpool"):
        coll.find(**kwargs)


def test_exhaust_is_refused(coll):
    with pytest.raises(InvalidOperation, match="exhaust cursors are not supported"):
        coll.find(cursor_type=CursorType.EXHAUST)
    with pytest.raises(InvalidOperation, match="limit and exhaust"):
        coll.find(limit=1, cursor_type=CursorType.EXHAUST)
    with pytest.raises(InvalidOperation, match="only the tailable"):
        coll.find().add_option(1)


def test_batches_are_fetched_as_iteration_needs_them(core, coll):
    raw = FakeRawCursor([{"a": 1}, {"a": 2}], [{"a": 3}])
    core.reply(raw)
    cursor = coll.find()
    assert next(cursor) == {"a": 1}
    assert [c.kind for c in core.calls] == ["open_cursor", "next_batch"]
    assert cursor.retrieved == 2
    assert [d["a"] for d in cursor] == [2, 3]
    assert [c.kind for c in core.calls] == ["open_cursor", "next_batch", "next_batch", "next_batch"]
    assert not cursor.alive
    with pytest.raises(InvalidOperation, match="cannot set options after executing query"):
        cursor.limit(1)


def test_close_releases_the_core_cursor(core, coll):
    raw = FakeRawCursor([{"a": 1}], [{"a": 2}])
    core.reply(raw)
    with coll.find() as cursor:
        next(cursor)
    assert raw.closed and not cursor.alive


def test_to_list_length_stops_early(core, coll):
    core.reply(FakeRawCursor([{"a": 1}, {"a": 2}], [{"a": 3}]))
    assert coll.find().to_list(1) == [{"a": 1}]
    assert [c.kind for c in core.calls] == ["open_cursor", "next_batch"]


def test_slice_with_zero_length_sends_nothing(core, coll):
    assert list(coll.find()[3:3]) == []
    assert core.calls == []


def test_index_is_a_clone_with_skip_and_hard_limit(core, coll):
    core.reply([[{"a": 5}]])
    assert coll.find().skip(1)[2] == {"a": 5}
    assert opened(core).command == {"find": "c", "filter": {}, "skip": 3, "limit": 1, "singleBatch": True}


def test_tailable_cursor_ends_quietly_when_its_position_is_lost(core, coll):
    lost = OperationFailure("CappedPositionLost", 136)
    core.reply(FakeRawCursor([{"a": 1}], lost))
    cursor = coll.find(cursor_type=CursorType.TAILABLE)
    assert cursor.to_list() == [{"a": 1}]
    assert not cursor.alive


def test_a_getmore_error_of_a_plain_cursor_is_raised(core, coll):
    core.reply(FakeRawCursor([{"a": 1}], OperationFailure("CursorNotFound", 43)))
    with pytest.raises(OperationFailure) as info:
        coll.find().to_list()
    assert info.value.code == 43


# -- values the driver's typed options could not hold: the server judges them ---------------------------


def test_negative_limit_goes_as_single_batch_find_command(core, coll):
    coll.find({"x": 1}, limit=-2, max_time_ms=1.5).to_list()
    assert core.sent()[-1].op == "command"
    assert core.sent()[-1].command == {
        "find": "c",
        "filter": {"x": 1},
        "limit": 2,
        "maxTimeMS": 1.5,
        "singleBatch": True,
    }


def test_command_path_returns_every_batch(core, coll):
    # The core opens the command's cursor and continues it with getMore: nothing is cut at a batch.
    core.reply([[{"a": 1}], [{"a": 2}], [{"a": 3}]])
    assert coll.find(max_time_ms=1000.0).to_list() == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert [c.kind for c in core.calls] == ["open_cursor"] + ["next_batch"] * 4
    assert core.sent()[-1].spec["retryable"] is True


def test_find_one_with_any_option_returns_the_document(core, coll):
    core.reply([[{"a": 1}]])
    assert coll.find_one({}, max_time_ms=1000.0) == {"a": 1}
    assert core.sent()[-1].command["singleBatch"] is True


@pytest.mark.parametrize(
    "chain, sent",
    [
        (lambda c: c.skip(0).max_time_ms(-1), {"maxTimeMS": -1}),
        (lambda c: c.limit(True), {"limit": True}),
        (lambda c: c.batch_size(1).skip(1).max_time_ms(-3), {"skip": 1, "batchSize": 1, "maxTimeMS": -3}),
    ],
)
def test_unfit_values_go_to_the_command_path(core, coll, chain, sent):
    chain(coll.find()).to_list()
    assert [c.op for c in core.sent()] == ["command"]
    assert core.sent()[-1].command == {"find": "c", "filter": {}, **sent}


def test_negative_skip_goes_as_command(core, coll):
    coll.find(skip=-1).to_list()
    assert core.sent()[-1].command == {"find": "c", "filter": {}, "skip": -1}


def test_await_data_without_tailable_goes_as_command(core, coll):
    coll.find().add_option(32).to_list()
    assert core.sent()[-1].command == {"find": "c", "filter": {}, "awaitData": True}


def test_command_path_getmore_options_go_with_the_cursor(core, coll):
    coll.find(max_time_ms=-5, batch_size=3, comment="why").to_list()
    (call,) = core.sent()
    assert call.spec["options"] == {"batchSize": 3, "comment": "why"}
    assert call.command["maxTimeMS"] == -5


# -- find_one ----------------------------------------------------------------------------------------


def test_find_one_is_one_call_returning_the_document(core, coll):
    core.reply([[{"_id": 1, "a": 2}]])
    assert coll.find_one({"a": 2}) == {"_id": 1, "a": 2}
    assert [(c.kind, c.op) for c in core.calls] == [("execute", "command")]
    assert core.last.spec == {
        "command": {"find": "c", "filter": {"a": 2}, "limit": 1, "singleBatch": True},
        "retryable": True,
        "causal": True,
    }


def test_find_one_by_id_value(core, coll):
    coll.find_one(5)
    assert core.last.command["filter"] == {"_id": 5}


def test_find_one_keeps_pymongos_options(core, coll):
    coll.find_one({}, sort=[("a", 1)], batch_size=3, projection={"a": 1}, allow_disk_use=True)
    assert core.last.command == {
        "find": "c",
        "filter": {},
        "projection": {"a": 1},
        "limit": 1,
        "batchSize": 3,
        "sort": {"a": 1},
        "allowDiskUse": True,
        "singleBatch": True,
    }


def test_find_one_returns_none_when_nothing_matches(core, coll):
    assert coll.find_one({"a": 1}) is None


def test_cursor_distinct_passes_filter_and_options(core, coll):
    core.reply({"values": [1, 2]})
    assert coll.find({"a": {"$gt": 0}}, max_time_ms=10, comment="x").distinct("b") == [1, 2]
    assert core.last.op == "command"
    assert core.last.spec == {
        "command": {"distinct": "c", "key": "b", "query": {"a": {"$gt": 0}}, "maxTimeMS": 10, "comment": "x"},
        "retryable": True,
        "causal": True,
    }


def test_explain_uses_a_hard_limit(core, coll):
    coll.find({"a": 1}).limit(3).sort("a").explain()
    assert core.last.command == {
        "explain": {"find": "c", "filter": {"a": 1}, "sort": {"a": 1}, "limit": 3, "singleBatch": True}
    }


def test_a_reply_can_be_computed_from_the_call(core, coll):
    core.reply(
        lambda call: {"cursor": {"firstBatch": [{"_id": call.command["filter"]["_id"], "seen": True}]}}
    )
    assert coll.find_one({"_id": 3}) == {"_id": 3, "seen": True}
