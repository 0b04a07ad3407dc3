"""The Kafka health stream as a user of /health sees it, with real processes and a real broker."""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from common.topics import TOPIC_PARTITIONS
from localrun.broker import EmbeddedBroker, free_port, wait_for_port
from tests.support.processes import Stack, wait_for

SERVICES = ("payment", "product", "user")
STARTUP_S = 60.0


async def statuses(stack: Stack) -> dict[str, Any]:
    body = await stack.health()
    services: dict[str, Any] = body["services"]  # type: ignore[assignment]
    return {
        "status": body["status"],
        "broker": body["broker"]["status"],  # type: ignore[index]
        **{name: services[name]["status"] for name in SERVICES},
    }


async def reads(stack: Stack, **expected: str) -> dict[str, Any] | None:
    try:
        current = await statuses(stack)
    except (aiohttp.ClientError, TimeoutError):
        return None
    return current if all(current[k] == v for k, v in expected.items()) else None


@pytest.fixture
async def up_stack(stack: Stack) -> Stack:
    await wait_for(lambda: reads(stack, status="UP"), within=STARTUP_S)
    return stack


async def test_everything_is_up_once_the_stack_has_started(up_stack: Stack) -> None:
    body = await up_stack.health()

    assert body["status"] == "UP"
    assert body["broker"] == {"status": "UP"}
    for name in SERVICES:
        service = body["services"][name]  # type: ignore[index]
        assert service["status"] == "UP"
        assert service["last_seen"].endswith("Z")
        assert service["rtt_ms"] is None or service["rtt_ms"] >= 0
        [instance] = service["instances"]
        assert instance["address"] == f"127.0.0.1:{up_stack.base_env[f'MC_{name.upper()}_PORT']}"
        assert instance["status"] == "UP"
        assert instance["version"]
        assert instance["checks"] == {"database": "UP"}


async def test_liveness_readiness_and_registry_answer(up_stack: Stack) -> None:
    async with aiohttp.ClientSession(up_stack.gateway_url) as http:
        async with http.get("/health/live") as live:
            assert live.status == 200
        ready = await wait_for(lambda: _ready(http), within=10)
        assert ready["checks"] == {"upstreams": "UP", "broker": "UP", "accepting": "UP"}
        async with http.get("/api/v1/services") as response:
            registry = await response.json()

    by_name = {s["name"]: s for s in registry["services"]}
    assert sorted(by_name) == list(SERVICES)
    product = by_name["product"]
    assert product["status"] == "UP"
    assert product["instances"] == [f"127.0.0.1:{up_stack.base_env['MC_PRODUCT_PORT']}"]
    rpcs = {rpc["name"]: rpc["rest"] for svc in product["grpc_services"] for rpc in svc["rpcs"]}
    assert rpcs["GetProduct"] == ["GET /api/v1/products/{id}"]
    assert rpcs["ReserveStock"] == []  # gRPC only: service callers, never REST


async def _ready(http: aiohttp.ClientSession) -> dict[str, Any] | None:
    async with http.get("/health/ready") as response:
        return await response.json() if response.status == 200 else None


async def test_every_contract_topic_is_declared_with_its_partitions(
    up_stack: Stack, broker: EmbeddedBroker
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(TOPIC_PARTITIONS))
    finally:
        await admin.close()

    partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    assert partitions == TOPIC_PARTITIONS


async def test_a_refused_request_answers_a_problem_with_its_request_id(up_stack: Stack) -> None:
    # A request the catalog refuses (a negative page_size, AIP-158) shows the error path
    # through real processes.
    async with (
        aiohttp.ClientSession(up_stack.gateway_url) as http,
        http.get(
            "/api/v1/products?page_size=-1", headers={"X-Request-Id": "e2e-request-1"}
        ) as response,
    ):
        body = await response.json(content_type=None)

        assert response.status == 400
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert response.headers["X-Request-Id"] == "e2e-request-1"
    assert body["code"] == "INVALID_ARGUMENT"
    assert body["status"] == 400


async def test_a_killed_service_is_down_within_3s_and_up_again_soon_after_its_return(
    up_stack: Stack,
) -> None:
    up_stack.processes["product"].kill()

    degraded = await wait_for(
        lambda: reads(up_stack, product="DOWN", status="DEGRADED", payment="UP"), within=3.0
    )
    assert degraded["broker"] == "UP"

    restarted = up_stack.start_service("product")
    port = int(up_stack.base_env["MC_PRODUCT_PORT"])
    wait_for_port("127.0.0.1", port, timeout=30)  # it has returned: its gRPC port answers
    assert restarted.popen.poll() is None
    # The contract bounds only the way down (3 s). On the way up the new instance still has to
    # join its consumer group after its port opens, which takes seconds on a loaded machine.
    await wait_for(lambda: reads(up_stack, product="UP", status="UP"), within=15.0)


async def test_two_instances_of_a_service_are_two_instances(up_stack: Stack) -> None:
    second = up_stack.start_service("user", port=free_port(), name="user-2")
    try:

        async def two_up() -> list[Any] | None:
            body = await up_stack.health()
            instances: list[Any] = body["services"]["user"]["instances"]  # type: ignore[index]
            return instances if [i["status"] for i in instances] == ["UP", "UP"] else None

        instances = await wait_for(two_up, within=20)
        assert len({i["id"] for i in instances}) == 2
    finally:
        second.terminate()


async def test_a_frozen_broker_reads_degraded_with_services_unknown_and_recovers(
    up_stack: Stack, broker: EmbeddedBroker
) -> None:
    broker.freeze()
    try:
        await wait_for(
            lambda: reads(
                up_stack,
                status="DEGRADED",
                broker="DOWN",
                payment="UNKNOWN",
                product="UNKNOWN",
                user="UNKNOWN",
            ),
            within=5.0,
        )
        async with (
            aiohttp.ClientSession(up_stack.gateway_url) as http,
            http.get("/health/live", timeout=aiohttp.ClientTimeout(total=2)) as live,
        ):
            assert live.status == 200  # the gateway neither hangs nor crashes
    finally:
        broker.thaw()

    await wait_for(lambda: reads(up_stack, status="UP"), within=20)


async def test_health_is_503_down_when_no_service_answers(up_stack: Stack) -> None:
    for name in SERVICES:
        up_stack.processes[name].kill()

    await wait_for(lambda: reads(up_stack, status="DOWN", broker="UP"), within=3.0)
    async with aiohttp.ClientSession(up_stack.gateway_url) as http, http.get("/health") as response:
        assert response.status == 503

    for name in SERVICES:  # leave the module's stack as it was found
        up_stack.start_service(name)
    with contextlib.suppress(AssertionError):
        await wait_for(lambda: reads(up_stack, status="UP"), within=STARTUP_S)
