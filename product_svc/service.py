"""Use cases of the product service: load, apply the domain's rules, save, record events."""

from __future__ import annotations

from product_svc.store import CatalogStore


class Catalog:
    """The product service's use cases, independent of how they are called."""

    def __init__(self, store: CatalogStore) -> None:
        self._store = store

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()
