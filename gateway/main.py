"""Wiring and start-up of the gateway: REST app, health stream, graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from common.instance import new_instance_id
from common.logging import configure_logging, get_logger
from common.service_runner import wait_for_stop_signal
from common.settings import SERVICE_NAMES, load_settings
from common.startup import exit_line
from common.telemetry import GATEWAY_LIBRARIES, configure_tracing, shutdown_tracing
from gateway.app import METRICS_KEY, create_app, drain, runner_options, settle_heap
from gateway.health import HealthRegistry, HealthStream
from gateway.health_routes import health_routes
from gateway.settings import GatewaySettings
from gateway.status_page import status_routes


async def serve(
    settings: GatewaySettings,
    *,
    until: Callable[[], Awaitable[None]] = wait_for_stop_signal,
) -> None:
    """Serve REST until ``until()`` returns (by default SIGTERM or SIGINT), then stop gracefully."""
    instance_id = new_instance_id()  # in its log lines and its spans
    configure_logging("gateway", settings.log_level, instance=instance_id)
    # Before create_app: it instruments web.Application.
    configure_tracing("gateway", GATEWAY_LIBRARIES, instance=instance_id)
    log = get_logger(__name__)
    registry = HealthRegistry(
        SERVICE_NAMES,
        down_after_s=settings.health_down_after_s,
        broker_down_after_s=settings.health_broker_down_after_s,
    )
    # No consumer group: every gateway replica hears every pong.
    stream = HealthStream(registry, settings, settings.health_ping_interval_s)
    # REST must answer (and /health say the broker is DOWN) even while Kafka is unreachable.
    stream.start()

    app = create_app(
        settings,
        extra_routes=[*health_routes(registry, stream.running), *status_routes(registry)],
        health=registry,
    )
    metrics = app[METRICS_KEY]
    metrics.on_scrape(lambda: metrics.observe_health(registry.snapshot()))
    runner = web.AppRunner(app, access_log=None, **runner_options(settings))
    await runner.setup()
    settle_heap()
    await web.TCPSite(runner, settings.host, settings.gateway_port).start()
    log.info("serving", url=f"http://{settings.host}:{settings.gateway_port}")
    try:
        await until()
    finally:
        # Graceful stop: readiness fails first (new traffic goes elsewhere) while we still
        # serve; then the listener closes and in-flight requests get the grace period.
        drain(app).draining = True
        log.info("draining", drain_s=settings.shutdown_drain_s)
        await asyncio.sleep(settings.shutdown_drain_s)
        log.info("stopping", grace_s=settings.shutdown_grace_s)
        await runner.cleanup()
        await stream.stop()
        shutdown_tracing()
        log.info("stopped")


def main() -> None:
    settings = load_settings(GatewaySettings)
    try:
        asyncio.run(serve(settings))
    except Exception as error:
        line = exit_line("gateway", error, ports={settings.gateway_port: "MC_GATEWAY_PORT"})
        if line is None:
            raise
        raise SystemExit(line) from None
