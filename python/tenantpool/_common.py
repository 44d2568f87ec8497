"""Small helpers shared by the Database, Collection and Cursor classes: BSON in and out, pymongo's
argument shapes (sort and index specs, projections), and argument checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.codec_options import CodecOptions
from bson.son import SON
from pymongo import ASCENDING
from pymongo.errors import DocumentTooLarge, InvalidOperation

# The server refuses larger documents; pymongo checks this before sending, and so do we.
MAX_BSON_SIZE = 16 * 1024 * 1024

encode = bson.encode
decode = bson.decode
decode_all = bson.decode_all


def encode_document(doc: Any, codec: CodecOptions) -> bytes:
    data = encode(doc, False, codec)
    if len(data) > MAX_BSON_SIZE:
        raise DocumentTooLarge(
            f"BSON document too large ({len(data)} bytes) - the connected server supports BSON document "
            f"sizes up to {MAX_BSON_SIZE} bytes."
        )
    return data


def check_document(name: str, value: Any) -> None:
    if not isinstance(value, MutableMapping) and not isinstance(value, RawBSONDocument):
        raise TypeError(
            f"{name} must be an instance of dict, bson.son.SON, bson.raw_bson.RawBSONDocument, or a type "
            f"that inherits from collections.MutableMapping, not {type(value).__name__}"
        )


def check_mapping(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be an instance of dict, bson.son.SON, or any other type that "
                        f"inherits from collections.Mapping, not {type(value).__name__}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be an instance of bool, not {type(value).__name__}")


def check_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an instance of int, not {type(value).__name__}")


def index_list(key_or_list: Any, direction: Any = None) -> list[tuple[str, Any]]:
    """pymongo's sort/index key shapes: "field", ("field", dir) pairs, or a mapping."""
    if direction is not None:
        if not isinstance(key_or_list, str):
            raise TypeError("Expected a string and a direction")
        return [(key_or_list, direction)]
    if isinstance(key_or_list, str):
        return [(key_or_list, ASCENDING)]
    if isinstance(key_or_list, Mapping):
        return list(key_or_list.items())
    if not isinstance(key_or_list, (list, tuple)):
        raise TypeError(f"if no direction is specified, key_or_list must be an instance of list, not "
                        f"{type(key_or_list).__name__}")
    out: list[tuple[str, Any]] = []
    for item in key_or_list:
        if isinstance(item, str):
            out.append((item, ASCENDING))
        elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[1]))
        else:
            raise TypeError("key_or_list items must be strings or (key, direction) pairs")
    if not out:
        raise ValueError("key_or_list must not be empty")
    return out


def index_document(keys: list[tuple[str, Any]]) -> SON:
    return SON(keys)


def index_name(keys: list[tuple[str, Any]]) -> str:
    return "_".join(f"{k}_{v}" for k, v in keys)


def projection_document(projection: Any) -> Mapping[str, Any] | None:
    if projection is None:
        return None
    if isinstance(projection, Mapping):
        return projection
    if isinstance(projection, str) or not isinstance(projection, Iterable):
        raise TypeError(f"projection must be an instance of dict, list or tuple, not "
                        f"{type(projection).__name__}")
    fields = {}
    for f in projection:
        if not isinstance(f, str):
            raise TypeError(f"projection fields must be str, not {type(f).__name__}")
        fields[f] = 1
    return fields


def hint_value(hint: Any) -> Any:
    if hint is None or isinstance(hint, str):
        return hint
    return index_document(index_list(hint))


def max_time(value: Any) -> int | None:
    if value is None:
        return None
    check_int("max_time_ms", value)
    if value < 0:
        raise ValueError("max_time_ms must be non-negative")
    return value


def reject_session(session: Any) -> None:
    if session is not None:
        raise InvalidOperation("session= is not supported yet by tenantpool; run the operation without it")


def put(options: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        options[key] = value
