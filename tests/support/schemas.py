"""An engine on an empty database of either backend, for tests that run migrations themselves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as create_engine

from localrun.postgres import execute_autocommit


@asynccontextmanager
async def empty_database(db_url: str, prefix: str) -> AsyncIterator[AsyncEngine]:
    """An engine that sees no table: a fresh SQLite file as given, or on PostgreSQL a schema of
    its own as the only one on the search path.

    The PostgreSQL database is the session's, where other tests migrate every service, so the
    migrations must create their tables in a schema of their own, and reflection (which reads
    what the search path makes visible) must see nothing else.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    postgres = make_url(db_url).get_backend_name() == "postgresql"
    if postgres:
        await execute_autocommit(db_url, f'CREATE SCHEMA "{schema}"')
    engine = create_engine(db_url)
    if postgres:
        # Before the dialect's first-connect initialisation, which reads current_schema().
        @event.listens_for(engine.sync_engine, "connect", insert=True)
        def use_schema(dbapi_connection: Any, _record: Any) -> None:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            cursor = dbapi_connection.cursor()
            cursor.execute(f'SET SESSION search_path TO "{schema}"')
            cursor.close()
            dbapi_connection.autocommit = autocommit

    try:
        yield engine
    finally:
        await engine.dispose()
        if postgres:
            await execute_autocommit(db_url, f'DROP SCHEMA "{schema}" CASCADE')
