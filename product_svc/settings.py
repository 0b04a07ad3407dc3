"""Settings of the product service process (``MC_*`` environment variables)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from common.service_runner import ServiceSettings


class ProductSettings(ServiceSettings):
    service_name: ClassVar[str] = "product"

    port: int = Field(8082, ge=0, le=65535, validation_alias="MC_PRODUCT_PORT")
    # A reservation neither committed nor released within this is released by the sweeper.
    reservation_ttl_s: float = Field(900.0, gt=0, validation_alias="MC_RESERVATION_TTL_S")
    reservation_sweep_interval_s: float = Field(
        5.0, gt=0, validation_alias="MC_RESERVATION_SWEEP_INTERVAL_S"
    )
    # Products created without their own threshold announce LowStock at or below this.
    default_low_stock_threshold: int = Field(
        5, ge=0, validation_alias="MC_PRODUCT_LOW_STOCK_THRESHOLD"
    )
    # The shared Redis cache of product and category reads (product_svc/catalog_cache.py);
    # unset or empty: off, every read goes to the database.
    product_cache_redis_url: SecretStr | None = Field(
        None, validation_alias="MC_PRODUCT_CACHE_REDIS_URL"
    )
    # The backstop only: writes forget their entries when they commit.
    product_cache_ttl_s: float = Field(30.0, gt=0, validation_alias="MC_PRODUCT_CACHE_TTL_S")
