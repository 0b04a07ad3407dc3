"""One trace from REST through gRPC and Kafka, exported by real processes to a real receiver.

The stack runs as processes with tracing on (``OTEL_SDK_DISABLED=false``) and exports to an
OTLP receiver inside the test: the gateway over http/protobuf, the services over gRPC, so both
of the protocols ``OTEL_EXPORTER_OTLP_PROTOCOL`` offers are exercised. The test sends its own
``traceparent`` with each checkout, as an instrumented client would, so it knows the trace id.
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from localrun.broker import EmbeddedBroker
from tests.support.checkout_stack import (
    APPROVED,
    DECLINED,
    Answer,
    CheckoutStack,
    checkout_body,
    close_checkout_stack,
    open_checkout_stack,
)
from tests.support.otlp import (
    CLIENT,
    CONSUMER,
    PRODUCER,
    SERVER,
    ReceivedSpan,
    SpanSink,
    otlp_receiver,
)
from tests.support.processes import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVICES = ("payment", "product", "user")
# Export soon after a span ends, so the test waits a fraction of a second, not the SDK's 5 s.
TRACING = {"OTEL_SDK_DISABLED": "false", "OTEL_BSP_SCHEDULE_DELAY": "100"}
SAGA_STEPS = ("checkout reserve", "checkout authorize", "checkout capture_and_commit")


@dataclass
class TracedShop:
    shop: CheckoutStack
    sink: SpanSink


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traced(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TracedShop]:
    async with otlp_receiver() as receiver:
        gateway_export = {
            **TRACING,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        }
        service_export = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        }
        shop = await open_checkout_stack(
            broker.bootstrap,
            Path(tmp_path_factory.mktemp("traces")),
            extra_env=gateway_export,
            service_env={service: service_export for service in SERVICES},
        )
        try:
            await shop.ready_or_skip()
            yield TracedShop(shop, receiver.sink)
        finally:
            await close_checkout_stack(shop)


async def traced_checkout(shop: CheckoutStack, number: str) -> tuple[Answer, str, str]:
    """A checkout sent inside a trace of the test's own: the answer, trace id, client span id."""
    buyer = await shop.new_customer()
    product = await shop.new_product(stock=3)
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    answer = await shop.call(
        "POST",
        "/api/v1/orders",
        token=buyer,
        headers={
            "Idempotency-Key": uuid.uuid4().hex,
            "traceparent": f"00-{trace_id}-{client_span}-01",
        },
        json=checkout_body([(product, 1)], number),
    )
    return answer, trace_id, client_span


def rpc(span: ReceivedSpan) -> str:
    """``Service/Method`` of a gRPC span, "" for any other."""
    service = str(span.attributes.get("rpc.service", ""))
    if not service:
        return ""
    return f"{service.rsplit('.', 1)[-1]}/{span.attributes.get('rpc.method', '')}"


def servers(spans: list[ReceivedSpan], method: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.kind == SERVER and rpc(span) == method]


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def orphans(spans: list[ReceivedSpan], client_span: str) -> list[str]:
    """Spans whose parent is neither in the trace nor the test's own client span."""
    ids = {span.span_id for span in spans} | {client_span}
    return [
        f"{span.service}:{span.name}"
        for span in spans
        if span.parent_span_id and span.parent_span_id not in ids
    ]


def missing_from(spans: list[ReceivedSpan], client_span: str, *, declined: bool) -> list[str]:
    """What the checkout's trace still lacks (spans end, and are exported, in any order)."""
    wanted: dict[str, Callable[[list[ReceivedSpan]], object]] = {
        "gateway server span": lambda s: [
            x for x in s if x.kind == SERVER and x.parent_span_id == client_span
        ],
        "payment CreateOrder": lambda s: servers(s, "OrderService/CreateOrder"),
        "product ReserveStock": lambda s: servers(s, "InventoryService/ReserveStock"),
        "order-events publish": lambda s: named(s, "outbox publish order-events"),
        "inventory-events publish": lambda s: named(s, "outbox publish inventory-events"),
        "payment-events publish": lambda s: named(s, "outbox publish payment-events"),
    }
    steps = SAGA_STEPS[:2] if declined else SAGA_STEPS
    for step in steps:
        wanted[step] = lambda s, step=step: named(s, step)  # type: ignore[misc]
    if declined:
        wanted["product ReleaseReservation"] = lambda s: servers(
            s, "InventoryService/ReleaseReservation"
        )
    else:
        wanted["product CommitReservation"] = lambda s: servers(
            s, "InventoryService/CommitReservation"
        )
    lacking = [what for what, find in wanted.items() if not find(spans)]
    lacking += [f"parent of {orphan}" for orphan in orphans(spans, client_span)]
    return lacking


async def complete_trace(
    sink: SpanSink, trace_id: str, client_span: str, *, declined: bool = False
) -> list[ReceivedSpan]:
    lacking: list[str] = []

    async def complete() -> list[ReceivedSpan] | None:
        spans = sink.trace(trace_id)
        lacking[:] = missing_from(spans, client_span, declined=declined)
        return None if lacking else spans

    try:
        return await wait_for(complete, within=30, interval=0.1)
    except AssertionError:
        pytest.fail(f"the checkout's trace still lacks {lacking} after 30 s")


