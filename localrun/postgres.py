"""Databases of their own on a PostgreSQL server, for tests and benchmarks that share none."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


async def execute_autocommit(server: URL | str, statement: str) -> None:
    """``statement`` outside a transaction (CREATE and DROP DATABASE refuse to run in one)."""
    engine = create_async_engine(
        server, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def database_of_its_own(postgres_url: str, prefix: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on ``postgres_url``'s server, dropped afterwards.

    For a test that kills "every other connection" of its database or whose rows must meet no
    other test's; the session's shared database (``postgres_url``) serves the rest.
    """
    server = make_url(postgres_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await execute_autocommit(server, f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        await execute_autocommit(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
