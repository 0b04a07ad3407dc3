"""Token buckets in process: burst, refill, headers, and which group a route falls in."""

from __future__ import annotations

from gateway.metrics import GatewayMetrics
from gateway.ratelimit import LocalBuckets, RateLimiter
from gateway.routes import build_route_table
from gateway.settings import RateLimit
from tests.support.widget_service import WIDGET_SERVICE

LIMIT = RateLimit(per_minute=60, burst=3)  # one token a second


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_is_allowed_then_refused_until_a_token_is_back() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)

    decisions = [await buckets.take("k", LIMIT) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].retry_after_s == 1.0
    clock.now += 1.0
    assert (await buckets.take("k", LIMIT)).allowed


async def test_each_key_has_its_own_bucket() -> None:
    buckets = LocalBuckets(Clock())
    for _ in range(3):
        await buckets.take("a", LIMIT)

    assert not (await buckets.take("a", LIMIT)).allowed
    assert (await buckets.take("b", LIMIT)).allowed


async def test_a_refused_answer_carries_retry_after_and_the_ratelimit_headers() -> None:
    buckets = LocalBuckets(Clock())
    for _ in range(3):
        await buckets.take("k", LIMIT)

    headers = (await buckets.take("k", LIMIT)).headers()

    assert headers == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "3",
        "Retry-After": "1",
    }


async def test_a_bucket_never_fills_past_its_burst() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    await buckets.take("k", LIMIT)

    clock.now += 3600

    assert (await buckets.take("k", LIMIT)).remaining == 2


def test_routes_fall_in_the_group_of_an_exact_entry_or_the_longest_prefix() -> None:
    table = build_route_table([WIDGET_SERVICE])
    limiter = RateLimiter(
        LocalBuckets(),
        {},
        {"/v1/widgets": "widgets", "/v1/widgets/{id}": "one", "POST /v1/widgets": "writes"},
        GatewayMetrics(),
    )
    groups = {f"{r.http_method} {r.template.text}": limiter.group_of(r) for r in table.routes}

    assert groups["GET /v1/widgets"] == "widgets"
    assert groups["POST /v1/widgets"] == "writes"
    assert groups["GET /v1/widgets/{id}"] == "one"
    assert groups["GET /v0/shelves/{shelf_id}/widgets/{id}"] == "default"


async def test_peeking_spends_no_token_and_refuses_only_an_empty_bucket() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)

    looks = [await buckets.peek("k", LIMIT) for _ in range(5)]
    for _ in range(3):
        await buckets.take("k", LIMIT)
    empty = await buckets.peek("k", LIMIT)

    assert [d.allowed for d in looks] == [True] * 5
    assert looks[-1].remaining == 3
    assert not empty.allowed
    assert empty.retry_after_s == 1.0
    clock.now += 1.0
    assert (await buckets.peek("k", LIMIT)).allowed
