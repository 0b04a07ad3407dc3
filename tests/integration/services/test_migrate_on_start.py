"""MC_MIGRATE_ON_START=false: a service leaves migrating to the migrate step, checks the schema."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from common.db import Database
from common.migrations import (
    SchemaNotAtHead,
    alembic_config,
    require_head,
    script_location_of,
    upgrade_to_head,
)
from common.schema_state import current_revisions, script_heads
from common.service_runner import run_service
from localrun.broker import free_port
from tests.support.processes import FAST_KAFKA, ROOT
from user_svc.main import SPEC as USER
from user_svc.settings import UserSettings


def settings(data_dir: Path, *, migrate_on_start: bool) -> UserSettings:
    return UserSettings.model_validate(
        {
            "port": free_port(),
            # No broker: the schema decision comes before Kafka, and serving needs none.
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "data_dir": data_dir,
            "migrate_on_start": migrate_on_start,
            **{k.removeprefix("MC_").lower(): v for k, v in FAST_KAFKA.items()},
        }
    )


def tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(name) for (name,) in rows}


async def test_a_service_not_migrating_refuses_an_unmigrated_database_naming_the_fix(
    tmp_path: Path,
) -> None:
    with pytest.raises(SchemaNotAtHead) as refused:
        await asyncio.wait_for(
            run_service(USER, settings(tmp_path, migrate_on_start=False)), timeout=30
        )

    message = str(refused.value)
    assert "MC_MIGRATE_ON_START=false" in message
    assert "python -m common.migrations upgrade user" in message
    assert "no revision" in message
    assert "alembic_version_user" not in tables(tmp_path / "user.db"), "it must not migrate"


async def test_a_service_not_migrating_serves_once_the_migrate_step_brought_it_to_head(
    tmp_path: Path,
) -> None:
    await upgrade_to_head(f"sqlite+aiosqlite:///{tmp_path / 'user.db'}", USER.migrations)
    config = settings(tmp_path, migrate_on_start=False)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(USER, config, until=stop.wait))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{config.port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_a_service_migrating_on_start_migrates_an_empty_database(tmp_path: Path) -> None:
    config = settings(tmp_path, migrate_on_start=True)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(USER, config, until=stop.wait))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{config.port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

    assert "alembic_version_user" in tables(tmp_path / "user.db")


def test_the_refusal_reaches_the_process_exit_status_and_stderr(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MC_DATA_DIR": str(tmp_path),
        "MC_ENVIRONMENT": "test",
        "MC_MIGRATE_ON_START": "false",
        "MC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "MC_USER_PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "common.entrypoint", "user"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "MC_MIGRATE_ON_START=false" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
async def test_the_schema_check_reads_postgresql_version_tables_too(postgres_url: str) -> None:
    server = make_url(postgres_url)
    name = f"mc_head_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database.from_url(server.set(database=name))
    try:
        with pytest.raises(SchemaNotAtHead, match="no revision"):
            await require_head(database.engine, USER.migrations, "user")

        await upgrade_to_head(database.engine, USER.migrations)

        await require_head(database.engine, USER.migrations, "user")
    finally:
        await database.dispose()
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def test_a_service_importing_its_code_loads_no_alembic() -> None:
    # Migrating imports it when the schema is behind; serving never does.
    script = "import sys, user_svc.main; print('alembic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("service", ["payment", "product", "user"])
def test_the_heads_read_without_alembic_are_alembics(service: str) -> None:
    location = script_location_of(service)
    expected = set(ScriptDirectory.from_config(alembic_config(location)).get_heads())

    assert script_heads(location) == expected


async def test_the_current_revision_is_read_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'user.db'}"
    database = Database.from_url(url)
    try:
        assert await current_revisions(database.engine, "user") == set()  # empty database
        await upgrade_to_head(database.engine, USER.migrations)
        assert await current_revisions(database.engine, "user") == script_heads(USER.migrations)
    finally:
        await database.dispose()
