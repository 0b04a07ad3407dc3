"""The ``buf.validate`` rules of a field as JSON Schema keywords, for the OpenAPI document.

The services enforce these rules (``common.validation``); publishing the same ones lets a
generated client check a request before sending it and a fuzzer generate data the services
accept. Only rules JSON Schema can state are exported; the rest stay in the descriptions.
"""

from __future__ import annotations

import re
from typing import Any

from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from common.money import ISO_4217

_IGNORE_IF_ZERO = validate_pb2.IGNORE_IF_ZERO_VALUE
_NUMBER_RULES = frozenset(
    (
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
        "double",
        "float",
    )
)
_INTEGER_RULES = _NUMBER_RULES - {"double", "float"}


# Values a service accepts that no proto rule can list without repeating a long table: every
# Money's currency is checked against ISO 4217 (common.money), so the document lists the codes
# and a client or fuzzer never sends a well-shaped code that does not exist ("AAA").
_KNOWN_VALUES: dict[str, list[str]] = {
    "microcommerce.common.v1.Money.currency": sorted(ISO_4217),
}


def rules_of(field: FieldDescriptor) -> validate_pb2.FieldRules | None:
    """The field's declared rules, or None."""
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def is_required(field: FieldDescriptor) -> bool:
    """Whether the rules make the field required (present and not its zero value)."""
    rules = rules_of(field)
    return rules is not None and rules.required


def constrain(schema: dict[str, Any], field: FieldDescriptor) -> dict[str, Any]:
    """``schema`` (the field's, an array for a repeated field) with its rules added."""
    rules = rules_of(field)
    if rules is None or "$ref" in schema:
        return schema
    if field.full_name in _KNOWN_VALUES:
        schema = {**schema, "enum": _KNOWN_VALUES[field.full_name]}
    if field.is_repeated and schema.get("type") == "array":
        result = dict(schema)
        if rules.WhichOneof("type") == "repeated":
            repeated = rules.repeated
            if repeated.HasField("min_items"):
                result["minItems"] = repeated.min_items
            if repeated.HasField("max_items"):
                result["maxItems"] = repeated.max_items
            if repeated.unique:
                result["uniqueItems"] = True
            if repeated.HasField("items") and "$ref" not in result["items"]:
                result["items"] = _single(dict(result["items"]), repeated.items)
        return result
    return _single(dict(schema), rules)


def _single(schema: dict[str, Any], rules: validate_pb2.FieldRules) -> dict[str, Any]:
    kind = rules.WhichOneof("type")
    lenient = rules.ignore == _IGNORE_IF_ZERO  # the zero value passes whatever the rules say
    if kind == "string":
        _string(schema, rules.string, required=rules.required, lenient=lenient)
    elif kind in _NUMBER_RULES:
        _number(schema, getattr(rules, kind), integer=kind in _INTEGER_RULES)
        if rules.required:
            schema["not"] = {"enum": [0]}
    elif kind == "enum" and rules.enum.HasField("defined_only"):
        pass  # the enum's schema lists its defined names already
    elif rules.required and schema.get("type") == "string":
        schema["minLength"] = 1
    return schema


def _string(
    schema: dict[str, Any], rules: validate_pb2.StringRules, *, required: bool, lenient: bool
) -> None:
    if rules.HasField("len"):
        schema["minLength"] = schema["maxLength"] = rules.len
    if rules.HasField("min_len") and not lenient:
        schema["minLength"] = rules.min_len
    if rules.HasField("max_len"):
        schema["maxLength"] = rules.max_len
    if required:
        schema["minLength"] = max(schema.get("minLength", 0), 1)
    if rules.HasField("pattern"):
        schema["pattern"] = f"^$|{rules.pattern}" if lenient else rules.pattern
    if rules.email:
        schema["format"] = "email"
    elif rules.uuid:
        schema["format"] = "uuid"
    elif rules.hostname:
        schema["format"] = "hostname"
    elif rules.uri:
        schema["format"] = "uri"
    values = list(getattr(rules, "in"))  # `in` is a Python keyword
    if values:
        schema["enum"] = ["", *values] if lenient else values


def _number(schema: dict[str, Any], rules: Message, *, integer: bool) -> None:
    # OpenAPI 3.0 has no numeric exclusiveMinimum: on integers gt/lt are gte/lte one step in;
    # a float's exclusive bound is left to the description.
    if rules.HasField("gte"):
        schema["minimum"] = rules.gte  # type: ignore[attr-defined]
    elif rules.HasField("gt") and integer:
        schema["minimum"] = rules.gt + 1  # type: ignore[attr-defined]
    if rules.HasField("lte"):
        schema["maximum"] = rules.lte  # type: ignore[attr-defined]
    elif rules.HasField("lt") and integer:
        schema["maximum"] = rules.lt - 1  # type: ignore[attr-defined]


def refuses_zero(field: FieldDescriptor) -> bool:
    """Whether the rules refuse the field's zero value although the field has no presence.

    Such a field is required in JSON: leaving it out sends its zero value (a Money without a
    currency is one whose currency is ``""``, and ``^[A-Z]{3}$`` refuses that).
    """
    rules = rules_of(field)
    if rules is None or field.has_presence or field.is_repeated:
        return False
    if rules.ignore in (_IGNORE_IF_ZERO, validate_pb2.IGNORE_ALWAYS):
        return False
    kind = rules.WhichOneof("type")
    if kind == "string":
        return _string_refuses_empty(rules.string)
    if kind in _NUMBER_RULES:
        return _number_refuses_zero(getattr(rules, kind))
    return False


def required_oneofs(descriptor: Descriptor) -> list[list[str]]:
    """The member names of each oneof whose rules make setting one of its members required."""
    found = []
    for oneof in descriptor.oneofs:
        options = oneof.GetOptions()
        declared = options.HasExtension(validate_pb2.oneof)
        if declared and options.Extensions[validate_pb2.oneof].required:
            found.append([member.name for member in oneof.fields])
    return found


def _string_refuses_empty(rules: validate_pb2.StringRules) -> bool:
    well_known = rules.WhichOneof("well_known")
    # An email, a uuid, a hostname... is never empty; a relative URI reference may be.
    if well_known not in (None, "uri_ref") and getattr(rules, well_known) is True:
        return True
    if rules.HasField("const") and rules.const:
        return True
    if rules.len > 0 or rules.min_len > 0 or rules.min_bytes > 0:
        return True
    values = list(getattr(rules, "in"))  # `in` is a Python keyword
    if values and "" not in values:
        return True
    # protovalidate matches RE2 patterns anywhere in the value, as re.search does.
    return rules.HasField("pattern") and re.search(rules.pattern, "") is None


def _number_refuses_zero(rules: Message) -> bool:
    has = rules.HasField
    bound = rules  # the bounds share their names across the number rule messages
    if has("const") and bound.const != 0:  # type: ignore[attr-defined]
        return True
    if (has("gt") and bound.gt >= 0) or (has("gte") and bound.gte > 0):  # type: ignore[attr-defined]
        return True
    if (has("lt") and bound.lt <= 0) or (has("lte") and bound.lte < 0):  # type: ignore[attr-defined]
        return True
    values = list(getattr(rules, "in"))
    return bool(values) and 0 not in values
