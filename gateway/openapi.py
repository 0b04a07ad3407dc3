"""The OpenAPI 3.1 document, built from the same route table as the handlers.

Schemas stay in the subset that OpenAPI 3.0 reads the same way (no ``type`` lists, nothing
beside a ``$ref``), so the Swagger UI we ship, which reads only 3.0, can show the document
relabelled as 3.0.3 (``as_openapi_30``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from common.descriptors import (
    INPUT_ONLY,
    OUTPUT_ONLY,
    REQUIRED,
    enum_type,
    field_behaviors,
    is_map,
    is_text_field,
    message_type,
)
from common.logging import get_logger
from gateway.http_cache import shared_read
from gateway.openapi_links import DECLARED_LINKS, DeclaredLink, derive_links
from gateway.openapi_rules import constrain, is_required, refuses_zero, required_oneofs
from gateway.openapi_statuses import error_statuses, state_reasons
from gateway.path_templates import Literal as LiteralSegment
from gateway.path_templates import Variable
from gateway.problems import GRPC_TO_HTTP, PROBLEM_CONTENT_TYPE
from gateway.proto_comments import field_comment, service_comments, summary_of
from gateway.routes import Route, RouteTable
from gateway.transcoding import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX, JSON_CONTENT_TYPE

_log = get_logger(__name__)

OPENAPI_VERSION = "3.1.0"
_SCHEMAS = "#/components/schemas/"
# Names a message's request schema when its response schema has the message's own name.
_INPUT = "Input"
_PROBLEM = {"$ref": "#/components/responses/Problem"}
_BEARER = "bearerAuth"
# The methods an OpenAPI 3.1 path item can hold; a custom HTTP method has no place in it.
_OPENAPI_METHODS = frozenset(("get", "put", "post", "delete", "options", "head", "patch", "trace"))
# Nested request messages become dotted query parameters down to this depth.
_MAX_QUERY_DEPTH = 3
_ROUTE_PARAMETER = re.compile(r"\{([_a-zA-Z][_a-zA-Z0-9]*)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")

_T = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    _T.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    # 64-bit integers are JSON numbers over REST (CONTRACT.md), not proto3 JSON strings.
    _T.TYPE_INT64: {"type": "integer", "format": "int64"},
    _T.TYPE_SINT64: {"type": "integer", "format": "int64"},
    _T.TYPE_SFIXED64: {"type": "integer", "format": "int64"},
    _T.TYPE_UINT64: {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
    _T.TYPE_FIXED64: {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "Seconds with an `s` suffix, e.g. `1.5s`.",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field names, e.g. `name,description`.",
    },
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": _SCALARS[_T.TYPE_DOUBLE],
    "google.protobuf.FloatValue": _SCALARS[_T.TYPE_FLOAT],
    "google.protobuf.Int64Value": _SCALARS[_T.TYPE_INT64],
    "google.protobuf.UInt64Value": _SCALARS[_T.TYPE_UINT64],
    "google.protobuf.Int32Value": _SCALARS[_T.TYPE_INT32],
    "google.protobuf.UInt32Value": _SCALARS[_T.TYPE_UINT32],
    "google.protobuf.BoolValue": _SCALARS[_T.TYPE_BOOL],
    "google.protobuf.StringValue": _SCALARS[_T.TYPE_STRING],
    "google.protobuf.BytesValue": _SCALARS[_T.TYPE_BYTES],
}
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error (RFC 9457 problem details).",
    "properties": {
        "type": {"type": "string", "description": "Always `about:blank`: see `status`."},
        "title": {"type": "string", "description": "The HTTP status phrase."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong, for a human."},
        "code": {
            "type": "string",
            "enum": [code.name for code in GRPC_TO_HTTP],
            "description": "The gRPC status name, for a program.",
        },
        "request_id": {"type": "string", "description": "Quote it when reporting a problem."},
        "reason": {
            "type": "string",
            "description": "Why, for a program (the upstream's `google.rpc.ErrorInfo` reason), "
            "when there is one; the operation's description of the status lists those it sends.",
        },
        "field_violations": {
            "description": "The offending request fields, each with what was expected of it.",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {
                        "type": "string",
                        "description": "The field's path in the request, e.g. `items[0].quantity`.",
                    },
                    "description": {"type": "string", "description": "What was expected."},
                },
            },
        },
    },
    "required": ["type", "title", "status", "detail", "code", "request_id"],
}


def build_openapi(
    table: RouteTable,
    *,
    title: str,
    version: str,
    extra_routes: Iterable[web.RouteDef] = (),
    declared_links: Iterable[DeclaredLink] = DECLARED_LINKS,
) -> dict[str, Any]:
    """The document: every RPC route, then the non-RPC ``extra_routes`` (health and such).

    A create's success response links to the operations on what it created
    (``gateway.openapi_links``); ``declared_links`` adds those the descriptors cannot imply.
    """
    schemas = ProtoSchemas()
    comments = {s.full_name: service_comments(s) for s in table.services}
    paths: dict[str, dict[str, Any]] = {}
    # Same-shape templates share one OpenAPI path, whose parameter names come from the first
    # (OpenAPI forbids two paths that differ only in parameter names).
    names_of_shape: dict[str, tuple[str, ...]] = {}
    described: dict[tuple[str, str], tuple[Route, tuple[str, ...]]] = {}
    for route in table.routes:
        if route.http_method.lower() not in _OPENAPI_METHODS:
            continue  # served, but OpenAPI 3.1 cannot describe it
        shape = route.template.aiohttp_path()
        names = names_of_shape.setdefault(shape, route.template.placeholder_names)
        key = (route.template.openapi_path(names), route.http_method.lower())
        if key in described:
            # E.g. {name=shelves/*} and {name=rooms/*}: both served, both /v1/{name} here.
            _log.warning("openapi_operation_skipped", rpc=route.rpc_path, path=route.template.text)
            continue
        described[key] = (route, names)
    links = derive_links(
        [route for route, _ in described.values()],
        {route.operation_id: names for route, names in described.values()},
        declared_links,
    )
    for (path, method), (route, names) in described.items():
        comment = comments[route.service.full_name].get(route.method.name, "")
        operation = _operation(route, names, schemas, comment)
        if route.operation_id in links:
            success = operation["responses"][str(route.success_status)]
            success["links"] = links[route.operation_id]
        paths.setdefault(path, {})[method] = operation
    taken = {op["operationId"] for item in paths.values() for op in item.values()}
    for route_def in extra_routes:
        _add_extra_route(paths, route_def, taken)
    tags = [
        {
            "name": service.name,
            "description": _join(
                comments[service.full_name].get("", ""), f"gRPC service `{service.full_name}`."
            ),
        }
        for service in table.services
        if table.routes_of(service.full_name)
    ]
    return schemas.name_inputs(
        {
            "openapi": OPENAPI_VERSION,
            "info": {"title": title, "version": version},
            "tags": tags,
            "paths": paths,
            "components": {
                "schemas": {"Problem": _PROBLEM_SCHEMA, **dict(sorted(schemas.defined.items()))},
                "responses": {
                    "Problem": {
                        "description": "An error, as `application/problem+json`.",
                        "content": {
                            PROBLEM_CONTENT_TYPE: {"schema": {"$ref": f"{_SCHEMAS}Problem"}}
                        },
                    }
                },
                "securitySchemes": {
                    _BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                },
            },
        }
    )


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The same document labelled 3.0.3, for Swagger UI 4 (see the module docstring)."""
    return {**document, "openapi": "3.0.3"}


