"""Products, categories, prices and stock: the catalog's entities and rules (catalog issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from common.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from common.money import Money
from common.reasons import Reason
from common.transitions import Transitions

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_SKU_LENGTH = 64
MAX_SLUG_LENGTH = 100
MAX_REASON_LENGTH = 500
MAX_QUERY_LENGTH = 200
MAX_ORDER_ID_LENGTH = 128
MAX_RESERVATION_ITEMS = 100
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


class ReservationStatus(StrEnum):
    """Where an order's stock hold is; names match the proto's ``RESERVATION_STATUS_*``."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


# Every legal move of a reservation. COMMITTED -> RELEASED is a cancelled sale: the sold units
# go back on the shelf (a restock). RELEASED and EXPIRED are final.
RESERVATION_TRANSITIONS = Transitions[ReservationStatus](
    "reservation",
    {
        ReservationStatus.ACTIVE: frozenset(
            {ReservationStatus.COMMITTED, ReservationStatus.RELEASED, ReservationStatus.EXPIRED}
        ),
        ReservationStatus.COMMITTED: frozenset({ReservationStatus.RELEASED}),
        ReservationStatus.RELEASED: frozenset(),
        ReservationStatus.EXPIRED: frozenset(),
    },
)

# Requests that find the reservation already where they would take it: answered with the
# reservation as it is (checkout retries its calls), never refused. An expired hold has
# already given its units back, which is all a release asks for.
_ALREADY_THERE: dict[ReservationStatus, frozenset[ReservationStatus]] = {
    ReservationStatus.COMMITTED: frozenset({ReservationStatus.COMMITTED}),
    ReservationStatus.RELEASED: frozenset({ReservationStatus.RELEASED, ReservationStatus.EXPIRED}),
    ReservationStatus.EXPIRED: frozenset({ReservationStatus.EXPIRED}),
    ReservationStatus.ACTIVE: frozenset(),
}


def can_move(source: ReservationStatus, target: ReservationStatus) -> bool:
    """Whether a reservation may go from ``source`` to ``target``."""
    return RESERVATION_TRANSITIONS.allows(source, target)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    slug: str
    parent_id: str
    create_time: datetime


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
    create_time: datetime
    update_time: datetime
    version: int
    archived: bool = False

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    def check_etag(self, etag: str, *, field_name: str) -> None:
        """ABORTED when the caller read another version (AIP-154); no etag means no check."""
        if etag and etag != self.etag:
            raise Aborted("the product changed since it was read; read it again", field=field_name)

    def with_changes(self, changes: ProductChanges, now: datetime) -> Product:
        """The product after an update; itself when the update sets nothing."""
        values = {
            name: value
            for name, value in (
                ("sku", changes.sku),
                ("name", changes.name),
                ("description", changes.description),
                ("category_id", changes.category_id),
                ("low_stock_threshold", changes.low_stock_threshold),
            )
            if value is not None
        }
        if values.get("sku") == self.sku:
            del values["sku"]
        return self._next(now, **values) if values else self

    def repriced(self, price: Money, now: datetime) -> Product:
        return self._next(now, price=price)

    def archive(self, now: datetime) -> Product:
        return self._next(now, archived=True)

    def adjusted(self, delta: int, now: datetime) -> Product:
        """The product after an administrator's stock correction; stock never goes below 0."""
        return self._next(now, available=adjusted_stock(self.available, delta))

    def low_stock_since(self, before: Product) -> bool:
        """Whether this state is the fall to or below the threshold (announced once per fall)."""
        return crossed_low_stock(before.available, self.available, self.low_stock_threshold)

    def _next(self, now: datetime, **values: object) -> Product:
        # Every change is a new version: the etag a concurrent writer holds stops matching.
        return replace(self, **values, version=self.version + 1, update_time=now)  # type: ignore[arg-type]


def new_product(new: NewProduct, now: datetime) -> Product:
    return Product(
        id=new_id(),
        sku=new.sku,
        name=new.name,
        description=new.description,
        category_id=new.category_id,
        price=new.price,
        available=new.stock,
        reserved=0,
        low_stock_threshold=new.low_stock_threshold,
        create_time=now,
        update_time=now,
        version=1,
    )


