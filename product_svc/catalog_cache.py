"""A shared Redis cache of the hot catalog reads (``GetProduct``, ``ListCategories``).

Off unless ``MC_PRODUCT_CACHE_REDIS_URL`` is set (``NoCache``). The use cases read through it
(``Catalog``: a miss loads from the database and fills the entry) and forget entries after
every committed write that changes what a reader sees: product update, archive, price, stock
adjustment and every reservation step (reserve, commit, release, expiry). The TTL
(``MC_PRODUCT_CACHE_TTL_S``) is only the backstop, for an invalidation lost while Redis was
unreachable.

No stale fill: a reader that missed may load the row just before a writer commits and fill the
entry just after the writer forgot it. So each product has a generation counter next to its
entry: the writer increments it when it forgets, the reader reads it with the entry and fills
only if it has not moved (one Lua script, atomic in Redis). Category pages live under a
generation of their own that a category write increments, so the old pages are simply never
read again (and expire).

Redis down, slow or refusing: every read is served from the database; the outage is logged
once (and its end once), counted in ``mc_product_cache_errors_total``, shown by
``mc_product_cache_available``; for ``retry_after_s`` after a failure reads do not try Redis
again, so an outage costs a request one short timeout at most, not one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from common.logging import get_logger
from common.metrics import REGISTRY
from common.money import Money
from product_svc.domain import Category, Product

_log = get_logger(__name__)

CACHE_READS = Counter(
    "mc_product_cache_reads",
    "Catalog reads through the product cache, by read and outcome (hit, miss, or unavailable: "
    "Redis failing, served from the database).",
    ("read", "outcome"),
    registry=REGISTRY,
)
CACHE_ERRORS = Counter(
    "mc_product_cache_errors",
    "Product cache operations that failed on Redis (the read was served from the database), "
    "by operation.",
    ("operation",),
    registry=REGISTRY,
)
CACHE_AVAILABLE = Gauge(
    "mc_product_cache_available",
    "1 while the product cache's Redis answers, 0 after a failure until it answers again.",
    registry=REGISTRY,
)

CategoryPage = tuple[list[Category], str]


class CatalogCache(Protocol):
    """What the use cases need of a cache: read through it, forget after a write."""

    async def product(
        self, product_id: str, load: Callable[[], Awaitable[Product | None]]
    ) -> Product | None: ...

    async def categories(
        self, limit: int, page_token: str, load: Callable[[], Awaitable[CategoryPage]]
    ) -> CategoryPage: ...

    async def forget_products(self, product_ids: Iterable[str]) -> None: ...

    async def forget_categories(self) -> None: ...

    async def close(self) -> None: ...


class NoCache:
    """The cache turned off: every read goes to the database."""

    async def product(
        self, product_id: str, load: Callable[[], Awaitable[Product | None]]
    ) -> Product | None:
        return await load()

    async def categories(
        self, limit: int, page_token: str, load: Callable[[], Awaitable[CategoryPage]]
    ) -> CategoryPage:
        return await load()

    async def forget_products(self, product_ids: Iterable[str]) -> None:
        return None

    async def forget_categories(self) -> None:
        return None

    async def close(self) -> None:
        return None


# Fill the entry only if the product's generation is still the one read with the miss.
_FILL_IF_UNCHANGED = """
local seen = redis.call('GET', KEYS[2]) or ''
if seen == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
# The categories' generation and the page stored under it, in one round trip.
_CATEGORY_PAGE = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', KEYS[1] .. ':' .. generation .. ':' .. ARGV[1])}
"""
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisCatalogCache:
    """The catalog reads in Redis, shared by every product_svc replica pointing at it."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        prefix: str = "mc:product:",
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
    ) -> None:
        # Short timeouts: a slow Redis must cost a read milliseconds, not seconds.
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._fill = self._redis.register_script(_FILL_IF_UNCHANGED)
        self._page = self._redis.register_script(_CATEGORY_PAGE)
        self._ttl_ms = max(1, round(ttl_s * 1000))
        # A generation must outlive any read in flight; beyond that it is only memory.
        self._generation_ttl_ms = self._ttl_ms + 60_000
        self._prefix = prefix
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._down = False
        CACHE_AVAILABLE.set(1)

    async def product(
        self, product_id: str, load: Callable[[], Awaitable[Product | None]]
    ) -> Product | None:
        entry, generation = self._product_key(product_id), self._generation_key(product_id)
        seen: list[Any] | None = None
        if self._trying():
            try:
                seen = await self._redis.mget(entry, generation)
                self._answered()
            except _FAILURES as error:
                self._failed("read", error)
        if seen is None:
            CACHE_READS.labels("product", "unavailable").inc()
            return await load()
        if seen[0] is not None:
            CACHE_READS.labels("product", "hit").inc()
            return _product_from(seen[0])
        CACHE_READS.labels("product", "miss").inc()
        product = await load()
        if product is not None:  # unknown products are not cached: a create needs no forget
            await self._guarded(
                "fill",
                self._fill(
                    keys=[entry, generation],
                    args=[_text(seen[1]), _product_to(product), self._ttl_ms],
                ),
            )
        return product

    async def categories(
        self, limit: int, page_token: str, load: Callable[[], Awaitable[CategoryPage]]
    ) -> CategoryPage:
        # The token is checked (signature, binding) before the cache is asked; hashed here
        # only to keep the key short.
        page = f"{limit}:{hashlib.sha256(page_token.encode()).hexdigest()[:32]}"
        root = self._prefix + "categories"
        seen: list[Any] | None = None
        if self._trying():
            try:
                seen = await self._page(keys=[root], args=[page])
                self._answered()
            except _FAILURES as error:
                self._failed("read", error)
        if seen is None:
            CACHE_READS.labels("categories", "unavailable").inc()
            return await load()
        generation, stored = _text(seen[0]), seen[1]
        if stored is not None:
            CACHE_READS.labels("categories", "hit").inc()
            return _page_from(stored)
        CACHE_READS.labels("categories", "miss").inc()
        loaded = await load()
        # Stored under the generation read before the load: a category written meanwhile
        # moved the generation on, so this page is never read.
        await self._guarded(
            "fill",
            self._redis.set(f"{root}:{generation}:{page}", _page_to(loaded), px=self._ttl_ms),
        )
        return loaded

    async def forget_products(self, product_ids: Iterable[str]) -> None:
        ids = sorted(set(product_ids))
        if not ids:
            return
        # Tried even while reads skip Redis: a lost forget leaves an entry stale up to the TTL.
        async with self._redis.pipeline(transaction=True) as pipe:
            for product_id in ids:
                generation = self._generation_key(product_id)
                pipe.incr(generation)
                pipe.pexpire(generation, self._generation_ttl_ms)
                pipe.delete(self._product_key(product_id))
            await self._guarded("forget", pipe.execute())

    async def forget_categories(self) -> None:
        await self._guarded("forget", self._redis.incr(self._prefix + "categories"))

    async def close(self) -> None:
        await self._redis.aclose()

    def _product_key(self, product_id: str) -> str:
        return f"{self._prefix}p:{product_id}"

    def _generation_key(self, product_id: str) -> str:
        return f"{self._prefix}p:{product_id}:gen"

    def _trying(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _guarded(self, operation: str, call: Awaitable[Any]) -> None:
        try:
            await call
            self._answered()
        except _FAILURES as error:
            self._failed(operation, error)

    def _answered(self) -> None:
        if self._down:
            self._down = False
            CACHE_AVAILABLE.set(1)
            _log.info("product_cache_recovered")

    def _failed(self, operation: str, error: BaseException) -> None:
        CACHE_ERRORS.labels(operation).inc()
        self._down_until = time.monotonic() + self._retry_after_s
        if not self._down:  # once per outage: a dead Redis must not flood the log
            self._down = True
            CACHE_AVAILABLE.set(0)
            _log.warning(
                "product_cache_unavailable",
                operation=operation,
                error=type(error).__name__,
                detail=str(error),
                served_from="database",
            )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _product_to(product: Product) -> str:
    return json.dumps(
        [
            product.id,
            product.sku,
            product.name,
            product.description,
            product.category_id,
            product.price.amount,
            product.price.currency,
            product.available,
            product.reserved,
            product.low_stock_threshold,
            product.create_time.isoformat(),
            product.update_time.isoformat(),
            product.version,
            product.archived,
        ],
        separators=(",", ":"),
    )


def _product_from(raw: bytes) -> Product:
    (
        id_,
        sku,
        name,
        description,
        category_id,
        amount,
        currency,
        available,
        reserved,
        threshold,
        created,
        updated,
        version,
        archived,
    ) = json.loads(raw)
    return Product(
        id=id_,
        sku=sku,
        name=name,
        description=description,
        category_id=category_id,
        price=Money(amount, currency),
        available=available,
        reserved=reserved,
        low_stock_threshold=threshold,
        create_time=datetime.fromisoformat(created),
        update_time=datetime.fromisoformat(updated),
        version=version,
        archived=archived,
    )


def _page_to(page: CategoryPage) -> str:
    categories, token = page
    rows = [[c.id, c.name, c.slug, c.parent_id, c.create_time.isoformat()] for c in categories]
    return json.dumps([rows, token], separators=(",", ":"))


def _page_from(raw: bytes) -> CategoryPage:
    rows, token = json.loads(raw)
    return (
        [Category(i, n, s, p, datetime.fromisoformat(t)) for i, n, s, p, t in rows],
        token,
    )
