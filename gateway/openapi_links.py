"""OpenAPI links from each create to what a client does next with the resource it made.

Derived from the route table, the way AIP-121 lays resources out: a ``201`` ``POST
/…/things`` whose response has an ``id`` creates a *thing*; every route under ``/…/things/{id}``
(get, update, delete, custom methods, sub-collections) takes that ``id``. Two more rules follow
the same naming: a sub-message the create made along with the resource, named after another
collection's resource (``Order.payment`` → ``/payments/{id}``), and a request that takes a
``<resource>_id``: a list's query filter or a body field (a new category → the products in it,
and a product created in it).

What the descriptors cannot tell (a sign-in's token pair feeds the refresh, the password a
user registered with signs them in) is declared explicitly in ``DECLARED_LINKS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from common.descriptors import is_map
from gateway.path_templates import Literal, Variable
from gateway.routes import Route

_ID = "id"
_RESPONSE_ID = "$response.body#/id"
_WHOLE_SEGMENT = "*"


@dataclass(frozen=True)
class DeclaredLink:
    """A link the descriptors do not imply: the runtime expressions fill the target's body."""

    source: str  # the source RPC's full name, ``package.Service.Method``
    target: str
    request_body: Mapping[str, str]
    description: str


_USERS = "microcommerce.user.v1.UserService"
_SIGN_IN = f"{_USERS}.IssueToken"
_REFRESH = f"{_USERS}.RefreshToken"
_LOGOUT = f"{_USERS}.Logout"
_PAIR = {"refresh_token": "$response.body#/refresh_token"}
# A refresh token is a capability passed back by value, not a resource under a path, and the
# password is write-only: neither is visible in the descriptors, and matching fields by name
# alone would link unrelated fields such as `name`.
DECLARED_LINKS: tuple[DeclaredLink, ...] = (
    DeclaredLink(
        f"{_USERS}.CreateUser",
        _SIGN_IN,
        {"email": "$response.body#/email", "password": "$request.body#/password"},
        "Sign in as the user just registered, with the password sent to register.",
    ),
    *(
        DeclaredLink(source, target, _PAIR, f"Spend this pair's `refresh_token` ({verb}).")
        for source in (_SIGN_IN, _REFRESH)
        for target, verb in ((_REFRESH, "for the next pair"), (_LOGOUT, "to end the session"))
    ),
)


def derive_links(
    routes: Sequence[Route],
    path_names: Mapping[str, tuple[str, ...]],
    declared: Iterable[DeclaredLink] = DECLARED_LINKS,
) -> dict[str, dict[str, Any]]:
    """operationId → the Link objects of its success response.

    ``routes`` are the routes the document describes; ``path_names`` gives each one's
    (operationId's) OpenAPI path parameter names in path order.
    """
    collections = _Collections(routes)
    links: dict[str, dict[str, Any]] = {}
    for route in routes:
        found = _links_of_create(route, collections, path_names)
        if found:
            links[route.operation_id] = found
    by_rpc = {route.method.full_name: route for route in routes if route.binding == 0}
    for link in declared:
        source, target = by_rpc.get(link.source), by_rpc.get(link.target)
        if source is None or target is None:
            continue  # a document for other services (tests) or a route not served
        _add(
            links.setdefault(source.operation_id, {}),
            target.operation_id,
            {
                "operationId": target.operation_id,
                "requestBody": dict(link.request_body),
                "description": link.description,
            },
        )
    return links


