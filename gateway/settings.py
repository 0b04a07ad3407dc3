"""The gateway's settings, read from ``MC_*`` environment variables (CONTRACT.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import NoDecode

from common.settings import CommonSettings, port_setting
from gateway.client_address import ForwardedHeader


class RateLimit(BaseModel):
    """One token bucket: ``burst`` tokens, refilled at ``per_minute`` tokens a minute."""

    model_config = {"frozen": True}

    per_minute: float = Field(gt=0)
    burst: int = Field(ge=1)


def _default_rate_limits() -> dict[str, RateLimit]:
    # Every call. Sign-ins and refreshes that succeed spend only this: a few hundred a minute
    # per address is more than a busy office behind one NAT sends, and still finite.
    return {
        "default": RateLimit(per_minute=600, burst=100),
        "auth": RateLimit(per_minute=300, burst=100),
    }


def _default_failure_limits() -> dict[str, RateLimit]:
    # What credential stuffing and sign-up abuse spend: failed sign-ins and refreshes (any
    # 4xx) and every registration, per address. 20 at once, then one every 6 s.
    return {"auth": RateLimit(per_minute=10, burst=20)}


class GatewaySettings(CommonSettings):
    """What the gateway process reads; built once in ``gateway/main.py`` and passed down."""

    gateway_port: int = Field(port_setting("gateway"), ge=0, le=65535)

    upstream_timeout_s: float = Field(
        5.0, gt=0, description="Total deadline of a request's upstream call, in seconds."
    )
    # Per-route deadlines, keyed by RPC path (/pkg.Service/Method) or "METHOD /template".
    route_timeouts_s: dict[str, float] = Field(default_factory=dict)
    max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest accepted request body; larger ones get 413."
    )
    # aiohttp's parser limits: a longer request line or header field is refused with 400/431.
    max_line_bytes: int = Field(8190, gt=0)
    max_field_bytes: int = Field(8190, gt=0)
    # A client that sends its body slower than this gets 408 instead of holding a handler.
    body_read_timeout_s: float = Field(10.0, gt=0)
    # Idle keep-alive connections are closed after this long; so is a new connection whose
    # headers have not all arrived by then (slow-header clients).
    keepalive_timeout_s: float = Field(15.0, gt=0)

    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On stop, in-flight requests get this long to finish."
    )
    # On SIGTERM readiness fails this long before the listener closes, so a load balancer
    # stops sending new requests first.
    shutdown_drain_s: float = Field(1.0, ge=0)

    # Rate limits (gateway/ratelimit.py), per route group, for each client address and each
    # authenticated user. MC_RATE_LIMITS='{"auth": {"per_minute": 5, "burst": 5}}'.
    rate_limits: dict[str, RateLimit] = Field(default_factory=_default_rate_limits)
    # Route → group: "METHOD /template" matches exactly, "/prefix" any route under it;
    # everything else is in "default". A group with no entry in rate_limits is not limited.
    rate_limit_groups: dict[str, str] = Field(
        default_factory=lambda: {"/api/v1/auth/": "auth", "POST /api/v1/users": "auth"}
    )
    # Per group, a tight per-address budget checked before each call and spent after it by a
    # 4xx answer, or by every answer of the routes in rate_limit_charged_every_call.
    # MC_RATE_LIMIT_FAILURES='{"auth": {"per_minute": 10, "burst": 20}}'; {} turns it off.
    rate_limit_failures: dict[str, RateLimit] = Field(default_factory=_default_failure_limits)
    rate_limit_charged_every_call: Annotated[tuple[str, ...], NoDecode] = ("POST /api/v1/users",)
    rate_limit_enabled: bool = True
    redis_url: SecretStr | None = Field(
        None, description="Shared rate-limit budget for all replicas; unset: in-process."
    )

    # Circuit breaker per upstream service (gateway/breaker.py).
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_error_rate: float = Field(0.5, gt=0, le=1)
    breaker_window: int = Field(20, ge=2, description="Calls the error rate is judged over.")
    breaker_cooldown_s: float = Field(2.0, gt=0)

    # Bulkhead: concurrent upstream calls per service beyond this are refused with 503.
    max_concurrent_calls: int = Field(128, ge=1)

    # Retries (gRPC service config) for idempotent RPCs on UNAVAILABLE. GET routes are
    # idempotent; more RPCs by path (/pkg.Service/Method).
    retry_max_attempts: int = Field(3, ge=1, le=5)
    idempotent_rpcs: Annotated[tuple[str, ...], NoDecode] = ()

    # Proxies (CIDRs, comma-separated) whose forwarding header names the client
    # (gateway/client_address.py). Empty: forwarded headers are ignored, the peer is the client.
    trusted_proxies: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = ()
    trusted_proxy_header: ForwardedHeader = Field(
        ForwardedHeader.X_FORWARDED_FOR,
        description="The header the trusted proxies write: X-Forwarded-For or Forwarded.",
    )

    # HTTP caching of the public reads (gateway/http_cache.py): how long a CDN or browser may
    # serve its copy without asking, then how long it may serve it stale while it revalidates.
    # Short, because stock moves: a checkout re-checks it anyway.
    http_cache_max_age_s: int = Field(
        10, ge=0, description="max-age of public catalog reads, in seconds."
    )
    http_cache_swr_s: int = Field(
        30, ge=0, description="stale-while-revalidate of public catalog reads, in seconds."
    )

    cors_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins allowed to call from a browser; '*' for any; default none."
    )

    # The health stream (gateway/health.py). A silent service is DOWN after this long
    # (CONTRACT.md: within 3 s); the broker is judged sooner, so that a dead broker turns the
    # services UNKNOWN instead of DOWN. HealthRegistry checks the order of the two.
    health_down_after_s: float = Field(2.5, gt=0)
    health_broker_down_after_s: float = Field(2.0, gt=0)

    @field_validator(
        "cors_allowed_origins",
        "idempotent_rpcs",
        "trusted_proxies",
        "rate_limit_charged_every_call",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # The environment gives one string: "https://a.example,https://b.example".
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def timeout_of(self, rpc_path: str, route_key: str) -> float:
        """The deadline of one route: its override, else the default."""
        return self.route_timeouts_s.get(
            route_key, self.route_timeouts_s.get(rpc_path, self.upstream_timeout_s)
        )
