"""Every declared rule, broken on purpose, answers in words: never a regex, never Python.

For every request message of every service, each field (nested ones included) is set, one at
a time, to values that break the usual rules (empty, too long, malformed, negative, huge,
undefined enum numbers, empty / oversized / repeated lists, missing messages). Each violation
the services would answer (``common.validation.violations``, what the boundary sends as
BadRequest and the gateway as ``field_violations``) must say what was expected in words.
Wrong JSON types are the gateway's (tests/unit/gateway/test_gateway_wrong_types.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import is_map
from common.validation import PATTERN_WORDING, violations
from gateway.routes import discover_services

_T = FieldDescriptor
# A regex, a list literal or a code span quoted back; or the words of Python underneath.
TECHNICAL = re.compile(
    r"[\^$`\[\]\\{}]|\bregex\b|\bpattern\b|\bvalue\b|int\(\)|NoneType|bytes-like|Traceback|"
    r"'(dict|list|int|str|float|bool)'|\bobject\b|item\(s\)|\b1 characters\b"
)
STRINGS = ("", " ", "x" * 5001, "!!", "usd", "a b", "-leading", "12", "nope@", "x")
INTS = (-1, 0, 2**31 - 1, -(2**31))
INT64S = (-1, 0, 2**53, -(2**63))
ENUMS = (0, 12345)


def _bad_values(field: FieldDescriptor) -> tuple[Any, ...]:
    kind = field.type
    if kind == _T.TYPE_STRING:
        return STRINGS
    if kind in (_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32):
        return INTS
    if kind in (_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64):
        return INT64S
    if kind in (_T.TYPE_UINT32, _T.TYPE_FIXED32):
        return (0, 2**32 - 1)
    if kind in (_T.TYPE_UINT64, _T.TYPE_FIXED64):
        return (0, 2**64 - 1)
    if kind == _T.TYPE_ENUM:
        return ENUMS
    return ()


def _messages(descriptor: Descriptor, base: Message) -> Iterator[tuple[str, Message]]:
    """(what was broken, the request) for every field of ``descriptor`` inside ``base``."""
    request_type = type(base)
    for field in descriptor.fields:
        if is_map(field):
            continue
        if field.message_type is not None and not field.is_repeated:
            nested = field.message_type
            if nested.full_name.startswith("google.protobuf."):
                continue
            # Present but empty: its own required fields, patterns... are broken from inside.
            for label, broken in _messages(nested, GetMessageClass(nested)()):
                request = request_type()
                request.CopyFrom(base)
                getattr(request, field.name).CopyFrom(broken)
                yield f"{field.name}.{label}", request
            continue
        if field.is_repeated:
            if field.message_type is not None:
                item = GetMessageClass(field.message_type)
                lists: tuple[list[Any], ...] = ([], [item()], [item()] * 101)
            else:
                values = _bad_values(field)
                lists = ([], *([value] for value in values), [values[0]] * 101, list(values) * 2)
            for listed in lists:
                request = request_type()
                request.CopyFrom(base)
                getattr(request, field.name).extend(listed)
                yield f"{field.name}={len(listed)} items", request
            continue
        for value in _bad_values(field):
            request = request_type()
            request.CopyFrom(base)
            setattr(request, field.name, value)
            yield f"{field.name}={value!r:.20}", request


def _requests() -> Iterator[Any]:
    seen: set[str] = set()
    for service in discover_services():
        for method in service.methods:
            descriptor = method.input_type
            if descriptor.full_name in seen:
                continue
            seen.add(descriptor.full_name)
            yield pytest.param(descriptor, id=descriptor.name)


@pytest.mark.parametrize("descriptor", list(_requests()))
def test_every_broken_rule_says_what_was_expected_in_words(descriptor: Descriptor) -> None:
    worded: list[str] = []
    for label, request in _messages(descriptor, GetMessageClass(descriptor)()):
        for violation in violations(request):
            assert violation.description, label
            assert not TECHNICAL.search(violation.description), (label, violation)
            worded.append(violation.description)
    assert worded or not _has_rules(descriptor, frozenset()), descriptor.full_name


def _has_rules(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    for field in descriptor.fields:
        if field.GetOptions().HasExtension(validate_pb2.field):
            return True
        nested = field.message_type
        if (
            nested is not None
            and nested.full_name not in seen
            and _has_rules(nested, seen | {nested.full_name})
        ):
            return True
    return False


def _declared_patterns() -> set[str]:
    patterns: set[str] = set()

    def visit(descriptor: Descriptor, seen: frozenset[str]) -> None:
        for field in descriptor.fields:
            rules = field.GetOptions().Extensions[validate_pb2.field]
            for string_rules in (rules.string, rules.repeated.items.string):
                if string_rules.HasField("pattern"):
                    patterns.add(string_rules.pattern)
            nested = field.message_type
            if nested is not None and nested.full_name not in seen:
                visit(nested, seen | {nested.full_name})

    for service in discover_services():
        for method in service.methods:
            visit(method.input_type, frozenset({method.input_type.full_name}))
    return patterns


def test_every_pattern_the_protos_declare_has_its_words() -> None:
    declared = _declared_patterns()

    assert len(declared) >= 6  # currency, language, card number, cvc, sku, slug
    assert declared <= set(PATTERN_WORDING), declared - set(PATTERN_WORDING)


def test_a_broken_pattern_says_what_it_wanted() -> None:
    from microcommerce.common.v1 import money_pb2

    [violation] = violations(money_pb2.Money(currency="usd"))

    assert violation.field == "currency"
    assert violation.description == (
        "must be a three-letter ISO 4217 currency code in capitals, such as USD"
    )
