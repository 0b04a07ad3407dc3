"""Persistence of the payment service: its own database, one unit of work per use case.

Every saga step is a compare-and-set on the order's status (``UPDATE ... WHERE status =
expected``) committed together with its outbox events, so two drivers of one order (a request
and the recovery loop, or two replicas) can repeat the idempotent remote calls but never apply
a step twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
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

from common import errors
from common.db import Database, UtcDateTime, insert_on_conflict
from common.money import Money
from common.outbox import Outbox, OutgoingEvent
from common.reasons import Reason
from payment_svc import domain
from payment_svc.domain import (
    CardBrand,
    CardOnFile,
    FailureReason,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    RequestedItem,
)

_metadata = MetaData()
_TIME = UtcDateTime()

orders = Table(
    "payment_orders",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("currency", String(3)),
    Column("total_amount", BigInteger),
    Column("failure_reason", String(64)),
    Column("create_time", _TIME, nullable=False),
    Column("update_time", _TIME, nullable=False),
)
order_items = Table(
    "payment_order_items",
    _metadata,
    Column("order_id", String(64), ForeignKey("payment_orders.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("product_id", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("sku", String(128), nullable=False),
    Column("name", String(512), nullable=False),
    Column("unit_amount", BigInteger),
    Column("currency", String(3)),
)
payments = Table(
    "payments",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("payment_orders.id"), nullable=False),
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
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("payment_id", String(64), ForeignKey("payments.id"), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("create_time", _TIME, nullable=False),
    Column("update_time", _TIME, nullable=False),
)
idempotency_keys = Table(
    "payment_idempotency_keys",
    _metadata,
    Column("user_id", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("create_time", _TIME, nullable=False),
    Column("expire_time", _TIME, nullable=False),
)

KIND_REFUND = "refund"
KIND_CANCEL = "cancel"


@dataclass(frozen=True)
class CheckoutStart:
    """What ``begin_checkout`` found or created for an idempotency key."""

    order_id: str
    created: bool  # False: the key was used before; replay that order's outcome
    same_body: bool


@dataclass(frozen=True)
class PaymentChange:
    """Columns of the payment row a saga step sets along with the order's status."""

    status: PaymentStatus
    amount: Money | None = None
    authorization_id: str | None = None
    failure_reason: FailureReason | None = None


@dataclass(frozen=True)
class RefundWork:
    """A refund set aside and waiting for the provider (and, for a cancel, the restock)."""

    refund: Refund
    order: Order
    kind: str
    authorization_id: str


EventsFor = Callable[[Order, Refund], Sequence[OutgoingEvent]]


def _insert_ignoring_duplicates(session: AsyncSession, table: Table) -> Any:
    return insert_on_conflict(session, table).on_conflict_do_nothing()


