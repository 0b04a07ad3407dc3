"""A purchase history with planted "bought together" groups, and how well they are found.

The generator plants disjoint groups of products that shoppers buy together (each order of a
group takes a few of its members), drowns them in noise drawn from a Zipf popularity (a few
best-sellers in many baskets, a long tail of rare products), and keeps the planted partners
of every grouped product as the truth. ``measure`` feeds the orders through the product
service's own use case (the one its order-events consumer runs) and scores the
recommendations: precision@k (how many of the top k are planted partners) and recall@k (how
many of a product's planted partners are in its top k), averaged over the grouped products.
Used by the quality test (tests/integration/product/test_product_recommendations.py) and by
bench/recommendations.py.
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass

from common.inbox import Delivery
from common.money import Money
from product_svc.domain import NewProduct
from product_svc.service import Catalog


@dataclass(frozen=True)
class HistoryShape:
    """What to generate; the defaults are the quality test's (small, quick on both backends)."""

    products: int = 300
    groups: int = 30
    min_group: int = 6
    max_group: int = 9
    orders: int = 2000
    # Share of orders that take part of a planted group (the others are noise only).
    grouped_share: float = 0.5
    # Members of a group one order takes, and noise products added to any order.
    min_taken: int = 2
    max_taken: int = 4
    max_noise: int = 3
    # Zipf exponent of the noise's popularity: higher means stronger best-sellers.
    zipf: float = 1.1
    seed: int = 15


@dataclass(frozen=True)
class History:
    """Orders as lists of product indices, and each grouped product's planted partners."""

    orders: list[list[int]]
    partners: dict[int, frozenset[int]]


@dataclass(frozen=True)
class Quality:
    precision: float
    recall: float
    evaluated: int  # grouped products scored
    order_lines: int


def generate(shape: HistoryShape) -> History:
    rng = random.Random(shape.seed)
    indices = list(range(shape.products))
    rng.shuffle(indices)
    groups: list[list[int]] = []
    cursor = 0
    for _ in range(shape.groups):
        size = rng.randint(shape.min_group, shape.max_group)
        if cursor + size > len(indices):
            break
        groups.append(indices[cursor : cursor + size])
        cursor += size
    # Popularity independent of the groups: a best-seller may be grouped or not.
    popularity = list(range(shape.products))
    rng.shuffle(popularity)
    weights = [1.0 / (rank + 1) ** shape.zipf for rank in range(shape.products)]
    # Cumulated once: rng.choices would otherwise redo it per order (O(products) each).
    cumulative = list(itertools.accumulate(weights))
    orders: list[list[int]] = []
    for _ in range(shape.orders):
        basket: set[int] = set()
        if groups and rng.random() < shape.grouped_share:
            group = rng.choice(groups)
            taken = rng.randint(shape.min_taken, min(shape.max_taken, len(group)))
            basket.update(rng.sample(group, taken))
            noise = rng.randint(0, shape.max_noise)
        else:
            noise = rng.randint(1, shape.max_noise + 1)
        basket.update(rng.choices(popularity, cum_weights=cumulative, k=noise))
        orders.append(sorted(basket))
    partners = {
        member: frozenset(other for other in group if other != member)
        for group in groups
        for member in group
    }
    return History(orders, partners)


async def load(catalog: Catalog, shape: HistoryShape) -> list[str]:
    """Create the shape's products (in stock, one category); their ids by index."""
    slug = f"history-{uuid.uuid4().hex[:12]}"
    category = await catalog.create_category("History", slug, "")
    created = await catalog.insert_products(
        [
            NewProduct(
                sku=f"H-{slug}-{index}",
                name=f"Product {index}",
                description="Generated for the recommendation quality measure.",
                category_id=category.id,
                price=Money(1000 + index, "USD"),
                stock=100,
                low_stock_threshold=0,
            )
            for index in range(shape.products)
        ]
    )
    return [product.id for product in created]


async def measure(catalog: Catalog, shape: HistoryShape, *, k: int = 5) -> Quality:
    """Generate, count every order through the consumer's use case, score the top ``k``."""
    history = generate(shape)
    ids = await load(catalog, shape)
    for number, order in enumerate(history.orders):
        await catalog.count_confirmed_order(
            f"order-{number}", [ids[i] for i in order], Delivery("quality", uuid.uuid4().hex)
        )
    by_id = {product_id: index for index, product_id in enumerate(ids)}
    precisions: list[float] = []
    recalls: list[float] = []
    for member, planted in history.partners.items():
        # .get: on a shared database the shop-wide fallback may list other tests' products.
        top = [by_id.get(p.id, -1) for p in await catalog.recommendations(ids[member], k)]
        hits = len(set(top) & planted)
        precisions.append(hits / k)
        recalls.append(hits / len(planted))
    return Quality(
        precision=sum(precisions) / len(precisions),
        recall=sum(recalls) / len(recalls),
        evaluated=len(precisions),
        order_lines=sum(len(order) for order in history.orders),
    )