def found(product: Product | None, product_id: str, *, field_name: str = "id") -> Product:
    """The product, or NOT_FOUND: archived products are not part of the catalog."""
    if product is None or product.archived:
        raise NotFound(f"no product {product_id}", field=field_name)
    return product


@dataclass(frozen=True)
class PriceChange:
    seq: int
    price: Money
    changed_by: str
    change_time: datetime


@dataclass(frozen=True)
class Adjustment:
    """An administrator's stock correction, kept as the audit trail of AdjustStock."""

    product_id: str
    delta: int
    reason: str
    adjusted_by: str
    adjust_time: datetime


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
class StockMove:
    """A change to one product's stock counters, as a reservation's step causes it."""

    product_id: str
    available: int
    reserved: int


MAX_EXTENSION = timedelta(days=7)


@dataclass(frozen=True)
class Reservation:
    order_id: str
    items: tuple[ReservedItem, ...]
    status: ReservationStatus
    expire_time: datetime

    @classmethod
    def open(cls, order_id: str, now: datetime, ttl: timedelta) -> Reservation:
        """An order's hold before its items are placed: ACTIVE until ``now + ttl``."""
        return cls(order_id, (), ReservationStatus.ACTIVE, now + ttl)

    @classmethod
    def released_unreserved(cls, order_id: str, now: datetime) -> Reservation:
        """What a release before any reservation leaves: a final hold of nothing, so a late
        ReserveStock of the same order (a retry racing the compensation) holds no stock."""
        return cls(order_id, (), ReservationStatus.RELEASED, now)

    def repeated(self, lines: Sequence[ReservationLine]) -> Reservation:
        """The answer to ReserveStock for an order that already has this reservation."""
        held = {(item.product_id, item.quantity) for item in self.items}
        if self.items and held != {(line.product_id, line.quantity) for line in lines}:
            raise AlreadyExists(
                f"order {self.order_id} already reserved other items", field="items"
            )
        return self

    def is_due(self, now: datetime) -> bool:
        return self.status is ReservationStatus.ACTIVE and self.expire_time <= now

    def extended(self, until: datetime, now: datetime) -> Reservation:
        """This ACTIVE hold kept at least until ``until`` (a held order's review); never shorter.

        Refused past ``MAX_EXTENSION`` from now, so a hold cannot become a permanent one.
        """
        if until > now + MAX_EXTENSION:
            raise InvalidArgument(
                "a reservation is kept at most 7 days from now", field="expire_time"
            )
        if self.status is not ReservationStatus.ACTIVE:
            raise FailedPrecondition(
                f"the reservation of order {self.order_id} is {self.status.value}, "
                "it cannot be extended",
                field="order_id",
            )
        return replace(self, expire_time=max(self.expire_time, until))

    def commit(self) -> Settlement:
        return self._settle(ReservationStatus.COMMITTED)

    def release(self) -> Settlement:
        return self._settle(ReservationStatus.RELEASED)

    def expire(self, now: datetime) -> Settlement:
        """The sweeper's step: only an ACTIVE hold past its expiry goes back to the shelf."""
        if self.status is ReservationStatus.ACTIVE and not self.is_due(now):
            raise FailedPrecondition(
                f"the reservation of order {self.order_id} is not due yet", field="order_id"
            )
        return self._settle(ReservationStatus.EXPIRED)

    def _settle(self, target: ReservationStatus) -> Settlement:
        if self.status in _ALREADY_THERE[target]:
            return Settlement(self, self, ())
        if not can_move(self.status, target):
            raise FailedPrecondition(
                f"the reservation of order {self.order_id} is {self.status.value}, "
                f"it cannot become {target.value}",
                field="order_id",
            )
        after = replace(self, status=target)
        return Settlement(self, after, _stock_moves(self.items, self.status, target))


