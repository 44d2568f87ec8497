"""THE DESIGN DOCUMENT'S ``UserConnectionManager`` (section 3.1), reimplemented on pymongo as a baseline.

This is *not* tenantpool. It is the document's code (``../shared/seed/``, section 3.1), kept as close to
the original as a typed, lint-clean module allows, so the benchmark can show what the design costs as
written:

- one pymongo ``MongoClient`` per tenant (``maxPoolSize=user_pool_size``, ``minPoolSize=1``);
- ``get_client`` holds one global ``threading.RLock`` for every call, and while holding it runs
  ``client.admin.command('ping')`` on the tenant's client -- a network round trip per request, under a
  lock every tenant shares;
- a failed ping drops the client from the dict (without closing it) and creates a new one;
- a daemon cleanup thread wakes every 60 s and closes clients idle for ``idle_timeout``.

Only typing, names (``DocumentUserConnectionManager``) and formatting differ from the document; the
behaviour, including its flaws, is deliberately unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import MutableMapping
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

logger = logging.getLogger("bench.document_manager")


class DocumentUserConnectionManager:
    """The document's per-user manager: an independent MongoClient per user (section 3.1)."""

    def __init__(
        self,
        connection_string: str,
        user_pool_size: int = 10,
        idle_timeout: int = 3600,
        use_weak_ref: bool = False,
        **mongo_options: Any,
    ) -> None:
        self.connection_string = connection_string
        self.user_pool_size = user_pool_size
        self.idle_timeout = idle_timeout

        self._clients: MutableMapping[str, MongoClient]
        if use_weak_ref:
            self._clients = weakref.WeakValueDictionary()
        else:
            self._clients = {}

        self._last_access: dict[str, float] = {}

        self._lock = threading.RLock()

        self.mongo_options: dict[str, Any] = {
            "maxPoolSize": user_pool_size,
            "minPoolSize": 1,
            "maxIdleTimeMS": idle_timeout * 1000,
            "connectTimeoutMS": 5000,
            "serverSelectionTimeoutMS": 5000,
            **mongo_options,
        }

        self._cleanup_thread = threading.Thread(target=self._cleanup_idle_connections, daemon=True)
        self._cleanup_thread.start()

        logger.info(
            f"UserConnectionManager initialized: pool_size={user_pool_size}, idle_timeout={idle_timeout}s"
        )

    def get_client(self, user_id: str) -> MongoClient:
        with self._lock:
            self._last_access[user_id] = time.time()

            if user_id in self._clients:
                client = self._clients[user_id]

                # The document checks the connection on every call, under the global lock.
                try:
                    client.admin.command("ping")
                    logger.debug(f"Reusing connection for user: {user_id}")
                    return client
                except Exception as e:
                    logger.warning(f"Dead connection for {user_id}, recreating: {e}")
                    del self._clients[user_id]

            logger.info(f"Creating new connection for user: {user_id}")
            client = MongoClient(self.connection_string, **self.mongo_options)

            self._clients[user_id] = client
            return client

    def get_database(self, user_id: str, db_name: str | None = None) -> Database:
        client = self.get_client(user_id)

        if db_name is None:
            db_name = f"user_{user_id}_db"

        return client[db_name]

    def close_user_connection(self, user_id: str) -> bool:
        with self._lock:
            if user_id in self._clients:
                try:
                    self._clients[user_id].close()
                    del self._clients[user_id]

                    if user_id in self._last_access:
                        del self._last_access[user_id]

                    logger.info(f"Closed connection for user: {user_id}")
                    return True
                except Exception as e:
                    logger.error(f"Failed to close connection for {user_id}: {e}")
                    return False

            return False

    def _cleanup_idle_connections(self) -> None:
        while True:
            time.sleep(60)

            try:
                with self._lock:
                    now = time.time()
                    idle_users = []

                    for user_id, last_access in self._last_access.items():
                        if now - last_access > self.idle_timeout:
                            idle_users.append(user_id)

                    for user_id in idle_users:
                        logger.info(f"Closing idle connection for user: {user_id}")
                        self.close_user_connection(user_id)

            except Exception as e:
                logger.error(f"Error in cleanup thread: {e}")

    def get_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total_connections": len(self._clients),
                "user_pool_size": self.user_pool_size,
                "idle_timeout": self.idle_timeout,
                "active_users": list(self._clients.keys()),
                "total_potential_connections": len(self._clients) * self.user_pool_size,
            }

    def close_all(self) -> None:
        with self._lock:
            logger.info(f"Closing all {len(self._clients)} connections...")

            for user_id, client in list(self._clients.items()):
                try:
                    client.close()
                except Exception as e:
                    logger.error(f"Error closing connection for {user_id}: {e}")

            self._clients.clear()
            self._last_access.clear()

            logger.info("All connections closed")

    def __enter__(self) -> DocumentUserConnectionManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_all()
