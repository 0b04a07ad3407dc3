"""A gRPC client channel opened on first use, so a process starts before its peers are up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import grpc

from common.grpc_target import channel_target
from common.telemetry import client_interceptors

StubT = TypeVar("StubT")


class LazyStub(Generic[StubT]):
    """One channel to ``address`` and a stub on it, created at the first call, closed once."""

    def __init__(self, address: str, stub_class: Callable[[grpc.aio.Channel], StubT]) -> None:
        self._address = address
        self._stub_class = stub_class
        self._channel: grpc.aio.Channel | None = None
        self._stub: StubT | None = None

    def __call__(self) -> StubT:
        """The stub, on a channel opened now if none is open."""
        if self._channel is None or self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                channel_target(self._address), interceptors=client_interceptors()
            )
            self._stub = self._stub_class(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel if one was opened; a later call opens a new one."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(None)