async def test_a_checkout_is_one_trace_across_gateway_payment_product_and_the_relay(
    traced: TracedShop,
) -> None:
    answer, trace_id, client_span = await traced_checkout(traced.shop, APPROVED)
    assert answer.status == 201, answer

    spans = await complete_trace(traced.sink, trace_id, client_span)

    # One root under the client's span: the gateway's; every other span has its parent here.
    [root] = [span for span in spans if span.parent_span_id == client_span]
    assert (root.service, root.kind) == ("gateway", SERVER)
    assert orphans(spans, client_span) == []
    # Each span is reported by the process that made it.
    [create] = servers(spans, "OrderService/CreateOrder")
    assert create.service == "payment"
    assert {span.service for span in servers(spans, "InventoryService/ReserveStock")} == {"product"}
    assert {span.service for span in spans if span.name in SAGA_STEPS} == {"payment"}
    # The saga steps run inside the CreateOrder call, none failed.
    ancestors = {span.span_id: span.parent_span_id for span in spans}

    def under(span: ReceivedSpan, ancestor: ReceivedSpan) -> bool:
        parent = span.parent_span_id
        while parent and parent != ancestor.span_id:
            parent = ancestors.get(parent, "")
        return parent == ancestor.span_id

    steps = [span for span in spans if span.name in SAGA_STEPS]
    # The saga carries the order, so each step runs once (capture is recorded with commit).
    assert Counter(span.name for span in steps) == {
        "checkout reserve": 1,
        "checkout authorize": 1,
        "checkout capture_and_commit": 1,
    }
    assert all(under(step, create) and not step.failed for step in steps)
    assert all(under(span, root) for span in spans if span is not root)
    # The relays' publishes continue this trace, each from the process that wrote the event.
    publishes = [span for span in spans if span.name.startswith("outbox publish ")]
    assert {(span.service, span.name) for span in publishes} >= {
        ("payment", "outbox publish order-events"),
        ("payment", "outbox publish payment-events"),
        ("product", "outbox publish inventory-events"),
    }
    assert all(span.kind == PRODUCER for span in publishes)
    assert not any(span.failed for span in spans)
    # Both export protocols delivered: the gateway's over HTTP, the services' over gRPC.
    assert {(span.service, span.protocol) for span in spans} >= {
        ("gateway", "http/protobuf"),
        ("payment", "grpc"),
        ("product", "grpc"),
    }


async def test_a_declined_card_marks_the_authorize_step_and_the_gateways_call_failed(
    traced: TracedShop,
) -> None:
    answer, trace_id, client_span = await traced_checkout(traced.shop, DECLINED)
    assert answer.status == 402, answer

    spans = await complete_trace(traced.sink, trace_id, client_span, declined=True)

    [authorize] = named(spans, "checkout authorize")
    [create] = servers(spans, "OrderService/CreateOrder")
    [call] = [span for span in spans if span.kind == CLIENT and rpc(span) == rpc(create)]
    assert authorize.failed
    assert "declined" in authorize.status_message
    # The gateway's call got FAILED_PRECONDITION: a failed call on the client side. The server
    # span records the code but, as the gRPC conventions say, is no server fault.
    assert call.service == "gateway"
    assert call.failed
    assert create.attributes["rpc.grpc.status_code"] == 9  # FAILED_PRECONDITION
    assert not create.failed
    # The gateway answered 402 correctly (a 4xx is the caller's outcome, not a fault), and the
    # step and the call that worked did not fail.
    [root] = [span for span in spans if span.parent_span_id == client_span]
    [reserve] = named(spans, "checkout reserve")
    [release] = servers(spans, "InventoryService/ReleaseReservation")
    # The aiohttp instrumentation still uses the older HTTP attribute name.
    status = root.attributes.get(
        "http.response.status_code", root.attributes.get("http.status_code")
    )
    assert status == 402
    assert not root.failed
    assert not reserve.failed
    assert not release.failed


async def test_every_process_reports_its_own_service_name_and_instance(traced: TracedShop) -> None:
    # Sign-ups and log-ins of the tests above went to user_svc.
    async def every_service_seen() -> set[str] | None:
        seen = {span.service for span in traced.sink.spans}
        return seen if seen >= {"gateway", *SERVICES} else None

    await wait_for(every_service_seen, within=30)
    for span in traced.sink.spans:
        package = str(span.attributes.get("rpc.service", ""))
        if span.kind == SERVER and package.startswith("microcommerce."):
            assert span.service == package.split(".")[1], span
        assert span.instance, span
    # One instance id per process.
    instances = {(span.service, span.instance) for span in traced.sink.spans}
    assert len({service for service, _ in instances}) == len(instances)


async def test_a_health_ping_is_one_trace_through_every_service_and_back(
    traced: TracedShop,
) -> None:
    def round_trip() -> list[ReceivedSpan] | None:
        sends = [
            span
            for span in traced.sink.spans
            if span.service == "gateway" and span.kind == PRODUCER and "service-ping" in span.name
        ]
        for send in sends:
            spans = traced.sink.trace(send.trace_id)
            handled = named(spans, "service-ping process")
            answered = named(spans, "service-pong process")
            if {s.service for s in handled} == set(SERVICES) and {
                s.attributes.get("microcommerce.service") for s in answered
            } == set(SERVICES):
                return spans
        return None

    async def probe() -> list[ReceivedSpan] | None:
        return round_trip()

    spans = await wait_for(probe, within=30, interval=0.2)

    by_id = {span.span_id: span for span in spans}
    for handled in named(spans, "service-ping process"):
        assert handled.kind == CONSUMER
        # A child of the record's producer span, and linked to it.
        producer = by_id[handled.parent_span_id]
        assert producer.kind == PRODUCER
        assert handled.links == (producer.span_id,)
    for answered in named(spans, "service-pong process"):
        assert answered.service == "gateway"
        assert by_id[answered.parent_span_id].kind == PRODUCER
