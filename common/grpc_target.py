"""Turn an ``MC_<SVC>_ADDRESS`` value into a target a gRPC client channel can resolve."""

from __future__ import annotations

import ipaddress


def _literal(address: str) -> tuple[int, str] | None:
    """(IP version, address) for an IP literal with a port (``localhost`` as 127.0.0.1)."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return None
    if host == "localhost":
        host = "127.0.0.1"
    try:
        version = ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).version
    except ValueError:
        return None
    return version, f"{host}:{port}"


def channel_target(address: str) -> str:
    """The gRPC target of one address or of a comma-separated list of them.

    The gateway balances a list itself (``gateway.upstreams.split_target``), but a plain
    channel's DNS resolver takes ``"127.0.0.1:1,127.0.0.1:2"`` for one host name and never
    connects. gRPC's ``ipv4:``/``ipv6:`` schemes take such a list of IP literals (the channel
    then fails over between them), so a list of those is rewritten to one; a single address, a
    Kubernetes service name or a ``scheme:`` target is returned unchanged. A list of host names
    (or of mixed IP versions) has no such form: ValueError, naming the ``dns:///`` way.
    ``gateway.upstreams`` applies the same rule to the live subset of its addresses.
    """
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) < 2 or ":/" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    literals = [_literal(part) for part in parts]
    versions = {literal[0] if literal else None for literal in literals}
    if versions not in ({4}, {6}):
        raise ValueError(
            f"{address}: several addresses must be IP literals of one version; "
            "give a name as dns:///name:port"
        )
    scheme = "ipv4:" if versions == {4} else "ipv6:"
    return scheme + ",".join(literal[1] for literal in literals if literal)
