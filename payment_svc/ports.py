"""What the checkout saga needs from product_svc, as a port the tests can fake.

The gRPC adapter (``payment_svc.inventory_client``) turns product_svc's statuses into these
exceptions, so the saga decides on plain outcomes, not on gRPC codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from common.money import Money
from payment_svc.domain import ProductFacts, RequestedItem


@dataclass(frozen=True)
class ReservedLine:
    """One reserved product with the details and price the order is charged at."""

    product_id: str
    sku: str
    name: str
    quantity: int
    unit_price: Money


class InventoryError(Exception):
    """product_svc did not do what was asked."""


class OutOfStock(InventoryError):
    """An item is short; nothing was reserved."""


class UnknownProduct(InventoryError):
    """An item names no live product; nothing was reserved."""


class ReservationRefused(InventoryError):
    """A definitive refusal other than stock (e.g. the order id reserved other items)."""


class ReservationLost(InventoryError):
    """The reservation cannot be committed any more (released or expired)."""


class InventoryUnavailable(InventoryError):
    """No answer (unreachable, deadline, overloaded): the call may or may not have happened."""


class Inventory(Protocol):
    """Stock reservations keyed by order id; every call is idempotent on product_svc's side."""

    async def reserve(self, order_id: str, items: Sequence[RequestedItem]) -> list[ReservedLine]:
        """Reserve all items or nothing; the reserved lines in request order."""
        ...

    async def commit(self, order_id: str) -> None:
        """Turn the order's reservation into a sale."""
        ...

    async def extend(self, order_id: str, until: datetime) -> None:
        """Keep the order's active reservation until ``until`` (a held order's review).

        ReservationLost when it is no longer active (released, expired or committed).
        """
        ...

    async def release(self, order_id: str) -> None:
        """Give the order's units back (also blocks a late reserve for the order)."""
        ...

    async def describe(self, product_ids: Sequence[str]) -> list[ProductFacts]:
        """What the catalog knows of these products; the unknown (or unreachable) left out."""
        ...
