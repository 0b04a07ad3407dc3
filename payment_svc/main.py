"""Wiring and start-up of the payment service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

from common.dead_letter_api import dead_letter_service
from common.grpc_server import Service
from common.logging import get_logger
from common.pagination import PageTokens
from common.service_runner import Runtime, ServiceSpec, Wiring, event_consumers, serve
from common.user_client import ServiceTokens
from microcommerce.payment.v1 import (
    dead_letter_service_pb2,
    dead_letter_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
    sales_analytics_service_pb2,
    sales_analytics_service_pb2_grpc,
)
from payment_svc import events, grpc_api
from payment_svc.analytics.grpc_api import SalesAnalyticsApi
from payment_svc.analytics.service import SalesAnalytics
from payment_svc.analytics.store import AnalyticsStore
from payment_svc.inventory_client import GrpcInventory
from payment_svc.provider import PROVIDERS, ResilientProvider
from payment_svc.saga import CheckoutSaga, FaultHook, no_faults
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.settings import PaymentSettings
from payment_svc.store import PaymentStore

_log = get_logger(__name__)


def fault_hook(point_to_die_at: str) -> FaultHook:
    """The test fault hook: SIGKILL, so nothing is flushed or rolled back, as in a real crash."""
    if not point_to_die_at:
        return no_faults

    def die_at(point: str) -> None:
        if point == point_to_die_at:
            _log.warning("fault_injected", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

    return die_at


def wire(runtime: Runtime[PaymentSettings]) -> Wiring:
    settings = runtime.settings
    store = PaymentStore(runtime.database, runtime.outbox)
    provider = ResilientProvider(
        PROVIDERS[settings.provider](runtime.database),
        timeout_s=settings.provider_timeout_s,
        attempts=settings.provider_attempts,
    )
    inventory = GrpcInventory(
        settings.product_address,
        ServiceTokens(runtime.users, service=runtime.name, settings=settings),
        deadline_s=settings.inventory_deadline_s,
    )
    hold_deadline = timedelta(seconds=settings.fraud_hold_deadline_s)
    saga = CheckoutSaga(
        store,
        inventory,
        provider,
        fault=fault_hook(settings.fault_at),
        screening=settings.screening_policy(),
        hold_for=hold_deadline,
    )
    page_tokens = PageTokens.for_service(settings.page_token_key, "payment")
    use_cases = Payments(
        store,
        saga,
        provider,
        page_tokens=page_tokens,
        policy=PaymentPolicy(
            replay_wait_s=settings.replay_wait_s,
            recovery_grace_s=settings.recovery_grace_s,
            recovery_interval_s=settings.recovery_interval_s,
            hold_deadline=hold_deadline,
            attempt_retention=timedelta(seconds=settings.fraud_attempt_retention_s),
        ),
        card_key=(
            settings.fraud_card_key.get_secret_value().encode()
            if settings.fraud_card_key is not None
            else None
        ),
    )
    analytics = SalesAnalytics(AnalyticsStore(runtime.database, runtime.outbox))
    consumers = event_consumers(runtime, events.subscriptions(use_cases, analytics), page_tokens)

    return Wiring(
        services=[
            Service(
                order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
                grpc_api.OrderApi(use_cases),
                order_service_pb2_grpc.add_OrderServiceServicer_to_server,
            ),
            Service(
                order_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
                grpc_api.PaymentApi(use_cases),
                order_service_pb2_grpc.add_PaymentServiceServicer_to_server,
            ),
            Service(
                sales_analytics_service_pb2.DESCRIPTOR.services_by_name[
                    "SalesAnalyticsService"
                ].full_name,
                SalesAnalyticsApi(analytics),
                sales_analytics_service_pb2_grpc.add_SalesAnalyticsServiceServicer_to_server,
            ),
            dead_letter_service(
                dead_letter_service_pb2, dead_letter_service_pb2_grpc, consumers.admin
            ),
        ],
        checks={"database": use_cases.database_reachable},
        background=[use_cases.run_recovery],
        cleanup=[inventory.close],
        consumers=consumers,
    )


SPEC = ServiceSpec[PaymentSettings](
    name="payment",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
)


def main() -> None:
    serve(SPEC, PaymentSettings)
