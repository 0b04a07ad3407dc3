"""The OpenAPI document: built from the route table, structurally valid, 3.0-compatible."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from google.api import http_pb2

from gateway.openapi import as_openapi_30, build_openapi
from gateway.routes import build_route_table, discover_services
from tests.support.descriptors import service_with
from tests.support.openapi_checks import problems_of
from tests.support.widget_service import WIDGET_SERVICE

WIDGET = "#/components/schemas/microcommerce.testing.v1.Widget"


async def health(_request: web.Request) -> web.Response:
    """Aggregated health of the system."""
    return web.json_response({})


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(
        build_route_table([WIDGET_SERVICE]),
        title="Test",
        version="1.2.3",
        extra_routes=[web.get("/health", health), web.get("/things/{id:[0-9]+}", health)],
    )


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    result: dict[str, Any] = document["paths"][path][method]
    return result


def parameter(op: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in op.get("parameters", []) if p["name"] == name)


def test_the_document_passes_the_structural_check(document: dict[str, Any]) -> None:
    assert problems_of(document) == []


def test_the_document_for_the_real_services_passes_the_structural_check() -> None:
    table = build_route_table(discover_services())

    real = build_openapi(table, title="MicroCommerce API", version="0")

    assert problems_of(real) == []
    operation_ids = {op["operationId"] for item in real["paths"].values() for op in item.values()}
    assert operation_ids == {r.operation_id for r in table.routes}


def test_every_route_is_an_operation(document: dict[str, Any]) -> None:
    operation_ids = {
        op["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }

    for route in build_route_table([WIDGET_SERVICE]).routes:
        method, _ = operation_ids[route.operation_id]
        assert method == route.http_method


def test_same_shaped_paths_share_one_path_item_with_the_first_routes_names(
    document: dict[str, Any],
) -> None:
    item = document["paths"]["/v1/widgets/{id}"]

    assert set(item) == {"get", "patch", "delete"}
    assert "/v1/widgets/{widget.id}" not in document["paths"]
    assert "widget.id" in parameter(item["patch"], "id")["description"]


def test_query_parameters_cover_scalars_repeated_nested_enums_and_well_known_types(
    document: dict[str, Any],
) -> None:
    op = operation(document, "get", "/v1/widgets")

    assert parameter(op, "min_price")["schema"] == {"type": "integer", "format": "int64"}
    assert parameter(op, "tags")["schema"] == {"type": "array", "items": {"type": "string"}}
    assert parameter(op, "filter.min_size.width_mm")["schema"]["type"] == "integer"
    assert parameter(op, "color")["schema"] == {
        "$ref": "#/components/schemas/microcommerce.testing.v1.Color"
    }
    assert parameter(op, "created_after")["schema"]["format"] == "date-time"
    assert parameter(op, "in_stock")["schema"] == {"type": "boolean"}


def test_schemas_map_proto_types_to_json_schema_types(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    # Descriptions (the fields' proto comments) aside, which another test covers.
    widget = {
        name: {key: value for key, value in schema.items() if key != "description"}
        for name, schema in schemas["microcommerce.testing.v1.Widget"]["properties"].items()
    }

    assert widget["price"] == {"type": "integer", "format": "int64"}
    assert widget["limit"] == {"type": "integer", "format": "int64"}
    assert widget["part_numbers"] == {
        "type": "array",
        "items": {"type": "integer", "format": "int64"},
    }
    assert widget["stock_by_warehouse"]["additionalProperties"]["type"] == "integer"
    assert widget["create_time"]["format"] == "date-time"
    assert widget["create_time"]["readOnly"] is True
    assert widget["secret"]["writeOnly"] is True
    assert schemas["microcommerce.testing.v1.Color"] == {
        "type": "string",
        "enum": ["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_GREEN", "COLOR_BLUE"],
    }
    assert schemas["microcommerce.testing.v1.Widget"]["required"] == ["name"]
    update = operation(document, "patch", "/v1/widgets/{id}")
    assert parameter(update, "update_mask")["schema"]["type"] == "string"  # FieldMask


def test_request_bodies_follow_the_body_option(document: dict[str, Any]) -> None:
    create = operation(document, "post", "/v1/widgets")["requestBody"]
    labels = operation(document, "put", "/v1/widgets/{id}/labels")["requestBody"]

    # A Widget is sent and returned: the body is the request schema of the two.
    assert create["content"]["application/json"]["schema"] == {"$ref": f"{WIDGET}Input"}
    labels_schema = labels["content"]["application/json"]["schema"]
    assert set(labels_schema["properties"]) == {"labels", "tags", "decide_time"}  # not the path id
    assert "requestBody" not in operation(document, "get", "/v1/widgets/{id}")


def test_request_schemas_refuse_unknown_fields_and_response_schemas_admit_them(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    sent, returned = schemas["microcommerce.testing.v1.WidgetInput"], schemas[WIDGET.split("/")[-1]]

    # The gateway refuses a field the message lacks; a later response may add one, and a client
    # generated from the document must not refuse it.
    assert sent["additionalProperties"] is False
    assert "additionalProperties" not in returned
    assert sent["properties"].keys() == returned["properties"].keys()
    # Nested messages follow the side they are on.
    parts = operation(document, "get", "/v1/widgets/{id}/parts")["responses"]["200"]
    part = parts["content"]["application/json"]["schema"]["items"]["$ref"].split("/")[-1]
    assert "additionalProperties" not in schemas[part]


def test_a_message_used_one_way_keeps_its_name(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    refs = {
        value.split("/")[-1]
        for value in _refs(document)
        if value.startswith("#/components/schemas/")
    }

    # WidgetPart is only returned: no Input twin; every reference points at a schema.
    assert "microcommerce.testing.v1.WidgetPartInput" not in names
    assert refs <= names
    assert {name.removesuffix("Input") for name in names if name.endswith("Input")} <= names


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def test_responses_follow_status_options_empty_and_response_body(document: dict[str, Any]) -> None:
    create = operation(document, "post", "/v1/widgets")["responses"]
    delete = operation(document, "delete", "/v1/widgets/{id}")["responses"]
    parts = operation(document, "get", "/v1/widgets/{id}/parts")["responses"]

    assert create["201"]["content"]["application/json"]["schema"] == {"$ref": WIDGET}
    assert "content" not in delete["204"]
    assert parts["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/microcommerce.testing.v1.WidgetPart"},
    }
    assert create["default"] == {"$ref": "#/components/responses/Problem"}


def test_protected_operations_need_a_bearer_token_and_public_ones_do_not(
    document: dict[str, Any],
) -> None:
    assert operation(document, "post", "/v1/widgets")["security"] == [{"bearerAuth": []}]
    assert "security" not in operation(document, "get", "/v1/widgets")
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_an_idempotent_rpc_declares_the_required_header(document: dict[str, Any]) -> None:
    header = parameter(operation(document, "post", "/v1/widget-orders"), "Idempotency-Key")

    assert header["in"] == "header"
    assert header["required"] is True


def test_errors_are_described_by_the_problem_schema(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]

    assert set(problem["required"]) == {"type", "title", "status", "detail", "code", "request_id"}
    assert "NOT_FOUND" in problem["properties"]["code"]["enum"]


def test_extra_routes_are_listed_with_their_docstring_as_summary(document: dict[str, Any]) -> None:
    health_op = operation(document, "get", "/health")
    thing = operation(document, "get", "/things/{id}")

    assert health_op["summary"] == "Aggregated health of the system."
    assert health_op["tags"] == ["meta"]
    assert parameter(thing, "id")["in"] == "path"


def test_the_docs_rendition_differs_only_in_its_version_label(document: dict[str, Any]) -> None:
    rendition = as_openapi_30(document)

    assert rendition["openapi"] == "3.0.3"
    assert {k: v for k, v in rendition.items() if k != "openapi"} == {
        k: v for k, v in document.items() if k != "openapi"
    }


def test_summaries_and_descriptions_come_from_the_proto_comments(
    document: dict[str, Any],
) -> None:
    get = operation(document, "get", "/v1/widgets/{id}")
    tag = next(t for t in document["tags"] if t["name"] == "WidgetService")

    assert get["summary"] == (
        "A path variable; a second binding (an older path) nests the widget under a shelf."
    )
    assert get["description"].startswith(get["summary"])
    assert "`/microcommerce.testing.v1.WidgetService/GetWidget`" in get["description"]
    assert tag["description"].startswith("Widgets on shelves.")


def test_without_generated_servicer_code_the_summary_is_the_rpc_name_in_words() -> None:
    service = service_with({"GetThingById": http_pb2.HttpRule(get="/v1/things/{id}")})

    doc = build_openapi(build_route_table([service]), title="T", version="1")

    assert doc["paths"]["/v1/things/{id}"]["get"]["summary"] == "Get thing by id"


def test_routes_that_openapi_cannot_tell_apart_keep_the_first_and_still_build() -> None:
    service = service_with(
        {
            "GetShelf": http_pb2.HttpRule(get="/v1/{id=shelves/*}"),
            "GetRoom": http_pb2.HttpRule(get="/v1/{id=rooms/*}"),
        }
    )

    doc = build_openapi(build_route_table([service]), title="T", version="1")

    assert doc["paths"]["/v1/{id}"]["get"]["operationId"] == "TestService_GetShelf"
    assert problems_of(doc) == []
