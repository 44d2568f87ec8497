"""What find, find_one and the cursor send (no server): option mapping, and the values the driver's typed
find cannot hold going as pymongo's find command."""

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


def test_plain_find_opens_a_typed_cursor(core, coll):
    assert coll.find().to_list() == []
    call = opened(core)
    assert (call.op, call.db, call.tenant) == ("find", "alice_db", "alice")
    assert call.spec == {"collection": "c", "filter": {}, "options": {}}


@pytest.mark.parametrize(
    "kwargs, options",
    [
        ({"skip": 3}, {"skip": 3}),
        ({"limit": 5}, {"limit": 5}),
        ({"limit": -5}, {"limit": -5}),
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
def test_find_arguments_become_driver_options(core, coll, kwargs, options):
    coll.find({"x": 1}, **kwargs).to_list()
    assert opened(core).spec == {"collection": "c", "filter": {"x": 1}, "options": options}


def test_chained_options_are_the_same_as_arguments(core, coll):
    cursor = coll.find().sort("a", -1).skip(2).limit(4).batch_size(3).max_time_ms(50)
    cursor.hint("a_1").comment("c").allow_disk_use(False).collation({"locale": "en"})
    cursor.where("this.a > 1").to_list()
    assert opened(core).spec == {
        "collection": "c",
        "filter": {"$where": Code("this.a > 1")},
        "options": {
            "skip": 2,
            "limit": 4,
            "batchSize": 3,
            "sort": {"a": -1},
            "collation": {"locale": "en"},
            "hint": "a_1",
            "maxTimeMS": 50,
            "comment": "c",
            "allowDiskUse": False,
        },
    }


def test_max_await_time_ms_only_on_a_tailable_await_cursor(core, coll):
    coll.find().max_await_time_ms(100).to_list()
    assert "maxAwaitTimeMS" not in opened(core).options
    core.calls.clear()
    coll.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(100).to_list()
    assert opened(core).options["maxAwaitTimeMS"] == 100


def test_collection_read_concern_goes_with_the_find(core, db):
    c = db.get_collection("c", read_concern=ReadConcern("majority"))
    c.find().to_list()
    assert opened(core).options == {"readConcern": {"level": "majority"}}


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
    assert opened(core).options == {"skip": 3, "limit": -1}


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


# -- values the driver's options cannot hold: pymongo's find command ----------------------------------


def test_negative_limit_unfit_for_the_driver_goes_as_single_batch_find_command(core, coll):
    # maxTimeMS as a float cannot be the driver's; the limit then goes as pymongo sends it.
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


def test_find_one_on_the_command_path_returns_the_document(core, coll):
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


def test_find_one_without_options_is_one_typed_call(core, coll):
    core.reply({"_id": 1, "a": 2})
    assert coll.find_one({"a": 2}) == {"_id": 1, "a": 2}
    assert (core.last.kind, core.last.op) == ("execute", "find_one")
    assert core.last.spec == {"collection": "c", "filter": {"a": 2}, "options": {}}


def test_find_one_by_id_value(core, coll):
    coll.find_one(5)
    assert core.last.spec["filter"] == {"_id": 5}


def test_find_one_drops_limit_and_batch_size(core, coll):
    coll.find_one({}, sort=[("a", 1)], batch_size=3, projection={"a": 1})
    assert core.last.op == "find_one"
    assert core.last.options == {"projection": {"a": 1}, "sort": {"a": 1}}


@pytest.mark.parametrize("kwargs", [{"allow_disk_use": True}, {"no_cursor_timeout": True}])
def test_find_one_with_options_the_driver_drops_is_a_find_with_limit_minus_one(core, coll, kwargs):
    core.reply([[{"a": 1}]])
    assert coll.find_one({}, **kwargs) == {"a": 1}
    assert opened(core).options["limit"] == -1


def test_find_one_returns_none_when_nothing_matches(core, coll):
    assert coll.find_one({"a": 1}) is None


def test_cursor_distinct_passes_filter_and_options(core, coll):
    core.reply({"values": [1, 2]})
    assert coll.find({"a": {"$gt": 0}}, max_time_ms=10, comment="x").distinct("b") == [1, 2]
    assert core.last.op == "distinct"
    assert core.last.spec == {
        "key": "b",
        "filter": {"a": {"$gt": 0}},
        "options": {"maxTimeMS": 10, "comment": "x"},
        "collection": "c",
    }


def test_explain_uses_a_hard_limit(core, coll):
    coll.find({"a": 1}).limit(3).sort("a").explain()
    assert core.last.command == {
        "explain": {"find": "c", "filter": {"a": 1}, "sort": {"a": 1}, "limit": 3, "singleBatch": True}
    }


def test_a_reply_can_be_computed_from_the_call(core, coll):
    core.reply(lambda call: {"_id": call.spec["filter"]["_id"], "seen": True})
    assert coll.find_one({"_id": 3}) == {"_id": 3, "seen": True}
