"""The read-model tables and the SQL that folds increments into them and reads them back.

Every write is an ``INSERT ... ON CONFLICT DO UPDATE`` that adds to what is there, so two
consumers (one per partition or topic) applying events concurrently, in any order, end with
the same sums; on PostgreSQL the conflicting row is locked and re-read, on SQLite writers are
serialized anyway. ``as_of`` keeps the greatest event time seen, which is commutative too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    delete,
    func,
    select,
    text,
)

from common import unit_of_work
from common.db import Database, UtcDateTime, on_conflict_insert
from common.inbox import first_delivery, inbox_table
from common.outbox import Outbox
from payment_svc.analytics.facts import Fold, Line, Measure, product_increments
from payment_svc.store import order_changes

METADATA = MetaData()
_TIME = UtcDateTime()

counters = Table(
    "payment_sales_counters",
    METADATA,
    Column("hour", _TIME, primary_key=True),
    Column("measure", String(16), primary_key=True),
    Column("label", String(64), primary_key=True),  # failure reason or currency, else ""
    Column("count", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),  # minor units, for revenue and refunds
)
product_sales = Table(
    "payment_product_sales",
    METADATA,
    Column("hour", _TIME, primary_key=True),
    Column("product_id", String(128), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("units", BigInteger, nullable=False),
    Column("revenue", BigInteger, nullable=False),
)
# The half of an order's product sales that arrived first: its lines (order.placed) or the
# hour it was confirmed (order.confirmed). Whichever event finds the other half adds the sales.
pending_orders = Table(
    "payment_sales_orders",
    METADATA,
    Column("order_id", String(64), primary_key=True),
    Column("lines", Text),
    Column("confirmed_hour", _TIME),
)
state = Table(
    "payment_sales_state",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one row
    Column("as_of", _TIME, nullable=False),
)
MODEL_TABLES = (counters, product_sales, pending_orders, state)


@dataclass(frozen=True)
class Counter:
    hour: datetime
    measure: Measure
    label: str
    count: int
    amount: int


@dataclass(frozen=True)
class ProductTotal:
    product_id: str
    units: int
    revenue: dict[str, int]  # currency -> minor units


@dataclass(frozen=True)
class StoredChange:
    """An order or payment event as ``payment_order_changes`` keeps it."""

    seq: int
    id: str
    type: str
    time: datetime
    data: dict[str, Any]


class AnalyticsUnit(unit_of_work.UnitOfWork):
    """The reads and writes of the read model in one transaction."""

    async def apply(self, fold: Fold) -> None:
        """Add one event's increments (its inbox row is recorded by ``Store.handling``)."""
        await self.apply_all((fold,))

    async def apply_all(self, folds: Sequence[Fold]) -> None:
        """Add several events' increments, summed per row first: one upsert per row touched.

        Rows are written in key order, so two transactions upserting the same rows lock them
        in the same order and cannot deadlock each other.
        """
        if not folds:
            return
        dialect = self._connection.dialect.name
        tallies: dict[tuple[datetime, str, str], list[int]] = {}
        products: dict[tuple[datetime, str, str], list[int]] = {}
        for fold in folds:
            for increment in fold.increments:
                key = (increment.hour, increment.measure.value, increment.label)
                _tally(tallies, key, increment.count, increment.amount)
            if fold.lines is not None:
                found = await self._connection.scalar(
                    _pair_lines(dialect),
                    {"order_id": fold.order_id, "lines": _lines_json(fold.lines)},
                )
                if found is not None:
                    _tally_products(products, found, fold.lines)
            if fold.confirmed_hour is not None:
                found = await self._connection.scalar(
                    _pair_confirmed(dialect),
                    {"order_id": fold.order_id, "confirmed_hour": fold.confirmed_hour},
                )
                if found is not None:
                    _tally_products(products, fold.confirmed_hour, _lines_of(found))
        if tallies:
            await self._connection.execute(
                _add_counters(dialect),
                [
                    {"hour": hour, "measure": measure, "label": label, "count": n, "amount": a}
                    for (hour, measure, label), (n, a) in sorted(tallies.items())
                ],
            )
        if products:
            await self._connection.execute(
                _add_products(dialect),
                [
                    {"hour": hour, "product_id": p, "currency": c, "units": u, "revenue": r}
                    for (hour, p, c), (u, r) in sorted(products.items())
                ],
            )
        await self._connection.execute(
            _advance(dialect), {"id": 1, "as_of": max(fold.time for fold in folds)}
        )

    # ---- reads ---------------------------------------------------------------------------

    async def as_of(self) -> datetime | None:
        value: datetime | None = await self._connection.scalar(select(state.c.as_of))
        return value

    async def counters_in(self, start: datetime, end: datetime) -> list[Counter]:
        rows = await self._connection.execute(
            select(counters).where(counters.c.hour >= start, counters.c.hour < end)
        )
        # ``row.count`` would be the tuple's method: read the column by name.
        return [
            Counter(
                row.hour, Measure(row.measure), row.label, int(row._mapping["count"]), row.amount
            )
            for row in rows
        ]

    async def top_products(self, start: datetime, end: datetime, limit: int) -> list[ProductTotal]:
        in_range = (product_sales.c.hour >= start, product_sales.c.hour < end)
        units = func.sum(product_sales.c.units)
        top = (
            await self._connection.execute(
                select(product_sales.c.product_id, units.label("units"))
                .where(*in_range)
                .group_by(product_sales.c.product_id)
                .order_by(units.desc(), product_sales.c.product_id)
                .limit(limit)
            )
        ).all()
        ids = [row.product_id for row in top]
        revenue: dict[str, dict[str, int]] = {product_id: {} for product_id in ids}
        rows = await self._connection.execute(
            select(
                product_sales.c.product_id,
                product_sales.c.currency,
                func.sum(product_sales.c.revenue).label("revenue"),
            )
            .where(*in_range, product_sales.c.product_id.in_(ids))
            .group_by(product_sales.c.product_id, product_sales.c.currency)
        )
        for row in rows:
            if row.currency:  # "" holds the units of lines whose price was not known
                revenue[row.product_id][row.currency] = int(row.revenue)
        return [
            ProductTotal(row.product_id, int(row.units), revenue[row.product_id]) for row in top
        ]

    # ---- rebuild -------------------------------------------------------------------------

    async def clear(self) -> None:
        """Empty the read model, keeping writers out until this transaction ends."""
        if self._connection.dialect.name == "postgresql":
            # Consumers wait (their upserts need ROW EXCLUSIVE); readers go on reading the old
            # figures until the rebuild commits. SQLite's write lock, taken at BEGIN, does the
            # same there.
            names = ", ".join(table.name for table in MODEL_TABLES)
            await self._connection.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
        for table in MODEL_TABLES:
            await self._connection.execute(delete(table))

    async def changes_after(self, seq: int, types: Iterable[str], limit: int) -> list[StoredChange]:
        rows = await self._connection.execute(
            select(order_changes)
            .where(order_changes.c.seq > seq, order_changes.c.type.in_(sorted(types)))
            .order_by(order_changes.c.seq)
            .limit(limit)
        )
        return [
            StoredChange(row.seq, row.id, row.type, row.time, json.loads(row.data)) for row in rows
        ]

    async def mark_handled(self, consumer: str, event_id: str) -> None:
        """Record a folded event in the inbox, so its delivery from Kafka changes nothing."""
        await first_delivery(self._connection, inbox_table("payment"), consumer, event_id)