def _operation(
    route: Route, names: tuple[str, ...], schemas: ProtoSchemas, comment: str
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": summary_of(comment) if comment else _humanize(route.method.name),
        "description": _join(comment, _description(route)),
        "tags": [route.service.name],
        "x-grpc-method": route.rpc_path,
        "x-access": route.access_name,
    }
    parameters = _path_parameters(route, names, schemas)
    if route.query_allowed:
        parameters += _query_parameters(route, schemas)
    if route.requires_idempotency_key:
        parameters.append(
            {
                "name": IDEMPOTENCY_KEY_HEADER,
                "in": "header",
                "required": True,
                "description": "A unique key per intended operation: a retry with the same key "
                "and body returns the first result instead of repeating it.",
                "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = _request_body(route, schemas)
    if route.fills_update_mask:
        operation["description"] = _join(
            operation["description"],
            "Partial update: only the fields named in `update_mask` change; without it, the "
            "fields present in the body do.",
        )
    operation["responses"] = _responses(route, schemas)
    if not route.public:
        operation["security"] = [{_BEARER: []}]
    return operation


def _humanize(name: str) -> str:
    # "GetWidget" -> "Get widget"
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).split()
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else name


def _join(*paragraphs: str) -> str:
    return "\n\n".join(p for p in paragraphs if p)


def _description(route: Route) -> str:
    who = {
        "ACCESS_PUBLIC": "Anyone may call it, with or without a token.",
        "ACCESS_USER": "Needs a valid access token.",
        "ACCESS_ADMIN": "Needs an access token with the `admin` role.",
    }.get(route.access_name, "Needs a valid access token.")
    return f"gRPC `{route.rpc_path}`. {who}"


def _path_parameters(route: Route, names: tuple[str, ...], schemas: ProtoSchemas) -> list[Any]:
    parameters: list[Any] = []
    variables = iter(zip(route.template.variables, route.path_fields, strict=True))
    placeholders = [s for s in route.template.segments if not isinstance(s, LiteralSegment)]
    for name, segment in zip(names, placeholders, strict=True):
        parameter: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if isinstance(segment, Variable):
            variable, fields = next(variables)
            parameter["schema"] = schemas.field(fields[-1], repeated=False, request=True)
            notes = []
            if variable.name != name:
                notes.append(f"Sets the request field `{variable.name}`.")
            if variable.pattern != "*":
                notes.append(f"Matches `{variable.pattern}`; slashes are part of the value.")
            if notes:
                parameter["description"] = " ".join(notes)
        else:
            parameter["schema"] = {"type": "string"}
            parameter["description"] = "Any path segment; not passed on."
        parameters.append(parameter)
    return parameters


def _query_parameters(route: Route, schemas: ProtoSchemas) -> list[Any]:
    parameters: list[Any] = []

    def visit(descriptor: Descriptor, prefix: str, depth: int, seen: frozenset[str]) -> None:
        for field in descriptor.fields:
            dotted = f"{prefix}{field.name}"
            if route.bound_by_path(dotted) or is_map(field):
                continue
            if is_text_field(field):
                parameter: dict[str, Any] = {
                    "name": dotted,
                    "in": "query",
                    "schema": schemas.field(field, request=True),
                }
                notes = [field_comment(field)]
                if field.is_repeated:
                    notes.append("Repeat the parameter for several values.")
                if any(notes):
                    parameter["description"] = " ".join(note for note in notes if note)
                if REQUIRED in field_behaviors(field) or is_required(field):
                    parameter["required"] = True
                parameters.append(parameter)
            elif (
                not field.is_repeated
                and depth < _MAX_QUERY_DEPTH
                and message_type(field).full_name not in seen
                and message_type(field).full_name not in _WELL_KNOWN
            ):
                nested = message_type(field)
                visit(nested, f"{dotted}.", depth + 1, seen | {nested.full_name})

    request_type = route.method.input_type
    visit(request_type, "", 0, frozenset({request_type.full_name}))
    return parameters


def _request_body(route: Route, schemas: ProtoSchemas) -> dict[str, Any]:
    request_type = route.method.input_type
    if route.body == "*":
        in_path = {fields[0].name for fields in route.path_fields if len(fields) == 1}
        schema = (
            schemas.message(request_type, exclude=in_path, request=True)
            if in_path
            else schemas.ref(request_type, request=True)
        )
        required = any(
            REQUIRED in field_behaviors(f) or is_required(f)
            for f in request_type.fields
            if f.name not in in_path
        )
    else:
        body_field = request_type.fields_by_name[route.body]
        schema = schemas.field(body_field, request=True)
        required = True
    return {"required": required, "content": {JSON_CONTENT_TYPE: {"schema": schema}}}


_SHARED_HEADERS = {
    "ETag": {
        "description": (
            "Without a token: a strong validator of the body, for `If-None-Match`. With a "
            "token, on a resource with an etag: its version, for `If-Match`."
        ),
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": (
            "Without a token: `public, max-age=N, stale-while-revalidate=M` on 200 and 304 "
            "(no-store on errors); with one: `private, no-store`."
        ),
        "schema": {"type": "string"},
    },
}


