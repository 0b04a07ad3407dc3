"""Use cases of the product service: load, apply the domain's rules, save, record events."""

from __future__ import annotations

from common.background import run_every
from common.errors import AlreadyExists, DomainError, InvalidArgument
from common.logging import get_logger
from common.money import Money
from common.pagination import PageTokens
from product_svc.domain import (
    Category,
    NewProduct,
    PriceChange,
    Product,
    ProductChanges,
    ProductQuery,
    Reservation,
    ReservationStatus,
    product_query,
    reservation_lines,
    same_lines,
    valid_adjustment,
    valid_count,
    valid_description,
    valid_money,
    valid_name,
    valid_order_id,
    valid_page_size,
    valid_sku,
    valid_slug,
)
from product_svc.store import CatalogStore

_log = get_logger(__name__)


def descendants(parents: dict[str, str], root: str) -> tuple[str, ...]:
    """``root`` and every category below it in the tree."""
    children: dict[str, list[str]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, frontier = [root], [root]
    while frontier:
        frontier = [child for node in frontier for child in children.get(node, [])]
        found.extend(child for child in frontier if child not in found)
    return tuple(found)


class Catalog:
    """The product service's use cases, independent of how they are called."""

    def __init__(
        self,
        store: CatalogStore,
        page_tokens: PageTokens,
        *,
        reservation_ttl_s: float = 900.0,
        default_low_stock_threshold: int = 5,
    ) -> None:
        self._store = store
        self._tokens = page_tokens
        self._ttl_us = int(reservation_ttl_s * 1_000_000)
        self._default_threshold = default_low_stock_threshold

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()

    # Categories

    async def create_category(self, name: str, slug: str, parent_id: str) -> Category:
        return await self._store.create_category(valid_name(name), valid_slug(slug), parent_id)

    async def list_categories(
        self, page_size: int | None, page_token: str
    ) -> tuple[list[Category], str]:
        limit = valid_page_size(page_size)
        after = self._tokens.read(page_token, "categories", key_length=2)
        found = await self._store.list_categories(
            limit + 1, (after[0], after[1]) if after else None
        )
        page = found[:limit]
        token = (
            self._tokens.issue("categories", [page[-1].name, page[-1].id])
            if len(found) > limit
            else ""
        )
        return page, token

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
        return await self._store.create_product(new, actor)

    async def get_product(self, product_id: str) -> Product:
        return await self._store.get_product(product_id)

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
        return await self._store.update_product(product_id, checked, etag)

    async def archive_product(self, product_id: str, etag: str) -> None:
        await self._store.archive_product(product_id, etag)

    async def set_price(self, product_id: str, price: Money | None, actor: str) -> Product:
        if price is None:
            raise InvalidArgument("price is required", field="price")
        return await self._store.set_price(
            product_id, valid_money(price.amount, price.currency), actor
        )

    async def price_history(
        self, product_id: str, page_size: int | None, page_token: str
    ) -> tuple[list[PriceChange], str]:
        limit = valid_page_size(page_size)
        fingerprint = f"price-history:{product_id}"
        after = self._tokens.read(page_token, fingerprint, key_length=1)
        before = int(after[0]) if after else None
        found = await self._store.price_history(product_id, limit + 1, before)
        page = found[:limit]
        token = self._tokens.issue(fingerprint, [str(page[-1].seq)]) if len(found) > limit else ""
        return page, token

    async def adjust_stock(self, product_id: str, delta: int, reason: str, actor: str) -> Product:
        delta, reason = valid_adjustment(delta, reason)
        return await self._store.adjust_stock(product_id, delta, reason, actor)

    async def search(
        self,
        *,
        q: str,
        category_id: str,
        min_price: int | None,
        max_price: int | None,
        in_stock: bool | None,
        order_by: str,
        page_size: int | None,
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
        limit = valid_page_size(page_size)
        fingerprint = query.fingerprint()
        key_length = {"price": 2, "-price": 2, "-create_time": 2, "relevance": 3}[
            query.order_by.value
        ]
        after = self._tokens.read(page_token, fingerprint, key_length=key_length)
        if category_id:
            parents = await self._store.category_parents()
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
        found = await self._store.search(query, limit + 1, after)
        page = found[:limit]
        token = self._tokens.issue(fingerprint, page[-1][1]) if len(found) > limit else ""
        return [product for product, _ in page], token

    # Reservations (checkout)

    async def reserve(self, order_id: str, items: list[tuple[str, int]]) -> Reservation:
        lines = reservation_lines(order_id, items)
        created = await self._store.reserve(order_id, lines, self._ttl_us)
        if created is not None:
            return created
        existing = await self._store.find_reservation(order_id)
        if existing is None:  # pragma: no cover - the row that blocked us cannot vanish
            raise AlreadyExists(f"order {order_id} was reserved concurrently; retry")
        if existing.items and not same_lines(existing, lines):
            raise AlreadyExists(f"order {order_id} already reserved other items", field="items")
        return existing

    async def commit(self, order_id: str) -> Reservation:
        return await self._store.settle(valid_order_id(order_id), ReservationStatus.COMMITTED)

    async def release(self, order_id: str) -> Reservation:
        valid_order_id(order_id)
        if await self._store.find_reservation(order_id) is None:
            recorded = await self._store.record_release(order_id)
            if recorded is not None:
                return recorded
        return await self._store.settle(order_id, ReservationStatus.RELEASED)

    async def expire_due(self, batch: int = 100) -> int:
        """Release every ACTIVE reservation past its expiry; the number expired."""
        expired = 0
        for order_id in await self._store.due_reservations(batch):
            try:
                await self._store.settle(order_id, ReservationStatus.EXPIRED, only_if_due=True)
                expired += 1
            except DomainError as error:  # committed or released meanwhile: nothing to do
                _log.info("reservation_not_expired", order_id=order_id, detail=error.message)
        return expired

    async def sweep_expired(self, interval_s: float) -> None:
        """Expire due reservations every ``interval_s`` until cancelled."""
        await run_every(interval_s, self._expire_all_due, name="reservation-sweep")

    async def _expire_all_due(self) -> None:
        while await self.expire_due() > 0:
            pass
