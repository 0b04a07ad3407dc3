"""The gateway's aiohttp application: RPC and meta routes, middlewares, typed state."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from google.protobuf.descriptor import ServiceDescriptor

from common.tokens import KeySource, TokenVerifier
from common.user_client import UserServiceClient, jwks_cache
from gateway.asyncapi import build_asyncapi
from gateway.auth import Authenticator
from gateway.client_address import CLIENT_ADDRESSES_KEY, ClientAddresses
from gateway.docs import docs_routes
from gateway.http_cache import HttpCache, cache_headers
from gateway.http_policy import Cors, security_headers
from gateway.metrics import GatewayMetrics
from gateway.middleware import (
    body_limit_middleware,
    observing_middleware,
    problem_middleware,
    stamp_request_id,
)
from gateway.openapi import as_openapi_30, build_openapi
from gateway.ratelimit import Buckets, LocalBuckets, RateLimiter, RedisBuckets, stamp_rate_limit
from gateway.routes import RouteTable, build_route_table, discover_services
from gateway.settings import GatewaySettings
from gateway.transcoding import add_rpc_routes
from gateway.upstreams import HealthView, Upstreams, idempotent_methods, resolve_addresses

API_TITLE = "MicroCommerce API"
OPENAPI_PATH = "/openapi.json"
ASYNCAPI_PATH = "/asyncapi.json"
METRICS_PATH = "/metrics"

SETTINGS_KEY = web.AppKey("gateway_settings", GatewaySettings)
ROUTE_TABLE_KEY = web.AppKey("gateway_route_table", RouteTable)
UPSTREAMS_KEY = web.AppKey("gateway_upstreams", Upstreams)
METRICS_KEY = web.AppKey("gateway_metrics", GatewayMetrics)


@dataclass
class Drain:
    """Set when the gateway is stopping: readiness fails so no new traffic is sent here."""

    draining: bool = False


DRAIN_KEY = web.AppKey("gateway_drain", Drain)
LIMITER_KEY = web.AppKey("gateway_rate_limiter", RateLimiter)


def create_app(
    settings: GatewaySettings,
    *,
    services: Sequence[ServiceDescriptor] | None = None,
    upstream_addresses: Mapping[str, str] | None = None,
    extra_routes: Iterable[web.RouteDef] = (),
    key_source: KeySource | None = None,
    health: HealthView | None = None,
    buckets: Buckets | None = None,
) -> web.Application:
    """Build the gateway. Nothing connects until the app starts.

    ``services`` defaults to every service generated from ``microcommerce.{payment,product,
    user}.v1``; each is reached at the address its package names in ``settings`` unless
    ``upstream_addresses`` (service full name or package → ``host:port``) says otherwise.
    ``key_source`` holds the public keys that verify access tokens (default: user_svc's JWKS,
    fetched over gRPC when first needed). ``health`` (the health stream's registry) opens a
    service's breaker while it is DOWN and leaves DOWN instances out of the balancing.
    ``buckets`` hold the rate limits (default: Redis at ``settings.redis_url``, else
    in-process). ``extra_routes`` are non-RPC routes (health,
    registry); they are registered before the RPC routes and listed in the OpenAPI document
    under the ``meta`` tag.
    """
    services = tuple(services) if services is not None else discover_services()
    extra_routes = list(extra_routes)
    table = build_route_table(services)
    metrics = GatewayMetrics()
    upstreams = Upstreams(
        resolve_addresses(services, settings, upstream_addresses),
        timeout=settings.upstream_timeout_s,
        metrics=metrics,
        settings=settings,
        retried=idempotent_methods(table.routes, settings.idempotent_rpcs),
        health=health,
    )
    limiter: RateLimiter | None = None
    if settings.rate_limit_enabled:
        if buckets is None:
            redis_url = settings.redis_url
            buckets = RedisBuckets(redis_url.get_secret_value()) if redis_url else LocalBuckets()
        limiter = RateLimiter(
            buckets,
            settings.rate_limits,
            settings.rate_limit_groups,
            metrics,
            failure_limits=settings.rate_limit_failures,
            charged_every_call=settings.rate_limit_charged_every_call,
        )
    cors = Cors(settings.cors_allowed_origins)

    users = UserServiceClient(settings.user_address)
    authenticator = Authenticator(TokenVerifier(key_source or jwks_cache(users)))

    app = web.Application(
        # Outermost first: the id exists before anything logs; metrics and the access log see
        # the final status, problem answers included; the size check runs before any handler
        # reads the body.
        middlewares=[
            observing_middleware(metrics),
            problem_middleware,
            cors.middleware(),
            body_limit_middleware(settings.max_body_bytes),
        ],
        # Also bounds bodies without Content-Length (chunked) while they are read.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS_KEY] = settings
    app[CLIENT_ADDRESSES_KEY] = ClientAddresses(
        settings.trusted_proxies, settings.trusted_proxy_header
    )
    app[ROUTE_TABLE_KEY] = table
    app[UPSTREAMS_KEY] = upstreams
    app[METRICS_KEY] = metrics
    app[DRAIN_KEY] = Drain()
    app.on_response_prepare.append(stamp_request_id)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(cache_headers)
    app.on_response_prepare.append(cors.on_prepare())
    if limiter is not None:
        app[LIMITER_KEY] = limiter
        app.on_response_prepare.append(stamp_rate_limit)
        app.on_cleanup.append(lambda _app: limiter.close())
    app.cleanup_ctx.append(_upstream_channels)
    app.on_cleanup.append(lambda _app: users.close())

    document = build_openapi(
        table, title=API_TITLE, version=settings.version, extra_routes=extra_routes
    )
    app.router.add_routes(extra_routes)
    app.router.add_get(OPENAPI_PATH, _json_handler(document), allow_head=False)
    events = build_asyncapi(title=f"{API_TITLE} events", version=settings.version)
    app.router.add_get(ASYNCAPI_PATH, _json_handler(events), allow_head=False)
    app.router.add_routes(docs_routes(API_TITLE, as_openapi_30(document)))
    app.router.add_get(METRICS_PATH, metrics.handle_metrics, allow_head=False)
    http_cache = HttpCache(settings.http_cache_max_age_s, settings.http_cache_swr_s)
    add_rpc_routes(
        app.router,
        table,
        upstreams,
        metrics,
        authenticator,
        settings=settings,
        limiter=limiter,
        http_cache=http_cache,
    )
    return app


def runner_options(settings: GatewaySettings) -> dict[str, Any]:
    """``web.AppRunner`` (and ``TestServer``) arguments: parser limits and connection timeouts."""
    return {
        "max_line_size": settings.max_line_bytes,
        "max_field_size": settings.max_field_bytes,
        "keepalive_timeout": settings.keepalive_timeout_s,
        # In-flight requests get this long to finish once the listener has closed.
        "shutdown_timeout": settings.shutdown_grace_s,
    }


async def _upstream_channels(app: web.Application) -> AsyncIterator[None]:
    upstreams = app[UPSTREAMS_KEY]
    await upstreams.open()
    try:
        yield
    finally:
        await upstreams.close()


def _json_handler(document: object) -> Handler:
    body = json.dumps(document).encode()  # built once: the routes never change while running

    async def json_document(_request: web.Request) -> web.Response:
        """A generated document: OpenAPI of the REST API, AsyncAPI of the topics."""
        return web.Response(body=body, content_type="application/json")

    return json_document


def settle_heap() -> None:
    """Call once the app is built, before serving: collect, then freeze what start-up left.

    The start-up heap (descriptors, route table, the OpenAPI document, imported modules) lives
    as long as the process; frozen, the garbage collector no longer walks it. Unfrozen, a full
    collection under load walked all of it: one of about 0.1-0.2 s of CPU was seen in the
    first 10 s of load, a stall every request in flight waited out (bench/README.md).
    """
    gc.collect()
    gc.freeze()


def route_table(app: web.Application) -> RouteTable:
    """The RPC routes and their services (``RouteTable.rpc_names()`` for a registry listing)."""
    return app[ROUTE_TABLE_KEY]


def drain(app: web.Application) -> Drain:
    """Whether the gateway is stopping (readiness reads it)."""
    return app[DRAIN_KEY]


def upstreams(app: web.Application) -> Upstreams:
    """The upstream channels: ``.addresses``, ``.connectivity()``, ``.ready()``."""
    return app[UPSTREAMS_KEY]
