"""Token-bucket rate limits per client address and per user, in-process or shared in Redis.

Answers carry the IETF draft's ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds until the bucket is full again) headers; a refusal is a 429
problem with ``Retry-After``. With Redis unreachable the limiter fails open: a rate limit
protects the services, and refusing every request would be the outage it is meant to prevent.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from common.logging import get_logger
from common.reasons import Reason
from gateway.auth import PRINCIPAL_KEY
from gateway.client_address import client_address
from gateway.metrics import GatewayMetrics
from gateway.problems import ProblemError
from gateway.routes import Route
from gateway.settings import RateLimit

_log = get_logger(__name__)

DEFAULT_GROUP = "default"
# In-process buckets kept; the least recently used go first (a full bucket loses nothing).
MAX_LOCAL_BUCKETS = 100_000


@dataclass(frozen=True)
class Decision:
    """The outcome of taking one token."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full
    retry_after_s: float  # until one token is back (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


def _decide(tokens: float, limit: RateLimit, allowed: bool) -> Decision:
    rate = limit.per_minute / 60.0
    return Decision(
        allowed=allowed,
        limit=limit.burst,
        remaining=max(0, math.floor(tokens)),
        reset_s=(limit.burst - tokens) / rate,
        retry_after_s=0.0 if allowed else (1.0 - tokens) / rate,
    )


class Buckets(Protocol):
    """Where the buckets live."""

    async def take(self, key: str, limit: RateLimit) -> Decision:
        """Take one token when there is one."""
        ...

    async def peek(self, key: str, limit: RateLimit) -> Decision:
        """Whether a token is there, taking none (a budget charged after the answer)."""
        ...

    async def close(self) -> None: ...


class LocalBuckets:
    """One process's buckets: exact and fast, but each replica has its own budget."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str, limit: RateLimit) -> Decision:
        return self._spend(key, limit, 1.0)

    async def peek(self, key: str, limit: RateLimit) -> Decision:
        return self._spend(key, limit, 0.0)

    def _spend(self, key: str, limit: RateLimit, cost: float) -> Decision:
        now = self._clock()
        state = self._buckets.pop(key, None)
        if state is None and not cost:
            return _decide(float(limit.burst), limit, True)  # an unseen key costs no memory
        tokens, updated = state or (float(limit.burst), now)
        tokens = min(float(limit.burst), tokens + (now - updated) * limit.per_minute / 60.0)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_LOCAL_BUCKETS:
            self._buckets.popitem(last=False)
        return _decide(tokens, limit, allowed)

    async def close(self) -> None:
        self._buckets.clear()


# Atomic refill-and-take on the Redis server's clock, so replicas with skewed clocks agree.
# The key expires once the bucket would be full again: an idle client costs no memory. A cost
# of 0 only looks (and writes nothing for a key that does not exist).
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  if cost == 0 then
    return {1, tostring(burst)}
  end
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every gateway replica pointing at it."""

    def __init__(self, url: str, *, prefix: str = "mc:gw:rl:", timeout_s: float = 0.25) -> None:
        # Short timeouts: a slow Redis must cost a request milliseconds, not seconds.
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._script = self._redis.register_script(_TAKE_SCRIPT)
        self._prefix = prefix

    async def take(self, key: str, limit: RateLimit) -> Decision:
        return await self._spend(key, limit, 1)

    async def peek(self, key: str, limit: RateLimit) -> Decision:
        return await self._spend(key, limit, 0)

    async def _spend(self, key: str, limit: RateLimit, cost: int) -> Decision:
        allowed, tokens = await self._script(
            keys=[self._prefix + key], args=[limit.per_minute / 60.0, limit.burst, cost]
        )
        return _decide(float(tokens), limit, bool(int(allowed)))

    async def close(self) -> None:
        await self._redis.aclose()


_DECISION_KEY = web.RequestKey("mc_rate_limit", Decision)


