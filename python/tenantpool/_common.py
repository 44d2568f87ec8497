"""Small helpers shared by the Database, Collection and Cursor classes: BSON in and out, pymongo's
argument shapes (sort and index specs, projections, collations) and argument checks, with pymongo's
messages, so the same mistakes raise the same exceptions."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence, Set
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING
from pymongo.collation import validate_collation_or_none
from pymongo.errors import DocumentTooLarge, OperationFailure, WriteConcernError, WTimeoutError
from pymongo.write_concern import WriteConcern

from .session import _Session

# The server refuses larger documents (maxBsonObjectSize).
MAX_BSON_SIZE = 16 * 1024 * 1024

encode = bson.encode
decode = bson.decode
decode_all = bson.decode_all

__all__ = ["validate_collation_or_none"]


def check_query_size(data: bytes) -> None:
    """pymongo refuses a query (filter and options) over the server's document size before sending it."""
    if len(data) > MAX_BSON_SIZE:
        raise DocumentTooLarge(
            f"BSON document too large ({len(data)} bytes) - the connected server supports "
            f"BSON document sizes up to {MAX_BSON_SIZE} bytes."
        )


def write_concern_error(errmsg: Any, code: Any, details: Mapping[str, Any]) -> WriteConcernError:
    """pymongo's exception for a write concern error: ``WTimeoutError`` (its subclass) when the write
    concern timed out (code 50, or ``errInfo.wtimeout``), else ``WriteConcernError``. The one place that
    decides, for replies and for the core's errors alike."""
    if code == 50 or (details.get("errInfo") or {}).get("wtimeout"):
        return WTimeoutError(errmsg, code, details)
    return WriteConcernError(errmsg, code, details)


def check_document(name: str, value: Any) -> None:
    if not isinstance(value, (MutableMapping, RawBSONDocument)):
        raise TypeError(
            f"{name} must be an instance of dict, bson.son.SON, bson.raw_bson.RawBSONDocument, or a type "
            f"that inherits from collections.MutableMapping"
        )


def check_mapping(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be an instance of dict, bson.son.SON, or any other type that "
            f"inherits from collections.Mapping, not {type(value)}"
        )


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value)}")


def index_list(key_or_list: Any, direction: Any = None) -> list[tuple[str, Any]]:
    """pymongo's sort/index key shapes: "field", ("field", dir) pairs, or a mapping, as pairs."""
    if direction is not None:
        if not isinstance(key_or_list, str):
            raise TypeError(f"Expected a string and a direction, not {type(key_or_list)}")
        return [(key_or_list, direction)]
    if isinstance(key_or_list, str):
        return [(key_or_list, ASCENDING)]
    if isinstance(key_or_list, Mapping):
        return list(key_or_list.items())
    if not isinstance(key_or_list, (list, tuple)):
        raise TypeError(
            f"if no direction is specified, key_or_list must be an instance of list, not {type(key_or_list)}"
        )
    return [(item, ASCENDING) if isinstance(item, str) else item for item in key_or_list]


def index_document(spec: Any) -> dict[str, Any]:
    """The key document of a list of (key, direction) pairs or of a mapping, checked as pymongo does."""
    if not isinstance(spec, (list, tuple, Mapping)):
        raise TypeError(f"must use a dictionary or a list of (key, direction) pairs, not: {spec!r}")
    if not len(spec):
        raise ValueError("key_or_list must not be empty")
    pairs = (
        spec.items()
        if isinstance(spec, Mapping)
        else ((item, ASCENDING) if isinstance(item, str) else item for item in spec)
    )
    index: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise TypeError(f"first item in each key pair must be an instance of str, not {type(key)}")
        if not isinstance(value, (str, int, Mapping)):
            raise TypeError(
                "second item in each key pair must be 1, -1, '2d', or another valid MongoDB index "
                f"specifier., not {type(value)}"
            )
        index[key] = value
    return index


def index_name(keys: Sequence[tuple[str, Any]]) -> str:
    return "_".join(f"{k}_{v}" for k, v in keys)


def hint_value(hint: Any) -> Any:
    if hint is None or isinstance(hint, str):
        return hint
    return index_document(hint)


def fields_document(fields: Any, option_name: str) -> Mapping[str, Any]:
    """A projection given as a mapping or as a list of field names."""
    if isinstance(fields, Mapping):
        return fields
    if isinstance(fields, (Sequence, Set)):
        if not all(isinstance(f, str) for f in fields):
            raise TypeError(f"{option_name} must be a list of key names, each an instance of str")
        return dict.fromkeys(fields, 1)
    raise TypeError(f"{option_name} must be a mapping or list of key names")


def write_concern_document(wc: WriteConcern) -> dict[str, Any]:
    doc = dict(wc.document)
    if "wtimeout" in doc:
        doc["wtimeout"] = int(doc["wtimeout"])
    return doc


def as_int(value: Any) -> Any:
    """The driver reports counts as int64; the server, and so pymongo, as int32 unless they are large."""
    return int(value) if isinstance(value, Int64) else value


def plain_ints(value: Any) -> Any:
    """``value`` with every Int64 that fits an int32 turned into an int, as pymongo would have decoded it."""
    if isinstance(value, Int64):
        return int(value) if -(2**31) <= value < 2**31 else value
    if isinstance(value, dict):
        return {k: plain_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_ints(v) for v in value]
    return value


def core_session(session: Any, user_id: str) -> Any:
    """The core session behind a ``session=`` argument: None without one; the session must be a
    tenantpool ClientSession (or AsyncClientSession) of the same tenant."""
    if check_session(session) is None:
        return None
    return session._handle(user_id)


def check_session(session: Any) -> _Session | None:
    """``session`` if it is a tenantpool session or None; pymongo's ValueError otherwise. Called before
    anything reads the session's state, so a wrong type gets that error rather than an AttributeError."""
    if session is not None and not isinstance(session, _Session):
        raise ValueError(f"'session' argument must be a ClientSession or None, not {type(session)}")
    return session


def set_if_given(options: dict[str, Any], key: str, value: Any) -> None:
    """``options[key] = value`` unless ``value`` is None (pymongo leaves an option out when not given)."""
    if value is not None:
        options[key] = value


def codec_for_replies(codec: CodecOptions[Any]) -> CodecOptions[Any]:
    """pymongo decodes write and command replies as plain dicts, replacing undecodable strings."""
    return codec.with_options(document_class=dict, unicode_decode_error_handler="replace")


def allowed_error(exc: OperationFailure, allowable_errors: Sequence[str | int] | None) -> bool:
    """pymongo's rule: an allowable error is named by its code, or by its message if it has no code."""
    if not allowable_errors:
        return False
    if exc.code is not None:
        return exc.code in allowable_errors
    return (exc.details or {}).get("errmsg") in allowable_errors
