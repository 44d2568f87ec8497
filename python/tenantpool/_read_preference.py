"""Read preferences, as pymongo has them: the manager's default (from the connection string and keywords,
parsed and validated by pymongo's own code), and each read's preference handed to the Rust core.

Python decides the read preference of every operation, as pymongo would, and puts it in the operation's
spec; the core sends an operation without one to the primary. The driver is never given a default of its
own (the manager strips the read preference options from the URI it hands over), so no operation can pick
up a read preference pymongo would not have used for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo import common
from pymongo.errors import InvalidOperation
from pymongo.read_preferences import (
    ReadPreference,
    _ServerMode,
    make_read_preference,
    read_pref_mode_from_name,
)
from pymongo.uri_parser import split_options as split_uri_options

if TYPE_CHECKING:
    # Either session class: the async classes run these same operations with an AsyncClientSession.
    from .session import _Session as ClientSession

# The options that make up a MongoClient's read preference (lower-cased, as pymongo compares them).
_URI_KEYS = ("readpreference", "readpreferencetags", "maxstalenessseconds")
_KEYS = (*_URI_KEYS, "read_preference")


def check(read_preference: Any) -> _ServerMode:
    """pymongo's check of a ``read_preference`` argument (Database, Collection, with_options...)."""
    if not isinstance(read_preference, _ServerMode):
        raise TypeError(
            f"{read_preference!r} is not valid for read_preference. See pymongo.read_preferences for valid "
            "options."
        )
    return read_preference


def _split_uri(uri: str) -> tuple[str, str]:
    """The URI without its read preference options, and those options (``key=value`` joined as in the
    URI)."""
    # After the userinfo: a password may hold an (invalid, unencoded) '?'.
    start = uri.rfind("@") + 1
    query_at = uri.find("?", start)
    if query_at < 0:
        return uri, ""
    base, query = uri[:query_at], uri[query_at + 1 :]
    delim = ";" if ";" in query and "&" not in query else "&"
    kept: list[str] = []
    taken: list[str] = []
    for pair in query.split(delim):
        key = pair.split("=", 1)[0]
        (taken if key.lower() in _URI_KEYS else kept).append(pair)
    rest = delim.join(kept)
    return (f"{base}?{rest}" if rest else base), delim.join(taken)


def manager_read_preference(uri: str, options: dict[str, Any]) -> tuple[str, _ServerMode]:
    """The manager's read preference, as ``MongoClient(uri, **options)`` would have it.

    Takes the read preference keywords out of ``options`` and returns the URI without its read
    preference options, for the driver. As in pymongo, an invalid value in the URI is warned about and
    ignored, an invalid keyword raises, a keyword wins over the URI, and ``read_preference`` (a
    ``pymongo.read_preferences`` object) wins over both."""
    uri, taken = _split_uri(uri)
    merged: dict[str, Any] = {}
    if taken:
        # warn=True: pymongo's MongoClient warns about (and drops) an invalid URI option.
        merged.update(
            {
                k.lower(): v
                for k, v in split_uri_options(taken, validate=True, warn=True, normalize=True).items()
            }
        )
    for key in list(options):
        lower = key.lower()
        if lower not in _KEYS:
            continue
        value = options.pop(key)
        if lower == "read_preference":
            merged[lower] = common.validate_read_preference(key, value)
        else:
            _, merged[lower] = common.validate(key, value)
    if "read_preference" in merged:
        return uri, merged["read_preference"]
    mode = read_pref_mode_from_name(merged.get("readpreference", "primary"))
    return uri, make_read_preference(
        mode, merged.get("readpreferencetags"), merged.get("maxstalenessseconds", -1)
    )


def document(read_preference: _ServerMode) -> dict[str, Any] | None:
    """The read preference as the core reads it (the driver's ``SelectionCriteria``); None for primary."""
    if read_preference.mode == 0:
        return None
    doc = dict(read_preference.document)
    tags = doc.pop("tags", None)
    if tags is not None:
        # pymongo sends tag sets to mongos as `tags`; the driver's read preference calls them `tagSets`.
        doc["tagSets"] = [dict(t) for t in tags]
    hedge = doc.get("hedge")
    if isinstance(hedge, Mapping):
        doc["hedge"] = dict(hedge)
    return doc


def route(spec: dict[str, Any], read_preference: _ServerMode, session: ClientSession | None) -> None:
    """Routes the operation of ``spec`` by ``read_preference``, refusing a non-primary one inside a
    transaction as pymongo does."""
    if read_preference.mode == 0:
        return
    if session is not None and session.in_transaction:
        raise InvalidOperation(f"read preference in a transaction must be primary, not: {read_preference!r}")
    spec["readPreference"] = document(read_preference)


def for_session(default: _ServerMode, session: ClientSession | None) -> _ServerMode:
    """pymongo's ``_read_preference_for``: inside a transaction, the transaction's read preference."""
    if session is not None:
        return session._txn_read_preference() or default
    return default


def for_command(given: Any, session: ClientSession | None) -> _ServerMode:
    """The read preference of ``Database.command``: the one given, else the transaction's, else primary
    (never the database's, as in pymongo)."""
    if given is not None:
        return check(given)
    return (session is not None and session._txn_read_preference()) or ReadPreference.PRIMARY
