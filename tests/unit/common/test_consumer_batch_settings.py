"""MC_CONSUMER_BATCH_*: the read-model consumers' batch size and wait come from the settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from common.db import Database
from common.outbox import Outbox
from common.service_runner import Runtime, ServiceSettings, ServiceSpec, close_all
from common.settings import load_settings
from common.user_client import UserServiceClient
from payment_svc.main import SPEC as PAYMENT
from payment_svc.settings import PaymentSettings
from product_svc.main import SPEC as PRODUCT
from product_svc.settings import ProductSettings

SERVICES: dict[str, tuple[ServiceSpec[Any], type[ServiceSettings]]] = {
    "payment": (PAYMENT, PaymentSettings),
    "product": (PRODUCT, ProductSettings),
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("MC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MC_ENVIRONMENT", "test")
    monkeypatch.setenv("MC_DATA_DIR", str(tmp_path))


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_the_batched_consumers_take_their_batch_size_and_wait_from_the_environment(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MC_CONSUMER_BATCH_MAX_RECORDS", "7")
    monkeypatch.setenv("MC_CONSUMER_BATCH_WITHIN_S", "0.05")
    spec, settings_class = SERVICES[service]
    settings = load_settings(settings_class)
    # Nothing below connects: the engine and the channel to user_svc open on first use.
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/{service}.db")
    users = UserServiceClient("127.0.0.1:1")
    try:
        wiring = spec.wire(Runtime(service, settings, database, Outbox(service), users))
        await close_all(wiring.cleanup)
    finally:
        await users.close()
        await database.dispose()

    assert wiring.consumers is not None
    batched = [c for c in wiring.consumers.consumers if c.subscription.handle_batch is not None]
    assert batched, f"{service} has no batched consumer to configure"
    for consumer in batched:
        assert (consumer.batching.max_records, consumer.batching.within_s) == (7, 0.05)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("MC_CONSUMER_BATCH_MAX_RECORDS", "0"),
        ("MC_CONSUMER_BATCH_MAX_RECORDS", "-5"),
        ("MC_CONSUMER_BATCH_WITHIN_S", "0"),
        ("MC_CONSUMER_BATCH_WITHIN_S", "-0.25"),
    ],
)
def test_a_service_refuses_to_start_on_a_batch_size_or_wait_of_zero_or_below(
    setting: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(setting, value)

    with pytest.raises(SystemExit) as refused:
        load_settings(PaymentSettings)

    message = str(refused.value.code)
    assert message.startswith(f"PaymentSettings: refusing to start: {setting}: ")
    assert "greater than" in message
    assert "\n" not in message