class AnalyticsStore(unit_of_work.Store[AnalyticsUnit]):
    """The read model, in the payment service's database (its inbox is the service's)."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        super().__init__(database, outbox, AnalyticsUnit)


# The upserts, built once per dialect: every consumed event runs some of them, and building and
# keying a statement costs more CPU than executing it (as ``common.inbox`` found).


@cache
def _add_counters(dialect: str) -> Any:
    statement = on_conflict_insert(counters, dialect)
    return statement.on_conflict_do_update(
        index_elements=[counters.c.hour, counters.c.measure, counters.c.label],
        set_={
            "count": counters.c.count + statement.excluded["count"],
            "amount": counters.c.amount + statement.excluded.amount,
        },
    )


@cache
def _add_products(dialect: str) -> Any:
    statement = on_conflict_insert(product_sales, dialect)
    return statement.on_conflict_do_update(
        index_elements=[product_sales.c.hour, product_sales.c.product_id, product_sales.c.currency],
        set_={
            "units": product_sales.c.units + statement.excluded.units,
            "revenue": product_sales.c.revenue + statement.excluded.revenue,
        },
    )


@cache
def _pair_lines(dialect: str) -> Any:
    """Store an order's lines; its confirmed hour if that half came first."""
    statement = on_conflict_insert(pending_orders, dialect)
    return statement.on_conflict_do_update(
        index_elements=[pending_orders.c.order_id], set_={"lines": statement.excluded.lines}
    ).returning(pending_orders.c.confirmed_hour)


@cache
def _pair_confirmed(dialect: str) -> Any:
    """Store the hour an order was confirmed; its lines if that half came first."""
    statement = on_conflict_insert(pending_orders, dialect)
    return statement.on_conflict_do_update(
        index_elements=[pending_orders.c.order_id],
        set_={"confirmed_hour": statement.excluded.confirmed_hour},
    ).returning(pending_orders.c.lines)


@cache
def _advance(dialect: str) -> Any:
    statement = on_conflict_insert(state, dialect)
    return statement.on_conflict_do_update(
        index_elements=[state.c.id],
        set_={
            "as_of": case(
                (state.c.as_of < statement.excluded.as_of, statement.excluded.as_of),
                else_=state.c.as_of,
            )
        },
    )


def _tally(sums: dict[Any, list[int]], key: Any, first: int, second: int) -> None:
    found = sums.get(key)
    if found is None:
        sums[key] = [first, second]
    else:
        found[0] += first
        found[1] += second


def _tally_products(
    sums: dict[tuple[datetime, str, str], list[int]], hour: datetime, lines: tuple[Line, ...]
) -> None:
    for (product_id, currency), line in product_increments(lines).items():
        _tally(sums, (hour, product_id, currency), line.units, line.revenue)


def _lines_json(lines: Sequence[Line]) -> str:
    return json.dumps(
        [[line.product_id, line.currency, line.units, line.revenue] for line in lines],
        separators=(",", ":"),
    )


def _lines_of(text_value: str) -> tuple[Line, ...]:
    return tuple(
        Line(str(product_id), str(currency), int(units), int(revenue))
        for product_id, currency, units, revenue in json.loads(text_value)
    )
