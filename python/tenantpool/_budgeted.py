"""The pymongo clients tenantpool opens for itself on a deployment: the tenant catalog's and a move's.

They are sockets on the tenants' servers like any pool's, so each takes its room in that deployment's
connection budget before it exists, as a tenant's pool does: counted at its worst case (its pool plus
one monitoring socket per server: it polls, as the core's clients do), waiting in the same FIFO queue
for at most the budget's timeout, then failing with the same ``WaitQueueTimeoutError``. The room is
given back once the client is closed (once only), or when the client is collected.
"""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

# How long the platform's clients look for a server: a catalog or a move waiting longer than a tenant's
# operation would is no use to anyone.
_SERVER_SELECTION_MS = 5000


class BudgetedClient(MongoClient[dict[str, Any]]):
    def __init__(
        self, core: Any, what: str, uri: str, options: dict[str, Any], pool_size: int, appname: str
    ) -> None:
        # Room first: a client that cannot get it is never opened.
        self._room = core.hold_room(what, pool_size)
        try:
            super().__init__(
                uri,
                **options,
                maxPoolSize=pool_size,
                # Polling: one monitoring socket per server, which is what the room counts (streaming
                # would open a second one, the round-trip-time monitor).
                serverMonitoringMode="poll",
                serverSelectionTimeoutMS=_SERVER_SELECTION_MS,
                appname=appname,
            )
        except BaseException:
            self._room.release()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            # After the close: its sockets count until they are closed.
            self._room.release()
