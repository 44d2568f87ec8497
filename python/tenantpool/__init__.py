"""tenantpool: an isolated MongoDB connection pool per tenant, with a Rust core and pymongo's API.

from tenantpool import UserConnectionManager

manager = UserConnectionManager("mongodb://localhost:27017/", user_pool_size=10, idle_timeout=3600)
db = manager.get_database("a")   # the database "user_a_db" (db_name_template), on tenant a's own pool
db.posts.insert_one({"title": "Hello"})
"""

import atexit
import os

from . import _core
from ._core import __version__
from .asynchronous import (
    AsyncChangeStream,
    AsyncClientSession,
    AsyncCollection,
    AsyncCollectionChangeStream,
    AsyncCommandCursor,
    AsyncCursor,
    AsyncDatabase,
    AsyncDatabaseChangeStream,
    AsyncTenantClient,
    AsyncUserConnectionManager,
)
from .cache import CachedDatabaseWrapper
from .change_stream import ChangeStream, CollectionChangeStream, DatabaseChangeStream
from .client import TenantClient
from .collection import Collection
from .credentials import TenantCredentials
from .cursor import CommandCursor, Cursor
from .database import Database
from .manager import DEFAULT_TIER_POOL_SIZES, UserConnectionManager
from .session import ClientSession
from .variants import (
    GroupConnectionManager,
    MemoryEfficientConnectionManager,
    MonitoredUserConnectionManager,
    OptimizedConnectionManager,
    TieredUserConnectionManager,
    calculate_pool_size,
    get_user_group,
)

__all__ = [
    "DEFAULT_TIER_POOL_SIZES",
    "AsyncChangeStream",
    "AsyncClientSession",
    "AsyncCollection",
    "AsyncCollectionChangeStream",
    "AsyncCommandCursor",
    "AsyncCursor",
    "AsyncDatabase",
    "AsyncDatabaseChangeStream",
    "AsyncTenantClient",
    "AsyncUserConnectionManager",
    "CachedDatabaseWrapper",
    "ChangeStream",
    "ClientSession",
    "Collection",
    "CollectionChangeStream",
    "CommandCursor",
    "Cursor",
    "Database",
    "DatabaseChangeStream",
    "GroupConnectionManager",
    "MemoryEfficientConnectionManager",
    "MonitoredUserConnectionManager",
    "OptimizedConnectionManager",
    "TenantClient",
    "TenantCredentials",
    "TieredUserConnectionManager",
    "UserConnectionManager",
    "__version__",
    "calculate_pool_size",
    "get_user_group",
]

# Stop the Rust runtime's threads before the interpreter is torn down: a database task finishing during
# finalization must not try to hand its result to Python.
atexit.register(_core.shutdown)

# A fork while another thread is inside the core would leave the child with locks held by a thread that
# does not exist there: hold them across the fork instead.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_core.before_fork, after_in_parent=_core.after_fork, after_in_child=_core.after_fork
    )
