"""The gateway's own routes about the system: health, liveness, readiness, service registry."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from common.settings import SERVICE_NAMES
from gateway.app import drain, route_table, upstreams
from gateway.health import HealthRegistry
from gateway.upstreams import backend_of, split_target


def health_routes(
    registry: HealthRegistry, stream_started: Callable[[], bool]
) -> list[web.RouteDef]:
    """Routes reading the registry; ``stream_started`` tells whether Kafka was ever reached."""

    async def health(_: web.Request) -> web.Response:
        """Aggregated health of the broker and every service, from the Kafka ping/pong stream."""
        body = registry.snapshot()
        return web.json_response(body, status=503 if body["status"] == "DOWN" else 200)

    async def live(_: web.Request) -> web.Response:
        """The gateway process is alive and its event loop answers."""
        return web.json_response({"status": "UP"})

    async def ready(request: web.Request) -> web.Response:
        """The gateway can serve: upstream channels connected and the broker reached.

        The broker must have been reached once (the health stream is running); a later outage
        does not make the gateway unready, because REST traffic keeps flowing without Kafka.
        """
        checks = {
            "upstreams": "UP" if upstreams(request.app).ready() else "DOWN",
            "broker": "UP" if stream_started() else "DOWN",
            # Stopping: fail first, so the load balancer sends nothing new before we close.
            "accepting": "DOWN" if drain(request.app).draining else "UP",
        }
        up = all(v == "UP" for v in checks.values())
        return web.json_response(
            {"status": "UP" if up else "DOWN", "checks": checks}, status=200 if up else 503
        )

    async def services(request: web.Request) -> web.Response:
        """The service registry: addresses, health and the RPCs each service exposes."""
        table = route_table(request.app)
        channels = upstreams(request.app).connectivity()
        addresses = upstreams(request.app).addresses
        breakers = upstreams(request.app).breaker_states()
        in_flight = upstreams(request.app).in_flight()
        listing = []
        for name in SERVICE_NAMES:
            grpc_services = [s for s in table.services if backend_of(s) == name]
            listing.append(
                {
                    "name": name,
                    "status": registry.service_status(name),
                    "addresses": sorted(
                        {a for s in grpc_services for a in split_target(addresses[s.full_name])}
                    ),
                    "instances": registry.instance_addresses(name),
                    "circuit_breaker": breakers.get(name),
                    "in_flight": in_flight.get(name, 0),
                    "grpc_services": [
                        {
                            "name": s.full_name,
                            "channel": channels[s.full_name].name
                            if s.full_name in channels
                            else None,
                            "rpcs": [
                                {
                                    "name": m.name,
                                    "rest": [
                                        f"{r.http_method} {r.template.text}"
                                        for r in table.routes_of(s.full_name)
                                        if r.method.name == m.name
                                    ],
                                }
                                for m in s.methods
                            ],
                        }
                        for s in grpc_services
                    ],
                }
            )
        return web.json_response({"services": listing})

    return [
        web.get("/health", health, allow_head=False),
        web.get("/health/live", live, allow_head=False),
        web.get("/health/ready", ready, allow_head=False),
        web.get("/api/v1/services", services, allow_head=False),
    ]
