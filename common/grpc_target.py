"""Turn an ``MC_<SVC>_ADDRESS`` value into a target a gRPC client channel can resolve."""

from __future__ import annotations

import ipaddress


def _host_of(address: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return ""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _ip_version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(_host_of(address)).version
    except ValueError:
        return None


def channel_target(address: str) -> str:
    """The gRPC target of one address or of a comma-separated list of them.

    The gateway balances a list itself (``gateway.upstreams.split_target``), but a plain
    channel's DNS resolver takes ``"127.0.0.1:1,127.0.0.1:2"`` for one host name and never
    connects. gRPC's ``ipv4:``/``ipv6:`` schemes take such a list of IP literals (the channel
    then fails over between them), so a list of those is rewritten to one; anything else (a
    single address, a Kubernetes service name, a ``scheme:`` target) is returned unchanged.
    """
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) < 2 or "://" in address:
        return address
    versions = {_ip_version(part) for part in parts}
    if versions == {4}:
        return "ipv4:" + ",".join(parts)
    if versions == {6}:
        return "ipv6:" + ",".join(parts)
    return address
