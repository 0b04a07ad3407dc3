"""Headless Chromium driven over the DevTools protocol, for tests that look at a real page.

A few dozen lines over aiohttp's websocket client rather than a browser-automation package:
aiohttp is already a dependency, and the tests need only navigate, evaluate and screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import wait_for

# TOOLS.md: what Debian's chromium needs to run headless as root in a container, offline.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to its profile
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: commands are sent one at a time, so the answer is the next message with our id
    (events in between are dropped; no test here subscribes to any)."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._socket.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = await self._socket.receive_json(timeout=30)
            if message.get("id") != message_id:
                continue
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def set_viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        # Page.navigate answers before the new document exists: wait for it, loaded.
        loaded = f"(location.href === {json.dumps(url)} && document.readyState === 'complete')"
        await wait_for(lambda: self.evaluate(f"{loaded} || null"), within=15)

    async def screenshot(self, *, full_page: bool = True) -> bytes:
        """A PNG of the page (all of it, beyond the viewport, unless ``full_page`` is false)."""
        shot = await self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=full_page
        )
        return base64.b64decode(shot["data"])


def _launch(executable: str, profile: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": profile},
        # Its own process group: the browser's helpers (renderer, crashpad) end with it.
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@asynccontextmanager
async def chromium_page(executable: str) -> AsyncIterator[Page]:
    """A fresh headless Chromium (new empty profile) and its first tab."""
    # A helper may still be writing its profile as the group ends: leftovers are harmless.
    with tempfile.TemporaryDirectory(prefix="mc-chromium-", ignore_cleanup_errors=True) as profile:
        process = _launch(executable, profile)
        try:
            port_file = Path(profile) / "DevToolsActivePort"

            async def port() -> str | None:
                text = port_file.read_text() if port_file.exists() else ""
                # Complete once the line after the port (the browser's path) has begun.
                return text.split("\n", 1)[0] if "\n" in text else None

            endpoint = f"http://127.0.0.1:{await wait_for(port, within=30)}"
            async with aiohttp.ClientSession() as http:

                async def first_tab() -> str | None:
                    async with http.get(f"{endpoint}/json/list") as response:
                        targets = await response.json()
                    pages = [t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"]
                    return pages[0] if pages else None

                url = await wait_for(first_tab, within=15)
                async with http.ws_connect(url, max_msg_size=0) as socket:
                    yield Page(socket)
        finally:
            _stop(process)
