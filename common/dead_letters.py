"""The dead-letter store: events a consumer could not handle, kept with the error until replayed.

A consumer (``common.consumer``) that cannot decode a record, or whose handler still fails after
its bounded retries, writes the record here and moves on, so one poison event never blocks its
partition and never vanishes. An administrator lists them and replays one once the cause is
fixed (``common.dead_letter_api``). Each consuming service's schema gets the table
(``<service>_dead_letters``) from ``create_dead_letter_table`` in one of its migrations.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping

from common.clock import now
from common.db import Database, UtcDateTime

# Long enough for an exception's message and type; a traceback belongs in the log line.
MAX_ERROR_CHARS = 2000


class DeadLetterStatus(StrEnum):
    PENDING = "PENDING"  # waiting for a fix and a replay
    REPLAYED = "REPLAYED"  # replayed and handled (or found already handled)


def _dead_letter_columns() -> list[Column[Any]]:
    return [
        Column("id", String(64), primary_key=True),
        Column("consumer", String(128), nullable=False),
        Column("topic", String(128), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("key", Text, nullable=True),
        # Null when the record could not be decoded far enough to read them.
        Column("event_id", String(64), nullable=True),
        Column("event_type", String(128), nullable=True),
        # The record exactly as it arrived, so a replay sees what the consumer saw.
        Column("payload", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),  # JSON object of the record's headers
        Column("error", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("create_time", UtcDateTime, nullable=False),
        Column("update_time", UtcDateTime, nullable=False),
    ]


def dead_letter_table_name(service: str) -> str:
    return f"{service}_dead_letters"


def dead_letter_table(service: str) -> Table:
    """The dead letters of ``service`` (``<service>_dead_letters``)."""
    table = Table(dead_letter_table_name(service), MetaData(), *_dead_letter_columns())
    Index(f"ix_{table.name}_created", table.c.create_time, table.c.id)
    return table


def create_dead_letter_table(op: Any, service: str) -> None:
    """Create the dead-letter table in a service's migration (``op`` is ``alembic.op``)."""
    name = dead_letter_table_name(service)
    op.create_table(name, *_dead_letter_columns())
    op.create_index(f"ix_{name}_created", name, ["create_time", "id"])


def drop_dead_letter_table(op: Any, service: str) -> None:
    name = dead_letter_table_name(service)
    op.drop_index(f"ix_{name}_created", table_name=name)
    op.drop_table(name)


@dataclass(frozen=True)
class ConsumedRecord:
    """A Kafka record as a consumer received it: enough to handle it again later."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class DeadLetter:
    """A record a consumer gave up on, and why."""

    id: str
    consumer: str
    record: ConsumedRecord
    event_id: str | None
    event_type: str | None
    error: str
    attempts: int
    status: DeadLetterStatus
    create_time: datetime
    update_time: datetime


def _dead_letter(row: RowMapping) -> DeadLetter:
    key: bytes | None = None if row["key"] is None else str(row["key"]).encode()
    return DeadLetter(
        id=row["id"],
        consumer=row["consumer"],
        record=ConsumedRecord(
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            key=key,
            value=bytes(row["payload"]),
            headers=json.loads(row["headers"]),
        ),
        event_id=row["event_id"],
        event_type=row["event_type"],
        error=row["error"],
        attempts=row["attempts"],
        status=DeadLetterStatus(row["status"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class DeadLetterStore:
    """Writes and reads one service's dead letters, each in its own short transaction."""

    def __init__(self, database: Database, service: str) -> None:
        self._database = database
        self.table = dead_letter_table(service)

    async def add(
        self,
        consumer: str,
        record: ConsumedRecord,
        *,
        event_id: str | None,
        event_type: str | None,
        error: str,
        attempts: int,
    ) -> str:
        moment = now()
        letter_id = uuid.uuid4().hex
        async with self._database.session() as connection:
            await connection.execute(
                insert(self.table).values(
                    id=letter_id,
                    consumer=consumer,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=None if record.key is None else record.key.decode(errors="replace"),
                    event_id=event_id,
                    event_type=event_type,
                    payload=record.value,
                    headers=json.dumps(dict(record.headers)),
                    error=error[:MAX_ERROR_CHARS],
                    attempts=attempts,
                    status=DeadLetterStatus.PENDING.value,
                    create_time=moment,
                    update_time=moment,
                )
            )
        return letter_id

    async def get(self, letter_id: str) -> DeadLetter | None:
        async with self._database.session() as connection:
            row = (
                (await connection.execute(select(self.table).where(self.table.c.id == letter_id)))
                .mappings()
                .first()
            )
        return None if row is None else _dead_letter(row)

    async def page(
        self,
        limit: int,
        after: tuple[datetime, str] | None,
        status: DeadLetterStatus | None,
    ) -> list[DeadLetter]:
        """Newest first; ``after`` is the (create_time, id) of the previous page's last one."""
        table = self.table
        query = select(table).order_by(table.c.create_time.desc(), table.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(table.c.status == status.value)
        if after is not None:
            moment, letter_id = after
            query = query.where(
                or_(
                    table.c.create_time < moment,
                    and_(table.c.create_time == moment, table.c.id < letter_id),
                )
            )
        async with self._database.session() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_dead_letter(row) for row in rows]

    async def settle(self, letter_id: str) -> None:
        """Mark a dead letter replayed (its event has now been handled)."""
        await self._update(letter_id, status=DeadLetterStatus.REPLAYED.value)

    async def record_failed_replay(self, letter_id: str, error: str) -> None:
        async with self._database.session() as connection:
            await connection.execute(
                update(self.table)
                .where(self.table.c.id == letter_id)
                .values(
                    error=error[:MAX_ERROR_CHARS],
                    attempts=self.table.c.attempts + 1,
                    update_time=now(),
                )
            )

    async def _update(self, letter_id: str, **values: Any) -> None:
        async with self._database.session() as connection:
            await connection.execute(
                update(self.table)
                .where(self.table.c.id == letter_id)
                .values(**values, update_time=now())
            )
