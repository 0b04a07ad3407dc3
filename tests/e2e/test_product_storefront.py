"""The catalog as a shopper meets it: real gateway, real product_svc process, REST only."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.processes import Stack, wait_for

STARTUP_S = 60.0


async def get(stack: Stack, path: str, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.gateway_url}{path}", params=params, timeout=aiohttp.ClientTimeout(total=5)
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def catalog_ready(stack: Stack) -> bool:
    try:
        status, _ = await get(stack, "/api/v1/categories")
    except (aiohttp.ClientError, TimeoutError):
        return False
    return status == 200


async def test_a_shopper_browses_the_catalog_and_bad_requests_are_400s(stack: Stack) -> None:
    await wait_for(lambda: catalog_ready(stack), within=STARTUP_S)

    listed = await get(stack, "/api/v1/products", q="kettle", order_by="price")
    negative = await get(stack, "/api/v1/products", page_size="-1")
    token = await get(stack, "/api/v1/products", page_token="not-a-token")
    missing = await get(stack, "/api/v1/products/does-not-exist")

    assert listed == (200, {"products": [], "next_page_token": ""})
    assert negative[0] == token[0] == 400
    assert negative[1]["code"] == "INVALID_ARGUMENT"
    assert "page_size" in negative[1]["detail"]
    assert "page_token" in token[1]["detail"]
    assert missing[0] == 404
