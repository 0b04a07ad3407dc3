"""Two gateways and two replicas of every service as processes, on PostgreSQL, Redis and Kafka.

Every process gets the same settings, as one ConfigMap and one Secret would give them in a
cluster, plus its own port and an empty data directory of its own (a pod's emptyDir: nothing
is shared through files: user_svc's signing keys live in its database, sealed with a key from
the Secret, see ``signing_keys``). The gateways and the
services are given both addresses of every service (``MC_<SVC>_ADDRESS``, comma-separated).
A killed member is replaced at the same port, as a new pod behind the same Service would be.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from localrun.broker import free_port
from localrun.child_process import die_with_parent
from tests.support.checkout_stack import FRAUD_LIMITS_OUT_OF_REACH
from tests.support.processes import FAST_KAFKA, ROOT, Process, wait_for

SERVICES = ("payment", "product", "user")
REPLICAS = 2
GATEWAYS = 2
DEFAULT_POSTGRES_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_EMAIL = "scale-admin@example.com"


def postgres_server() -> str:
    """The PostgreSQL server the run creates its databases on (the tests' own setting)."""
    return os.environ.get("MC_TEST_POSTGRES_URL", DEFAULT_POSTGRES_SERVER)


async def _autocommit(server: str, statements: list[str]) -> None:
    engine = create_async_engine(
        make_url(server).set(drivername="postgresql+asyncpg"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": 5},
    )
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def create_databases(server: str, run_id: str) -> dict[str, str]:
    """One new database per service; ``MC_<SVC>_DATABASE_URL`` → its URL."""
    url = make_url(server).set(drivername="postgresql+asyncpg")
    names = {service: f"mc_scale_{run_id}_{service}" for service in SERVICES}
    await _autocommit(server, [f'CREATE DATABASE "{name}"' for name in names.values()])
    return {
        f"MC_{service.upper()}_DATABASE_URL": url.set(database=name).render_as_string(
            hide_password=False
        )
        for service, name in names.items()
    }


async def drop_databases(server: str, urls: Mapping[str, str]) -> None:
    names = [make_url(url).database for url in urls.values()]
    await _autocommit(server, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names])


def signing_keys() -> dict[str, str]:
    """Both user_svc replicas sign with the ring in their shared database (no shared files)."""
    return {"MC_JWT_KEY_ENCRYPTION_KEY": secrets.token_urlsafe(32)}


def rate_limit_env(group: str, *, burst: int) -> dict[str, str]:
    """One small budget, on one route the load never calls, shared through Redis.

    The group's name is unique to the run, so it namespaces the Redis keys (the gateway keys
    a bucket by group, kind and client) and no other run spends this budget. Every other route
    falls in groups without a limit, so the load itself is never throttled.
    """
    return {
        "MC_RATE_LIMITS": f'{{"{group}": {{"per_minute": 1, "burst": {burst}}}}}',
        "MC_RATE_LIMIT_GROUPS": f'{{"GET /api/v1/categories": "{group}"}}',
        "MC_RATE_LIMIT_FAILURES": "{}",
    }


@dataclass
class Member:
    """One process of the stack at a fixed port: a gateway or a replica of a service."""

    name: str  # "gateway-0", "user-1", ...
    role: str  # "gateway" or one of SERVICES
    port: int
    starts: int = 0
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None


@dataclass
class ScaleStack:
    """The processes, their shared settings and where their logs go."""

    root: Path
    env: dict[str, str]
    members: dict[str, Member]
    rate_limit_group: str
    rate_limit_burst: int
    admin_password: str
    http: aiohttp.ClientSession = field(repr=False)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def gateways(self) -> list[Member]:
        return [m for m in self.members.values() if m.role == "gateway"]

    def replicas(self, service: str) -> list[Member]:
        return [m for m in self.members.values() if m.role == service]

    def start(self, name: str) -> Member:
        """Start a member, or its replacement after a kill, with a new empty data dir."""
        member = self.members[name]
        member.starts += 1
        run = f"{name}.{member.starts}"
        port_variable = (
            "MC_GATEWAY_PORT" if member.role == "gateway" else f"MC_{member.role.upper()}_PORT"
        )
        env = {**self.env, "MC_DATA_DIR": str(self.root / run), port_variable: str(member.port)}
        module = "gateway" if member.role == "gateway" else f"{member.role}_svc"
        log_path = self.log_dir / f"{run}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Eight processes left running by a runner killed outright would eat the
                # shared machine: the kernel stops them with it.
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        member.process = Process(run, popen, log_path)
        return member

    def kill(self, name: str) -> None:
        """SIGKILL, as a node dying or the OOM killer would."""
        process = self.members[name].process
        if process is not None:
            process.kill()

    def stop(self) -> None:
        """SIGTERM every live process, then SIGKILL what has not stopped in time."""
        running = [m.process for m in self.members.values() if m.alive and m.process]
        for process in running:
            process.popen.terminate()
        deadline = time.monotonic() + 15
        for process in running:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()

    async def health(self, gateway: Member) -> dict[str, Any] | None:
        """A gateway's ``GET /health`` body, or None when it does not answer."""
        try:
            async with self.http.get(
                f"{gateway.url}/health", timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def wait_until_whole(self, *, within: float) -> None:
        """Every gateway ready and seeing every replica UP, and the admin able to sign in."""

        async def whole() -> bool:
            for gateway in self.gateways:
                body = await self.health(gateway)
                if body is None or any(len(up_instances(body, s)) < REPLICAS for s in SERVICES):
                    return False
            return True

        await wait_for(whole, within=within, interval=0.25)
        # user_svc creates the admin in a background task just after it starts serving.
        await wait_for(self._admin_signs_in, within=within, interval=0.25)

    async def _admin_signs_in(self) -> bool:
        try:
            async with self.http.post(
                f"{self.gateways[0].url}/api/v1/auth/token",
                json={"email": ADMIN_EMAIL, "password": self.admin_password},
            ) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


def up_instances(health: Mapping[str, Any], service: str) -> dict[str, str]:
    """Address → instance id of a service's instances that ``/health`` shows UP."""
    instances = health.get("services", {}).get(service, {}).get("instances", [])
    return {i["address"]: i["id"] for i in instances if i.get("status") == "UP"}


def open_scale_stack(
    root: Path,
    *,
    bootstrap: str,
    databases: Mapping[str, str],
    redis_url: str,
    extra_env: Mapping[str, str] | None = None,
) -> ScaleStack:
    """Start two gateways and two replicas of each service; wait with ``wait_until_whole``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    members = {
        f"{role}-{index}": Member(f"{role}-{index}", role, free_port())
        for role, count in (*((s, REPLICAS) for s in SERVICES), ("gateway", GATEWAYS))
        for index in range(count)
    }
    addresses = {
        service: ",".join(m.address for m in members.values() if m.role == service)
        for service in SERVICES
    }
    group = f"scale-{uuid.uuid4().hex[:12]}"
    burst = 4
    admin_password = secrets.token_urlsafe(16)
    env = {
        **FAST_KAFKA,
        "MC_ENVIRONMENT": "test",
        "MC_LOG_LEVEL": "WARNING",
        "MC_KAFKA_BOOTSTRAP": bootstrap,
        **databases,
        **{f"MC_{s.upper()}_ADDRESS": addresses[s] for s in SERVICES},
        # Secrets, as a Kubernetes Secret gives them: one value for every process.
        "MC_SERVICE_CREDENTIAL": secrets.token_urlsafe(32),
        "MC_PAGE_TOKEN_KEY": secrets.token_urlsafe(32),
        "MC_ADMIN_EMAIL": ADMIN_EMAIL,
        "MC_ADMIN_PASSWORD": admin_password,
        **signing_keys(),
        "MC_REDIS_URL": redis_url,
        **rate_limit_env(group, burst=burst),
        # Checkouts cut off by a kill are finished by the recovery loop within seconds.
        "MC_PAYMENT_RECOVERY_GRACE_S": "2",
        "MC_PAYMENT_RECOVERY_INTERVAL_S": "0.5",
        "MC_PAYMENT_REPLAY_WAIT_S": "20",
        **FRAUD_LIMITS_OUT_OF_REACH,
        "MC_UPSTREAM_TIMEOUT_S": "30",
        # The test is about replicas, not password hashing: cheap argon2 leaves the CPU to it.
        "MC_ARGON2_TIME_COST": "1",
        "MC_ARGON2_MEMORY_COST_KIB": "1024",
        "MC_ARGON2_PARALLELISM": "1",
        **(extra_env or {}),
    }
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=45))
    stack = ScaleStack(root, env, members, group, burst, admin_password, http)
    for name in members:
        stack.start(name)
    return stack


async def close_scale_stack(stack: ScaleStack) -> None:
    try:
        await stack.http.close()
    finally:
        stack.stop()
