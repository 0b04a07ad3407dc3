"""Database access for the services: async engines (SQLite, PostgreSQL), units of work, ping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Integer,
    event,
    exc,
    make_url,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    create_async_engine,
)
from sqlalchemy.sql.schema import Table
from sqlalchemy.types import TypeDecorator

from common import sqlite_inline
from common.logging import get_logger
from common.metrics import timed_unit_of_work
from common.settings import CommonSettings

_log = get_logger(__name__)

# How long a SQLite writer waits for another *process's* write lock before failing with
# "database is locked". Writers of one process queue on Database's asyncio lock instead, so
# SQLite's busy handler (which sleeps, here on the event loop) never waits for them.
SQLITE_BUSY_TIMEOUT_MS = 5_000

# Execution option choosing how a SQLite transaction begins; see _begin_sqlite.
SQLITE_BEGIN_OPTION = "mc_sqlite_begin"

# Drivers we run on, by backend; a bare "postgresql://" or "sqlite://" gets the async one.
_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}


def database_url(service: str, settings: CommonSettings) -> str:
    """``MC_<SVC>_DATABASE_URL`` when set, else a SQLite file ``<data_dir>/<service>.db``.

    The SQLite default creates ``data_dir`` so a fresh clone runs without set-up.
    """
    configured = {
        "payment": settings.payment_database_url,
        "product": settings.product_database_url,
        "user": settings.user_database_url,
    }
    if service not in configured:
        raise ValueError(f"unknown service {service!r}; expected one of {sorted(configured)}")
    url = configured[service]
    if url is not None and url.get_secret_value():
        return url.get_secret_value()
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return URL.create(
        "sqlite+aiosqlite", database=str(data_dir / f"{service}.db")
    ).render_as_string()


def async_url(url: str | URL) -> URL:
    """The URL with our async driver filled in; a sync driver or another backend is refused."""
    parsed = make_url(url)
    if parsed.drivername == "postgres":  # a common alias that SQLAlchemy does not know
        parsed = parsed.set(drivername="postgresql")
    backend = parsed.get_backend_name()
    driver = _ASYNC_DRIVERS.get(backend)
    if driver is None:
        raise ValueError(f"unsupported database {backend!r}; use PostgreSQL or SQLite")
    if "+" not in parsed.drivername:
        return parsed.set(drivername=f"{backend}+{driver}")
    if parsed.get_driver_name() != driver:
        raise ValueError(f"use the {backend}+{driver} driver, not {parsed.drivername!r}")
    return parsed


# The type of an auto-incremented sequence number column (outbox, change logs): SQLite
# auto-increments only an INTEGER PRIMARY KEY, PostgreSQL gets a 64-bit BIGINT.
SEQUENCE_NUMBER = BigInteger().with_variant(Integer, "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """The one time column of our stores: aware UTC datetimes in, aware UTC datetimes out.

    The SQL type is ``DateTime(timezone=True)`` (``timestamptz`` on PostgreSQL), so a column
    switching to it needs no migration. SQLite keeps no offset and hands back naive values,
    which are UTC because every write is converted to UTC first; a naive datetime on write is
    refused, since nothing says which zone it meant.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: stores take aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _connect_sqlite(dbapi_connection: Any, _connection_record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (_begin_sqlite): the driver's own implicit BEGIN comes
    # too late for transactional DDL and cannot take the write lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers and one writer proceed concurrently. NORMAL sync is durable in WAL mode
        # except for the last transactions on power loss, and far faster than FULL.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite ships with foreign keys unenforced, unlike PostgreSQL.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN. A deferred transaction that reads and then
    # writes fails at once with "database is locked" when another writer committed in between
    # (the busy timeout does not apply then); with IMMEDIATE, a writer of another process
    # waits instead, which also makes read-check-write (stock, idempotency keys) safe on
    # SQLite. Readers ask for DEFERRED (Database.session(read_only=True), ping) and never wait.
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def create_engine(
    url: str | URL, *, application_name: str | None = None, echo: bool = False
) -> AsyncEngine:
    """An async engine for ``url``; opens no connection until first used.

    SQLite (sqlite3 on the event loop, ``common.sqlite_inline``) gets WAL, enforced foreign
    keys, a busy timeout and write-locking transactions; PostgreSQL (asyncpg) a pool sized for
    concurrent checkouts, a free liveness check and connect/command timeouts.
    ``application_name`` labels PostgreSQL sessions (``pg_stat_activity``).
    """
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        # "sqlite+aiosqlite" stays the URL users write; the driver underneath is sqlite3.
        inline = parsed.set(drivername=f"sqlite+{sqlite_inline.DRIVER}")
        engine = create_async_engine(inline, echo=echo)
        event.listen(engine.sync_engine, "connect", _connect_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
        return engine

    server_settings = {"application_name": application_name} if application_name else {}
    engine = create_async_engine(
        parsed,
        echo=echo,
        # A connection is held for one transaction (a few round trips), so 30 covers the
        # checkouts and reads a process has in flight at once with room to spare.
        pool_size=10,
        max_overflow=20,
        # Fail a request after 10 s without a free connection rather than queue unboundedly.
        pool_timeout=10,
        # No pool_pre_ping: it costs a round trip on every check-out. A connection the server
        # closed (restart, fail-over, idle kill) is noticed by asyncpg itself and replaced at
        # check-out for free (_drop_closed_asyncpg); one noticed too late fails only the first
        # statement of its unit of work, which then runs on a fresh connection
        # (_ReconnectingConnection); recycling retires connections before proxies and
        # firewalls drop idle ones silently.
        pool_recycle=1800,
        connect_args={"timeout": 5, "command_timeout": 30, "server_settings": server_settings},
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed_asyncpg)
    return engine


def _drop_closed_asyncpg(
    dbapi_connection: Any, _connection_record: Any, _connection_proxy: Any
) -> None:
    # asyncpg marks a connection closed as soon as the server's FIN or termination message
    # arrives on the loop; DisconnectionError makes the pool discard it and connect anew.
    # This check needs no round trip, unlike pool_pre_ping's SELECT.
    driver_connection = getattr(dbapi_connection, "driver_connection", None)
    if driver_connection is not None and driver_connection.is_closed():
        raise exc.DisconnectionError("the server closed this pooled connection")


def insert_on_conflict(
    connection: AsyncConnection, table: Table
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` that takes ``on_conflict_do_nothing``/``_do_update``.

    Both backends speak ``INSERT ... ON CONFLICT``, but SQLAlchemy builds it from each
    dialect's own ``insert``; this picks the one of the connection's database.
    """
    return on_conflict_insert(table, connection.dialect.name)


def on_conflict_insert(table: Table, dialect: str) -> postgresql.Insert | sqlite.Insert:
    """``insert_on_conflict`` for a dialect by name, for statements built once up front."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# Connection.info key: what to run once the unit of work on that connection has committed.
_AFTER_COMMIT = "mc_after_commit"

T = TypeVar("T")

# SQLSTATEs of a server that ended the session: 57P01 (pg_terminate_backend, a fast shutdown),
# 57P02 (crash of another backend), 57P03 (starting up or shutting down); class 08 (connection
# exceptions) is matched by asyncpg's PostgresConnectionError.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` says the connection to PostgreSQL is gone, not the statement wrong.

    SQLAlchemy flags what it recognises (``connection_invalidated``); asyncpg's own classes
    catch the rest: the server's goodbye read as the statement's answer (57P01 after
    ``pg_terminate_backend``), a connection already known closed, a reset socket. A timeout is
    not among them: the statement may still be running on a live connection.
    """
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    # Only ever called on PostgreSQL, where asyncpg is already imported.
    import asyncpg

    seen: BaseException | None = error
    walked: set[int] = set()  # a chain set by hand can loop
    while seen is not None and id(seen) not in walked:
        walked.add(id(seen))
        if isinstance(seen, (asyncpg.PostgresConnectionError, ConnectionError)):
            return True
        if isinstance(seen, asyncpg.PostgresError) and seen.sqlstate in _SESSION_ENDED:
            return True
        if isinstance(seen, asyncpg.InterfaceError) and "connection is closed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _ReconnectingConnection(AsyncConnection):
    """A PostgreSQL unit of work's connection: a dead pooled connection costs no request.

    Without pool_pre_ping, a connection can leave the pool dead when the client has not yet
    noticed (the server's goodbye still in flight, a fail-over that sent none), and only its
    first statement finds out. That statement, and only it, runs once more on a fresh
    connection: nothing has reached the database in this unit before it, so nothing can be
    repeated, and the use case's code around it (provider calls included) runs once. A second
    failure is the caller's, as is any failure after the first statement (a transaction cut
    mid-way cannot be replayed from here). What the unit keeps in ``info`` (``after_commit``)
    is carried over to the new connection.
    """

    def __init__(self, engine: AsyncEngine, carry: Mapping[str, Any]) -> None:
        super().__init__(engine)
        self._carry = carry

    async def execute(
        self, statement: Any, parameters: Any = None, *, execution_options: Any = None
    ) -> Any:
        run = super().execute
        return await self._first_statement(
            lambda: run(statement, parameters, execution_options=execution_options)
        )

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Any = None
    ) -> Any:
        run = super().exec_driver_sql
        return await self._first_statement(lambda: run(statement, parameters, execution_options))

    def begin_nested(self) -> AsyncTransaction:
        # A savepoint can be a unit's first statement (user_svc's add_user begins with one).
        return _Savepoint(self, nested=True)

    async def close(self) -> None:
        # After a reconnect that failed there is no connection left to close; the connect's
        # error, not a complaint that nothing was started, is the one the caller must see.
        if self.sync_connection is not None:
            await super().close()

    async def _first_statement(self, run: Callable[[], Awaitable[T]]) -> T:
        # in_transaction: any statement at all, whichever method sent it, began the unit's
        # transaction (in AUTOCOMMIT too, where SQLAlchemy still opens its own).
        if self.in_transaction():
            return await run()
        try:
            return await run()
        except Exception as error:
            if not connection_lost(error):
                raise
            _log.warning(
                "database_connection_lost",
                detail="running the unit of work's first statement again on a new connection",
                error=type(error).__name__,
            )
            await self._reconnect(error)
        return await run()

    async def _reconnect(self, error: BaseException) -> None:
        # When SQLAlchemy recognised the disconnect it has invalidated this connection and
        # every pooled one older than it; otherwise this one is invalidated here, so it is
        # closed rather than handed back to the pool.
        if not self.invalidated:
            await self.invalidate(error)
        await self.close()
        self.sync_connection = None
        await self.start()
        self.info.update(self._carry)


class _Savepoint(AsyncTransaction):
    """``begin_nested`` of a ``_ReconnectingConnection``: retried like its first statement."""

    async def start(self, is_ctxmanager: bool = False) -> AsyncTransaction:
        connection = self.connection
        assert isinstance(connection, _ReconnectingConnection)
        start = super().start
        return await connection._first_statement(lambda: start(is_ctxmanager))


def after_commit(connection: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the unit of work (``Database.session``) on ``connection`` commits.

    Never when it rolls back; a callback registered several times in one unit runs once. On a
    connection that is not a unit of work's, it never runs.
    """
    # Run by Database.session after COMMIT returned, not from a Connection "commit" event:
    # that event fires before the COMMIT is sent, so whatever it wakes could look for rows
    # not yet visible (PostgreSQL awaits COMMIT on the loop), and it fires on a failed
    # commit too.
    callbacks: set[Callable[[], None]] = connection.info.setdefault(_AFTER_COMMIT, set())
    callbacks.add(callback)


class Database:
    """One service's database: its engine, units of work and a health ping."""

    def __init__(
        self, engine: AsyncEngine, *, ping_timeout: float = 2.0, name: str = "default"
    ) -> None:
        self._engine = engine
        self.name = name  # labels its unit-of-work metrics
        # Health checks call ping every second or so: an answer later than this counts as down.
        self._ping_timeout = ping_timeout
        self._sqlite = engine.dialect.name == "sqlite"
        # Read-only units of work check out from the same pool with their options preset, so
        # no unit pays for setting them (see session). Both backends give a reader one
        # snapshot: SQLite's DEFERRED transaction in WAL mode, and on PostgreSQL a READ ONLY
        # REPEATABLE READ transaction (asyncpg begins it in the one BEGIN statement). Each
        # statement on its own (autocommit) saved the BEGIN and COMMIT, but an aggregate read
        # in several statements could then meet half of a concurrent commit: a held order
        # still ON_HOLD with its payment already VOIDED by another reviewer's rejection.
        self._readers = engine.execution_options(
            **(
                {SQLITE_BEGIN_OPTION: "DEFERRED"}
                if self._sqlite
                else {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
            )
        )
        # SQLite has one writer at a time: this process's writers queue here, suspended, in
        # arrival order, rather than in SQLite's busy handler, which sleeps and would block the
        # loop (common.sqlite_inline). The owner task is kept to refuse a nested writer, which
        # would otherwise wait for itself forever.
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[Any] | None = None

    @classmethod
    def from_url(
        cls, url: str | URL, *, application_name: str | None = None, ping_timeout: float = 2.0
    ) -> Database:
        """A Database on a new engine for ``url`` (see ``create_engine``)."""
        return cls(
            create_engine(url, application_name=application_name),
            ping_timeout=ping_timeout,
            name=application_name or "default",
        )

    @property
    def engine(self) -> AsyncEngine:
        """The underlying engine, for migrations and tests."""
        return self._engine

    @asynccontextmanager
    async def session(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """One unit of work: commits when the block ends normally, rolls back if it raises.

        It is one transaction on one connection (a session in SQL's sense), driven with Core
        statements: no ORM session, whose bookkeeping cost more CPU than the statements of a
        checkout (issue 13's profile). Do not commit inside the block; ``begin_nested`` gives
        a savepoint; ``after_commit`` schedules work for once the commit has returned.
        ``read_only``: the block only reads, so it never waits for writers: on SQLite it
        begins DEFERRED and skips the writers' queue; on PostgreSQL it is a READ ONLY
        REPEATABLE READ transaction. Either way its statements see one snapshot.
        """
        if read_only:
            async with timed_unit_of_work(self.name), self._transaction(self._readers) as reader:
                yield reader
            return
        if not self._sqlite:
            async with timed_unit_of_work(self.name), self._transaction(self._engine) as writer:
                yield writer
            return
        current = asyncio.current_task()
        if current is not None and self._writer is current:
            raise RuntimeError("a unit of work that writes was opened inside another one")
        async with self._write_lock:
            self._writer = current
            try:
                async with (
                    timed_unit_of_work(self.name),
                    self._transaction(self._engine) as writer,
                ):
                    yield writer
            finally:
                self._writer = None

    @asynccontextmanager
    async def _transaction(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        # No explicit connection.begin(): the first statement begins the transaction (BEGIN
        # IMMEDIATE or DEFERRED on SQLite, _begin_sqlite), saving a greenlet hand-over per unit
        # of work; a block that raises is rolled back when the connection goes back to the pool.
        # Connection.info belongs to the pooled DBAPI connection and outlives this unit, so
        # each unit starts a fresh set (a rolled-back unit's callbacks are simply dropped). It
        # is kept here because, after a failure, the connection may be invalidated and its info
        # unreachable.
        committed: set[Callable[[], None]] = set()
        # A SQLite file does not disconnect: its units skip the reconnecting wrapper's cost.
        unit_connection = (
            AsyncConnection(engine)
            if self._sqlite
            else _ReconnectingConnection(engine, {_AFTER_COMMIT: committed})
        )
        async with unit_connection as connection:
            connection.info[_AFTER_COMMIT] = committed
            yield connection
            await connection.commit()
        for callback in committed:
            callback()

    async def ping(self) -> bool:
        """Whether the database answers ``SELECT 1`` within the ping timeout."""
        try:
            async with asyncio.timeout(self._ping_timeout), self._engine.connect() as connection:
                connection = await connection.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
                await connection.execute(text("SELECT 1"))
        except Exception as error:  # TimeoutError included: the answer is simply "no"
            _log.warning("database_ping_failed", error=type(error).__name__, detail=str(error))
            return False
        return True

    async def dispose(self) -> None:
        """Close every pooled connection; the engine reconnects if used again."""
        await self._engine.dispose()
