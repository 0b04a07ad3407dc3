"""Who may call which RPC, enforced in every service from the ``access`` option in the protos.

The rule for an RPC is declared next to it (``option (microcommerce.common.v1.access)``), so
there is no hand-kept list to forget: ``AccessInterceptor`` reads the option from the method's
descriptor, verifies the caller's bearer token from the gRPC metadata and admits or refuses the
call before the servicer runs. Servicers read the caller with ``current_principal()``.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool

from common.errors import PermissionDenied, Unauthenticated
from common.tokens import Principal, TokenVerifier, bearer_token
from microcommerce.common.v1 import annotations_pb2 as mc_annotations

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

AUTHORIZATION_METADATA_KEY = "authorization"

# Infrastructure every gRPC server carries; it declares no access option and needs none.
_OPEN_SERVICES = ("grpc.health.v1.", "grpc.reflection.")

_principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "mc_principal", default=None
)


def current_principal() -> Principal | None:
    """The verified caller of the RPC being served, or None for an anonymous public call."""
    return _principal_var.get()


def require_principal() -> Principal:
    """The verified caller; ``Unauthenticated`` when the call carries no valid token."""
    principal = _principal_var.get()
    if principal is None:
        raise Unauthenticated("this call needs an access token")
    return principal


@cache
def access_of(method_path: str) -> int:
    """The ``access`` option of ``/package.Service/Method``; UNSPECIFIED when it declares none.

    Raises ``KeyError`` for a method not in the descriptor pool (a service we do not define).
    """
    full_name = method_path.lstrip("/").replace("/", ".")
    method = descriptor_pool.Default().FindMethodByName(full_name)
    access: int = method.GetOptions().Extensions[mc_annotations.access]
    return access


def admit(access: int, principal: Principal | None) -> None:
    """Raise unless ``principal`` may call an RPC declaring ``access``."""
    if access in (mc_annotations.ACCESS_PUBLIC, mc_annotations.ACCESS_SERVICE_CREDENTIAL):
        return
    if access == mc_annotations.ACCESS_UNSPECIFIED:
        # Fail closed: an RPC that forgot its declaration is nobody's (a test also catches it).
        raise PermissionDenied("this RPC declares no access level")
    if principal is None:
        raise Unauthenticated("this call needs an access token")
    if access == mc_annotations.ACCESS_SERVICE and not principal.is_service:
        raise PermissionDenied("only MicroCommerce services may call this")
    if access == mc_annotations.ACCESS_ADMIN and not principal.is_admin:
        raise PermissionDenied("this call needs the admin role")


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


class AccessInterceptor(_ServerInterceptor):
    """Admits each call by its RPC's declared access level and the caller's token.

    Runs inside ``BoundaryInterceptor`` (pass it to ``create_server(interceptors=...)``): the
    ``Unauthenticated`` and ``PermissionDenied`` it raises become UNAUTHENTICATED and
    PERMISSION_DENIED. A public RPC with a bad token is served anonymously; a protected one is
    refused before the servicer runs. Unary RPCs only: none of ours stream.
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler: _Handler | None = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.lstrip("/").startswith(_OPEN_SERVICES):
            return handler  # type: ignore[return-value]  # grpc-stubs omit the None case
        if handler.unary_unary is None:
            raise TypeError(f"{method}: only unary RPCs are supported by AccessInterceptor")
        try:
            access = access_of(method)
        except KeyError:
            access = mc_annotations.ACCESS_UNSPECIFIED
        token = bearer_token(_metadata_value(handler_call_details, AUTHORIZATION_METADATA_KEY))
        behavior = handler.unary_unary

        async def admitted(request: Any, context: Any) -> Any:
            principal = await self._principal(token, access)
            admit(access, principal)
            _principal_var.set(principal)
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(
            admitted, handler.request_deserializer, handler.response_serializer
        )

    async def _principal(self, token: str | None, access: int) -> Principal | None:
        if token is None:
            return None
        try:
            return await self._verifier.verify(token)
        except Unauthenticated:
            if access == mc_annotations.ACCESS_PUBLIC:
                return None
            raise
