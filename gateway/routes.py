"""The REST route table, built from the ``google.api.http`` options of service descriptors."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor

from common.descriptors import find_field
from common.logging import get_logger
from common.settings import SERVICE_NAMES
from gateway.conditional import has_etag
from gateway.field_paths import FieldPath, FieldPathError, resolve
from gateway.path_templates import PathTemplate, TemplateError, parse_template
from microcommerce.common.v1 import annotations_pb2 as mc_annotations

_log = get_logger(__name__)

# The generated packages whose services the gateway serves by default (CONTRACT.md).
DEFAULT_PACKAGES = tuple(f"microcommerce.{name}.v1" for name in SERVICE_NAMES)

_EMPTY = "google.protobuf.Empty"
_FIELD_MASK = "google.protobuf.FieldMask"
_ACCESS_NAMES = mc_annotations.Access.DESCRIPTOR.values_by_number


class RouteError(ValueError):
    """An HTTP option the gateway cannot serve; raised at start-up, naming the RPC."""


@dataclass(frozen=True)
class Route:
    """One REST binding of one RPC: an HTTP method and path template, and how to map them."""

    service: ServiceDescriptor
    method: MethodDescriptor
    http_method: str
    template: PathTemplate
    # "" (no body), "*" (the whole request) or a top-level request field name.
    body: str
    # "" (the whole response) or a top-level response field name.
    response_body: str
    success_status: int
    access: int
    requires_idempotency_key: bool
    # (microcommerce.common.v1.revalidate_every_use): shared caches ask again on every use.
    revalidate_every_use: bool
    # 0 for the rule itself, 1... for its additional_bindings.
    binding: int
    # The request fields the path variables set, in path order.
    path_fields: tuple[FieldPath, ...] = field(repr=False)

    @property
    def rpc_path(self) -> str:
        """The gRPC method path, ``/package.Service/Method``."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        """A unique, stable OpenAPI operationId."""
        suffix = f"_{self.binding}" if self.binding else ""
        return f"{self.service.name}_{self.method.name}{suffix}"

    @property
    def access_name(self) -> str:
        """The ``(microcommerce.common.v1.access)`` value's name, e.g. ``ACCESS_PUBLIC``."""
        value = _ACCESS_NAMES.get(self.access)
        return value.name if value is not None else str(self.access)

    @property
    def public(self) -> bool:
        """Whether anyone may call it, without a token."""
        return self.access == mc_annotations.ACCESS_PUBLIC

    @property
    def has_body(self) -> bool:
        """Whether the response carries a JSON body (not for Empty or 204)."""
        return self.method.output_type.full_name != _EMPTY and self.success_status != 204

    @property
    def response_has_etag(self) -> bool:
        """Whether the response body is a resource with an ``etag`` (sent as ``ETag``)."""
        if not self.has_body:
            return False
        output: Descriptor | None = self.method.output_type
        if self.response_body:
            output = self.method.output_type.fields_by_name[self.response_body].message_type
        return output is not None and has_etag(output)

    @property
    def declared_errors(self) -> tuple[int, ...]:
        """The ``google.rpc.Code`` values the RPC declares it answers (``errors`` option)."""
        return tuple(self.method.GetOptions().Extensions[mc_annotations.errors])

    @property
    def declared_reasons(self) -> tuple[str, ...]:
        """The ErrorInfo reasons the RPC declares (``error_reasons`` option)."""
        return tuple(self.method.GetOptions().Extensions[mc_annotations.error_reasons])

    @property
    def fills_update_mask(self) -> bool:
        """A PATCH with a body field and a top-level ``update_mask``: absent, the gateway fills
        it from the body's keys (as grpc-gateway does)."""
        if self.http_method != "PATCH" or self.body in ("", "*"):
            return False
        if self.method.input_type.fields_by_name[self.body].message_type is None:
            return False  # a scalar body has no keys
        mask = self.method.input_type.fields_by_name.get("update_mask")
        return (
            mask is not None
            and not mask.is_repeated
            and mask.message_type is not None
            and mask.message_type.full_name == _FIELD_MASK
        )

    @property
    def query_allowed(self) -> bool:
        """Whether query parameters may set request fields (not with ``body: "*"``)."""
        return self.body != "*"

    def bound_by_path(self, dotted: str) -> bool:
        """Whether a request field (dotted name) is set by the path or lies under the body."""
        return any(dotted == name or dotted.startswith(f"{name}.") for name in self._bound)

    @cached_property
    def _bound(self) -> frozenset[str]:
        names = {".".join(f.name for f in path) for path in self.path_fields}
        if self.body:
            names.add(self.body)
        return frozenset(names)


@dataclass(frozen=True)
class RouteTable:
    """Every REST route, in matching order, and the services they came from."""

    services: tuple[ServiceDescriptor, ...]
    routes: tuple[Route, ...]

    def routes_of(self, service: str) -> tuple[Route, ...]:
        """The routes of one service, by full name."""
        return tuple(r for r in self.routes if r.service.full_name == service)

    def rpc_names(self) -> Mapping[str, tuple[str, ...]]:
        """Service full name → the names of all its RPCs (with or without a REST route)."""
        return {s.full_name: tuple(m.name for m in s.methods) for s in self.services}


