"""``GET /docs``: Swagger UI from the installed ``swagger_ui_bundle`` package, no CDN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from aiohttp import web

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
DOCS_OPENAPI_PATH = "/docs/openapi.json"

# The bundle's own files: CSS, JS, favicons (see the package's index.html).
ASSETS_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))

_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>{title}</title>
    <link rel="stylesheet" href="{assets}/swagger-ui.css">
    <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="{assets}/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{assets}/swagger-ui-bundle.js"></script>
    <script src="{assets}/swagger-ui-standalone-preset.js"></script>
    <script src="{docs}/swagger-initializer.js"></script>
  </body>
</html>
"""

# A file rather than an inline script, so a strict Content-Security-Policy can allow 'self'.
# validatorUrl null: the default sends the document to validator.swagger.io (offline: broken).
_INITIALIZER = """window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: {url},
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  }});
}};
"""


def docs_routes(title: str, openapi_30: dict[str, Any]) -> list[web.AbstractRouteDef]:
    """The page, its initializer, the bundle's static files and the document it shows.

    The bundle is Swagger UI 4, which refuses OpenAPI 3.1 ("Unable to render this
    definition"); the page therefore reads ``openapi_30``, the same document labelled 3.0.3
    (``gateway.openapi.as_openapi_30``), while ``/openapi.json`` stays 3.1.
    """
    page = _PAGE.format(title=title, assets=ASSETS_PATH, docs=DOCS_PATH)
    initializer = _INITIALIZER.format(url=json.dumps(DOCS_OPENAPI_PATH))
    document = json.dumps(openapi_30).encode()

    async def swagger_ui(_request: web.Request) -> web.Response:
        """Swagger UI for the REST API."""
        return web.Response(text=page, content_type="text/html")

    async def swagger_initializer(_request: web.Request) -> web.Response:
        return web.Response(text=initializer, content_type="application/javascript")

    async def swagger_openapi(_request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    async def slash(_request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(DOCS_PATH)

    return [
        web.get(DOCS_PATH, swagger_ui, allow_head=False),
        web.get(f"{DOCS_PATH}/", slash, allow_head=False),
        web.get(f"{DOCS_PATH}/swagger-initializer.js", swagger_initializer, allow_head=False),
        web.get(DOCS_OPENAPI_PATH, swagger_openapi, allow_head=False),
        web.static(ASSETS_PATH, ASSETS_DIR),
    ]
