"""The "bought together" ranking's rules, on plain values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.errors import InvalidArgument
from product_svc import domain
from product_svc.domain import CoPurchase, RecommendationSettings
from tests.unit.product.test_product_domain import product

SETTINGS = RecommendationSettings()


def test_a_basket_is_its_distinct_products_and_every_ordered_pair_of_them() -> None:
    basket = domain.basket("o-1", ["b", "a", "b", "c"])

    assert basket == ("a", "b", "c")
    assert domain.basket_pairs(basket) == [
        ("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b"),
    ]  # fmt: skip


def test_a_bulk_basket_counts_no_pairs_and_a_nameless_item_is_refused() -> None:
    bulk = tuple(f"p{i:03d}" for i in range(domain.MAX_BASKET_FOR_PAIRS + 1))

    assert domain.basket_pairs(bulk) == []
    assert len(domain.basket_pairs(bulk[:-1])) == 50 * 49
    with pytest.raises(InvalidArgument):
        domain.basket("o-1", ["a", ""])
    with pytest.raises(InvalidArgument):
        domain.basket("", ["a"])


def test_a_best_seller_bought_with_everything_ranks_below_a_real_partner() -> None:
    mug = product("mug", available=5)
    best_seller, saucer = product("best", available=5), product("saucer", available=5)
    # The best-seller shares more orders with the mug than the saucer does, but it is in
    # 1000 orders; the saucer sells almost only with the mug.
    partners = [CoPurchase(best_seller, 12, 1000), CoPurchase(saucer, 8, 10)]

    ranked = domain.rank_bought_together(mug, 40, partners, SETTINGS, 5)

    assert [p.id for p in ranked] == ["saucer", "best"]


def test_a_pair_below_the_minimum_support_scores_nothing_however_rare() -> None:
    assert domain.co_purchase_score(1, 1, 1, SETTINGS) == 0.0
    assert domain.co_purchase_score(2, 2, 2, SETTINGS) > 0.0
    # Damping: the same cosine on more evidence scores higher.
    assert domain.co_purchase_score(20, 20, 20, SETTINGS) > domain.co_purchase_score(
        2, 2, 2, SETTINGS
    )


def test_never_the_product_itself_nor_an_archived_or_sold_out_one() -> None:
    mug = product("mug", available=5)
    archived = replace(product("old", available=5), archived=True)
    sold_out = product("gone", available=0)
    fine = product("tea", available=1)
    partners = [CoPurchase(p, 5, 5) for p in (mug, archived, sold_out, fine)]

    assert [p.id for p in domain.rank_bought_together(mug, 5, partners, SETTINGS, 5)] == ["tea"]
    filled = domain.fill_recommendations(mug, [fine], [[mug, archived, fine, sold_out]], 5)
    assert [p.id for p in filled] == ["tea"]


def test_too_few_partners_are_topped_up_from_each_fallback_in_turn_to_the_limit() -> None:
    mug = product("mug", available=5)
    tea, a, b, c = (product(i, available=1) for i in ("tea", "a", "b", "c"))

    filled = domain.fill_recommendations(mug, [tea], [[a, tea], [b, a, c]], 3)

    assert [p.id for p in filled] == ["tea", "a", "b"]


@pytest.mark.parametrize(("requested", "count"), [(None, 10), (0, 10), (3, 3), (20, 20), (99, 20)])
def test_the_count_defaults_to_10_and_is_capped_at_20(requested: int | None, count: int) -> None:
    assert domain.recommendation_count(requested) == count


def test_a_negative_count_is_refused_on_page_size() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.recommendation_count(-1)
    assert error.value.field == "page_size"
