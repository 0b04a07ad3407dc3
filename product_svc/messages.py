"""Domain objects as the event messages of product/v1/events.proto, ready for the outbox.

Reservation events are keyed by the order id (one order's stock events stay in order);
StockAdjusted and LowStock by the product id.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common.outbox import OutgoingEvent
from common.topics import Topic
from microcommerce.product.v1 import events_pb2
from product_svc.domain import (
    Adjustment,
    Product,
    Reservation,
    ReservationStatus,
    ReservedItem,
    Settlement,
)

INVENTORY_EVENTS = Topic.INVENTORY_EVENTS


def _event(kind: str, subject: str, data: Message) -> OutgoingEvent:
    return OutgoingEvent(INVENTORY_EVENTS, f"microcommerce.inventory.{kind}", subject, data)


def _quantities(items: Sequence[ReservedItem]) -> list[events_pb2.StockQuantity]:
    return [events_pb2.StockQuantity(product_id=i.product_id, quantity=i.quantity) for i in items]


def stock_reserved(reservation: Reservation) -> OutgoingEvent:
    expire_time = Timestamp()
    expire_time.FromDatetime(reservation.expire_time)
    data = events_pb2.StockReserved(
        order_id=reservation.order_id,
        items=_quantities(reservation.items),
        expire_time=expire_time,
    )
    return _event("reserved", reservation.order_id, data)


def stock_settled(settlement: Settlement) -> OutgoingEvent:
    """StockCommitted for a sale, StockReleased for a release or an expiry."""
    reservation = settlement.after
    quantities = _quantities(reservation.items)
    if reservation.status is ReservationStatus.COMMITTED:
        committed = events_pb2.StockCommitted(order_id=reservation.order_id, items=quantities)
        return _event("committed", reservation.order_id, committed)
    reason = (
        events_pb2.STOCK_RELEASE_REASON_EXPIRED
        if reservation.status is ReservationStatus.EXPIRED
        else events_pb2.STOCK_RELEASE_REASON_REQUESTED
    )
    released = events_pb2.StockReleased(
        order_id=reservation.order_id,
        items=quantities,
        reason=reason,
        restocked=settlement.restocked,
    )
    return _event("released", reservation.order_id, released)


def stock_adjusted(adjustment: Adjustment, product: Product) -> OutgoingEvent:
    """The audit event of an adjustment; ``product`` is the product after it."""
    data = events_pb2.StockAdjusted(
        product_id=adjustment.product_id,
        delta=adjustment.delta,
        reason=adjustment.reason,
        available=product.available,
        reserved=product.reserved,
        adjusted_by=adjustment.adjusted_by,
    )
    return _event("adjusted", adjustment.product_id, data)


def low_stock(product: Product) -> OutgoingEvent:
    """``product`` just fell to or below its threshold (its state after the fall)."""
    data = events_pb2.LowStock(
        product_id=product.id,
        sku=product.sku,
        available=product.available,
        threshold=product.low_stock_threshold,
    )
    return _event("low_stock", product.id, data)
