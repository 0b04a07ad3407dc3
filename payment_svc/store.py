"""Persistence of the payment service: its tables and one unit of work per use case.

Stores load and save; the rules are the domain's. Where concurrency could break an invariant
the store offers the mechanism and the domain the values: a saga step is a compare-and-set on
the status the step started from (``UPDATE ... WHERE status = expected``), committed with its
outbox events, so two drivers of one order (a request and the recovery loop, or two replicas)
can repeat the idempotent remote calls but never apply a step twice; refunds lock the order row
so concurrent ones see each other's amounts.

Every order and payment event a unit of work emits is also appended to the order's audit trail
(``payment_order_changes``) in the same transaction, and ``add_order`` appends the order's
placement: whoever drives the saga, a change and its trail entry commit or vanish together, so
the trail has no gap and no duplicate. Unlike the outbox, the trail is never pruned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    update,
)

from common import clock, unit_of_work
from common.db import SEQUENCE_NUMBER, Database, UtcDateTime, on_conflict_insert
from common.errors import FieldViolation
from common.money import Money
from common.outbox import Outbox, OutgoingEvent, event_data
from payment_svc.domain import (
    CardBrand,
    CheckoutReply,
    FailureReason,
    IdempotencyKey,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    RecordedError,
    Refund,
    RefundKind,
    RefundStatus,
    attempt_outcome,
)
from payment_svc.screening import (
    AttemptOutcome,
    Decision,
    Finding,
    Rule,
    Screening,
    ScreeningFacts,
    ScreeningPolicy,
)

# Every table as the migrations create it (tests/integration/common/test_schema_drift.py).
METADATA = MetaData()
_TIME = UtcDateTime()

orders = Table(
    "payment_orders",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("currency", String(3)),
    Column("total_amount", BigInteger),
    Column("failure_reason", String(64)),
    Column("create_time", _TIME, nullable=False),
    Column("update_time", _TIME, nullable=False),
    # Order history (newest first per user) and the recovery loop's scan of unfinished sagas.
    Index("ix_payment_orders_user_time", "user_id", "create_time", "id"),
    Index("ix_payment_orders_time", "create_time", "id"),
    Index("ix_payment_orders_status_update", "status", "update_time"),
    # Fraud screening's verdict (payment_svc.screening), NULL until the order was screened;
    # the reasons are the findings as JSON ``[[rule, score, detail], ...]``.
    Column("screening_decision", String(8)),
    Column("screening_score", Integer),
    Column("screening_reasons", Text),
    Index("ix_payment_orders_status_time", "status", "create_time", "id"),
)
order_items = Table(
    "payment_order_items",
    METADATA,
    Column(
        "order_id",
        String(64),
        ForeignKey("payment_orders.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("product_id", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("sku", String(128), nullable=False, server_default=""),
    Column("name", String(512), nullable=False, server_default=""),
    Column("unit_amount", BigInteger),
    Column("currency", String(3)),
    # What the catalog had of a line it could not fill (an out-of-stock checkout); else NULL.
    Column("available", Integer),
)
payments = Table(
    "payments",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column(
        "order_id",
        String(64),
        ForeignKey("payment_orders.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("status", String(32), nullable=False),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    Column("card_token", String(200), nullable=False),
    Column("card_brand", String(16), nullable=False),
    Column("card_last4", String(4), nullable=False),
    Column("authorization_id", String(64)),
    Column("failure_reason", String(32)),
    Column("create_time", _TIME, nullable=False),
    Column("update_time", _TIME, nullable=False),
)
refunds = Table(
    "payment_refunds",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("payment_id", String(64), ForeignKey("payments.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("create_time", _TIME, nullable=False),
    Column("update_time", _TIME, nullable=False),
    Index("ix_payment_refunds_payment", "payment_id", "create_time"),
    Index("ix_payment_refunds_status", "status", "update_time"),
)
idempotency_keys = Table(
    "payment_idempotency_keys",
    METADATA,
    Column("user_id", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("create_time", _TIME, nullable=False),
    Column("expire_time", _TIME, nullable=False),
    Index("ix_payment_idempotency_keys_expire", "expire_time"),
    # The checkout's first answer (domain.CheckoutReply); reply_status is NULL until then.
    Column("reply_status", String(32)),
    Column("reply_body", LargeBinary()),
    Column("reply_message", String(1000)),
    Column("reply_reason", String(64)),
    Column("reply_field", String(128)),
    Column("reply_retry_after_s", Float()),
    # JSON [[field, description], ...] when the answer named several fields (out of stock).
    Column("reply_violations", Text()),
)

# The audit trail of each order (see the module's docstring). ``seq`` orders one order's
# changes because the units of work that change an order are serialized by its rows (the
# status compare-and-set, refunds' FOR UPDATE): a later change inserts after an earlier one
# committed, so it never gets the smaller number, and a page token (the last seq) never skips.
order_changes = Table(
    "payment_order_changes",
    METADATA,
    Column("seq", SEQUENCE_NUMBER, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("order_id", String(64), nullable=False),
    # The CloudEvents type; empty for the placement, recorded with the order row itself.
    Column("type", String(128), nullable=False),
    Column("time", _TIME, nullable=False),
    # The event's ``data`` as published (JSON).
    Column("data", Text, nullable=False),
    Index("ix_payment_order_changes_order", "order_id", "seq"),
)

# One row per checkout, counted by fraud screening over sliding windows (``screening_facts``).
# The card is its keyed hash; the address is the client's as the gateway saw it.
checkout_attempts = Table(
    "payment_checkout_attempts",
    METADATA,
    Column("order_id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("card_fingerprint", String(64), nullable=False),
    Column("client_address", String(64), nullable=False),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    Column("outcome", String(16), nullable=False),
    Column("create_time", _TIME, nullable=False),
    Column("update_time", _TIME, nullable=False),
    Index("ix_payment_checkout_attempts_user", "user_id", "create_time"),
    Index("ix_payment_checkout_attempts_card", "card_fingerprint", "create_time"),
    Index("ix_payment_checkout_attempts_address", "client_address", "create_time"),
    Index("ix_payment_checkout_attempts_time", "create_time"),
)
# Orders that count as the account's purchase history for the amount rule.
_KEPT_PURCHASES = (OrderStatus.CONFIRMED.value, OrderStatus.PARTIALLY_REFUNDED.value)

_REPLIED_OK = "OK"
# Every order and payment event is keyed by its order (messages.py): these are the order's trail.
_TRAIL_TYPES = ("microcommerce.order.", "microcommerce.payment.")


@dataclass(frozen=True)
class TrailEntry:
    """One recorded change of an order: the event's id, type, time and data."""

    seq: int
    id: str
    type: str
    time: datetime
    data: Mapping[str, Any]


