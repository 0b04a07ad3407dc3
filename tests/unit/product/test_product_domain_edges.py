"""The exact edges of the catalog's stock and validation rules (found by ``make mutants``).

Each test pins a value right at a limit: the last unit of stock can be reserved, the largest
stock and adjustment are accepted, the longest name, sku, slug and description are fine. A
mutant moving any of these edges by one (``<`` for ``<=``) fails one of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.money import Money
from product_svc import domain
from product_svc.domain import MAX_STOCK, CoPurchase, RecommendationSettings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def product(product_id: str = "p-1", **changes: object) -> domain.Product:
    values: dict[str, object] = {
        "id": product_id,
        "sku": f"SKU-{product_id}",
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


# ---- stock -----------------------------------------------------------------------------------


def test_the_last_units_in_stock_can_be_reserved() -> None:
    opened = domain.Reservation.open("order-1", NOW, timedelta(minutes=5))

    placement = domain.place_reservation(
        opened, [domain.ReservationLine("p-1", 3)], {"p-1": product(available=3)}
    )

    [item] = placement.reservation.items
    assert (item.product_id, item.sku, item.name, item.quantity, item.unit_price) == (
        "p-1",
        "SKU-p-1",
        "Sencha",
        3,
        Money(1250, "EUR"),
    )


def test_products_taken_to_low_stock_are_reported_as_they_are_after_in_id_order() -> None:
    opened = domain.Reservation.open("order-1", NOW, timedelta(minutes=5))
    products = {
        "p-2": product("p-2", available=4, reserved=1, low_stock_threshold=2),
        "p-1": product("p-1", available=5, reserved=0, low_stock_threshold=3),
    }

    placement = domain.place_reservation(
        opened, [domain.ReservationLine("p-2", 3), domain.ReservationLine("p-1", 2)], products
    )

    assert [(p.id, p.available, p.reserved) for p in placement.low_stock] == [
        ("p-1", 3, 2),
        ("p-2", 1, 4),
    ]
    assert [m.product_id for m in placement.moves] == ["p-1", "p-2"]


def test_the_largest_reservation_request_is_accepted() -> None:
    lines = domain.reservation_lines(
        "o" * 128, [(f"p-{i}", 1) for i in range(99)] + [("p", MAX_STOCK)]
    )

    assert len(lines) == 100
    assert lines[-1] == domain.ReservationLine("p", MAX_STOCK)


def test_a_missing_product_of_a_reservation_is_named_in_the_refusal() -> None:
    opened = domain.Reservation.open("order-1", NOW, timedelta(minutes=5))

    with pytest.raises(NotFound) as refused:
        domain.place_reservation(opened, [domain.ReservationLine("p-9", 1)], {})

    assert "p-9" in refused.value.message


def test_a_new_product_starts_with_its_stock_available_and_nothing_reserved() -> None:
    new = domain.NewProduct(
        sku="SKU-9",
        name="Gyokuro",
        description="Shaded green tea.",
        category_id="c-2",
        price=Money(2400, "EUR"),
        stock=7,
        low_stock_threshold=2,
    )

    created = domain.new_product(new, NOW)

    assert (created.available, created.reserved, created.low_stock_threshold) == (7, 0, 2)
    assert (created.sku, created.name, created.description) == (
        "SKU-9",
        "Gyokuro",
        "Shaded green tea.",
    )
    assert (created.category_id, created.price) == ("c-2", Money(2400, "EUR"))
    assert (created.create_time, created.update_time, created.version) == (NOW, NOW, 1)
    assert created.etag == "v1"
    assert not created.archived
    assert len(created.id) == 32
    assert created.id != domain.new_product(new, NOW).id


@pytest.mark.parametrize("value", [0, MAX_STOCK])
def test_stock_from_zero_to_the_maximum_is_accepted(value: int) -> None:
    assert domain.valid_count(value, field_name="stock") == value


@pytest.mark.parametrize("delta", [MAX_STOCK, -MAX_STOCK])
def test_an_adjustment_of_exactly_the_maximum_is_accepted(delta: int) -> None:
    assert domain.valid_adjustment(delta, " audit ") == (delta, "audit")


def test_stock_can_be_raised_to_exactly_the_maximum() -> None:
    assert domain.adjusted_stock(MAX_STOCK - 1, 1) == MAX_STOCK
    assert domain.adjusted_stock(3, -3) == 0
    with pytest.raises(FailedPrecondition):
        domain.adjusted_stock(3, -4)


# ---- validation edges ------------------------------------------------------------------------


def test_the_longest_values_are_accepted_and_trimmed() -> None:
    assert domain.valid_adjustment(1, "r" * 500) == (1, "r" * 500)
    assert domain.valid_description("d" * 10_000) == "d" * 10_000
    assert domain.valid_sku(f" {'S' * 64} ") == "S" * 64
    assert domain.valid_slug("s" * 100) == "s" * 100


@pytest.mark.parametrize("slug", ["", "s" * 101, "tea--pots", "-tea"])
def test_a_slug_must_be_short_lower_case_words_joined_by_single_hyphens(slug: str) -> None:
    with pytest.raises(InvalidArgument):
        domain.valid_slug(slug)


@pytest.mark.parametrize("sku", ["S" * 65, "-SKU", "SK U"])
def test_a_sku_must_be_short_and_start_with_a_letter_or_digit(sku: str) -> None:
    with pytest.raises(InvalidArgument):
        domain.valid_sku(sku)


def test_an_unknown_order_by_lists_the_choices() -> None:
    with pytest.raises(InvalidArgument) as refused:
        domain.product_query(
            q="", category_id="", min_price=None, max_price=None, in_stock=None, order_by="x"
        )

    assert all(choice.value in refused.value.message for choice in domain.OrderBy)


# ---- recommendations -------------------------------------------------------------------------

SETTINGS = RecommendationSettings(min_co_purchases=2, shrinkage=5.0)


@pytest.mark.parametrize(("orders_a", "orders_b"), [(0, 4), (4, 0), (-1, 4), (4, -1)])
def test_a_pair_without_orders_on_either_side_scores_nothing(orders_a: int, orders_b: int) -> None:
    assert domain.co_purchase_score(3, orders_a, orders_b, SETTINGS) == 0.0


def test_a_pair_with_one_order_each_side_is_scored() -> None:
    # Cosine 2/sqrt(1*1) = 2, damped by 2 / (2 + 5).
    assert domain.co_purchase_score(2, 1, 1, SETTINGS) == pytest.approx(2 * 2 / 7)


def test_the_score_is_damped_while_a_pair_rests_on_few_orders() -> None:
    assert domain.co_purchase_score(5, 25, 25, SETTINGS) == pytest.approx(0.2 * 5 / 10)


def test_partners_with_equal_scores_rank_by_co_count_then_id() -> None:
    of = product("p-0")
    # Two partners tied on score and co-count, and one below the minimum support (dropped).
    partners = [
        CoPurchase(product("p-b"), together=2, orders=4),
        CoPurchase(product("p-a"), together=2, orders=4),
        CoPurchase(product("p-c"), together=1, orders=1),
    ]

    ranked = domain.rank_bought_together(of, 4, partners, SETTINGS, limit=5)

    assert [p.id for p in ranked] == ["p-a", "p-b"]


def test_a_higher_co_count_wins_a_tie_on_score() -> None:
    of = product("p-0")
    # 2 together, 4 x 1024 orders: 2/64 * 2/7; 3 together, 4 x 3969 orders: 3/126 * 3/8.
    # Both are 1/112 exactly (in floating point too), so the co-count decides.
    partners = [
        CoPurchase(product("p-a"), together=2, orders=1024),
        CoPurchase(product("p-z"), together=3, orders=3969),
    ]
    assert domain.co_purchase_score(2, 4, 1024, SETTINGS) == domain.co_purchase_score(
        3, 4, 3969, SETTINGS
    )

    ranked = domain.rank_bought_together(of, 4, partners, SETTINGS, limit=5)

    assert [p.id for p in ranked] == ["p-z", "p-a"]


def test_a_fallback_product_listed_twice_is_recommended_once() -> None:
    of = product("p-0")
    twice = product("p-1")

    filled = domain.fill_recommendations(of, [], [[twice, twice], [twice, product("p-2")]], 5)

    assert [p.id for p in filled] == ["p-1", "p-2"]
