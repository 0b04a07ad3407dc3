"""Persistence of the product service: its own database, one unit of work per use case.

Every state change and the events it causes commit together (``common.outbox``). Stock moves
with conditional UPDATEs (``available >= :quantity``, rowcount checked), so no interleaving of
reservations, on SQLite or PostgreSQL, can sell a unit twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from common.clock import from_micros
from common.db import Database
from common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from common.money import Money
from common.outbox import Outbox, OutgoingEvent
from common.proto_values import timestamp
from common.reasons import Reason
from common.topics import Topic
from microcommerce.product.v1 import events_pb2
from product_svc.domain import (
    Category,
    NewProduct,
    OrderBy,
    PriceChange,
    Product,
    ProductChanges,
    ProductQuery,
    Reservation,
    ReservationLine,
    ReservationStatus,
    ReservedItem,
    adjusted_stock,
    crossed_low_stock,
    words,
)

INVENTORY_TOPIC = Topic.INVENTORY_EVENTS

_metadata = MetaData()
categories = Table(
    "product_categories",
    _metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200)),
    Column("slug", String(100)),
    Column("parent_id", String(32)),
    Column("create_time_us", BigInteger),
)
products = Table(
    "products",
    _metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("id", String(32), unique=True),
    Column("sku", String(64)),
    Column("name", String(200)),
    Column("description", Text),
    Column("category_id", String(32)),
    Column("price_amount", BigInteger),
    Column("price_currency", String(3)),
    Column("available", BigInteger),
    Column("reserved", BigInteger),
    Column("low_stock_threshold", BigInteger),
    Column("archived", Boolean),
    Column("search_name", Text),
    Column("search_body", Text),
    Column("create_time_us", BigInteger),
    Column("update_time_us", BigInteger),
    Column("version", Integer),
)
price_changes = Table(
    "product_price_changes",
    _metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("product_id", String(32)),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    Column("changed_by", String(256)),
    Column("change_time_us", BigInteger),
)
adjustments = Table(
    "product_stock_adjustments",
    _metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("product_id", String(32)),
    Column("delta", BigInteger),
    Column("reason", String(500)),
    Column("adjusted_by", String(256)),
    Column("adjust_time_us", BigInteger),
)
reservations = Table(
    "stock_reservations",
    _metadata,
    Column("order_id", String(128), primary_key=True),
    Column("status", String(16)),
    Column("expire_time_us", BigInteger),
    Column("create_time_us", BigInteger),
)
reservation_items = Table(
    "stock_reservation_items",
    _metadata,
    Column("order_id", String(128), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("product_id", String(32)),
    Column("sku", String(64)),
    Column("name", String(200)),
    Column("quantity", Integer),
    Column("unit_amount", BigInteger),
    Column("unit_currency", String(3)),
)
# SQLite's full-text index (migration 0003); PostgreSQL uses generated tsvector columns instead.
products_fts = Table(
    "products_fts",
    _metadata,
    Column("rowid", BigInteger),  # = products.seq
    Column("name", Text),
    Column("body", Text),
)

_PRODUCT_COLUMNS = [
    products.c.id,
    products.c.sku,
    products.c.name,
    products.c.description,
    products.c.category_id,
    products.c.price_amount,
    products.c.price_currency,
    products.c.available,
    products.c.reserved,
    products.c.low_stock_threshold,
    products.c.create_time_us,
    products.c.update_time_us,
    products.c.version,
]


def now_us() -> int:
    return time.time_ns() // 1000


def new_id() -> str:
    return uuid.uuid4().hex


def search_words(text: str) -> str:
    """The text the full-text index holds: lower-case words separated by single spaces."""
    return " ".join(words(text))


def _timestamp(micros: int) -> Timestamp:
    return timestamp(from_micros(micros))


def _product(row: Row[Any]) -> Product:
    return Product(
        id=row.id,
        sku=row.sku,
        name=row.name,
        description=row.description,
        category_id=row.category_id,
        price=Money(row.price_amount, row.price_currency),
        available=row.available,
        reserved=row.reserved,
        low_stock_threshold=row.low_stock_threshold,
        create_time_us=row.create_time_us,
        update_time_us=row.update_time_us,
        version=row.version,
    )


def _category(row: Row[Any]) -> Category:
    return Category(row.id, row.name, row.slug, row.parent_id or "", row.create_time_us)


def _quantities(items: Sequence[ReservedItem]) -> list[events_pb2.StockQuantity]:
    return [events_pb2.StockQuantity(product_id=i.product_id, quantity=i.quantity) for i in items]


class CatalogStore:
    """The product service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self._database = database
        self._outbox = outbox
        self._postgres = database.engine.dialect.name == "postgresql"

    async def reachable(self) -> bool:
        return await self._database.ping()

    # Categories -------------------------------------------------------------------------

    async def create_category(self, name: str, slug: str, parent_id: str) -> Category:
        category = Category(new_id(), name, slug, parent_id, now_us())
        try:
            async with self._database.session() as session:
                if parent_id and not await self._category_exists(session, parent_id):
                    raise InvalidArgument(f"parent_id: no category {parent_id}", field="parent_id")
                if await session.scalar(select(categories.c.id).where(categories.c.slug == slug)):
                    raise AlreadyExists(f"slug {slug} is already in use", field="slug")
                await session.execute(
                    insert(categories).values(
                        id=category.id,
                        name=name,
                        slug=slug,
                        parent_id=parent_id or None,
                        create_time_us=category.create_time_us,
                    )
                )
        except IntegrityError:  # a concurrent create took the slug between check and insert
            raise AlreadyExists(f"slug {slug} is already in use", field="slug") from None
        return category

    async def list_categories(self, limit: int, after: tuple[str, str] | None) -> list[Category]:
        query = select(categories).order_by(categories.c.name, categories.c.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(categories.c.name, categories.c.id) > tuple_(*after))
        async with self._database.session() as session:
            return [_category(row) for row in (await session.execute(query)).all()]

    async def category_parents(self) -> dict[str, str]:
        """Every category's parent id ("" for a root): the tree, for descendant lookups."""
        async with self._database.session() as session:
            rows = (await session.execute(select(categories.c.id, categories.c.parent_id))).all()
        return {row.id: row.parent_id or "" for row in rows}

    async def _category_exists(self, session: AsyncSession, category_id: str) -> bool:
        found = await session.scalar(select(categories.c.id).where(categories.c.id == category_id))
        return found is not None

    # Products ---------------------------------------------------------------------------

    async def create_product(self, new: NewProduct, actor: str) -> Product:
        moment = now_us()
        product = Product(
            id=new_id(),
            sku=new.sku,
            name=new.name,
            description=new.description,
            category_id=new.category_id,
            price=new.price,
            available=new.stock,
            reserved=0,
            low_stock_threshold=new.low_stock_threshold,
            create_time_us=moment,
            update_time_us=moment,
            version=1,
        )
        try:
            async with self._database.session() as session:
                if not await self._category_exists(session, new.category_id):
                    raise InvalidArgument(
                        f"category_id: no category {new.category_id}", field="category_id"
                    )
                await self._refuse_taken_sku(session, new.sku)
                await session.execute(insert(products).values(**self._row(product)))
                await session.execute(
                    insert(price_changes).values(
                        product_id=product.id,
                        amount=new.price.amount,
                        currency=new.price.currency,
                        changed_by=actor,
                        change_time_us=moment,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"sku {new.sku} is already in use", field="sku") from None
        return product

    async def insert_products(self, batch: Sequence[NewProduct], *, actor: str) -> None:
        """Bulk load without per-row checks, for benchmarks and fixtures (category must exist)."""
        moment = now_us()
        rows = []
        for offset, new in enumerate(batch):
            product = Product(
                new_id(), new.sku, new.name, new.description, new.category_id, new.price,
                new.stock, 0, new.low_stock_threshold, moment + offset, moment + offset, 1,
            )  # fmt: skip
            rows.append(self._row(product))
        async with self._database.session() as session:
            await session.execute(insert(products), rows)

    @staticmethod
    def _row(product: Product) -> dict[str, Any]:
        return {
            "id": product.id,
            "sku": product.sku,
            "name": product.name,
            "description": product.description,
            "category_id": product.category_id,
            "price_amount": product.price.amount,
            "price_currency": product.price.currency,
            "available": product.available,
            "reserved": product.reserved,
            "low_stock_threshold": product.low_stock_threshold,
            "archived": False,
            "search_name": search_words(product.name),
            "search_body": search_words(product.description),
            "create_time_us": product.create_time_us,
            "update_time_us": product.update_time_us,
            "version": product.version,
        }

    async def _refuse_taken_sku(self, session: AsyncSession, sku: str) -> None:
        if await session.scalar(select(products.c.id).where(products.c.sku == sku)):
            raise AlreadyExists(f"sku {sku} is already in use", field="sku")

    async def get_product(self, product_id: str) -> Product:
        async with self._database.session() as session:
            return await self._live_product(session, product_id)

    async def _live_product(self, session: AsyncSession, product_id: str) -> Product:
        row = (
            await session.execute(
                select(*_PRODUCT_COLUMNS).where(
                    products.c.id == product_id, products.c.archived.is_(False)
                )
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no product {product_id}", field="id")
        return _product(row)

    async def update_product(self, product_id: str, changes: ProductChanges, etag: str) -> Product:
        try:
            async with self._database.session() as session:
                current = await self._live_product(session, product_id)
                if etag and etag != current.etag:
                    raise Aborted(
                        "the product changed since it was read; read it again",
                        field="product.etag",
                    )
                values: dict[str, Any] = {}
                if changes.sku is not None and changes.sku != current.sku:
                    await self._refuse_taken_sku(session, changes.sku)
                    values["sku"] = changes.sku
                if changes.name is not None:
                    values["name"] = changes.name
                    values["search_name"] = search_words(changes.name)
                if changes.description is not None:
                    values["description"] = changes.description
                    values["search_body"] = search_words(changes.description)
                if changes.category_id is not None:
                    if not await self._category_exists(session, changes.category_id):
                        raise InvalidArgument(
                            f"product.category_id: no category {changes.category_id}",
                            field="product.category_id",
                        )
                    values["category_id"] = changes.category_id
                if changes.low_stock_threshold is not None:
                    values["low_stock_threshold"] = changes.low_stock_threshold
                if not values:
                    return current
                await self._bump(session, current, values)
                return await self._live_product(session, product_id)
        except IntegrityError:
            raise AlreadyExists(
                f"sku {changes.sku} is already in use", field="product.sku"
            ) from None

    async def _bump(self, session: AsyncSession, current: Product, values: dict[str, Any]) -> None:
        # Compare-and-set on the version: a concurrent writer (PostgreSQL reads do not lock)
        # makes this match no row, and the caller gets ABORTED instead of a lost update.
        result = await session.execute(
            update(products)
            .where(products.c.id == current.id, products.c.version == current.version)
            .values(**values, version=current.version + 1, update_time_us=now_us())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Aborted("the product changed concurrently; read it again and retry")

    async def archive_product(self, product_id: str, etag: str) -> None:
        async with self._database.session() as session:
            current = await self._live_product(session, product_id)
            if etag and etag != current.etag:
                raise Aborted("the product changed since it was read", field="etag")
            await self._bump(session, current, {"archived": True})

    async def set_price(self, product_id: str, price: Money, actor: str) -> Product:
        async with self._database.session() as session:
            current = await self._live_product(session, product_id)
            await self._bump(
                session, current, {"price_amount": price.amount, "price_currency": price.currency}
            )
            await session.execute(
                insert(price_changes).values(
                    product_id=product_id,
                    amount=price.amount,
                    currency=price.currency,
                    changed_by=actor,
                    change_time_us=now_us(),
                )
            )
            return await self._live_product(session, product_id)

    async def price_history(
        self, product_id: str, limit: int, before_seq: int | None
    ) -> list[PriceChange]:
        query = (
            select(price_changes)
            .where(price_changes.c.product_id == product_id)
            .order_by(price_changes.c.seq.desc())
            .limit(limit)
        )
        if before_seq is not None:
            query = query.where(price_changes.c.seq < before_seq)
        async with self._database.session() as session:
            await self._live_product(session, product_id)
            rows = (await session.execute(query)).all()
        return [
            PriceChange(
                row.seq, Money(row.amount, row.currency), row.changed_by, row.change_time_us
            )
            for row in rows
        ]

    async def adjust_stock(self, product_id: str, delta: int, reason: str, actor: str) -> Product:
        async with self._database.session() as session:
            current = await self._live_product(session, product_id)
            after = adjusted_stock(current.available, delta)
            # Conditional on the stock still being what was read: a reservation in between on
            # PostgreSQL makes this match nothing, rather than write a stale level.
            result = await session.execute(
                update(products)
                .where(products.c.id == product_id, products.c.available == current.available)
                .values(
                    available=after,
                    version=products.c.version + 1,
                    update_time_us=now_us(),
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise Aborted("the stock changed concurrently; retry the adjustment")
            await session.execute(
                insert(adjustments).values(
                    product_id=product_id,
                    delta=delta,
                    reason=reason,
                    adjusted_by=actor,
                    adjust_time_us=now_us(),
                )
            )
            events = [
                OutgoingEvent(
                    INVENTORY_TOPIC,
                    "microcommerce.inventory.adjusted",
                    product_id,
                    events_pb2.StockAdjusted(
                        product_id=product_id,
                        delta=delta,
                        reason=reason,
                        available=after,
                        reserved=current.reserved,
                        adjusted_by=actor,
                    ),
                )
            ]
            if crossed_low_stock(current.available, after, current.low_stock_threshold):
                events.append(self._low_stock(current, after))
            await self._outbox.add(session, *events)
            return await self._live_product(session, product_id)

    @staticmethod
    def _low_stock(product: Product, available: int) -> OutgoingEvent:
        return OutgoingEvent(
            INVENTORY_TOPIC,
            "microcommerce.inventory.low_stock",
            product.id,
            events_pb2.LowStock(
                product_id=product.id,
                sku=product.sku,
                available=available,
                threshold=product.low_stock_threshold,
            ),
        )

    # Search -----------------------------------------------------------------------------

    async def search(
        self, query: ProductQuery, limit: int, after: Sequence[str] | None
    ) -> list[tuple[Product, list[str]]]:
        """One page of live products matching ``query``, each with its keyset sort key."""
        conditions: list[ColumnElement[bool]] = [products.c.archived.is_(False)]
        name_match: ColumnElement[Any] = literal(0)
        if query.terms:
            conditions.append(self._matches(query.terms, in_name_only=False))
            if query.order_by is OrderBy.RELEVANCE:
                name_match = case((self._matches(query.terms, in_name_only=True), 1), else_=0)
        if query.category_ids:
            conditions.append(products.c.category_id.in_(query.category_ids))
        if query.min_price is not None:
            conditions.append(products.c.price_amount >= query.min_price)
        if query.max_price is not None:
            conditions.append(products.c.price_amount <= query.max_price)
        if query.in_stock is True:
            conditions.append(products.c.available > 0)
        elif query.in_stock is False:
            conditions.append(products.c.available <= 0)

        keys: list[ColumnElement[Any]]
        if query.order_by is OrderBy.PRICE:
            keys, ascending = [products.c.price_amount, products.c.id], True
        elif query.order_by is OrderBy.PRICE_DESC:
            keys, ascending = [products.c.price_amount, products.c.id], False
        elif query.order_by is OrderBy.RELEVANCE:
            keys, ascending = [name_match, products.c.create_time_us, products.c.id], False
        else:
            keys, ascending = [products.c.create_time_us, products.c.id], False
        if after is not None:
            try:
                bound = [int(value) for value in after[:-1]] + [after[-1]]
            except ValueError:
                raise InvalidArgument("page_token is malformed", field="page_token") from None
            literal_bound = tuple_(*(literal(v) for v in bound))
            conditions.append(
                tuple_(*keys) > literal_bound if ascending else tuple_(*keys) < literal_bound
            )
        ordering = [key.asc() if ascending else key.desc() for key in keys]
        statement = (
            select(*_PRODUCT_COLUMNS, *(key.label(f"k{i}") for i, key in enumerate(keys)))
            .where(and_(*conditions))
            .order_by(*ordering)
            .limit(limit)
        )
        async with self._database.session() as session:
            rows = (await session.execute(statement)).all()
        return [
            (_product(row), [str(row._mapping[f"k{i}"]) for i in range(len(keys))]) for row in rows
        ]

    def _matches(self, terms: Sequence[str], *, in_name_only: bool) -> ColumnElement[bool]:
        if self._postgres:
            tsquery = func.to_tsquery("simple", " & ".join(terms))
            column: ColumnElement[Any] = literal_column(
                "products.name_tsv" if in_name_only else "products.all_tsv"
            )
            matched: ColumnElement[bool] = column.op("@@")(tsquery)
            return matched
        # FTS5 query syntax: each term quoted as a string (never an operator), all required.
        phrase = " ".join(f'"{term}"' for term in terms)
        expression = f"name : ({phrase})" if in_name_only else phrase
        matching = select(products_fts.c.rowid).where(_fts_match(expression))
        return products.c.seq.in_(matching)

    # Reservations -----------------------------------------------------------------------

    async def find_reservation(self, order_id: str) -> Reservation | None:
        async with self._database.session() as session:
            return await self._reservation(session, order_id)

    async def _reservation(self, session: AsyncSession, order_id: str) -> Reservation | None:
        head = (
            await session.execute(select(reservations).where(reservations.c.order_id == order_id))
        ).one_or_none()
        if head is None:
            return None
        rows = (
            await session.execute(
                select(reservation_items)
                .where(reservation_items.c.order_id == order_id)
                .order_by(reservation_items.c.position)
            )
        ).all()
        items = tuple(
            ReservedItem(
                row.product_id,
                row.sku,
                row.name,
                row.quantity,
                Money(row.unit_amount, row.unit_currency),
            )
            for row in rows
        )
        return Reservation(order_id, items, ReservationStatus(head.status), head.expire_time_us)

    async def reserve(
        self, order_id: str, lines: Sequence[ReservationLine], ttl_us: int
    ) -> Reservation | None:
        """Reserve every line or nothing; None when the order already has a reservation."""
        expire = now_us() + ttl_us
        try:
            async with self._database.session() as session:
                # The order's row first: a concurrent duplicate blocks on it (PostgreSQL) or
                # queues behind this transaction (SQLite), then fails the primary key.
                await session.execute(
                    insert(reservations).values(
                        order_id=order_id,
                        status=ReservationStatus.ACTIVE.value,
                        expire_time_us=expire,
                        create_time_us=now_us(),
                    )
                )
                items: list[ReservedItem] = []
                low: list[OutgoingEvent] = []
                by_position = {line.product_id: i for i, line in enumerate(lines)}
                # Rows are locked in one global order (by id) so that two multi-item orders
                # cannot deadlock on PostgreSQL.
                for line in sorted(lines, key=lambda line: line.product_id):
                    product, event = await self._take(session, line)
                    items.append(
                        ReservedItem(
                            product.id, product.sku, product.name, line.quantity, product.price
                        )
                    )
                    if event is not None:
                        low.append(event)
                items.sort(key=lambda item: by_position[item.product_id])
                await session.execute(
                    insert(reservation_items),
                    [
                        {
                            "order_id": order_id,
                            "position": position,
                            "product_id": item.product_id,
                            "sku": item.sku,
                            "name": item.name,
                            "quantity": item.quantity,
                            "unit_amount": item.unit_price.amount,
                            "unit_currency": item.unit_price.currency,
                        }
                        for position, item in enumerate(items)
                    ],
                )
                reservation = Reservation(order_id, tuple(items), ReservationStatus.ACTIVE, expire)
                reserved = events_pb2.StockReserved(
                    order_id=order_id,
                    items=_quantities(items),
                    expire_time=_timestamp(expire),
                )
                await self._outbox.add(
                    session,
                    OutgoingEvent(
                        INVENTORY_TOPIC, "microcommerce.inventory.reserved", order_id, reserved
                    ),
                    *low,
                )
                return reservation
        except IntegrityError:
            return None

    async def _take(
        self, session: AsyncSession, line: ReservationLine
    ) -> tuple[Product, OutgoingEvent | None]:
        result = await session.execute(
            update(products)
            .where(
                products.c.id == line.product_id,
                products.c.archived.is_(False),
                products.c.available >= line.quantity,
            )
            .values(
                available=products.c.available - line.quantity,
                reserved=products.c.reserved + line.quantity,
            )
            .returning(*_PRODUCT_COLUMNS)
        )
        row = result.one_or_none()
        if row is None:
            found = (
                await session.execute(
                    select(products.c.available).where(
                        products.c.id == line.product_id, products.c.archived.is_(False)
                    )
                )
            ).one_or_none()
            if found is None:
                raise NotFound(f"no product {line.product_id}", field="items.product_id")
            raise FailedPrecondition(
                f"product {line.product_id} has only {found.available} units available, "
                f"{line.quantity} requested",
                field="items.quantity",
                reason=Reason.OUT_OF_STOCK,
            )
        product = _product(row)
        before = product.available + line.quantity
        if crossed_low_stock(before, product.available, product.low_stock_threshold):
            return product, self._low_stock(product, product.available)
        return product, None

    async def record_release(self, order_id: str) -> Reservation | None:
        """Record an empty RELEASED reservation for an order that never reserved; None if it has."""
        try:
            async with self._database.session() as session:
                await session.execute(
                    insert(reservations).values(
                        order_id=order_id,
                        status=ReservationStatus.RELEASED.value,
                        expire_time_us=now_us(),
                        create_time_us=now_us(),
                    )
                )
        except IntegrityError:
            return None
        return Reservation(order_id, (), ReservationStatus.RELEASED, now_us())

    async def settle(
        self, order_id: str, target: ReservationStatus, *, only_if_due: bool = False
    ) -> Reservation:
        """Move an order's reservation to COMMITTED, RELEASED or EXPIRED, with its stock."""
        async with self._database.session() as session:
            current = await self._reservation(session, order_id)
            if current is None:
                raise NotFound(f"no reservation for order {order_id}", field="order_id")
            source = current.status
            if source is target or (
                target is ReservationStatus.RELEASED and source is ReservationStatus.EXPIRED
            ):
                return current
            allowed = {
                ReservationStatus.COMMITTED: {ReservationStatus.ACTIVE},
                ReservationStatus.RELEASED: {ReservationStatus.ACTIVE, ReservationStatus.COMMITTED},
                ReservationStatus.EXPIRED: {ReservationStatus.ACTIVE},
            }[target]
            if source not in allowed:
                raise FailedPrecondition(
                    f"the reservation of order {order_id} is {source.value}, "
                    f"it cannot become {target.value}",
                    field="order_id",
                )
            condition = [
                reservations.c.order_id == order_id,
                reservations.c.status == source.value,
            ]
            if only_if_due:
                condition.append(reservations.c.expire_time_us <= now_us())
            moved = await session.execute(
                update(reservations).where(*condition).values(status=target.value)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                # Another caller settled it first (PostgreSQL): the same move is a repeat.
                now = await self._reservation(session, order_id)
                if now is not None and now.status is target:
                    return now
                raise Aborted(f"the reservation of order {order_id} changed concurrently")
            # Product rows in id order, as ReserveStock takes them, so no two units of work
            # wait on each other's rows (a deadlock on PostgreSQL).
            for item in sorted(current.items, key=lambda item: item.product_id):
                await session.execute(self._stock_move(item, source, target))
            await self._outbox.add(session, self._settled_event(current, source, target))
            return Reservation(order_id, current.items, target, current.expire_time_us)

    @staticmethod
    def _stock_move(
        item: ReservedItem, source: ReservationStatus, target: ReservationStatus
    ) -> Any:
        statement = update(products).where(products.c.id == item.product_id)
        if target is ReservationStatus.COMMITTED:
            return statement.values(reserved=products.c.reserved - item.quantity)
        if source is ReservationStatus.COMMITTED:  # a restock of a cancelled sale
            return statement.values(available=products.c.available + item.quantity)
        return statement.values(
            available=products.c.available + item.quantity,
            reserved=products.c.reserved - item.quantity,
        )

    @staticmethod
    def _settled_event(
        reservation: Reservation, source: ReservationStatus, target: ReservationStatus
    ) -> OutgoingEvent:
        quantities = _quantities(reservation.items)
        data: events_pb2.StockCommitted | events_pb2.StockReleased
        if target is ReservationStatus.COMMITTED:
            kind = "committed"
            data = events_pb2.StockCommitted(order_id=reservation.order_id, items=quantities)
        else:
            kind = "released"
            reason = (
                events_pb2.STOCK_RELEASE_REASON_EXPIRED
                if target is ReservationStatus.EXPIRED
                else events_pb2.STOCK_RELEASE_REASON_REQUESTED
            )
            data = events_pb2.StockReleased(
                order_id=reservation.order_id,
                items=quantities,
                reason=reason,
                restocked=source is ReservationStatus.COMMITTED,
            )
        return OutgoingEvent(
            INVENTORY_TOPIC, f"microcommerce.inventory.{kind}", reservation.order_id, data
        )

    async def due_reservations(self, limit: int) -> list[str]:
        """Order ids of ACTIVE reservations past their expiry, oldest first."""
        async with self._database.session() as session:
            rows = await session.scalars(
                select(reservations.c.order_id)
                .where(
                    reservations.c.status == ReservationStatus.ACTIVE.value,
                    reservations.c.expire_time_us <= now_us(),
                )
                .order_by(reservations.c.expire_time_us)
                .limit(limit)
            )
            return list(rows)


def _fts_match(expression: str) -> ColumnElement[bool]:
    """``products_fts MATCH :expression`` (FTS5: the table's name stands for every column)."""
    match: ColumnElement[bool] = literal_column("products_fts").op("MATCH")(
        bindparam("fts", expression, unique=True)
    )
    return match
