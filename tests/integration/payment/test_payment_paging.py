"""AIP-158 paging of ListOrders: sizes coerced, tokens bound to the filter, no order seen twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common.errors import InvalidArgument
from payment_svc import domain
from payment_svc.domain import Caller, CardBrand, CardOnFile, RequestedItem
from payment_svc.service import Payments
from payment_svc.store import PaymentStore

CARD = CardOnFile("tok", CardBrand.VISA, "4242", 12, 2099, "Ada Lovelace")
ADMIN = Caller("admin", is_admin=True)
START = datetime(2026, 12, 1, tzinfo=UTC)


async def placed(store: PaymentStore, user_id: str, count: int, offset: int = 0) -> list[str]:
    """Orders stored directly (no saga): listing reads them the same, at a fraction of the cost."""
    ids = []
    async with store.unit_of_work() as uow:
        for index in range(offset, offset + count):
            order = domain.new_order(
                str(uuid.uuid4()),
                str(uuid.uuid4()),
                user_id,
                [RequestedItem("p-1", 1)],
                CARD,
                START + timedelta(seconds=index),
            )
            await uow.add_order(order, CARD.token)
            ids.append(order.id)
    return ids


async def test_a_page_size_of_1000_returns_100_orders_and_a_token(
    payments: Payments, store: PaymentStore
) -> None:
    caller = Caller(f"user-{uuid.uuid4().hex[:8]}")
    await placed(store, caller.user_id, 101)

    page, token = await payments.list_orders(caller, "", 1000, "")

    assert len(page) == 100
    assert token


@pytest.mark.parametrize("size", [None, 0])
async def test_an_absent_or_zero_page_size_means_20(
    payments: Payments, store: PaymentStore, size: int | None
) -> None:
    caller = Caller(f"user-{uuid.uuid4().hex[:8]}")
    await placed(store, caller.user_id, 21)

    page, _ = await payments.list_orders(caller, "", size, "")

    assert len(page) == 20


async def test_a_negative_page_size_is_refused_naming_page_size(payments: Payments) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await payments.list_orders(Caller("someone"), "", -1, "")

    assert refused.value.field == "page_size"


async def test_a_token_replayed_with_another_user_filter_is_refused(
    payments: Payments, store: PaymentStore
) -> None:
    owner = f"user-{uuid.uuid4().hex[:8]}"
    await placed(store, owner, 3)
    _, token = await payments.list_orders(ADMIN, owner, 1, "")

    with pytest.raises(InvalidArgument) as refused:
        await payments.list_orders(ADMIN, "-", 1, token)

    assert refused.value.field == "page_token"


async def test_paging_returns_every_order_once_while_new_ones_arrive(
    payments: Payments, store: PaymentStore
) -> None:
    caller = Caller(f"user-{uuid.uuid4().hex[:8]}")
    existing = await placed(store, caller.user_id, 7)
    seen: list[str] = []
    token = ""
    arrivals = 0

    while True:
        page, token = await payments.list_orders(caller, "", 3, token)
        seen.extend(order.id for order in page)
        if not token:
            break
        # Newer orders land before the cursor (newest first): never on a later page.
        arrivals += 1
        await placed(store, caller.user_id, 1, offset=100 + arrivals)

    assert sorted(seen) == sorted(existing)
    assert len(seen) == len(set(seen))
