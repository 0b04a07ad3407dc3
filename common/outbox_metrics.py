"""The outbox backlog gauges, read from the outbox table when Prometheus scrapes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from common import clock
from common.db import SQLITE_BEGIN_OPTION, Database
from common.logging import get_logger
from common.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from common.outbox import Outbox

_log = get_logger(__name__)


async def refresh_outbox_gauges(database: Database, outbox: Outbox) -> None:
    """Set the backlog and the oldest unpublished event's age; keep the last values on error.

    A database that cannot answer must not fail the scrape: every other series (and the
    unit-of-work failures that explain it) still has to reach Prometheus.
    """
    table = outbox.table
    query = select(func.count(), func.min(table.c.created_at)).where(table.c.published_at.is_(None))
    try:
        async with database.engine.connect() as connection:
            # A read: on SQLite it must not queue for the write lock behind the writers.
            connection = await connection.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
            count, oldest = (await connection.execute(query)).one()
    except Exception as error:
        _log.warning("outbox_gauges_failed", error=type(error).__name__)
        return
    OUTBOX_BACKLOG.labels(outbox.service).set(count)
    age = 0.0
    if isinstance(oldest, datetime):
        age = max((clock.now() - oldest).total_seconds(), 0.0)
    OUTBOX_OLDEST_AGE.labels(outbox.service).set(age)
