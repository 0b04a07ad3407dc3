"""A shopper's account life through the real gateway and user_svc processes, events on Kafka."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import grpc
from aiokafka import AIOKafkaConsumer

from common.tokens import StaticKeys, TokenVerifier, keys_from_jwks
from localrun.broker import EmbeddedBroker
from microcommerce.user.v1 import user_service_pb2 as pb
from microcommerce.user.v1 import user_service_pb2_grpc
from tests.support.processes import Stack, wait_for

STARTUP_S = 60.0
PASSWORD = "correct horse battery"


async def _jwks(stack: Stack) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{stack.gateway_url}/.well-known/jwks.json") as response,
        ):
            if response.status != 200:
                return None
            body: dict[str, Any] = await response.json()
            return body
    except aiohttp.ClientError:
        return None


async def test_a_shopper_registers_signs_in_refreshes_and_erases_the_account(
    stack: Stack, broker: EmbeddedBroker
) -> None:
    await wait_for(lambda: _jwks(stack), within=STARTUP_S)
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    base = stack.gateway_url
    async with aiohttp.ClientSession() as http:
        created = await http.post(
            f"{base}/api/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        user = await created.json()
        signed_in = await http.post(
            f"{base}/api/v1/auth/token", json={"email": email, "password": PASSWORD}
        )
        pair = await signed_in.json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        me = await http.get(f"{base}/api/v1/users/me", headers=bearer)
        refreshed = await http.post(
            f"{base}/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        replayed = await http.post(
            f"{base}/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        erased = await http.delete(f"{base}/api/v1/users/me", headers=bearer)

        assert created.status == 201
        assert user["roles"] == ["customer"]
        assert signed_in.status == 200
        assert pair["token_type"] == "Bearer"
        assert me.status == 200
        assert (await me.json())["email"] == email
        assert refreshed.status == 200
        assert replayed.status == 401
        assert erased.status == 204

    events = await wait_for(
        lambda: _user_events(broker.bootstrap, user["id"], want=2), within=STARTUP_S
    )
    assert [e["type"] for e in events] == [
        "microcommerce.user.registered",
        "microcommerce.user.deleted",
    ]
    assert all(email not in json.dumps(e) for e in events)


async def test_a_service_gets_an_identity_token_that_verifies_with_the_published_keys(
    stack: Stack,
) -> None:
    jwks = await wait_for(lambda: _jwks(stack), within=STARTUP_S)
    address = f"127.0.0.1:{stack.base_env['MC_USER_PORT']}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        pair = await stub.IssueServiceToken(
            pb.IssueServiceTokenRequest(
                service="payment", credential=stack.base_env["MC_SERVICE_CREDENTIAL"]
            )
        )

    principal = await TokenVerifier(StaticKeys(keys_from_jwks(jwks))).verify(pair.access_token)

    assert principal.is_service
    assert principal.subject == "service:payment"


async def _user_events(bootstrap: str, user_id: str, *, want: int) -> list[dict[str, Any]] | None:
    consumer = AIOKafkaConsumer(
        "user-events",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()
    events = [
        json.loads(record.value)
        for records in batches.values()
        for record in records
        if record.value is not None
    ]
    mine = [event for event in events if event.get("subject") == user_id]
    return mine if len(mine) >= want else None
