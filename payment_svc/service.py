"""Use cases of the payment service: checkout, history, cancel, refunds, recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.background import run_every
from common.clock import now as _now
from common.errors import (
    Aborted,
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from common.logging import get_logger
from common.money import Money
from common.outbox import OutgoingEvent
from common.reasons import Reason
from payment_svc import domain, messages
from payment_svc.domain import (
    CardInput,
    CardOnFile,
    Order,
    OrderStatus,
    Payment,
    Refund,
    RequestedItem,
)
from payment_svc.provider import PaymentProvider
from payment_svc.saga import CheckoutSaga
from payment_svc.store import KIND_CANCEL, KIND_REFUND, PaymentStore, RefundWork

_log = get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user id and whether they administer the shop."""

    user_id: str
    is_admin: bool = False


@dataclass(frozen=True)
class PaymentPolicy:
    """Timings of checkout and recovery; tests shorten them."""

    key_ttl: timedelta = timedelta(hours=24)
    # A replay of a key whose checkout is still running waits this long for its outcome, then
    # answers ABORTED (409, "in progress") with a Retry-After.
    replay_wait_s: float = 30.0
    replay_poll_s: float = 0.05
    # The recovery loop leaves an order alone until its saga has not moved for this long, so
    # it does not race a checkout that is still running in some request.
    recovery_grace_s: float = 30.0
    recovery_interval_s: float = 10.0


