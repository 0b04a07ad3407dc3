"""Wiring and start-up of the product service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from common.grpc_server import Service
from common.service_runner import (
    Runtime,
    ServiceSettings,
    ServiceSpec,
    Wiring,
    run_service,
)
from microcommerce.product.v1 import (
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    product_service_pb2,
    product_service_pb2_grpc,
)
from product_svc import events, grpc_api
from product_svc.service import Catalog
from product_svc.store import CatalogStore


class ProductSettings(ServiceSettings):
    port: int = Field(8082, ge=0, le=65535, validation_alias="MC_PRODUCT_PORT")


def wire(runtime: Runtime) -> Wiring:
    # The servicers are abstract to mypy until every RPC is written; at run time the generated
    # base answers the missing ones UNIMPLEMENTED, which is the contract until their issue lands.
    use_cases = Catalog(CatalogStore(runtime.database))
    return Wiring(
        services=[
            Service(
                product_service_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name,
                grpc_api.ProductApi(use_cases),  # type: ignore[abstract]
                product_service_pb2_grpc.add_ProductServiceServicer_to_server,
            ),
            Service(
                inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
                grpc_api.InventoryApi(use_cases),  # type: ignore[abstract]
                inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server,
            ),
        ],
        checks={"database": use_cases.database_reachable},
    )


SPEC = ServiceSpec(
    name="product",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
    install_agents=events.install_agents,
)


def main() -> None:
    asyncio.run(run_service(SPEC, ProductSettings()))
