"""Differential harness: run one case against real pymongo and against tenantpool, then compare.

A case is a function ``case(db)``: it gets a pymongo ``Database`` in one run and a tenantpool
``Database`` in the other (same server, different database names), does some operations and returns
what it wants compared. Both outcomes are turned into plain comparable values (``observe``):

* documents keep their key order and every value its Python type;
* result objects become their public attributes (those that raise, e.g. counts of an unacknowledged
  write, become the exception they raise);
* cursors become their documents;
* exceptions become class, ``code``, error labels and ``details``; ``attempt(fn)`` captures one mid-case.

ObjectIds are renumbered in order of appearance (ids generated client- or server-side differ between
the runs, their identity pattern must not), the database's name in strings becomes ``<db>``, and the
per-reply cluster bookkeeping (``$clusterTime``, ``operationTime``...) is dropped.

Exception ``details`` (and the documents inside them) are compared on the keys both sides have; keys
present on one side only are collected as *notes*, kept apart from value differences so a report says
which it is. The ``differ`` fixture fails a case on either: no such gap is left.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from bson import ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)

# Reply fields that differ between any two commands, whoever sends them.
VOLATILE_KEYS = frozenset(
    {
        "$clusterTime",
        "operationTime",
        "electionId",
        "opTime",
        "lastCommittedOpTime",
        "$configServerState",
        "localTime",
        "$gleStats",
        "connectionId",
    }
)

_RESULT_ATTRS: dict[type, tuple[str, ...]] = {
    InsertOneResult: ("acknowledged", "inserted_id"),
    InsertManyResult: ("acknowledged", "inserted_ids"),
    UpdateResult: (
        "acknowledged",
        "matched_count",
        "modified_count",
        "upserted_id",
        "did_upsert",
        "raw_result",
    ),
    DeleteResult: ("acknowledged", "deleted_count", "raw_result"),
    BulkWriteResult: (
        "acknowledged",
        "inserted_count",
        "matched_count",
        "modified_count",
        "deleted_count",
        "upserted_count",
        "upserted_ids",
        "bulk_api_result",
    ),
}


# Each client numbers its sessions' transactions.
_TXN_NUMBER = re.compile(r"txnNumber: \d+")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


@dataclass(frozen=True)
class Raised:
    """An exception, as compared: its class, ``code``, error labels and ``details``."""

    cls: str
    code: Any
    details: Any
    message: str
    labels: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Raised({self.cls}, code={self.code!r}, labels={self.labels!r}, details={self.details!r}, "
            f"message={self.message!r})"
        )


class _Captured:
    """What ``attempt`` returns: an exception caught in the middle of a case."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def attempt(fn: Callable[[], Any]) -> Any:
    """Runs ``fn``; returns its result, or the exception it raised (compared like a result)."""
    try:
        return _materialise(fn())
    except Exception as exc:
        return _Captured(exc)


def _is_cursor(value: Any) -> bool:
    return type(value).__name__ in ("Cursor", "CommandCursor")


def _materialise(value: Any) -> Any:
    """Drains cursors now, while the case's setup (fail points, options) still holds."""
    if _is_cursor(value):
        try:
            return ("cursor", type(value).__name__, list(value))
        except Exception as exc:
            return ("cursor", type(value).__name__, _Captured(exc))
    if isinstance(value, tuple):
        return tuple(_materialise(v) for v in value)
    return value


class _Normaliser:
    def __init__(self, db_name: str) -> None:
        self._db_pattern = re.compile(rf"\b{re.escape(db_name)}\b")
        self._oids: dict[ObjectId, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, _Captured):
            return self.exception(value.exc)
        if isinstance(value, BaseException):
            return self.exception(value)
        if isinstance(value, ObjectId):
            return self._oids.setdefault(value, f"ObjectId#{len(self._oids)}")
        if isinstance(value, str):
            value = _TXN_NUMBER.sub("txnNumber: <n>", self._db_pattern.sub("<db>", value))
            return _UUID.sub("<uuid>", value)
        if isinstance(value, RawBSONDocument):
            return ("RawBSONDocument", self(dict(value.items())))
        if isinstance(value, Mapping):
            pairs = [(k, self(v)) for k, v in value.items() if k not in VOLATILE_KEYS]
            return (type(value).__name__, pairs)
        if isinstance(value, tuple) and value[:1] == ("cursor",):
            return ("cursor", value[1], self(value[2]))
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, [self(v) for v in value])
        for cls, attrs in _RESULT_ATTRS.items():
            if isinstance(value, cls):
                return (cls.__name__, [(a, self(attempt(lambda a=a: getattr(value, a)))) for a in attrs])
        if isinstance(value, float) and math.isnan(value):
            return ("float", "nan")
        if isinstance(value, datetime.datetime):
            return ("datetime", value.isoformat(), str(value.tzinfo))
        if (
            value is None
            or isinstance(value, (bool, int, float, bytes))
            or type(value).__module__.startswith(("bson", "uuid", "decimal", "re"))
        ):
            return (type(value).__name__, value)
        # Anything else (a tenantpool or pymongo object) is compared by its class name only.
        return ("object", type(value).__name__)

    def exception(self, exc: BaseException) -> Raised:
        details = getattr(exc, "details", None)
        return Raised(
            cls=f"{type(exc).__module__}.{type(exc).__qualname__}",
            code=getattr(exc, "code", None),
            details=None if details is None else self(details),
            message=self(str(exc)),
            # What has_error_label() answers: apps and frameworks decide whether to retry from these.
            labels=tuple(sorted(getattr(exc, "_error_labels", ()))),
        )


