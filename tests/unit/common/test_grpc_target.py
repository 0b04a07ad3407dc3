"""A comma-separated service address becomes a gRPC target a plain channel can resolve."""

from __future__ import annotations

import pytest

from common.grpc_target import channel_target


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:8083", "127.0.0.1:8083"),
        ("user-svc:8083", "user-svc:8083"),
        ("dns:///user-svc:8083", "dns:///user-svc:8083"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("127.0.0.1:1, 127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("localhost:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
    ],
)
def test_a_list_of_ip_literals_gets_the_scheme_that_takes_a_list(address: str, target: str) -> None:
    assert channel_target(address) == target


@pytest.mark.parametrize("address", ["a:1,b:2", "127.0.0.1:1,[::1]:2"])
def test_a_list_that_no_channel_can_resolve_is_refused_naming_the_dns_form(address: str) -> None:
    with pytest.raises(ValueError, match="dns:///"):
        channel_target(address)
