"""Prometheus metrics of one gateway app: HTTP requests by route template, upstream RPCs by code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# Labels come from our route table, not from the client: a raw path or an invented method
# would let any caller grow the series without bound.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNMATCHED_ROUTE = "unmatched"

# Latencies from a sub-millisecond cache hit to a checkout that waits on the card provider.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """The series of one app, in a registry of its own (tests build many apps per process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ("route", "method", "status"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_rpc_duration_seconds",
            "Time of upstream gRPC calls, by RPC (/package.Service/Method) and gRPC status code.",
            ("rpc", "code"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "gateway_circuit_breaker_state",
            "1 for the state each upstream's circuit breaker is in (closed, open, half_open).",
            ("upstream", "state"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_upstream_in_flight",
            "Upstream calls in flight, by upstream (the bulkhead caps it).",
            ("upstream",),
            registry=self.registry,
        )
        self.fast_failures = Counter(
            "gateway_upstream_rejections",
            "Calls refused without reaching the upstream, by upstream and cause.",
            ("upstream", "cause"),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused with 429, by route group and budget (address, user or failures).",
            ("group", "key"),
            registry=self.registry,
        )
        self.rate_limit_backend_errors = Counter(
            "gateway_rate_limit_backend_errors",
            "Rate-limit checks the shared backend (Redis) could not answer; let through.",
            registry=self.registry,
        )
        self.broker_up = Gauge(
            "gateway_health_broker_up",
            "1 while the health stream reaches the Kafka broker, else 0.",
            registry=self.registry,
        )
        self.health_instances = Gauge(
            "gateway_health_instances",
            "Instances of each service the health stream knows, by status (UP, DOWN, UNKNOWN).",
            ("service", "status"),
            registry=self.registry,
        )
        self.health_rtt = Gauge(
            "gateway_health_rtt_seconds",
            "Round trip of the last health ping each instance answered, by service and address.",
            ("service", "instance"),
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._route_templates: dict[AbstractRoute, str] = {}
        self._on_scrape: list[Callable[[], None]] = []
        # The labelled children of the per-request series, by their labels: ``labels()``
        # validates and locks on every call, a few per cent of the gateway's CPU per request.
        # Bounded as the series are: route templates, methods, statuses, RPCs and codes.
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._upstream_children: dict[tuple[str, str], Histogram] = {}

    def on_scrape(self, update: Callable[[], None]) -> None:
        """Run ``update`` before each scrape, for gauges read from live state."""
        self._on_scrape.append(update)

    def observe_health(self, snapshot: Mapping[str, Any]) -> None:
        """Set the health gauges from a ``GET /health`` body (``HealthRegistry.snapshot``)."""
        self.broker_up.set(1 if snapshot["broker"]["status"] == "UP" else 0)
        # Departed instances must vanish, not keep their last RTT forever.
        self.health_rtt.clear()
        self.health_instances.clear()
        for service, state in snapshot["services"].items():
            # Zeros rather than absent series, so "no instance UP" is a value alerts can test.
            counts = {"UP": 0, "DOWN": 0, "UNKNOWN": 0}
            for instance in state["instances"]:
                counts[instance["status"]] = counts.get(instance["status"], 0) + 1
                if instance["rtt_ms"] is not None:
                    rtt = instance["rtt_ms"] / 1000
                    self.health_rtt.labels(service, instance["address"]).set(rtt)
            for status, count in counts.items():
                self.health_instances.labels(service, status).set(count)

    def name_route(self, route: AbstractRoute, template: str) -> None:
        """Label the route's series with ``template`` (the proto path template) instead of the
        aiohttp resource's own canonical path."""
        self._route_templates[route] = template

    def route_label(self, request: web.Request) -> str:
        """The route template the request matched, or ``unmatched`` (404, 405)."""
        route = request.match_info.route
        template = self._route_templates.get(route)
        if template is not None:
            return template
        resource = route.resource
        return resource.canonical if resource is not None else UNMATCHED_ROUTE

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = request.method if request.method in _METHODS else "OTHER"
        labels = (self.route_label(request), method, str(status))
        children = self._request_children.get(labels)
        if children is None:
            children = self._request_children[labels] = (
                self.http_requests.labels(*labels),
                self.http_duration.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_upstream(self, rpc: str, code: str, seconds: float) -> None:
        """Time one upstream call."""
        child = self._upstream_children.get((rpc, code))
        if child is None:
            child = self._upstream_children[(rpc, code)] = self.upstream_duration.labels(rpc, code)
        child.observe(seconds)

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text exposition format."""
        for update in self._on_scrape:
            update()
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