def _responses(route: Route, schemas: ProtoSchemas) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success."}
    if route.has_body:
        response_type = route.method.output_type
        schema = (
            schemas.field(response_type.fields_by_name[route.response_body])
            if route.response_body
            else schemas.ref(response_type)
        )
        success["content"] = {JSON_CONTENT_TYPE: {"schema": schema}}
    if route.response_has_etag:
        success["headers"] = {
            "ETag": {
                "description": "The resource's version, for `If-Match` on a later change.",
                "schema": {"type": "string"},
            }
        }
    responses: dict[str, Any] = {str(route.success_status): success}
    if shared_read(route):
        success["headers"] = _SHARED_HEADERS
        responses["304"] = {
            "description": "Not Modified: the `If-None-Match` tag is still current.",
            "headers": _SHARED_HEADERS,
        }
    for status in sorted(error_statuses(route)):
        responses[str(int(status))] = _PROBLEM
    reasons = state_reasons(route)
    if reasons and str(int(HTTPStatus.BAD_REQUEST)) in responses:
        # A 400 here may refuse a valid request: what it names is in the wrong state. The
        # document says which, so a client (or a fuzzer) does not read it as its own mistake.
        responses[str(int(HTTPStatus.BAD_REQUEST))] = {
            "description": "An invalid request (`code` `INVALID_ARGUMENT`), or a valid one "
            "refused because of the state of what it acts on (`code` `FAILED_PRECONDITION`, "
            "e.g. an order no longer in a state that allows it): the same request may succeed "
            "once that state changes. `reason` then says why, among those the operation "
            "declares: " + ", ".join(f"`{reason}`" for reason in reasons) + ".",
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": f"{_SCHEMAS}Problem"}}},
        }
    responses["default"] = _PROBLEM
    return responses


