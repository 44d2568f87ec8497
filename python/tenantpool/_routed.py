"""What the router hands out in place of the core's own objects (see placement): sessions, cursors
and change streams that pass the tenant's gate and fail clearly once the tenant has moved, and the two
errors of placement and moves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import OperationFailure, PyMongoError

if TYPE_CHECKING:
    from .placement import Router, TenantRoute


class TenantMovedError(OperationFailure):
    """A cursor, change stream or session opened on a tenant's previous deployment, used after the tenant
    moved: it cannot follow (its server state stays behind). Re-run the query, re-open the stream (from
    scratch: a resume token does not cross deployments) or start a new session. Its error label
    ``TenantMoved`` says so."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, {"errmsg": message, "errorLabels": ["TenantMoved"]})


class TenantMoveError(PyMongoError):
    """A move that failed (``move_tenant``): the tenant stayed on its deployment, and serves there."""


_TXN_ABORTED = -1


def _txn_aborted(tenant: str) -> str:
    return (
        f"the transaction of this session of tenant {tenant!r} was aborted when the tenant began moving to "
        "another deployment: start a new session and retry the transaction"
    )


class RoutedSession:
    """A core session with the tenant's move count when it started: it cannot follow a move (its
    server session stays behind), and its transaction steps pass the tenant's gate."""

    __slots__ = ("__weakref__", "_route", "_router", "_tenant", "epoch", "moved_txn", "raw")

    def __init__(self, router: Router, tenant: str, route: TenantRoute, raw: Any) -> None:
        self._router, self._tenant, self._route, self.raw = router, tenant, route, raw
        self.epoch = route.epoch
        self.moved_txn = False

    def aborted_by_move(self) -> None:
        # Still "in a transaction" for the Python session, so that leaving its block commits, and the
        # commit says what happened instead of the block ending as if it had succeeded.
        self.epoch = _TXN_ABORTED
        self.moved_txn = True

    @property
    def in_transaction(self) -> bool:
        return self.moved_txn or self.raw.in_transaction

    def _step(self, method: str, *args: Any) -> Any:
        _, r = self._router.enter(self._tenant, self._route, self.epoch)
        try:
            return getattr(self.raw, method)(*args)
        finally:
            self._router.leave(r)

    async def _step_async(self, method: str, *args: Any) -> Any:
        _, r = await self._router.enter_async(self._tenant, self._route, self.epoch)
        try:
            return await getattr(self.raw, method)(*args)
        finally:
            self._router.leave(r)

    def start_transaction(self, options: bytes) -> None:
        self._step("start_transaction", options)

    def _ended_by_move(self, commit: bool) -> bool:
        if not self.moved_txn:
            return False
        self.moved_txn = False
        if commit:
            raise TenantMovedError(_txn_aborted(self._tenant))
        return True

    def commit_transaction(self) -> None:
        if not self._ended_by_move(True):
            self._step("commit_transaction")

    def abort_transaction(self) -> None:
        if not self._ended_by_move(False):
            self._step("abort_transaction")

    async def start_transaction_async(self, options: bytes) -> None:
        await self._step_async("start_transaction_async", options)

    async def commit_transaction_async(self) -> None:
        if not self._ended_by_move(True):
            await self._step_async("commit_transaction_async")

    async def abort_transaction_async(self) -> None:
        if not self._ended_by_move(False):
            await self._step_async("abort_transaction_async")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class RoutedCursor:
    """A core cursor whose getMores pass the tenant's gate, and fail with TenantMovedError once the
    tenant has moved (the server cursor is on the old deployment)."""

    __slots__ = ("_epoch", "_route", "_router", "_tenant", "raw")

    def __init__(self, router: Router, tenant: str, route: TenantRoute, raw: Any) -> None:
        self._router, self._tenant, self._route, self._epoch, self.raw = (
            router,
            tenant,
            route,
            route.epoch,
            raw,
        )

    @property
    def alive(self) -> bool:
        return self._epoch == self._route.epoch and self.raw.alive

    def _moved(self, exc: TenantMovedError) -> TenantMovedError:
        self.raw.close()
        return exc

    def next_batch(self) -> Any:
        try:
            _, r = self._router.enter(self._tenant, self._route, self._epoch)
        except TenantMovedError as exc:
            raise self._moved(exc) from None
        try:
            return self.raw.next_batch()
        finally:
            self._router.leave(r)

    async def next_batch_async(self) -> Any:
        try:
            _, r = await self._router.enter_async(self._tenant, self._route, self._epoch)
        except TenantMovedError as exc:
            raise self._moved(exc) from None
        try:
            return await self.raw.next_batch_async()
        finally:
            self._router.leave(r)

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class RoutedChangeStream(RoutedCursor):
    """A core change stream, gated and ended by a move as RoutedCursor."""

    __slots__ = ()

    def try_next(self) -> Any:
        try:
            _, r = self._router.enter(self._tenant, self._route, self._epoch)
        except TenantMovedError as exc:
            raise self._moved(exc) from None
        try:
            return self.raw.try_next()
        finally:
            self._router.leave(r)

    async def try_next_async(self) -> Any:
        try:
            _, r = await self._router.enter_async(self._tenant, self._route, self._epoch)
        except TenantMovedError as exc:
            raise self._moved(exc) from None
        try:
            return await self.raw.try_next_async()
        finally:
            self._router.leave(r)
