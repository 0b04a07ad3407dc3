"""The checkout saga: drives one order from its stored status to CONFIRMED or a compensated FAILED.

Each step reads the order, does one remote call that is idempotent by a key derived from the
order (reserve/commit/release by order id; authorize/capture/void/refund by payment id), then
records the outcome with a compare-and-set on the order's status, together with its events.
A crash anywhere therefore leaves a status from which ``drive`` can simply run again: the
repeated remote call gets the first call's answer, and a step is recorded at most once.

Compensations are done before the FAILED status is recorded, so a FAILED order never holds
stock or money; a crash in between makes the recovery loop take the same decision again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from common.clock import now as _now
from common.errors import NotFound, Unavailable
from common.logging import get_logger
from common.metrics import CHECKOUT_OUTCOMES, timed_saga_step
from common.outbox import OutgoingEvent
from common.telemetry import mark_current_error, span
from payment_svc import domain, messages
from payment_svc.domain import Order, OrderLine, OrderStatus, PaymentStatus, RequestedItem
from payment_svc.ports import (
    Inventory,
    InventoryUnavailable,
    OutOfStock,
    ReservationLost,
    ReservationRefused,
    UnknownProduct,
)
from payment_svc.provider import PaymentProvider
from payment_svc.store import PaymentStore

_log = get_logger(__name__)
T = TypeVar("T")

# Step boundaries where a test may make the process die (MC_PAYMENT_FAULT_AT): each is a point
# where the remote world and our database disagree until recovery runs.
FAULT_POINTS = (
    "order_created",  # PENDING stored, nothing reserved
    "stock_reserved_remote",  # product_svc reserved, not recorded
    "stock_reserved",  # STOCK_RESERVED recorded
    "authorized_remote",  # provider authorized, not recorded
    "payment_authorized",  # PAYMENT_AUTHORIZED recorded
    "captured_remote",  # provider captured, not recorded
    "captured",  # capture recorded
    "committed_remote",  # product_svc committed, CONFIRMED not recorded
)

FaultHook = Callable[[str], None]


def no_faults(_point: str) -> None:
    """The production fault hook: nothing happens."""


class CheckoutSaga:
    """Runs the checkout state machine of ``payment_svc.domain`` against the real world."""

    def __init__(
        self,
        store: PaymentStore,
        inventory: Inventory,
        provider: PaymentProvider,
        *,
        fault: FaultHook = no_faults,
        inventory_attempts: int = 3,
        inventory_backoff_s: float = 0.1,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._provider = provider
        self._fault_hook = fault
        self._attempts = inventory_attempts
        self._backoff_s = inventory_backoff_s
        self._clock = clock

    def fault(self, point: str) -> None:
        """A step boundary: the test fault hook may end the process here."""
        self._fault_hook(point)

    async def restock(self, order_id: str) -> None:
        """Return a cancelled order's units to stock (idempotent on product_svc's side)."""
        await self._release(await self._load(order_id))

    async def drive(self, order_id: str) -> Order:
        """Advance the order until its checkout is over; returns it CONFIRMED or FAILED.

        Raises ``Unavailable`` when product_svc cannot be reached to finish or compensate a
        step: the order keeps its status and the recovery loop retries it later.
        """
        steps = {
            OrderStatus.PENDING: ("reserve", self._reserve),
            OrderStatus.STOCK_RESERVED: ("authorize", self._authorize),
            OrderStatus.PAYMENT_AUTHORIZED: ("capture_and_commit", self._capture_and_commit),
        }
        while True:
            order = await self._load(order_id)
            if order.status not in steps:
                return order
            name, step = steps[order.status]
            # One span per step, so a trace shows where a checkout spent its time or failed.
            with span(f"checkout {name}", **{"microcommerce.order.id": order.id}):
                async with timed_saga_step(name):
                    await step(order)

    async def _load(self, order_id: str) -> Order:
        async with self._store.reading() as uow:
            order = await uow.order(order_id)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        return order

    async def _record(self, order: Order, moved: Order, *events: OutgoingEvent) -> bool:
        """One step: ``moved`` saved if ``order`` still has its status, with the step's events.

        False when another driver recorded a step first: nothing is written then.
        """
        async with self._store.unit_of_work() as uow:
            if not await uow.save_order(moved, expected=order.status):
                return False
            await uow.emit(*events)
        # Counted by the driver that recorded the end, so a replay or recovery never recounts.
        if moved.status is OrderStatus.CONFIRMED:
            CHECKOUT_OUTCOMES.labels("confirmed", "").inc()
        elif moved.status is OrderStatus.FAILED:
            CHECKOUT_OUTCOMES.labels("failed", moved.failure_reason or "unknown").inc()
        return True

    async def _reserve(self, order: Order) -> None:
        items = [RequestedItem(line.product_id, line.quantity) for line in order.lines]
        try:
            reserved = await self._retrying(lambda: self._inventory.reserve(order.id, items))
        except OutOfStock:
            await self._fail(order, domain.OUT_OF_STOCK)
            return
        except UnknownProduct:
            await self._fail(order, domain.PRODUCT_NOT_FOUND)
            return
        except ReservationRefused:
            await self._release(order)
            await self._fail(order, domain.RESERVATION_REFUSED)
            return
        except InventoryUnavailable:
            # The reserve may have happened after all: releasing settles it either way (and
            # product_svc then refuses a late reserve for this order).
            await self._release(order)
            await self._fail(order, domain.INVENTORY_UNAVAILABLE, describe=False)
            return
        self.fault("stock_reserved_remote")
        by_product = {line.product_id: line for line in reserved}
        lines = [
            OrderLine(
                line.product_id,
                line.quantity,
                by_product[line.product_id].sku,
                by_product[line.product_id].name,
                by_product[line.product_id].unit_price,
            )
            for line in order.lines
        ]
        priced = order.priced(lines, self._clock())
        await self._record(order, priced, messages.order_placed(priced))
        self.fault("stock_reserved")

    async def _authorize(self, order: Order) -> None:
        payment = order.paid_by
        assert order.total is not None
        async with self._store.reading() as uow:
            token = await uow.card_token(order.id)
        if token is None:
            raise NotFound(f"order {order.id} has no payment")
        result = await self._provider.authorize(f"{payment.id}:authorize", token, order.total)
        self.fault("authorized_remote")
        if result.approved:
            authorized = order.authorized(result.reference, self._clock())
            await self._record(
                order, authorized, messages.payment_authorized(authorized, authorized.paid_by)
            )
            self.fault("payment_authorized")
            return
        assert result.failure is not None
        mark_current_error(f"payment declined: {result.failure.value}")
        await self._release(order)
        declined = order.declined(result.failure, self._clock())
        await self._record(
            order,
            declined,
            messages.payment_failed(
                declined, declined.paid_by, result.failure.value, result.retryable
            ),
            messages.order_failed(declined, result.failure.value),
        )

    async def _capture_and_commit(self, order: Order) -> None:
        payment = order.paid_by
        assert order.total is not None
        authorization = payment.authorization_id or ""
        if payment.status is PaymentStatus.AUTHORIZED:
            result = await self._provider.capture(
                f"{payment.id}:capture", authorization, order.total
            )
            self.fault("captured_remote")
            if not result.approved:
                await self._provider.void(f"{payment.id}:void", authorization)
                await self._release(order)
                voided = order.capture_refused(self._clock())
                await self._record(
                    order,
                    voided,
                    messages.payment_voided(voided, voided.paid_by),
                    messages.order_failed(voided, domain.CAPTURE_FAILED),
                )
                return
            captured = order.captured()
            async with self._store.unit_of_work() as uow:
                if await uow.save_payment(
                    captured, expected=PaymentStatus.AUTHORIZED, now=self._clock()
                ):
                    await uow.emit(messages.payment_captured(captured, captured.paid_by))
            self.fault("captured")
            return  # re-read: the next round commits
        try:
            await self._retrying(lambda: self._inventory.commit(order.id))
        except InventoryUnavailable as error:
            raise Unavailable(
                "the inventory could not be reached; the order will be completed shortly",
                retry_after_s=5,
            ) from error
        except (ReservationLost, ReservationRefused, UnknownProduct, OutOfStock):
            await self._refund_unsold(order)
            return
        self.fault("committed_remote")
        confirmed = order.confirmed(self._clock())
        await self._record(order, confirmed, messages.order_confirmed(confirmed, payment))

    async def _refund_unsold(self, order: Order) -> None:
        # The reservation expired while the card was charged: the money goes back in full.
        payment = order.paid_by
        assert order.total is not None
        result = await self._provider.refund(
            f"{payment.id}:unsold", payment.authorization_id or "", order.total
        )
        if not result.approved:
            raise Unavailable("the refund of an unsold order failed; it will be retried")
        refund = domain.Refund(
            f"{payment.id}:unsold",
            order.total,
            domain.RESERVATION_LOST,
            domain.RefundStatus.SUCCEEDED,
            self._clock(),
        )
        unsold = order.unsold(self._clock())
        await self._record(
            order,
            unsold,
            messages.payment_refunded(unsold, unsold.paid_by, refund),
            messages.order_failed(unsold, domain.RESERVATION_LOST),
        )

    async def _release(self, order: Order) -> None:
        try:
            await self._retrying(lambda: self._inventory.release(order.id))
        except InventoryUnavailable as error:
            raise Unavailable(
                "the inventory could not be reached to release the stock; retried shortly",
                retry_after_s=5,
            ) from error

    async def _fail(self, order: Order, reason: str, *, describe: bool = True) -> None:
        mark_current_error(f"checkout failed: {reason}")
        # The lines were never priced: what the catalog says now shows what was asked for
        # (not asked when product_svc is unreachable: the answer would only wait and fail).
        described = (
            await self._inventory.describe([line.product_id for line in order.lines])
            if describe
            else []
        )
        failed = order.failed(reason, self._clock(), described)
        await self._record(order, failed, messages.order_failed(failed, reason))

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                return await call()
            except InventoryUnavailable:
                if attempt == self._attempts:
                    raise
                _log.warning("inventory_retrying", attempt=attempt)
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")
