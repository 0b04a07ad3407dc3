"""Each real service, run in-process on a real port: reflection, standard health, its RPCs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.service_runner import Runtime, ServiceSettings, ServiceSpec, Wiring, run_service
from localrun.broker import EmbeddedBroker, free_port
from microcommerce.product.v1 import product_service_pb2, product_service_pb2_grpc
from payment_svc.main import SPEC as PAYMENT
from payment_svc.settings import PaymentSettings
from product_svc.main import SPEC as PRODUCT
from product_svc.settings import ProductSettings
from tests.support.processes import FAST_KAFKA
from user_svc.main import SPEC as USER
from user_svc.settings import UserSettings

EXPECTED_SERVICES = {
    "payment": {"microcommerce.payment.v1.OrderService", "microcommerce.payment.v1.PaymentService"},
    "product": {
        "microcommerce.product.v1.ProductService",
        "microcommerce.product.v1.InventoryService",
    },
    "user": {"microcommerce.user.v1.UserService"},
}
SPECS: dict[str, tuple[ServiceSpec[Any], type[ServiceSettings]]] = {
    "payment": (PAYMENT, PaymentSettings),
    "product": (PRODUCT, ProductSettings),
    "user": (USER, UserSettings),
}


@dataclass
class Running:
    address: str
    stop: asyncio.Event
    task: asyncio.Task[None]


async def start(
    name: str, bootstrap: str, data_dir: Path, spec: ServiceSpec[Any] | None = None
) -> Running:
    default_spec, settings_class = SPECS[name]
    spec = spec or default_spec
    port = free_port()
    settings = settings_class.model_validate(
        {
            "port": port,
            "kafka_bootstrap": bootstrap,
            "data_dir": data_dir,
            **{k.removeprefix("MC_").lower(): v for k, v in FAST_KAFKA.items()},
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, until=stop.wait))
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
    return Running(address, stop, task)


@pytest.fixture(params=sorted(SPECS))
async def service(
    request: pytest.FixtureRequest, broker: EmbeddedBroker, tmp_path: Path
) -> AsyncIterator[tuple[str, Running]]:
    running = await start(request.param, broker.bootstrap, tmp_path)
    yield request.param, running
    running.stop.set()
    await asyncio.wait_for(running.task, 30)


async def test_reflection_lists_the_services_and_their_methods(
    service: tuple[str, Running],
) -> None:
    name, running = service
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        listed = {s.name async for r in responses for s in r.list_services_response.service}
        some_service = sorted(EXPECTED_SERVICES[name])[0]
        files = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=some_service)])
        )
        described = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            async for r in files
            for raw in r.file_descriptor_response.file_descriptor_proto
        ]

    assert EXPECTED_SERVICES[name] | {"grpc.health.v1.Health"} <= listed
    methods = {m.name for f in described for s in f.service for m in s.method}
    assert methods  # a grpcurl-style client can see what it may call


async def test_standard_health_serves_every_service(service: tuple[str, Running]) -> None:
    name, running = service
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for full_name in ["", *EXPECTED_SERVICES[name]]:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=full_name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_product_service_serves_its_catalog_from_its_migrated_database(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # Was "a pending RPC answers UNIMPLEMENTED" on GetProduct, which the catalog issue
    # implemented; tests/integration/common covers the generated stubs' UNIMPLEMENTED.
    running = await start("product", broker.bootstrap, tmp_path)
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = product_service_pb2_grpc.ProductServiceStub(channel)
            listed = await stub.ListProducts(product_service_pb2.ListProductsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetProduct(product_service_pb2.GetProductRequest(id="p1"))
        assert list(listed.products) == []
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        running.stop.set()
        await asyncio.wait_for(running.task, 30)


async def test_health_turns_not_serving_when_the_service_stops(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    running = await start("user", broker.bootstrap, tmp_path)
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        running.stop.set()

        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await asyncio.wait_for(running.task, 30)


async def test_serves_grpc_and_stops_promptly_without_any_reachable_broker(
    tmp_path: Path,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    running = await start("payment", nowhere, tmp_path)  # returns once gRPC is ready
    async with grpc.aio.insecure_channel(running.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    running.stop.set()
    await asyncio.wait_for(running.task, 15)


async def test_cleanup_callbacks_run_after_grpc_has_stopped(tmp_path: Path) -> None:
    served_during_cleanup: list[bool] = []
    address = ""

    async def close_a_client_channel() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                served_during_cleanup.append(False)
            else:
                served_during_cleanup.append(True)

    def wire(runtime: Runtime[UserSettings]) -> Wiring:
        return dataclasses.replace(USER.wire(runtime), cleanup=[close_a_client_channel])

    nowhere = f"127.0.0.1:{free_port()}"
    running = await start("user", nowhere, tmp_path, dataclasses.replace(USER, wire=wire))
    address = running.address

    running.stop.set()
    await asyncio.wait_for(running.task, 15)

    assert served_during_cleanup == [False]
