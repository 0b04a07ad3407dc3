"""An in-memory InventoryService for payment tests: atomic reservations keyed by order id."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from common.money import Money
from payment_svc.domain import ProductFacts, RequestedItem
from payment_svc.ports import (
    InventoryUnavailable,
    OutOfStock,
    ReservationLost,
    ReservedLine,
    UnknownProduct,
)


@dataclass
class FakeInventory:
    """Behaves like product_svc's InventoryService contract; ``down`` makes it unreachable."""

    available: dict[str, int] = field(default_factory=dict)
    prices: dict[str, Money] = field(default_factory=dict)
    reservations: dict[str, tuple[str, list[ReservedLine]]] = field(default_factory=dict)
    down: bool = False
    commit_down: bool = False
    calls: list[str] = field(default_factory=list)
    held_until: dict[str, datetime] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add_product(self, product_id: str, stock: int, price: int, currency: str = "USD") -> None:
        self.available[product_id] = stock
        self.prices[product_id] = Money(price, currency)

    def status(self, order_id: str) -> str | None:
        found = self.reservations.get(order_id)
        return found[0] if found else None

    def sold(self, product_id: str) -> int:
        return sum(
            line.quantity
            for status, lines in self.reservations.values()
            if status == "COMMITTED"
            for line in lines
            if line.product_id == product_id
        )

    async def reserve(self, order_id: str, items: Sequence[RequestedItem]) -> list[ReservedLine]:
        self.calls.append(f"reserve:{order_id}")
        if self.down:
            raise InventoryUnavailable("down")
        async with self._lock:
            if order_id in self.reservations:
                return self.reservations[order_id][1]
            for item in items:
                if item.product_id not in self.available:
                    raise UnknownProduct(item.product_id)
                if self.available[item.product_id] < item.quantity:
                    raise OutOfStock(item.product_id)
            lines = []
            for item in items:
                self.available[item.product_id] -= item.quantity
                lines.append(
                    ReservedLine(
                        item.product_id,
                        f"SKU-{item.product_id}",
                        f"Product {item.product_id}",
                        item.quantity,
                        self.prices[item.product_id],
                    )
                )
            self.reservations[order_id] = ("ACTIVE", lines)
            return lines

    async def describe(self, product_ids: Sequence[str]) -> list[ProductFacts]:
        self.calls.append("describe")
        return [
            ProductFacts(
                product_id,
                f"SKU-{product_id}",
                f"Product {product_id}",
                self.prices[product_id],
                self.available.get(product_id),
            )
            for product_id in product_ids
            if product_id in self.prices and not self.down
        ]

    async def commit(self, order_id: str) -> None:
        self.calls.append(f"commit:{order_id}")
        if self.down or self.commit_down:
            raise InventoryUnavailable("down")
        status, lines = self.reservations.get(order_id, ("NONE", []))
        if status not in ("ACTIVE", "COMMITTED"):
            raise ReservationLost(status)
        self.reservations[order_id] = ("COMMITTED", lines)

    async def extend(self, order_id: str, until: datetime) -> None:
        self.calls.append(f"extend:{order_id}")
        if self.down:
            raise InventoryUnavailable("down")
        status, _ = self.reservations.get(order_id, ("NONE", []))
        if status != "ACTIVE":
            raise ReservationLost(status)
        self.held_until[order_id] = until

    async def release(self, order_id: str) -> None:
        self.calls.append(f"release:{order_id}")
        if self.down:
            raise InventoryUnavailable("down")
        status, lines = self.reservations.get(order_id, ("NONE", []))
        if status in ("ACTIVE", "COMMITTED"):
            for line in lines:
                self.available[line.product_id] += line.quantity
        self.reservations[order_id] = ("RELEASED", lines if status != "NONE" else [])
