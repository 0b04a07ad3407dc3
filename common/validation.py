"""Request validation by the rules the protos declare (``buf.validate``), at the service boundary.

The contract states its constraints (required, lengths, patterns, email, ranges, repeated
bounds) in the protos; ``protovalidate`` (Buf's maintained engine) enforces them before a
servicer runs, so no service repeats the checks in code and the OpenAPI document can publish
the same rules. Rules that need state or span several values (Luhn, expiry, a unique email)
stay in the domain.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import protovalidate
from google.protobuf.message import Message

from common.errors import FieldViolation, InvalidArgument
from common.grpc_types import RpcMethodHandler as _Handler
from common.grpc_types import ServerInterceptor as _ServerInterceptor

_validator = protovalidate.Validator()


def _elements(violation: protovalidate.Violation) -> list[protovalidate.FieldPathElementPb]:
    path = violation.proto.field
    return [] if path is None else list(path.elements)


def _path(violation: protovalidate.Violation) -> str:
    """The field as the request spells it: ``items[0].product_id``, ``labels["k"]``."""
    parts: list[str] = []
    for element in _elements(violation):
        if not element.field_number:
            # A oneof (e.g. ``payment_method.method``): its name is not a JSON field, so the
            # violation belongs to the message holding it.
            continue
        parts.append(f".{element.field_name}" if parts else element.field_name)
        subscript = element.subscript
        if subscript is None:
            continue
        if subscript.field == "index":
            parts.append(f"[{subscript.value}]")
        else:  # a map key, quoted as JSON would be when it is text
            key = subscript.value
            parts.append(f'["{key}"]' if isinstance(key, str) else f"[{key}]")
    return "".join(parts)


def _description(violation: protovalidate.Violation, message: Message) -> str:
    proto = violation.proto
    elements = _elements(violation)
    if elements and not elements[-1].field_number:
        # Which members the oneof has, so the caller knows what to send.
        holder = message.DESCRIPTOR
        for element in elements[:-1]:
            nested = holder.fields_by_name[element.field_name].message_type
            if nested is None:
                break
            holder = nested
        oneof = holder.oneofs_by_name.get(elements[-1].field_name)
        if oneof is not None:
            members = ", ".join(field.name for field in oneof.fields)
            return f"exactly one of {members} is required"
    return proto.message or proto.rule_id


def violations(message: Message) -> list[FieldViolation]:
    """What breaks the message's declared rules, each with its field path; empty when none."""
    return [
        FieldViolation(_path(violation), _description(violation, message))
        for violation in _validator.collect_violations(message)
    ]


def check(message: Message) -> None:
    """Raise ``InvalidArgument`` listing every violated rule of ``message``."""
    found = violations(message)
    if not found:
        return
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise InvalidArgument(
        f"{first.field}: {first.description}{more}" if first.field else first.description + more,
        violations=found,
    )


class ValidationInterceptor(_ServerInterceptor):
    """Checks every unary request against its message's rules before the servicer sees it.

    Installed innermost by ``common.grpc_server.create_server``, so the caller's identity is
    checked first (a stranger learns nothing from a 400) and the boundary interceptor turns the
    ``InvalidArgument`` into INVALID_ARGUMENT with a ``BadRequest`` detail per violation.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler: _Handler | None = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            # Unknown methods are answered by gRPC; streaming requests (health Watch) carry no
            # rules of ours.
            return handler  # type: ignore[return-value]  # grpc-stubs omit the None case
        behavior = handler.unary_unary

        async def validated(request: Any, context: Any) -> Any:
            if isinstance(request, Message):  # generic handlers may carry raw bytes
                check(request)
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(
            validated, handler.request_deserializer, handler.response_serializer
        )
