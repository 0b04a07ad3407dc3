"""The unit of work every store hands its use cases: one transaction, its events committed with it.

Each service's store subclasses ``UnitOfWork`` with its own load and save methods and
``Store`` to open it; what they share (the connection and its transaction, the outbox, ``emit``
and how a unit of work begins and ends) lives here once. A unit of work runs Core statements
on a plain connection (``Database.session``): the stores map rows to domain objects
themselves, so an ORM session would only add its bookkeeping to every statement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.inbox import AlreadyHandled, Delivery, first_delivery, inbox_table
from common.outbox import Outbox, OutgoingEvent
from common.telemetry import span


class UnitOfWork:
    """The reads and writes of one use case, committed together with its events."""

    def __init__(self, connection: AsyncConnection, outbox: Outbox) -> None:
        self._connection = connection
        self._outbox = outbox

    async def emit(self, *events: OutgoingEvent) -> None:
        """Record events in this transaction: they are published only if it commits."""
        await self._outbox.add(self._connection, *events)

    async def record_delivery(self, inbox: Table, delivery: Delivery) -> bool:
        """Record an event in the inbox in this transaction; False if it was recorded before."""
        return await first_delivery(self._connection, inbox, delivery.consumer, delivery.event_id)


UnitT = TypeVar("UnitT", bound=UnitOfWork)


class Store(Generic[UnitT]):
    """A service's tables, reached only through units of work on its own database."""

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        unit: Callable[[AsyncConnection, Outbox], UnitT],
    ) -> None:
        self._database = database
        self._outbox = outbox
        self._unit = unit
        self._inbox = inbox_table(outbox.service)

    @property
    def database(self) -> Database:
        return self._database

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitT]:
        """Commits when the block ends normally, rolls back (events included) if it raises."""
        # Our span: SQLite (sqlite3) has no instrumentation, and on PostgreSQL it groups the
        # asyncpg statement spans of one transaction, its commit included.
        with span("unit_of_work", **{"db.system.name": self._database.engine.dialect.name}):
            async with self._database.session() as connection:
                yield self._unit(connection, self._outbox)

    @asynccontextmanager
    async def handling(self, delivery: Delivery) -> AsyncIterator[UnitT]:
        """A unit of work applying an event, which records the event id in the inbox.

        The record commits or rolls back with the effect, so an event redelivered after a crash
        (effect committed, offset not) raises ``AlreadyHandled`` here and changes nothing.
        """
        async with self.unit_of_work() as unit:
            if not await unit.record_delivery(self._inbox, delivery):
                raise AlreadyHandled(delivery)
            yield unit

    @asynccontextmanager
    async def handling_batch(
        self, deliveries: Sequence[Delivery]
    ) -> AsyncIterator[tuple[UnitT, list[bool]]]:
        """``handling`` for several events in one unit of work: which of them are new.

        One inbox row per event; a duplicate (False) must be left unapplied by the caller.
        """
        async with self.unit_of_work() as unit:
            yield unit, [await unit.record_delivery(self._inbox, d) for d in deliveries]

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[UnitT]:
        """A unit of work that only reads: it never waits for writers (``Database.session``).

        Its statements see one snapshot (on PostgreSQL a READ ONLY REPEATABLE READ
        transaction), so an aggregate read in several statements is never half of a
        concurrent commit. A decision that must not be overtaken belongs in
        ``unit_of_work``, guarded by a compare-and-set or a lock.
        """
        with span("unit_of_work read", **{"db.system.name": self._database.engine.dialect.name}):
            async with self._database.session(read_only=True) as connection:
                yield self._unit(connection, self._outbox)

    async def reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._database.ping()
