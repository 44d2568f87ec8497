"""One implementation of every operation, run two ways.

Each operation of Database, Collection, Cursor and ClientSession is written once, as a generator that
shapes its arguments, *yields* the core call it needs (``Execute``, ``OpenCursor``...), receives the
reply, and returns the result. ``run_sync`` drives such a generator with the blocking core calls (GIL released
inside), ``run_async`` with the awaitable ones. The sync and async classes are thin: their public
methods are the same generators wrapped by ``sync_method`` / ``async_method``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar, Union

from pymongo.errors import InvalidOperation

from ._core import Manager, RawChangeStream, RawCursor, Session

T = TypeVar("T")


class Execute(NamedTuple):
    """A one-reply operation: the reply is BSON bytes, or None."""

    core: Manager
    tenant: str
    db_name: str
    op: str
    spec: bytes
    docs: list[bytes] | None = None
    session: Any = None


class OpenCursor(NamedTuple):
    """An operation that opens a server cursor: the reply is a RawCursor."""

    core: Manager
    tenant: str
    db_name: str
    op: str
    spec: bytes
    session: Any = None


class NextBatch(NamedTuple):
    """The next server batch of an open cursor: BSON bytes, or None once exhausted."""

    raw: RawCursor


class Watch(NamedTuple):
    """Opens a change stream on ``spec.collection`` (or the database): the reply is a RawChangeStream."""

    core: Manager
    tenant: str
    db_name: str
    spec: bytes
    session: Any = None


class NextChange(NamedTuple):
    """One round of a change stream: ``(event, token)``, each BSON bytes or None."""

    raw: RawChangeStream


class SessionCall(NamedTuple):
    """A transaction step of a core session: ``method`` is ``start_transaction``, ``commit_transaction``
    or ``abort_transaction`` (the async driver calls its ``*_async`` twin). The reply is None."""

    raw: Session
    method: str
    args: tuple[Any, ...] = ()


class Invoke(NamedTuple):
    """The application's own code (``with_transaction``'s callback): the reply is what it returns,
    awaited by the async driver when it returns an awaitable."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


class Sleep(NamedTuple):
    """A pause (``with_transaction``'s backoff between retries): ``time.sleep`` or ``asyncio.sleep``."""

    seconds: float


Call = Union[Execute, OpenCursor, NextBatch, Watch, NextChange, SessionCall, Invoke, Sleep]
Operation = Generator[Call, Any, T]


def _sync_call(call: Call) -> Any:
    if type(call) is Execute:
        return call.core.execute(call.tenant, call.db_name, call.op, call.spec, call.docs, call.session)
    if type(call) is NextBatch:
        return call.raw.next_batch()
    if type(call) is NextChange:
        return call.raw.try_next()
    if type(call) is Watch:
        return call.core.watch(call.tenant, call.db_name, call.spec, call.session)
    if type(call) is SessionCall:
        return getattr(call.raw, call.method)(*call.args)
    if type(call) is Invoke:
        return call.fn(*call.args)
    if type(call) is Sleep:
        return time.sleep(call.seconds)
    return call.core.open_cursor(call.tenant, call.db_name, call.op, call.spec, call.session)


def _async_call(call: Call) -> Awaitable[Any]:
    if type(call) is Execute:
        return call.core.execute_async(call.tenant, call.db_name, call.op, call.spec, call.docs, call.session)
    if type(call) is NextBatch:
        return call.raw.next_batch_async()
    if type(call) is NextChange:
        return call.raw.try_next_async()
    if type(call) is Watch:
        return call.core.watch_async(call.tenant, call.db_name, call.spec, call.session)
    if type(call) is SessionCall:
        return getattr(call.raw, f"{call.method}_async")(*call.args)
    if type(call) is Invoke:
        return _invoke(call.fn, call.args)
    if type(call) is Sleep:
        return asyncio.sleep(call.seconds)
    return call.core.open_cursor_async(call.tenant, call.db_name, call.op, call.spec, call.session)


