"""Persistence of the product service: tables, row ⇄ entity mapping, a unit of work per use case.

The store decides nothing: the rules (what a reservation's step moves, how far stock may fall)
come from ``product_svc.domain`` as values. What it keeps is the mechanism that makes those
decisions safe under concurrency: rows locked and changed in product-id order, conditional
UPDATEs (compare-and-set on a version or a status, counters that may not go negative) and the
database's CHECK constraints, so no interleaving on SQLite or PostgreSQL sells a unit twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnElement,
    ForeignKey,
    Index,
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
from sqlalchemy.ext.asyncio import AsyncConnection

from common import unit_of_work
from common.db import SEQUENCE_NUMBER, Database, UtcDateTime, on_conflict_insert
from common.errors import Aborted, AlreadyExists
from common.money import Money
from common.outbox import Outbox
from product_svc.domain import (
    Adjustment,
    Category,
    CoPurchase,
    OrderBy,
    PriceChange,
    Product,
    ProductQuery,
    Reservation,
    ReservationStatus,
    ReservedItem,
    StockMove,
    words,
)

METADATA = MetaData()
categories = Table(
    "product_categories",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("slug", String(100), nullable=False, unique=True),
    Column("parent_id", String(32), ForeignKey("product_categories.id")),
    Column("create_time", UtcDateTime(), nullable=False),
    Index("ix_product_categories_name", "name", "id"),
)
products = Table(
    "products",
    METADATA,
    Column("seq", SEQUENCE_NUMBER, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("category_id", String(32), ForeignKey("product_categories.id"), nullable=False),
    Column("price_amount", BigInteger, nullable=False),
    Column("price_currency", String(3), nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("low_stock_threshold", BigInteger, nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("search_name", Text, nullable=False),
    Column("search_body", Text, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    CheckConstraint("available >= 0", name="ck_products_available"),
    CheckConstraint("reserved >= 0", name="ck_products_reserved"),
    Index("ix_products_newest", "create_time", "id"),
    Index("ix_products_price", "price_amount", "id"),
    Index("ix_products_category_newest", "category_id", "create_time", "id"),
)
price_changes = Table(
    "product_price_changes",
    METADATA,
    Column("seq", SEQUENCE_NUMBER, primary_key=True, autoincrement=True),
    Column("product_id", String(32), ForeignKey("products.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("changed_by", String(256), nullable=False),
    Column("change_time", UtcDateTime(), nullable=False),
    Index("ix_product_price_changes_product", "product_id", "seq"),
)
adjustments = Table(
    "product_stock_adjustments",
    METADATA,
    Column("seq", SEQUENCE_NUMBER, primary_key=True, autoincrement=True),
    Column("product_id", String(32), ForeignKey("products.id"), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("adjusted_by", String(256), nullable=False),
    Column("adjust_time", UtcDateTime(), nullable=False),
)
reservations = Table(
    "stock_reservations",
    METADATA,
    Column("order_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Index("ix_stock_reservations_due", "status", "expire_time"),
)
reservation_items = Table(
    "stock_reservation_items",
    METADATA,
    Column("order_id", String(128), ForeignKey("stock_reservations.order_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("product_id", String(32), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_amount", BigInteger, nullable=False),
    Column("unit_currency", String(3), nullable=False),
)
# "Bought together" counters (migration 0007), fed by confirmed orders; no foreign keys.
purchases = Table(
    "product_purchases",
    METADATA,
    Column("product_id", String(32), primary_key=True),
    Column("orders", BigInteger, nullable=False),
    # The product's category (migration 0008), kept by the counting consumer and by a product
    # moving category; NULL for a product this catalog does not hold.
    Column("category_id", String(32)),
    Index("ix_product_purchases_best_sellers", "orders", "product_id"),
    Index("ix_product_purchases_category_best_sellers", "category_id", "orders", "product_id"),
)
co_purchases = Table(
    "product_co_purchases",
    METADATA,
    Column("product_id", String(32), primary_key=True),
    Column("other_id", String(32), primary_key=True),
    Column("orders", BigInteger, nullable=False),
    Index("ix_product_co_purchases_strongest", "product_id", "orders"),
)
# How far down the shop's best-sellers the shop-wide fallback looks for live, in-stock ones
# (store.UnitOfWork.best_sellers; a category's are one index range of their own).
_BEST_SELLER_WALK = 5_000
# SQLite's full-text index (migration 0003); PostgreSQL uses generated tsvector columns instead.
products_fts = Table(
    "products_fts",
    METADATA,
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
    products.c.archived,
    products.c.create_time,
    products.c.update_time,
    products.c.version,
]


def search_words(text: str) -> str:
    """The text the full-text index holds: lower-case words separated by single spaces."""
    return " ".join(words(text))


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
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
        archived=bool(row.archived),
    )


def _product_values(product: Product) -> dict[str, Any]:
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
        "archived": product.archived,
        "search_name": search_words(product.name),
        "search_body": search_words(product.description),
        "create_time": product.create_time,
        "update_time": product.update_time,
        "version": product.version,
    }


def _category(row: Row[Any]) -> Category:
    return Category(row.id, row.name, row.slug, row.parent_id or "", row.create_time)


# The checkout's statements (reserve, commit, release), built once: a statement built per call
# costs more CPU to construct and to key for SQLAlchemy's compiled cache than the SQLite
# statement itself (issue 13's profile); parameters are bound by name at execution. An UPDATE's
# parameters are never named like a column: SQLAlchemy would SET that column from them.
_PRODUCTS_FOR_UPDATE = (
    select(*_PRODUCT_COLUMNS)
    .where(products.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(products.c.id)
    .with_for_update()
)
_MOVE_STOCK = (
    update(products)
    .where(
        products.c.id == bindparam("move_id"),
        products.c.available + bindparam("move_available") >= 0,
        products.c.reserved + bindparam("move_reserved") >= 0,
    )
    .values(
        available=products.c.available + bindparam("move_available"),
        reserved=products.c.reserved + bindparam("move_reserved"),
    )
)
_RESERVATION = select(reservations).where(reservations.c.order_id == bindparam("order_id"))
_RESERVATION_FOR_UPDATE = _RESERVATION.with_for_update()
_RESERVATION_ITEMS = (
    select(reservation_items)
    .where(reservation_items.c.order_id == bindparam("order_id"))
    .order_by(reservation_items.c.position)
)
_CLAIM_RESERVATION = {
    dialect: on_conflict_insert(reservations, dialect).on_conflict_do_nothing()
    for dialect in ("postgresql", "sqlite")
}
_INSERT_RESERVATION_ITEMS = insert(reservation_items)
_SAVE_RESERVATION = (
    update(reservations)
    .where(
        reservations.c.order_id == bindparam("cas_order_id"),
        reservations.c.status == bindparam("cas_before"),
    )
    .values(status=bindparam("cas_after"))
)


@cache
def _increment_of(
    table: Table, keys: tuple[str, ...], refreshed: tuple[str, ...], postgres: bool
) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE adding ``orders`` orders to ``keys``' row; ``refreshed``
    columns take the new row's values (a product's category follows its moves)."""
    columns = [*keys, *refreshed, "orders"]
    statement = on_conflict_insert(table, "postgresql" if postgres else "sqlite").values(
        {c: bindparam(c) for c in columns}
    )
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={
            "orders": table.c.orders + statement.excluded.orders,
            **{c: statement.excluded[c] for c in refreshed},
        },
    )


