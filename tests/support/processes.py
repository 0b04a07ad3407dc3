"""Real processes for integration and end-to-end tests: start, wait for, stop, with logs kept."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from localrun.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# What the tests run with: a short fetch wait and session timeout (KAFKA.md), quick pings.
FAST_KAFKA = {
    "MC_KAFKA_FETCH_MAX_WAIT_MS": "10",
    "MC_KAFKA_SESSION_TIMEOUT_S": "2",
    "MC_KAFKA_HEARTBEAT_INTERVAL_S": "0.5",
}


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, within: float, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {last!r}")
        await asyncio.sleep(interval)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to say goodbye, as in a crash."""
        self.popen.kill()
        self.popen.wait()

    def terminate(self, timeout: float = 15) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


def start_process(module: str, env: Mapping[str, str], log_dir: Path, name: str) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Process(name, popen, log_path)


@dataclass
class Stack:
    """The three services and the gateway on free ports, against one broker."""

    base_env: dict[str, str]
    log_dir: Path
    processes: dict[str, Process]
    gateway_url: str

    def start_service(
        self,
        service: str,
        *,
        port: int | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        """Start (or restart) one service; ``env`` adds or overrides settings for this run."""
        port = port or int(self.base_env[f"MC_{service.upper()}_PORT"])
        env = {**self.base_env, **(env or {}), f"MC_{service.upper()}_PORT": str(port)}
        process = start_process(f"{service}_svc", env, self.log_dir, name or service)
        self.processes[name or service] = process
        return process

    async def health(self) -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{self.gateway_url}/health", timeout=aiohttp.ClientTimeout(total=2)
            ) as response,
        ):
            body: dict[str, object] = await response.json()
            return body

    async def wait_until_up(self, *, within: float) -> None:
        """Until ``/health`` says UP: every service serves, not just the first one to start.

        A caller that only waits for its first answer (the admin's login) can otherwise reach
        a service that is still starting and get 503.
        """

        async def up() -> bool:
            try:
                return (await self.health()).get("status") == "UP"
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return False

        await wait_for(up, within=within, interval=0.25)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in self.processes.values():
            try:
                process.popen.wait(15)
            except subprocess.TimeoutExpired:
                process.popen.kill()


def start_stack(
    bootstrap: str,
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
) -> Stack:
    """``service_env`` adds settings to one service only (its MC_METRICS_PORT, ...)."""
    ports = {name: free_port() for name in ("gateway", "payment", "product", "user")}
    env = {
        **FAST_KAFKA,
        **(extra_env or {}),
        "MC_KAFKA_BOOTSTRAP": bootstrap,
        "MC_DATA_DIR": str(data_dir),
        "MC_ENVIRONMENT": "test",
        "MC_SERVICE_CREDENTIAL": secrets.token_urlsafe(32),
        **{f"MC_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    log_dir = data_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(env, log_dir, {}, f"http://127.0.0.1:{ports['gateway']}")
    for service in ("payment", "product", "user"):
        stack.start_service(service, env=(service_env or {}).get(service))
    stack.processes["gateway"] = start_process("gateway", env, log_dir, "gateway")
    return stack
