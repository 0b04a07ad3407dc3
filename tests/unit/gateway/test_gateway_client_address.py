"""The client address behind trusted proxies: the rightmost untrusted hop, else the peer."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.client_address import ClientAddresses, ForwardedHeader

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
BEHIND_PROXIES = ClientAddresses(PROXIES)
BEHIND_RFC7239_PROXIES = ClientAddresses(PROXIES, ForwardedHeader.FORWARDED)


def test_without_trusted_proxies_the_forwarded_header_is_ignored() -> None:
    assert ClientAddresses().resolve("10.0.0.1", ["203.0.113.9"]) == "10.0.0.1"


def test_a_header_from_an_untrusted_peer_is_ignored() -> None:
    assert BEHIND_PROXIES.resolve("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"


def test_a_trusted_proxy_names_the_client() -> None:
    assert BEHIND_PROXIES.resolve("10.0.0.1", ["203.0.113.9"]) == "203.0.113.9"


def test_trusted_hops_are_skipped_from_the_right_and_forged_ones_on_the_left_are_not_read() -> None:
    # The client forged "1.1.1.1" and junk; its real address is what the first proxy appended.
    chain = ["junk, 1.1.1.1, 203.0.113.9, 10.2.0.1", "10.3.0.1"]

    assert BEHIND_PROXIES.resolve("10.0.0.1", chain) == "203.0.113.9"


def test_when_every_hop_is_trusted_the_furthest_one_is_the_client() -> None:
    assert BEHIND_PROXIES.resolve("10.0.0.1", ["10.9.9.9, 10.2.0.1"]) == "10.9.9.9"


@pytest.mark.parametrize(
    "header",
    ["", "not-an-ip", "203.0.113.9, ???", "[2001:db8::1", "300.1.1.1", ",,,", "\x00"],
)
def test_an_unreadable_hop_falls_back_to_the_peer(header: str) -> None:
    assert BEHIND_PROXIES.resolve("10.0.0.1", [header]) == "10.0.0.1"


def test_ipv6_hops_and_ports_are_read() -> None:
    chain = "2001:db8::7, [2001:db8::1]:4711, 198.51.100.2:80"

    assert BEHIND_PROXIES.resolve("fd00::1", [chain]) == "198.51.100.2"
    assert BEHIND_PROXIES.resolve("fd00::1", ["2001:db8::7, [2001:db8::1]:4711"]) == "2001:db8::1"


def test_an_ipv4_mapped_peer_is_treated_as_the_ipv4_address() -> None:
    assert BEHIND_PROXIES.resolve("::ffff:10.0.0.1", ["203.0.113.9"]) == "203.0.113.9"
    assert ClientAddresses().resolve("::ffff:198.51.100.7", []) == "198.51.100.7"


def test_rfc7239_forwarded_names_the_client_quoted_with_brackets_and_a_port() -> None:
    header = 'for=192.0.2.43;proto=https, For="[2001:db8::1]:1234";by=10.0.0.2'

    assert BEHIND_RFC7239_PROXIES.resolve("10.0.0.1", [header]) == "2001:db8::1"


def test_rfc7239_skips_trusted_hops_and_falls_back_on_obfuscated_ones() -> None:
    assert BEHIND_RFC7239_PROXIES.resolve("10.0.0.1", ["for=192.0.2.43, for=10.1.1.1"]) == (
        "192.0.2.43"
    )
    assert BEHIND_RFC7239_PROXIES.resolve("10.0.0.1", ["for=_hidden"]) == "10.0.0.1"
    assert BEHIND_RFC7239_PROXIES.resolve("10.0.0.1", ["for=unknown"]) == "10.0.0.1"
    assert BEHIND_RFC7239_PROXIES.resolve("10.0.0.1", ["proto=https"]) == "10.0.0.1"


def test_a_peer_that_is_not_an_ip_address_is_kept_and_no_peer_is_unknown() -> None:
    assert BEHIND_PROXIES.resolve("/run/gateway.sock", ["203.0.113.9"]) == "/run/gateway.sock"
    assert BEHIND_PROXIES.resolve(None, ["203.0.113.9"]) == "unknown"
