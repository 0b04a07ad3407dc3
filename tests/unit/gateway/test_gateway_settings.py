"""Gateway settings: upstream addresses derived from host and ports unless given."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MC_HOST",
        "MC_PAYMENT_PORT",
        "MC_PRODUCT_PORT",
        "MC_USER_PORT",
        "MC_PAYMENT_ADDRESS",
        "MC_PRODUCT_ADDRESS",
        "MC_USER_ADDRESS",
        "MC_UPSTREAM_TIMEOUT_S",
        "MC_MAX_BODY_BYTES",
        "MC_GATEWAY_PORT",
        "MC_TRUSTED_PROXIES",
        "MC_TRUSTED_PROXY_HEADER",
    ):
        monkeypatch.delenv(name, raising=False)


def test_upstreams_default_to_the_contract_ports_on_the_local_host() -> None:
    settings = GatewaySettings()

    assert settings.payment_address == "127.0.0.1:8081"
    assert settings.product_address == "127.0.0.1:8082"
    assert settings.user_address == "127.0.0.1:8083"
    assert settings.gateway_port == 8080


def test_defaults_for_deadline_and_body_limit_are_five_seconds_and_one_mebibyte() -> None:
    settings = GatewaySettings()

    assert settings.upstream_timeout_s == 5.0
    assert settings.max_body_bytes == 1024 * 1024


def test_a_service_port_from_the_environment_moves_its_default_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MC_HOST", "10.0.0.5")
    monkeypatch.setenv("MC_PRODUCT_PORT", "9999")

    settings = GatewaySettings()

    assert settings.product_address == "10.0.0.5:9999"
    assert settings.payment_address == "10.0.0.5:8081"


def test_an_explicit_address_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MC_USER_ADDRESS", "user-svc.shop.svc:8083")
    monkeypatch.setenv("MC_USER_PORT", "1234")

    assert GatewaySettings().user_address == "user-svc.shop.svc:8083"


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "127.0.0.1:8081"), ("::", "[::1]:8081"), ("::1", "[::1]:8081")],
)
def test_a_wildcard_or_ipv6_bind_host_becomes_a_dialable_address(host: str, expected: str) -> None:
    assert GatewaySettings(host=host).payment_address == expected


def test_service_address_looks_up_a_backend_by_name() -> None:
    settings = GatewaySettings(payment_address="pay:1")

    assert settings.service_address("payment") == "pay:1"
    with pytest.raises(KeyError):
        settings.service_address("shipping")


def test_no_proxy_is_trusted_by_default() -> None:
    assert GatewaySettings().trusted_proxies == ()


def test_trusted_proxies_are_comma_separated_cidrs_or_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MC_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.0.2.1")
    monkeypatch.setenv("MC_TRUSTED_PROXY_HEADER", "Forwarded")

    settings = GatewaySettings()

    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    )
    assert settings.trusted_proxy_header == "Forwarded"


@pytest.mark.parametrize("value", ["10.0.0.1/8", "proxy.internal", "10.0.0.0/33"])
def test_a_trusted_proxy_that_is_not_a_network_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MC_TRUSTED_PROXIES", value)

    with pytest.raises(ValidationError, match="trusted_proxies"):
        GatewaySettings()
