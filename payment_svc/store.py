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
    delete,
    func,
    insert,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from common import clock, unit_of_work
from common.db import Database, UtcDateTime, insert_on_conflict
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
    Column(
        "seq",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("id", String(64), nullable=False, unique=True),
    Column("order_id", String(64), nullable=False),
    # The CloudEvents type; empty for the placement, recorded with the order row itself.
    Column("type", String(128), nullable=False),
    Column("time", _TIME, nullable=False),
    # The event's ``data`` as published (JSON).
    Column("data", Text, nullable=False),
    Index("ix_payment_order_changes_order", "order_id", "seq"),
)

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


def _insert_ignoring_duplicates(session: AsyncSession, table: Table) -> Any:
    return insert_on_conflict(session, table).on_conflict_do_nothing()


class UnitOfWork(unit_of_work.UnitOfWork):
    """The reads and writes of one use case, committed together with its events."""

    async def emit(self, *events: OutgoingEvent) -> None:
        """Record events in this transaction, and each order's events in its audit trail."""
        now = clock.now()
        ids = await self._outbox.add(self._session, *events, now=now)
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
            await self._session.execute(insert(order_changes), trail)

    async def order_trail(self, order_id: str, after_seq: int, limit: int) -> list[TrailEntry]:
        """Up to ``limit`` recorded changes of the order after ``after_seq``, oldest first."""
        rows = (
            await self._session.execute(
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
        claimed = await self._session.execute(
            _insert_ignoring_duplicates(self._session, idempotency_keys).values(
                user_id=key.user_id,
                key=key.key,
                fingerprint=key.fingerprint,
                order_id=key.order_id,
                create_time=key.create_time,
                expire_time=key.expire_time,
            )
        )
        return bool(claimed.rowcount)  # type: ignore[attr-defined]

    async def idempotency_key(self, user_id: str, key: str) -> IdempotencyKey | None:
        row = (
            await self._session.execute(
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
        result = await self._session.execute(query)
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def erase_personal_data(self, user_id: str) -> tuple[int, int]:
        """Erase what identifies a person in a user's orders and payments, keep the accounts.

        The provider's card token and the last four digits go; brand, amounts, statuses and
        dates stay. The user's idempotency keys go too: their stored replies and fingerprints
        describe the card. Returns (orders, payments erased).
        """
        their_orders = select(orders.c.id).where(orders.c.user_id == user_id)
        order_count = (
            await self._session.execute(
                select(func.count()).select_from(orders).where(orders.c.user_id == user_id)
            )
        ).scalar_one()
        erased = await self._session.execute(
            update(payments)
            .where(payments.c.order_id.in_(their_orders))
            .values(card_token="", card_last4="")
        )
        await self._session.execute(
            delete(idempotency_keys).where(idempotency_keys.c.user_id == user_id)
        )
        return int(order_count), int(erased.rowcount)  # type: ignore[attr-defined]

    async def keep_reply(self, user_id: str, key: str, reply: CheckoutReply) -> bool:
        """Keep ``reply`` with the key unless one is kept already (first writer wins)."""
        error = reply.error
        result = await self._session.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.user_id == user_id,
                idempotency_keys.c.key == key,
                idempotency_keys.c.order_id == reply.order_id,
                idempotency_keys.c.reply_status.is_(None),
            )
            .values(
                reply_status=_REPLIED_OK if error is None else error.status,
                reply_body=reply.body if error is None else None,
                reply_message=None if error is None else error.message,
                reply_reason=None if error is None else error.reason,
                reply_field=None if error is None else error.field,
                reply_retry_after_s=None if error is None else error.retry_after_s,
                reply_violations=_violations_json(error.violations if error else ()),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # ---- orders and payments -------------------------------------------------------------

    async def add_order(self, order: Order, card_token: str) -> None:
        """A new order with its lines and payment; ``card_token`` is the provider's token."""
        payment = order.paid_by
        await self._session.execute(insert(orders).values({**_order_values(order), "id": order.id}))
        await self._session.execute(
            insert(order_items),
            [
                {"order_id": order.id, "position": position, **_line_values(line)}
                for position, line in enumerate(order.lines)
            ],
        )
        await self._session.execute(
            insert(payments).values(
                {
                    **_payment_values(order),
                    "id": payment.id,
                    "order_id": order.id,
                    "card_token": card_token,
                    "card_brand": payment.card_brand.value,
                    "card_last4": payment.card_last4,
                    "create_time": payment.create_time,
                }
            )
        )
        await self._session.execute(
            insert(order_changes).values(
                id=placement_id(order.id),
                order_id=order.id,
                type="",
                time=order.create_time,
                data="{}",
            )
        )

    async def save_order(self, order: Order, *, expected: OrderStatus, lines: bool = True) -> bool:
        """Write the order, its lines and payment if it is still ``expected``; else nothing.

        False means another driver moved the order first (a lost compare-and-set).
        ``lines=False`` leaves the lines as stored (most steps do not change them).
        """
        moved = await self._session.execute(
            update(orders)
            .where(orders.c.id == order.id, orders.c.status == expected.value)
            .values(_order_values(order))
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            return False
        for position, line in enumerate(order.lines if lines else ()):
            await self._session.execute(
                update(order_items)
                .where(order_items.c.order_id == order.id, order_items.c.position == position)
                .values(_line_values(line))
            )
        await self._session.execute(
            update(payments).where(payments.c.order_id == order.id).values(_payment_values(order))
        )
        return True

    async def save_payment(self, order: Order, *, expected: PaymentStatus, now: datetime) -> bool:
        """Write the order's payment alone if it is still ``expected``; else nothing."""
        moved = await self._session.execute(
            update(payments)
            .where(payments.c.order_id == order.id, payments.c.status == expected.value)
            .values({**_payment_values(order), "update_time": now})
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]

    async def card_token(self, order_id: str) -> str | None:
        token = await self._session.scalar(
            select(payments.c.card_token).where(payments.c.order_id == order_id)
        )
        return None if token is None else str(token)

    async def order(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order; ``for_update`` locks its row until the unit of work ends.

        The lock is PostgreSQL's ``FOR UPDATE``; SQLite's write lock covers the whole unit of
        work already.
        """
        if for_update:
            await self._session.execute(
                select(orders.c.id).where(orders.c.id == order_id).with_for_update()
            )
        found = await self._orders(orders.c.id == order_id)
        return found[0] if found else None

    async def order_of_payment(self, payment_id: str) -> Order | None:
        order_id = await self._session.scalar(
            select(payments.c.order_id).where(payments.c.id == payment_id)
        )
        return None if order_id is None else await self.order(order_id)

    async def list_orders(
        self, user_id: str | None, limit: int, after: tuple[datetime, str] | None
    ) -> list[Order]:
        """Newest first, ``limit`` orders strictly after the ``(create_time, id)`` cursor."""
        conditions: list[Any] = []
        if user_id is not None:
            conditions.append(orders.c.user_id == user_id)
        if after is not None:
            conditions.append(tuple_(orders.c.create_time, orders.c.id) < tuple_(*after))
        return await self._orders(and_(true(), *conditions), limit=limit)

    async def orders_in(
        self, statuses: Iterable[OrderStatus], updated_before: datetime, limit: int
    ) -> list[str]:
        """Ids of orders in ``statuses`` not changed since ``updated_before``, oldest first."""
        rows = await self._session.scalars(
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
        return int(await self._session.scalar(query) or 0)

    # ---- refunds -------------------------------------------------------------------------

    async def add_refund(self, order: Order, refund: Refund) -> None:
        await self._session.execute(
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
        moved = await self._session.execute(
            update(refunds)
            .where(refunds.c.id == refund.id, refunds.c.status == expected.value)
            .values(status=refund.status.value, update_time=now)
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]

    async def order_of_refund(self, refund_id: str) -> Order | None:
        """The order a refund belongs to, its row locked (see ``order``)."""
        order_id = await self._session.scalar(
            select(refunds.c.order_id).where(refunds.c.id == refund_id)
        )
        return None if order_id is None else await self.order(order_id, for_update=True)

    async def refunds_in(self, status: RefundStatus, updated_before: datetime) -> list[str]:
        """Ids of refunds in ``status`` not changed since ``updated_before``."""
        rows = await self._session.scalars(
            select(refunds.c.id).where(
                refunds.c.status == status.value, refunds.c.update_time < updated_before
            )
        )
        return list(rows)

    # ---- row mapping ---------------------------------------------------------------------

    async def _orders(self, where: Any, limit: int = 1) -> list[Order]:
        session = self._session
        order_rows = (
            await session.execute(
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
            await session.execute(
                select(order_items)
                .where(order_items.c.order_id.in_(ids))
                .order_by(order_items.c.position)
            )
        ).all()
        payment_rows = (
            await session.execute(select(payments).where(payments.c.order_id.in_(ids)))
        ).all()
        refund_rows = (
            await session.execute(
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
    }


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
