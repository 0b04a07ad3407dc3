"""Every catalog refusal names its field and reason exactly.

Clients read ``field`` (the BadRequest field violation) to put the message next to the right
input and ``reason`` (ErrorInfo) to branch, so these names are public contract: a renamed or
dropped field or reason must fail a test here, not only change a message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from common.money import Money
from common.reasons import Reason
from product_svc import domain

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def product(**changes: object) -> domain.Product:
    values: dict[str, object] = {
        "id": "p-1",
        "sku": "SKU-1",
        "name": "Sencha",
        "description": "",
        "category_id": "c-1",
        "price": Money(1250, "EUR"),
        "available": 3,
        "reserved": 0,
        "low_stock_threshold": 1,
        "create_time": NOW,
        "update_time": NOW,
        "version": 1,
        **changes,
    }
    return domain.Product(**values)  # type: ignore[arg-type]


def reservation(status: domain.ReservationStatus, *, expire_in_s: int = 60) -> domain.Reservation:
    items = (domain.ReservedItem("p-1", "SKU-1", "Sencha", 2, Money(1250, "EUR")),)
    return domain.Reservation("order-1", items, status, NOW + timedelta(seconds=expire_in_s))


def query(**changes: object) -> domain.ProductQuery:
    values: dict[str, object] = {
        "q": "",
        "category_id": "",
        "min_price": None,
        "max_price": None,
        "in_stock": None,
        "order_by": "",
        **changes,
    }
    return domain.product_query(**values)  # type: ignore[arg-type]


REFUSALS: dict[str, tuple[Callable[[], object], type[DomainError], str | None, Reason | None]] = {
    "stale etag": (
        lambda: product().check_etag("v7", field_name="etag"),
        Aborted,
        "etag",
        None,
    ),
    "archived product": (
        lambda: domain.found(product(archived=True), "p-1"),
        NotFound,
        "id",
        None,
    ),
    "missing product of a line": (
        lambda: domain.found(None, "p-1", field_name="items.product_id"),
        NotFound,
        "items.product_id",
        None,
    ),
    "other items for the same order": (
        lambda: reservation(domain.ReservationStatus.ACTIVE).repeated(
            [domain.ReservationLine("p-1", 3)]
        ),
        AlreadyExists,
        "items",
        None,
    ),
    "expiry before it is due": (
        lambda: reservation(domain.ReservationStatus.ACTIVE).expire(NOW),
        FailedPrecondition,
        "order_id",
        None,
    ),
    "commit of a released hold": (
        lambda: reservation(domain.ReservationStatus.RELEASED).commit(),
        FailedPrecondition,
        "order_id",
        None,
    ),
    "short stock": (
        lambda: domain.place_reservation(
            domain.Reservation.open("order-1", NOW, timedelta(minutes=5)),
            [domain.ReservationLine("p-1", 4)],
            {"p-1": product(available=3)},
        ),
        FailedPrecondition,
        "items.quantity",
        Reason.OUT_OF_STOCK,
    ),
    "unknown product in a reservation": (
        lambda: domain.place_reservation(
            domain.Reservation.open("order-1", NOW, timedelta(minutes=5)),
            [domain.ReservationLine("p-2", 1)],
            {"p-1": product()},
        ),
        NotFound,
        "items.product_id",
        None,
    ),
    "empty name": (lambda: domain.valid_name(" "), InvalidArgument, "name", None),
    "long category name": (
        lambda: domain.valid_name("x" * 201, field_name="category.name"),
        InvalidArgument,
        "category.name",
        None,
    ),
    "long description": (
        lambda: domain.valid_description("x" * 10_001),
        InvalidArgument,
        "description",
        None,
    ),
    "empty sku": (lambda: domain.valid_sku(" "), InvalidArgument, "sku", None),
    "sku with a space": (
        lambda: domain.valid_sku("A B", field_name="product.sku"),
        InvalidArgument,
        "product.sku",
        None,
    ),
    "slug with upper case": (lambda: domain.valid_slug("Tea"), InvalidArgument, "slug", None),
    "negative price": (
        lambda: domain.valid_money(-1, "EUR"),
        InvalidArgument,
        "price.amount",
        None,
    ),
    "negative stock": (
        lambda: domain.valid_count(-1, field_name="stock"),
        InvalidArgument,
        "stock",
        None,
    ),
    "too much stock": (
        lambda: domain.valid_count(domain.MAX_STOCK + 1, field_name="low_stock_threshold"),
        InvalidArgument,
        "low_stock_threshold",
        None,
    ),
    "zero delta": (lambda: domain.valid_adjustment(0, "x"), InvalidArgument, "delta", None),
    "huge delta": (
        lambda: domain.valid_adjustment(domain.MAX_STOCK + 1, "x"),
        InvalidArgument,
        "delta",
        None,
    ),
    "no reason": (lambda: domain.valid_adjustment(1, " "), InvalidArgument, "reason", None),
    "long reason": (
        lambda: domain.valid_adjustment(1, "x" * 501),
        InvalidArgument,
        "reason",
        None,
    ),
    "removing more than available": (
        lambda: domain.adjusted_stock(2, -3),
        FailedPrecondition,
        "delta",
        None,
    ),
    "stock above the maximum": (
        lambda: domain.adjusted_stock(domain.MAX_STOCK, 1),
        InvalidArgument,
        "delta",
        None,
    ),
    "long query": (lambda: domain.search_terms("x" * 201), InvalidArgument, "q", None),
    "too many words": (
        lambda: domain.search_terms(" ".join(f"w{i}" for i in range(11))),
        InvalidArgument,
        "q",
        None,
    ),
    "negative min_price": (lambda: query(min_price=-1), InvalidArgument, "min_price", None),
    "negative max_price": (lambda: query(max_price=-1), InvalidArgument, "max_price", None),
    "min above max": (
        lambda: query(min_price=5, max_price=4),
        InvalidArgument,
        "min_price",
        None,
    ),
    "unknown order_by": (lambda: query(order_by="cheapest"), InvalidArgument, "order_by", None),
    "no items to reserve": (
        lambda: domain.reservation_lines("order-1", []),
        InvalidArgument,
        "items",
        None,
    ),
    "too many items to reserve": (
        lambda: domain.reservation_lines("order-1", [(f"p-{i}", 1) for i in range(101)]),
        InvalidArgument,
        "items",
        None,
    ),
    "empty product id": (
        lambda: domain.reservation_lines("order-1", [("p-1", 1), ("", 1)]),
        InvalidArgument,
        "items[1].product_id",
        None,
    ),
    "product listed twice": (
        lambda: domain.reservation_lines("order-1", [("p-1", 1), ("p-1", 2)]),
        InvalidArgument,
        "items[1].product_id",
        None,
    ),
    "zero quantity": (
        lambda: domain.reservation_lines("order-1", [("p-1", 1), ("p-2", 0)]),
        InvalidArgument,
        "items[1].quantity",
        None,
    ),
    "empty order id": (lambda: domain.valid_order_id(""), InvalidArgument, "order_id", None),
    "long order id": (
        lambda: domain.valid_order_id("o" * 129),
        InvalidArgument,
        "order_id",
        None,
    ),
    "negative recommendation count": (
        lambda: domain.recommendation_count(-1),
        InvalidArgument,
        "page_size",
        None,
    ),
    "basket line without a product": (
        lambda: domain.basket("order-1", ["p-1", ""]),
        InvalidArgument,
        "items",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refusal_names_its_field_and_reason(case: str) -> None:
    call, kind, field, reason = REFUSALS[case]

    with pytest.raises(kind) as refused:
        call()

    assert type(refused.value) is kind
    assert refused.value.field == field
    assert refused.value.reason == reason
