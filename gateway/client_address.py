"""The client's address: the peer, or what trusted proxies say in X-Forwarded-For / Forwarded.

The one source of the address that rate limits key on, that travels upstream as
``x-client-address`` (user_svc's sign-in throttling and session records) and that the request's
log lines carry. Forwarded headers are believed only from a peer inside ``MC_TRUSTED_PROXIES``;
the chain is then walked from the right, skipping trusted hops, and the first untrusted hop is
the client (the usual "rightmost untrusted" rule: everything left of it may be forged). A
header that cannot be read is not an error the client should see: the peer is used instead.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from enum import StrEnum

from aiohttp import web

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"


class ForwardedHeader(StrEnum):
    """The header the trusted proxies write (only that one is read: believing whichever one is
    present would let a client smuggle the header its proxy does not touch)."""

    X_FORWARDED_FOR = "X-Forwarded-For"
    FORWARDED = "Forwarded"


class _Unreadable(ValueError):
    """A forwarded hop that is not an IP address (garbage, ``unknown``, an obfuscated name)."""


class ClientAddresses:
    """Finds the client address of a request, given the proxies to believe."""

    def __init__(
        self,
        trusted: Sequence[IPNetwork] = (),
        header: ForwardedHeader = ForwardedHeader.X_FORWARDED_FOR,
    ) -> None:
        self._trusted = tuple(trusted)
        self._header = header

    def is_trusted(self, address: IPAddress) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, header_values: Sequence[str]) -> str:
        """The client address, from the TCP peer and the forwarded header's values in order."""
        if peer is None:
            return UNKNOWN
        try:
            peer_ip = _ip(peer)
        except _Unreadable:
            return peer  # not an IP socket (a Unix socket, say): nothing to walk
        if not self.is_trusted(peer_ip) or not header_values:
            return str(peer_ip)
        # Several header lines are one comma-separated list (RFC 9110 5.3). Read from the
        # right and only as far as the client: what lies left of it is the client's to write,
        # and junk there must not cost the real client its address.
        elements = ",".join(header_values).split(",")
        hop = peer_ip
        try:
            for element in reversed(elements):
                hop = _ip(self._address_text(element))
                if not self.is_trusted(hop):
                    return str(hop)
        except _Unreadable:
            return str(peer_ip)
        # Every hop is a trusted proxy: the furthest one is the nearest thing to a client.
        return str(hop)

    def of(self, request: web.Request) -> str:
        """The client address of ``request``."""
        return self.resolve(request.remote, request.headers.getall(self._header, ()))

    def _address_text(self, element: str) -> str:
        if self._header is ForwardedHeader.FORWARDED:
            return _forwarded_for(element)
        return element


def _forwarded_for(element: str) -> str:
    # RFC 7239: `for=192.0.2.60;proto=http;by=203.0.113.43`, values maybe quoted.
    for pair in element.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name.strip().lower() == "for":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            return value
    raise _Unreadable(element)


# Cached: every request parses its peer (and a proxy's hops), and the same few addresses come
# back again and again (the parse was 1-2% of the gateway's CPU per request). Addresses are
# immutable; a text that is no address raises each time (not cached). Bounded, so hops a
# client invents cost at most the eviction of others.
@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> IPAddress:
    """An address as ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1`` or ``[2001:db8::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _Unreadable(text) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


CLIENT_ADDRESSES_KEY = web.AppKey("gateway_client_addresses", ClientAddresses)
_ADDRESS_KEY = web.RequestKey("mc_client_address", str)


def client_address(request: web.Request) -> str:
    """The request's client address, decided once per request and remembered."""
    address = request.get(_ADDRESS_KEY)
    if address is None:
        addresses = request.app.get(CLIENT_ADDRESSES_KEY) or _NO_PROXIES
        address = request[_ADDRESS_KEY] = addresses.of(request)
    return address


_NO_PROXIES = ClientAddresses()