class PaymentStore:
    """The payment service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self._database = database
        self._outbox = outbox

    @property
    def database(self) -> Database:
        return self._database

    async def reachable(self) -> bool:
        return await self._database.ping()

    # ---- checkout ------------------------------------------------------------------------

    async def begin_checkout(
        self,
        *,
        user_id: str,
        key: str,
        fingerprint: str,
        items: Sequence[RequestedItem],
        card: CardOnFile,
        order_id: str,
        payment_id: str,
        now: datetime,
        key_ttl: timedelta,
    ) -> CheckoutStart:
        """Claim ``key`` for a new PENDING order, or find the order it already belongs to.

        The key is claimed with an insert that ignores a duplicate, so of two concurrent
        requests exactly one creates the order (PostgreSQL makes the second wait for the first
        to commit; SQLite's write lock queues them).
        """
        async with self._database.session() as session:
            await session.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.user_id == user_id,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.expire_time < now,
                )
            )
            claimed = await session.execute(
                _insert_ignoring_duplicates(session, idempotency_keys).values(
                    user_id=user_id,
                    key=key,
                    fingerprint=fingerprint,
                    order_id=order_id,
                    create_time=now,
                    expire_time=now + key_ttl,
                )
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                row = (
                    await session.execute(
                        select(idempotency_keys).where(
                            idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key
                        )
                    )
                ).one()
                return CheckoutStart(row.order_id, False, row.fingerprint == fingerprint)
            await session.execute(
                insert(orders).values(
                    id=order_id,
                    user_id=user_id,
                    status=OrderStatus.PENDING.value,
                    create_time=now,
                    update_time=now,
                )
            )
            await session.execute(
                insert(order_items),
                [
                    {
                        "order_id": order_id,
                        "position": position,
                        "product_id": item.product_id,
                        "quantity": item.quantity,
                        "sku": "",
                        "name": "",
                    }
                    for position, item in enumerate(items)
                ],
            )
            await session.execute(
                insert(payments).values(
                    id=payment_id,
                    order_id=order_id,
                    status=PaymentStatus.PENDING.value,
                    card_token=card.token,
                    card_brand=card.brand.value,
                    card_last4=card.last4,
                    create_time=now,
                    update_time=now,
                )
            )
        return CheckoutStart(order_id, True, True)

    async def card_token(self, order_id: str) -> str:
        async with self._database.session() as session:
            token = await session.scalar(
                select(payments.c.card_token).where(payments.c.order_id == order_id)
            )
        if token is None:
            raise errors.NotFound(f"order {order_id} has no payment")
        return str(token)

    async def transition(
        self,
        order_id: str,
        expected: OrderStatus,
        target: OrderStatus,
        *,
        now: datetime,
        lines: Sequence[OrderLine] | None = None,
        payment: PaymentChange | None = None,
        failure_reason: str | None = None,
        events: Sequence[OutgoingEvent] = (),
    ) -> bool:
        """Move the order ``expected -> target`` with its changes and events; False if it moved.

        False means another driver applied this step (or another) first: nothing was written.
        """
        domain.check_transition(expected, target)
        async with self._database.session() as session:
            values: dict[str, Any] = {"status": target.value, "update_time": now}
            if failure_reason is not None:
                values["failure_reason"] = failure_reason
            if lines is not None:
                total = domain.order_total(list(lines))
                values.update(total_amount=total.amount, currency=total.currency)
            moved = await session.execute(
                update(orders)
                .where(orders.c.id == order_id, orders.c.status == expected.value)
                .values(**values)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return False
            if lines is not None:
                for position, line in enumerate(lines):
                    price = line.unit_price
                    await session.execute(
                        update(order_items)
                        .where(
                            order_items.c.order_id == order_id,
                            order_items.c.position == position,
                        )
                        .values(
                            sku=line.sku,
                            name=line.name,
                            unit_amount=price.amount if price else None,
                            currency=price.currency if price else None,
                        )
                    )
            if payment is not None:
                await self._change_payment(session, order_id, payment, now)
            await self._outbox.add(session, *events)
        return True

    async def change_payment(
        self,
        order_id: str,
        expected: PaymentStatus,
        change: PaymentChange,
        *,
        now: datetime,
        events: Sequence[OutgoingEvent] = (),
    ) -> bool:
        """Compare-and-set of the payment's status alone (the capture, within an order step)."""
        async with self._database.session() as session:
            moved = await session.execute(
                update(payments)
                .where(payments.c.order_id == order_id, payments.c.status == expected.value)
                .values(status=change.status.value, update_time=now)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return False
            await self._change_payment(session, order_id, change, now)
            await self._outbox.add(session, *events)
        return True

    async def _change_payment(
        self, session: AsyncSession, order_id: str, change: PaymentChange, now: datetime
    ) -> None:
        values: dict[str, Any] = {"status": change.status.value, "update_time": now}
        if change.amount is not None:
            values.update(amount=change.amount.amount, currency=change.amount.currency)
        if change.authorization_id is not None:
            values["authorization_id"] = change.authorization_id
        if change.failure_reason is not None:
            values["failure_reason"] = change.failure_reason.value
        await session.execute(
            update(payments).where(payments.c.order_id == order_id).values(values)
        )

    async def unfinished_orders(self, updated_before: datetime, limit: int = 100) -> list[str]:
        """Orders whose saga has not moved since ``updated_before``: the recovery loop's work."""
        async with self._database.session() as session:
            rows = await session.scalars(
                select(orders.c.id)
                .where(
                    orders.c.status.in_([s.value for s in domain.SAGA_STATUSES]),
                    orders.c.update_time < updated_before,
                )
                .order_by(orders.c.update_time)
                .limit(limit)
            )
            return list(rows)

    async def prune_idempotency_keys(self, now: datetime) -> int:
        async with self._database.session() as session:
            result = await session.execute(
                delete(idempotency_keys).where(idempotency_keys.c.expire_time < now)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- reads ---------------------------------------------------------------------------

    async def order(self, order_id: str) -> Order | None:
        async with self._database.session() as session:
            found = await self._orders(session, orders.c.id == order_id)
        return found[0] if found else None

    async def payment(self, payment_id: str) -> tuple[Payment, str] | None:
        """The payment and the id of the user whose order it pays for."""
        async with self._database.session() as session:
            order_id = await session.scalar(
                select(payments.c.order_id).where(payments.c.id == payment_id)
            )
            if order_id is None:
                return None
            [order] = await self._orders(session, orders.c.id == order_id)
        assert order.payment is not None
        return order.payment, order.user_id

    async def list_orders(
        self, user_id: str | None, limit: int, after: tuple[datetime, str] | None
    ) -> list[Order]:
        """Newest first, ``limit`` orders strictly after the ``(create_time, id)`` cursor."""
        conditions: list[Any] = []
        if user_id is not None:
            conditions.append(orders.c.user_id == user_id)
        if after is not None:
            conditions.append(tuple_(orders.c.create_time, orders.c.id) < tuple_(*after))
        async with self._database.session() as session:
            return await self._orders(session, and_(true(), *conditions), limit=limit)

    async def _orders(self, session: AsyncSession, where: Any, limit: int = 1) -> list[Order]:
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
                OrderLine(row.product_id, row.quantity, row.sku, row.name, price)
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
                create_time=_aware(row.create_time),
                update_time=_aware(row.update_time),
                failure_reason=row.failure_reason,
            )
            for row in order_rows
        ]

    # ---- refunds and cancellation --------------------------------------------------------

    async def start_refund(
        self,
        order_id: str,
        *,
        kind: str,
        requested: Money | None,
        reason: str,
        refund_id: str,
        requested_by: str,
        now: datetime,
    ) -> RefundWork | Order:
        """Set a refund's amount aside, serialized per order; an Order when nothing is to do.

        The order row is locked (PostgreSQL ``FOR UPDATE``; SQLite's write lock covers the whole
        unit of work) so concurrent refunds see each other's amounts and never exceed the
        captured total. A cancel that is already under way is returned again (idempotent).
        """
        async with self._database.session() as session:
            await session.execute(
                select(orders.c.id).where(orders.c.id == order_id).with_for_update()
            )
            found = await self._orders(session, orders.c.id == order_id)
            if not found:
                raise errors.NotFound(f"order {order_id} not found")
            order = found[0]
            payment = order.payment
            assert payment is not None
            if kind == KIND_CANCEL:
                if order.status is OrderStatus.CANCELLED:
                    return order
                under_way = await session.scalar(
                    select(refunds.c.id).where(
                        refunds.c.order_id == order_id,
                        refunds.c.kind == KIND_CANCEL,
                        refunds.c.status == RefundStatus.PENDING.value,
                    )
                )
                if under_way is not None:
                    refund = next(r for r in payment.refunds if r.id == under_way)
                    return RefundWork(refund, order, kind, payment.authorization_id or "")
                domain.check_cancellable(order)
            elif order.status not in (OrderStatus.CONFIRMED, OrderStatus.PARTIALLY_REFUNDED):
                raise errors.FailedPrecondition(
                    f"an order that is {order.status.value} cannot be refunded",
                    reason=Reason.NOT_REFUNDABLE,
                )
            amount = domain.refund_amount(payment, requested)
            refund = Refund(refund_id, amount, reason, RefundStatus.PENDING, now)
            await session.execute(
                insert(refunds).values(
                    id=refund_id,
                    payment_id=payment.id,
                    order_id=order_id,
                    amount=amount.amount,
                    currency=amount.currency,
                    reason=reason,
                    kind=kind,
                    status=RefundStatus.PENDING.value,
                    requested_by=requested_by,
                    create_time=now,
                    update_time=now,
                )
            )
        return RefundWork(refund, order, kind, payment.authorization_id or "")

    async def finish_refund(
        self, refund_id: str, *, succeeded: bool, now: datetime, events_for: EventsFor
    ) -> Order:
        """Record the provider's answer to a refund, with the order's new status and events."""
        async with self._database.session() as session:
            row = (
                await session.execute(
                    select(refunds).where(refunds.c.id == refund_id).with_for_update()
                )
            ).one()
            if row.status == RefundStatus.PENDING.value:
                status = RefundStatus.SUCCEEDED if succeeded else RefundStatus.FAILED
                await session.execute(
                    update(refunds)
                    .where(refunds.c.id == refund_id)
                    .values(status=status.value, update_time=now)
                )
                if succeeded:
                    await self._apply_refund(session, row, now, events_for)
            [order] = await self._orders(session, orders.c.id == row.order_id)
        return order

    async def _apply_refund(
        self, session: AsyncSession, row: Any, now: datetime, events_for: EventsFor
    ) -> None:
        [order] = await self._orders(session, orders.c.id == row.order_id)
        payment = order.payment
        assert payment is not None
        done = sum(
            (r.amount for r in payment.refunds if r.status is RefundStatus.SUCCEEDED),
            Money(0, payment.amount.currency),
        )
        order_status, payment_status = domain.status_after_refunds(payment.amount, done)
        if row.kind == KIND_CANCEL:
            order_status = OrderStatus.CANCELLED
        domain.check_transition(order.status, order_status)
        await session.execute(
            update(orders)
            .where(orders.c.id == order.id)
            .values(status=order_status.value, update_time=now)
        )
        await session.execute(
            update(payments)
            .where(payments.c.id == payment.id)
            .values(status=payment_status.value, update_time=now)
        )
        [after] = await self._orders(session, orders.c.id == order.id)
        await self._outbox.add(session, *events_for(after, _refund(row)))

    async def pending_refunds(self, updated_before: datetime) -> list[RefundWork]:
        """Refunds set aside whose provider call never finished (a crash): recovery redoes them."""
        async with self._database.session() as session:
            rows = (
                await session.execute(
                    select(refunds).where(
                        refunds.c.status == RefundStatus.PENDING.value,
                        refunds.c.update_time < updated_before,
                    )
                )
            ).all()
            work = []
            for row in rows:
                [order] = await self._orders(session, orders.c.id == row.order_id)
                assert order.payment is not None
                work.append(
                    RefundWork(_refund(row), order, row.kind, order.payment.authorization_id or "")
                )
        return work

    async def count_orders(self, status: OrderStatus | None = None) -> int:
        """For tests and the benchmark's anomaly count."""
        query = select(func.count()).select_from(orders)
        if status is not None:
            query = query.where(orders.c.status == status.value)
        async with self._database.session() as session:
            return int(await session.scalar(query) or 0)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _refund(row: Any) -> Refund:
    return Refund(
        id=row.id,
        amount=Money(row.amount, row.currency),
        reason=row.reason,
        status=RefundStatus(row.status),
        create_time=_aware(row.create_time),
    )


def _payment(row: Any, its_refunds: list[Refund]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        status=PaymentStatus(row.status),
        amount=Money(row.amount or 0, row.currency or ""),
        card_brand=CardBrand(row.card_brand),
        card_last4=row.card_last4,
        create_time=_aware(row.create_time),
        failure_reason=FailureReason(row.failure_reason) if row.failure_reason else None,
        authorization_id=row.authorization_id,
        refunds=tuple(its_refunds),
    )
