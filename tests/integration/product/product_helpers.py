"""What the product service's integration tests share besides fixtures: reading gRPC errors."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    trailing: Any = error.trailing_metadata()
    raw = dict(trailing or ()).get("grpc-status-details-bin")
    return list(status_pb2.Status.FromString(raw).details) if raw else []


def violated_field(error: grpc.aio.AioRpcError) -> str:
    """The field a BadRequest detail names ("" when there is none)."""
    for detail in _details(error):
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return str(bad_request.field_violations[0].field)
    return ""


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason ("" when there is none)."""
    for detail in _details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
