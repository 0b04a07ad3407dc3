"""Wiring and start-up of the product service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

from pathlib import Path

from common.dead_letter_api import dead_letter_service
from common.grpc_server import Service
from common.pagination import PageTokens
from common.service_runner import Runtime, ServiceSpec, Wiring, event_consumers, serve
from microcommerce.product.v1 import (
    dead_letter_service_pb2,
    dead_letter_service_pb2_grpc,
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    product_service_pb2,
    product_service_pb2_grpc,
)
from product_svc import events, grpc_api
from product_svc.catalog_cache import CatalogCache, NoCache, RedisCatalogCache
from product_svc.service import Catalog
from product_svc.settings import ProductSettings
from product_svc.store import CatalogStore


def page_tokens(settings: ProductSettings) -> PageTokens:
    return PageTokens.for_service(settings.page_token_key, "product")


def catalog_cache(settings: ProductSettings) -> CatalogCache:
    url = settings.product_cache_redis_url
    if url is None or not url.get_secret_value():
        return NoCache()
    return RedisCatalogCache(url.get_secret_value(), ttl_s=settings.product_cache_ttl_s)


def wire(runtime: Runtime[ProductSettings]) -> Wiring:
    settings = runtime.settings
    use_cases = Catalog(
        CatalogStore(runtime.database, runtime.outbox),
        page_tokens(settings),
        reservation_ttl_s=settings.reservation_ttl_s,
        default_low_stock_threshold=settings.default_low_stock_threshold,
        cache=catalog_cache(settings),
    )
    interval = settings.reservation_sweep_interval_s
    consumers = event_consumers(runtime, events.subscriptions(use_cases), page_tokens(settings))

    async def expire_reservations() -> None:
        await use_cases.sweep_expired(interval)

    return Wiring(
        services=[
            Service(
                product_service_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name,
                grpc_api.ProductApi(use_cases),
                product_service_pb2_grpc.add_ProductServiceServicer_to_server,
            ),
            Service(
                inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
                grpc_api.InventoryApi(use_cases),
                inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server,
            ),
            dead_letter_service(
                dead_letter_service_pb2, dead_letter_service_pb2_grpc, consumers.admin
            ),
        ],
        checks={"database": use_cases.database_reachable},
        background=[expire_reservations],
        cleanup=[use_cases.close],
        consumers=consumers,
    )


SPEC = ServiceSpec[ProductSettings](
    name="product",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
)


def main() -> None:
    serve(SPEC, ProductSettings)
