"""Rate limits (in process and in the real Redis), CORS, security headers and size limits."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest

from common.tokens import TokenVerifier
from gateway.ratelimit import LocalBuckets, RedisBuckets
from gateway.settings import RateLimit
from tests.support.tokens import KEYS, admin_token, bearer, customer_token
from tests.support.widget_service import WIDGET_SERVICE, WidgetServer

if TYPE_CHECKING:
    from tests.integration.gateway.conftest import HardenedGatewayFactory

W = WIDGET_SERVICE.full_name
TWO_A_MINUTE = {"default": {"per_minute": 2, "burst": 2}}


async def test_past_its_burst_a_client_gets_429_with_retry_after_and_ratelimit_headers(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, rate_limits=TWO_A_MINUTE)

    first = await gateway.get("/v1/widgets/w")
    await gateway.get("/v1/widgets/w")
    refused = await gateway.get("/v1/widgets/w")

    assert first.status == 200
    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    body = await refused.json()
    assert body["code"] == "RESOURCE_EXHAUSTED"
    assert body["reason"] == "RATE_LIMITED"
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) > 0
    metrics = await (await gateway.get("/metrics")).text()
    assert 'gateway_rate_limited_total{group="default",key="address"} 1.0' in metrics


async def test_an_authenticated_user_has_a_budget_of_their_own(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    buckets = LocalBuckets()
    limit = RateLimit(per_minute=2, burst=2)
    token = customer_token()
    subject = (await TokenVerifier(KEYS).verify(token)).subject
    for _ in range(2):  # the user spent their budget elsewhere (another replica, address)
        await buckets.take(f"default:user:{subject}", limit)
    gateway = await start_gateway(
        {W: widget_server.address}, buckets=buckets, rate_limits=TWO_A_MINUTE
    )

    as_user = await gateway.get("/v1/widgets/w", headers=bearer(token))
    anonymous = await gateway.get("/v1/widgets/w")

    assert as_user.status == 429
    assert anonymous.status == 200


async def test_auth_routes_have_a_stricter_budget_than_the_rest(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        rate_limits={
            "default": {"per_minute": 600, "burst": 100},
            "auth": {"per_minute": 1, "burst": 1},
        },
        rate_limit_groups={"GET /v1/widgets/{id}": "auth"},
    )

    statuses = [(await gateway.get("/v1/widgets/w")).status for _ in range(2)]
    others = [(await gateway.get("/v1/widgets")).status for _ in range(5)]

    assert statuses == [200, 429]
    assert others == [200] * 5


@pytest.mark.redis
async def test_replicas_sharing_a_redis_share_one_budget(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer, redis_url: str
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    replicas = [
        await start_gateway(
            {W: widget_server.address},
            buckets=RedisBuckets(redis_url, prefix=prefix),
            rate_limits={"default": {"per_minute": 3, "burst": 3}},
        )
        for _ in range(2)
    ]

    statuses = [(await replicas[i % 2].get("/v1/widgets/w")).status for i in range(5)]

    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.redis
async def test_concurrent_requests_never_overspend_a_shared_budget(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer, redis_url: str
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    replicas = [
        await start_gateway(
            {W: widget_server.address},
            buckets=RedisBuckets(redis_url, prefix=prefix),
            rate_limits={"default": {"per_minute": 1, "burst": 10}},
        )
        for _ in range(2)
    ]

    responses = await asyncio.gather(*(replicas[i % 2].get("/v1/widgets/w") for i in range(30)))

    assert sorted(r.status for r in responses) == [200] * 10 + [429] * 20


async def test_with_redis_unreachable_requests_pass_and_the_failure_is_counted(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer, closed_port_address: str
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        buckets=RedisBuckets(f"redis://{closed_port_address}/0"),
        rate_limits=TWO_A_MINUTE,
    )

    statuses = [(await gateway.get("/v1/widgets/w")).status for _ in range(3)]

    assert statuses == [200] * 3
    metrics = await (await gateway.get("/metrics")).text()
    assert "gateway_rate_limit_backend_errors_total 3.0" in metrics


async def test_cors_preflight_and_answers_name_an_allowed_origin_only(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address}, cors_allowed_origins=("https://shop.example",)
    )
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}

    allowed = await gateway.options("/v1/widgets", headers=preflight)
    answer = await gateway.get("/v1/widgets/w", headers={"Origin": "https://shop.example"})
    foreign = await gateway.get("/v1/widgets/w", headers={"Origin": "https://evil.example"})

    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    assert answer.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-Request-Id" in answer.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in foreign.headers


async def test_by_default_no_origin_gets_cors_headers(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address})

    answer = await gateway.get("/v1/widgets/w", headers={"Origin": "https://shop.example"})

    assert not [h for h in answer.headers if h.startswith("Access-Control-")]


async def test_every_answer_carries_the_security_headers(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address})

    answers = [
        await gateway.get("/v1/widgets/w"),
        await gateway.get("/no/such/thing"),
        await gateway.get("/docs"),
        await gateway.get("/openapi.json"),
    ]

    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in answers[0].headers["Content-Security-Policy"]
    assert "script-src" not in answers[2].headers["Content-Security-Policy"]
    assert "default-src 'self'" in answers[2].headers["Content-Security-Policy"]


async def test_an_answer_to_a_token_bearer_is_never_cached(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address})

    with_token = await gateway.get("/v1/widgets/w", headers=bearer(customer_token()))
    refused = await gateway.post("/v1/widgets", json={}, headers={"Authorization": "Bearer x"})

    assert with_token.headers["Cache-Control"] == "private, no-store"
    assert refused.status == 401
    assert refused.headers["Cache-Control"] == "private, no-store"


async def test_an_oversized_header_is_refused_before_any_handler(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, max_field_bytes=1024)

    answer = await gateway.get("/v1/widgets/w", headers={"X-Padding": "a" * 2048})

    assert answer.status == 400  # aiohttp's parser answers before any handler or middleware
    assert not [c for c in widget_server.servicer.calls if c.method == "GetWidget"]


async def test_a_client_trickling_its_body_gets_408(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, body_read_timeout_s=0.2)
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    token = bearer(customer_token())["Authorization"]
    writer.write(
        b"POST /v1/widget-orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: k1\r\nAuthorization: " + token.encode() + b"\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()

    status_line = await asyncio.wait_for(reader.readline(), timeout=10)

    assert status_line.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_a_client_trickling_its_headers_is_disconnected(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, keepalive_timeout_s=0.3)
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(b"GET /v1/widgets/w HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()

    # aiohttp's keep-alive timer runs from the connection's start: headers that never end
    # cost the gateway a connection for that long, not forever.
    closed = await asyncio.wait_for(reader.read(), timeout=10)

    assert closed == b""
    writer.close()


# Sign-in stand-ins: GetWidget answers 200, FailWidget answers the status it is asked for,
# CreateWidget plays registration. All three in the `auth` group.
AUTH_GROUPS = {
    "GET /v1/widgets/{id}": "auth",
    "GET /v1/failures/{code}": "auth",
    "POST /v1/widgets": "auth",
}
TWO_FAILURES = {"auth": {"per_minute": 1, "burst": 2}}


def fail_widget_calls(server: WidgetServer) -> int:
    return len([c for c in server.servicer.calls if c.method == "FailWidget"])


async def test_with_the_default_limits_a_busy_office_signs_in_a_hundred_times_at_once(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, rate_limit_groups=AUTH_GROUPS)

    statuses = {(await gateway.get(f"/v1/widgets/w-{n}")).status for n in range(100)}

    assert statuses == {200}


async def test_failed_attempts_spend_a_tight_budget_and_then_the_address_is_refused(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        rate_limit_groups=AUTH_GROUPS,
        rate_limit_failures=TWO_FAILURES,
    )

    successes = [(await gateway.get("/v1/widgets/w")).status for _ in range(5)]
    failures = [(await gateway.get("/v1/failures/UNAUTHENTICATED")).status for _ in range(3)]
    after = await gateway.get("/v1/widgets/w")

    assert successes == [200] * 5  # successes spend none of it
    assert failures == [401, 401, 429]
    assert fail_widget_calls(widget_server) == 2  # the refusal came before the call
    assert after.status == 429
    assert int(after.headers["Retry-After"]) > 0
    assert (await after.json())["reason"] == "RATE_LIMITED"
    metrics = await (await gateway.get("/metrics")).text()
    assert 'gateway_rate_limited_total{group="auth",key="failures"} 2.0' in metrics


async def test_server_errors_do_not_spend_the_failure_budget(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        rate_limit_groups=AUTH_GROUPS,
        rate_limit_failures=TWO_FAILURES,
    )

    statuses = [(await gateway.get("/v1/failures/INTERNAL")).status for _ in range(4)]

    assert statuses == [500] * 4


async def test_every_registration_spends_the_failure_budget_even_when_it_succeeds(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        rate_limit_groups=AUTH_GROUPS,
        rate_limit_failures=TWO_FAILURES,
        rate_limit_charged_every_call="POST /v1/widgets",
    )
    admin = bearer(admin_token())

    statuses = [
        (await gateway.post("/v1/widgets", json={"name": "x"}, headers=admin)).status
        for _ in range(3)
    ]

    assert statuses == [201, 201, 429]


async def test_behind_a_trusted_proxy_one_clients_failures_do_not_lock_out_its_neighbours(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        rate_limit_groups=AUTH_GROUPS,
        rate_limit_failures=TWO_FAILURES,
        trusted_proxies=("127.0.0.0/8",),
    )
    guesser = {"X-Forwarded-For": "203.0.113.66"}
    colleague = {"X-Forwarded-For": "203.0.113.7"}

    guesses = [
        (await gateway.get("/v1/failures/UNAUTHENTICATED", headers=guesser)).status
        for _ in range(3)
    ]
    neighbour = await gateway.get("/v1/widgets/w", headers=colleague)

    assert guesses == [401, 401, 429]
    assert neighbour.status == 200


@pytest.mark.redis
async def test_replicas_sharing_a_redis_share_the_failure_budget(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer, redis_url: str
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    replicas = [
        await start_gateway(
            {W: widget_server.address},
            buckets=RedisBuckets(redis_url, prefix=prefix),
            rate_limit_groups=AUTH_GROUPS,
            rate_limit_failures=TWO_FAILURES,
        )
        for _ in range(2)
    ]

    successes = [(await replicas[i % 2].get("/v1/widgets/w")).status for i in range(4)]
    failures = [
        (await replicas[i % 2].get("/v1/failures/UNAUTHENTICATED")).status for i in range(3)
    ]

    assert successes == [200] * 4
    assert failures == [401, 401, 429]
