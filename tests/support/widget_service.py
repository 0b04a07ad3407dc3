"""The test-only WidgetService on a real ``grpc.aio`` server, recording what reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from common.access import current_principal
from common.errors import DomainError
from common.grpc_server import BoundaryInterceptor
from common.tokens import Principal
from microcommerce.testing.v1 import widgets_pb2, widgets_pb2_grpc

if TYPE_CHECKING:
    # Generic in grpc-stubs only; a plain class at run time.
    Context = grpc.aio.ServicerContext[Any, Any]

WIDGET_SERVICE: ServiceDescriptor = widgets_pb2.DESCRIPTOR.services_by_name["WidgetService"]

# Values the JSON mapping must not bend: past 2^53, the uint64 maximum, a negative sint64.
BIG_PRICE = 2**53 + 1
MAX_UINT64 = 2**64 - 1


@dataclass(frozen=True)
class ReceivedCall:
    """One call as the servicer saw it."""

    method: str
    request: Message
    metadata: dict[str, str]
    # Who common.access admitted, when the server runs the AccessInterceptor.
    principal: Principal | None = None


@dataclass
class WidgetServicer(widgets_pb2_grpc.WidgetServiceServicer):
    """Answers every RPC with fixed data derived from the request and records the call."""

    calls: list[ReceivedCall] = field(default_factory=list)
    # GetSlowWidget waits for this, i.e. past any deadline; the fixture sets it at teardown.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def last(self, method: str) -> ReceivedCall:
        """The latest call of ``method``; fails the test when there was none."""
        for call in reversed(self.calls):
            if call.method == method:
                return call
        raise AssertionError(f"{method} was not called; calls: {[c.method for c in self.calls]}")

    def _record(self, method: str, request: Message, context: Context) -> None:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.calls.append(ReceivedCall(method, request, metadata, current_principal()))

    async def GetWidget(
        self, request: widgets_pb2.GetWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("GetWidget", request, context)
        return sample_widget(request.id)

    async def ListWidgets(
        self, request: widgets_pb2.ListWidgetsRequest, context: Context
    ) -> widgets_pb2.ListWidgetsResponse:
        self._record("ListWidgets", request, context)
        return widgets_pb2.ListWidgetsResponse(
            widgets=[sample_widget("w-1"), sample_widget("w-2")], total_size=2
        )

    async def GetShelfWidget(
        self, request: widgets_pb2.GetShelfWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("GetShelfWidget", request, context)
        return widgets_pb2.Widget(id=request.name)

    async def CreateWidget(
        self, request: widgets_pb2.CreateWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("CreateWidget", request, context)
        widget = widgets_pb2.Widget()
        widget.CopyFrom(request.widget)
        widget.id = request.widget_id or "w-new"
        return widget

    async def UpdateWidget(
        self, request: widgets_pb2.UpdateWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("UpdateWidget", request, context)
        return request.widget

    async def ReplaceWidgetLabels(
        self, request: widgets_pb2.ReplaceWidgetLabelsRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("ReplaceWidgetLabels", request, context)
        return widgets_pb2.Widget(id=request.id, labels=request.labels, tags=request.tags)

    async def DeleteWidget(
        self, request: widgets_pb2.DeleteWidgetRequest, context: Context
    ) -> empty_pb2.Empty:
        self._record("DeleteWidget", request, context)
        return empty_pb2.Empty()

    async def CancelWidget(
        self, request: widgets_pb2.CancelWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("CancelWidget", request, context)
        return widgets_pb2.Widget(id=request.id, name=request.reason)

    async def OrderWidgets(
        self, request: widgets_pb2.OrderWidgetsRequest, context: Context
    ) -> widgets_pb2.WidgetOrder:
        self._record("OrderWidgets", request, context)
        total = sum(line.quantity * 100 for line in request.lines)
        return widgets_pb2.WidgetOrder(id="o-1", lines=request.lines, total=total)

    async def ListWidgetParts(
        self, request: widgets_pb2.ListWidgetPartsRequest, context: Context
    ) -> widgets_pb2.ListWidgetPartsResponse:
        self._record("ListWidgetParts", request, context)
        return widgets_pb2.ListWidgetPartsResponse(
            parts=[
                widgets_pb2.WidgetPart(number=BIG_PRICE, name="axle"),
                widgets_pb2.WidgetPart(number=2, name="wheel"),
            ],
            total_size=2,
        )

    async def FailWidget(
        self, request: widgets_pb2.FailWidgetRequest, context: Context
    ) -> empty_pb2.Empty:
        self._record("FailWidget", request, context)
        # Raised like any service's domain error, so the details are what the real
        # BoundaryInterceptor sends (AIP-193 BadRequest, ErrorInfo, RetryInfo).
        error = DomainError(
            request.message,
            field=request.field or None,
            retry_after_s=request.retry_after_s if request.HasField("retry_after_s") else None,
        )
        error.status_name = request.code
        # Any reason, declared or not: the gateway must pass through what an upstream sends.
        error.reason = request.reason or None
        raise error

    async def GetWidgetFile(
        self, request: widgets_pb2.GetWidgetFileRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("GetWidgetFile", request, context)
        return widgets_pb2.Widget(id=request.path)

    async def GetSlowWidget(
        self, request: widgets_pb2.GetSlowWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        self._record("GetSlowWidget", request, context)
        await self.release.wait()
        return widgets_pb2.Widget(id=request.id)

    async def ReindexWidgets(
        self, request: widgets_pb2.ReindexWidgetsRequest, context: Context
    ) -> empty_pb2.Empty:
        self._record("ReindexWidgets", request, context)
        return empty_pb2.Empty()

    async def CountWidgets(
        self, request: widgets_pb2.CountWidgetsRequest, context: Context
    ) -> widgets_pb2.CountWidgetsResponse:
        self._record("CountWidgets", request, context)
        return widgets_pb2.CountWidgetsResponse(count=2)


def sample_widget(widget_id: str) -> widgets_pb2.Widget:
    """A widget whose fields cover every JSON form the gateway adjusts or keeps."""
    widget = widgets_pb2.Widget(
        id=widget_id,
        name="Sprocket",
        color=widgets_pb2.COLOR_GREEN,
        price=BIG_PRICE,
        view_count=MAX_UINT64,
        balance=-(2**40),
        serial=7,
        part_numbers=[1, BIG_PRICE],
        stock_by_warehouse={"north": 3, "south": BIG_PRICE},
        dimensions=widgets_pb2.Dimensions(width_mm=120),
        secret="input only: never returned",
    )
    widget.create_time.FromJsonString("2026-11-25T06:39:00.500Z")
    widget.limit.value = BIG_PRICE
    return widget


@dataclass(frozen=True)
class WidgetServer:
    """A running server: its servicer and the address to dial."""

    servicer: WidgetServicer
    address: str


@asynccontextmanager
async def running_widget_server(
    servicer: WidgetServicer | None = None,
) -> AsyncIterator[WidgetServer]:
    """Serve WidgetService (``servicer``, or a plain one) on 127.0.0.1 and a free port."""
    servicer = servicer or WidgetServicer()
    server = grpc.aio.server(interceptors=[BoundaryInterceptor()])
    widgets_pb2_grpc.add_WidgetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield WidgetServer(servicer, f"127.0.0.1:{port}")
    finally:
        servicer.release.set()
        await server.stop(grace=None)
