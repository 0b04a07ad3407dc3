"""Use cases of the product service: each one unit of work (load, apply the domain's rules,
save, record events)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from common.background import run_every
from common.clock import from_micros, now, to_micros
from common.errors import AlreadyExists, DomainError, InvalidArgument, NotFound
from common.inbox import Delivery
from common.logging import get_logger
from common.money import Money
from common.pagination import PageTokens, fingerprint, page_size
from product_svc import messages
from product_svc.catalog_cache import CatalogCache, NoCache
from product_svc.domain import (
    Adjustment,
    Category,
    NewProduct,
    OrderBy,
    PriceChange,
    Product,
    ProductChanges,
    ProductQuery,
    RecommendationSettings,
    Reservation,
    ReservationStatus,
    Settlement,
    basket,
    basket_pairs,
    descendants,
    fill_recommendations,
    found,
    new_id,
    new_product,
    place_reservation,
    product_query,
    rank_bought_together,
    recommendation_count,
    reservation_lines,
    valid_adjustment,
    valid_count,
    valid_description,
    valid_money,
    valid_name,
    valid_order_id,
    valid_sku,
    valid_slug,
)
from product_svc.store import CatalogStore, UnitOfWork

_log = get_logger(__name__)


class Catalog:
    """The product service's use cases, independent of how they are called."""

    def __init__(
        self,
        store: CatalogStore,
        page_tokens: PageTokens,
        *,
        reservation_ttl_s: float = 900.0,
        default_low_stock_threshold: int = 5,
        clock: Callable[[], datetime] = now,
        recommendations: RecommendationSettings | None = None,
        cache: CatalogCache | None = None,
    ) -> None:
        self._store = store
        self._cache: CatalogCache = cache or NoCache()
        self._recommend = recommendations or RecommendationSettings()
        self._tokens = page_tokens
        self._ttl = timedelta(seconds=reservation_ttl_s)
        self._default_threshold = default_low_stock_threshold
        self._now = clock

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[tuple[UnitOfWork, set[str]]]:
        """A unit of work whose products (the ids the block adds to the set) are forgotten by
        the cache once it has ended: after the commit, so no reader refills the old row."""
        touched: set[str] = set()
        try:
            async with self._store.unit_of_work() as uow:
                yield uow, touched
        finally:  # after a rollback too: forgetting an unchanged entry costs one miss
            await self._cache.forget_products(touched)

    async def close(self) -> None:
        await self._cache.close()

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()

    # Categories

    async def create_category(self, name: str, slug: str, parent_id: str) -> Category:
        category = Category(new_id(), valid_name(name), valid_slug(slug), parent_id, self._now())
        async with self._store.unit_of_work() as uow:
            if parent_id and await uow.category(parent_id) is None:
                raise InvalidArgument(f"parent_id: no category {parent_id}", field="parent_id")
            if await uow.category_by_slug(category.slug) is not None:
                raise AlreadyExists(f"slug {category.slug} is already in use", field="slug")
            await uow.add_category(category)
        await self._cache.forget_categories()
        return category

    async def list_categories(
        self, requested_size: int | None, page_token: str
    ) -> tuple[list[Category], str]:
        limit = page_size(requested_size)
        bound_to = fingerprint("ListCategories", {"order_by": "name"})
        after = self._tokens.read(page_token, bound_to, key_length=2)

        async def load() -> tuple[list[Category], str]:
            async with self._store.reading() as uow:
                listed = await uow.categories(limit + 1, (after[0], after[1]) if after else None)
            page = listed[:limit]
            token = (
                self._tokens.issue(bound_to, [page[-1].name, page[-1].id])
                if len(listed) > limit
                else ""
            )
            return page, token

        return await self._cache.categories(limit, page_token, load)

    # Products

    async def create_product(
        self,
        *,
        sku: str,
        name: str,
        description: str,
        category_id: str,
        price: Money | None,
        stock: int,
        low_stock_threshold: int | None,
        actor: str,
    ) -> Product:
        if price is None:
            raise InvalidArgument("price is required", field="price")
        if not category_id:
            raise InvalidArgument("category_id is required", field="category_id")
        new = NewProduct(
            sku=valid_sku(sku),
            name=valid_name(name),
            description=valid_description(description),
            category_id=category_id,
            price=valid_money(price.amount, price.currency),
            stock=valid_count(stock, field_name="stock"),
            low_stock_threshold=valid_count(
                self._default_threshold if low_stock_threshold is None else low_stock_threshold,
                field_name="low_stock_threshold",
            ),
        )
        product = new_product(new, self._now())
        async with self._store.unit_of_work() as uow:
            if await uow.category(new.category_id) is None:
                raise InvalidArgument(
                    f"category_id: no category {new.category_id}", field="category_id"
                )
            await self._refuse_taken_sku(uow, new.sku, field_name="sku")
            await uow.add_product(product)
            await uow.add_price_change(
                product.id, PriceChange(0, product.price, actor, product.create_time)
            )
        return product

    async def insert_products(self, batch: list[NewProduct]) -> list[Product]:
        """Bulk load without per-row checks, for benchmarks and fixtures (category must exist)."""
        moment = self._now()
        # Distinct creation times keep "newest first" a strict order within the batch.
        created = [
            new_product(new, moment + timedelta(microseconds=i)) for i, new in enumerate(batch)
        ]
        await self._store.insert_products(created)
        return created

    async def get_product(self, product_id: str) -> Product:
        return found(
            await self._cache.product(product_id, self._load_product(product_id)), product_id
        )

    def _load_product(self, product_id: str) -> Callable[[], Awaitable[Product | None]]:
        async def load() -> Product | None:
            # Catalog reads never queue behind writers (on SQLite, checkouts' reservations hold
            # the write lock) nor pay for BEGIN/COMMIT on PostgreSQL: one statement needs no
            # snapshot.
            async with self._store.reading() as uow:
                return await uow.product(product_id)

        return load

    async def update_product(self, product_id: str, changes: ProductChanges, etag: str) -> Product:
        checked = ProductChanges(
            sku=None if changes.sku is None else valid_sku(changes.sku, field_name="product.sku"),
            name=None
            if changes.name is None
            else valid_name(changes.name, field_name="product.name"),
            description=None
            if changes.description is None
            else valid_description(changes.description),
            category_id=changes.category_id,
            low_stock_threshold=None
            if changes.low_stock_threshold is None
            else valid_count(changes.low_stock_threshold, field_name="product.low_stock_threshold"),
        )
        if checked.category_id is not None and not checked.category_id:
            raise InvalidArgument("a product needs a category", field="product.category_id")
        async with self._writing() as (uow, touched):
            touched.add(product_id)
            current = found(await uow.product(product_id, for_update=True), product_id)
            current.check_etag(etag, field_name="product.etag")
            updated = current.with_changes(checked, self._now())
            if updated is current:
                return current
            if updated.sku != current.sku:
                await self._refuse_taken_sku(uow, updated.sku, field_name="product.sku")
            if checked.category_id is not None and await uow.category(checked.category_id) is None:
                raise InvalidArgument(
                    f"product.category_id: no category {checked.category_id}",
                    field="product.category_id",
                )
            await uow.save_product(current, updated)
            if updated.category_id != current.category_id:
                await uow.recategorize_purchases(updated.id, updated.category_id)
            return updated

    async def archive_product(self, product_id: str, etag: str) -> None:
        async with self._writing() as (uow, touched):
            touched.add(product_id)
            current = found(await uow.product(product_id, for_update=True), product_id)
            current.check_etag(etag, field_name="etag")
            await uow.save_product(current, current.archive(self._now()))

    async def set_price(self, product_id: str, price: Money | None, actor: str) -> Product:
        if price is None:
            raise InvalidArgument("price is required", field="price")
        valid = valid_money(price.amount, price.currency)
        async with self._writing() as (uow, touched):
            touched.add(product_id)
            current = found(await uow.product(product_id, for_update=True), product_id)
            repriced = current.repriced(valid, self._now())
            await uow.save_product(current, repriced)
            await uow.add_price_change(
                product_id, PriceChange(0, valid, actor, repriced.update_time)
            )
            return repriced

    async def price_history(
        self, product_id: str, requested_size: int | None, page_token: str
    ) -> tuple[list[PriceChange], str]:
        limit = page_size(requested_size)
        bound_to = fingerprint("ListPriceHistory", {"id": product_id, "order_by": "-seq"})
        after = self._tokens.read(page_token, bound_to, key_length=1)
        before = int(after[0]) if after else None
        async with self._store.reading() as uow:
            found(await uow.product(product_id), product_id)
            changes = await uow.price_changes(product_id, limit + 1, before)
        page = changes[:limit]
        token = self._tokens.issue(bound_to, [str(page[-1].seq)]) if len(changes) > limit else ""
        return page, token

    async def adjust_stock(self, product_id: str, delta: int, reason: str, actor: str) -> Product:
        delta, reason = valid_adjustment(delta, reason)
        moment = self._now()
        adjustment = Adjustment(product_id, delta, reason, actor, moment)
        async with self._writing() as (uow, touched):
            touched.add(product_id)
            current = found(await uow.product(product_id, for_update=True), product_id)
            adjusted = current.adjusted(delta, moment)
            await uow.save_product(current, adjusted)
            await uow.add_adjustment(adjustment)
            await uow.emit(messages.stock_adjusted(adjustment, adjusted))
            if adjusted.low_stock_since(current):
                await uow.emit(messages.low_stock(adjusted))
            return adjusted

    async def search(
        self,
        *,
        q: str,
        category_id: str,
        min_price: int | None,
        max_price: int | None,
        in_stock: bool | None,
        order_by: str,
        requested_size: int | None,
        page_token: str,
    ) -> tuple[list[Product], str]:
        query = product_query(
            q=q,
            category_id=category_id,
            min_price=min_price,
            max_price=max_price,
            in_stock=in_stock,
            order_by=order_by,
        )
        limit = page_size(requested_size)
        bound_to = fingerprint("ListProducts", query.filters())
        after = self._tokens.read(page_token, bound_to, key_length=_KEY_LENGTH[query.order_by])
        async with self._store.reading() as uow:
            if category_id:
                parents = await uow.category_parents()
                if category_id not in parents:
                    raise InvalidArgument(
                        f"category_id: no category {category_id}", field="category_id"
                    )
                query = ProductQuery(
                    terms=query.terms,
                    category_id=query.category_id,
                    min_price=query.min_price,
                    max_price=query.max_price,
                    in_stock=query.in_stock,
                    order_by=query.order_by,
                    category_ids=descendants(parents, category_id),
                )
            hits = await uow.search(
                query, limit + 1, None if after is None else _sort_bound(query.order_by, after)
            )
        page = hits[:limit]
        token = (
            self._tokens.issue(bound_to, _sort_key(query.order_by, *page[-1]))
            if len(hits) > limit
            else ""
        )
        return [product for product, _ in page], token

    @staticmethod
    async def _refuse_taken_sku(uow: UnitOfWork, sku: str, *, field_name: str) -> None:
        if await uow.product_by_sku(sku) is not None:
            raise AlreadyExists(f"sku {sku} is already in use", field=field_name)

    # Recommendations ("bought together")

    async def count_confirmed_order(
        self, order_id: str, product_ids: list[str], delivery: Delivery
    ) -> None:
        """Add a confirmed order to the co-purchase counters, once (``events.py``: the event
        is recorded in the inbox in the same transaction, so a redelivery adds nothing)."""
        products = basket(order_id, product_ids)
        async with self._store.handling(delivery) as uow:
            await uow.count_purchase(products, basket_pairs(products))
        _log.info("order_counted_for_recommendations", order_id=order_id, products=len(products))

    async def count_confirmed_orders(
        self, orders: Sequence[tuple[str, list[str], Delivery]]
    ) -> list[bool]:
        """``count_confirmed_order`` for several orders in one transaction, each once; which
        were counted now (False: handled before, a redelivery)."""
        baskets = [basket(order_id, product_ids) for order_id, product_ids, _ in orders]
        async with self._store.handling_batch([delivery for *_, delivery in orders]) as (uow, new):
            await uow.count_purchases(
                [(b, basket_pairs(b)) for b, first in zip(baskets, new, strict=True) if first]
            )
        _log.info("orders_counted_for_recommendations", orders=sum(new), batch=len(new))
        return new

    async def recommendations(self, product_id: str, requested_size: int | None) -> list[Product]:
        """The products most often bought with ``product_id``, topped up with best-sellers."""
        limit = recommendation_count(requested_size)
        settings = self._recommend
        async with self._store.reading() as uow:
            product = found(await uow.product(product_id), product_id)
            partners = await uow.co_purchases(
                product_id, settings.min_co_purchases, settings.candidates
            )
            chosen = rank_bought_together(
                product, await uow.purchases_of(product_id), partners, settings, limit
            )
            # Too little history: the category's best-sellers, then its newest in-stock
            # products, then the same two for the whole shop; so the list is empty only when
            # the shop has nothing else live and in stock.
            fallbacks: list[list[Product]] = []
            excluded = [product_id, *(p.id for p in chosen)]
            for category_id in (product.category_id, None):
                for source in (uow.best_sellers, uow.newest_in_stock):
                    missing = limit - len(excluded) + 1
                    if missing <= 0:
                        break
                    filler = await source(category_id, excluded, missing)
                    fallbacks.append(filler)
                    excluded.extend(p.id for p in filler)
        return fill_recommendations(product, chosen, fallbacks, limit)

    # Reservations (checkout)

    async def reserve(self, order_id: str, items: list[tuple[str, int]]) -> Reservation:
        lines = reservation_lines(order_id, items)
        moment = self._now()
        opened = Reservation.open(order_id, moment, self._ttl)
        async with self._writing() as (uow, touched):
            if not await uow.claim_reservation(opened, moment):
                existing = await uow.reservation(order_id)
                if existing is None:  # pragma: no cover - the row that blocked us cannot vanish
                    raise AlreadyExists(f"order {order_id} was reserved concurrently; retry")
                return existing.repeated(lines)
            products = await uow.products_for_update([line.product_id for line in lines])
            placement = place_reservation(opened, lines, products)
            await uow.add_reservation_items(placement.reservation)
            await uow.move_stock(placement.moves)
            touched.update(move.product_id for move in placement.moves)
            await uow.emit(
                messages.stock_reserved(placement.reservation),
                *(messages.low_stock(product) for product in placement.low_stock),
            )
            return placement.reservation

    async def commit(self, order_id: str) -> Reservation:
        valid_order_id(order_id)
        async with self._writing() as (uow, touched):
            current = await self._reservation(uow, order_id)
            return await self._settle(uow, current.commit(), touched)

    async def extend(self, order_id: str, until: datetime) -> Reservation:
        """Keep an ACTIVE reservation until ``until`` (payment_svc's held orders)."""
        valid_order_id(order_id)
        async with self._store.unit_of_work() as uow:
            current = await self._reservation(uow, order_id)
            extended = current.extended(until, self._now())
            if extended != current:
                await uow.extend_reservation(current, extended.expire_time)
            return extended

    async def release(self, order_id: str) -> Reservation:
        valid_order_id(order_id)
        async with self._writing() as (uow, touched):
            return await self._release(uow, order_id, touched)

    async def release_for_ended_order(self, order_id: str, delivery: Delivery) -> Reservation:
        """The safety net behind the saga: an order that ended failed or cancelled holds no stock.

        Run for each such order event (``events.py``), with the event recorded in the inbox in
        the same transaction. Releasing is idempotent, so it agrees with the saga's own release
        whichever comes first.
        """
        valid_order_id(order_id)
        touched: set[str] = set()
        try:
            async with self._store.handling(delivery) as uow:
                released = await self._release(uow, order_id, touched)
        finally:
            await self._cache.forget_products(touched)
        _log.info("ended_order_released", order_id=order_id, status=released.status.value)
        return released

    async def _release(self, uow: UnitOfWork, order_id: str, touched: set[str]) -> Reservation:
        moment = self._now()
        current = await uow.reservation(order_id, for_update=True)
        if current is None:
            nothing = Reservation.released_unreserved(order_id, moment)
            if await uow.claim_reservation(nothing, moment):
                return nothing
            current = await self._reservation(uow, order_id)
        return await self._settle(uow, current.release(), touched)

    async def expire(self, order_id: str) -> Reservation:
        """Give back the stock of a reservation nobody settled before its expiry."""
        async with self._writing() as (uow, touched):
            current = await self._reservation(uow, order_id)
            return await self._settle(uow, current.expire(self._now()), touched)

    async def expire_due(self, batch: int = 100) -> int:
        """Release every ACTIVE reservation past its expiry; the number expired."""
        async with self._store.unit_of_work() as uow:
            due = await uow.reservations_due(ReservationStatus.ACTIVE, self._now(), batch)
        expired = 0
        for order_id in due:
            try:
                await self.expire(order_id)
                expired += 1
            except DomainError as error:  # committed or released meanwhile: nothing to do
                _log.info("reservation_not_expired", order_id=order_id, detail=error.message)
        return expired

    @staticmethod
    async def _reservation(uow: UnitOfWork, order_id: str) -> Reservation:
        # Locked: a concurrent settle of the same order waits, then sees this one's outcome.
        current = await uow.reservation(order_id, for_update=True)
        if current is None:
            raise NotFound(f"no reservation for order {order_id}", field="order_id")
        return current

    @staticmethod
    async def _settle(uow: UnitOfWork, settlement: Settlement, touched: set[str]) -> Reservation:
        if settlement.changed:
            await uow.save_reservation(settlement.before, settlement.after)
            await uow.move_stock(settlement.moves)
            touched.update(move.product_id for move in settlement.moves)
            await uow.emit(messages.stock_settled(settlement))
        return settlement.after

    async def sweep_expired(self, interval_s: float) -> None:
        """Expire due reservations every ``interval_s`` until cancelled."""
        await run_every(interval_s, self._expire_all_due, name="reservation-sweep")

    async def _expire_all_due(self) -> None:
        while await self.expire_due() > 0:
            pass


# The sort key of each order, as a page token carries it: the values, then the product id.
_KEY_LENGTH = {OrderBy.PRICE: 2, OrderBy.PRICE_DESC: 2, OrderBy.NEWEST: 2, OrderBy.RELEVANCE: 3}


def _sort_key(order_by: OrderBy, product: Product, rank: int) -> list[str]:
    """The page token's key after ``product``; times as integer microseconds (exact)."""
    if order_by in (OrderBy.PRICE, OrderBy.PRICE_DESC):
        return [str(product.price.amount), product.id]
    created = str(to_micros(product.create_time))
    if order_by is OrderBy.RELEVANCE:
        return [str(rank), created, product.id]
    return [created, product.id]


def _sort_bound(order_by: OrderBy, key: list[str]) -> tuple[object, ...]:
    """The store's bound from a page token's key (``_sort_key`` in reverse)."""
    try:
        if order_by in (OrderBy.PRICE, OrderBy.PRICE_DESC):
            return (int(key[0]), key[1])
        if order_by is OrderBy.RELEVANCE:
            return (int(key[0]), from_micros(int(key[1])), key[2])
        return (from_micros(int(key[0])), key[1])
    except ValueError:
        raise InvalidArgument("page_token is malformed", field="page_token") from None
