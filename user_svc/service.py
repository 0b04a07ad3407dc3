"""Use cases of the user service: load, apply the domain's rules, save, record events."""

from __future__ import annotations

from user_svc.store import AccountStore


class Accounts:
    """The user service's use cases, independent of how they are called."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()
