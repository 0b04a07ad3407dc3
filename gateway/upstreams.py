"""The gRPC channels to the services, one per backend address, and generic unary calls on them."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from common.grpc_target import channel_target
from common.logging import get_logger
from common.reasons import Reason
from common.settings import SERVICE_NAMES
from gateway.breaker import BreakerState, CircuitBreaker
from gateway.metrics import GatewayMetrics
from gateway.problems import REASON_TO_HTTP, FieldViolation, ProblemError
from gateway.routes import Route
from gateway.settings import GatewaySettings

_log = get_logger(__name__)

_BACKEND_PACKAGE = re.compile(r"microcommerce\.(?P<backend>[a-z_]+)\.v\d+")
# The standard trailer for google.rpc.Status (AIP-193); common/grpc_server.py sends BadRequest.

# gRPC backs off up to two minutes between reconnection attempts by default; a restarted
# service would stay unreachable through the gateway for that long.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

Metadata = Sequence[tuple[str, str]]


def backend_of(service: ServiceDescriptor) -> str | None:
    """``payment``, ``product`` or ``user`` for a service of ours, from its proto package."""
    match = _BACKEND_PACKAGE.fullmatch(service.file.package)
    if match is None or match["backend"] not in SERVICE_NAMES:
        return None
    return match["backend"]


def resolve_addresses(
    services: Sequence[ServiceDescriptor],
    settings: GatewaySettings,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Service full name → gRPC target.

    ``overrides`` is keyed by service full name or by proto package; otherwise the package
    names the backend (``microcommerce.payment.v1`` → ``settings.payment_address``).
    """
    overrides = overrides or {}
    addresses: dict[str, str] = {}
    for service in services:
        name = service.full_name
        backend = backend_of(service)
        if name in overrides:
            addresses[name] = overrides[name]
        elif service.file.package in overrides:
            addresses[name] = overrides[service.file.package]
        elif backend is not None:
            addresses[name] = settings.service_address(backend)
        else:
            raise ValueError(f"no upstream address for {name}; pass it in upstream_addresses")
    return addresses


class HealthView(Protocol):
    """What the health stream knows (gateway/health.py ``HealthRegistry``)."""

    def broker_up(self) -> bool: ...

    def service_status(self, service: str) -> str: ...

    def down_instances(self, service: str) -> frozenset[str]: ...


def split_target(target: str) -> tuple[str, ...]:
    """The addresses of a comma-separated list; a ``scheme:`` target (dns:///...) is one."""
    if "://" in target or target.startswith(("ipv4:", "ipv6:", "unix:")):
        return (target,)
    return tuple(part.strip() for part in target.split(",") if part.strip())


def service_config(retried: Iterable[tuple[str, str]], max_attempts: int) -> str:
    """gRPC service config: round robin over the resolved addresses, and retries on
    UNAVAILABLE (exponential backoff; gRPC adds the jitter) for the idempotent RPCs only."""
    names = [{"service": service, "method": method} for service, method in sorted(set(retried))]
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if names and max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config)


def idempotent_methods(
    routes: Iterable[Route], extra_rpcs: Iterable[str] = ()
) -> set[tuple[str, str]]:
    """(service, method) of every RPC bound to GET, plus ``extra_rpcs`` (/pkg.Service/Method)."""
    methods = {(r.service.full_name, r.method.name) for r in routes if r.http_method == "GET"}
    for rpc in extra_rpcs:
        service, _, method = rpc.strip("/").partition("/")
        methods.add((service, method))
    return methods


@dataclass
class _Upstream:
    """One backend: its addresses, breaker and bulkhead, and its channels by live address set."""

    key: str
    addresses: tuple[str, ...]
    backend: str | None
    breaker: CircuitBreaker
    max_in_flight: int
    in_flight: int = 0
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    # (channel target, RPC path) -> its multicallable: built once, not on every call.
    callables: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = field(
        default_factory=dict
    )


