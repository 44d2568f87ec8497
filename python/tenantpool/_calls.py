"""One implementation of every operation, run two ways.

Each operation of Database, Collection, Cursor and ClientSession is written once, as a generator that
shapes its arguments, *yields* the core call it needs (``Execute``, ``OpenCursor``...), receives the
reply, and returns the result. ``run_sync`` drives such a generator with the blocking core calls (GIL released
inside), ``run_async`` with the awaitable ones. The sync and async classes are thin: their public
methods are the same generators wrapped by ``sync_method`` / ``async_method``, declared once as typed
``Twin`` descriptors (see "public methods, sync and async" below) so that type checkers see a result on
the sync classes and a coroutine of it on the async ones.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar, Union, cast, overload

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
    call = cast(OpenCursor, call)  # the only call left
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
        return cast("Awaitable[Any]", getattr(call.raw, f"{call.method}_async")(*call.args))
    if type(call) is Invoke:
        return _invoke(call.fn, call.args)
    if type(call) is Sleep:
        return asyncio.sleep(call.seconds)
    call = cast(OpenCursor, call)  # the only call left
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
        return cast(T, done.value)


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
        return cast(T, done.value)


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


def _public_signature(gen: Callable[..., Any]) -> inspect.Signature:
    """``gen``'s signature with the result it returns, not ``Operation[...]``, for ``help()``."""
    sig = inspect.signature(gen)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("Operation[") and ret.endswith("]"):
        sig = sig.replace(return_annotation=ret[len("Operation[") : -1])
    params = list(sig.parameters.values())
    if params and params[0].kind is inspect.Parameter.POSITIONAL_ONLY:
        # ``self, /``: positional-only for the type checkers' sake (a method taking **kwargs); not news.
        params[0] = params[0].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        sig = sig.replace(parameters=params)
    return sig


def _named(method: Callable[..., Any], gen: Callable[..., Any], name: str) -> None:
    """Gives the method its public name (``Collection.insert_one``, not its generator's
    ``_gen_insert_one``), and the signature ``help()`` should show."""
    method.__name__ = name.rpartition(".")[2]
    method.__qualname__ = name
    method.__signature__ = _public_signature(gen)  # type: ignore[attr-defined]  # read by inspect


def sync_method(gen: Callable[..., Operation[T]], qualname: str | None = None) -> Callable[..., T]:
    index = _session_index(gen)
    if index is None:

        @functools.wraps(gen)
        def method(self: Any, *args: Any, **kwargs: Any) -> T:
            return run_sync(gen(self, *args, **kwargs))

        if qualname is not None:
            _named(method, gen, qualname)
        return method

    @functools.wraps(gen)
    def session_method(self: Any, *args: Any, **kwargs: Any) -> T:
        # A call given no session runs in the bound one (``ClientSession.bind``), decided here, at the
        # call, so that its write and read concerns and transaction see it.
        bound = BOUND_SESSION.get()
        if bound is not None:
            args = _with_bound(self, bound, index, args, kwargs)
        return run_sync(gen(self, *args, **kwargs))

    if qualname is not None:
        _named(session_method, gen, qualname)
    return session_method


def async_method(
    gen: Callable[..., Operation[T]], qualname: str | None = None
) -> Callable[..., Awaitable[T]]:
    index = _session_index(gen)
    if index is None:

        @functools.wraps(gen)
        async def method(self: Any, *args: Any, **kwargs: Any) -> T:
            return await run_async(gen(self, *args, **kwargs))

        if qualname is not None:
            _named(method, gen, qualname)
        return method

    @functools.wraps(gen)
    async def session_method(self: Any, *args: Any, **kwargs: Any) -> T:
        bound = ASYNC_BOUND_SESSION.get()
        if bound is not None:
            args = _with_bound(self, bound, index, args, kwargs)
        return await run_async(gen(self, *args, **kwargs))

    if qualname is not None:
        _named(session_method, gen, qualname)
    return session_method


# -- public methods, sync and async -----------------------------------------------------------------------
#
# A public method of a sync class and of its async twin (``Collection.insert_one`` and
# ``AsyncCollection.insert_one``) is one class attribute, a ``Twin``, declared once in the sync class:
#
#     def _gen_insert_one(self, document: Any, ...) -> Operation[InsertOneResult]: ...
#     insert_one = operation(_gen_insert_one)
#
# At class creation (the ``operations`` decorator) each Twin is replaced by the plain function it stands for
# in that class: the generator run blocking in a sync class, awaited in a class deriving from ``AsyncAPI``;
# calls pay nothing for it. Type checkers see the Twin's ``__get__``: on an ``AsyncAPI`` instance the
# method returns a coroutine of the result, on any other, the result.


class AsyncAPI:
    """Base of the async classes (``AsyncCollection``...): their public methods are coroutines."""

    __slots__ = ()