def discover_services(packages: Iterable[str] = DEFAULT_PACKAGES) -> tuple[ServiceDescriptor, ...]:
    """Every service defined in the generated ``*_pb2`` modules of the given packages."""
    services: list[ServiceDescriptor] = []
    for package in packages:
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError as error:
            raise RouteError(f"{package} is not generated; run `make proto`") from error
        for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
            if info.name.endswith("_pb2"):
                generated = importlib.import_module(f"{package}.{info.name}")
                services.extend(generated.DESCRIPTOR.services_by_name.values())
    return tuple(services)


def build_route_table(services: Sequence[ServiceDescriptor]) -> RouteTable:
    """Read every RPC's HTTP rule; raise ``RouteError`` for one the gateway cannot serve."""
    routes: list[Route] = []
    for service in services:
        for method in service.methods:
            routes.extend(_routes_of(service, method))
    seen: dict[tuple[str, tuple[str, ...]], Route] = {}
    for route in routes:
        key = (route.http_method, route.template.shape)
        if key in seen:
            raise RouteError(
                f"{route.rpc_path} and {seen[key].rpc_path} both bind {route.http_method} "
                f"{route.template.text} (as {seen[key].template.text})"
            )
        seen[key] = route
    # Literal segments before variables, so `/things:search` is tried before `/things/{id}`
    # where aiohttp would otherwise keep registration (proto) order. Stable for equal keys.
    routes.sort(key=lambda r: r.template.specificity)
    return RouteTable(services=tuple(services), routes=tuple(routes))


def _routes_of(service: ServiceDescriptor, method: MethodDescriptor) -> list[Route]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rpc = f"/{service.full_name}/{method.name}"
    access = options.Extensions[mc_annotations.access]
    if access in (mc_annotations.ACCESS_SERVICE, mc_annotations.ACCESS_SERVICE_CREDENTIAL):
        # Service-to-service RPCs are never exposed over REST, whatever their options say.
        _log.warning("http_option_ignored", rpc=rpc, reason="service-only RPC")
        return []
    if method.client_streaming or method.server_streaming:
        _log.warning("http_option_ignored", rpc=rpc, reason="streaming RPC")
        return []
    rule = options.Extensions[annotations_pb2.http]
    success = options.Extensions[mc_annotations.http_success_status]
    if not success:
        success = 204 if method.output_type.full_name == _EMPTY else 200
    if not 200 <= success < 300:
        raise RouteError(f"{rpc}: http_success_status {success} is not a 2xx status")
    settings = _RpcSettings(
        success_status=success,
        access=access,
        requires_idempotency_key=options.Extensions[mc_annotations.requires_idempotency_key],
        revalidate_every_use=options.Extensions[mc_annotations.revalidate_every_use],
    )
    rules = [rule, *rule.additional_bindings]
    return [_route(service, method, r, binding, settings) for binding, r in enumerate(rules)]


@dataclass(frozen=True)
class _RpcSettings:
    """What the method options say, shared by all bindings of one RPC."""

    success_status: int
    access: int
    requires_idempotency_key: bool
    revalidate_every_use: bool


def _route(
    service: ServiceDescriptor,
    method: MethodDescriptor,
    rule: http_pb2.HttpRule,
    binding: int,
    settings: _RpcSettings,
) -> Route:
    rpc = f"/{service.full_name}/{method.name}"
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError(f"{rpc}: HTTP rule without a method and path")
    if kind == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, path = kind.upper(), getattr(rule, kind)
    try:
        template = parse_template(path)
    except TemplateError as error:
        raise RouteError(f"{rpc}: {error}") from None
    request_type: Descriptor = method.input_type
    try:
        path_fields = tuple(resolve(request_type, v.name) for v in template.variables)
    except FieldPathError as error:
        raise RouteError(f"{rpc}: path variable {error}") from None
    for path_field in path_fields:
        if path_field[-1].is_repeated:
            raise RouteError(f"{rpc}: path variable {path_field[-1].name} is repeated")
    body = rule.body
    if body not in ("", "*"):
        body_field = find_field(request_type, body)
        if body_field is None:
            raise RouteError(f"{rpc}: body field {body!r} is not in {request_type.full_name}")
        body = body_field.name
    if rule.response_body and rule.response_body not in method.output_type.fields_by_name:
        raise RouteError(f"{rpc}: response_body {rule.response_body!r} is not in the response")
    return Route(
        service=service,
        method=method,
        http_method=http_method,
        template=template,
        body=body,
        response_body=rule.response_body,
        success_status=settings.success_status,
        access=settings.access,
        requires_idempotency_key=settings.requires_idempotency_key,
        revalidate_every_use=settings.revalidate_every_use,
        binding=binding,
        path_fields=path_fields,
    )
