"""Fixtures shared by every test package."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

# schemathesis is a pytest plugin, so pytest's assertion rewriter parses every module of it on
# first import; imported here, at collection, rather than lazily in the middle of a test.
import schemathesis.specs.openapi.schemas  # noqa: F401
from sqlalchemy import make_url

from localrun.broker import EmbeddedBroker
from localrun.postgres import execute_autocommit
from tests.support.clean_tree import left_behind, untracked
from tests.support.processes import ROOT
from tests.support.threads import stop_leftover_loop_threads

# CPython 3.11 keeps the AST converter's recursion depth in state that every call shares
# (gh-106905). A parse nested inside another one resets it, and the outer parse then fails with
# "SystemError: AST constructor recursion depth mismatch". In tests the nested parse comes from a
# finaliser the garbage collector runs mid-parse (an object of an earlier test that logs an
# error with its traceback): 3.11's traceback formatting parses each source line to place its
# ^^^ markers. Without the markers no traceback parses anything; they are all it costs.
if sys.version_info < (3, 12) and hasattr(traceback, "_extract_caret_anchors_from_line_segment"):
    traceback._extract_caret_anchors_from_line_segment = lambda segment: None

# Tracing off unless a test turns it on (the trace e2e test sets OTEL_SDK_DISABLED=false for
# the processes it starts): tests run services and gateways inside this process, and the
# OpenTelemetry instrumentations patch aiohttp, grpc, asyncpg, redis and aiokafka for the rest
# of the session, which would make later tests depend on the order they run in.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

# The PostgreSQL server (not database) tests may use; each session creates its own database.
DEFAULT_TEST_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


_UNTRACKED_AT_START = pytest.StashKey[set[str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_UNTRACKED_AT_START] = untracked(ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left files in the repository (they belong in a temp or data dir)."""
    stray = left_behind(session.stash.get(_UNTRACKED_AT_START, None), untracked(ROOT))
    if stray:
        sys.stderr.write("\nthe test run left files in the repository: " + ", ".join(stray) + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    """Let the interpreter exit even if a test left a Faust consumer thread running."""
    stopped = stop_leftover_loop_threads()
    if stopped:
        sys.stderr.write("\nstopped event-loop threads left running: " + ", ".join(stopped) + "\n")


def _run_in_thread(coroutine: Coroutine[Any, Any, None]) -> None:
    # A separate thread has no event loop, so asyncio.run cannot disturb pytest-asyncio's.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL database, created for this session and dropped after.

    The server comes from ``MC_TEST_POSTGRES_URL`` (default: local, trust auth, user postgres).
    Unreachable server: the test is skipped, or fails when ``CI=true``.
    """
    server = make_url(os.environ.get("MC_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL))
    server = server.set(drivername="postgresql+asyncpg")
    name = f"mc_test_{uuid.uuid4().hex[:12]}"
    try:
        _run_in_thread(execute_autocommit(server, f'CREATE DATABASE "{name}"'))
    except Exception as error:
        reason = (
            f"PostgreSQL unavailable at {server.render_as_string(hide_password=True)} "
            f"(set MC_TEST_POSTGRES_URL): {error!r}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield server.set(database=name).render_as_string(hide_password=False)
    _run_in_thread(execute_autocommit(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Kafka-compatible broker on a free port, for the whole test session."""
    embedded = EmbeddedBroker.start()
    yield embedded
    embedded.stop()


DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the Redis the tests may use (``MC_TEST_REDIS_URL``); keys are namespaced by
    each test, so a shared server is fine. Unreachable: skipped, or a failure when ``CI=true``."""
    url = os.environ.get("MC_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)

    async def ping() -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        _run_in_thread(ping())
    except Exception as error:
        reason = f"Redis unavailable at {url} (set MC_TEST_REDIS_URL): {error!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: a fresh SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
