"""Command monitoring, pymongo's way: ``event_listeners=[...]`` and ``pymongo.monitoring.register``.

A manager delivers pymongo's ``CommandStartedEvent``, ``CommandSucceededEvent`` and
``CommandFailedEvent`` for every command it sends (the driver's typed operations, getMore, killCursors,
commitTransaction...) to its command listeners. Each event is an instance of a subclass of pymongo's
class with a ``tenant`` attribute: the tenant whose operation sent the command (None for a command no
tenant's operation sent, such as a shared client's ``endSessions`` at shutdown).

As ``MongoClient`` does, a manager takes the listeners registered globally with
``pymongo.monitoring.register`` when it is created: listeners registered later do not see its commands.

Events come from tenantpool's I/O thread. Each listener is called in a copy of the ``contextvars``
context of the code that started the operation (so OpenTelemetry's current span is the application's),
with the GIL; a listener must be quick and must not wait on tenantpool (its sync API would wait for the
very thread that is calling it). A listener that raises is logged (logger ``tenantpool.monitoring``) and
the operation goes on, as in pymongo.

Server, heartbeat, topology and connection-pool listeners are accepted but not called: tenantpool's
clients are the Rust driver's, whose SDAM and CMAP events are not translated.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions
from pymongo import monitoring

logger = logging.getLogger("tenantpool.monitoring")

__all__ = [
    "TenantCommandFailedEvent",
    "TenantCommandStartedEvent",
    "TenantCommandSucceededEvent",
]


class _WithTenant:
    """What the three tenant events add to pymongo's: the ``tenant`` (no slots of its own, so that it
    can sit beside pymongo's slotted event classes)."""

    __slots__ = ()
    _tenant: str | None

    def __init__(self, tenant: str | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each concrete event class has the slot: a mixin with a slot of its own could not sit beside
        # pymongo's slotted events (their layouts would conflict), which mypy cannot see.
        self._tenant = tenant  # type: ignore[misc]

    @property
    def tenant(self) -> str | None:
        """The tenant whose operation sent the command, or None."""
        return self._tenant

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, tenant: {self._tenant!r}>"


class TenantCommandStartedEvent(_WithTenant, monitoring.CommandStartedEvent):
    """pymongo's ``CommandStartedEvent``, with the ``tenant`` that sent the command."""

    __slots__ = ("_tenant",)


class TenantCommandSucceededEvent(_WithTenant, monitoring.CommandSucceededEvent):
    """pymongo's ``CommandSucceededEvent``, with the ``tenant`` that sent the command."""

    __slots__ = ("_tenant",)


class TenantCommandFailedEvent(_WithTenant, monitoring.CommandFailedEvent):
    """pymongo's ``CommandFailedEvent``, with the ``tenant`` that sent the command."""

    __slots__ = ("_tenant",)


class _Publisher:
    """Called by the core for each command event (see ``src/py/monitor.rs``)."""

    __slots__ = ("_codec", "_listeners")

    def __init__(self, listeners: Sequence[monitoring.CommandListener], codec: CodecOptions[Any]) -> None:
        self._listeners = tuple(listeners)
        self._codec = codec

    def __call__(
        self,
        kind: int,
        tenant: str | None,
        context: Any,
        command_name: str,
        db: str,
        request_id: int,
        operation_id: int,
        address: tuple[str, int],
        server_connection_id: int | None,
        duration_micros: int | None,
        document: bytes,
    ) -> None:
        doc = bson.decode(document, self._codec)
        if kind == 0:
            # pymongo's events show the command without the $db field OP_MSG adds.
            doc.pop("$db", None)
            if not doc:
                # Redacted by the driver (authentication, createUser...): pymongo's class redacts it
                # again from its name alone, and refuses an empty command.
                doc = {command_name: 1}
            event: Any = TenantCommandStartedEvent(
                tenant, doc, db, request_id, address, operation_id, server_connection_id=server_connection_id
            )
            method = "started"
        else:
            duration = datetime.timedelta(microseconds=duration_micros or 0)
            cls = TenantCommandSucceededEvent if kind == 1 else TenantCommandFailedEvent
            event = cls(
                tenant,
                duration,
                doc,
                command_name,
                request_id,
                address,
                operation_id,
                database_name=db,
                server_connection_id=server_connection_id,
            )
            method = "succeeded" if kind == 1 else "failed"
        if context is None:
            self._notify(method, event)
            return
        try:
            context.run(self._notify, method, event)
        except RuntimeError:  # the context is entered elsewhere at this instant
            self._notify(method, event)

    def _notify(self, method: str, event: Any) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, method)(event)
            except Exception:
                logger.exception("command listener %r raised on %r; the operation goes on", listener, event)


def command_publisher(event_listeners: Any, codec: CodecOptions[Any]) -> _Publisher | None:
    """The publisher of a manager given ``event_listeners`` (None: no command listener, no events at
    all). Takes the globally registered listeners as they are now, as ``MongoClient`` does."""
    if event_listeners is not None:
        monitoring._validate_event_listeners("event_listeners", event_listeners)
    registered = monitoring._LISTENERS
    given = list(event_listeners or ())
    commands = list(registered.command_listeners) + [
        lst for lst in given if isinstance(lst, monitoring.CommandListener)
    ]
    others = (
        list(registered.server_listeners)
        + list(registered.server_heartbeat_listeners)
        + list(registered.topology_listeners)
        + list(registered.cmap_listeners)
        + [lst for lst in given if not isinstance(lst, monitoring.CommandListener)]
    )
    if others:
        logger.warning(
            "tenantpool delivers command events only: %d server, heartbeat, topology or connection pool "
            "listener(s) will not be called",
            len(others),
        )
    return _Publisher(commands, codec) if commands else None
