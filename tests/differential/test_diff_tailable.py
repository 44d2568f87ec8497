"""Differential cases: tailable cursors on capped collections (``find(cursor_type=...)``), their
``alive`` semantics, the await time, and the option checks pymongo makes or leaves to the server."""

from __future__ import annotations

import pytest
from _harness import attempt, collect_cases, ids, params
from pymongo import CursorType


def capped(db, n=3, **options):
    db.create_collection("cap", capped=True, size=64 * 1024, **options)
    if n:
        db.cap.insert_many([{"_id": i, "v": i * 10} for i in range(n)])


def case_tailable_sees_later_inserts(db):
    capped(db)
    cursor = db.cap.find(cursor_type=CursorType.TAILABLE)
    first = cursor.to_list()
    alive_after_first = cursor.alive
    # An empty getMore ends the iteration, not the cursor.
    empty = list(cursor)
    db.cap.insert_many([{"_id": 3}, {"_id": 4}])
    more = [next(cursor), cursor.next()]
    stop = attempt(cursor.next)
    alive = cursor.alive
    cursor.close()
    return first, alive_after_first, empty, more, stop, alive, cursor.alive, cursor.retrieved


def case_tailable_await_with_max_await_time(db):
    capped(db)
    cursor = db.cap.find({"v": {"$gte": 10}}, cursor_type=CursorType.TAILABLE_AWAIT, batch_size=1)
    cursor.max_await_time_ms(50)
    first = list(cursor)
    db.cap.insert_one({"_id": 5, "v": 50})
    db.cap.insert_one({"_id": 6, "v": 0})  # not matched
    return first, list(cursor), cursor.to_list(3), cursor.alive


def case_tailable_on_an_empty_capped_collection(db):
    capped(db, n=0)
    cursor = db.cap.find(cursor_type=CursorType.TAILABLE_AWAIT)
    return cursor.to_list(), cursor.alive


def case_tailable_on_a_collection_that_is_not_capped(db):
    db.plain.insert_one({"_id": 1})
    return attempt(lambda: db.plain.find(cursor_type=CursorType.TAILABLE).to_list())


def case_tailable_capped_rollover(db):
    # The cursor's position is overwritten: the getMore fails with CappedPositionLost, which pymongo
    # turns into the end of the cursor.
    capped(db, n=3, max=3)
    cursor = db.cap.find(cursor_type=CursorType.TAILABLE, batch_size=1)
    first = next(cursor)
    db.cap.insert_many([{"_id": i} for i in range(3, 20)])
    return first, cursor.to_list(), cursor.alive, attempt(cursor.next)


def case_tailable_max_await_time_rules(db):
    capped(db)
    # pymongo sends max_await_time_ms with the getMores of any tailable cursor; the server accepts it
    # only with awaitData.
    tailable = db.cap.find(cursor_type=CursorType.TAILABLE).max_await_time_ms(10)
    plain = db.cap.find(batch_size=1).max_await_time_ms(10)  # ignored: not tailable
    return (
        attempt(tailable.to_list),
        tailable.alive,
        plain.to_list(),
        attempt(lambda: db.cap.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms("1")),
        attempt(lambda: db.cap.find(cursor_type=CursorType.TAILABLE).max_await_time_ms(5).to_list(1)),
    )


def case_tailable_option_combinations(db):
    capped(db)
    return (
        attempt(lambda: db.cap.find(cursor_type=99)),
        # awaitData alone: the server's refusal.
        attempt(lambda: db.cap.find().add_option(32).to_list()),
        attempt(lambda: db.cap.find(cursor_type=CursorType.TAILABLE, limit=-1).to_list()),
        attempt(lambda: db.cap.find(cursor_type=CursorType.TAILABLE).sort("v", -1).to_list()),
        db.cap.find(cursor_type=CursorType.TAILABLE, limit=2).to_list(),
        db.cap.find(cursor_type=CursorType.TAILABLE_AWAIT)[1],
        attempt(lambda: db.cap.find_one({}, cursor_type=CursorType.TAILABLE)),
    )


def case_tailable_flags_by_add_option(db):
    capped(db)
    cursor = db.cap.find().add_option(CursorType.TAILABLE)
    first = cursor.to_list()
    db.cap.insert_one({"_id": 7})
    after = cursor.to_list()
    alive = cursor.alive
    removed = db.cap.find(cursor_type=CursorType.TAILABLE).remove_option(CursorType.TAILABLE)
    docs = removed.to_list()
    return first, after, alive, docs, removed.alive


def case_tailable_clone_and_rewind(db):
    capped(db)
    cursor = db.cap.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(20)
    first = cursor.to_list()
    clone = cursor.clone()
    db.cap.insert_one({"_id": 8})
    return first, cursor.to_list(), clone.to_list(), cursor.rewind().to_list(), cursor.alive, clone.alive


def case_tailable_in_a_session(db):
    capped(db)
    with db.client.start_session() as s:
        cursor = db.cap.find(cursor_type=CursorType.TAILABLE_AWAIT, session=s).max_await_time_ms(20)
        first = cursor.to_list()
        db.cap.insert_one({"_id": 9}, session=s)
        return first, cursor.to_list(), cursor.alive


def case_exhaust_cursor(db):
    capped(db)
    return (
        attempt(lambda: db.cap.find(cursor_type=CursorType.EXHAUST, limit=1)),
        attempt(lambda: db.cap.find(cursor_type=CursorType.EXHAUST, batch_size=1).to_list()),
    )


CASES = collect_cases(globals())

# Differences that need the Rust core (see docs/pymongo-compat.md): strict, so a fix shows up as XPASS.
KNOWN = {
    "exhaust_cursor": "tenantpool refuses exhaust cursors (InvalidOperation): the Rust driver cannot read "
    "the stream of replies an exhaust getMore gets",
}


@pytest.mark.parametrize("case", params(CASES, KNOWN), ids=ids(CASES))
def test_tailable(differ, case):
    differ.check(case)