async def _invoke(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def run_sync(operation: Operation[T]) -> T:
    """Drives an operation with blocking core calls."""
    try:
        call = next(operation)
        while True:
            try:
                reply = _sync_call(call)
            except BaseException as exc:  # the operation may translate or enrich the error
                call = operation.throw(exc)
            else:
                call = operation.send(reply)
    except StopIteration as done:
        return done.value


async def run_async(operation: Operation[T]) -> T:
    """Drives an operation with awaitable core calls; the event loop never blocks."""
    try:
        call = next(operation)
        while True:
            try:
                reply = await _async_call(call)
            except BaseException as exc:
                call = operation.throw(exc)
            else:
                call = operation.send(reply)
    except StopIteration as done:
        return done.value


# The session ``with session.bind():`` (``async with`` for an AsyncClientSession) binds in this context
# (thread, asyncio task): pymongo's ``_SESSION``, one variable for the sync API, one for the async one.
BOUND_SESSION: ContextVar[Any] = ContextVar("tenantpool.BOUND_SESSION", default=None)
ASYNC_BOUND_SESSION: ContextVar[Any] = ContextVar("tenantpool.ASYNC_BOUND_SESSION", default=None)

# pymongo's message (MongoClient._get_bound_session), word for word.
_OTHER_CLIENT = (
    "Only the client that created the bound session can perform operations within"
    " its context block. See <PLACEHOLDER> for more information."
)


def bound_session(target: Any, bound: Any) -> Any:
    """``bound``, the session bound in this context, for an operation of ``target`` (a Database,
    Collection or TenantClient) given no session: it must be of the same client, the same tenant of the
    same manager, else pymongo's InvalidOperation."""
    client = bound._client
    core = getattr(target, "_core", None)
    if core is None:
        core = target._manager._core
    if client._user_id != target._user_id or client._manager._core is not core:
        raise InvalidOperation(_OTHER_CLIENT)
    return bound


def _session_index(gen: Callable[..., Any]) -> int | None:
    """Where a method's ``session`` parameter is among its positional arguments (``self`` excluded), a
    large number if it is keyword-only, None if it has none."""
    params = list(inspect.signature(gen).parameters.values())[1:]
    for i, param in enumerate(params):
        if param.name == "session":
            if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                return i
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                return 1 << 30
    return None


def _with_bound(
    target: Any, bound: Any, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """The arguments of a call given no session (or None) with the bound session in its place."""
    if index < len(args):
        if args[index] is None:
            args = (*args[:index], bound_session(target, bound), *args[index + 1 :])
    elif kwargs.get("session") is None:
        kwargs["session"] = bound_session(target, bound)
    return args


def sync_method(gen: Callable[..., Operation[T]]) -> Callable[..., T]:
    index = _session_index(gen)
    if index is None:

        @functools.wraps(gen)
        def method(self: Any, *args: Any, **kwargs: Any) -> T:
            return run_sync(gen(self, *args, **kwargs))

        return method

    @functools.wraps(gen)
    def session_method(self: Any, *args: Any, **kwargs: Any) -> T:
        # A call given no session runs in the bound one (``ClientSession.bind``), decided here, at the
        # call, so that its write and read concerns and transaction see it.
        bound = BOUND_SESSION.get()
        if bound is not None:
            args = _with_bound(self, bound, index, args, kwargs)
        return run_sync(gen(self, *args, **kwargs))

    return session_method


def async_method(gen: Callable[..., Operation[T]]) -> Callable[..., Awaitable[T]]:
    index = _session_index(gen)
    if index is None:

        @functools.wraps(gen)
        async def method(self: Any, *args: Any, **kwargs: Any) -> T:
            return await run_async(gen(self, *args, **kwargs))

        return method

    @functools.wraps(gen)
    async def session_method(self: Any, *args: Any, **kwargs: Any) -> T:
        bound = ASYNC_BOUND_SESSION.get()
        if bound is not None:
            args = _with_bound(self, bound, index, args, kwargs)
        return await run_async(gen(self, *args, **kwargs))

    return session_method


def operations(cls: type[T]) -> type[T]:
    """Class decorator: every public generator method ``name`` becomes a blocking method, and stays
    available as the generator ``_gen_name`` for other operations and for the async classes."""
    names = set(getattr(cls, "__operations__", ()))
    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isgeneratorfunction(fn):
            setattr(cls, f"_gen_{name}", fn)
            setattr(cls, name, sync_method(fn))
            names.add(name)
    cls.__operations__ = tuple(sorted(names))  # type: ignore[attr-defined]
    return cls


def async_operations(cls: type[T]) -> type[T]:
    """Class decorator for the async twin of a class decorated with ``operations``: every operation
    becomes a coroutine method running the same generator."""
    for name in getattr(cls, "__operations__", ()):
        if name not in vars(cls):
            setattr(cls, name, async_method(getattr(cls, f"_gen_{name}")))
    return cls
