"""Test and demo helpers: throwaway real mongod servers (see :mod:`.mongod`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "MongodError",
    "MongodProcess",
    "ReplicaSet",
    "find_mongod",
    "free_port",
    "server_uri",
]

if TYPE_CHECKING:
    from .mongod import (
        MongodError,
        MongodProcess,
        ReplicaSet,
        find_mongod,
        free_port,
        server_uri,
    )


def __getattr__(name: str) -> object:
    # Lazy, so `python -m tenantpool.testing.mongod` doesn't import the module
    # twice (runpy warns when the package already imported it).
    if name in __all__:
        from . import mongod

        return getattr(mongod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
