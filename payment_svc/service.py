"""Use cases of the payment service: checkout, history, cancel, refunds, recovery."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from common.background import run_every
from common.clock import from_micros, to_micros
from common.clock import now as _now
from common.errors import (
    Aborted,
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from common.inbox import Delivery
from common.logging import get_logger
from common.metrics import CHECKOUT_PLACED
from common.money import Money
from common.pagination import PageTokens, fingerprint, page_size
from common.reasons import Reason
from payment_svc import domain, messages
from payment_svc.domain import (
    Caller,
    CardInput,
    CardOnFile,
    CheckoutReply,
    IdempotencyKey,
    Order,
    OrderChange,
    OrderStatus,
    Payment,
    Refund,
    RefundKind,
    RefundStatus,
    RequestedItem,
)
from payment_svc.provider import PaymentProvider
from payment_svc.saga import CheckoutSaga
from payment_svc.screening import card_fingerprint
from payment_svc.store import PaymentStore, UnitOfWork

_log = get_logger(__name__)

# Serializes a placed order as the caller answers it (the servicer's response bytes).
Render = Callable[[Order], bytes]


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
    # A held order nobody approved or rejected within this is rejected by the recovery loop.
    hold_deadline: timedelta = timedelta(hours=24)
    # Checkout attempts older than this are deleted: no screening window looks further back.
    attempt_retention: timedelta = timedelta(days=7)


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
        page_tokens: PageTokens | None = None,
        card_key: bytes | None = None,
    ) -> None:
        self._store = store
        # Keys the card fingerprints fraud screening counts by (MC_FRAUD_CARD_KEY); without
        # one a random key per process: counts then hold only within this process's lifetime.
        self._card_key = card_key or secrets.token_bytes(32)
        self._saga = saga
        self._provider = provider
        self._policy = policy or PaymentPolicy()
        self._clock = clock
        # main.py passes the deployment's key (MC_PAGE_TOKEN_KEY); without one the tokens of
        # this process are refused by other replicas and after a restart.
        self._page_tokens = page_tokens or PageTokens.for_service(None, "payment")
        self._running: set[asyncio.Task[CheckoutReply]] = set()

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()

    # ---- checkout ------------------------------------------------------------------------

    def accept_card(self, card: CardInput) -> CardOnFile:
        """Validate the card and trade it for the provider's token: the number stops here."""
        valid = domain.validate_card(card, today=self._clock().date())
        fingerprint = card_fingerprint(valid.number, self._card_key)
        return replace(self._provider.tokenize(valid), fingerprint=fingerprint)

    async def checkout(
        self,
        caller: Caller,
        key: str,
        items: Sequence[RequestedItem],
        card: CardOnFile,
        render: Render,
        client_address: str = "",
    ) -> CheckoutReply:
        """Place and pay for an order once per (user, idempotency key); its first answer.

        ``client_address``: where the shopper called from, as the gateway saw it ("" when
        unknown); fraud screening counts attempts by it.

        ``render`` is the caller's serialization of a placed order (the servicer's response
        bytes). The first answer, success or error, is kept with the key: the same key with
        the same body answers it again for the key's retention, whatever happened to the order
        since; with a different body FAILED_PRECONDITION / IDEMPOTENCY_KEY_REUSED. A failed
        checkout raises its error, first time and replayed alike.
        """
        if not key:
            raise InvalidArgument(
                "an idempotency key is required (Idempotency-Key header)", field="idempotency_key"
            )
        requested = domain.validate_items(list(items))
        fingerprint = domain.checkout_fingerprint(requested, card)
        now = self._clock()
        claim = IdempotencyKey(
            caller.user_id, key, fingerprint, str(uuid.uuid4()), now, now + self._policy.key_ttl
        )
        async with self._store.unit_of_work() as uow:
            # A key past its retention starts a new checkout, as if never used.
            await uow.forget_keys(expired_before=now, user_id=caller.user_id, key=key)
            created = await uow.claim_key(claim)
            if created:
                order = domain.new_order(
                    claim.order_id, str(uuid.uuid4()), caller.user_id, requested, card, now
                )
                await uow.add_order(order, card.token)
                await uow.add_attempt(order, card.fingerprint, client_address)
                found = claim
            else:
                first = await uow.idempotency_key(caller.user_id, key)
                assert first is not None  # the claim lost to it: it exists in this transaction
                first.same_body(fingerprint)
                found = first
        if created:
            CHECKOUT_PLACED.inc()  # committed: the funnel's entry, counted once per order
        if found.reply is not None:
            return found.reply.answer()
        if created:
            self._saga.fault("order_created")
            reply = await self._finish_even_if_abandoned(caller, key, order, card.token, render)
        else:
            reply = await self._reply_of(caller, key, found.order_id, render)
        return reply.answer()

    async def _finish_even_if_abandoned(
        self, caller: Caller, key: str, order: Order, card_token: str, render: Render
    ) -> CheckoutReply:
        # A client that gives up (deadline, disconnect) cancels its RPC; the saga must not stop
        # half-way because of that, and its answer must still be kept for the client's retry,
        # so both run as their own task and the RPC only waits for it.
        task = asyncio.create_task(
            self._drive_and_keep_reply(caller, key, order, card_token, render),
            name=f"checkout-{order.id}",
        )
        self._running.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    async def _drive_and_keep_reply(
        self, caller: Caller, key: str, order: Order, card_token: str, render: Render
    ) -> CheckoutReply:
        kept: list[CheckoutReply] = []

        async def keep_with_the_end(uow: UnitOfWork, ended: Order) -> None:
            # The answer is kept in the transaction that records the order's end: one
            # transaction fewer per checkout, and never an end without its answer.
            reply = domain.first_reply(ended, render)
            if await uow.keep_reply(caller.user_id, key, reply):
                kept.append(reply)

        ended = await self._saga.drive(
            order.id, order=order, card_token=card_token, finish=keep_with_the_end
        )
        if kept and kept[0].order_id == ended.id:
            return kept[0]
        return await self._keep_reply(caller, key, ended, render)

    async def _keep_reply(
        self, caller: Caller, key: str, order: Order, render: Render
    ) -> CheckoutReply:
        """Keep the answer the order gives now, unless one was kept first; the kept one."""
        reply = domain.first_reply(order, render)
        async with self._store.unit_of_work() as uow:
            if await uow.keep_reply(caller.user_id, key, reply):
                return reply
            first = await uow.idempotency_key(caller.user_id, key)
        # Another request kept its answer first; or the key expired and was claimed again
        # meanwhile, and this answer is still the caller's.
        if first is None or first.reply is None or first.order_id != order.id:
            return reply
        return first.reply

    def _settled(self, task: asyncio.Task[CheckoutReply]) -> None:
        self._running.discard(task)
        # Retrieved here so an abandoned checkout's error is logged once, not as "never
        # retrieved"; the recovery loop picks the order up if the saga stopped early.
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            _log.info("checkout_ended_with_error", error=type(error).__name__)

    async def _reply_of(
        self, caller: Caller, key: str, order_id: str, render: Render
    ) -> CheckoutReply:
        """The first answer of a key's checkout, waiting while that checkout still runs.

        When the checkout ended without an answer kept (its request died with the process and
        the recovery loop finished the order), the order as it is now becomes the first answer.
        """
        deadline = time.monotonic() + self._policy.replay_wait_s
        while True:
            async with self._store.reading() as uow:
                found = await uow.idempotency_key(caller.user_id, key)
                order = await uow.order(order_id)
            if found is not None and found.reply is not None:
                return found.reply
            if order is None:
                raise NotFound(f"order {order_id} not found")
            if not order.status.in_checkout:
                return await self._keep_reply(caller, key, order, render)
            if time.monotonic() >= deadline:
                raise Aborted(
                    "a checkout with this Idempotency-Key is still in progress",
                    reason=Reason.CHECKOUT_IN_PROGRESS,
                    retry_after_s=1,
                )
            await asyncio.sleep(self._policy.replay_poll_s)

    # ---- reads ---------------------------------------------------------------------------

    async def get_order(self, caller: Caller, order_id: str) -> Order:
        async with self._store.reading() as uow:
            order = await uow.order(order_id) if order_id else None
        return _visible(caller, order, order_id)

    async def list_orders(
        self,
        caller: Caller,
        user_filter: str,
        requested_size: int | None,
        page_token: str,
        status: OrderStatus | None = None,
    ) -> tuple[list[Order], str]:
        """A page of orders, newest first, and the token of the next page ("" on the last).

        ``user_filter``: empty for the caller's own, another user's id or ``-`` for everyone's
        (administrators only). ``status``: only orders in it (None: any).
        """
        owner = domain.orders_listed_for(caller, user_filter)
        limit = page_size(requested_size)
        # Bound to whose orders are listed, not to the filter as written: an empty filter means
        # "mine", so one customer's token must not page through another customer's listing.
        filters = {"user_id": owner or "-", "order_by": "-create_time"}
        if status is not None:  # absent when unset, so tokens issued before it still read
            filters["status"] = status.value
        bound_to = fingerprint("ListOrders", filters)
        after = self._page_tokens.read(page_token, bound_to, key_length=2)
        cursor = (from_micros(int(after[0])), after[1]) if after else None
        async with self._store.reading() as uow:
            listed = await uow.list_orders(owner, limit + 1, cursor, status)
        page = listed[:limit]
        last = page[-1] if len(listed) > limit else None
        token = (
            self._page_tokens.issue(bound_to, [str(to_micros(last.create_time)), last.id])
            if last is not None
            else ""
        )
        return page, token

    async def order_history(
        self, caller: Caller, order_id: str, requested_size: int | None, page_token: str
    ) -> tuple[list[OrderChange], str]:
        """A page of the order's audit trail, oldest first, and the next page's token."""
        limit = page_size(requested_size)
        bound_to = fingerprint("ListOrderHistory", {"id": order_id})
        after = self._page_tokens.read(page_token, bound_to, key_length=1)
        async with self._store.reading() as uow:
            order = _visible(caller, await uow.order(order_id) if order_id else None, order_id)
            entries = await uow.order_trail(order.id, int(after[0]) if after else 0, limit + 1)
        page = entries[:limit]
        token = (
            self._page_tokens.issue(bound_to, [str(page[-1].seq)]) if len(entries) > limit else ""
        )
        changes = [
            _as_seen_by(
                caller,
                messages.order_change(entry.id, entry.type, entry.time, entry.data, order.user_id),
            )
            for entry in page
        ]
        return changes, token

    async def get_payment(self, caller: Caller, payment_id: str) -> Payment:
        async with self._store.reading() as uow:
            order = await uow.order_of_payment(payment_id) if payment_id else None
        if order is None or not order.visible_to(caller):
            raise NotFound(f"payment {payment_id} not found", field="id")
        return order.paid_by

    # ---- held orders (fraud screening asked for a review) ---------------------------------

    async def approve(self, caller: Caller, order_id: str) -> Order:
        """Capture and commit a held order; an approved one is answered as it is."""
        await self.get_order(_administrator(caller), order_id)  # NOT_FOUND like any read
        return await self._saga.approve(order_id, caller.user_id)

    async def reject(self, caller: Caller, order_id: str) -> Order:
        """Void and release a held order, which FAILS; a rejected one is answered as it is."""
        await self.get_order(_administrator(caller), order_id)
        return await self._saga.reject(order_id, caller.user_id)

    # ---- after checkout ------------------------------------------------------------------

    async def cancel(self, caller: Caller, order_id: str) -> Order:
        """Refund everything captured and restock; a cancelled order is returned as it is."""
        async with self._store.unit_of_work() as uow:
            # Locked: concurrent cancels and refunds see each other's amounts set aside.
            order = _visible(caller, await uow.order(order_id, for_update=True), order_id)
            refund = domain.start_cancel(
                order, refund_id=str(uuid.uuid4()), requested_by=caller.user_id, now=self._clock()
            )
            if refund is None:
                return order
            if refund.id not in {r.id for r in order.paid_by.refunds}:
                await uow.add_refund(order, refund)
        return await self._complete_refund(order, refund)

    async def refund(
        self, caller: Caller, order_id: str, amount: Money | None, reason: str
    ) -> Refund:
        """Give back part or all of what was captured, never more in total."""
        if not reason.strip():
            raise InvalidArgument("a refund needs a reason", field="reason")
        if len(reason) > 500:
            raise InvalidArgument("the reason is longer than 500 characters", field="reason")
        async with self._store.unit_of_work() as uow:
            order = _visible(caller, await uow.order(order_id, for_update=True), order_id)
            refund = domain.start_refund(
                order,
                amount,
                reason=reason.strip(),
                refund_id=str(uuid.uuid4()),
                requested_by=caller.user_id,
                now=self._clock(),
            )
            await uow.add_refund(order, refund)
        settled = await self._complete_refund(order, refund)
        return next(r for r in settled.paid_by.refunds if r.id == refund.id)

    async def _complete_refund(self, order: Order, refund: Refund) -> Order:
        """Ask the provider for a refund set aside, then record its answer (one unit of work)."""
        result = await self._provider.refund(
            refund.id, order.paid_by.authorization_id or "", refund.amount
        )
        if result.approved and refund.kind is RefundKind.CANCEL:
            await self._saga.restock(order.id)
        async with self._store.unit_of_work() as uow:
            current = await uow.order_of_refund(refund.id)
            if current is None:
                raise NotFound(f"refund {refund.id} not found")
            settled = current.refund_settled(refund.id, result.approved, self._clock())
            if settled is not current:
                kept = next(r for r in settled.paid_by.refunds if r.id == refund.id)
                await uow.save_refund(kept, expected=RefundStatus.PENDING, now=self._clock())
                if result.approved:
                    await uow.save_order(settled, expected=current.status)
                    await uow.emit(*messages.refund_events(settled, kept))
        if not result.approved:
            raise Unavailable("the payment provider did not refund; nothing was given back")
        return settled

    # ---- personal data ---------------------------------------------------------------------

    async def erase_user(self, user_id: str, delivery: Delivery) -> tuple[int, int]:
        """Erase a deleted user's personal data, keeping what accounting needs.

        Run for each ``microcommerce.user.deleted`` event (``events.py``), the event recorded in
        the inbox in the same transaction; the erasure is itself an event. Returns the number
        of orders and payments concerned.
        """
        if not user_id:
            raise InvalidArgument("user_id is required", field="user_id")
        async with self._store.handling(delivery) as uow:
            orders, payments = await uow.erase_personal_data(user_id)
            await uow.emit(messages.personal_data_erased(user_id, orders, payments))
        _log.info("personal_data_erased", user_id=user_id, orders=orders, payments=payments)
        return orders, payments

    # ---- recovery ------------------------------------------------------------------------

    async def recover_once(self) -> int:
        """Finish or compensate every saga and refund that stalled; how many were handled."""
        now = self._clock()
        before = now - timedelta(seconds=self._policy.recovery_grace_s)
        async with self._store.reading() as uow:
            stalled = await uow.orders_in(domain.SAGA_STATUSES, before, limit=100)
            pending = await uow.refunds_in(RefundStatus.PENDING, before)
        handled = 0
        for order_id in stalled:
            try:
                order = await self._saga.drive(order_id)
                _log.info("order_recovered", order_id=order_id, status=order.status.value)
                handled += 1
            except DomainError as error:
                _log.warning("order_recovery_deferred", order_id=order_id, detail=error.message)
        held_before = now - self._policy.hold_deadline
        async with self._store.reading() as uow:
            expired = await uow.orders_in({OrderStatus.ON_HOLD}, held_before, limit=100)
        for order_id in expired:
            try:
                order = await self._saga.reject(order_id, "", domain.HOLD_EXPIRED)
                _log.info("held_order_expired", order_id=order_id, status=order.status.value)
                handled += 1
            except DomainError as error:
                _log.warning("held_order_expiry_deferred", order_id=order_id, detail=error.message)
        for refund_id in pending:
            try:
                await self._redo_refund(refund_id)
                handled += 1
            except DomainError as error:
                _log.warning("refund_recovery_deferred", refund_id=refund_id, detail=error.message)
        async with self._store.unit_of_work() as uow:
            await uow.forget_keys(expired_before=now)
            await uow.forget_attempts(before=now - self._policy.attempt_retention)
        return handled

    async def _redo_refund(self, refund_id: str) -> None:
        async with self._store.unit_of_work() as uow:
            order = await uow.order_of_refund(refund_id)
        if order is None:
            return
        refund = next(r for r in order.paid_by.refunds if r.id == refund_id)
        await self._complete_refund(order, refund)

    async def run_recovery(self) -> None:
        """The background task: recover at start-up, then every ``recovery_interval_s``."""
        await run_every(
            self._policy.recovery_interval_s, self.recover_once, name="checkout-recovery"
        )


def _visible(caller: Caller, order: Order | None, order_id: str) -> Order:
    if order is None or not order.visible_to(caller):
        # Someone else's order looks exactly like a missing one: ids reveal nothing.
        raise NotFound(f"order {order_id} not found", field="id")
    return order


def _administrator(caller: Caller) -> Caller:
    # The RPCs are ACCESS_ADMIN already; the use case does not trust that alone.
    if not caller.is_admin:
        raise PermissionDenied("only administrators may approve or reject held orders")
    return caller


def _as_seen_by(caller: Caller, change: OrderChange) -> OrderChange:
    """A customer sees a screening's refusal as a plain decline: its name would teach the rules."""
    if caller.is_admin or change.reason not in domain.SCREENING_FAILURES:
        return change
    return replace(change, reason="PAYMENT_DECLINED")
