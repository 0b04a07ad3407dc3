"""The sales analytics use cases: fold an event once, read the figures, rebuild them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from common.errors import InvalidArgument
from common.inbox import Delivery
from common.logging import get_logger
from common.money import Money
from payment_svc.analytics.facts import FOLDED_TYPES, ORDER_TYPES, BadEvent, Measure, fold
from payment_svc.analytics.store import AnalyticsStore, ProductTotal

_log = get_logger(__name__)

# The subscriptions' names (payment_svc.events): the inbox rows the rebuild writes use them.
ORDERS_CONSUMER = "sales-analytics-orders"
PAYMENTS_CONSUMER = "sales-analytics-payments"

MAX_HOURS = 744  # 31 days
MAX_DAYS = 366
DEFAULT_TOP = 10
_REBUILD_BATCH = 1000


@dataclass(frozen=True)
class DeliveredEvent:
    """An order or payment event as a consumer hands it over to be folded."""

    type: str
    data: Mapping[str, Any]
    time: datetime
    delivery: Delivery


class Granularity(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"


@dataclass
class SalesPeriod:
    """The sales of one hour or day."""

    start: datetime
    placed: int = 0
    confirmed: int = 0
    cancelled: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> orders
    revenue: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    refunds: dict[str, int] = field(default_factory=dict)

    def money(self, sums: Mapping[str, int]) -> list[Money]:
        return [Money(amount, currency) for currency, amount in sorted(sums.items())]


@dataclass(frozen=True)
class Sales:
    periods: list[SalesPeriod]
    as_of: datetime | None


@dataclass(frozen=True)
class TopProducts:
    products: list[ProductTotal]
    as_of: datetime | None


def period_start(moment: datetime, granularity: Granularity) -> datetime:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour.replace(hour=0) if granularity is Granularity.DAY else hour


class SalesAnalytics:
    """The read model's use cases."""

    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store

    async def apply(
        self, event_type: str, data: Mapping[str, Any], time: datetime, delivery: Delivery
    ) -> None:
        """Fold one delivered event once (``AlreadyHandled`` for a redelivery).

        ``BadEvent`` when its data cannot be folded (the consumer dead-letters it).
        """
        folded = fold(event_type, data, time)
        async with self._store.handling(delivery) as unit:
            await unit.apply(folded)

    async def apply_batch(self, events: Sequence[DeliveredEvent]) -> list[bool]:
        """Fold several delivered events in one transaction, each once; which were folded now
        (False: handled before, a redelivery).

        ``BadEvent`` (before anything is written) when one of them cannot be folded: the
        consumer then applies them one by one and dead-letters that one.
        """
        folds = [fold(event.type, event.data, event.time) for event in events]
        deliveries = [event.delivery for event in events]
        async with self._store.handling_batch(deliveries) as (unit, new):
            await unit.apply_all([f for f, first in zip(folds, new, strict=True) if first])
        return new

    async def sales(self, start: datetime, end: datetime, granularity: Granularity) -> Sales:
        """Every period from ``start`` (rounded down) up to ``end``, empty ones included."""
        first = period_start(start, granularity)
        step = timedelta(days=1) if granularity is Granularity.DAY else timedelta(hours=1)
        count = -(-(end - first) // step)  # ceiling: the period holding the last instant
        most = MAX_DAYS if granularity is Granularity.DAY else MAX_HOURS
        if end <= start:
            raise InvalidArgument("end_time must be after start_time", field="end_time")
        if count > most:
            raise InvalidArgument(
                f"at most {most} periods of a {granularity.value.lower()} per call",
                field="end_time",
            )
        periods = {first + step * i: SalesPeriod(first + step * i) for i in range(count)}
        async with self._store.reading() as unit:
            found = await unit.counters_in(first, first + step * count)
            as_of = await unit.as_of()
        for counter in found:
            period = periods[period_start(counter.hour, granularity)]
            if counter.measure is Measure.PLACED:
                period.placed += counter.count
            elif counter.measure is Measure.CONFIRMED:
                period.confirmed += counter.count
            elif counter.measure is Measure.CANCELLED:
                period.cancelled += counter.count
            else:
                sums = {
                    Measure.FAILED: period.failed,
                    Measure.REVENUE: period.revenue,
                    Measure.REFUNDS: period.refunds,
                }[counter.measure]
                value = counter.count if counter.measure is Measure.FAILED else counter.amount
                sums[counter.label] = sums.get(counter.label, 0) + value
        return Sales(list(periods.values()), as_of)

    async def top_products(self, start: datetime, end: datetime, limit: int) -> TopProducts:
        """The ``limit`` products with the most units confirmed in the hours of the range."""
        if end <= start:
            raise InvalidArgument("end_time must be after start_time", field="end_time")
        first = period_start(start, Granularity.HOUR)
        async with self._store.reading() as unit:
            products = await unit.top_products(first, end, limit or DEFAULT_TOP)
            as_of = await unit.as_of()
        return TopProducts(products, as_of)

    async def rebuild(self) -> int:
        """Recompute the read model from ``payment_order_changes``; the events folded.

        One transaction: readers see the old figures until it commits, and the consumers wait.
        Each folded event is marked handled in the consumers' inbox, so its delivery (if Kafka
        has not delivered it yet) changes nothing. Events that cannot be folded are skipped
        and logged, as the consumers would have dead-lettered them.
        """
        folded = skipped = 0
        async with self._store.unit_of_work() as unit:
            await unit.clear()
            seq = 0
            while changes := await unit.changes_after(seq, FOLDED_TYPES, _REBUILD_BATCH):
                for change in changes:
                    seq = change.seq
                    try:
                        await unit.apply(fold(change.type, change.data, change.time))
                    except BadEvent as error:
                        skipped += 1
                        _log.warning(
                            "analytics_rebuild_skipped", event_id=change.id, error=str(error)
                        )
                        continue
                    consumer = ORDERS_CONSUMER if change.type in ORDER_TYPES else PAYMENTS_CONSUMER
                    await unit.mark_handled(consumer, change.id)
                    folded += 1
        _log.info("analytics_rebuilt", events=folded, skipped=skipped)
        return folded
