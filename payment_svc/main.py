"""Wiring and start-up of the payment service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from common.grpc_server import Service
from common.service_runner import (
    Runtime,
    ServiceSettings,
    ServiceSpec,
    Wiring,
    run_service,
)
from microcommerce.payment.v1 import order_service_pb2, order_service_pb2_grpc
from payment_svc import events, grpc_api
from payment_svc.service import Payments
from payment_svc.store import PaymentStore


class PaymentSettings(ServiceSettings):
    port: int = Field(8081, ge=0, le=65535, validation_alias="MC_PAYMENT_PORT")


def wire(runtime: Runtime) -> Wiring:
    # The servicers are abstract to mypy until every RPC is written; at run time the generated
    # base answers the missing ones UNIMPLEMENTED, which is the contract until their issue lands.
    use_cases = Payments(PaymentStore(runtime.database))
    return Wiring(
        services=[
            Service(
                order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
                grpc_api.OrderApi(use_cases),  # type: ignore[abstract]
                order_service_pb2_grpc.add_OrderServiceServicer_to_server,
            ),
            Service(
                order_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
                grpc_api.PaymentApi(use_cases),  # type: ignore[abstract]
                order_service_pb2_grpc.add_PaymentServiceServicer_to_server,
            ),
        ],
        checks={"database": use_cases.database_reachable},
    )


SPEC = ServiceSpec(
    name="payment",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
    install_agents=events.install_agents,
)


def main() -> None:
    asyncio.run(run_service(SPEC, PaymentSettings()))
