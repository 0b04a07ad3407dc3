"""The gRPC channels to the services, one per backend address, and generic unary calls on them."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2

from common.logging import get_logger
from common.settings import SERVICE_NAMES
from gateway.metrics import GatewayMetrics
from gateway.problems import REASON_TO_HTTP, FieldViolation, ProblemError
from gateway.routes import Route
from gateway.settings import GatewaySettings

_log = get_logger(__name__)

_BACKEND_PACKAGE = re.compile(r"microcommerce\.(?P<backend>[a-z_]+)\.v\d+")
# The standard trailer for google.rpc.Status (AIP-193); common/grpc_server.py sends BadRequest.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"

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


class Upstreams:
    """The channels, opened when the app starts and closed when it stops (``app.cleanup_ctx``)."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        *,
        timeout: float,
        metrics: GatewayMetrics,
        options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
    ) -> None:
        self.addresses: Mapping[str, str] = MappingProxyType(dict(addresses))
        self._timeout = timeout
        self._metrics = metrics
        self._options = list(options)
        self._channels: dict[str, grpc.aio.Channel] = {}  # by address
        self._calls: dict[str, Any] = {}  # rpc path -> UnaryUnaryMultiCallable

    async def open(self) -> None:
        """Create one channel per distinct address and start connecting, without waiting: the
        services may come up after the gateway, and a call fails fast (503) until they do."""
        for address in sorted(set(self.addresses.values())):
            channel = grpc.aio.insecure_channel(address, options=self._options)
            channel.get_state(try_to_connect=True)
            self._channels[address] = channel

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running get CANCELLED after ``grace`` seconds."""
        channels, self._channels = self._channels, {}
        self._calls.clear()
        for channel in channels.values():
            await channel.close(grace)

    def connectivity(self, *, try_to_connect: bool = False) -> dict[str, grpc.ChannelConnectivity]:
        """Service full name → its channel's state; empty before the app has started."""
        if not self._channels:
            return {}
        return {
            service: self._channels[address].get_state(try_to_connect=try_to_connect)
            for service, address in self.addresses.items()
        }

    def ready(self) -> bool:
        """Whether every channel is connected (asks idle ones to connect)."""
        states = self.connectivity(try_to_connect=True)
        return bool(states) and all(s is grpc.ChannelConnectivity.READY for s in states.values())

    async def call(self, route: Route, request: Message, metadata: Metadata) -> Message:
        """Call the route's RPC with the gateway's deadline; a failure becomes ``ProblemError``."""
        rpc = route.rpc_path
        channel = self._channel_of(route)
        multicallable = self._calls.get(rpc)
        if multicallable is None:
            response_class = GetMessageClass(route.method.output_type)
            multicallable = channel.unary_unary(
                rpc,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_class.FromString,
            )
            self._calls[rpc] = multicallable
        start = time.perf_counter()
        try:
            response: Message = await multicallable(
                request, timeout=self._timeout, metadata=tuple(metadata)
            )
        except grpc.aio.AioRpcError as error:
            self._metrics.observe_upstream(rpc, error.code().name, time.perf_counter() - start)
            raise self._problem(route, channel, error) from None
        self._metrics.observe_upstream(rpc, grpc.StatusCode.OK.name, time.perf_counter() - start)
        return response

    def _channel_of(self, route: Route) -> grpc.aio.Channel:
        address = self.addresses[route.service.full_name]
        channel = self._channels.get(address)
        if channel is None:
            raise ProblemError(grpc.StatusCode.UNAVAILABLE, "The gateway is not started.")
        return channel

    def _problem(
        self, route: Route, channel: grpc.aio.Channel, error: grpc.aio.AioRpcError
    ) -> ProblemError:
        code = error.code()
        details = error.details() or ""
        connected = channel.get_state() is grpc.ChannelConnectivity.READY
        if code is grpc.StatusCode.UNAVAILABLE and not connected:
            # gRPC's own text names peers and socket errors: log it, tell the caller less.
            _log.warning("upstream_unreachable", rpc=route.rpc_path, error=details)
            details = f"{route.service.full_name} cannot be reached; retry later."
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not details:
            details = f"{route.service.full_name} did not answer within {self._timeout:g} s."
        elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS):
            _log.warning("upstream_failed", rpc=route.rpc_path, code=code.name, error=details)
        extra = _status_details(error.trailing_metadata())
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


@dataclass(frozen=True)
class _Details:
    field_violations: tuple[FieldViolation, ...] = ()
    reason: str | None = None
    retry_after_s: float | None = None


def _status_details(trailing: Any) -> _Details:
    """BadRequest, ErrorInfo and RetryInfo from a ``google.rpc.Status`` trailer, if any."""
    for key, value in trailing or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
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
        except DecodeError:
            return _Details()  # a malformed trailer costs the caller the details, not the answer
        return _Details(tuple(violations), reason, retry_after_s)
    return _Details()
