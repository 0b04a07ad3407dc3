"""Consumer-side deduplication: each event id is handled once per consumer, even if redelivered.

Events arrive at least once (``common.outbox``). A consumer calls ``first_delivery`` inside the
unit of work that applies the event; a redelivered event finds its id already recorded and is
skipped, and the record commits or rolls back together with the effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Column, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from common.clock import now
from common.db import UtcDateTime, on_conflict_insert


def _inbox_columns() -> list[Column[Any]]:
    return [
        Column("consumer", String(128), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("received_at", UtcDateTime, nullable=False),
    ]


def inbox_table_name(service: str) -> str:
    return f"{service}_inbox"  # per service, like the outbox (common.outbox)


def inbox_table(service: str) -> Table:
    """The inbox of ``service`` (``<service>_inbox``)."""
    return Table(inbox_table_name(service), MetaData(), *_inbox_columns())


def create_inbox_table(op: Any, service: str) -> None:
    """Create the inbox in a service's migration (``op`` is ``alembic.op``)."""
    op.create_table(inbox_table_name(service), *_inbox_columns())


def drop_inbox_table(op: Any, service: str) -> None:
    op.drop_table(inbox_table_name(service))


async def first_delivery(
    connection: AsyncConnection, table: Table, consumer: str, event_id: str
) -> bool:
    """Record ``event_id`` for ``consumer``; False when it was recorded before (a duplicate)."""
    values = {"consumer": consumer, "event_id": event_id, "received_at": now()}
    statement = _record_delivery(table, connection.dialect.name)
    result = await connection.execute(statement, values)
    return bool(result.rowcount)


@cache
def _record_delivery(table: Table, dialect: str) -> Any:
    # Built once per inbox: every consumed event runs it, and building and keying a statement
    # costs more CPU than executing it.
    return on_conflict_insert(table, dialect).on_conflict_do_nothing()


@dataclass(frozen=True)
class Delivery:
    """One event handed to one consumer: what its inbox row records."""

    consumer: str  # the subscription's name, e.g. "release-ended-orders"
    event_id: str  # the CloudEvents id


class AlreadyHandled(Exception):
    """The event was handled before: its effect is already committed (a redelivery).

    Raised by ``Store.handling`` before the use case changes anything; the consumer counts it
    and moves on.
    """

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(f"{delivery.consumer} already handled event {delivery.event_id}")
        self.delivery = delivery
