"""WidgetService in a process of its own, to kill and restart (fault tests).

Run as ``python -m tests.support.widget_runner``. ``WIDGET_PORT`` (required) is where it
listens; ``WIDGET_LATENCY_S`` delays every GetWidget, to play a slow service. Runs until SIGTERM
or SIGINT.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import grpc

from common.grpc_server import BoundaryInterceptor
from common.service_runner import wait_for_stop_signal
from microcommerce.testing.v1 import widgets_pb2, widgets_pb2_grpc
from tests.support.widget_service import WidgetServicer

if TYPE_CHECKING:
    from tests.support.widget_service import Context


class SlowServicer(WidgetServicer):
    """GetWidget answers after ``latency_s``."""

    def __init__(self, latency_s: float) -> None:
        super().__init__()
        self.latency_s = latency_s

    async def GetWidget(
        self, request: widgets_pb2.GetWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)  # the injected latency itself, not a wait
        return await super().GetWidget(request, context)


async def serve(port: int, latency_s: float) -> None:
    servicer = SlowServicer(latency_s)
    servicer.calls = _Discard()  # a long run must not keep every request
    server = grpc.aio.server(interceptors=[BoundaryInterceptor()])
    widgets_pb2_grpc.add_WidgetServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await wait_for_stop_signal()
    finally:
        servicer.release.set()
        await server.stop(grace=1)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, _item: object) -> None:
        pass


if __name__ == "__main__":
    asyncio.run(serve(int(os.environ["WIDGET_PORT"]), float(os.environ.get("WIDGET_LATENCY_S", 0))))