class RateLimiter:
    """Applies the limits of a route's group to the caller's address and, once known, user.

    A group may also have a failure budget: tight, per client address, checked before each
    call (an empty one refuses with 429) and charged after the answer when the answer is a
    4xx, or after every answer of the routes named ``charged_every_call`` (registrations).
    Many successful sign-ins from one office cost only the group's every-call budget;
    guessing passwords empties the failure budget quickly.
    """

    def __init__(
        self,
        buckets: Buckets,
        limits: Mapping[str, RateLimit],
        groups: Mapping[str, str],
        metrics: GatewayMetrics,
        *,
        failure_limits: Mapping[str, RateLimit] | None = None,
        charged_every_call: Collection[str] = (),
        warn_every_s: float = 10.0,
    ) -> None:
        self._buckets = buckets
        self._limits = dict(limits)
        self._failure_limits = dict(failure_limits or {})
        self._charged_every_call = frozenset(charged_every_call)
        self._exact = {k: v for k, v in groups.items() if " " in k}
        self._prefixes = sorted(
            ((k, v) for k, v in groups.items() if " " not in k), key=lambda kv: -len(kv[0])
        )
        self._metrics = metrics
        self._warn_every_s = warn_every_s
        self._last_warning = -math.inf

    def group_of(self, route: Route) -> str:
        """The route's group: an exact ``METHOD /template`` entry, else the longest prefix."""
        template = route.template.text
        exact = self._exact.get(f"{route.http_method} {template}")
        if exact is not None:
            return exact
        for prefix, group in self._prefixes:
            if template.startswith(prefix):
                return group
        return DEFAULT_GROUP

    async def check_address(self, request: web.Request, route: Route) -> None:
        """Before anything else: the client address's budgets (every call, and failures)."""
        group = self.group_of(route)
        address = client_address(request)
        limit = self._limits.get(group)
        if limit is not None:
            await self._spend(request, group, "address", address, limit, charge=True)
        failures = self._failure_limits.get(group)
        if failures is not None:
            await self._spend(request, group, "failures", address, failures, charge=False)

    async def check_user(self, request: web.Request, route: Route) -> None:
        """Once the token is verified: the user's budget, wherever they call from."""
        principal = request.get(PRINCIPAL_KEY)
        group = self.group_of(route)
        limit = self._limits.get(group)
        if principal is not None and limit is not None:
            await self._spend(request, group, "user", principal.subject, limit, charge=True)

    async def charge_answer(self, request: web.Request, route: Route, status: int) -> None:
        """After the answer: a failure (any 4xx) or a call charged every time spends a token
        of the failure budget. Server errors do not: an outage must not lock clients out."""
        group = self.group_of(route)
        failures = self._failure_limits.get(group)
        if failures is None:
            return
        every_call = f"{route.http_method} {route.template.text}" in self._charged_every_call
        if every_call or 400 <= status < 500:
            address = client_address(request)
            await self._spend(
                request, group, "failures", address, failures, charge=True, refuse=False
            )

    async def _spend(
        self,
        request: web.Request,
        group: str,
        kind: str,
        who: str,
        limit: RateLimit,
        *,
        charge: bool,
        refuse: bool = True,
    ) -> None:
        """Take a token (``charge``) or look for one; with none left, a 429 if ``refuse``."""
        key = f"{group}:{kind}:{who}"
        try:
            if charge:
                decision = await self._buckets.take(key, limit)
            else:
                decision = await self._buckets.peek(key, limit)
        except (RedisError, OSError, TimeoutError) as error:
            self._metrics.rate_limit_backend_errors.inc()
            now = time.monotonic()
            if now - self._last_warning >= self._warn_every_s:
                self._last_warning = now
                _log.warning("rate_limit_backend_unavailable", error=repr(error), fail="open")
            return
        if not decision.allowed and refuse:
            request[_DECISION_KEY] = decision
            self._metrics.rate_limited.labels(group, kind).inc()
            raise ProblemError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Too many requests; retry in {max(1, math.ceil(decision.retry_after_s))} s.",
                headers=decision.headers(),
                reason=Reason.RATE_LIMITED,
            )
        previous = request.get(_DECISION_KEY)
        # The tighter of the budgets spent is the one the client should pace itself by (one
        # only looked at has not been spent, and one that ran out after the answer does not
        # make that answer a refusal).
        tighter = previous is None or decision.remaining < previous.remaining
        if decision.allowed and charge and tighter:
            request[_DECISION_KEY] = decision

    async def close(self) -> None:
        await self._buckets.close()


async def stamp_rate_limit(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the budget left, on every answer of a limited route."""
    decision = request.get(_DECISION_KEY)
    if decision is not None:
        for name, value in decision.headers().items():
            response.headers.setdefault(name, value)
