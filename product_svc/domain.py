"""Products, categories, prices and stock: the catalog's entities and rules (catalog issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from common.errors import FailedPrecondition, InvalidArgument
from common.money import Money

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_SKU_LENGTH = 64
MAX_SLUG_LENGTH = 100
MAX_REASON_LENGTH = 500
MAX_QUERY_LENGTH = 200
MAX_ORDER_ID_LENGTH = 128
MAX_RESERVATION_ITEMS = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_STOCK = 2**31 - 1


_SKU = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# What the full-text search matches: words of letters and digits, the same on both backends
# (FTS5's unicode61 tokenizer and PostgreSQL's `simple` configuration both split on the rest).
_WORD = re.compile(r"[^\W_]+")
MAX_QUERY_TERMS = 10


class OrderBy(Enum):
    """The orders a product search can have; values are the API's spelling."""

    PRICE = "price"
    PRICE_DESC = "-price"
    NEWEST = "-create_time"
    RELEVANCE = "relevance"


class ReservationStatus(Enum):
    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    slug: str
    parent_id: str
    create_time_us: int


@dataclass(frozen=True)
class Product:
    id: str
    sku: str
    name: str
    description: str
    category_id: str
    price: Money
    available: int
    reserved: int
    low_stock_threshold: int
    create_time_us: int
    update_time_us: int
    version: int

    @property
    def etag(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True)
class PriceChange:
    seq: int
    price: Money
    changed_by: str
    change_time_us: int


@dataclass(frozen=True)
class StockLevel:
    available: int
    reserved: int


@dataclass(frozen=True)
class NewProduct:
    sku: str
    name: str
    description: str
    category_id: str
    price: Money
    stock: int
    low_stock_threshold: int


@dataclass(frozen=True)
class ProductChanges:
    """The descriptive fields an update sets; None leaves a field as it is."""

    sku: str | None = None
    name: str | None = None
    description: str | None = None
    category_id: str | None = None
    low_stock_threshold: int | None = None


@dataclass(frozen=True)
class ReservationLine:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class ReservedItem:
    product_id: str
    sku: str
    name: str
    quantity: int
    unit_price: Money


@dataclass(frozen=True)
class Reservation:
    order_id: str
    items: tuple[ReservedItem, ...]
    status: ReservationStatus
    expire_time_us: int


@dataclass(frozen=True)
class ProductQuery:
    """A product search: its filters and order. The page is separate (page size, cursor)."""

    terms: tuple[str, ...] = ()
    category_id: str = ""
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    order_by: OrderBy = OrderBy.NEWEST
    # The category and its descendants, filled in by the service from the tree.
    category_ids: tuple[str, ...] = field(default=(), compare=False)

    def fingerprint(self) -> str:
        """The filters and order as text, for binding page tokens to them."""
        return repr(
            (
                self.terms,
                self.category_id,
                self.min_price,
                self.max_price,
                self.in_stock,
                self.order_by.value,
            )
        )


def valid_name(value: str, *, field_name: str = "name") -> str:
    name = value.strip()
    if not name:
        raise InvalidArgument(f"{field_name} must not be empty", field=field_name)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{field_name} must be at most {MAX_NAME_LENGTH} characters", field=field_name
        )
    return name


def valid_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters", field="description"
        )
    return value


def valid_sku(value: str, *, field_name: str = "sku") -> str:
    sku = value.strip()
    if not sku:
        raise InvalidArgument("sku must not be empty", field=field_name)
    if len(sku) > MAX_SKU_LENGTH or not _SKU.fullmatch(sku):
        raise InvalidArgument(
            f"sku must be 1 to {MAX_SKU_LENGTH} letters, digits, '.', '_' or '-'",
            field=field_name,
        )
    return sku


def valid_slug(value: str) -> str:
    if not value or len(value) > MAX_SLUG_LENGTH or not _SLUG.fullmatch(value):
        raise InvalidArgument(
            f"slug must be 1 to {MAX_SLUG_LENGTH} lower-case letters, digits and single hyphens",
            field="slug",
        )
    return value


def valid_money(amount: int, currency: str, *, field_name: str = "price") -> Money:
    return Money.parse(amount, currency, field=field_name)


