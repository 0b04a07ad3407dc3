"""The ``buf.validate`` rules of a field as JSON Schema keywords, for the OpenAPI document.

The services enforce these rules (``common.validation``); publishing the same ones lets a
generated client check a request before sending it and a fuzzer generate data the services
accept. Only rules JSON Schema can state are exported; the rest stay in the descriptions.
"""

from __future__ import annotations

from typing import Any

from buf.validate import validate_pb2
from google.protobuf.descriptor import FieldDescriptor
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
