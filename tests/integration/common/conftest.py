"""Database fixtures for the common-kernel integration tests: each runs on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.db import Database


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """A Database on ``db_url``, disposed of after the test."""
    db = Database.from_url(db_url)
    yield db
    await db.dispose()
