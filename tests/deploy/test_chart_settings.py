"""Each pod the chart renders gets settings its process accepts, production refusals included.

The chart's default environment is production, where a process refuses unsafe defaults
(common/settings.py): the environment a pod would see (its ConfigMap, its env, the Secret's
keys it references) is built into that process's settings class exactly as at start-up.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TypeVar

import pytest

from common.migrations import MigrationSettings
from common.settings import CommonSettings
from gateway.settings import GatewaySettings
from payment_svc.settings import PaymentSettings
from product_svc.settings import ProductSettings
from tests.deploy.chart import VALUES_FILES, Doc, Render, render
from tests.deploy.tooling import Tools
from user_svc.settings import UserSettings

SettingsT = TypeVar("SettingsT", bound=CommonSettings)

SETTINGS_CLASSES: dict[str, type[CommonSettings]] = {
    "gateway": GatewaySettings,
    "payment": PaymentSettings,
    "product": ProductSettings,
    "user": UserSettings,
}

# What an operator puts in `existingSecret` (README, "Deploying", step 3).
EXISTING_SECRET = {
    "MC_SERVICE_CREDENTIAL": "c" * 44,
    "MC_PAGE_TOKEN_KEY": "p" * 44,
    "MC_FRAUD_CARD_KEY": "f" * 44,
    "MC_JWT_KEY_ENCRYPTION_KEY": "j" * 44,
    "MC_ADMIN_PASSWORD": "a" * 24,
    "MC_PAYMENT_DATABASE_URL": "postgresql+asyncpg://payment:pw@pg:5432/shop",
    "MC_PRODUCT_DATABASE_URL": "postgresql+asyncpg://product:pw@pg:5432/shop",
    "MC_USER_DATABASE_URL": "postgresql+asyncpg://user:pw@pg:5432/shop",
    "MC_REDIS_URL": "redis://:pw@redis:6379/0",
    "MC_KAFKA_SASL_PASSWORD": "k" * 24,
}


@pytest.fixture(scope="module", params=["default", "production"])
def installed(request: pytest.FixtureRequest, tools: Tools) -> Render:
    return render(tools, VALUES_FILES[request.param])


def secret_values(rendered: Render) -> dict[str, str]:
    """The generated Secret's keys, or the operator's existing Secret when none is generated."""
    generated = [
        doc
        for doc in rendered.kind("Secret")
        if "helm.sh/hook" not in doc["metadata"].get("annotations", {})
    ]
    if not generated:
        return dict(EXISTING_SECRET)
    (secret,) = generated
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def pod_environment(rendered: Render, workload: Doc, mounted_ca: Path) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    environment: dict[str, str] = {}
    if container.get("envFrom"):
        environment.update(rendered.kind("ConfigMap")[0]["data"])
    secrets = secret_values(rendered)
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = str(entry["value"])
            continue
        reference = entry["valueFrom"]["secretKeyRef"]
        if reference["key"] in secrets:
            environment[entry["name"]] = secrets[reference["key"]]
        else:
            assert reference.get("optional"), f"{entry['name']} is required but not in the Secret"
    if "MC_KAFKA_SSL_CAFILE" in environment:
        # The CA Secret's mount; the settings check the file exists.
        environment["MC_KAFKA_SSL_CAFILE"] = str(mounted_ca)
    return environment


def build(
    settings_class: type[SettingsT],
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> SettingsT:
    for name in list(os.environ):
        if name.startswith("MC_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return settings_class.model_validate({})


@pytest.mark.parametrize("component", sorted(SETTINGS_CLASSES))
def test_every_component_starts_with_what_the_chart_gives_it(
    installed: Render, component: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("mounted from kafka.caSecret\n")
    environment = pod_environment(installed, installed.deployment_of(component), ca)

    settings = build(SETTINGS_CLASSES[component], environment, monkeypatch)

    assert settings.environment == "production"


def test_the_migration_job_starts_with_what_the_chart_gives_it(
    tools: Tools, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    production = render(tools, VALUES_FILES["production"])
    (job,) = production.kind("Job")

    settings = build(MigrationSettings, pod_environment(production, job, tmp_path), monkeypatch)

    assert settings.environment == "production"


def test_a_production_install_without_database_urls_is_refused_at_start(
    tools: Tools, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The default (demo) values, with the explicit SQLite opt-out turned off.
    strict = render(tools, settings={"common.allowSqliteInProduction": False})
    environment = pod_environment(strict, strict.deployment_of("product"), tmp_path)

    with pytest.raises(ValueError, match="MC_PRODUCT_DATABASE_URL is unset"):
        build(ProductSettings, environment, monkeypatch)


def test_consumer_and_http_cache_settings_default_to_the_processes_own_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tools: Tools
) -> None:
    default = render(tools)

    payment = build(
        PaymentSettings,
        pod_environment(default, default.deployment_of("payment"), tmp_path),
        monkeypatch,
    )
    gateway = build(
        GatewaySettings,
        pod_environment(default, default.deployment_of("gateway"), tmp_path),
        monkeypatch,
    )

    defaults = {name: info.default for name, info in PaymentSettings.model_fields.items()}
    gateway_defaults = GatewaySettings.model_fields
    assert payment.consumer_attempts == defaults["consumer_attempts"]
    assert payment.consumer_retry_delay_s == defaults["consumer_retry_delay_s"]
    assert payment.consumer_retry_max_delay_s == defaults["consumer_retry_max_delay_s"]
    assert payment.consumer_batch_max_records == defaults["consumer_batch_max_records"]
    assert payment.consumer_batch_within_s == defaults["consumer_batch_within_s"]
    assert gateway.http_cache_max_age_s == gateway_defaults["http_cache_max_age_s"].default
    assert gateway.http_cache_swr_s == gateway_defaults["http_cache_swr_s"].default


def test_consumer_and_http_cache_values_reach_the_processes_that_read_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tools: Tools
) -> None:
    tuned = render(
        tools,
        settings={
            "consumers.attempts": 8,
            "consumers.retryDelaySeconds": 0.25,
            "consumers.retryMaxDelaySeconds": 30,
            "consumers.batchMaxRecords": 500,
            "consumers.batchWithinSeconds": 0.05,
            "gateway.httpCache.maxAgeSeconds": 5,
            "gateway.httpCache.staleWhileRevalidateSeconds": 60,
        },
    )

    for component in ("payment", "product"):
        environment = pod_environment(tuned, tuned.deployment_of(component), tmp_path)
        settings = build(SETTINGS_CLASSES[component], environment, monkeypatch)
        assert isinstance(settings, PaymentSettings | ProductSettings)
        assert (
            settings.consumer_attempts,
            settings.consumer_retry_delay_s,
            settings.consumer_retry_max_delay_s,
            settings.consumer_batch_max_records,
            settings.consumer_batch_within_s,
        ) == (8, 0.25, 30.0, 500, 0.05)
    environment = pod_environment(tuned, tuned.deployment_of("gateway"), tmp_path)
    gateway = build(GatewaySettings, environment, monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    assert (gateway.http_cache_max_age_s, gateway.http_cache_swr_s) == (5, 60)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("consumers.attempts", 0),
        ("consumers.retryDelaySeconds", 0),
        ("consumers.batchMaxRecords", 0),
        ("consumers.batchWithinSeconds", 0),
        ("consumers.batchWithinSeconds", -0.25),
        ("gateway.httpCache.maxAgeSeconds", -1),
    ],
)
def test_the_schema_refuses_consumer_and_cache_values_the_processes_would_refuse(
    tools: Tools, key: str, value: float
) -> None:
    with pytest.raises(AssertionError, match=key.rsplit(".", 1)[-1]):
        render(tools, settings={key: value})
