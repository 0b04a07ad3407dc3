"""Which address each service is reached at."""

from __future__ import annotations

import pytest

from gateway.routes import discover_services
from gateway.settings import GatewaySettings
from gateway.upstreams import backend_of, resolve_addresses
from tests.support.widget_service import WIDGET_SERVICE

SETTINGS = GatewaySettings(payment_address="pay:1", product_address="prod:2", user_address="user:3")


def test_our_services_are_reached_at_the_address_their_package_names() -> None:
    services = discover_services()

    addresses = resolve_addresses(services, SETTINGS)

    expected = {"payment": "pay:1", "product": "prod:2", "user": "user:3"}
    for service in services:
        backend = backend_of(service)
        assert backend is not None
        assert addresses[service.full_name] == expected[backend]


def test_an_explicit_address_by_service_name_or_package_wins() -> None:
    by_name = resolve_addresses([WIDGET_SERVICE], SETTINGS, {WIDGET_SERVICE.full_name: "a:1"})
    by_package = resolve_addresses([WIDGET_SERVICE], SETTINGS, {"microcommerce.testing.v1": "b:2"})

    assert by_name == {WIDGET_SERVICE.full_name: "a:1"}
    assert by_package == {WIDGET_SERVICE.full_name: "b:2"}


def test_a_service_of_no_known_backend_without_an_address_is_refused() -> None:
    assert backend_of(WIDGET_SERVICE) is None
    with pytest.raises(ValueError, match="upstream_addresses"):
        resolve_addresses([WIDGET_SERVICE], SETTINGS)