def _links_of_create(
    route: Route, collections: _Collections, path_names: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    prefix = _created_collection(route)
    resource = _body_type(route)
    if prefix is None or resource is None or not _has_id(resource):
        return {}
    noun = _snake(resource.name)
    links: dict[str, Any] = {}

    def to_instances(of: tuple[str, ...], expression: str, what: str) -> None:
        for target in collections.instance_routes(of):
            name = path_names[target.operation_id][0]
            _add(
                links,
                target.operation_id,
                {
                    "operationId": target.operation_id,
                    "parameters": {f"path.{name}": expression},
                    "description": f"{what} as `{name}`.",
                },
            )

    to_instances(prefix, _RESPONSE_ID, f"The created {noun}'s `id`")
    for field in resource.fields:
        # A sub-resource made with this one, e.g. an order's payment, under its own collection.
        other = collections.named(field.name)
        if other is not None and other != prefix and _is_single_message_with_id(field):
            to_instances(
                other, f"$response.body#/{field.name}/id", f"The created {field.name}'s `id`"
            )
    reference = f"{noun}_{_ID}"
    for target in collections.lists_filtering_by(reference):
        _add(
            links,
            target.operation_id,
            {
                "operationId": target.operation_id,
                "parameters": {f"query.{reference}": _RESPONSE_ID},
                "description": f"The created {noun}'s `id` as the `{reference}` filter.",
            },
        )
    for target in collections.bodies_referring_to(reference):
        if target is not route:
            _add(
                links,
                target.operation_id,
                {
                    "operationId": target.operation_id,
                    "requestBody": {reference: _RESPONSE_ID},
                    "description": f"The created {noun}'s `id` as the body's `{reference}`.",
                },
            )
    return links


class _Collections:
    """The resource collections of a route table: literal path prefixes followed by ``{id}``."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = routes
        self._instances: dict[tuple[str, ...], list[Route]] = {}
        for route in routes:
            prefix = _instance_collection(route)
            if prefix is not None:
                self._instances.setdefault(prefix, []).append(route)
        # A collection's resource is what its get returns, else what its create returns.
        self._by_noun: dict[str, tuple[str, ...]] = {}
        gets = [(_instance_collection(r), r) for r in routes if _is_instance_get(r)]
        creates = [(_created_collection(r), r) for r in routes]
        for prefix, route in (*gets, *creates):
            body = _body_type(route)
            if prefix is not None and body is not None:
                self._by_noun.setdefault(_snake(body.name), prefix)

    def instance_routes(self, prefix: tuple[str, ...]) -> list[Route]:
        """The routes on one resource of the collection, in route-table order."""
        return self._instances.get(prefix, [])

    def named(self, noun: str) -> tuple[str, ...] | None:
        """The collection whose resource is ``noun`` (snake_case message name)."""
        return self._by_noun.get(noun)

    def lists_filtering_by(self, field_name: str) -> list[Route]:
        """Verb-less GETs with a top-level string query parameter ``field_name``."""
        return [
            route
            for route in self._routes
            if route.http_method == "GET"
            and route.template.verb is None
            and route.query_allowed
            and _is_top_level_string(route, field_name)
        ]

    def bodies_referring_to(self, field_name: str) -> list[Route]:
        """Routes whose whole-request body has a top-level string field ``field_name``."""
        return [
            route
            for route in self._routes
            if route.body == "*" and _is_top_level_string(route, field_name)
        ]


def _is_top_level_string(route: Route, field_name: str) -> bool:
    field = route.method.input_type.fields_by_name.get(field_name)
    return (
        field is not None
        and field.type == FieldDescriptor.TYPE_STRING
        and not field.is_repeated
        and not any(name == field_name for name in _path_bound(route))
    )


def _path_bound(route: Route) -> list[str]:
    return [".".join(f.name for f in fields) for fields in route.path_fields]


def _created_collection(route: Route) -> tuple[str, ...] | None:
    """For a create (a 201 POST on an all-literal path), its path's segments."""
    template = route.template
    if route.http_method != "POST" or route.success_status != 201 or template.verb is not None:
        return None
    if not all(isinstance(segment, Literal) for segment in template.segments):
        return None
    return tuple(segment.text for segment in template.segments if isinstance(segment, Literal))


def _instance_collection(route: Route) -> tuple[str, ...] | None:
    """For a route on one resource (``/…/things/{id}…``), the collection's literal prefix."""
    prefix: list[str] = []
    for segment in route.template.segments:
        if isinstance(segment, Literal):
            prefix.append(segment.text)
        elif isinstance(segment, Variable) and segment.pattern == _WHOLE_SEGMENT and prefix:
            return tuple(prefix)
        else:
            return None
    return None


def _is_instance_get(route: Route) -> bool:
    """``GET /…/things/{id}``: exactly one resource, nothing after it."""
    prefix = _instance_collection(route)
    return (
        route.http_method == "GET"
        and route.template.verb is None
        and prefix is not None
        and len(route.template.segments) == len(prefix) + 1
    )


def _body_type(route: Route) -> Descriptor | None:
    """The message the success response's JSON body is, if it is one message."""
    if not route.has_body:
        return None
    output: Descriptor = route.method.output_type
    if not route.response_body:
        return output
    field = output.fields_by_name[route.response_body]
    return field.message_type if _is_single_message(field) else None


def _has_id(descriptor: Descriptor) -> bool:
    field = descriptor.fields_by_name.get(_ID)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated


def _is_single_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and not field.is_repeated and not is_map(field)


def _is_single_message_with_id(field: FieldDescriptor) -> bool:
    return (
        _is_single_message(field) and field.message_type is not None and _has_id(field.message_type)
    )


def _snake(name: str) -> str:
    # "PriceHistory" -> "price_history"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _add(links: dict[str, Any], name: str, link: dict[str, Any]) -> None:
    # Link names must be unique per response; a second link to one operation gets a suffix.
    key, suffix = name, 1
    while key in links:
        suffix += 1
        key = f"{name}_{suffix}"
    links[key] = link