def _stock_moves(
    items: Sequence[ReservedItem], source: ReservationStatus, target: ReservationStatus
) -> tuple[StockMove, ...]:
    """What each product's counters do when a reservation moves (product id order)."""
    moves = []
    for item in sorted(items, key=lambda item: item.product_id):
        if target is ReservationStatus.COMMITTED:  # sold: the held units leave the building
            move = StockMove(item.product_id, available=0, reserved=-item.quantity)
        elif source is ReservationStatus.COMMITTED:  # a cancelled sale: restock
            move = StockMove(item.product_id, available=item.quantity, reserved=0)
        else:  # an unsold hold ends: the units go back to available
            move = StockMove(item.product_id, available=item.quantity, reserved=-item.quantity)
        moves.append(move)
    return tuple(moves)


@dataclass(frozen=True)
class Settlement:
    """A reservation's step (commit, release, expiry) and the stock it moves."""

    before: Reservation
    after: Reservation
    moves: tuple[StockMove, ...]

    @property
    def changed(self) -> bool:
        """False for a repeat: nothing to save and no event to publish."""
        return self.after.status is not self.before.status

    @property
    def restocked(self) -> bool:
        """True when sold units came back (a release after a commit)."""
        return (
            self.before.status is ReservationStatus.COMMITTED
            and self.after.status is ReservationStatus.RELEASED
        )


@dataclass(frozen=True)
class Placement:
    """A new reservation, the stock it moves, and the products it took to low stock."""

    reservation: Reservation
    moves: tuple[StockMove, ...]
    low_stock: tuple[Product, ...]


def place_reservation(
    opened: Reservation, lines: Sequence[ReservationLine], products: Mapping[str, Product]
) -> Placement:
    """Reserve every line or nothing: the first unknown or short product refuses the order.

    ``opened`` is the order's new, empty hold; ``products`` the current state of the lines'
    products (locked by the caller). The units move from available to reserved at the
    current price.
    """
    items: list[ReservedItem] = []
    moves: list[StockMove] = []
    low: list[Product] = []
    for line in lines:
        product = found(
            products.get(line.product_id), line.product_id, field_name="items.product_id"
        )
        if product.available < line.quantity:
            raise FailedPrecondition(
                f"product {product.id} has only {product.available} units available, "
                f"{line.quantity} requested",
                field="items.quantity",
                reason=Reason.OUT_OF_STOCK,
            )
        items.append(
            ReservedItem(product.id, product.sku, product.name, line.quantity, product.price)
        )
        moves.append(StockMove(product.id, available=-line.quantity, reserved=line.quantity))
        after = replace(
            product,
            available=product.available - line.quantity,
            reserved=product.reserved + line.quantity,
        )
        if after.low_stock_since(product):
            low.append(after)
    reservation = replace(opened, items=tuple(items))
    # Rows are changed in one global order (by product id) so that two multi-item orders
    # cannot wait on each other's rows.
    return Placement(
        reservation,
        tuple(sorted(moves, key=lambda move: move.product_id)),
        tuple(sorted(low, key=lambda product: product.id)),
    )


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

    def filters(self) -> dict[str, object]:
        """Every filter and the order, as a page token is bound to them."""
        return {
            "terms": list(self.terms),
            "category_id": self.category_id,
            "min_price": self.min_price,
            "max_price": self.max_price,
            "in_stock": self.in_stock,
            "order_by": self.order_by.value,
        }


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


def crossed_low_stock(before: int, after: int, threshold: int) -> bool:
    """Whether available stock just fell to or below the threshold (announced once per fall)."""
    return after <= threshold < before


