"""A structural check of our OpenAPI documents, beyond what the OpenAPI 3.1 schema can say.

It checks what a client generator, Swagger UI or a stateful fuzzer relies on: every path
parameter declared, operationIds unique, every $ref resolvable, responses well formed, security
schemes known, links pointing at real operations and parameters with runtime expressions, and
that schemas keep to the subset OpenAPI 3.0 reads the same way (the docs page relies on it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
_LOCATIONS = {"path", "query", "header", "cookie"}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_STATUS = re.compile(r"[1-5]([0-9]{2}|XX)|default")
# Component and link names (OpenAPI 3.1, "Components Object").
_LINK_NAME = re.compile(r"[a-zA-Z0-9.\-_]+")
# Runtime expressions, as a Link Object's values may hold them (OpenAPI 3.1, "Runtime
# Expressions"); we write only whole-value ones.
_EXPRESSION = re.compile(
    r"\$(url|method|statusCode|(request|response)\.(body(#(/[^/]*)*)?|(header|query|path)\.\S+))"
)
# JSON Schema 2020-12 keywords that OpenAPI 3.0 does not know or reads differently.
_NOT_IN_30 = {"const", "examples", "$defs", "prefixItems", "if", "then", "else", "$schema"}


def problems_of(document: dict[str, Any]) -> list[str]:
    """Everything wrong with the document; empty when it passes."""
    found: list[str] = []
    if document.get("openapi") != "3.1.0":
        found.append(f"openapi is {document.get('openapi')!r}, not '3.1.0'")
    info = document.get("info", {})
    if not isinstance(info.get("title"), str) or not isinstance(info.get("version"), str):
        found.append("info needs a title and a version")
    schemes = document.get("components", {}).get("securitySchemes", {})
    operation_ids: set[str] = set()
    for path, item in document.get("paths", {}).items():
        if not path.startswith("/"):
            found.append(f"path {path!r} does not start with '/'")
        placeholders = set(re.findall(r"\{([^{}]+)\}", path))
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            if method not in _METHODS:
                found.append(f"{where}: not an OpenAPI method")
                continue
            found.extend(_operation_problems(where, operation, placeholders, schemes))
            operation_id = operation.get("operationId")
            if operation_id in operation_ids:
                found.append(f"{where}: operationId {operation_id!r} is used twice")
            operation_ids.add(operation_id)
    found.extend(_link_problems(document))
    found.extend(_reference_problems(document))
    found.extend(_schema_problems(document))
    return found


def _operation_problems(
    where: str, operation: dict[str, Any], placeholders: set[str], schemes: dict[str, Any]
) -> Iterator[str]:
    if not isinstance(operation.get("operationId"), str):
        yield f"{where}: no operationId"
    parameters = operation.get("parameters", [])
    keys = [(p.get("name"), p.get("in")) for p in parameters]
    if len(keys) != len(set(keys)):
        yield f"{where}: a parameter is declared twice"
    for parameter in parameters:
        if parameter.get("in") not in _LOCATIONS or "schema" not in parameter:
            yield f"{where}: parameter {parameter.get('name')!r} needs `in` and a schema"
        if parameter.get("in") == "path" and parameter.get("required") is not True:
            yield f"{where}: path parameter {parameter.get('name')!r} must be required"
    in_path = {p.get("name") for p in parameters if p.get("in") == "path"}
    if in_path != placeholders:
        yield f"{where}: path parameters {sorted(in_path)} != placeholders {sorted(placeholders)}"
    responses = operation.get("responses")
    if not responses:
        yield f"{where}: no responses"
    for status, response in (responses or {}).items():
        if not _STATUS.fullmatch(status):
            yield f"{where}: response key {status!r} is not a status"
        if "$ref" not in response and "description" not in response:
            yield f"{where}: response {status} has no description"
    body = operation.get("requestBody")
    if body is not None and not body.get("content"):
        yield f"{where}: requestBody without content"
    for requirement in operation.get("security", []):
        for name in requirement:
            if name not in schemes:
                yield f"{where}: unknown security scheme {name!r}"


def _link_problems(document: dict[str, Any]) -> Iterator[str]:
    operations = {
        operation.get("operationId"): operation
        for item in document.get("paths", {}).values()
        for operation in item.values()
        if isinstance(operation, dict)
    }
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            for status, response in operation.get("responses", {}).items():
                for name, link in response.get("links", {}).items():
                    where = f"{method.upper()} {path} {status} link {name!r}"
                    yield from _one_link_problems(where, name, link, operations)


def _one_link_problems(
    where: str, name: str, link: dict[str, Any], operations: dict[Any, dict[str, Any]]
) -> Iterator[str]:
    if not _LINK_NAME.fullmatch(name):
        yield f"{where}: not a valid link name"
    target = operations.get(link.get("operationId"))
    if target is None:
        yield f"{where}: operationId {link.get('operationId')!r} is not an operation"
        return
    declared = {(p.get("in"), p.get("name")) for p in target.get("parameters", [])}
    for key, expression in link.get("parameters", {}).items():
        location, _, parameter = key.partition(".")
        if (location, parameter) not in declared:
            yield f"{where}: the target has no {location} parameter {parameter!r}"
        if not _EXPRESSION.fullmatch(str(expression)):
            yield f"{where}: {expression!r} is not a runtime expression"
    body = link.get("requestBody")
    if body is not None:
        if "requestBody" not in target:
            yield f"{where}: a requestBody for an operation that takes none"
        for value in body.values() if isinstance(body, dict) else [body]:
            if not _EXPRESSION.fullmatch(str(value)):
                yield f"{where}: body value {value!r} is not a runtime expression"


def _walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}/{index}")


def _resolve(document: dict[str, Any], reference: str) -> bool:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _reference_problems(document: dict[str, Any]) -> Iterator[str]:
    for where, node in _walk(document):
        if isinstance(node, dict) and "$ref" in node:
            if not _resolve(document, node["$ref"]):
                yield f"{where}: $ref {node['$ref']!r} does not resolve"
            if len(node) > 1:
                yield f"{where}: keys beside $ref ({sorted(node)}), ignored by OpenAPI 3.0"


def _schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        yield f"#/components/schemas/{name}", schema
    for where, node in _walk(document.get("paths", {}), "#/paths"):
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            yield f"{where}/schema", node["schema"]


def _schema_problems(document: dict[str, Any]) -> Iterator[str]:
    for root, schema in _schemas(document):
        for where, node in _walk(schema, root):
            if not isinstance(node, dict) or where.endswith("/properties"):
                continue
            kind = node.get("type")
            if kind is not None and kind not in _TYPES:
                yield f"{where}: type {kind!r} (a list or unknown type)"
            if kind == "array" and "items" not in node:
                yield f"{where}: an array without items"
            for keyword in _NOT_IN_30 & set(node):
                yield f"{where}: {keyword!r} is not read the same by OpenAPI 3.0"
