"""One generic handler per route: HTTP request → gRPC request message → upstream call → JSON."""

from __future__ import annotations

import asyncio
import json
import re
from http import HTTPStatus
from typing import Any

import grpc
from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from multidict import MultiMapping

from common.descriptors import descriptor_of, message_type
from common.proto_json import JsonMappingError, merge_json, message_to_json
from common.request_context import (
    CLIENT_ADDRESS_METADATA_KEY,
    CLIENT_USER_AGENT_METADATA_KEY,
    REQUEST_ID_METADATA_KEY,
)
from gateway.auth import Authenticator
from gateway.client_address import client_address
from gateway.conditional import (
    ETAG_FIELD,
    IF_MATCH_HEADER,
    apply_if_match,
    etag_header,
    etag_path,
)
from gateway.deadlines import request_timeout
from gateway.field_paths import FieldPathError, resolve, set_from_text, update_mask_paths
from gateway.http_cache import HttpCache
from gateway.metrics import GatewayMetrics
from gateway.middleware import request_id
from gateway.path_templates import PathValueError, decode_variable, normalize_path
from gateway.problems import FieldViolation, ProblemError, invalid_argument
from gateway.ratelimit import RateLimiter
from gateway.routes import Route, RouteTable
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstreams

JSON_CONTENT_TYPE = "application/json"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

