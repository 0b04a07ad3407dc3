"""Stock reservations for checkout: all or nothing, idempotent per order, never oversold."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import select

from common.db import Database
from common.outbox import Outbox
from common.pagination import PageTokens
from microcommerce.product.v1 import inventory_service_pb2 as inv
from microcommerce.product.v1 import product_service_pb2 as pb
from product_svc.service import Catalog
from product_svc.store import CatalogStore
from tests.integration.product.conftest import Clients
from tests.integration.product.product_helpers import reason_of, violated_field
from tests.support.processes import wait_for


def reserve_request(order_id: str, *items: tuple[str, int]) -> inv.ReserveStockRequest:
    return inv.ReserveStockRequest(
        order_id=order_id,
        items=[inv.ReserveStockRequest.Item(product_id=p, quantity=q) for p, q in items],
    )


def order() -> str:
    return f"order-{uuid.uuid4().hex}"


async def stock(clients: Clients, product_id: str) -> tuple[int, int]:
    product = await clients.products.GetProduct(pb.GetProductRequest(id=product_id))
    return product.stock.available, product.stock.reserved


async def events_about(database: Database, outbox: Outbox, subject: str) -> list[str]:
    async with database.session() as session:
        rows = await session.scalars(
            select(outbox.table.c.payload)
            .where(outbox.table.c.key == subject)
            .order_by(outbox.table.c.seq)
        )
        return [json.loads(payload)["type"].rsplit(".", 1)[-1] for payload in rows]


async def test_a_reservation_holds_stock_at_the_current_price(clients: Clients) -> None:
    category = await clients.category()
    mug = await clients.product(category.id, stock=10, amount=900, name="Mug")
    order_id = order()

    reservation = await clients.inventory.ReserveStock(
        reserve_request(order_id, (mug.id, 3)), metadata=clients.service
    )

    assert reservation.status == inv.RESERVATION_STATUS_ACTIVE
    assert [(i.product_id, i.sku, i.name, i.quantity) for i in reservation.items] == [
        (mug.id, mug.sku, "Mug", 3)
    ]
    assert reservation.items[0].unit_price.amount == 900
    assert reservation.expire_time.seconds > 0
    assert await stock(clients, mug.id) == (7, 3)


async def test_one_short_item_reserves_nothing_and_names_the_product(clients: Clients) -> None:
    category = await clients.category()
    plenty = await clients.product(category.id, stock=10)
    scarce = await clients.product(category.id, stock=1)

    with pytest.raises(grpc.aio.AioRpcError) as short:
        await clients.inventory.ReserveStock(
            reserve_request(order(), (plenty.id, 2), (scarce.id, 2)), metadata=clients.service
        )

    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(short.value) == "OUT_OF_STOCK"
    assert scarce.id in (short.value.details() or "")
    assert await stock(clients, plenty.id) == (10, 0)
    assert await stock(clients, scarce.id) == (1, 0)


async def test_an_unknown_or_archived_product_cannot_be_reserved(clients: Clients) -> None:
    category = await clients.category()
    archived = await clients.product(category.id)
    await clients.products.DeleteProduct(
        pb.DeleteProductRequest(id=archived.id), metadata=clients.admin
    )

    for product_id in (archived.id, "no-such-product"):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await clients.inventory.ReserveStock(
                reserve_request(order(), (product_id, 1)), metadata=clients.service
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert product_id in (missing.value.details() or "")


async def test_reserving_the_same_order_twice_holds_the_stock_once(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    order_id = order()

    first = await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 2)), metadata=clients.service
    )
    again = await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 2)), metadata=clients.service
    )
    with pytest.raises(grpc.aio.AioRpcError) as different:
        await clients.inventory.ReserveStock(
            reserve_request(order_id, (product.id, 1)), metadata=clients.service
        )

    assert again == first
    assert different.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await stock(clients, product.id) == (3, 2)


async def test_committing_sells_the_units_and_is_idempotent(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    order_id = order()
    await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 2)), metadata=clients.service
    )

    committed = await clients.inventory.CommitReservation(
        inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
    )
    again = await clients.inventory.CommitReservation(
        inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
    )

    assert committed.status == again.status == inv.RESERVATION_STATUS_COMMITTED
    assert await stock(clients, product.id) == (3, 0)


async def test_releasing_returns_the_units_and_a_released_order_cannot_commit(
    clients: Clients,
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    order_id = order()
    await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 4)), metadata=clients.service
    )

    released = await clients.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(order_id=order_id), metadata=clients.service
    )
    again = await clients.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(order_id=order_id), metadata=clients.service
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.inventory.CommitReservation(
            inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
        )

    assert released.status == again.status == inv.RESERVATION_STATUS_RELEASED
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await stock(clients, product.id) == (5, 0)


async def test_releasing_a_committed_order_restocks_it(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    order_id = order()
    await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 2)), metadata=clients.service
    )
    await clients.inventory.CommitReservation(
        inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
    )

    released = await clients.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(order_id=order_id), metadata=clients.service
    )

    assert released.status == inv.RESERVATION_STATUS_RELEASED
    assert await stock(clients, product.id) == (5, 0)


async def test_a_release_before_the_reservation_makes_a_late_reserve_hold_nothing(
    clients: Clients,
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    order_id = order()

    released = await clients.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(order_id=order_id), metadata=clients.service
    )
    late = await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 2)), metadata=clients.service
    )

    assert released.status == late.status == inv.RESERVATION_STATUS_RELEASED
    assert list(late.items) == []
    assert await stock(clients, product.id) == (5, 0)


async def test_only_services_may_reserve(clients: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await clients.inventory.ReserveStock(
            reserve_request(order(), ("x", 1)), metadata=clients.admin
        )

    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (reserve_request("", ("p", 1)), "order_id"),
        (reserve_request("o"), "items"),
        (reserve_request("o", ("p", 0)), "items[0].quantity"),
        (reserve_request("o", ("p", 1), ("p", 2)), "items[1].product_id"),
    ],
)
async def test_bad_reservations_are_refused_naming_the_field(
    clients: Clients, request_: inv.ReserveStockRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.inventory.ReserveStock(request_, metadata=clients.service)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == field


async def test_two_hundred_concurrent_reservations_never_oversell_fifty_units(
    clients: Clients,
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=50)

    async def attempt() -> str:
        try:
            await clients.inventory.ReserveStock(
                reserve_request(order(), (product.id, 1)), metadata=clients.service
            )
        except grpc.aio.AioRpcError as error:
            return reason_of(error) or str(error.code())
        return "RESERVED"

    outcomes = await asyncio.gather(*(attempt() for _ in range(200)))

    assert sorted(set(outcomes)) == ["OUT_OF_STOCK", "RESERVED"]
    assert outcomes.count("RESERVED") == 50
    assert await stock(clients, product.id) == (0, 50)


async def test_the_sweeper_releases_a_reservation_nobody_settled_in_time(
    clients: Clients, product_db: Database, outbox: Outbox
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    hasty = Catalog(CatalogStore(product_db, outbox), PageTokens(b"k" * 32), reservation_ttl_s=0.05)
    order_id = order()
    await hasty.reserve(order_id, [(product.id, 2)])
    sweeper = asyncio.create_task(hasty.sweep_expired(0.02))
    try:
        returned = await wait_for(lambda: _stock_is(clients, product.id, (5, 0)), within=10)
    finally:
        sweeper.cancel()

    assert returned
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.inventory.CommitReservation(
            inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await events_about(product_db, outbox, order_id) == ["reserved", "released"]


async def _stock_is(clients: Clients, product_id: str, expected: tuple[int, int]) -> bool:
    return await stock(clients, product_id) == expected


async def test_every_stock_move_records_its_event_with_the_change(
    clients: Clients, product_db: Database, outbox: Outbox
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=8, low_stock_threshold=5)
    order_id = order()

    await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 4)), metadata=clients.service
    )
    await clients.inventory.CommitReservation(
        inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await clients.inventory.ReserveStock(
            reserve_request(f"{order_id}-2", (product.id, 99)), metadata=clients.service
        )
    await clients.products.AdjustStock(
        pb.AdjustStockRequest(id=product.id, delta=-1, reason="damaged"), metadata=clients.admin
    )

    assert await events_about(product_db, outbox, order_id) == ["reserved", "committed"]
    assert await events_about(product_db, outbox, f"{order_id}-2") == []
    # 8 -> 4 crossed the threshold of 5 (once); 4 -> 3 was already below it.
    assert await events_about(product_db, outbox, product.id) == ["low_stock", "adjusted"]


async def test_orders_naming_the_same_products_in_opposite_orders_all_settle(
    clients: Clients,
) -> None:
    category = await clients.category()
    first = await clients.product(category.id, stock=100)
    second = await clients.product(category.id, stock=100)

    async def checkout(index: int) -> str:
        items = [(first.id, 1), (second.id, 1)]
        order_id = order()
        await clients.inventory.ReserveStock(
            reserve_request(order_id, *(items if index % 2 else items[::-1])),
            metadata=clients.service,
        )
        settle = (
            clients.inventory.CommitReservation(
                inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
            )
            if index % 3
            else clients.inventory.ReleaseReservation(
                inv.ReleaseReservationRequest(order_id=order_id), metadata=clients.service
            )
        )
        return inv.ReservationStatus.Name((await settle).status)

    outcomes = await asyncio.gather(*(checkout(i) for i in range(30)))

    sold = outcomes.count("RESERVATION_STATUS_COMMITTED")
    assert sold + outcomes.count("RESERVATION_STATUS_RELEASED") == 30
    assert await stock(clients, first.id) == (100 - sold, 0)
    assert await stock(clients, second.id) == (100 - sold, 0)


def extend_request(order_id: str, until: datetime) -> inv.ExtendReservationRequest:
    request = inv.ExtendReservationRequest(order_id=order_id)
    request.expire_time.FromDatetime(until)
    return request


async def test_an_extended_reservation_outlives_its_ttl_and_is_never_shortened(
    clients: Clients, product_db: Database, outbox: Outbox
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    hasty = Catalog(CatalogStore(product_db, outbox), PageTokens(b"k" * 32), reservation_ttl_s=0.05)
    order_id = order()
    await hasty.reserve(order_id, [(product.id, 2)])
    until = datetime.now(UTC) + timedelta(hours=2)

    extended = await clients.inventory.ExtendReservation(
        extend_request(order_id, until), metadata=clients.service
    )
    again = await clients.inventory.ExtendReservation(
        extend_request(order_id, until - timedelta(hours=1)), metadata=clients.service
    )

    assert extended.expire_time.ToDatetime(UTC) == until
    assert again.expire_time == extended.expire_time
    assert await hasty.expire_due() == 0  # past its TTL, but kept
    assert await stock(clients, product.id) == (3, 2)
    await clients.inventory.CommitReservation(
        inv.CommitReservationRequest(order_id=order_id), metadata=clients.service
    )


async def test_only_an_active_reservation_is_extended_and_never_beyond_a_week(
    clients: Clients,
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=5)
    order_id = order()
    await clients.inventory.ReserveStock(
        reserve_request(order_id, (product.id, 1)), metadata=clients.service
    )

    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await clients.inventory.ExtendReservation(
            extend_request(order_id, datetime.now(UTC) + timedelta(days=8)),
            metadata=clients.service,
        )
    await clients.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(order_id=order_id), metadata=clients.service
    )
    with pytest.raises(grpc.aio.AioRpcError) as released:
        await clients.inventory.ExtendReservation(
            extend_request(order_id, datetime.now(UTC) + timedelta(hours=1)),
            metadata=clients.service,
        )
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await clients.inventory.ExtendReservation(
            extend_request(order(), datetime.now(UTC) + timedelta(hours=1)),
            metadata=clients.service,
        )

    assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert released.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