class UnitOfWork(unit_of_work.UnitOfWork):
    """The reads and writes of one use case, committed together with its events."""

    def __init__(self, connection: AsyncConnection, outbox: Outbox) -> None:
        super().__init__(connection, outbox)
        self._postgres = connection.dialect.name == "postgresql"

    # Categories -------------------------------------------------------------------------

    async def add_category(self, category: Category) -> None:
        try:
            # A savepoint: the unique violation must not poison the surrounding transaction.
            async with self._connection.begin_nested():
                await self._connection.execute(
                    insert(categories).values(
                        id=category.id,
                        name=category.name,
                        slug=category.slug,
                        parent_id=category.parent_id or None,
                        create_time=category.create_time,
                    )
                )
        except IntegrityError:  # a concurrent create took the slug since the caller looked
            raise AlreadyExists(f"slug {category.slug} is already in use", field="slug") from None

    async def category(self, category_id: str) -> Category | None:
        row = (
            await self._connection.execute(select(categories).where(categories.c.id == category_id))
        ).one_or_none()
        return None if row is None else _category(row)

    async def category_by_slug(self, slug: str) -> Category | None:
        row = (
            await self._connection.execute(select(categories).where(categories.c.slug == slug))
        ).one_or_none()
        return None if row is None else _category(row)

    async def categories(self, limit: int, after: tuple[str, str] | None) -> list[Category]:
        """Categories by name then id, from after the key ``after``."""
        query = select(categories).order_by(categories.c.name, categories.c.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(categories.c.name, categories.c.id) > tuple_(*after))
        return [_category(row) for row in (await self._connection.execute(query)).all()]

    async def category_parents(self) -> dict[str, str]:
        """Every category's parent id ("" for a root): the tree, for descendant lookups."""
        rows = (
            await self._connection.execute(select(categories.c.id, categories.c.parent_id))
        ).all()
        return {row.id: row.parent_id or "" for row in rows}

    # Products ---------------------------------------------------------------------------

    async def add_product(self, product: Product) -> None:
        try:
            async with self._connection.begin_nested():
                await self._connection.execute(insert(products).values(_product_values(product)))
        except IntegrityError:  # a concurrent create took the sku since the caller looked
            raise AlreadyExists(f"sku {product.sku} is already in use", field="sku") from None

    async def product(self, product_id: str, *, for_update: bool = False) -> Product | None:
        """The product, archived or not; ``for_update`` locks its row until the unit ends."""
        query = select(*_PRODUCT_COLUMNS).where(products.c.id == product_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).one_or_none()
        return None if row is None else _product(row)

    async def products_for_update(self, product_ids: Sequence[str]) -> dict[str, Product]:
        """The products by id, their rows locked in id order (no two units deadlock)."""
        rows = (
            await self._connection.execute(_PRODUCTS_FOR_UPDATE, {"ids": sorted(product_ids)})
        ).all()
        return {row.id: _product(row) for row in rows}

    async def product_by_sku(self, sku: str) -> Product | None:
        query = select(*_PRODUCT_COLUMNS).where(products.c.sku == sku)
        row = (await self._connection.execute(query)).one_or_none()
        return None if row is None else _product(row)

    async def save_product(self, before: Product, after: Product) -> None:
        """Write ``after`` if the row is still ``before``; ABORTED if another writer won."""
        # Compare-and-set on the version and the stock counters: reservations move stock
        # without a new version, and on PostgreSQL an unlocked read does not stop them.
        try:
            async with self._connection.begin_nested():
                result = await self._connection.execute(
                    update(products)
                    .where(
                        products.c.id == before.id,
                        products.c.version == before.version,
                        products.c.available == before.available,
                        products.c.reserved == before.reserved,
                    )
                    .values(_product_values(after))
                )
        except IntegrityError:
            raise AlreadyExists(f"sku {after.sku} is already in use", field="product.sku") from None
        if result.rowcount != 1:
            raise Aborted("the product changed concurrently; read it again and retry")

    async def insert_products(self, batch: Sequence[Product]) -> None:
        """Bulk insert without per-row checks, for benchmarks and fixtures."""
        await self._connection.execute(insert(products), [_product_values(p) for p in batch])

    async def move_stock(self, moves: Sequence[StockMove]) -> None:
        """Apply a reservation's stock moves, in product-id order; ABORTED if one would make a
        counter negative (the domain checked a state another unit of work has since changed)."""
        for move in sorted(moves, key=lambda move: move.product_id):
            result = await self._connection.execute(
                _MOVE_STOCK,
                {
                    "move_id": move.product_id,
                    "move_available": move.available,
                    "move_reserved": move.reserved,
                },
            )
            if result.rowcount != 1:
                raise Aborted(f"the stock of product {move.product_id} changed concurrently")

    async def add_price_change(self, product_id: str, change: PriceChange) -> None:
        await self._connection.execute(
            insert(price_changes).values(
                product_id=product_id,
                amount=change.price.amount,
                currency=change.price.currency,
                changed_by=change.changed_by,
                change_time=change.change_time,
            )
        )

    async def price_changes(
        self, product_id: str, limit: int, before_seq: int | None
    ) -> list[PriceChange]:
        """The product's price changes, newest first, from before ``before_seq``."""
        query = (
            select(price_changes)
            .where(price_changes.c.product_id == product_id)
            .order_by(price_changes.c.seq.desc())
            .limit(limit)
        )
        if before_seq is not None:
            query = query.where(price_changes.c.seq < before_seq)
        rows = (await self._connection.execute(query)).all()
        return [
            PriceChange(
                row.seq,
                Money(row.amount, row.currency),
                row.changed_by,
                row.change_time,
            )
            for row in rows
        ]

    async def add_adjustment(self, adjustment: Adjustment) -> None:
        await self._connection.execute(
            insert(adjustments).values(
                product_id=adjustment.product_id,
                delta=adjustment.delta,
                reason=adjustment.reason,
                adjusted_by=adjustment.adjusted_by,
                adjust_time=adjustment.adjust_time,
            )
        )

    # Search -----------------------------------------------------------------------------

    async def search(
        self, query: ProductQuery, limit: int, after: Sequence[object] | None
    ) -> list[tuple[Product, int]]:
        """One page of live products matching ``query`` after the sort key ``after``.

        Each product comes with its relevance rank (1 when its name has every word, else 0),
        part of the sort key under ``relevance``.
        """
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
            keys, ascending = [name_match, products.c.create_time, products.c.id], False
        else:
            keys, ascending = [products.c.create_time, products.c.id], False
        if after is not None:
            # Typed like their columns, so a time bound is written as the column stores it.
            bound = tuple_(*(literal(v, type_=k.type) for k, v in zip(keys, after, strict=True)))
            conditions.append(tuple_(*keys) > bound if ascending else tuple_(*keys) < bound)
        ordering = [key.asc() if ascending else key.desc() for key in keys]
        statement = (
            select(*_PRODUCT_COLUMNS, *[name_match.label("rank")])
            .where(and_(*conditions))
            .order_by(*ordering)
            .limit(limit)
        )
        rows = (await self._connection.execute(statement)).all()
        return [(_product(row), int(row.rank)) for row in rows]

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

    # Bought together --------------------------------------------------------------------

    async def count_purchase(self, basket: Sequence[str], pairs: Sequence[tuple[str, str]]) -> None:
        """Add one order to the counters of its products and of its pairs, in key order."""
        await self.count_purchases([(basket, pairs)])

    async def count_purchases(
        self, orders: Sequence[tuple[Sequence[str], Sequence[tuple[str, str]]]]
    ) -> None:
        """Add several orders (basket, pairs): each counter row once, by how many orders
        count in it, in key order, so concurrent writers never deadlock."""
        bought = Counter(product for basket, _ in orders for product in basket)
        together = Counter(pair for _, pairs in orders for pair in pairs)
        if bought:
            # Each counter records its product's category now, for the per-category index.
            known = await self._connection.execute(
                select(products.c.id, products.c.category_id).where(
                    products.c.id.in_(sorted(bought))
                )
            )
            category_of = {row.id: row.category_id for row in known}
            await self._increment(
                purchases,
                ["product_id"],
                [
                    {"product_id": p, "category_id": category_of.get(p), "orders": bought[p]}
                    for p in sorted(bought)
                ],
                refreshed=["category_id"],
            )
        if together:
            await self._increment(
                co_purchases,
                ["product_id", "other_id"],
                [
                    {"product_id": a, "other_id": b, "orders": together[a, b]}
                    for a, b in sorted(together)
                ],
            )

    async def _increment(
        self,
        table: Table,
        keys: list[str],
        rows: list[dict[str, Any]],
        *,
        refreshed: Sequence[str] = (),
    ) -> None:
        # Every confirmed order runs it: built once per table and backend (_increment_of).
        statement = _increment_of(table, tuple(keys), tuple(refreshed), self._postgres)
        await self._connection.execute(statement, rows)

    async def recategorize_purchases(self, product_id: str, category_id: str) -> None:
        """Keep the product's sales counted in the category it moved to."""
        await self._connection.execute(
            update(purchases)
            .where(purchases.c.product_id == product_id)
            .values(category_id=category_id)
        )

    async def insert_co_purchase_counts(
        self, bought: Mapping[str, int], together: Mapping[tuple[str, str], int]
    ) -> None:
        if bought:
            rows = [{"product_id": p, "orders": n} for p, n in bought.items()]
            await self._connection.execute(insert(purchases), rows)
        if together:
            pairs = [
                {"product_id": a, "other_id": b, "orders": n} for (a, b), n in together.items()
            ]
            await self._connection.execute(insert(co_purchases), pairs)

    async def categorize_purchases(self) -> None:
        """Give every counter its product's category (after a bulk load, as migration 0008)."""
        await self._connection.execute(
            update(purchases).values(
                category_id=select(products.c.category_id)
                .where(products.c.id == purchases.c.product_id)
                .scalar_subquery()
            )
        )

    async def purchases_of(self, product_id: str) -> int:
        """In how many confirmed orders the product was bought."""
        count = await self._connection.scalar(
            select(purchases.c.orders).where(purchases.c.product_id == product_id)
        )
        return int(count or 0)

    async def co_purchases(
        self, product_id: str, min_together: int, limit: int
    ) -> list[CoPurchase]:
        """The live, in-stock products bought with ``product_id`` in at least ``min_together``
        orders, the ``limit`` strongest co-counts first, with their own order counts."""
        rows = (
            await self._connection.execute(
                select(
                    *_PRODUCT_COLUMNS,
                    *[co_purchases.c.orders.label("together"), purchases.c.orders.label("sold")],
                )
                .select_from(co_purchases)
                .join(products, products.c.id == co_purchases.c.other_id)
                .join(purchases, purchases.c.product_id == co_purchases.c.other_id)
                .where(
                    co_purchases.c.product_id == product_id,
                    co_purchases.c.orders >= min_together,
                    products.c.archived.is_(False),
                    products.c.available > 0,
                )
                .order_by(co_purchases.c.orders.desc(), co_purchases.c.other_id)
                .limit(limit)
            )
        ).all()
        return [CoPurchase(_product(row), int(row.together), int(row.sold)) for row in rows]

    async def best_sellers(
        self, category_id: str | None, excluded: Sequence[str], limit: int
    ) -> list[Product]:
        """The live, in-stock products bought most often (at least once), in ``category_id``
        or in the whole shop (only among its first ``_BEST_SELLER_WALK`` best-sellers), apart
        from ``excluded``."""
        if category_id is not None:
            return await self._category_best_sellers(category_id, excluded, limit)
        # Walk the counters' index from the top in batches and filter each batch by primary
        # key: a join ordered by the count lets the planner scan every product and sort
        # (SQLite does, 70 ms at 30,000 products), while this stops as soon as `limit` match.
        chosen: list[str] = []
        skip = set(excluded)
        bound: tuple[int, str] | None = None
        walked, step = 0, max(4 * limit, 20)
        while walked < _BEST_SELLER_WALK:
            query = (
                select(purchases.c.orders, purchases.c.product_id)
                .order_by(purchases.c.orders.desc(), purchases.c.product_id.desc())
                .limit(step)
            )
            if bound is not None:
                query = query.where(
                    tuple_(purchases.c.orders, purchases.c.product_id) < tuple_(*bound)
                )
            batch = [
                (int(row.orders), str(row.product_id))
                for row in await self._connection.execute(query)
            ]
            if not batch:
                break
            walked += len(batch)
            bound = batch[-1]
            wanted = [product_id for _, product_id in batch if product_id not in skip]
            matching = set(
                await self._connection.scalars(
                    select(products.c.id).where(
                        products.c.id.in_(wanted),
                        products.c.archived.is_(False),
                        products.c.available > 0,
                    )
                )
            )
            chosen.extend(product_id for product_id in wanted if product_id in matching)
            if len(chosen) >= limit or len(batch) < step:
                break
            step = min(2 * step, 1_000)
        rows = (
            await self._connection.execute(
                select(*_PRODUCT_COLUMNS).where(products.c.id.in_(chosen[:limit]))
            )
        ).all()
        by_id = {row.id: _product(row) for row in rows}
        return [by_id[product_id] for product_id in chosen[:limit] if product_id in by_id]

    async def _category_best_sellers(
        self, category_id: str, excluded: Sequence[str], limit: int
    ) -> list[Product]:
        # The counters' category index read from its top, each row checked against its product
        # by primary key; it stops at `limit` matches (the plan test in
        # tests/integration/product/test_product_recommendations.py holds both backends to it).
        join = purchases.join(products, products.c.id == purchases.c.product_id)
        query = (
            select(*_PRODUCT_COLUMNS)
            .select_from(join)
            .where(
                purchases.c.category_id == category_id,
                products.c.archived.is_(False),
                products.c.available > 0,
                products.c.id.not_in(excluded),
            )
            .order_by(purchases.c.orders.desc(), purchases.c.product_id.desc())
            .limit(limit)
        )
        return [_product(row) for row in (await self._connection.execute(query)).all()]

    async def newest_in_stock(
        self, category_id: str | None, excluded: Sequence[str], limit: int
    ) -> list[Product]:
        """The newest live, in-stock products, in ``category_id`` or in the whole shop, apart
        from ``excluded`` (the "new arrivals" a shop shows when nothing has sold yet)."""
        conditions = [
            products.c.archived.is_(False),
            products.c.available > 0,
            products.c.id.not_in(excluded),
        ]
        if category_id is not None:
            conditions.append(products.c.category_id == category_id)
        # ix_products_category_newest / ix_products_newest, read from the newest end.
        query = (
            select(*_PRODUCT_COLUMNS)
            .where(*conditions)
            .order_by(products.c.create_time.desc(), products.c.id.desc())
            .limit(limit)
        )
        return [_product(row) for row in (await self._connection.execute(query)).all()]

    # Reservations -----------------------------------------------------------------------

    async def reservation(self, order_id: str, *, for_update: bool = False) -> Reservation | None:
        """The order's reservation; ``for_update`` locks it until the unit ends."""
        query = _RESERVATION_FOR_UPDATE if for_update else _RESERVATION
        head = (await self._connection.execute(query, {"order_id": order_id})).one_or_none()
        if head is None:
            return None
        rows = (await self._connection.execute(_RESERVATION_ITEMS, {"order_id": order_id})).all()
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
        return Reservation(order_id, items, ReservationStatus(head.status), head.expire_time)

    async def claim_reservation(self, reservation: Reservation, now: datetime) -> bool:
        """Record the order's reservation (without items); False when the order has one.

        A use case claims the order's row before anything else: a concurrent duplicate then
        waits on it (PostgreSQL) or behind this transaction (SQLite) and finds it taken.
        """
        # ON CONFLICT DO NOTHING rather than a savepoint around a failing INSERT: one
        # statement instead of three (SAVEPOINT, INSERT, RELEASE) on every reserve.
        claimed = await self._connection.execute(
            _CLAIM_RESERVATION["postgresql" if self._postgres else "sqlite"],
            {
                "order_id": reservation.order_id,
                "status": reservation.status.value,
                "expire_time": reservation.expire_time,
                "create_time": now,
            },
        )
        return bool(claimed.rowcount)

    async def add_reservation_items(self, reservation: Reservation) -> None:
        """Record what a claimed reservation holds, in the order's own item order."""
        await self._connection.execute(
            _INSERT_RESERVATION_ITEMS,
            [
                {
                    "order_id": reservation.order_id,
                    "position": position,
                    "product_id": item.product_id,
                    "sku": item.sku,
                    "name": item.name,
                    "quantity": item.quantity,
                    "unit_amount": item.unit_price.amount,
                    "unit_currency": item.unit_price.currency,
                }
                for position, item in enumerate(reservation.items)
            ],
        )

    async def save_reservation(self, before: Reservation, after: Reservation) -> None:
        """Write the reservation's new status if it is still ``before``'s (compare-and-set)."""
        result = await self._connection.execute(
            _SAVE_RESERVATION,
            {
                "cas_order_id": before.order_id,
                "cas_before": before.status.value,
                "cas_after": after.status.value,
            },
        )
        if result.rowcount != 1:
            raise Aborted(f"the reservation of order {before.order_id} changed concurrently")

    async def extend_reservation(self, before: Reservation, until: datetime) -> None:
        """Move an ACTIVE reservation's expiry to ``until`` if it is still ACTIVE."""
        result = await self._connection.execute(
            update(reservations)
            .where(
                reservations.c.order_id == before.order_id,
                reservations.c.status == ReservationStatus.ACTIVE.value,
            )
            .values(expire_time=until)
        )
        if result.rowcount != 1:
            raise Aborted(f"the reservation of order {before.order_id} changed concurrently")

    async def reservations_due(
        self, status: ReservationStatus, now: datetime, limit: int
    ) -> list[str]:
        """Order ids of reservations in ``status`` whose expiry is at or before ``now``."""
        rows = await self._connection.scalars(
            select(reservations.c.order_id)
            .where(
                reservations.c.status == status.value,
                reservations.c.expire_time <= now,
            )
            .order_by(reservations.c.expire_time)
            .limit(limit)
        )
        return list(rows)


