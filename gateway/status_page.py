"""``GET /status``: a page for people, and the JSON summary it polls; local files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from common import clock
from common.clock import rfc3339
from gateway.app import METRICS_KEY, upstreams
from gateway.health import HealthRegistry
from gateway.traffic import WINDOW_S, TrafficWindow, totals

STATUS_PATH = "/status"
SUMMARY_PATH = "/status/summary"
ASSETS_PATH = "/status/assets"
ASSETS_DIR = Path(__file__).with_name("status_assets")

# The page's own files: nothing else is served from the folder.
_ASSETS = {
    "status.css": "text/css",
    "status.js": "application/javascript",
    "icon.svg": "image/svg+xml",
}


def status_routes(registry: HealthRegistry) -> list[web.RouteDef]:
    """The page, its summary and its assets (the files are read once, here)."""
    page = (ASSETS_DIR / "status.html").read_bytes()
    assets = {name: (ASSETS_DIR / name).read_bytes() for name in _ASSETS}
    # Made on first use: the metrics live on the app, which these routes are built before.
    windows: list[TrafficWindow] = []

    def traffic_window(app: web.Application) -> TrafficWindow:
        if not windows:
            counter = app[METRICS_KEY].http_requests
            windows.append(TrafficWindow(lambda: totals(counter)))
        return windows[0]

    async def status_page(_request: web.Request) -> web.Response:
        """An HTML status page for people: broker, services, instances, breakers, traffic."""
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=_NO_STORE)

    async def status_summary(request: web.Request) -> web.Response:
        """What the status page shows: /health, the breakers and the last minute's traffic."""
        traffic = traffic_window(request.app).rate()
        body: dict[str, Any] = {
            "generated_at": rfc3339(clock.now()),
            "health": registry.snapshot(),
            "breakers": upstreams(request.app).breaker_states(),
            "traffic": {
                "window_s": WINDOW_S,
                "covered_s": traffic.covered_s,
                "requests": traffic.requests,
                "errors": traffic.errors,
            },
        }
        return web.json_response(body, headers=_NO_STORE)

    async def status_asset(request: web.Request) -> web.Response:
        """The status page's stylesheet, script and icon."""
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], content_type=_ASSETS[name])

    return [
        web.get(STATUS_PATH, status_page, allow_head=False),
        web.get(SUMMARY_PATH, status_summary, allow_head=False),
        web.get(ASSETS_PATH + "/{name}", status_asset, allow_head=False),
    ]


_NO_STORE = {"Cache-Control": "no-store"}
