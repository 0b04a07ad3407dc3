"""The gateway's aiohttp application: RPC and meta routes, middlewares, typed state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from google.protobuf.descriptor import ServiceDescriptor

from common.tokens import KeySource, TokenVerifier
from common.user_client import UserServiceClient, jwks_cache
from gateway.auth import Authenticator
from gateway.docs import docs_routes
from gateway.metrics import GatewayMetrics
from gateway.middleware import (
    body_limit_middleware,
    problem_middleware,
    request_id_middleware,
    stamp_request_id,
)
from gateway.openapi import as_openapi_30, build_openapi
from gateway.routes import RouteTable, build_route_table, discover_services
from gateway.settings import GatewaySettings
from gateway.transcoding import add_rpc_routes
from gateway.upstreams import Upstreams, resolve_addresses

API_TITLE = "MicroCommerce API"
OPENAPI_PATH = "/openapi.json"
METRICS_PATH = "/metrics"

SETTINGS_KEY = web.AppKey("gateway_settings", GatewaySettings)
ROUTE_TABLE_KEY = web.AppKey("gateway_route_table", RouteTable)
UPSTREAMS_KEY = web.AppKey("gateway_upstreams", Upstreams)
METRICS_KEY = web.AppKey("gateway_metrics", GatewayMetrics)


def create_app(
    settings: GatewaySettings,
    *,
    services: Sequence[ServiceDescriptor] | None = None,
    upstream_addresses: Mapping[str, str] | None = None,
    extra_routes: Iterable[web.RouteDef] = (),
    key_source: KeySource | None = None,
) -> web.Application:
    """Build the gateway. Nothing connects until the app starts.

    ``services`` defaults to every service generated from ``microcommerce.{payment,product,
    user}.v1``; each is reached at the address its package names in ``settings`` unless
    ``upstream_addresses`` (service full name or package → ``host:port``) says otherwise.
    ``key_source`` holds the public keys that verify access tokens (default: user_svc's JWKS,
    fetched over gRPC when first needed). ``extra_routes`` are non-RPC routes (health,
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
    )

    users = UserServiceClient(settings.user_address)
    authenticator = Authenticator(TokenVerifier(key_source or jwks_cache(users)))

    app = web.Application(
        # Outermost first: the id exists before anything logs; metrics see the final status,
        # problem answers included; the size check runs before any handler reads the body.
        middlewares=[
            request_id_middleware,
            metrics.middleware(),
            problem_middleware,
            body_limit_middleware(settings.max_body_bytes),
        ],
        # Also bounds bodies without Content-Length (chunked) while they are read.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS_KEY] = settings
    app[ROUTE_TABLE_KEY] = table
    app[UPSTREAMS_KEY] = upstreams
    app[METRICS_KEY] = metrics
    app.on_response_prepare.append(stamp_request_id)
    app.cleanup_ctx.append(_upstream_channels)
    app.on_cleanup.append(lambda _app: users.close())

    document = build_openapi(
        table, title=API_TITLE, version=settings.version, extra_routes=extra_routes
    )
    app.router.add_routes(extra_routes)
    app.router.add_get(OPENAPI_PATH, _json_handler(document), allow_head=False)
    app.router.add_routes(docs_routes(API_TITLE, as_openapi_30(document)))
    app.router.add_get(METRICS_PATH, metrics.handle_metrics, allow_head=False)
    add_rpc_routes(app.router, table, upstreams, metrics, authenticator)
    return app


async def _upstream_channels(app: web.Application) -> AsyncIterator[None]:
    upstreams = app[UPSTREAMS_KEY]
    await upstreams.open()
    try:
        yield
    finally:
        await upstreams.close()


def _json_handler(document: object) -> Handler:
    body = json.dumps(document).encode()  # built once: the routes never change while running

    async def openapi_document(_request: web.Request) -> web.Response:
        """The OpenAPI 3.1 document of the REST API."""
        return web.Response(body=body, content_type="application/json")

    return openapi_document


def route_table(app: web.Application) -> RouteTable:
    """The RPC routes and their services (``RouteTable.rpc_names()`` for a registry listing)."""
    return app[ROUTE_TABLE_KEY]


def upstreams(app: web.Application) -> Upstreams:
    """The upstream channels: ``.addresses``, ``.connectivity()``, ``.ready()``."""
    return app[UPSTREAMS_KEY]