def placement_id(order_id: str) -> str:
    """The trail id of an order's placement, the one change published as no event."""
    return f"{order_id}:placed"


# A checkout's statements, built once: building a statement per call and keying it for
# SQLAlchemy's compiled cache cost more CPU than SQLite executing it (issue 13's profile).
# Values are bound by name at execution; an UPDATE's SET columns are the parameters named like
# columns, so its WHERE parameters are named like none.
_INSERT_ORDER = insert(orders)
_INSERT_ORDER_ITEMS = insert(order_items)
_INSERT_PAYMENT = insert(payments)
_INSERT_CHANGES = insert(order_changes)
_CLAIM_KEY = {
    dialect: on_conflict_insert(idempotency_keys, dialect).on_conflict_do_nothing()
    for dialect in ("postgresql", "sqlite")
}
_KEEP_REPLY = update(idempotency_keys).where(
    idempotency_keys.c.user_id == bindparam("kept_user_id"),
    idempotency_keys.c.key == bindparam("kept_key"),
    idempotency_keys.c.order_id == bindparam("kept_order_id"),
    idempotency_keys.c.reply_status.is_(None),
)
_SAVE_ORDER = update(orders).where(
    orders.c.id == bindparam("cas_id"), orders.c.status == bindparam("cas_status")
)
_SAVE_ORDER_LINE = update(order_items).where(
    order_items.c.order_id == bindparam("line_order_id"),
    order_items.c.position == bindparam("line_position"),
)
_SAVE_PAYMENT = update(payments).where(payments.c.order_id == bindparam("paid_order_id"))
# The screening step leaves the status as it is, so its compare-and-set also requires that no
# screening was recorded yet.
_SAVE_UNSCREENED_ORDER = _SAVE_ORDER.where(orders.c.screening_decision.is_(None))
_SAVE_ATTEMPT = update(checkout_attempts).where(
    checkout_attempts.c.order_id == bindparam("attempt_order_id")
)


