"""Differential cases: BSON type fidelity, and the codec options given to MongoClient and to
UserConnectionManager (uuidRepresentation, tz_aware, document_class, datetime_conversion...)."""

from __future__ import annotations

import datetime
import decimal
import re
import uuid

import pytest
from _harness import attempt
from bson import (
    DBRef,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.son import SON

FIXED_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def all_types():
    return {
        "_id": 1,
        "dec": Decimal128(decimal.Decimal("1234.5678901234567890")),
        "dec_special": [Decimal128("NaN"), Decimal128("-Infinity"), Decimal128("-0")],
        "i32": 2**31 - 1,
        "i64_small": Int64(5),
        "i64_big": 2**40,
        "i64_max": Int64(2**63 - 1),
        "f": 1.5,
        "f_special": [float("inf"), float("-inf"), -0.0],
        "bin0": Binary(b"\x00\x01\xff", 0),
        "bytes": b"raw bytes",
        "bin_func": Binary(b"f", 1),
        "bin_old": Binary(b"old", 2),
        "bin_uuid_legacy": Binary(FIXED_UUID.bytes, 3),
        "bin_uuid": Binary(FIXED_UUID.bytes, 4),
        "bin_md5": Binary(b"0123456789abcdef", 5),
        "bin_user": Binary(b"user", 0x80),
        "regex": Regex("^ab.*c$", "imx"),
        "compiled": re.compile(r"\d+", re.IGNORECASE),
        "ts": Timestamp(1_700_000_000, 7),
        "min": MinKey(),
        "max": MaxKey(),
        "code": Code("function() { return 1; }"),
        "code_scope": Code("function() { return x; }", {"x": 1}),
        "dbref": DBRef("other", ObjectId("65a000000000000000000001"), "db", extra="field"),
        "oid": ObjectId("65a000000000000000000002"),
        "dt": datetime.datetime(2024, 2, 29, 23, 59, 58, 999_999),
        "dt_epoch": datetime.datetime(1970, 1, 1),
        "none": None,
        "bools": [True, False],
        "nested": {"z": {"y": [{"x": []}, {}]}, "a": [[1, [2, [3]]]]},
        "unicode": "ünïcødé ☃ \U0001f600",
        "key ünïcode": 1,
        "empty": "",
        "son": SON([("b", 1), ("a", 2)]),
    }


def case_round_trip_all_types(db):
    db.c.insert_one(all_types())
    return (
        db.c.find_one(),
        db.c.find_one({"regex": Regex("^ab.*c$", "imx")}, {"_id": 1}),
        db.c.find_one({"dec": Decimal128("1234.5678901234567890")}, {"_id": 1}),
    )


def case_queries_by_type(db):
    db.c.insert_one(all_types())
    db.c.insert_one({"_id": 2, "i64_small": 5, "dec": 1234.5678901234567890})
    return (
        db.c.find({"i64_small": 5}, {"_id": 1}).sort("_id"),
        db.c.find({"min": MinKey()}, {"_id": 1}),
        db.c.find({"i64_small": {"$type": "long"}}, {"_id": 1}),
        db.c.find({"bin_uuid": Binary(FIXED_UUID.bytes, 4)}, {"_id": 1}),
        db.c.distinct("bin_md5"),
        db.c.distinct("ts"),
        db.c.aggregate([{"$project": {"t": {"$type": "$code_scope"}, "d": {"$type": "$dt"}}}]),
    )


def case_uuid_unspecified(db):
    # pymongo's default uuidRepresentation is UNSPECIFIED: a native UUID cannot be encoded...
    return (
        attempt(lambda: db.c.insert_one({"_id": 1, "u": uuid.uuid4()})),
        attempt(lambda: db.c.find_one({"u": FIXED_UUID})),
        attempt(lambda: db.c.update_one({}, {"$set": {"u": FIXED_UUID}}, upsert=True)),
        # ...but an explicit Binary can, and decodes as a Binary.
        db.c.insert_one({"_id": 2, "u": Binary.from_uuid(FIXED_UUID)}),
        db.c.find_one({"_id": 2}),
    )


def case_uuid_standard(db):
    db.c.insert_one({"_id": FIXED_UUID, "u": FIXED_UUID, "l": [FIXED_UUID]})
    db.c.insert_one({"_id": 2, "b": Binary.from_uuid(FIXED_UUID, UuidRepresentation.PYTHON_LEGACY)})
    return (
        db.c.find_one({"_id": FIXED_UUID}),
        db.c.find_one({"u": FIXED_UUID}, {"u": 1}),
        db.c.find_one({"_id": 2}),
        db.c.distinct("u"),
        db.c.find_one_and_update({"u": FIXED_UUID}, {"$set": {"v": FIXED_UUID}}, return_document=True),
    )


def case_uuid_python_legacy(db):
    db.c.insert_one({"_id": 1, "u": FIXED_UUID})
    return db.c.find_one(), db.c.find_one({"u": FIXED_UUID}, {"_id": 1})


def case_tz_aware(db):
    naive = datetime.datetime(2024, 5, 6, 7, 8, 9, 123_000)
    aware = datetime.datetime(
        2024, 5, 6, 9, 8, 9, 123_000, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    db.c.insert_many([{"_id": 1, "t": naive}, {"_id": 2, "t": aware}])
    return (
        db.c.find().sort("_id"),
        db.c.find_one({"t": aware}),
        db.c.distinct("t"),
        db.c.aggregate([{"$group": {"_id": None, "max": {"$max": "$t"}}}]),
    )


def case_tz_aware_with_tzinfo(db):
    db.c.insert_one({"_id": 1, "t": datetime.datetime(2024, 1, 1, 12, 0)})
    return db.c.find_one()


def case_document_class_son(db):
    db.c.insert_one({"_id": 1, "b": {"y": 1, "x": 2}, "a": [{"k": 1}]})
    return (
        db.c.find_one(),
        db.c.find().to_list(),
        db.c.aggregate([{"$project": {"b": 1}}]),
        db.c.find_one_and_update({}, {"$set": {"c": 1}}, return_document=True),
        db.command("ping")["ok"],
    )


def case_datetime_out_of_range(db):
    db.c.insert_one({"_id": 1, "t": DatetimeMS(2**62)})
    db.c.insert_one({"_id": 2, "t": DatetimeMS(-(2**50))})
    return attempt(lambda: db.c.find_one({"_id": 1})), attempt(lambda: db.c.find().sort("_id").to_list())


def case_unicode_decode_error_handler(db):
    # Invalid UTF-8 in a string can only be written raw.
    from bson.raw_bson import RawBSONDocument

    raw = RawBSONDocument(
        b"\x17\x00\x00\x00\x10_id\x00\x01\x00\x00\x00\x02s\x00\x03\x00\x00\x00\xff\xfe\x00\x00"
    )
    db.c.insert_one(raw)
    return attempt(lambda: db.c.find_one())


@pytest.mark.parametrize(
    ("case", "options"),
    [
        (case_round_trip_all_types, {}),
        (case_queries_by_type, {}),
        (case_uuid_unspecified, {}),
        (case_uuid_standard, {"uuidRepresentation": "standard"}),
        (case_uuid_python_legacy, {"uuidRepresentation": "pythonLegacy"}),
        (case_tz_aware, {"tz_aware": True}),
        (
            case_tz_aware_with_tzinfo,
            {"tz_aware": True, "tzinfo": datetime.timezone(datetime.timedelta(hours=-5))},
        ),
        (case_document_class_son, {"document_class": SON}),
        (case_datetime_out_of_range, {}),
        (case_datetime_out_of_range, {"datetime_conversion": "DATETIME_MS"}),
        (case_datetime_out_of_range, {"datetime_conversion": "DATETIME_AUTO"}),
        (case_unicode_decode_error_handler, {}),
        (case_unicode_decode_error_handler, {"unicode_decode_error_handler": "replace"}),
    ],
    ids=lambda v: (
        v.__name__.removeprefix("case_") if callable(v) else "-".join(f"{k}={v[k]}" for k in v) or "default"
    ),
)
def test_types(differ, case, options):
    differ.check(case, **options)
