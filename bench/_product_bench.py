"""What the product_svc benchmarks share, so each holds only its own measurement.

A fresh, migrated product database per backend (a SQLite file, or a PostgreSQL database
created and dropped around the case), the product gRPC server as the service runs it (the
access interceptor in front of ``ProductApi``), the REST gateway in front of that server, and
how a run ends: the JSON results file and the table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import make_url

from common.access import AccessInterceptor
from common.grpc_server import Service, create_server, stop_gracefully
from common.migrations import script_location_of, upgrade_to_head
from common.tokens import StaticKeys, TokenVerifier
from gateway.app import create_app
from gateway.settings import GatewaySettings
from localrun.postgres import database_of_its_own
from microcommerce.product.v1 import product_service_pb2 as pb
from microcommerce.product.v1 import product_service_pb2_grpc
from product_svc.grpc_api import ProductApi
from product_svc.service import Catalog

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SERVICE = pb.DESCRIPTOR.services_by_name["ProductService"]


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backends`` (sqlite,postgres) and ``--postgres-url`` (the server to create them on)."""
    parser.add_argument(
        "--backends",
        default="sqlite,postgres",
        type=lambda text: [b.strip() for b in text.split(",") if b.strip()],
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get("MC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )


@asynccontextmanager
async def fresh_database(backend: str, postgres_url: str) -> AsyncIterator[str]:
    """The URL of an empty product database at head on ``backend``, gone afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'product.db'}"
            await upgrade_to_head(url, script_location_of("product"))
            yield url
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}; use sqlite or postgres")
    server = make_url(postgres_url).set(drivername="postgresql+asyncpg")
    async with database_of_its_own(server.render_as_string(hide_password=False), "mc_bench") as url:
        await upgrade_to_head(url, script_location_of("product"))
        yield url


@asynccontextmanager
async def product_server(catalog: Catalog) -> AsyncIterator[str]:
    """The address of a product gRPC server on ``catalog``, with the real access interceptor."""
    server = await create_server(
        services=[
            Service(
                SERVICE.full_name,
                ProductApi(catalog),
                product_service_pb2_grpc.add_ProductServiceServicer_to_server,
            )
        ],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(StaticKeys({})))],
    )
    await server.server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await stop_gracefully(server.server, server.health, 0)


@asynccontextmanager
async def gateway_in_front(address: str, settings: GatewaySettings) -> AsyncIterator[str]:
    """The base URL of a REST gateway (``gateway.app.create_app``) in front of ``address``."""
    app = create_app(
        settings,
        services=[SERVICE],
        upstream_addresses={SERVICE.full_name: address},
        key_source=StaticKeys({}),
    )
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def finish(report: dict[str, Any], results_file: Path, table: str) -> None:
    """Keep the report as JSON in ``results_file`` and print its table."""
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(report, indent=2))
    sys.stdout.write(f"{table}\n(results in {results_file.relative_to(ROOT)})\n")
