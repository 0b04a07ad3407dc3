"""The catalog's rules without a database: validation, search, stock, the reservation states."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from common.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from common.money import Money
from product_svc import domain
from product_svc.domain import descendants


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


def test_different_filters_bind_page_tokens_differently() -> None:
    def fingerprint(**changes: object) -> dict[str, object]:
        fields: dict[str, object] = {
            "q": "tea",
            "category_id": "",
            "min_price": None,
            "max_price": None,
            "in_stock": None,
            "order_by": "",
        }
        return domain.product_query(**{**fields, **changes}).filters()  # type: ignore[arg-type]

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


# Reservations: the state machine and what each step does to stock ---------------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ACTIVE, COMMITTED = domain.ReservationStatus.ACTIVE, domain.ReservationStatus.COMMITTED
RELEASED, EXPIRED = domain.ReservationStatus.RELEASED, domain.ReservationStatus.EXPIRED


def product(product_id: str, *, available: int, threshold: int = 0) -> domain.Product:
    return domain.Product(
        id=product_id,
        sku=f"SKU-{product_id}",
        name=f"Product {product_id}",
        description="",
        category_id="c",
        price=Money(500, "USD"),
        available=available,
        reserved=0,
        low_stock_threshold=threshold,
        create_time=NOW,
        update_time=NOW,
        version=1,
    )


def placed(*lines: tuple[str, int], stock: int = 10) -> domain.Placement:
    products = {product_id: product(product_id, available=stock) for product_id, _ in lines}
    opened = domain.Reservation.open("o-1", NOW, timedelta(minutes=15))
    return domain.place_reservation(opened, domain.reservation_lines("o-1", list(lines)), products)


def reservation(status: domain.ReservationStatus) -> domain.Reservation:
    held = placed(("b", 2), ("a", 1)).reservation
    return domain.Reservation(held.order_id, held.items, status, held.expire_time)


@pytest.mark.parametrize(
    ("source", "targets"),
    [
        (ACTIVE, {COMMITTED, RELEASED, EXPIRED}),
        (COMMITTED, {RELEASED}),
        (RELEASED, set()),
        (EXPIRED, set()),
    ],
)
def test_a_reservation_moves_only_along_its_transition_table(
    source: domain.ReservationStatus, targets: set[domain.ReservationStatus]
) -> None:
    allowed = {target for target in domain.ReservationStatus if domain.can_move(source, target)}

    assert allowed == targets


def test_placing_holds_every_line_at_the_current_price_until_the_ttl() -> None:
    placement = placed(("b", 2), ("a", 1))

    held = placement.reservation
    assert (held.status, held.expire_time) == (ACTIVE, NOW + timedelta(minutes=15))
    assert [(i.product_id, i.quantity, i.unit_price) for i in held.items] == [
        ("b", 2, Money(500, "USD")),
        ("a", 1, Money(500, "USD")),
    ]
    # Moves come in product-id order, the order every unit of work locks rows in.
    assert placement.moves == (
        domain.StockMove("a", available=-1, reserved=1),
        domain.StockMove("b", available=-2, reserved=2),
    )


def test_one_short_line_refuses_the_whole_order() -> None:
    products = {"a": product("a", available=5), "b": product("b", available=1)}
    opened = domain.Reservation.open("o", NOW, timedelta(minutes=1))

    with pytest.raises(FailedPrecondition) as short:
        domain.place_reservation(
            opened, domain.reservation_lines("o", [("a", 2), ("b", 2)]), products
        )

    assert short.value.reason == "OUT_OF_STOCK"
    assert "b" in short.value.message


@pytest.mark.parametrize("archived", [True, False])
def test_an_unknown_or_archived_product_cannot_be_placed(archived: bool) -> None:
    products = {"a": replace(product("a", available=5), archived=True)} if archived else {}
    opened = domain.Reservation.open("o", NOW, timedelta(minutes=1))

    with pytest.raises(NotFound) as missing:
        domain.place_reservation(opened, domain.reservation_lines("o", [("a", 1)]), products)

    assert missing.value.field == "items.product_id"


def test_placing_reports_the_products_it_takes_to_low_stock() -> None:
    products = {"a": product("a", available=6, threshold=5), "b": product("b", available=9)}
    opened = domain.Reservation.open("o", NOW, timedelta(minutes=1))

    placement = domain.place_reservation(
        opened, domain.reservation_lines("o", [("a", 1), ("b", 1)]), products
    )

    assert [(p.id, p.available) for p in placement.low_stock] == [("a", 5)]


def test_committing_sells_the_held_units() -> None:
    settlement = reservation(ACTIVE).commit()

    assert settlement.after.status is COMMITTED
    assert settlement.moves == (
        domain.StockMove("a", available=0, reserved=-1),
        domain.StockMove("b", available=0, reserved=-2),
    )
    assert not settlement.restocked


def test_releasing_a_hold_gives_the_units_back() -> None:
    settlement = reservation(ACTIVE).release()

    assert settlement.after.status is RELEASED
    assert settlement.moves[0] == domain.StockMove("a", available=1, reserved=-1)
    assert not settlement.restocked


def test_releasing_after_a_commit_restocks_the_sold_units() -> None:
    settlement = reservation(COMMITTED).release()

    assert settlement.after.status is RELEASED
    assert settlement.restocked
    assert settlement.moves == (
        domain.StockMove("a", available=1, reserved=0),
        domain.StockMove("b", available=2, reserved=0),
    )


@pytest.mark.parametrize(
    ("status", "step"),
    [(COMMITTED, "commit"), (RELEASED, "release"), (EXPIRED, "release")],
)
def test_a_repeated_step_changes_nothing(status: domain.ReservationStatus, step: str) -> None:
    settlement = getattr(reservation(status), step)()

    assert not settlement.changed
    assert settlement.moves == ()
    assert settlement.after.status is status


@pytest.mark.parametrize("status", [RELEASED, EXPIRED])
def test_a_released_or_expired_reservation_cannot_be_committed(
    status: domain.ReservationStatus,
) -> None:
    with pytest.raises(FailedPrecondition):
        reservation(status).commit()


def test_only_an_active_reservation_past_its_expiry_expires() -> None:
    active = reservation(ACTIVE)

    with pytest.raises(FailedPrecondition):
        active.expire(active.expire_time - timedelta(microseconds=1))
    with pytest.raises(FailedPrecondition):
        reservation(COMMITTED).expire(active.expire_time)
    expired = active.expire(active.expire_time)

    assert expired.after.status is EXPIRED
    assert expired.moves[1] == domain.StockMove("b", available=2, reserved=-2)


def test_a_release_before_any_reservation_holds_nothing_and_answers_a_late_reserve() -> None:
    nothing = domain.Reservation.released_unreserved("o", NOW)

    assert nothing.repeated(domain.reservation_lines("o", [("a", 1)])) == nothing
    assert nothing.release().changed is False


def test_reserving_an_order_again_with_other_items_is_refused() -> None:
    held = reservation(ACTIVE)

    assert held.repeated(domain.reservation_lines("o-1", [("a", 1), ("b", 2)])) is held
    with pytest.raises(AlreadyExists):
        held.repeated(domain.reservation_lines("o-1", [("a", 1)]))


# Products: versions, etags, adjustments ----------------------------------------------------


def test_an_adjustment_never_takes_stock_below_zero_and_makes_a_new_version() -> None:
    mug = product("m", available=3)

    with pytest.raises(FailedPrecondition) as refused:
        mug.adjusted(-4, NOW)
    emptied = mug.adjusted(-3, NOW + timedelta(seconds=1))

    assert refused.value.field == "delta"
    assert (emptied.available, emptied.version, emptied.etag) == (0, 2, "v2")
    assert emptied.update_time == NOW + timedelta(seconds=1)


def test_an_update_that_sets_nothing_new_keeps_the_version() -> None:
    mug = product("m", available=3)

    assert mug.with_changes(domain.ProductChanges(sku=mug.sku), NOW) is mug
    assert mug.with_changes(domain.ProductChanges(name="Cup"), NOW).version == 2


def test_a_stale_etag_is_aborted_and_no_etag_is_no_check() -> None:
    mug = product("m", available=3)

    mug.check_etag("", field_name="etag")
    mug.check_etag("v1", field_name="etag")
    with pytest.raises(Aborted):
        mug.check_etag("v0", field_name="etag")


# Found by `make mutants`: the search's bounds, each refusal naming its field.


def _query(**changes: object) -> domain.ProductQuery:
    fields: dict[str, object] = {
        "q": "",
        "category_id": "c-1",
        "min_price": None,
        "max_price": None,
        "in_stock": None,
        "order_by": "",
    }
    return domain.product_query(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_price": -1}, "min_price"),
        ({"max_price": -1}, "max_price"),
        ({"min_price": 5, "max_price": 4}, "min_price"),
        ({"order_by": "cheapest"}, "order_by"),
        ({"q": "x" * (domain.MAX_QUERY_LENGTH + 1)}, "q"),
        ({"q": " ".join(f"w{i}" for i in range(domain.MAX_QUERY_TERMS + 1))}, "q"),
    ],
)
def test_a_search_out_of_bounds_is_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _query(**changes)

    assert refused.value.field == field


def test_a_search_at_its_bounds_is_accepted_with_every_filter_kept() -> None:
    query = _query(
        q=" ".join(f"w{i}" for i in range(domain.MAX_QUERY_TERMS)),
        min_price=0,
        max_price=0,
        in_stock=True,
        order_by="price",
    )

    assert len(query.terms) == domain.MAX_QUERY_TERMS
    assert (query.category_id, query.min_price, query.max_price, query.in_stock) == (
        "c-1",
        0,
        0,
        True,
    )
    assert query.order_by is domain.OrderBy.PRICE
    assert domain.search_terms("x" * domain.MAX_QUERY_LENGTH) == ("x" * domain.MAX_QUERY_LENGTH,)
