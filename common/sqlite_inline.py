"""SQLite for SQLAlchemy's async engine without a thread per statement: sqlite3 on the loop.

aiosqlite hands every statement to a worker thread and waits for it on the loop: about 0.45 ms
per statement and 1 ms per ORM transaction, against 15 µs and 0.12 ms for the same work with
sqlite3 called directly (issue 13's profile). In WAL mode with ``synchronous=NORMAL`` a
statement on a local file never waits for the disk (only checkpoints sync), so running sqlite3
on the event loop costs less than the hand-over to a thread would.

The one way it could block the loop is SQLite's busy handler: a connection that wants the write
lock while another holds it sleeps in C. Writers of one process therefore queue on an asyncio
lock first (``common.db.Database``), so the busy handler only ever waits for *another process*
on the same file (a migration, a second replica on one volume, a test's reader), which is rare
and bounded by the busy timeout. Readers never take the write lock (WAL lets them run beside
the writer).

The dialect is SQLAlchemy's own pysqlite dialect declared async: the async engine runs the
dialect's calls inside its greenlet, so plain sqlite3 calls simply run there, on the loop
thread. ``common.db.create_engine`` picks it for every ``sqlite://`` URL.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import URL, pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.util.concurrency import await_

DRIVER = "mcinline"


async def _nothing() -> None:
    return None


class _Cursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = ()) -> _Cursor:
        super().execute(sql, parameters)
        # AsyncConnection.execute insists that the driver awaited something (it guards
        # against sync drivers); one empty await, a few microseconds, satisfies it.
        await_(_nothing())
        return self

    def executemany(self, sql: str, seq_of_parameters: Any) -> _Cursor:
        super().executemany(sql, seq_of_parameters)
        await_(_nothing())
        return self

    async def _async_soft_close(self) -> None:
        # The async result API awaits this on every cursor; sqlite3's rows are already here.
        return None


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)


class SQLiteDialectInline(SQLiteDialect_pysqlite):
    """pysqlite, accepted by ``create_async_engine`` and pooled with an asyncio queue."""

    is_async = True
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        if cls._is_url_file_db(url):
            # Waiting for a free connection must suspend the task, not block the loop.
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool

    def create_connect_args(self, url: URL) -> Any:
        args, kwargs = super().create_connect_args(url)
        # Every call comes from the loop thread, but the pool may close a connection from a
        # finalizer on another thread at exit.
        kwargs["check_same_thread"] = False
        kwargs["factory"] = _Connection
        return args, kwargs


registry.register(f"sqlite.{DRIVER}", __name__, "SQLiteDialectInline")