# W3C Trace Context: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?")
# Long enough for any UUID or ULID with a prefix; services store the key.
IDEMPOTENCY_KEY_MAX = 255
# Compact UTF-8 JSON of the answers. One encoder: json.dumps with any option builds a new
# JSONEncoder on every call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Transcoder:
    """The handler of one route; the route's messages and field paths are resolved once."""

    def __init__(
        self,
        route: Route,
        upstreams: Upstreams,
        authenticator: Authenticator,
        *,
        settings: GatewaySettings,
        limiter: RateLimiter | None = None,
        http_cache: HttpCache | None = None,
    ) -> None:
        self.route = route
        self._cache = http_cache or HttpCache(
            settings.http_cache_max_age_s, settings.http_cache_swr_s
        )
        self._upstreams = upstreams
        self._authenticator = authenticator
        self._limiter = limiter
        self._timeout = settings.timeout_of(
            route.rpc_path, f"{route.http_method} {route.template.text}"
        )
        self._body_timeout = settings.body_read_timeout_s
        self._request_class = GetMessageClass(route.method.input_type)
        self._response_field = (
            route.method.output_type.fields_by_name[route.response_body]
            if route.response_body
            else None
        )
        self._etag_path = etag_path(route.method.input_type, route.body)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Transcode one call; failures surface as ``ProblemError`` for the problem middleware."""
        # First, so that every refusal below (429, a bad header) gets its Cache-Control too.
        self._cache.mark(self.route, request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request_timeout(request, self._timeout)
        if self._limiter is None:
            return await self._answer(request, deadline)
        await self._limiter.check_address(request, self.route)
        try:
            response = await self._answer(request, deadline)
        except ProblemError as problem:
            await self._limiter.charge_answer(request, self.route, problem.http_status)
            raise
        except web.HTTPException as error:  # aiohttp's own, e.g. 413 while reading the body
            await self._limiter.charge_answer(request, self.route, error.status)
            raise
        await self._limiter.charge_answer(request, self.route, response.status)
        return response

    async def _answer(self, request: web.Request, deadline: float) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        await self._authenticator.admit(request, self.route)  # a 401 costs no call
        if self._limiter is not None:
            await self._limiter.check_user(request, self.route)
        metadata = _metadata(request, self.route)
        message = await self._request_message(request)
        precondition = apply_if_match(
            request.headers.get(IF_MATCH_HEADER), request.method, self._etag_path, message
        )
        try:
            # The deadline counts from arrival; gRPC sends what is left on as grpc-timeout.
            reply = await self._upstreams.call(
                self.route, message, metadata, within_s=deadline - loop.time()
            )
        except ProblemError as problem:
            raise problem if precondition is None else precondition.refine(problem) from None
        if not self.route.has_body:
            return web.Response(status=self.route.success_status)
        payload = message_to_json(reply)
        if self._response_field is not None:
            payload = payload.get(self._response_field.name)
        body = _JSON.encode(payload).encode()
        if self.route.success_status == HTTPStatus.OK and self._cache.shareable(
            self.route, request
        ):
            return self._cache.answer(request, body, {})
        return web.Response(
            status=self.route.success_status,
            body=body,
            content_type=JSON_CONTENT_TYPE,
            headers=etag_header(payload),
        )

    async def _request_message(self, request: web.Request) -> Message:
        route = self.route
        message = self._request_class()
        body: Any = None
        if route.body:
            body = await _read_json(request, self._body_timeout)
            if route.body == "*":
                _merge(body if body is not None else {}, message)
            elif body is not None:
                _merge({route.body: body}, message)
        if route.query_allowed:
            self._apply_query(request.query, message)
        elif request.query:
            names = ", ".join(sorted(set(request.query)))
            raise invalid_argument(f"Query parameters are not accepted here (got {names}).")
        # The path last: it wins over the same field given in the body.
        variables = route.template.variables
        for index, variable_fields in enumerate(route.path_fields):
            # The template's variables are named v0, v1... in path order (aiohttp_path), and
            # matched still escaped (TemplateResource): decoding depends on the variable.
            try:
                value = decode_variable(variables[index], request.match_info[f"v{index}"])
                set_from_text(message, variable_fields, [value])
            except (FieldPathError, PathValueError) as error:
                name = ".".join(f.name for f in variable_fields)
                raise _field_problem(name, str(error), source="Path segment ") from None
        if route.fills_update_mask and isinstance(body, dict):
            mask: field_mask_pb2.FieldMask = getattr(message, "update_mask")  # noqa: B009  # typed as Message
            if not mask.paths:
                body_type = message_type(route.method.input_type.fields_by_name[route.body])
                # The etag says which version is updated; it is not a field to change (AIP-154).
                paths = update_mask_paths(body_type, body)
                mask.paths.extend(path for path in paths if path != ETAG_FIELD)
        return message

    def _apply_query(self, query: MultiMapping[str], message: Message) -> None:
        for name in dict.fromkeys(query):  # each name once, in order; values via getall
            try:
                if self.route.bound_by_path(name):
                    raise FieldPathError("is set by the path or the body")
                fields = resolve(descriptor_of(message), name)
                set_from_text(message, fields, query.getall(name))
            except FieldPathError as error:
                raise _field_problem(name, str(error), source="Query parameter ") from None


async def _read_json(request: web.Request, limit_s: float) -> Any:
    try:
        async with asyncio.timeout(limit_s):
            raw = await request.read()  # bounded by client_max_size: over it, a 413
    except TimeoutError:
        # A client trickling its body must not hold a handler (and an upstream slot) forever.
        raise ProblemError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"The request body did not arrive within {limit_s:g} s.",
            status=HTTPStatus.REQUEST_TIMEOUT,
        ) from None
    if not raw.strip():
        return None  # an empty body is an empty request, e.g. a custom method's `{}`
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise invalid_argument(f"The body is not valid JSON: {error}") from None


def _merge(data: Any, message: Message) -> None:
    try:
        merge_json(data, message)
    except JsonMappingError as error:
        raise _field_problem(error.field or "body", error.description) from None


def _field_problem(field: str, description: str, *, source: str = "") -> ProblemError:
    """A 400 naming the offending field, in ``detail`` and as a field violation; ``source``
    says where a field not from the body came from ("Query parameter ")."""
    return ProblemError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{source}{field}: {description}",
        field_violations=[FieldViolation(field, description)],
    )


def _metadata(request: web.Request, route: Route) -> list[tuple[str, str]]:
    """What travels upstream as gRPC metadata: request id, credentials, idempotency, trace."""
    metadata = [(REQUEST_ID_METADATA_KEY, request_id(request))]
    # For per-client throttling and session records upstream. Set by the gateway only, from
    # the peer or a trusted proxy's header: a client cannot forge it.
    metadata.append((CLIENT_ADDRESS_METADATA_KEY, client_address(request)))
    headers = request.headers
    user_agent = headers.get("User-Agent")
    if user_agent and _is_metadata_safe(user_agent):
        metadata.append((CLIENT_USER_AGENT_METADATA_KEY, user_agent[:256]))
    authorization = headers.get("Authorization")
    if authorization is not None:
        metadata.append(("authorization", _metadata_value("Authorization", authorization)))
    key = _idempotency_key(request)
    if key:
        metadata.append(("idempotency-key", key))
    elif route.requires_idempotency_key:
        raise invalid_argument(f"This call needs an {IDEMPOTENCY_KEY_HEADER} header.")
    traceparent = headers.get("traceparent")
    # A malformed traceparent is dropped rather than refused, as the W3C spec asks.
    if traceparent is not None and _TRACEPARENT.fullmatch(traceparent):
        metadata.append(("traceparent", traceparent))
        tracestate = headers.get("tracestate")
        if tracestate is not None and _is_metadata_safe(tracestate):
            metadata.append(("tracestate", tracestate))
    return metadata


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER, "").strip()
    # The IETF draft (httpapi-idempotency-key) makes it a structured-field string, "..."; most
    # clients send the bare token. Both name the same key.
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if len(key) > IDEMPOTENCY_KEY_MAX:
        raise invalid_argument(
            f"{IDEMPOTENCY_KEY_HEADER} is longer than {IDEMPOTENCY_KEY_MAX} characters."
        )
    return _metadata_value(IDEMPOTENCY_KEY_HEADER, key)


def _is_metadata_safe(value: str) -> bool:
    # gRPC ASCII metadata values are printable ASCII (0x20-0x7E).
    return value.isascii() and value.isprintable()


def _metadata_value(header: str, value: str) -> str:
    if not _is_metadata_safe(value):
        raise invalid_argument(f"The {header} header must be printable ASCII.")
    return value


class TemplateResource(web.DynamicResource):
    """A resource with variables, matched against the path as the client sent it.

    aiohttp matches a path with every escape but ``%2F`` decoded, where ``a%3Ab`` looks like a
    custom verb and ``%2F`` can no longer be kept apart from ``/`` in a multi-segment value.
    This matches ``normalize_path`` (only unreserved escapes decoded) and leaves the values
    escaped for ``decode_variable``.
    """

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        match = self._pattern.fullmatch(normalize_path(request.rel_url.raw_path))
        if match is None:
            return None, set()
        route = self._routes.get(request.method, self._any_route)
        if route is None:
            return None, self._allowed_methods
        return UrlMappingMatchInfo(match.groupdict(), route), self._allowed_methods


def add_rpc_routes(
    router: web.UrlDispatcher,
    table: RouteTable,
    upstreams: Upstreams,
    metrics: GatewayMetrics,
    authenticator: Authenticator,
    *,
    settings: GatewaySettings,
    limiter: RateLimiter | None = None,
    http_cache: HttpCache | None = None,
) -> None:
    """Register a handler for every route of the table, in its order.

    Templates of the same shape (``GET /things/{id}``, ``PATCH /things/{thing.id}``) render to
    the same aiohttp path and share one resource, so 405 answers list all their methods.
    """
    resources: dict[str, web.Resource] = {}
    for route in table.routes:
        path = route.template.aiohttp_path()
        resource = resources.get(path)
        if resource is None:
            if "{" in path:
                resource = TemplateResource(path)
                router.register_resource(resource)
            else:
                resource = router.add_resource(path)
            resources[path] = resource
        transcoder = Transcoder(
            route,
            upstreams,
            authenticator,
            settings=settings,
            limiter=limiter,
            http_cache=http_cache,
        )
        added = resource.add_route(route.http_method, transcoder.handle)
        metrics.name_route(added, route.template.text)
