"""HTTP optimistic concurrency (RFC 9110 §8.8.3, §13.1.1) over the resources' AIP-154 ``etag``.

A response whose resource has an ``etag`` carries it as the ``ETag`` header. On PUT, PATCH and
DELETE an ``If-Match`` header becomes the request's ``etag`` field, and the service's answer
to a stale one (ABORTED naming that field) becomes 412 Precondition Failed, as RFC 9110 asks;
the same stale ``etag`` sent in the body stays a 409 (AIP-154). The service compares the
versions, so the check and the write are one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.problems import ProblemError, invalid_argument

ETAG_FIELD = "etag"
IF_MATCH_HEADER = "If-Match"
CONDITIONAL_METHODS = frozenset(("PUT", "PATCH", "DELETE"))


def has_etag(descriptor: Descriptor) -> bool:
    """Whether the message is a resource with a top-level string ``etag``."""
    field = descriptor.fields_by_name.get(ETAG_FIELD)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def etag_path(descriptor: Descriptor, body: str) -> tuple[str, ...] | None:
    """Where a request carries the resource's etag: ``etag``, or ``<body>.etag`` when the body
    is a resource field (``product.etag``); None when it carries none."""
    if body and body != "*":
        body_field = descriptor.fields_by_name[body]
        if body_field.message_type is not None and has_etag(body_field.message_type):
            return (body, ETAG_FIELD)
    return (ETAG_FIELD,) if has_etag(descriptor) else None


def etag_header(payload: Any) -> dict[str, str]:
    """The ``ETag`` header for a JSON response body, when it is a resource with an etag."""
    if isinstance(payload, Mapping):
        etag = payload.get(ETAG_FIELD)
        if isinstance(etag, str) and etag:
            return {"ETag": f'"{etag}"'}
    return {}


@dataclass(frozen=True)
class Precondition:
    """The ``If-Match`` of one request, once applied to its message."""

    field: str  # the request field it set, e.g. "product.etag"

    def refine(self, problem: ProblemError) -> ProblemError:
        """412 when the service refused the version the header named; else ``problem``."""
        if problem.code == grpc.StatusCode.ABORTED and any(
            violation.field == self.field for violation in problem.field_violations
        ):
            return _failed(
                f"{IF_MATCH_HEADER} does not match the current version; read it again.",
                problem.headers,
            )
        return problem


def apply_if_match(
    header: str | None, method: str, path: tuple[str, ...] | None, message: Message
) -> Precondition | None:
    """Set the request's etag from ``If-Match``; None when there is nothing to check.

    ``*`` matches any current version (the service still answers 404 for none). A weak tag
    never matches (If-Match compares strongly), nor does any tag on a resource without etags:
    both are refused with 412 before the call.
    """
    if header is None or method not in CONDITIONAL_METHODS:
        return None
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    if tags == ["*"]:
        return None
    if len(tags) != 1:
        raise invalid_argument(f"{IF_MATCH_HEADER} takes one entity tag (or *) here.")
    tag = tags[0]
    if tag.startswith("W/"):
        raise _failed(f"{IF_MATCH_HEADER} needs a strong entity tag; weak ones never match.")
    if len(tag) < 2 or tag[0] != '"' or tag[-1] != '"' or '"' in tag[1:-1]:
        raise invalid_argument(f'{IF_MATCH_HEADER} must be an entity tag in quotes, e.g. "v3".')
    if path is None:
        raise _failed("This resource has no entity tag, so no If-Match can match it.")
    holder = message
    for name in path[:-1]:
        holder = getattr(holder, name)
    setattr(holder, path[-1], tag[1:-1])
    return Precondition(".".join(path))


def _failed(detail: str, headers: Mapping[str, str] | None = None) -> ProblemError:
    return ProblemError(
        grpc.StatusCode.FAILED_PRECONDITION,
        detail,
        status=HTTPStatus.PRECONDITION_FAILED,
        headers=headers,
    )
