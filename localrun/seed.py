"""Demo catalog: ~200 products in a small category tree, loaded through the public REST API.

``python -m localrun.seed [--base-url URL] [--token TOKEN]``. Without ``--token`` it signs in
(``POST /api/v1/auth/token``) with ``MC_ADMIN_EMAIL`` / ``MC_ADMIN_PASSWORD``, or else as the
local admin whose password `make run` wrote to ``MC_DATA_DIR/admin-password``. Running it again
adds nothing twice: an existing slug or sku (409) is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.logging import configure_logging, get_logger
from localrun.local_stack import ADMIN_PASSWORD_FILE, admin_credentials, data_dir

_log = get_logger(__name__)

# (slug, name, parent slug): the tree the storefront browses.
CATEGORIES = [
    ("kitchen", "Kitchen", ""),
    ("coffee", "Coffee", "kitchen"),
    ("tea", "Tea", "kitchen"),
    ("cookware", "Cookware", "kitchen"),
    ("electronics", "Electronics", ""),
    ("audio", "Audio", "electronics"),
    ("cables", "Cables and chargers", "electronics"),
    ("outdoor", "Outdoor", ""),
    ("camping", "Camping", "outdoor"),
    ("cycling", "Cycling", "outdoor"),
]

# Per leaf category: kinds of product (name, description, base price in cents) and variants.
_LINES: dict[str, tuple[list[tuple[str, str, int]], list[str]]] = {
    "coffee": (
        [
            (
                "Burr grinder",
                "Conical steel burrs, 40 grind settings from espresso to French press.",
                8900,
            ),
            ("French press", "Borosilicate glass with a double steel mesh filter.", 2900),
            ("Pour-over dripper", "Ceramic dripper with spiral ribs for an even extraction.", 2200),
            ("Espresso tamper", "Flat stainless base, walnut handle, 58 mm.", 3400),
            ("Gooseneck kettle", "Precise pour, built-in thermometer, 1 litre.", 4900),
        ],
        ["Classic", "Compact", "Pro", "Travel"],
    ),
    "tea": (
        [
            ("Glass teapot", "Heat-resistant glass with a removable infuser, 800 ml.", 2500),
            ("Cast iron tetsubin", "Enamelled inside, keeps tea hot for an hour.", 6900),
            ("Matcha whisk set", "Bamboo chasen, scoop and ceramic bowl.", 3200),
            ("Tea tin", "Airtight double lid, keeps leaves fresh.", 1200),
            ("Sencha green tea", "Steamed Japanese green tea, grassy and sweet, 100 g.", 1450),
        ],
        ["Small", "Large", "Gift", "Everyday"],
    ),
    "cookware": (
        [
            ("Skillet", "Pre-seasoned cast iron, oven safe, 26 cm.", 3900),
            ("Chef's knife", "High-carbon stainless steel blade, 20 cm.", 7500),
            ("Cutting board", "End-grain oak, juice groove on one side.", 4500),
            ("Dutch oven", "Enamelled cast iron casserole, 5 litres.", 11900),
            ("Saucepan", "Tri-ply stainless steel with a glass lid, 2 litres.", 5400),
        ],
        ["Classic", "Pro", "Essential", "Family"],
    ),
    "audio": (
        [
            (
                "Wireless headphones",
                "Over-ear, active noise cancelling, 30 hours of battery.",
                19900,
            ),
            ("Bluetooth speaker", "Waterproof portable speaker with deep bass.", 7900),
            ("Earbuds", "True wireless earbuds with a charging case.", 9900),
            ("Turntable", "Belt-drive record player with a built-in preamp.", 24900),
            ("USB microphone", "Cardioid condenser microphone for podcasts and calls.", 11900),
        ],
        ["Black", "White", "Studio", "Mini"],
    ),
    "cables": (
        [
            ("USB-C cable", "Braided USB-C to USB-C, 100 W charging, 2 m.", 1500),
            ("Wall charger", "65 W GaN charger with two USB-C ports.", 3900),
            ("Power bank", "20000 mAh battery pack with fast charging.", 4900),
            ("HDMI cable", "8K HDMI 2.1 cable, 1.5 m.", 1900),
            ("Wireless charging pad", "Qi charger for phones and earbuds.", 2900),
        ],
        ["Basic", "Pro", "Travel", "Twin pack"],
    ),
    "camping": (
        [
            ("Tent", "Two-person dome tent, waterproof, 2.1 kg.", 18900),
            ("Sleeping bag", "Down sleeping bag rated to -5 °C.", 15900),
            ("Camping stove", "Compact gas stove with piezo ignition.", 4900),
            ("Headlamp", "Rechargeable LED headlamp, 400 lumens.", 3500),
            ("Water filter", "Squeeze filter removes bacteria and protozoa.", 3900),
        ],
        ["Ultralight", "Family", "Trail", "Expedition"],
    ),
    "cycling": (
        [
            ("Bike helmet", "Lightweight road helmet with MIPS protection.", 8900),
            ("Bike light set", "USB rechargeable front and rear lights.", 3900),
            ("Floor pump", "Steel pump with a gauge, up to 160 psi.", 4500),
            ("Bike lock", "Hardened steel U-lock with a cable.", 5900),
            ("Cycling gloves", "Padded fingerless gloves for long rides.", 2400),
        ],
        ["Road", "City", "Mountain", "Kids"],
    ),
}


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    description: str
    category_slug: str
    amount: int
    stock: int


def demo_products() -> Iterator[DemoProduct]:
    """The demo catalog: every kind of product in every variant (7 x 5 x 4 = 140, plus 70 kits)."""
    for slug, (kinds, variants) in _LINES.items():
        for kind_index, (name, description, base) in enumerate(kinds):
            for variant_index, variant in enumerate(variants):
                # Deterministic spread of prices and stock, some of it sold out.
                amount = base + variant_index * (base // 10)
                stock = (kind_index * 7 + variant_index * 13) % 40
                yield DemoProduct(
                    sku=f"DEMO-{slug[:3].upper()}-{kind_index + 1:02d}{variant_index + 1:02d}",
                    name=f"{name} {variant}",
                    description=description,
                    category_slug=slug,
                    amount=amount,
                    stock=stock,
                )
        # Bundles: two kinds together, so the catalog reaches ~200.
        for first in range(len(kinds)):
            for second in range(first + 1, len(kinds)):
                a, b = kinds[first], kinds[second]
                yield DemoProduct(
                    sku=f"DEMO-{slug[:3].upper()}-KIT{first + 1}{second + 1}",
                    name=f"{a[0]} and {b[0].lower()} kit",
                    description=f"Bundle: {a[1]} And: {b[1]}",
                    category_slug=slug,
                    amount=(a[2] + b[2]) * 9 // 10,
                    stock=(first + second * 5) % 25,
                )


@dataclass
class SeedReport:
    categories_created: int = 0
    products_created: int = 0
    products_skipped: int = 0


class SeedError(RuntimeError):
    """The API refused something that re-running would not fix."""


async def _problem(response: aiohttp.ClientResponse) -> str:
    return f"{response.method} {response.url.path}: {response.status} {await response.text()}"


async def admin_token(session: aiohttp.ClientSession, base_url: str) -> str:
    admin = admin_credentials(os.environ)
    if admin is None:
        raise SeedError(
            "no admin to sign in as: start the stack with `make run` (it writes "
            f"{data_dir(os.environ) / ADMIN_PASSWORD_FILE}), set MC_ADMIN_EMAIL and "
            "MC_ADMIN_PASSWORD, or pass --token"
        )
    async with session.post(
        f"{base_url}/api/v1/auth/token", json={"email": admin.email, "password": admin.password}
    ) as response:
        if response.status != 200:
            raise SeedError(
                f"sign-in as {admin.email} (from {admin.source}) failed: {await _problem(response)}"
            )
        body: dict[str, Any] = await response.json()
        return str(body["access_token"])


async def _category_ids(session: aiohttp.ClientSession, base_url: str) -> dict[str, str]:
    found: dict[str, str] = {}
    token = ""
    while True:
        params = {"page_size": "100", **({"page_token": token} if token else {})}
        async with session.get(f"{base_url}/api/v1/categories", params=params) as response:
            if response.status != 200:
                raise SeedError(await _problem(response))
            body: dict[str, Any] = await response.json()
        found.update({c["slug"]: c["id"] for c in body.get("categories", [])})
        token = body.get("next_page_token", "")
        if not token:
            return found


async def seed(base_url: str, token: str, *, currency: str = "USD") -> SeedReport:
    """Load the demo catalog into the shop at ``base_url`` as the admin ``token`` allows."""
    base_url = base_url.rstrip("/")
    report = SeedReport()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        ids = await _category_ids(session, base_url)
        for slug, name, parent in CATEGORIES:
            if slug in ids:
                continue
            body: dict[str, Any] = {"name": name, "slug": slug, "parent_id": ids.get(parent, "")}
            status, answer = await _post(session, f"{base_url}/api/v1/categories", body)
            if status != 201:
                raise SeedError(f"{status} {answer}")
            ids[slug] = json.loads(answer)["id"]
            report.categories_created += 1
        for product in demo_products():
            body = {
                "sku": product.sku,
                "name": product.name,
                "description": product.description,
                "category_id": ids[product.category_slug],
                "price": {"amount": product.amount, "currency": currency},
                "stock": product.stock,
            }
            status, answer = await _post(session, f"{base_url}/api/v1/products", body)
            if status == 409:
                report.products_skipped += 1
            elif status == 201:
                report.products_created += 1
            else:
                raise SeedError(f"{status} {answer}")
    return report


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], *, attempts: int = 30
) -> tuple[int, str]:
    """POST as a polite client: when the gateway's rate limit answers 429, wait as told."""
    for _ in range(attempts - 1):
        async with session.post(url, json=body) as response:
            if response.status != 429:
                return response.status, await response.text()
            retry_after = float(response.headers.get("Retry-After", "1"))
        await asyncio.sleep(min(max(retry_after, 0.1), 30.0))
    async with session.post(url, json=body) as response:
        return response.status, await response.text()


async def _run(base_url: str, token: str | None) -> SeedReport:
    if token is None:
        async with aiohttp.ClientSession() as session:
            token = await admin_token(session, base_url.rstrip("/"))
    return await seed(base_url, token)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun.seed", description=__doc__)
    default_url = f"http://127.0.0.1:{os.environ.get('MC_GATEWAY_PORT', '8080')}"
    parser.add_argument("--base-url", default=default_url, help=f"default {default_url}")
    parser.add_argument(
        "--token", default=os.environ.get("MC_SEED_TOKEN"), help="an admin access token"
    )
    options = parser.parse_args(argv)
    configure_logging("seed", "INFO")
    try:
        report = asyncio.run(_run(options.base_url, options.token))
    except (SeedError, aiohttp.ClientError) as error:
        _log.error("seed_failed", error=str(error))
        return 1
    _log.info(
        "seeded",
        base_url=options.base_url,
        categories_created=report.categories_created,
        products_created=report.products_created,
        products_skipped=report.products_skipped,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
