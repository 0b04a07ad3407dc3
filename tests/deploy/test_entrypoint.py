"""The image's command line starts each real process, migrates, refuses what it does not know."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.settings import SERVICE_NAMES
from localrun.broker import EmbeddedBroker, free_port
from tests.deploy.chart_facts import GRPC_HEALTH_SERVICES
from tests.deploy.dockerfile import parse
from tests.support.processes import FAST_KAFKA, ROOT, wait_for

START_WITHIN_S = 60.0


def image_env(data_dir: Path, tmp_dir: Path) -> dict[str, str]:
    """The final stage's ENV, with its /data and /tmp moved to the test's own directories."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    env = parse(ROOT / "Dockerfile")[-1].env()
    moved = {}
    for key, value in env.items():
        if key == "PATH" or key.startswith("MC_"):
            continue  # the test's interpreter and settings, not the image's
        for inside, outside in (("/data", data_dir), ("/tmp", tmp_dir)):
            if value == inside or value.startswith(f"{inside}/"):
                value = str(outside) + value.removeprefix(inside)
        moved[key] = value
    return moved


def entrypoint_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """What the image and the chart give a container, minus the cluster: its data and tmp
    dirs in the test's directory, a port of its own."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MC_")}
    return {
        **inherited,
        **image_env(data_dir, data_dir.parent / "tmp"),
        **FAST_KAFKA,
        "MC_DATA_DIR": str(data_dir),
        "MC_ENVIRONMENT": "test",
        "MC_SERVICE_CREDENTIAL": secrets.token_urlsafe(32),
        **settings,
    }


def entrypoint(*argv: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.entrypoint", *argv],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Started:
    """One process started through the entrypoint, its output kept in a file for failures."""

    def __init__(self, command: str, env: Mapping[str, str], log_path: Path, cwd: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "common.entrypoint", command],
                cwd=cwd,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def assert_alive(self) -> None:
        assert self.popen.poll() is None, self.log_path.read_text(errors="replace")[-3000:]

    async def stop(self) -> int:
        self.popen.terminate()
        return await asyncio.to_thread(self.popen.wait, 30)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Started]]:
    processes: list[Started] = []
    yield processes
    for process in processes:  # a failed assertion must not leave a server running
        process.kill()


async def grpc_serving(address: str, service: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
    except grpc.aio.AioRpcError:
        return False
    serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_each_service_command_serves_grpc_health_and_stops_cleanly_on_sigterm(
    service: str, broker: EmbeddedBroker, tmp_path: Path, started: list[Started]
) -> None:
    port = free_port()
    env = entrypoint_env(
        tmp_path / "data",
        MC_KAFKA_BOOTSTRAP=broker.bootstrap,
        **{f"MC_{service.upper()}_PORT": str(port)},
    )
    # The image's working directory is read-only: nothing may be written there.
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    process = Started(service, env, tmp_path / f"{service}.log", workdir)
    started.append(process)

    async def serving() -> bool:
        process.assert_alive()
        # The service name the chart's gRPC probes ask about, not just the server as a whole.
        return await grpc_serving(f"127.0.0.1:{port}", GRPC_HEALTH_SERVICES[service])

    await wait_for(serving, within=START_WITHIN_S, interval=0.2)
    assert await process.stop() == 0, process.log_path.read_text(errors="replace")[-3000:]
    assert not list(workdir.iterdir())


async def test_the_gateway_command_answers_liveness_and_stops_cleanly_on_sigterm(
    broker: EmbeddedBroker, tmp_path: Path, started: list[Started]
) -> None:
    port = free_port()
    env = entrypoint_env(
        tmp_path / "data",
        MC_KAFKA_BOOTSTRAP=broker.bootstrap,
        MC_GATEWAY_PORT=str(port),
        MC_SHUTDOWN_DRAIN_S="0",
    )
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    process = Started("gateway", env, tmp_path / "gateway.log", workdir)
    started.append(process)

    async def live() -> bool:
        process.assert_alive()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{port}/health/live", timeout=aiohttp.ClientTimeout(total=1)
                ) as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(live, within=START_WITHIN_S, interval=0.2)
    assert await process.stop() == 0, process.log_path.read_text(errors="replace")[-3000:]
    assert not list(workdir.iterdir())


def migrated_revision(database: Path, service: str) -> str | None:
    with sqlite3.connect(database) as connection:
        row = connection.execute(f"SELECT version_num FROM alembic_version_{service}").fetchone()
    return None if row is None else str(row[0])


def head_revision(service: str) -> str:
    versions = ROOT / f"{service}_svc" / "migrations" / "versions"
    return max(path.name.split("_")[0] for path in versions.glob("[0-9]*_*.py"))


def test_migrate_brings_every_service_database_to_its_head_revision(tmp_path: Path) -> None:
    result = entrypoint("migrate", env=entrypoint_env(tmp_path))

    assert result.returncode == 0, result.stderr
    for service in SERVICE_NAMES:
        assert migrated_revision(tmp_path / f"{service}.db", service) == head_revision(service)


def test_migrate_with_service_names_migrates_only_those(tmp_path: Path) -> None:
    result = entrypoint("migrate", "user", env=entrypoint_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert migrated_revision(tmp_path / "user.db", "user") == head_revision("user")
    assert not (tmp_path / "payment.db").exists()


def test_migrate_again_is_a_no_op(tmp_path: Path) -> None:
    env = entrypoint_env(tmp_path)
    assert entrypoint("migrate", env=env).returncode == 0

    again = entrypoint("migrate", env=env)

    assert again.returncode == 0, again.stderr
    assert migrated_revision(tmp_path / "product.db", "product") == head_revision("product")


@pytest.mark.parametrize("argv", [[], ["shop"], ["gateway", "--port", "1"]])
def test_an_unknown_command_or_stray_argument_exits_non_zero_with_the_usage(
    argv: list[str], tmp_path: Path
) -> None:
    result = entrypoint(*argv, env=entrypoint_env(tmp_path))

    assert result.returncode != 0
    assert "usage: python -m common.entrypoint" in result.stderr
    assert "gateway" in result.stderr
    assert not (tmp_path / "payment.db").exists(), "a refused command must not touch the data dir"