class CatalogStore(unit_of_work.Store[UnitOfWork]):
    """The product service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        super().__init__(database, outbox, UnitOfWork)

    async def insert_products(self, batch: Sequence[Product]) -> None:
        """Bulk load without per-row checks, for benchmarks and fixtures (category must exist)."""
        async with self.unit_of_work() as uow:
            await uow.insert_products(batch)

    async def insert_co_purchase_counts(
        self, bought: Mapping[str, int], together: Mapping[tuple[str, str], int]
    ) -> None:
        """Bulk load of counters into empty tables, for benchmarks (the consumer's path is
        ``UnitOfWork.count_purchase``)."""
        # In chunks, each its own transaction: one statement of two million rows outlives the
        # driver's command timeout on PostgreSQL.
        chunk = 50_000
        counts, pairs = list(bought.items()), list(together.items())
        for start in range(0, max(len(counts), len(pairs)), chunk):
            async with self.unit_of_work() as uow:
                await uow.insert_co_purchase_counts(
                    dict(counts[start : start + chunk]), dict(pairs[start : start + chunk])
                )
        async with self.unit_of_work() as uow:
            await uow.categorize_purchases()


def _fts_match(expression: str) -> ColumnElement[bool]:
    """``products_fts MATCH :expression`` (FTS5: the table's name stands for every column)."""
    match: ColumnElement[bool] = literal_column("products_fts").op("MATCH")(
        bindparam("fts", expression, unique=True)
    )
    return match
