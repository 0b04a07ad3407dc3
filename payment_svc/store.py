"""Persistence of the payment service: its own database, one unit of work per use case."""

from __future__ import annotations

from common.db import Database


class PaymentStore:
    """The payment service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def reachable(self) -> bool:
        return await self._database.ping()