class UnitOfWork(unit_of_work.UnitOfWork):
    """The reads and writes of one use case, committed together with its events."""

    async def emit(self, *events: OutgoingEvent) -> None:
        """Record events in this transaction, and each order's events in its audit trail."""
        now = clock.now()
        ids = await self._outbox.add(self._connection, *events, now=now)
        trail = [
            {
                "id": event_id,
                "order_id": event.subject,
                "type": event.type,
                "time": now,
                "data": json.dumps(event_data(event), separators=(",", ":")),
            }
            for event_id, event in zip(ids, events, strict=True)
            if event.type.startswith(_TRAIL_TYPES)
        ]
        if trail:
            await self._connection.execute(_INSERT_CHANGES, trail)

    async def order_trail(self, order_id: str, after_seq: int, limit: int) -> list[TrailEntry]:
        """Up to ``limit`` recorded changes of the order after ``after_seq``, oldest first."""
        rows = (
            await self._connection.execute(
                select(order_changes)
                .where(order_changes.c.order_id == order_id, order_changes.c.seq > after_seq)
                .order_by(order_changes.c.seq)
                .limit(limit)
            )
        ).all()
        return [
            TrailEntry(row.seq, row.id, row.type, row.time, json.loads(row.data)) for row in rows
        ]

    # ---- idempotency keys ----------------------------------------------------------------

    async def claim_key(self, key: IdempotencyKey) -> bool:
        """Store the key unless it exists; True when this call stored it.

        An insert that ignores a duplicate: of two concurrent claims exactly one wins
        (PostgreSQL makes the second wait for the first to commit; SQLite's write lock queues
        them).
        """
        claimed = await self._connection.execute(
            _CLAIM_KEY[self._connection.dialect.name],
            {
                "user_id": key.user_id,
                "key": key.key,
                "fingerprint": key.fingerprint,
                "order_id": key.order_id,
                "create_time": key.create_time,
                "expire_time": key.expire_time,
            },
        )
        return bool(claimed.rowcount)

    async def idempotency_key(self, user_id: str, key: str) -> IdempotencyKey | None:
        row = (
            await self._connection.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key
                )
            )
        ).first()
        return None if row is None else _idempotency_key(row)

    async def forget_keys(
        self, *, expired_before: datetime, user_id: str | None = None, key: str | None = None
    ) -> int:
        """Delete keys whose retention ended before the given time (one key's, or all)."""
        query = delete(idempotency_keys).where(idempotency_keys.c.expire_time < expired_before)
        if user_id is not None and key is not None:
            query = query.where(
                idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key
            )
        result = await self._connection.execute(query)
        return int(result.rowcount)

    async def erase_personal_data(self, user_id: str) -> tuple[int, int]:
        """Erase what identifies a person in a user's orders and payments, keep the accounts.

        The provider's card token and the last four digits go; brand, amounts, statuses and
        dates stay. The user's idempotency keys go too: their stored replies and fingerprints
        describe the card. Returns (orders, payments erased).
        """
        their_orders = select(orders.c.id).where(orders.c.user_id == user_id)
        order_count = (
            await self._connection.execute(
                select(func.count()).select_from(orders).where(orders.c.user_id == user_id)
            )
        ).scalar_one()
        erased = await self._connection.execute(
            update(payments)
            .where(payments.c.order_id.in_(their_orders))
            .values(card_token="", card_last4="")
        )
        await self._connection.execute(
            delete(idempotency_keys).where(idempotency_keys.c.user_id == user_id)
        )
        # Screening counts need no card or address of someone who left.
        await self._connection.execute(
            update(checkout_attempts)
            .where(checkout_attempts.c.user_id == user_id)
            .values(card_fingerprint="", client_address="")
        )
        return int(order_count), int(erased.rowcount)

    async def keep_reply(self, user_id: str, key: str, reply: CheckoutReply) -> bool:
        """Keep ``reply`` with the key unless one is kept already (first writer wins)."""
        error = reply.error
        result = await self._connection.execute(
            _KEEP_REPLY,
            {
                "kept_user_id": user_id,
                "kept_key": key,
                "kept_order_id": reply.order_id,
                "reply_status": _REPLIED_OK if error is None else error.status,
                "reply_body": reply.body if error is None else None,
                "reply_message": None if error is None else error.message,
                "reply_reason": None if error is None else error.reason,
                "reply_field": None if error is None else error.field,
                "reply_retry_after_s": None if error is None else error.retry_after_s,
                "reply_violations": _violations_json(error.violations if error else ()),
            },
        )
        return bool(result.rowcount)

    # ---- orders and payments -------------------------------------------------------------

    async def add_order(self, order: Order, card_token: str) -> None:
        """A new order with its lines and payment; ``card_token`` is the provider's token."""
        payment = order.paid_by
        await self._connection.execute(_INSERT_ORDER, {**_order_values(order), "id": order.id})
        await self._connection.execute(
            _INSERT_ORDER_ITEMS,
            [
                {"order_id": order.id, "position": position, **_line_values(line)}
                for position, line in enumerate(order.lines)
            ],
        )
        await self._connection.execute(
            _INSERT_PAYMENT,
            {
                **_payment_values(order),
                "id": payment.id,
                "order_id": order.id,
                "card_token": card_token,
                "card_brand": payment.card_brand.value,
                "card_last4": payment.card_last4,
                "create_time": payment.create_time,
            },
        )
        await self._connection.execute(
            _INSERT_CHANGES,
            {
                "id": placement_id(order.id),
                "order_id": order.id,
                "type": "",
                "time": order.create_time,
                "data": "{}",
            },
        )

    async def save_order(
        self,
        order: Order,
        *,
        expected: OrderStatus,
        lines: bool = True,
        unscreened: bool = False,
    ) -> bool:
        """Write the order, its lines and payment if it is still ``expected``; else nothing.

        False means another driver moved the order first (a lost compare-and-set).
        ``lines=False`` leaves the lines as stored (most steps do not change them);
        ``unscreened=True`` also requires that no screening was recorded yet (the screening
        step does not change the status). The order's checkout attempt follows its outcome.
        """
        moved = await self._connection.execute(
            _SAVE_UNSCREENED_ORDER if unscreened else _SAVE_ORDER,
            {"cas_id": order.id, "cas_status": expected.value, **_order_values(order)},
        )
        if not moved.rowcount:
            return False
        await self._connection.execute(
            _SAVE_ATTEMPT,
            {
                "attempt_order_id": order.id,
                "amount": None if order.total is None else order.total.amount,
                "currency": None if order.total is None else order.total.currency,
                "outcome": attempt_outcome(order).value,
                "update_time": order.update_time,
            },
        )
        if lines and order.lines:
            await self._connection.execute(
                _SAVE_ORDER_LINE,
                [
                    {"line_order_id": order.id, "line_position": position, **_line_values(line)}
                    for position, line in enumerate(order.lines)
                ],
            )
        await self._connection.execute(
            _SAVE_PAYMENT, {"paid_order_id": order.id, **_payment_values(order)}
        )
        return True

    async def save_payment(self, order: Order, *, expected: PaymentStatus, now: datetime) -> bool:
        """Write the order's payment alone if it is still ``expected``; else nothing."""
        moved = await self._connection.execute(
            update(payments)
            .where(payments.c.order_id == order.id, payments.c.status == expected.value)
            .values({**_payment_values(order), "update_time": now})
        )
        return bool(moved.rowcount)

    async def card_token(self, order_id: str) -> str | None:
        token = await self._connection.scalar(
            select(payments.c.card_token).where(payments.c.order_id == order_id)
        )
        return None if token is None else str(token)

    async def order(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order; ``for_update`` locks its row until the unit of work ends.

        The lock is PostgreSQL's ``FOR UPDATE``; SQLite's write lock covers the whole unit of
        work already.
        """
        if for_update:
            await self._connection.execute(
                select(orders.c.id).where(orders.c.id == order_id).with_for_update()
            )
        found = await self._orders(orders.c.id == order_id)
        return found[0] if found else None

    async def order_of_payment(self, payment_id: str) -> Order | None:
        order_id = await self._connection.scalar(
            select(payments.c.order_id).where(payments.c.id == payment_id)
        )
        return None if order_id is None else await self.order(order_id)

    async def list_orders(
        self,
        user_id: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
        status: OrderStatus | None = None,
    ) -> list[Order]:
        """Newest first, ``limit`` orders strictly after the ``(create_time, id)`` cursor."""
        conditions: list[Any] = []
        if user_id is not None:
            conditions.append(orders.c.user_id == user_id)
        if status is not None:
            conditions.append(orders.c.status == status.value)
        if after is not None:
            conditions.append(tuple_(orders.c.create_time, orders.c.id) < tuple_(*after))
        return await self._orders(and_(true(), *conditions), limit=limit)

    async def orders_in(
        self, statuses: Iterable[OrderStatus], updated_before: datetime, limit: int
    ) -> list[str]:
        """Ids of orders in ``statuses`` not changed since ``updated_before``, oldest first."""
        rows = await self._connection.scalars(
            select(orders.c.id)
            .where(
                orders.c.status.in_([s.value for s in statuses]),
                orders.c.update_time < updated_before,
            )
            .order_by(orders.c.update_time)
            .limit(limit)
        )
        return list(rows)

    async def count_orders(self, status: OrderStatus | None = None) -> int:
        query = select(func.count()).select_from(orders)
        if status is not None:
            query = query.where(orders.c.status == status.value)
        return int(await self._connection.scalar(query) or 0)

    # ---- fraud screening -----------------------------------------------------------------

    async def add_attempt(self, order: Order, card_fingerprint: str, client_address: str) -> None:
        """Record the checkout of a new order as an attempt the screening rules count."""
        await self._connection.execute(
            insert(checkout_attempts).values(
                order_id=order.id,
                user_id=order.user_id,
                card_fingerprint=card_fingerprint,
                client_address=client_address,
                outcome=AttemptOutcome.PENDING.value,
                create_time=order.create_time,
                update_time=order.create_time,
            )
        )

    async def screening_facts(
        self, order: Order, policy: ScreeningPolicy, now: datetime
    ) -> ScreeningFacts:
        """The counts the rules need about ``order``, over the windows ending ``now``.

        Its own attempt is left out of the counts, except of the user's distinct cards.
        """
        a = checkout_attempts.c
        mine = (
            await self._connection.execute(
                select(a.card_fingerprint, a.client_address).where(a.order_id == order.id)
            )
        ).first()
        card = mine.card_fingerprint if mine is not None else ""
        address = mine.client_address if mine is not None else ""
        velocity_since = now - policy.velocity_window
        declines_since = now - policy.decline_window
        declined = a.outcome == AttemptOutcome.DECLINED.value

        def count(who: Any, since: datetime, *also: Any) -> Any:
            return func.coalesce(
                func.sum(case((and_(who, a.create_time >= since, *also), 1), else_=0)), 0
            )

        # Unknown card or address (a direct gRPC caller): never matches anyone else's.
        by_card = and_(a.card_fingerprint == card, a.card_fingerprint != "") if card else false()
        by_address = (
            and_(a.client_address == address, a.client_address != "") if address else false()
        )
        by_user = a.user_id == order.user_id
        counts = (
            await self._connection.execute(
                select(
                    count(by_user, velocity_since),
                    count(by_card, velocity_since),
                    count(by_address, velocity_since),
                    count(by_user, declines_since, declined),
                    count(by_card, declines_since, declined),
                    count(by_address, declines_since, declined),
                ).where(
                    or_(by_user, by_card, by_address),
                    a.create_time >= min(velocity_since, declines_since),
                    a.order_id != order.id,
                )
            )
        ).one()
        cards = await self._connection.scalar(
            select(func.count(func.distinct(a.card_fingerprint))).where(
                by_user, a.create_time >= now - policy.cards_window, a.card_fingerprint != ""
            )
        )
        history = select(func.count(), func.max(orders.c.total_amount)).where(
            orders.c.user_id == order.user_id,
            orders.c.status.in_(_KEPT_PURCHASES),
            orders.c.id != order.id,
        )
        if order.total is not None:
            history = history.where(orders.c.currency == order.total.currency)
        confirmed, largest = (await self._connection.execute(history)).one()
        since = await self._connection.scalar(
            select(func.min(orders.c.create_time)).where(orders.c.user_id == order.user_id)
        )
        return ScreeningFacts(
            amount=0 if order.total is None else order.total.amount,
            user_attempts=int(counts[0]),
            card_attempts=int(counts[1]),
            address_attempts=int(counts[2]),
            user_declines=int(counts[3]),
            card_declines=int(counts[4]),
            address_declines=int(counts[5]),
            user_cards=max(int(cards or 0), 1),
            confirmed_orders=int(confirmed or 0),
            largest_confirmed=int(largest or 0),
            customer_since=since,
        )

    async def forget_attempts(self, *, before: datetime) -> int:
        """Delete attempts older than the retention: no window looks that far back."""
        result = await self._connection.execute(
            delete(checkout_attempts).where(checkout_attempts.c.create_time < before)
        )
        return int(result.rowcount)

    # ---- refunds -------------------------------------------------------------------------

    async def add_refund(self, order: Order, refund: Refund) -> None:
        await self._connection.execute(
            insert(refunds).values(
                id=refund.id,
                payment_id=order.paid_by.id,
                order_id=order.id,
                amount=refund.amount.amount,
                currency=refund.amount.currency,
                reason=refund.reason,
                kind=refund.kind.value,
                status=refund.status.value,
                requested_by=refund.requested_by,
                create_time=refund.create_time,
                update_time=refund.create_time,
            )
        )

    async def save_refund(self, refund: Refund, *, expected: RefundStatus, now: datetime) -> bool:
        """Write the refund's status if it is still ``expected``; else nothing."""
        moved = await self._connection.execute(
            update(refunds)
            .where(refunds.c.id == refund.id, refunds.c.status == expected.value)
            .values(status=refund.status.value, update_time=now)
        )
        return bool(moved.rowcount)

    async def order_of_refund(self, refund_id: str) -> Order | None:
        """The order a refund belongs to, its row locked (see ``order``)."""
        order_id = await self._connection.scalar(
            select(refunds.c.order_id).where(refunds.c.id == refund_id)
        )
        return None if order_id is None else await self.order(order_id, for_update=True)

    async def refunds_in(self, status: RefundStatus, updated_before: datetime) -> list[str]:
        """Ids of refunds in ``status`` not changed since ``updated_before``."""
        rows = await self._connection.scalars(
            select(refunds.c.id).where(
                refunds.c.status == status.value, refunds.c.update_time < updated_before
            )
        )
        return list(rows)

    # ---- row mapping ---------------------------------------------------------------------

    async def _orders(self, where: Any, limit: int = 1) -> list[Order]:
        connection = self._connection
        order_rows = (
            await connection.execute(
                select(orders)
                .where(where)
                .order_by(orders.c.create_time.desc(), orders.c.id.desc())
                .limit(limit)
            )
        ).all()
        if not order_rows:
            return []
        ids = [row.id for row in order_rows]
        item_rows = (
            await connection.execute(
                select(order_items)
                .where(order_items.c.order_id.in_(ids))
                .order_by(order_items.c.position)
            )
        ).all()
        payment_rows = (
            await connection.execute(select(payments).where(payments.c.order_id.in_(ids)))
        ).all()
        refund_rows = (
            await connection.execute(
                select(refunds)
                .where(refunds.c.order_id.in_(ids))
                .order_by(refunds.c.create_time, refunds.c.id)
            )
        ).all()
        lines: dict[str, list[OrderLine]] = {}
        for row in item_rows:
            price = Money(row.unit_amount, row.currency) if row.unit_amount is not None else None
            lines.setdefault(row.order_id, []).append(
                OrderLine(row.product_id, row.quantity, row.sku, row.name, price, row.available)
            )
        refunds_of: dict[str, list[Refund]] = {}
        for row in refund_rows:
            refunds_of.setdefault(row.payment_id, []).append(_refund(row))
        payment_of = {
            row.order_id: _payment(row, refunds_of.get(row.id, [])) for row in payment_rows
        }
        return [
            Order(
                id=row.id,
                user_id=row.user_id,
                status=OrderStatus(row.status),
                lines=tuple(lines.get(row.id, [])),
                total=Money(row.total_amount, row.currency)
                if row.total_amount is not None
                else None,
                payment=payment_of.get(row.id),
                create_time=row.create_time,
                update_time=row.update_time,
                failure_reason=row.failure_reason,
                screening=_screening(row),
            )
            for row in order_rows
        ]


class PaymentStore(unit_of_work.Store[UnitOfWork]):
    """The payment service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        super().__init__(database, outbox, UnitOfWork)

    async def count_orders(self, status: OrderStatus | None = None) -> int:
        """For tests and the benchmark's anomaly count."""
        async with self.reading() as uow:
            return await uow.count_orders(status)


def _order_values(order: Order) -> dict[str, Any]:
    total = order.total
    return {
        "user_id": order.user_id,
        "status": order.status.value,
        "currency": None if total is None else total.currency,
        "total_amount": None if total is None else total.amount,
        "failure_reason": order.failure_reason,
        "create_time": order.create_time,
        "update_time": order.update_time,
        **_screening_values(order.screening),
    }


def _screening_values(screening: Screening | None) -> dict[str, Any]:
    if screening is None:
        return {"screening_decision": None, "screening_score": None, "screening_reasons": None}
    findings = [[f.rule.value, f.score, f.detail] for f in screening.findings]
    return {
        "screening_decision": screening.decision.value,
        "screening_score": screening.score,
        "screening_reasons": json.dumps(findings, separators=(",", ":")),
    }


def _screening(row: Any) -> Screening | None:
    if row.screening_decision is None:
        return None
    findings = tuple(
        Finding(Rule(rule), int(score), str(detail))
        for rule, score, detail in json.loads(row.screening_reasons or "[]")
    )
    return Screening(Decision(row.screening_decision), int(row.screening_score or 0), findings)


def _line_values(line: OrderLine) -> dict[str, Any]:
    price = line.unit_price
    return {
        "product_id": line.product_id,
        "quantity": line.quantity,
        "sku": line.sku,
        "name": line.name,
        "unit_amount": None if price is None else price.amount,
        "currency": None if price is None else price.currency,
        "available": line.available,
    }


def _payment_values(order: Order) -> dict[str, Any]:
    payment = order.paid_by
    # The payment's amount exists once the order is priced; until then the columns stay NULL.
    priced = order.total is not None
    failure = payment.failure_reason
    return {
        "status": payment.status.value,
        "amount": payment.amount.amount if priced else None,
        "currency": payment.amount.currency if priced else None,
        "authorization_id": payment.authorization_id,
        "failure_reason": None if failure is None else failure.value,
        "update_time": order.update_time,
    }


def _idempotency_key(row: Any) -> IdempotencyKey:
    return IdempotencyKey(
        user_id=row.user_id,
        key=row.key,
        fingerprint=row.fingerprint,
        order_id=row.order_id,
        create_time=row.create_time,
        expire_time=row.expire_time,
        reply=_reply(row),
    )


def _reply(row: Any) -> CheckoutReply | None:
    if row.reply_status is None:
        return None
    if row.reply_status == _REPLIED_OK:
        return CheckoutReply(row.order_id, body=bytes(row.reply_body or b""))
    error = RecordedError(
        row.reply_status,
        row.reply_message or "",
        row.reply_reason,
        row.reply_field,
        row.reply_retry_after_s,
        tuple(
            FieldViolation(field, description)
            for field, description in json.loads(row.reply_violations or "[]")
        ),
    )
    return CheckoutReply(row.order_id, error=error)


def _violations_json(violations: Iterable[FieldViolation]) -> str | None:
    listed = [[violation.field, violation.description] for violation in violations]
    return json.dumps(listed) if listed else None


def _refund(row: Any) -> Refund:
    return Refund(
        id=row.id,
        amount=Money(row.amount, row.currency),
        reason=row.reason,
        status=RefundStatus(row.status),
        create_time=row.create_time,
        requested_by=row.requested_by,
        kind=RefundKind(row.kind),
    )


def _payment(row: Any, its_refunds: list[Refund]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        status=PaymentStatus(row.status),
        amount=Money(row.amount or 0, row.currency or ""),
        card_brand=CardBrand(row.card_brand),
        card_last4=row.card_last4,
        create_time=row.create_time,
        failure_reason=FailureReason(row.failure_reason) if row.failure_reason else None,
        authorization_id=row.authorization_id,
        refunds=tuple(its_refunds),
    )
