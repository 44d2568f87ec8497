"""pymongo-style keyword options -> connection-string options for the Rust driver, plus codec options.

pymongo validates each keyword here exactly as ``MongoClient`` would, so a misspelt or ill-typed option
fails with the same ``ConfigurationError`` before any connection is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from bson.codec_options import CodecOptions
from pymongo import common
from pymongo.errors import ConfigurationError

# Keywords that shape how documents are decoded in Python; they never reach the driver.
_CODEC_KEYS = {
    "document_class",
    "tz_aware",
    "tzinfo",
    "uuidrepresentation",
    "unicode_decode_error_handler",
    "type_registry",
    "datetime_conversion",
}

# pymongo keywords that name Python objects the Rust driver cannot call.
_UNSUPPORTED = {
    "server_selector": "custom server selectors are Python callables the Rust driver cannot call",
    "auto_encryption_opts": "client-side field level encryption is not supported",
    "srv_host_validator": "not supported",
    "connect": "pools always connect lazily, on a tenant's first operation",
    "driver": "not supported",
}


def _uri_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    raise ConfigurationError(f"option {key!r}: cannot pass a {type(value).__name__} to the driver")


def split_options(
    options: Mapping[str, Any],
) -> tuple[list[tuple[str, str]], CodecOptions[Any], dict[str, str]]:
    """Validates ``options`` and splits them into URI options, codec options and credentials."""
    uri_options: list[tuple[str, str]] = []
    codec_kwargs: dict[str, Any] = {}
    credentials: dict[str, str] = {}
    for key, value in options.items():
        lower = key.lower()
        if lower in _UNSUPPORTED:
            raise ConfigurationError(f"option {key!r} is not supported by tenantpool: {_UNSUPPORTED[lower]}")
        if lower in ("username", "password"):
            if not isinstance(value, str):
                raise ConfigurationError(f"option {key!r} must be a str")
            credentials[lower] = value
            continue
        try:
            name, validated = common.validate(key, value)
        except ConfigurationError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"option {key!r}: {exc}") from None
        if lower in _CODEC_KEYS:
            codec_kwargs[_codec_name(lower)] = validated
            continue
        if lower == "sockettimeoutms" and validated is None:
            # None (or 0) means no timeout, and as a keyword it overrides one in the URI.
            value = 0
        uri_options.append((name, _uri_value(key, value)))
    try:
        codec = CodecOptions(**codec_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"codec options: {exc}") from None
    return uri_options, codec, credentials


def _codec_name(lower: str) -> str:
    return {"uuidrepresentation": "uuid_representation"}.get(lower, lower)


def with_credentials(uri: str, credentials: Mapping[str, str]) -> str:
    """Puts ``username``/``password`` keywords into the URI's userinfo, as pymongo lets keywords do."""
    if not credentials:
        return uri
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ConfigurationError("the connection string must start with mongodb:// or mongodb+srv://")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority = rest[:authority_end]
    userinfo, at, hosts = authority.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    user = quote(credentials.get("username", ""), safe="") or user
    password = quote(credentials.get("password", ""), safe="") or password
    userinfo = f"{user}:{password}" if password else user
    return f"{scheme}://{userinfo}@{hosts}{rest[authority_end:]}"
