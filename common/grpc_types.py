"""Type aliases for grpc's server classes, usable both in annotations and at run time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    # grpc-stubs declares these generic; at run time they are plain classes and cannot be
    # subscripted, hence the split.
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    ServicerContext = grpc.aio.ServicerContext[Any, Any]
    RpcMethodHandler = grpc.RpcMethodHandler[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor
    ServicerContext = grpc.aio.ServicerContext
    RpcMethodHandler = grpc.RpcMethodHandler