class Upstreams:
    """The channels, opened when the app starts and closed when it stops (``app.cleanup_ctx``).

    Each upstream has a circuit breaker (open: 503 at once) and a bulkhead (too many calls in
    flight: 503 at once). Several addresses are balanced by gRPC round robin; an instance the
    health stream reports DOWN is left out of the channel's address list while it is DOWN.
    """

    def __init__(
        self,
        addresses: Mapping[str, str],
        *,
        timeout: float,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
        retried: Iterable[tuple[str, str]] = (),
        health: HealthView | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses: Mapping[str, str] = MappingProxyType(dict(addresses))
        self._timeout = timeout
        self._metrics = metrics
        self._health = health
        self._options = [
            *options,
            ("grpc.enable_retries", 1),
            ("grpc.service_config", service_config(retried, settings.retry_max_attempts)),
        ]
        # One breaker and bulkhead per backend (a service of ours) or per foreign service.
        self._upstreams: dict[str, _Upstream] = {}
        self._by_service: dict[str, _Upstream] = {}
        for service, target in self.addresses.items():
            backend = _backend_of_name(service)
            key = backend or service
            upstream = self._upstreams.get(key)
            if upstream is not None and upstream.addresses != split_target(target):
                key, backend, upstream = service, None, None  # moved elsewhere on its own
            if upstream is None:
                upstream = _Upstream(
                    key=key,
                    addresses=split_target(target),
                    backend=backend,
                    breaker=CircuitBreaker(
                        key,
                        failure_threshold=settings.breaker_failure_threshold,
                        error_rate=settings.breaker_error_rate,
                        window=settings.breaker_window,
                        cooldown_s=settings.breaker_cooldown_s,
                        health_down=self._health_down_check(backend),
                        clock=clock,
                    ),
                    max_in_flight=settings.max_concurrent_calls,
                )
                self._upstreams[key] = upstream
            self._by_service[service] = upstream
        self._open = False
        metrics.on_scrape(self._export_state)

    def _health_down_check(self, backend: str | None) -> Callable[[], bool]:
        health = self._health
        if health is None or backend is None:
            return lambda: False

        def down() -> bool:
            # Silence means nothing while the broker is unreachable (CONTRACT.md, /health).
            # A service never heard from is judged by its calls: at start-up the first pongs
            # may simply not have arrived yet.
            return (
                health.broker_up()
                and health.service_status(backend) == "DOWN"
                and bool(health.down_instances(backend))
            )

        return down

    async def open(self) -> None:
        """Start connecting every channel, without waiting: the services may come up after the
        gateway, and a call fails fast (503) until they do."""
        self._open = True
        for upstream in self._upstreams.values():
            self._channel(upstream).get_state(try_to_connect=True)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running get CANCELLED after ``grace`` seconds."""
        self._open = False
        for upstream in self._upstreams.values():
            channels, upstream.channels = upstream.channels, {}
            upstream.callables.clear()
            for channel in channels.values():
                await channel.close(grace)

    def connectivity(self, *, try_to_connect: bool = False) -> dict[str, grpc.ChannelConnectivity]:
        """Service full name → its channel's state; empty before the app has started."""
        if not self._open:
            return {}
        return {
            service: self._channel(upstream).get_state(try_to_connect=try_to_connect)
            for service, upstream in self._by_service.items()
        }

    def ready(self) -> bool:
        """Whether every channel is connected (asks idle ones to connect)."""
        states = self.connectivity(try_to_connect=True)
        return bool(states) and all(s is grpc.ChannelConnectivity.READY for s in states.values())

    def breaker_states(self) -> dict[str, str]:
        """Upstream (backend name, or service full name) → its breaker's state."""
        return {u.key: u.breaker.state.value for u in self._upstreams.values()}

    def in_flight(self) -> dict[str, int]:
        """Upstream → calls in flight now."""
        return {u.key: u.in_flight for u in self._upstreams.values()}

    def _export_state(self) -> None:
        for upstream in self._upstreams.values():
            current = upstream.breaker.state
            for state in BreakerState:
                self._metrics.breaker_state.labels(upstream.key, state.value).set(
                    1 if state is current else 0
                )
            self._metrics.in_flight.labels(upstream.key).set(upstream.in_flight)

    def _channel(self, upstream: _Upstream) -> grpc.aio.Channel:
        """The channel over the instances not reported DOWN (all of them if none is left)."""
        return self._channel_and_target(upstream)[0]

    def _channel_and_target(self, upstream: _Upstream) -> tuple[grpc.aio.Channel, str]:
        live = upstream.addresses
        if self._health is not None and len(live) > 1:
            down = self._health.down_instances(upstream.key) if self._health.broker_up() else ()
            live = tuple(a for a in upstream.addresses if a not in down) or upstream.addresses
        target = channel_target(",".join(live))
        channel = upstream.channels.get(target)
        if channel is None:
            channel = grpc.aio.insecure_channel(target, options=self._options)
            upstream.channels[target] = channel
        return channel, target

    async def call(
        self,
        route: Route,
        request: Message,
        metadata: Metadata,
        *,
        within_s: float | None = None,
    ) -> Message:
        """Call the route's RPC within ``within_s`` seconds (default: the gateway's deadline);
        a failure, an open breaker or a full bulkhead becomes ``ProblemError``."""
        if not self._open:
            raise ProblemError(grpc.StatusCode.UNAVAILABLE, "The gateway is not started.")
        upstream = self._by_service[route.service.full_name]
        timeout = self._timeout if within_s is None else within_s
        if timeout <= 0:
            raise ProblemError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "The request's deadline passed before the call."
            )
        breaker = upstream.breaker
        if not breaker.allow():
            self._metrics.fast_failures.labels(upstream.key, "breaker_open").inc()
            raise ProblemError(
                grpc.StatusCode.UNAVAILABLE,
                f"{route.service.full_name} is failing; calls are paused (circuit open).",
                headers={"Retry-After": str(math.ceil(breaker.retry_after_s()))},
                reason=Reason.CIRCUIT_OPEN,
            )
        if upstream.in_flight >= upstream.max_in_flight:
            breaker.release()
            self._metrics.fast_failures.labels(upstream.key, "bulkhead_full").inc()
            raise ProblemError(
                grpc.StatusCode.UNAVAILABLE,
                f"Too many calls to {route.service.full_name} in flight; retry shortly.",
                headers={"Retry-After": "1"},
                reason=Reason.BULKHEAD_FULL,
            )
        rpc = route.rpc_path
        channel, target = self._channel_and_target(upstream)
        multicallable = upstream.callables.get((target, rpc))
        if multicallable is None:
            multicallable = channel.unary_unary(
                rpc,
                request_serializer=type(request).SerializeToString,
                response_deserializer=GetMessageClass(route.method.output_type).FromString,
            )
            upstream.callables[(target, rpc)] = multicallable
        upstream.in_flight += 1
        start = time.perf_counter()
        try:
            response: Message = await multicallable(
                request, timeout=timeout, metadata=tuple(metadata)
            )
        except grpc.aio.AioRpcError as error:
            breaker.record(error.code())
            self._metrics.observe_upstream(rpc, error.code().name, time.perf_counter() - start)
            raise self._problem(route, channel, error, timeout) from None
        except BaseException:
            breaker.release()  # cancelled (client gone, shutdown): says nothing of the service
            raise
        finally:
            upstream.in_flight -= 1
        breaker.record(grpc.StatusCode.OK)
        self._metrics.observe_upstream(rpc, grpc.StatusCode.OK.name, time.perf_counter() - start)
        return response

    def _problem(
        self,
        route: Route,
        channel: grpc.aio.Channel,
        error: grpc.aio.AioRpcError,
        timeout: float,
    ) -> ProblemError:
        code = error.code()
        details = error.details() or ""
        connected = channel.get_state() is grpc.ChannelConnectivity.READY
        if code is grpc.StatusCode.UNAVAILABLE and not connected:
            # gRPC's own text names peers and socket errors: log it, tell the caller less.
            _log.warning("upstream_unreachable", rpc=route.rpc_path, error=details)
            details = f"{route.service.full_name} cannot be reached; retry later."
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not details:
            details = f"{route.service.full_name} did not answer within {timeout:.3g} s."
        elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS):
            _log.warning("upstream_failed", rpc=route.rpc_path, code=code.name, error=details)
        extra = _status_details(error)
        headers = {}
        if extra.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(extra.retry_after_s)))
        return ProblemError(
            code,
            details or code.name,
            status=REASON_TO_HTTP.get(extra.reason or ""),
            headers=headers,
            field_violations=extra.field_violations,
            reason=extra.reason,
        )


def _backend_of_name(service_full_name: str) -> str | None:
    package = service_full_name.rpartition(".")[0]
    match = _BACKEND_PACKAGE.fullmatch(package)
    if match is None or match["backend"] not in SERVICE_NAMES:
        return None
    return match["backend"]


@dataclass(frozen=True)
class _Details:
    field_violations: tuple[FieldViolation, ...] = ()
    reason: str | None = None
    retry_after_s: float | None = None


def _status_details(error: grpc.aio.AioRpcError) -> _Details:
    """BadRequest, ErrorInfo and RetryInfo from the call's ``google.rpc.Status``, if any."""
    try:
        # An AioRpcError answers code(), details() and trailing_metadata() like a grpc.Call,
        # which is all from_call reads; the stubs do not say so.
        status = rpc_status.from_call(cast(grpc.Call, error))
    except (DecodeError, ValueError):
        # A malformed or inconsistent trailer costs the caller the details, not the answer.
        return _Details()
    if status is None:
        return _Details()
    violations: list[FieldViolation] = []
    reason: str | None = None
    retry_after_s: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
    return _Details(tuple(violations), reason, retry_after_s)
