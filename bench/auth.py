"""What authentication costs: argon2id per hash, sign-ins/s, and token checks in the gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from common.access import AccessInterceptor
from common.db import Database
from common.grpc_server import create_server, stop_gracefully
from common.logging import configure_logging
from common.migrations import upgrade_to_head
from common.outbox import Outbox
from common.tokens import StaticKeys, TokenVerifier
from gateway.auth import Authenticator
from gateway.routes import build_route_table
from microcommerce.user.v1 import user_service_pb2 as pb
from microcommerce.user.v1 import user_service_pb2_grpc
from user_svc.main import SPEC, accounts, key_ring, user_service
from user_svc.passwords import Passwords
from user_svc.settings import UserSettings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PASSWORD = "a benchmark passphrase"
GOAL_MS = 0.2


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="sign-ins in flight")
    options, _unknown = parser.parse_known_args(argv)  # other benchmarks' options pass through
    return options


async def _rate(duration: float, concurrency: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Calls per second with ``concurrency`` workers looping for ``duration`` seconds."""
    done = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def hash_timing(settings: UserSettings, rounds: int = 10) -> dict[str, Any]:
    passwords = Passwords(
        time_cost=settings.argon2_time_cost,
        memory_cost_kib=settings.argon2_memory_cost_kib,
        parallelism=settings.argon2_parallelism,
    )
    hasher = passwords._hasher
    stored = hasher.hash(PASSWORD)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        hasher.verify(stored, PASSWORD)
        samples.append((time.perf_counter() - started) * 1000)
    return {"parameters": passwords.parameters, "ms_per_hash_median": statistics.median(samples)}


async def sign_ins_per_second(
    settings: UserSettings, duration: float, concurrency: int
) -> dict[str, float]:
    """IssueToken over real gRPC against an in-process user_svc on SQLite."""
    url = settings.user_database_url
    assert url is not None
    database = Database.from_url(url.get_secret_value())
    await upgrade_to_head(database.engine, SPEC.migrations)
    ring = key_ring(settings)
    use_cases = accounts(database, Outbox("user"), settings, ring)
    server = await create_server(
        services=[user_service(use_cases)],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(ring))],
    )
    await server.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    try:
        emails = [f"bench-{i}@example.com" for i in range(concurrency)]
        for email in emails:
            await stub.CreateUser(pb.CreateUserRequest(email=email, password=PASSWORD, name="B"))
        turn = 0

        async def sign_in() -> None:
            nonlocal turn
            turn += 1
            await stub.IssueToken(
                pb.IssueTokenRequest(email=emails[turn % len(emails)], password=PASSWORD)
            )

        return {
            "sign_ins_per_s": await _rate(duration, concurrency, sign_in),
            "concurrency": concurrency,
        }
    finally:
        await channel.close(None)
        await stop_gracefully(server.server, server.health, 0)
        await database.dispose()


async def verification_cost(settings: UserSettings, duration: float) -> dict[str, float]:
    """The gateway's check of a USER route's bearer token (``Authenticator.admit``).

    "repeat": the same token on every request, as a signed-in client sends it (the verifier
    remembers it); "first": a token never seen before on every request (signature checked).
    """
    ring = key_ring(settings)
    signer = ring.signer()
    keys = StaticKeys({signer.kid: signer.public_key})
    table = build_route_table([pb.DESCRIPTOR.services_by_name["UserService"]])
    route = next(r for r in table.routes if r.method.name == "GetMe")

    def request(token: str) -> web.Request:
        headers = {"Authorization": f"Bearer {token}"}
        return make_mocked_request("GET", "/api/v1/users/me", headers=headers)

    repeat_authenticator = Authenticator(TokenVerifier(keys))
    repeated = request(signer.mint("user-1", ["customer"]))

    async def admit_repeat() -> None:
        await repeat_authenticator.admit(repeated, route)

    fresh_authenticator = Authenticator(TokenVerifier(keys))
    fresh = [request(signer.mint(f"user-{n}", ["customer"])) for n in range(20_000)]
    turn = 0

    async def admit_first() -> None:
        nonlocal turn
        turn += 1
        await fresh_authenticator.admit(fresh[turn % len(fresh)], route)

    repeat_rate = await _rate(duration, 1, admit_repeat)
    first_rate = await _rate(min(duration, 2.0), 1, admit_first)
    return {
        "repeat_per_s": repeat_rate,
        "repeat_ms_per_request": 1000 / repeat_rate,
        "first_per_s": first_rate,
        "first_ms_per_request": 1000 / first_rate,
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = _parse(list(sys.argv[1:] if argv is None else argv))
    configure_logging("bench", "WARNING")
    with tempfile.TemporaryDirectory() as scratch:
        settings = UserSettings.model_validate(
            {
                "data_dir": scratch,
                "user_database_url": f"sqlite+aiosqlite:///{scratch}/user.db",
                # Sign-ins of the benchmark come from one client: do not throttle them.
                "login_max_failures_per_client": 1_000_000,
            }
        )
        hashing = hash_timing(settings)
        sign_ins = asyncio.run(sign_ins_per_second(settings, options.duration, options.concurrency))
        verification = asyncio.run(verification_cost(settings, options.duration))
    result = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "argon2": hashing,
        "sign_in": sign_ins,
        "gateway_token_check": verification | {"goal_ms": GOAL_MS},
    }
    sys.stdout.write(
        f"argon2id {hashing['parameters']}: {hashing['ms_per_hash_median']:.1f} ms per hash\n"
        f"sign-ins (IssueToken over gRPC, {options.concurrency} in flight): "
        f"{sign_ins['sign_ins_per_s']:.1f}/s\n"
        f"gateway token check, token seen before: {verification['repeat_per_s']:.0f}/s, "
        f"{verification['repeat_ms_per_request']:.4f} ms per request (goal < {GOAL_MS} ms)\n"
        f"gateway token check, new token: {verification['first_per_s']:.0f}/s, "
        f"{verification['first_ms_per_request']:.3f} ms per request\n"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "auth.json").write_text(json.dumps(result, indent=2))
    # A figure, not a gate: the machines are shared, and a busy neighbour is not a failure.
    return 0


if __name__ == "__main__":
    sys.exit(main())
