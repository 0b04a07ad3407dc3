"""The checkout saga: drives one order from its stored status to CONFIRMED or a compensated FAILED.

Each step does remote calls that are idempotent by a key derived from the order
(reserve/commit/release by order id; authorize/capture/void/refund by payment id), then
records the outcome with a compare-and-set on the order's status, together with its events.
A crash anywhere therefore leaves a status from which ``drive`` can simply run again: the
repeated remote call gets the first call's answer, and a step is recorded at most once.

The order is carried from step to step as the step recorded it; it is read again only when a
compare-and-set was lost (another driver moved it). Capture and commit are recorded together,
with CONFIRMED: a crash between them re-drives both from PAYMENT_AUTHORIZED, and both are
idempotent. A successful checkout is so three saga transactions (reserved, authorized,
confirmed), the last of which may also keep the checkout's answer (``Finish``).

Compensations are done before the FAILED status is recorded, so a FAILED order never holds
stock or money; a crash in between makes the recovery loop take the same decision again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from payment_svc.screening import Decision, ScreeningPolicy, screen
from payment_svc.store import PaymentStore, UnitOfWork

_log = get_logger(__name__)
T = TypeVar("T")

# Called in the transaction that records the order's end (CONFIRMED or FAILED), with the order
# as recorded: the checkout keeps its answer there instead of in a transaction of its own.
Finish = Callable[[UnitOfWork, Order], Awaitable[None]]


@dataclass(frozen=True)
class _Drive:
    """What one ``drive`` carries besides the order (the saga object is shared by all)."""

    card_token: str | None = None
    finish: Finish | None = None


# Step boundaries where a test may make the process die (MC_PAYMENT_FAULT_AT): each is a point
# where the remote world and our database disagree until recovery runs.
FAULT_POINTS = (
    "order_created",  # PENDING stored, nothing reserved
    "stock_reserved_remote",  # product_svc reserved, not recorded
    "stock_reserved",  # STOCK_RESERVED recorded
    "screened",  # the screening's decision recorded, the card not asked yet
    "authorized_remote",  # provider authorized, not recorded
    "payment_authorized",  # PAYMENT_AUTHORIZED recorded
    "captured_remote",  # provider captured, not recorded
    "captured",  # capture done; recorded with the commit, so the same state as above
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
        screening: ScreeningPolicy | None = None,
        hold_for: timedelta = timedelta(hours=24),
    ) -> None:
        """``screening``: the fraud rules checked before the card is asked; None checks none
        (every checkout is authorized as it comes). ``hold_for``: how long a held order keeps
        its reservation and authorization before the recovery loop rejects it."""
        self._screening = screening
        self._hold_for = hold_for
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

    async def drive(
        self,
        order_id: str,
        *,
        order: Order | None = None,
        card_token: str | None = None,
        finish: Finish | None = None,
    ) -> Order:
        """Advance the order until its checkout is over; returns it CONFIRMED or FAILED.

        ``order`` and ``card_token``: what the caller just stored, so the saga need not read
        them back. ``finish`` runs in the transaction that records the end, if this driver
        records it.

        Raises ``Unavailable`` when product_svc cannot be reached to finish or compensate a
        step: the order keeps its status and the recovery loop retries it later.
        """
        run = _Drive(card_token, finish)
        steps: dict[OrderStatus, tuple[str, Callable[[Order, _Drive], Awaitable[Order | None]]]]
        steps = {
            OrderStatus.PENDING: ("reserve", self._reserve),
            OrderStatus.STOCK_RESERVED: ("authorize", self._screen_or_authorize),
            OrderStatus.PAYMENT_AUTHORIZED: ("capture_and_commit", self._capture_and_commit),
        }
        current = order if order is not None and order.id == order_id else None
        while True:
            if current is None:  # first round of a recovery, or a compare-and-set was lost
                current = await self._load(order_id)
            if current.status not in steps:
                return current
            name, step = steps[current.status]
            if current.status is OrderStatus.STOCK_RESERVED:
                name = self._reserved_step(current)
            # One span per step, so a trace shows where a checkout spent its time or failed.
            with span(f"checkout {name}", **{"microcommerce.order.id": current.id}):
                async with timed_saga_step(name):
                    current = await step(current, run)

    def _reserved_step(self, order: Order) -> str:
        if self._screening is not None and order.screening is None:
            return "screen"
        if order.screening is not None and order.screening.decision is Decision.DENY:
            return "deny"
        return "authorize"

    async def _screen_or_authorize(self, order: Order, run: _Drive) -> Order | None:
        step = self._reserved_step(order)
        if step == "screen":
            return await self._screen(order, run)
        if step == "deny":
            return await self._deny(order, run)
        return await self._authorize(order, run)

    async def _screen(self, order: Order, run: _Drive) -> Order | None:
        """Decide and record the screening before the card is asked anything.

        Recorded as a step of its own (compare-and-set on "reserved, not screened"), so a
        crash after it replays the same decision instead of counting the attempts again.
        """
        assert self._screening is not None
        now = self._clock()
        async with self._store.reading() as uow:
            facts = await uow.screening_facts(order, self._screening, now)
        screening = screen(facts, self._screening, now)
        if screening.decision is not Decision.ALLOW:
            _log.info(
                "checkout_screened",
                order_id=order.id,
                decision=screening.decision.value,
                score=screening.score,
                reasons=",".join(screening.reasons),
            )
        recorded = await self._record(run, order, order.screened(screening, now), unscreened=True)
        self.fault("screened")
        return recorded

    async def _deny(self, order: Order, run: _Drive) -> Order | None:
        """Screening said DENY: the stock goes back and the card is never asked."""
        mark_current_error("checkout denied by fraud screening")
        await self._release(order)
        denied = order.denied(self._clock())
        return await self._record(
            run, order, denied, messages.order_failed(denied, domain.SCREENING_DENIED)
        )

    async def approve(self, order_id: str, reviewed_by: str) -> Order:
        """Let a held order through: recorded as authorized, then captured and committed.

        Approving an order already approved (on its way or CONFIRMED) answers it as it is.
        """
        order = await self._load(order_id)
        if order.status is OrderStatus.ON_HOLD:
            approved = order.approved(self._clock())
            event = messages.order_approved(approved, reviewed_by)
            if await self._record(_Drive(), order, approved, event) is None:
                return await self.approve(order_id, reviewed_by)  # lost to another decision
            order = approved
        elif not _was_held(order) or order.status not in (
            OrderStatus.PAYMENT_AUTHORIZED,
            OrderStatus.CONFIRMED,
        ):
            raise domain.NotOnHold(f"order {order_id} is not on hold")
        return await self.drive(order_id, order=order)

    async def reject(
        self, order_id: str, reviewed_by: str = "", reason: str = domain.SCREENING_REJECTED
    ) -> Order:
        """Refuse a held order: the authorization voided, the stock released, then FAILED.

        The compensations come first and are idempotent, so a crash before FAILED is recorded
        leaves the order on hold and rejecting it again finishes the job. Rejecting an order
        already rejected (or expired) answers it as it is.
        """
        order = await self._load(order_id)
        if order.status is OrderStatus.FAILED and order.failure_reason in (
            domain.SCREENING_REJECTED,
            domain.HOLD_EXPIRED,
        ):
            return order
        if order.status is not OrderStatus.ON_HOLD:
            raise domain.NotOnHold(f"order {order_id} is not on hold")
        payment = order.paid_by
        await self._provider.void(f"{payment.id}:void", payment.authorization_id or "")
        await self._release(order)
        rejected = order.rejected(reason, self._clock())
        recorded = await self._record(
            _Drive(),
            order,
            rejected,
            messages.order_rejected(rejected, reviewed_by, reason),
            messages.payment_voided(rejected, rejected.paid_by),
            messages.order_failed(rejected, reason),
        )
        return (
            recorded if recorded is not None else await self.reject(order_id, reviewed_by, reason)
        )

    async def _load(self, order_id: str) -> Order:
        async with self._store.reading() as uow:
            order = await uow.order(order_id)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        return order

    async def _record(
        self,
        run: _Drive,
        order: Order,
        moved: Order,
        *events: OutgoingEvent,
        unscreened: bool = False,
        refund: domain.Refund | None = None,
    ) -> Order | None:
        """One step: ``moved`` saved if ``order`` still has its status, with the step's events.

        Returns ``moved``, or None when another driver recorded a step first: nothing is
        written then, and the caller reads the order again.
        """
        final = not moved.status.in_checkout
        async with self._store.unit_of_work() as uow:
            changed_lines = moved.lines != order.lines
            saved = await uow.save_order(
                moved, expected=order.status, lines=changed_lines, unscreened=unscreened
            )
            if not saved:
                return None
            if refund is not None:
                await uow.add_refund(moved, refund)
            await uow.emit(*events)
            if final and run.finish is not None:
                await run.finish(uow, moved)
        # Counted by the driver that recorded the end, so a replay or recovery never recounts.
        if moved.status is OrderStatus.CONFIRMED:
            CHECKOUT_OUTCOMES.labels("confirmed", "").inc()
        elif moved.status is OrderStatus.FAILED:
            CHECKOUT_OUTCOMES.labels("failed", moved.failure_reason or "unknown").inc()
        elif moved.status is OrderStatus.ON_HOLD:
            CHECKOUT_OUTCOMES.labels("on_hold", "").inc()
        return moved

    async def _reserve(self, order: Order, run: _Drive) -> Order | None:
        items = [RequestedItem(line.product_id, line.quantity) for line in order.lines]
        try:
            reserved = await self._retrying(lambda: self._inventory.reserve(order.id, items))
        except OutOfStock:
            return await self._fail(run, order, domain.OUT_OF_STOCK)
        except UnknownProduct:
            return await self._fail(run, order, domain.PRODUCT_NOT_FOUND)
        except ReservationRefused:
            await self._release(order)
            return await self._fail(run, order, domain.RESERVATION_REFUSED)
        except InventoryUnavailable:
            # The reserve may have happened after all: releasing settles it either way (and
            # product_svc then refuses a late reserve for this order).
            await self._release(order)
            return await self._fail(run, order, domain.INVENTORY_UNAVAILABLE, describe=False)
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
        recorded = await self._record(run, order, priced, messages.order_placed(priced))
        self.fault("stock_reserved")
        return recorded

    async def _authorize(self, order: Order, run: _Drive) -> Order | None:
        payment = order.paid_by
        assert order.total is not None
        token = run.card_token
        if token is None:  # not carried from the checkout: a recovery
            async with self._store.reading() as uow:
                token = await uow.card_token(order.id)
        if token is None:
            raise NotFound(f"order {order.id} has no payment")
        result = await self._provider.authorize(f"{payment.id}:authorize", token, order.total)
        self.fault("authorized_remote")
        if result.approved:
            authorized = order.authorized(result.reference, self._clock())
            events = [messages.payment_authorized(authorized, authorized.paid_by)]
            if authorized.status is OrderStatus.ON_HOLD:
                # The stock must outlive the review: held until the hold's deadline has passed
                # and the recovery loop had time to reject it (product_svc's default is minutes).
                if not await self._extend(order, self._clock() + self._hold_for * 1.5):
                    return await self._hold_lost(run, order, authorized)
                events.append(messages.order_held(authorized))
            recorded = await self._record(run, order, authorized, *events)
            self.fault("payment_authorized")
            return recorded
        assert result.failure is not None
        mark_current_error(f"payment declined: {result.failure.value}")
        await self._release(order)
        declined = order.declined(result.failure, self._clock())
        return await self._record(
            run,
            order,
            declined,
            messages.payment_failed(
                declined, declined.paid_by, result.failure.value, result.retryable
            ),
            messages.order_failed(declined, result.failure.value),
        )

    async def _capture_and_commit(self, order: Order, run: _Drive) -> Order | None:
        payment = order.paid_by
        assert order.total is not None
        authorization = payment.authorization_id or ""
        # Recorded with the step's end; empty when an earlier run recorded the capture alone.
        captured_events: list[OutgoingEvent] = []
        if payment.status is PaymentStatus.AUTHORIZED:
            result = await self._provider.capture(
                f"{payment.id}:capture", authorization, order.total
            )
            self.fault("captured_remote")
            if not result.approved:
                await self._provider.void(f"{payment.id}:void", authorization)
                await self._release(order)
                voided = order.capture_refused(self._clock())
                return await self._record(
                    run,
                    order,
                    voided,
                    messages.payment_voided(voided, voided.paid_by),
                    messages.order_failed(voided, domain.CAPTURE_FAILED),
                )
            captured = order.captured()
            captured_events.append(messages.payment_captured(captured, captured.paid_by))
            self.fault("captured")
        else:
            captured = order
        try:
            await self._retrying(lambda: self._inventory.commit(order.id))
        except InventoryUnavailable as error:
            # Nothing recorded: the recovery loop captures again (the provider answers the
            # first capture) and commits.
            raise Unavailable(
                "the inventory could not be reached; the order will be completed shortly",
                retry_after_s=5,
            ) from error
        except (ReservationLost, ReservationRefused, UnknownProduct, OutOfStock):
            return await self._refund_unsold(run, order, captured, captured_events)
        self.fault("committed_remote")
        confirmed = captured.confirmed(self._clock())
        return await self._record(
            run,
            order,
            confirmed,
            *captured_events,
            messages.order_confirmed(confirmed, confirmed.paid_by),
        )

    async def _refund_unsold(
        self, run: _Drive, order: Order, captured: Order, captured_events: list[OutgoingEvent]
    ) -> Order | None:
        # The reservation expired while the card was charged: the money goes back in full.
        payment = captured.paid_by
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
        unsold = captured.unsold(refund, self._clock())
        return await self._record(
            run,
            order,
            unsold,
            *captured_events,
            messages.payment_refunded(unsold, unsold.paid_by, refund),
            messages.order_failed(unsold, domain.RESERVATION_LOST),
            refund=refund,
        )

    async def _extend(self, order: Order, until: datetime) -> bool:
        """Keep the reservation until ``until``; False when it is no longer there to keep."""
        try:
            await self._retrying(lambda: self._inventory.extend(order.id, until))
        except InventoryUnavailable as error:
            raise Unavailable(
                "the inventory could not be reached to hold the stock; retried shortly",
                retry_after_s=5,
            ) from error
        except (ReservationLost, ReservationRefused, UnknownProduct, OutOfStock):
            return False
        return True

    async def _hold_lost(self, run: _Drive, order: Order, authorized: Order) -> Order | None:
        # The reservation expired before the order could be held: nothing to review, so the
        # authorization is voided and the order fails as an unsold one.
        payment = authorized.paid_by
        await self._provider.void(f"{payment.id}:void", payment.authorization_id or "")
        await self._release(order)
        lost = authorized.rejected(domain.RESERVATION_LOST, self._clock())
        return await self._record(
            run,
            order,
            lost,
            messages.payment_authorized(authorized, payment),
            messages.payment_voided(lost, lost.paid_by),
            messages.order_failed(lost, domain.RESERVATION_LOST),
        )

    async def _release(self, order: Order) -> None:
        try:
            await self._retrying(lambda: self._inventory.release(order.id))
        except InventoryUnavailable as error:
            raise Unavailable(
                "the inventory could not be reached to release the stock; retried shortly",
                retry_after_s=5,
            ) from error

    async def _fail(
        self, run: _Drive, order: Order, reason: str, *, describe: bool = True
    ) -> Order | None:
        mark_current_error(f"checkout failed: {reason}")
        # The lines were never priced: what the catalog says now shows what was asked for
        # (not asked when product_svc is unreachable: the answer would only wait and fail).
        described = (
            await self._inventory.describe([line.product_id for line in order.lines])
            if describe
            else []
        )
        failed = order.failed(reason, self._clock(), described)
        return await self._record(run, order, failed, messages.order_failed(failed, reason))

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


def _was_held(order: Order) -> bool:
    return order.screening is not None and order.screening.decision is Decision.REVIEW