class _Twin:
    """A public method, sync or async by the class it is read from (see above). ``gen``: the operation
    (a generator) both run; else ``sync``: the sync method, whose async twin the async class defines as
    ``_async_<name>``, or that is also the async method when ``same`` (a method that does no I/O and only
    returns an async type on an async class)."""

    __slots__ = ("gen", "name", "same", "sync")

    def __init__(
        self,
        gen: Callable[..., Any] | None = None,
        sync: Callable[..., Any] | None = None,
        same: bool = False,
    ) -> None:
        self.gen = gen
        self.sync = sync
        self.same = same
        self.name = ""

    def resolve(self, cls: type[Any], name: str) -> Callable[..., Any]:
        """The function this method is in ``cls``."""
        is_async = issubclass(cls, AsyncAPI)
        if self.gen is not None:
            return (async_method if is_async else sync_method)(self.gen, f"{cls.__qualname__}.{name}")
        assert self.sync is not None
        if is_async and not self.same:
            method: Callable[..., Any] = getattr(cls, f"_async_{name}")
            if not method.__doc__:
                method.__doc__ = self.sync.__doc__  # one text for both, as for operations
            method.__name__ = name  # for help(): ``next``, not ``_async_next``
            return method
        return self.sync

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        # Only for a class not decorated with ``operations`` (its methods then resolve at each access).
        fn = self.resolve(owner, self.name)
        return fn if obj is None else fn.__get__(obj, owner)


def _twins(cls: type[Any]) -> dict[str, _Twin]:
    """The Twins of ``cls`` by name: its own and its bases', unless overridden by a plain method."""
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(name for name, value in vars(klass).items() if isinstance(value, _Twin))
        names.update(vars(klass).get("__twins__", ()))
    found: dict[str, _Twin] = {}
    for name in names:
        for klass in cls.__mro__:
            if name in vars(klass):
                value = vars(klass)[name]
                if isinstance(value, _Twin):
                    found[name] = value
                elif name in vars(klass).get("__twins__", ()):
                    found[name] = vars(klass)["__twins__"][name]
                break
    return found


def operations(cls: type[T]) -> type[T]:
    """Class decorator: every public method declared as a ``Twin`` (in this class or a base) becomes the
    plain function it stands for in this class (see above); the Twins stay listed in ``__twins__``."""
    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isgeneratorfunction(fn):
            # A public generator written as the method itself (the older form): still an operation,
            # available as ``_gen_<name>``; mypy flags its annotation until it is declared as above.
            setattr(cls, f"_gen_{name}", fn)
            op = _Twin(gen=fn)
            op.name = name
            setattr(cls, name, op)
    twins = _twins(cls)
    for name, twin in twins.items():
        setattr(cls, name, twin.resolve(cls, name))
    cls.__twins__ = twins  # type: ignore[attr-defined]  # set here, read by subclasses' decorators
    return cls


# The async classes' decorator: the same resolution, the class deriving from AsyncAPI.
async_operations = operations


if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")
    S = TypeVar("S")
    A = TypeVar("A")

    class Twin(Generic[S, P, T, A]):
        """What type checkers see of a public method (a ``_Twin``)."""

        @overload
        def __get__(self, obj: None, owner: type[AsyncAPI]) -> Callable[Concatenate[S, P], A]: ...
        @overload
        def __get__(self, obj: None, owner: type[Any]) -> Callable[Concatenate[S, P], T]: ...
        @overload
        def __get__(self, obj: AsyncAPI, owner: type[Any]) -> Callable[P, A]: ...
        @overload
        def __get__(self, obj: object, owner: type[Any]) -> Callable[P, T]: ...
        def __get__(self, obj: object, owner: type[Any]) -> Any: ...

    def operation(
        gen: Callable[Concatenate[S, P], Operation[T]],
    ) -> Twin[S, P, T, Coroutine[Any, Any, T]]: ...
    def twin(fn: Callable[Concatenate[S, P], T]) -> Twin[S, P, T, Coroutine[Any, Any, T]]: ...

    class _SameTwin(Protocol[A]):
        def __call__(self, fn: Callable[Concatenate[S, P], T], /) -> Twin[S, P, T, A]: ...

    def same_twin(async_result: type[A]) -> _SameTwin[A]: ...

else:
    Twin = _Twin

    def operation(gen):
        """A public operation: the generator ``gen``, run blocking in a sync class, awaited in an async."""
        return _Twin(gen=gen)

    def twin(fn):
        """A public sync method whose async twin the async classes define as ``_async_<name>``."""
        return _Twin(sync=fn)

    def same_twin(async_result):
        """A public method that is the same in the async classes, where it returns ``async_result``."""
        return lambda fn: _Twin(sync=fn, same=True)
