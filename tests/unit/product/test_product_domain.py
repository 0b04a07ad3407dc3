"""The catalog's rules without a database: validation, search terms, orders, stock arithmetic."""

from __future__ import annotations

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from common.money import Money
from product_svc import domain
from product_svc.service import descendants


def field_of(error: pytest.ExceptionInfo[InvalidArgument]) -> str | None:
    return error.value.field


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_names_must_be_present_and_at_most_200_characters(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        domain.valid_name(name)

    assert field_of(refused) == "name"


def test_a_name_of_200_characters_is_fine_and_trimmed() -> None:
    assert domain.valid_name(f" {'x' * 200} ") == "x" * 200


@pytest.mark.parametrize(
    ("amount", "currency", "field"),
    [(-1, "USD", "price.amount"), (1, "usd", "price.currency"), (1, "ABC", "price.currency")],
)
def test_prices_are_non_negative_in_an_iso_4217_currency(
    amount: int, currency: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        domain.valid_money(amount, currency)

    assert field_of(refused) == field


def test_a_free_product_in_yen_is_a_valid_price() -> None:
    assert domain.valid_money(0, "JPY") == Money(0, "JPY")


@pytest.mark.parametrize("size", [0, -1, 101])
def test_page_size_outside_1_to_100_is_refused(size: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        domain.valid_page_size(size)

    assert field_of(refused) == "page_size"


def test_an_absent_page_size_is_twenty() -> None:
    assert domain.valid_page_size(None) == 20


def test_search_terms_are_lower_case_words_without_operators() -> None:
    assert domain.search_terms('USB-C "Cable" OR cable*') == ("usb", "c", "cable", "or")


def test_relevance_without_a_query_falls_back_to_newest_first() -> None:
    query = domain.product_query(
        q="", category_id="", min_price=None, max_price=None, in_stock=None, order_by="relevance"
    )

    assert query.order_by is domain.OrderBy.NEWEST


def test_a_query_defaults_to_relevance() -> None:
    query = domain.product_query(
        q="tea", category_id="", min_price=None, max_price=None, in_stock=None, order_by=""
    )

    assert query.order_by is domain.OrderBy.RELEVANCE


def test_different_filters_have_different_fingerprints() -> None:
    def fingerprint(**changes: object) -> str:
        fields: dict[str, object] = {
            "q": "tea",
            "category_id": "",
            "min_price": None,
            "max_price": None,
            "in_stock": None,
            "order_by": "",
        }
        return domain.product_query(**{**fields, **changes}).fingerprint()  # type: ignore[arg-type]

    assert fingerprint() == fingerprint()
    assert fingerprint() != fingerprint(max_price=100)
    assert fingerprint() != fingerprint(order_by="price")
    assert fingerprint(in_stock=None) != fingerprint(in_stock=False)


def test_stock_never_goes_below_zero() -> None:
    with pytest.raises(FailedPrecondition):
        domain.adjusted_stock(3, -4)

    assert domain.adjusted_stock(3, -3) == 0


@pytest.mark.parametrize(
    ("before", "after", "threshold", "crossed"),
    [(6, 5, 5, True), (5, 4, 5, False), (10, 0, 0, True), (1, 2, 5, False)],
)
def test_low_stock_is_announced_once_when_the_threshold_is_crossed(
    before: int, after: int, threshold: int, crossed: bool
) -> None:
    assert domain.crossed_low_stock(before, after, threshold) is crossed


def test_a_reservation_lists_each_product_once_with_a_positive_quantity() -> None:
    with pytest.raises(InvalidArgument) as twice:
        domain.reservation_lines("o", [("a", 1), ("a", 1)])
    with pytest.raises(InvalidArgument) as zero:
        domain.reservation_lines("o", [("a", 0)])

    assert field_of(twice) == "items[1].product_id"
    assert field_of(zero) == "items[0].quantity"


def test_a_category_listing_covers_the_whole_subtree() -> None:
    parents = {"root": "", "a": "root", "b": "a", "c": "root", "other": ""}

    assert sorted(descendants(parents, "root")) == ["a", "b", "c", "root"]
    assert descendants(parents, "b") == ("b",)
