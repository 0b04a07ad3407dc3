"""Path templates of google.api.http: parsing, aiohttp paths, OpenAPI paths, ordering."""

from __future__ import annotations

import pytest

from gateway.path_templates import (
    Literal,
    PathValueError,
    TemplateError,
    Variable,
    Wildcard,
    decode_variable,
    normalize_path,
    parse_template,
)


def test_a_plain_variable_binds_one_segment_to_a_field() -> None:
    template = parse_template("/v1/widgets/{id}")

    assert template.segments == (
        Literal("v1"),
        Literal("widgets"),
        Variable(("id",), (Wildcard(multi=False),)),
    )
    assert template.verb is None


def test_a_nested_field_path_is_split_on_dots() -> None:
    template = parse_template("/v1/widgets/{widget.dimensions.id}")

    assert template.variables[0].field_path == ("widget", "dimensions", "id")
    assert template.variables[0].name == "widget.dimensions.id"


def test_a_pattern_variable_keeps_its_segments() -> None:
    template = parse_template("/v1/{name=shelves/*/widgets/*}")

    (variable,) = template.variables
    assert variable.pattern == "shelves/*/widgets/*"
    assert template.aiohttp_path() == "/v1/{v0:shelves/[^/]+/widgets/[^/:]+}"


def test_a_custom_verb_follows_the_last_segment() -> None:
    template = parse_template("/v1/widgets/{id}:cancel")

    assert template.verb == "cancel"
    assert template.aiohttp_path() == "/v1/widgets/{v0:[^/:]+}:cancel"
    assert template.openapi_path() == "/v1/widgets/{id}:cancel"


def test_a_verb_on_a_literal_path_stays_literal() -> None:
    assert parse_template("/v1/widgets:reindex").aiohttp_path() == "/v1/widgets:reindex"


def test_only_the_last_segment_refuses_colons_so_verbs_are_not_swallowed() -> None:
    template = parse_template("/v1/widgets/{id}/parts/{part}")

    assert template.aiohttp_path() == "/v1/widgets/{v0:[^/]+}/parts/{v1:[^/:]+}"


def test_a_double_wildcard_takes_the_rest_of_the_path() -> None:
    assert parse_template("/v1/{name=files/**}").aiohttp_path() == "/v1/{v0:files/[^:]+}"
    assert parse_template("/v1/{name=files/**}:get").aiohttp_path() == "/v1/{v0:files/.+}:get"


def test_literals_with_dots_and_dashes_are_kept_verbatim() -> None:
    template = parse_template("/.well-known/jwks.json")

    assert template.aiohttp_path() == "/.well-known/jwks.json"
    assert template.variables == ()


def test_bare_wildcards_get_placeholder_names_in_openapi() -> None:
    template = parse_template("/v1/*/widgets/{id}")

    assert template.placeholder_names == ("segment0", "id")
    assert template.openapi_path() == "/v1/{segment0}/widgets/{id}"
    assert template.aiohttp_path() == "/v1/{w0:[^/]+}/widgets/{v0:[^/:]+}"


def test_same_shaped_templates_render_the_same_aiohttp_path() -> None:
    get = parse_template("/v1/widgets/{id}")
    patch = parse_template("/v1/widgets/{widget.id}")

    assert get.aiohttp_path() == patch.aiohttp_path()
    assert patch.openapi_path(get.placeholder_names) == "/v1/widgets/{id}"


def test_templates_that_match_the_same_paths_have_the_same_shape() -> None:
    nested = parse_template("/v1/shelves/{shelf}/widgets/{id}")
    pattern = parse_template("/v1/{name=shelves/*/widgets/*}")

    assert nested.shape == pattern.shape
    assert nested.shape != parse_template("/v1/shelves/{shelf}/widgets/{id}:cancel").shape


def test_literal_segments_sort_before_variables() -> None:
    texts = ["/v1/{path=**}", "/v1/{name}", "/v1/widgets/{id}", "/v1/widgets/search"]

    ordered = sorted((parse_template(t) for t in texts), key=lambda t: t.specificity)

    assert [t.text for t in ordered] == [
        "/v1/widgets/search",
        "/v1/widgets/{id}",
        "/v1/{name}",
        "/v1/{path=**}",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v1/widgets", "expected '/'"),
        ("/v1/{id", "expected '}'"),
        ("/v1/{a={b}}", "variables cannot nest"),
        ("/v1/**/x", "may only be the last segment"),
        ("/v1/{id}/{id}", "a field is bound twice"),
        ("/v1//widgets", "expected a path segment"),
        ("/v1/widgets:", "expected a path segment"),
        ("/v1/{1d}", "expected a field name"),
        ("/v1/a:b/c", "unexpected text"),
    ],
)
def test_malformed_templates_are_refused_with_the_position(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as error:
        parse_template(text)

    assert repr(text) in str(error.value)


def test_normalizing_a_path_decodes_unreserved_escapes_and_keeps_reserved_ones() -> None:
    assert normalize_path("/v1/%77idgets/a%2Db%7E") == "/v1/widgets/a-b~"
    assert normalize_path("/v1/a%3Ab%2Fc%2fd%20e%25") == "/v1/a%3Ab%2Fc%2fd%20e%25"


@pytest.mark.parametrize("template", ["/v1/{id}", "/v1/{id=*}"])
def test_a_single_segment_variable_decodes_every_escape(template: str) -> None:
    variable = parse_template(template).variables[0]

    assert not variable.multi_segment
    assert decode_variable(variable, "a%3Ab%2Fc%2fd%C3%A9") == "a:b/c/dé"


@pytest.mark.parametrize("template", ["/v1/{name=shelves/*}", "/v1/{path=**}"])
def test_a_multi_segment_variable_keeps_encoded_slashes_as_sent(template: str) -> None:
    variable = parse_template(template).variables[0]

    assert variable.multi_segment
    assert decode_variable(variable, "shelves/a%2Fb%2fc%3Ad%25") == "shelves/a%2Fb%2fc:d%"


def test_an_escape_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(PathValueError):
        decode_variable(parse_template("/v1/{id}").variables[0], "a%FF")