def valid_count(value: int, *, field_name: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{field_name} must not be negative", field=field_name)
    if value > MAX_STOCK:
        raise InvalidArgument(f"{field_name} must be at most {MAX_STOCK}", field=field_name)
    return value


def valid_page_size(value: int | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be from 1 to {MAX_PAGE_SIZE} (omit it for {DEFAULT_PAGE_SIZE})",
            field="page_size",
        )
    return value


def valid_adjustment(delta: int, reason: str) -> tuple[int, str]:
    if delta == 0:
        raise InvalidArgument("delta must not be zero", field="delta")
    if abs(delta) > MAX_STOCK:
        raise InvalidArgument(f"delta must be within ±{MAX_STOCK}", field="delta")
    text = reason.strip()
    if not text:
        raise InvalidArgument("reason must not be empty", field="reason")
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidArgument(
            f"reason must be at most {MAX_REASON_LENGTH} characters", field="reason"
        )
    return delta, text


def adjusted_stock(available: int, delta: int) -> int:
    """Available units after an adjustment; stock never goes below zero."""
    after = available + delta
    if after < 0:
        raise FailedPrecondition(
            f"cannot remove {-delta} units: only {available} available", field="delta"
        )
    if after > MAX_STOCK:
        raise InvalidArgument(f"available stock would exceed {MAX_STOCK}", field="delta")
    return after


def words(text: str) -> list[str]:
    """The searchable words of a text, lower-cased: what the index holds and queries match."""
    return [word.lower() for word in _WORD.findall(text)]


def search_terms(q: str) -> tuple[str, ...]:
    """The words of a search, lower-cased and deduplicated, in order."""
    if len(q) > MAX_QUERY_LENGTH:
        raise InvalidArgument(f"q must be at most {MAX_QUERY_LENGTH} characters", field="q")
    terms = tuple(dict.fromkeys(words(q)))
    if len(terms) > MAX_QUERY_TERMS:
        raise InvalidArgument(f"q may hold at most {MAX_QUERY_TERMS} words", field="q")
    return terms


def product_query(
    *,
    q: str,
    category_id: str,
    min_price: int | None,
    max_price: int | None,
    in_stock: bool | None,
    order_by: str,
) -> ProductQuery:
    terms = search_terms(q)
    for name, bound in (("min_price", min_price), ("max_price", max_price)):
        if bound is not None and bound < 0:
            raise InvalidArgument(f"{name} must not be negative", field=name)
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidArgument("min_price must not exceed max_price", field="min_price")
    if not order_by:
        order = OrderBy.RELEVANCE if terms else OrderBy.NEWEST
    else:
        try:
            order = OrderBy(order_by)
        except ValueError:
            choices = ", ".join(o.value for o in OrderBy)
            raise InvalidArgument(f"order_by must be one of {choices}", field="order_by") from None
    if order is OrderBy.RELEVANCE and not terms:
        order = OrderBy.NEWEST
    return ProductQuery(
        terms=terms,
        category_id=category_id,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        order_by=order,
    )


def reservation_lines(order_id: str, items: list[tuple[str, int]]) -> list[ReservationLine]:
    valid_order_id(order_id)
    if not items:
        raise InvalidArgument("items must hold at least one item", field="items")
    if len(items) > MAX_RESERVATION_ITEMS:
        raise InvalidArgument(
            f"items may hold at most {MAX_RESERVATION_ITEMS} products", field="items"
        )
    seen: set[str] = set()
    lines = []
    for index, (product_id, quantity) in enumerate(items):
        if not product_id:
            raise InvalidArgument(
                "product_id must not be empty", field=f"items[{index}].product_id"
            )
        if product_id in seen:
            raise InvalidArgument(
                f"product {product_id} is listed twice", field=f"items[{index}].product_id"
            )
        if not 1 <= quantity <= MAX_STOCK:
            raise InvalidArgument("quantity must be at least 1", field=f"items[{index}].quantity")
        seen.add(product_id)
        lines.append(ReservationLine(product_id, quantity))
    return lines


def valid_order_id(order_id: str) -> str:
    if not order_id:
        raise InvalidArgument("order_id must not be empty", field="order_id")
    if len(order_id) > MAX_ORDER_ID_LENGTH:
        raise InvalidArgument(
            f"order_id must be at most {MAX_ORDER_ID_LENGTH} characters", field="order_id"
        )
    return order_id


def same_lines(reservation: Reservation, lines: list[ReservationLine]) -> bool:
    """Whether a repeated ReserveStock asks for what the order already reserved."""
    held = {(item.product_id, item.quantity) for item in reservation.items}
    return held == {(line.product_id, line.quantity) for line in lines}


def crossed_low_stock(before: int, after: int, threshold: int) -> bool:
    """Whether available stock just fell to or below the threshold (announced once per fall)."""
    return after <= threshold < before
