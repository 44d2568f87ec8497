"""The differential harness itself: it must see the differences it is meant to catch (no server needed)."""

from __future__ import annotations

from _harness import attempt, compare, run_case
from bson import Int64, ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.results import UpdateResult


class FakeDb:
    name = "diff_x"


def outcome(value):
    return run_case(lambda db: value, FakeDb())


def differences(a, b):
    return compare(outcome(a), outcome(b)).differences


def test_key_order_and_types_matter():
    assert differences({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert differences({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert differences({"n": 1}, {"n": Int64(1)})
    assert differences([1, 2], [1, 2, 3])
    assert differences((1, [2]), (1, [3]))


def test_object_ids_compare_by_pattern_of_appearance():
    a, b, c = ObjectId(), ObjectId(), ObjectId()
    assert differences([a, a, b], [c, c, a]) == []
    assert differences([a, a, b], [a, b, b])


def test_database_name_is_neutral_in_messages():
    assert differences("E11000 collection: diff_x.c", "E11000 collection: diff_x.c") == []
    assert differences("E11000 collection: diff_x.c", "E11000 collection: other.c")


def test_exceptions_compare_class_code_and_shared_detail_keys():
    def raising(exc):
        return lambda db: (_ for _ in ()).throw(exc)

    dup = DuplicateKeyError("dup", 11000, {"code": 11000, "errmsg": "dup", "keyValue": {"a": 1}})
    dup_fewer_keys = DuplicateKeyError("dup", 11000, {"code": 11000, "errmsg": "dup"})
    result = compare(run_case(raising(dup), FakeDb()), run_case(raising(dup_fewer_keys), FakeDb()))
    assert result.differences == []
    assert result.notes == ["result.details: key 'keyValue' only from pymongo"]
    other_class = OperationFailure("dup", 11000, {"code": 11000, "errmsg": "dup"})
    assert compare(run_case(raising(dup), FakeDb()), run_case(raising(other_class), FakeDb())).differences
    other_code = DuplicateKeyError("dup", 11001, {"code": 11000, "errmsg": "dup"})
    assert compare(run_case(raising(dup), FakeDb()), run_case(raising(other_code), FakeDb())).differences
    other_detail = DuplicateKeyError("dup", 11000, {"code": 11000, "errmsg": "other"})
    assert compare(run_case(raising(dup), FakeDb()), run_case(raising(other_detail), FakeDb())).differences


def test_result_objects_compare_by_public_attributes():
    assert (
        differences(
            UpdateResult({"n": 1, "nModified": 1}, True), UpdateResult({"n": 1, "nModified": 1}, True)
        )
        == []
    )
    assert differences(
        UpdateResult({"n": 1, "nModified": 1}, True), UpdateResult({"n": 1, "nModified": 0}, True)
    )
    # Unacknowledged: the counts raise, and the exceptions are compared.
    assert differences(UpdateResult(None, False), UpdateResult(None, False)) == []
    assert differences(UpdateResult(None, False), UpdateResult({"n": 0, "nModified": 0}, True))


def test_attempt_captures_mid_case_errors():
    assert differences(attempt(lambda: 1 / 0), attempt(lambda: 1 / 0)) == []
    assert differences(attempt(lambda: 1 / 0), attempt(lambda: {}["x"]))