def descendants(parents: dict[str, str], root: str) -> tuple[str, ...]:
    """``root`` and every category below it in the tree."""
    children: dict[str, list[str]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    subtree, frontier = [root], [root]
    while frontier:
        frontier = [child for node in frontier for child in children.get(node, [])]
        subtree.extend(child for child in frontier if child not in subtree)
    return tuple(subtree)


# Recommendations: "bought together" ----------------------------------------------------------
#
# Item-to-item collaborative filtering: for each pair of products, the number of confirmed
# orders holding both (the co-count). Ranked by raw co-count, every list would open with the
# shop's best-sellers, which are in many baskets with everything; so the co-count is
# normalised by how often each product sells (cosine similarity of the two products' order
# vectors: co / sqrt(orders_a * orders_b)), and damped while it rests on few orders
# (co / (co + shrinkage), significance weighting) so that two rare products that met once or
# twice by chance do not outrank a real pattern.

DEFAULT_RECOMMENDATIONS = 10
MAX_RECOMMENDATIONS = 20
# A basket with more distinct products than this counts its purchases but not its pairs: bulk
# orders say little about what goes together and would cost n*(n-1) counter updates.
MAX_BASKET_FOR_PAIRS = 50


@dataclass(frozen=True)
class RecommendationSettings:
    """How co-purchases become a ranking; the defaults are the ones bench/recommendations.py
    measures (precision@5 on a planted history)."""

    # Pairs seen in fewer orders than this are noise, not a pattern.
    min_co_purchases: int = 2
    # The co-count at which the damping halves a pair's score.
    shrinkage: float = 5.0
    # How many of the strongest co-counts are ranked per request (bounds the work for a
    # best-seller that was bought with thousands of products).
    candidates: int = 200


@dataclass(frozen=True)
class CoPurchase:
    """Another product, in how many orders it was bought with the product asked about, and in
    how many orders it was bought at all."""

    product: Product
    together: int
    orders: int


def recommendation_count(requested: int | None) -> int:
    """How many recommendations to return: absent or 0 means the default, above the maximum
    means the maximum (as page sizes are coerced), negative is refused."""
    if requested is None or requested == 0:
        return DEFAULT_RECOMMENDATIONS
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested, MAX_RECOMMENDATIONS)


def basket(order_id: str, product_ids: Sequence[str]) -> tuple[str, ...]:
    """The distinct products of a confirmed order, sorted (so every writer updates the counter
    rows in one order and two orders never deadlock)."""
    valid_order_id(order_id)
    if any(not product_id for product_id in product_ids):
        raise InvalidArgument("every item needs a product_id", field="items")
    return tuple(sorted(set(product_ids)))


def basket_pairs(products: Sequence[str]) -> list[tuple[str, str]]:
    """Both directions of every pair of distinct products in a basket, sorted; none for a
    basket above ``MAX_BASKET_FOR_PAIRS``."""
    if len(products) > MAX_BASKET_FOR_PAIRS:
        return []
    return sorted((a, b) for a in products for b in products if a != b)


def co_purchase_score(
    together: int, orders_a: int, orders_b: int, settings: RecommendationSettings
) -> float:
    """How strongly two products go together: damped cosine; 0 below the minimum support."""
    if together < settings.min_co_purchases or orders_a <= 0 or orders_b <= 0:
        return 0.0
    cosine = together / math.sqrt(orders_a * orders_b)
    return cosine * together / (together + settings.shrinkage)


def sellable(product: Product) -> bool:
    """Whether a product may be recommended: live and in stock."""
    return not product.archived and product.available > 0


def rank_bought_together(
    of: Product,
    orders_of: int,
    partners: Sequence[CoPurchase],
    settings: RecommendationSettings,
    limit: int,
) -> list[Product]:
    """The best ``limit`` partners of ``of`` by score (ties: higher co-count, then id); never
    ``of`` itself, never an unsellable product, never a pair below the minimum support."""
    scored = [
        (co_purchase_score(p.together, orders_of, p.orders, settings), p.together, p.product)
        for p in partners
        if p.product.id != of.id and sellable(p.product)
    ]
    ranked = sorted(
        (entry for entry in scored if entry[0] > 0),
        key=lambda entry: (-entry[0], -entry[1], entry[2].id),
    )
    return [product for _, _, product in ranked[:limit]]


def fill_recommendations(
    of: Product, chosen: Sequence[Product], fallbacks: Sequence[Sequence[Product]], limit: int
) -> list[Product]:
    """``chosen`` topped up from each fallback list in turn (e.g. the category's best-sellers,
    then the shop's) to ``limit``, without repeats, ``of`` itself or unsellable products."""
    result = list(chosen[:limit])
    seen = {of.id, *(product.id for product in result)}
    for candidates in fallbacks:
        for product in candidates:
            if len(result) >= limit:
                return result
            if product.id not in seen and sellable(product):
                seen.add(product.id)
                result.append(product)
    return result
