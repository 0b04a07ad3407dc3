"""Request validation by the rules the protos declare (``buf.validate``), at the service boundary.

The contract states its constraints (required, lengths, patterns, email, ranges, repeated
bounds) in the protos; ``protovalidate`` (Buf's maintained engine) enforces them before a
servicer runs, so no service repeats the checks in code and the OpenAPI document can publish
the same rules. Rules that need state or span several values (Luhn, expiry, a unique email)
stay in the domain.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import grpc
import protovalidate
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from common.errors import FieldViolation, InvalidArgument
from common.grpc_types import RpcMethodHandler as _Handler
from common.grpc_types import ServerInterceptor as _ServerInterceptor

_validator = protovalidate.Validator()

# What each ``string.pattern`` rule of the protos asks for, in words: protovalidate's own
# message quotes the regular expression, which tells a caller nothing. Keyed by the pattern as
# the protos declare it; tests/unit/common/test_validation_wording.py checks that every pattern
# the protos declare is here.
PATTERN_WORDING: Final[Mapping[str, str]] = MappingProxyType(
    {
        "^[A-Z]{3}$": "must be a three-letter ISO 4217 currency code in capitals, such as USD",
        "^[A-Za-z]{3}$": "must be a three-letter ISO 4217 currency code, such as USD or eur",
        "^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?"
        "(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$": (
            "must be a language tag (BCP 47) such as en, en-GB or zh-Hant-TW"
        ),
        "^[0-9]([ -]?[0-9]){11,18}$": (
            "must be 12 to 19 digits, grouped with single spaces or hyphens or not"
        ),
        "^[0-9]{3,4}$": "must be the 3 or 4 digits of the card's security code",
        "^[A-Za-z0-9][A-Za-z0-9._-]*$": (
            "must start with a letter or a digit and hold only letters, digits, '.', '_' and '-'"
        ),
        "^[a-z0-9]+(-[a-z0-9]+)*$": (
            "must be lowercase letters and digits, in words joined by single hyphens "
            "(such as summer-sale)"
        ),
    }
)
# A pattern without wording (a test keeps this from happening) still never shows its regex.
_UNWORDED_PATTERN = "is not in the expected format"
_PLURAL_ONE = re.compile(r"\b1 (character|byte|item)s\b")
_BETWEEN = re.compile(r"must be greater than or equal to (\S+) and less than or equal to (\S+)$")


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
    return _in_words(violation, _field_of(message.DESCRIPTOR, elements))


def _field_of(
    descriptor: Any, elements: list[protovalidate.FieldPathElementPb]
) -> FieldDescriptor | None:
    """The field a violation's path ends at (descriptors are upb's or Python's: ``Any``)."""
    holder: Descriptor | None = descriptor
    field: FieldDescriptor | None = None
    for element in elements:
        if holder is None:
            return None
        field = holder.fields_by_number.get(element.field_number)
        if field is None:
            return None
        holder = field.message_type
    return field


def _in_words(violation: protovalidate.Violation, field: FieldDescriptor | None) -> str:
    """protovalidate's message, or what the rule asks in words where the message quotes a
    regex or a list literal; never "value ..." (the field is named beside it)."""
    rule_id = violation.proto.rule_id
    if rule_id == "string.pattern":
        return PATTERN_WORDING.get(str(violation.rule_value), _UNWORDED_PATTERN)
    if rule_id in ("string.in", "int32.in", "int64.in") and violation.rule_value is not None:
        allowed = ", ".join(str(value) for value in violation.rule_value)
        return f"must be one of: {allowed}"
    if rule_id == "repeated.unique":
        return "must not list the same item twice"
    enum = None if field is None else field.enum_type
    if rule_id.startswith("enum.") and enum is not None:
        # The names the JSON carries, without the unspecified zero value.
        names = ", ".join(value.name for value in enum.values if value.number != 0)
        return f"must be one of: {names}"
    message = violation.proto.message or rule_id
    message = message.removeprefix("value ")
    message = _BETWEEN.sub(r"must be from \1 to \2", message)
    message = message.replace("1 item(s)", "1 item").replace("item(s)", "items")
    return _PLURAL_ONE.sub(r"1 \1", message)


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