def run_case(case: Callable[[Any], Any], db: Any) -> Any:
    """The case's normalised outcome on ``db``: its result, or the exception it raised."""
    norm = _Normaliser(db.name)
    try:
        return norm(_materialise(case(db)))
    except Exception as exc:
        return norm.exception(exc)


@dataclass
class Comparison:
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare(
    expected: Any, actual: Any, path: str = "result", lenient: bool = False, out: Comparison | None = None
) -> Comparison:
    """Differences between pymongo's outcome (``expected``) and tenantpool's (``actual``).

    ``lenient`` (inside exception details) compares documents on their shared keys and notes the rest.
    """
    out = out if out is not None else Comparison()
    if isinstance(expected, Raised) or isinstance(actual, Raised):
        if not (isinstance(expected, Raised) and isinstance(actual, Raised)):
            out.differences.append(f"{path}: pymongo {expected!r} != tenantpool {actual!r}")
            return out
        if expected.cls != actual.cls:
            out.differences.append(f"{path}: pymongo raised {expected!r}, tenantpool raised {actual!r}")
            return out
        if expected.code != actual.code:
            out.differences.append(f"{path}.code: pymongo {expected.code!r} != tenantpool {actual.code!r}")
        if expected.labels != actual.labels:
            out.differences.append(
                f"{path}.labels: pymongo {expected.labels!r} != tenantpool {actual.labels!r}"
            )
        if (expected.details is None) != (actual.details is None):
            out.differences.append(
                f"{path}.details: pymongo {expected.details!r} != tenantpool {actual.details!r}"
            )
        elif expected.details is not None:
            compare(expected.details, actual.details, f"{path}.details", True, out)
        return out
    if lenient and _is_doc(expected) and _is_doc(actual):
        exp, act = dict(expected[1]), dict(actual[1])
        for key in exp.keys() - act.keys():
            out.notes.append(f"{path}: key {key!r} only from pymongo")
        for key in act.keys() - exp.keys():
            out.notes.append(f"{path}: key {key!r} only from tenantpool")
        for key in exp.keys() & act.keys():
            compare(exp[key], act[key], f"{path}.{key}", lenient, out)
        return out
    if (
        isinstance(expected, tuple)
        and isinstance(actual, tuple)
        and len(expected) == len(actual)
        and expected[:1] == actual[:1]
        and any(isinstance(x, (list, tuple, Raised)) for x in expected[1:])
    ):
        for i, (e, a) in enumerate(zip(expected, actual)):
            compare(e, a, f"{path}[{i}]", lenient, out)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual)):
            compare(e, a, f"{path}[{i}]", lenient, out)
        return out
    if expected != actual:
        out.differences.append(f"{path}: pymongo {expected!r} != tenantpool {actual!r}")
    return out


def _is_doc(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[1], list)
        and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value[1])
        and value[0] not in ("list", "tuple", "cursor")
    )


def database_state(client: MongoClient, db_name: str) -> Any:
    """What a database holds, read with pymongo: collections, their options, indexes and documents."""
    # Read leniently: cases store dates out of datetime's range and invalid UTF-8 on purpose.
    db = client.get_database(
        db_name,
        codec_options=CodecOptions(
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            unicode_decode_error_handler="backslashreplace",
        ),
    )
    norm = _Normaliser(db_name)
    state = []
    for info in sorted(db.list_collections(), key=lambda i: i["name"]):
        name = info["name"]
        if name.startswith("system."):
            continue
        coll = db[name]
        options = {k: v for k, v in info.get("options", {}).items() if k != "uuid"}
        if info["type"] == "view":
            state.append((name, info["type"], norm(options)))
            continue
        indexes = sorted((i for i in coll.list_indexes()), key=lambda i: i["name"])
        state.append((name, info["type"], norm(options), norm(indexes), norm(list(coll.find().sort("_id")))))
    return state


def collect_cases(namespace: Mapping[str, Any]) -> list[Callable[[Any], Any]]:
    """The ``case_*`` functions of a test module, in definition order."""
    return [v for k, v in namespace.items() if k.startswith("case_") and callable(v)]


def ids(cases: Iterable[Callable[..., Any]]) -> list[str]:
    return [c.__name__.removeprefix("case_") for c in cases]


def params(cases: list[Callable[..., Any]], known: Mapping[str, str]) -> list[Any]:
    """The cases as pytest params, those named in ``known`` (id -> reason) as strict xfails, so that a fix
    shows up as an unexpected pass."""
    return [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=known[i])) if i in known else c
        for c, i in zip(cases, ids(cases))
    ]
