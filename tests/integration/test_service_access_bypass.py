"""Every ADMIN and SERVICE RPC of the real services, called over gRPC with no gateway in front.

The REST matrix (test_authorization_matrix.py) cannot see a service-side access bug: the
gateway refuses first, and SERVICE RPCs have no route at all. Here each call reaches the
service's own ``AccessInterceptor`` as an internal caller would. The list of RPCs is read from
the ``access`` option of every generated service, so a new RPC is covered without editing this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import MethodDescriptor

from common.access import access_of
from gateway.routes import discover_services
from microcommerce.common.v1 import annotations_pb2 as mc
from tests.support.inprocess import in_process_services
from tests.support.tokens import admin_token, customer_token, service_token

# The package of a service is the name of the process serving it (microcommerce.<svc>.v1).
GUARDED = [
    (service.full_name.split(".")[1], method)
    for service in discover_services()
    for method in service.methods
    if access_of(f"/{service.full_name}/{method.name}") in (mc.ACCESS_ADMIN, mc.ACCESS_SERVICE)
]
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channels(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    data_dir: Path = tmp_path_factory.mktemp("bypass")
    async with in_process_services(data_dir) as addresses:
        opened = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
        try:
            yield opened
        finally:
            for channel in opened.values():
                await channel.close(None)


async def test_the_access_table_has_admin_and_service_rpcs_in_every_service() -> None:
    # Guards the derivation itself: an empty list would make every test below vacuous.
    assert {svc for svc, _ in GUARDED} == {"payment", "product", "user"}
    levels = {access_of(f"/{m.containing_service.full_name}/{m.name}") for _, m in GUARDED}
    assert levels == {mc.ACCESS_ADMIN, mc.ACCESS_SERVICE}


async def _code(
    channels: dict[str, grpc.aio.Channel], service: str, method: MethodDescriptor, token: str
) -> grpc.StatusCode:
    # Raw bytes in and out: an empty request is a valid message of every type.
    call = channels[service].unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=None,
        response_deserializer=None,
    )
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        await call(b"", metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("service", "method"),
    GUARDED,
    ids=[f"{s}:{m.containing_service.name}.{m.name}" for s, m in GUARDED],
)
async def test_the_service_itself_refuses_callers_below_the_declared_level(
    channels: dict[str, grpc.aio.Channel], service: str, method: MethodDescriptor
) -> None:
    access = access_of(f"/{method.containing_service.full_name}/{method.name}")
    below = {"nobody": "", "customer": customer_token()}
    if access == mc.ACCESS_SERVICE:
        below["admin"] = admin_token()  # an administrator is a person, not a service
    entitled = admin_token() if access == mc.ACCESS_ADMIN else service_token()

    codes = {
        caller: await _code(channels, service, method, token) for caller, token in below.items()
    }
    admitted = await _code(channels, service, method, entitled)

    assert codes.pop("nobody") is grpc.StatusCode.UNAUTHENTICATED
    assert set(codes.values()) == {grpc.StatusCode.PERMISSION_DENIED}, codes
    assert admitted not in REFUSED