class Payments:
    """The payment service's use cases, independent of how they are called."""

    def __init__(
        self,
        store: PaymentStore,
        saga: CheckoutSaga,
        provider: PaymentProvider,
        *,
        policy: PaymentPolicy | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._saga = saga
        self._provider = provider
        self._policy = policy or PaymentPolicy()
        self._clock = clock
        self._running: set[asyncio.Task[Order]] = set()

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()

    # ---- checkout ------------------------------------------------------------------------

    def accept_card(self, card: CardInput) -> CardOnFile:
        """Validate the card and trade it for the provider's token: the number stops here."""
        valid = domain.validate_card(card, today=self._clock().date())
        return self._provider.tokenize(valid)

    async def checkout(
        self, caller: Caller, key: str, items: Sequence[RequestedItem], card: CardOnFile
    ) -> Order:
        """Place and pay for an order once per (user, idempotency key).

        The same key with the same body answers the first checkout's outcome (its order, or
        the same error); with a different body FAILED_PRECONDITION / IDEMPOTENCY_KEY_REUSED.
        """
        if not key:
            raise InvalidArgument(
                "an idempotency key is required (Idempotency-Key header)", field="idempotency_key"
            )
        requested = domain.validate_items(list(items))
        fingerprint = domain.checkout_fingerprint(requested, card)
        start = await self._store.begin_checkout(
            user_id=caller.user_id,
            key=key,
            fingerprint=fingerprint,
            items=requested,
            card=card,
            order_id=str(uuid.uuid4()),
            payment_id=str(uuid.uuid4()),
            now=self._clock(),
            key_ttl=self._policy.key_ttl,
        )
        if not start.same_body:
            raise domain.IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request"
            )
        if start.created:
            self._saga.fault("order_created")
            order = await self._finish_even_if_abandoned(start.order_id)
        else:
            order = await self._outcome_of(start.order_id)
        if order.status is OrderStatus.FAILED:
            raise domain.checkout_error(order)
        return order

    async def _finish_even_if_abandoned(self, order_id: str) -> Order:
        # A client that gives up (deadline, disconnect) cancels its RPC; the saga must not stop
        # half-way because of that, so it runs as its own task and the RPC only waits for it.
        task = asyncio.create_task(self._saga.drive(order_id), name=f"checkout-{order_id}")
        self._running.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[Order]) -> None:
        self._running.discard(task)
        # Retrieved here so an abandoned checkout's error is logged once, not as "never
        # retrieved"; the recovery loop picks the order up if the saga stopped early.
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            _log.info("checkout_ended_with_error", error=type(error).__name__)

    async def _outcome_of(self, order_id: str) -> Order:
        deadline = time.monotonic() + self._policy.replay_wait_s
        while True:
            order = await self._store.order(order_id)
            if order is None:
                raise NotFound(f"order {order_id} not found")
            if not order.status.in_checkout:
                return order
            if time.monotonic() >= deadline:
                raise Aborted(
                    "a checkout with this Idempotency-Key is still in progress",
                    reason=Reason.CHECKOUT_IN_PROGRESS,
                    retry_after_s=1,
                )
            await asyncio.sleep(self._policy.replay_poll_s)

    # ---- reads ---------------------------------------------------------------------------

    async def get_order(self, caller: Caller, order_id: str) -> Order:
        order = await self._store.order(order_id) if order_id else None
        if order is None or not (caller.is_admin or order.user_id == caller.user_id):
            # Someone else's order looks exactly like a missing one: ids reveal nothing.
            raise NotFound(f"order {order_id} not found", field="id")
        return order

    async def list_orders(
        self,
        caller: Caller,
        user_filter: str,
        page_size: int,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[Order], bool]:
        """A page of orders, newest first, and whether more follow."""
        if user_filter in ("", caller.user_id):
            owner: str | None = caller.user_id
        elif not caller.is_admin:
            raise PermissionDenied("only administrators may list other users' orders")
        else:
            owner = None if user_filter == "-" else user_filter
        found = await self._store.list_orders(owner, page_size + 1, after)
        return found[:page_size], len(found) > page_size

    async def get_payment(self, caller: Caller, payment_id: str) -> Payment:
        found = await self._store.payment(payment_id) if payment_id else None
        if found is None or not (caller.is_admin or found[1] == caller.user_id):
            raise NotFound(f"payment {payment_id} not found", field="id")
        return found[0]

    # ---- after checkout ------------------------------------------------------------------

    async def cancel(self, caller: Caller, order_id: str) -> Order:
        """Refund everything captured and restock; a cancelled order is returned as it is."""
        await self.get_order(caller, order_id)
        work = await self._store.start_refund(
            order_id,
            kind=KIND_CANCEL,
            requested=None,
            reason="order cancelled",
            refund_id=str(uuid.uuid4()),
            requested_by=caller.user_id,
            now=self._clock(),
        )
        if isinstance(work, Order):
            return work
        return await self._complete_refund(work)

    async def refund(
        self, caller: Caller, order_id: str, amount: Money | None, reason: str
    ) -> Refund:
        """Give back part or all of what was captured, never more in total."""
        if not reason.strip():
            raise InvalidArgument("a refund needs a reason", field="reason")
        if len(reason) > 500:
            raise InvalidArgument("the reason is longer than 500 characters", field="reason")
        await self.get_order(caller, order_id)
        refund_id = str(uuid.uuid4())
        work = await self._store.start_refund(
            order_id,
            kind=KIND_REFUND,
            requested=amount,
            reason=reason.strip(),
            refund_id=refund_id,
            requested_by=caller.user_id,
            now=self._clock(),
        )
        assert isinstance(work, RefundWork)
        order = await self._complete_refund(work)
        assert order.payment is not None
        return next(r for r in order.payment.refunds if r.id == refund_id)

    async def _complete_refund(self, work: RefundWork) -> Order:
        result = await self._provider.refund(
            work.refund.id, work.authorization_id, work.refund.amount
        )
        if result.approved and work.kind == KIND_CANCEL:
            await self._saga.restock(work.order.id)
        order = await self._store.finish_refund(
            work.refund.id, succeeded=result.approved, now=self._clock(), events_for=_refund_events
        )
        if not result.approved:
            raise Unavailable("the payment provider did not refund; nothing was given back")
        return order

    # ---- recovery ------------------------------------------------------------------------

    async def recover_once(self) -> int:
        """Finish or compensate every saga and refund that stalled; how many were handled."""
        before = self._clock() - timedelta(seconds=self._policy.recovery_grace_s)
        handled = 0
        for order_id in await self._store.unfinished_orders(before):
            try:
                order = await self._saga.drive(order_id)
                _log.info("order_recovered", order_id=order_id, status=order.status.value)
                handled += 1
            except DomainError as error:
                _log.warning("order_recovery_deferred", order_id=order_id, detail=error.message)
        for work in await self._store.pending_refunds(before):
            try:
                await self._complete_refund(work)
                handled += 1
            except DomainError as error:
                _log.warning(
                    "refund_recovery_deferred", refund_id=work.refund.id, detail=error.message
                )
        await self._store.prune_idempotency_keys(self._clock())
        return handled

    async def run_recovery(self) -> None:
        """The background task: recover at start-up, then every ``recovery_interval_s``."""
        await run_every(
            self._policy.recovery_interval_s, self.recover_once, name="checkout-recovery"
        )


def _refund_events(order: Order, refund: Refund) -> Sequence[OutgoingEvent]:
    payment = order.payment
    assert payment is not None
    if order.status is OrderStatus.CANCELLED:
        return [
            messages.payment_refunded(order, payment, refund),
            messages.order_cancelled(order, refund),
        ]
    return [
        messages.payment_refunded(order, payment, refund),
        messages.order_refunded(order, payment, refund),
    ]