def _add_extra_route(
    paths: dict[str, dict[str, Any]], route_def: web.RouteDef, taken: set[str]
) -> None:
    method = route_def.method.lower()
    if method not in _OPENAPI_METHODS:
        return
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _ROUTE_PARAMETER.findall(route_def.path)
    ]
    path = _ROUTE_PARAMETER.sub(lambda m: "{" + m.group(1) + "}", route_def.path)
    doc = (getattr(route_def.handler, "__doc__", None) or "").strip()
    name = getattr(route_def.handler, "__name__", "handler")
    operation_id = f"{name}_{method}"
    suffix = 1
    while operation_id in taken:  # one handler may serve several paths
        suffix += 1
        operation_id = f"{name}_{method}_{suffix}"
    taken.add(operation_id)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": doc.splitlines()[0] if doc else _humanize(name),
        "tags": ["meta"],
        "responses": {"200": {"description": "Success."}, "default": _PROBLEM},
    }
    if parameters:
        operation["parameters"] = parameters
    paths.setdefault(path, {})[method] = operation


class ProtoSchemas:
    """components/schemas, filled as operations refer to message and enum types.

    A message has a request schema and a response schema. The request one says what the
    services accept: no field the message lacks (the gateway refuses one with a 400), a field
    whose zero value its rules refuse is required, so is a member of a required oneof. The
    response one stays open, so a client generated from the document keeps working when a
    later version of the service adds a field. A message used both ways gets both, the request
    one named with an ``Input`` suffix (``name_inputs``); one used one way keeps its name.
    """

    def __init__(self) -> None:
        self.defined: dict[str, dict[str, Any]] = {}
        # Request schema name -> the message's full name.
        self._inputs: dict[str, str] = {}

    def ref(self, descriptor: Descriptor, *, request: bool = False) -> dict[str, Any]:
        """A reference to the message's schema (inline for well-known types)."""
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        key = f"{name}{_INPUT}" if request else name
        if key not in self.defined:
            self.defined[key] = {}  # placeholder first: recursive types refer to themselves
            if request:
                self._inputs[key] = name
            self.defined[key] = self.message(descriptor, request=request)
        return {"$ref": f"{_SCHEMAS}{key}"}

    def enum_ref(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        """A reference to the enum's schema: its value names as strings."""
        name = descriptor.full_name
        if name not in self.defined:
            self.defined[name] = {"type": "string", "enum": [v.name for v in descriptor.values]}
        return {"$ref": f"{_SCHEMAS}{name}"}

    def message(
        self, descriptor: Descriptor, *, exclude: set[str] | None = None, request: bool = False
    ) -> dict[str, Any]:
        """The message as an object schema; ``exclude`` leaves fields out (set by the path)."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in descriptor.fields:
            if exclude and field.name in exclude:
                continue
            schema = self.field(field, request=request)
            behaviors = field_behaviors(field)
            flags: dict[str, Any] = {}
            comment = field_comment(field)
            if comment:
                flags["description"] = comment
            if OUTPUT_ONLY in behaviors:
                flags["readOnly"] = True
            if INPUT_ONLY in behaviors:
                flags["writeOnly"] = True
            if flags:
                # Nothing may sit beside a $ref in OpenAPI 3.0: wrap it.
                schema = {"allOf": [schema], **flags} if "$ref" in schema else schema | flags
            properties[field.name] = schema
            if REQUIRED in behaviors or is_required(field) or (request and refuses_zero(field)):
                required.append(field.name)
        result: dict[str, Any] = {"type": "object", "properties": properties}
        if request:
            # The gateway refuses a field the message does not have (400), so the document
            # says so: a client or a fuzzer that adds one is told before it sends.
            result["additionalProperties"] = False
            alternatives = []
            for members in required_oneofs(descriptor):
                members = [m for m in members if m in properties]
                if len(members) == 1:
                    required.append(members[0])
                elif members:
                    alternatives.append({"oneOf": [{"required": [m]} for m in members]})
            if len(alternatives) == 1:
                result |= alternatives[0]
            elif alternatives:
                result["allOf"] = alternatives
        if required:
            result["required"] = list(dict.fromkeys(required))
        return result

    def field(
        self, field: FieldDescriptor, *, repeated: bool | None = None, request: bool = False
    ) -> dict[str, Any]:
        """A field's schema: arrays for repeated fields, objects for maps."""
        if is_map(field):
            value_field = message_type(field).fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value_field, request)}
        single = self._single(field, request)
        is_repeated = field.is_repeated if repeated is None else repeated
        # The rules the services enforce (buf.validate), as JSON Schema keywords.
        return constrain({"type": "array", "items": single} if is_repeated else single, field)

    def _single(self, field: FieldDescriptor, request: bool) -> dict[str, Any]:
        if field.type == _T.TYPE_MESSAGE:
            return self.ref(message_type(field), request=request)
        if field.type == _T.TYPE_ENUM:
            return self.enum_ref(enum_type(field))
        return dict(_SCALARS[field.type])

    def name_inputs(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` with each request schema of a message no response uses renamed to the
        message's own name: the ``Input`` suffix only tells apart two schemas of one message."""
        renames = {
            f"{_SCHEMAS}{key}": f"{_SCHEMAS}{name}"
            for key, name in self._inputs.items()
            if name not in self.defined
        }
        if not renames:
            return document
        schemas = document["components"]["schemas"]
        document["components"]["schemas"] = dict(
            sorted(
                (renames.get(f"{_SCHEMAS}{key}", f"{_SCHEMAS}{key}").removeprefix(_SCHEMAS), value)
                for key, value in schemas.items()
            )
        )
        renamed: dict[str, Any] = _rename_refs(document, renames)
        return renamed


def _rename_refs(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: renames.get(item, item)
            if key == "$ref" and isinstance(item, str)
            else _rename_refs(item, renames)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rename_refs(item, renames) for item in value]
    return value
