"""The life of a service process: migrate, serve gRPC, answer the health stream, stop gracefully.

Every service runs the same sequence; its ``main.py`` only says what is specific to it (its
settings, port, migrations and how to wire its layers) in a ``ServiceSpec``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from common.access import AccessInterceptor
from common.consumer import (
    Batching,
    EventConsumers,
    RetryPolicy,
    Subscription,
    install_consumers,
)
from common.db import Database, database_url
from common.dead_letters import DeadLetterStore
from common.grpc_server import Service, create_server, stop_gracefully
from common.health_stream import HealthCheck, InstanceIdentity, PongResponder
from common.instance import new_instance_id
from common.kafka import BackgroundStream, create_faust_app
from common.logging import configure_logging, get_logger
from common.metrics import CONSUMER_LAG, OUTBOX_PUBLISH_ERRORS, start_metrics_server
from common.outbox import Outbox, OutboxRelay
from common.outbox_metrics import refresh_outbox_gauges
from common.pagination import PageTokens
from common.schema_state import SchemaNotAtHead, current_revisions, script_heads
from common.settings import MIN_SECRET_CHARS, CommonSettings, load_settings
from common.startup import exit_line
from common.telemetry import SERVICE_LIBRARIES, configure_tracing, shutdown_tracing
from common.tokens import KeySource, TokenVerifier
from common.user_client import UserServiceClient, jwks_cache

# A commit with events wakes this process's relay at once (Outbox.wait_for_commit); the poll
# only catches rows it was not told about (written by another process on the same database, a
# replica's rows while that replica's relay was stopped, a publish that failed). Once a second
# it was an idle service's largest periodic cost after the health ping.
OUTBOX_BACKSTOP_POLL_S = 5.0

# The library's batching defaults are the settings' defaults, so the two cannot drift apart.
_BATCHING = Batching()


class ServiceSettings(CommonSettings):
    """Settings of a gRPC service process; each service names its own port variable."""

    port: int = Field(0, ge=0, le=65535)
    shutdown_grace_s: float = Field(10.0, ge=0, description="In-flight calls may finish.")
    # False where a separate step migrates (the chart's hook Job runs `migrate`), so replicas
    # never race on a schema change; the service then only checks the schema is at head.
    migrate_on_start: bool = True
    # MC_METRICS_PORT: where GET /metrics is served (0 picks a free port); unset, nowhere.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    # Event consumers (common.consumer): how often a failing handler is tried before its event
    # goes to the dead-letter store, and the back-off between tries (doubling up to the max).
    consumer_attempts: int = Field(5, ge=1, le=100)
    consumer_retry_delay_s: float = Field(0.5, gt=0)
    consumer_retry_max_delay_s: float = Field(10.0, gt=0)
    # Batched consumers (read models: payment's sales analytics, product's co-purchases): the
    # most records one unit of work applies, and the longest an agent waits to fill a batch,
    # which is also the most a lone event waits (common.consumer.Batching says the trade-off).
    consumer_batch_max_records: int = Field(_BATCHING.max_records, ge=1)
    consumer_batch_within_s: float = Field(_BATCHING.within_s, gt=0)

    # Which service's database these settings open ("payment", ...): its production rules.
    service_name: ClassVar[str] = ""

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.service_credential is None or not self.service_credential.get_secret_value():
            # Generated per run by `make run`; replicas must all hold the same one.
            problems.append("MC_SERVICE_CREDENTIAL is unset")
        key = self.page_token_key.get_secret_value() if self.page_token_key is not None else ""
        if not key:
            problems.append(
                "MC_PAGE_TOKEN_KEY is unset (each replica would draw its own page-token key)"
            )
        elif len(key) < MIN_SECRET_CHARS:
            problems.append(f"MC_PAGE_TOKEN_KEY is shorter than {MIN_SECRET_CHARS} characters")
        if self.service_name:
            problems += self.database_problems(self.service_name)
        return problems


# The settings class of one service (UserSettings, ...): the runner hands wire() the very
# object main.py built, typed as that class, so no service narrows or re-validates it.
S = TypeVar("S", bound=ServiceSettings)


@dataclass(frozen=True)
class Runtime(Generic[S]):
    """What the runner opens for a service before wiring its layers."""

    name: str
    settings: S  # the service's own settings, built in its main.py
    database: Database
    outbox: Outbox
    users: UserServiceClient  # JWKS and service identity tokens


@dataclass(frozen=True)
class Wiring:
    """What a service's layers expose to the process.

    ``services`` are served over gRPC; ``checks`` travel in its pongs; ``background`` tasks
    (reservation expiry, saga recovery, ...) run while the service serves and are cancelled
    when it stops; ``cleanup`` callbacks (closing client channels, ...) run once gRPC has
    stopped and the background tasks have ended, each awaited in turn even if one fails;
    ``key_source`` replaces user_svc's JWKS for verifying tokens (user_svc verifies with its
    own key ring); ``startup`` callbacks run before the gRPC server starts serving.
    """

    services: Sequence[Service[Any]]
    checks: dict[str, HealthCheck]
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    cleanup: Sequence[Callable[[], Awaitable[None]]] = ()
    key_source: KeySource | None = None
    # Awaited in turn before the gRPC server starts (loading user_svc's key ring, ...).
    startup: Sequence[Callable[[], Awaitable[None]]] = ()
    # The service's event consumers (its events.py), run as Faust agents in a consumer group
    # that is the service's own, so its replicas share the partitions.
    consumers: EventConsumers | None = None


@dataclass(frozen=True)
class ServiceSpec(Generic[S]):
    """What is specific to one service: its name, migrations and how to wire its layers."""

    name: str  # "payment": names its database, logs, health entries and consumer groups
    migrations: Path
    wire: Callable[[Runtime[S]], Wiring]


def event_consumers(
    runtime: Runtime[S], subscriptions: Sequence[Subscription], tokens: PageTokens
) -> EventConsumers:
    """The consumers of a service's subscriptions, with its dead-letter store and settings."""
    settings = runtime.settings
    retry = RetryPolicy(
        attempts=settings.consumer_attempts,
        first_delay_s=settings.consumer_retry_delay_s,
        max_delay_s=settings.consumer_retry_max_delay_s,
    )
    batching = Batching(
        max_records=settings.consumer_batch_max_records,
        within_s=settings.consumer_batch_within_s,
    )
    store = DeadLetterStore(runtime.database, runtime.name)
    return EventConsumers.build(store, subscriptions, retry, tokens, batching)


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM (Ctrl-C, `kill`, Kubernetes stopping the pod)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def close_all(cleanup: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run every clean-up callback; one that fails is logged and does not skip the rest."""
    for close in cleanup:
        try:
            await close()
        except Exception as error:
            get_logger(__name__).warning(
                "cleanup_failed",
                callback=getattr(close, "__qualname__", repr(close)),
                error=type(error).__name__,
            )


async def run_service(
    spec: ServiceSpec[S],
    settings: S,
    *,
    until: Callable[[], Any] = wait_for_stop_signal,
) -> None:
    """Run the service until ``until()`` returns (by default SIGTERM or SIGINT)."""
    # One id names this process in its log lines, its spans and its health-stream answers.
    instance_id = new_instance_id()
    configure_logging(spec.name, settings.log_level, instance=instance_id)
    # Before anything it instruments is opened.
    configure_tracing(spec.name, SERVICE_LIBRARIES, instance=instance_id)
    log = get_logger(__name__)
    database = Database.from_url(database_url(spec.name, settings), application_name=spec.name)
    try:
        # Imported only on this path: Alembic is ~10 MB a serving process does not need.
        if settings.migrate_on_start:
            # Alembic (~8 MB that would stay for the process's life) is imported only when
            # the schema is behind: a restart at head pays one query and no import.
            heads = script_heads(spec.migrations)
            if await current_revisions(database.engine, spec.name) != heads:
                from common.migrations import upgrade_to_head

                await upgrade_to_head(database.engine, spec.migrations)
        else:
            from common.migrations import require_head

            await require_head(database.engine, spec.migrations, spec.name)
    except SchemaNotAtHead as behind:
        await database.dispose()
        log.error("schema_not_at_head", detail=str(behind))
        raise

    outbox = Outbox(spec.name)
    users = UserServiceClient(settings.user_address)
    wiring = spec.wire(Runtime(spec.name, settings, database, outbox, users))
    for prepare in wiring.startup:
        await prepare()
    verifier = TokenVerifier(wiring.key_source or jwks_cache(users))
    grpc_server = await create_server(
        services=wiring.services,
        address=f"{settings.host}:{settings.port}",
        interceptors=[AccessInterceptor(verifier)],
    )
    await grpc_server.server.start()
    metrics_runner = None
    if settings.metrics_port is not None:
        metrics_runner, metrics_port = await start_metrics_server(
            settings.host,
            settings.metrics_port,
            before_scrape=lambda: refresh_outbox_gauges(database, outbox),
        )
        log.info("metrics_serving", port=metrics_port)
    # Zero from the start: rate() and the alerts see the series before the first failure.
    OUTBOX_PUBLISH_ERRORS.labels(outbox.service)
    tasks = [
        asyncio.create_task(
            OutboxRelay(database, outbox, settings, poll_interval_s=OUTBOX_BACKSTOP_POLL_S).run(),
            name="outbox-relay",
        ),
        *(asyncio.create_task(task(), name=task.__name__) for task in wiring.background),
    ]
    identity = InstanceIdentity(
        service=spec.name,
        address=f"{settings.host}:{grpc_server.port}",
        version=settings.version,
        instance_id=instance_id,
    )
    # Every instance must hear every ping: it reads them without a consumer group.
    responder = PongResponder(identity, wiring.checks, settings)
    responder.start()
    streams: list[BackgroundStream] = []
    if wiring.consumers is not None and wiring.consumers.consumers:
        # The pong responder is not one of them: the runner starts it on every instance.
        # "earliest": a group that starts with no committed offset (a new consumer, a first
        # deploy) handles what was published before it joined, rather than skipping it.
        events = BackgroundStream(
            create_faust_app(
                f"{spec.name}-events",
                settings,
                offset_reset="earliest",
                fetch_max_wait_ms=settings.kafka_events_fetch_max_wait_ms,
            ),
            settings,
        )
        install_consumers(events.app, wiring.consumers.consumers)
        streams.append(events)
    for stream in streams:
        CONSUMER_LAG.track(stream)
        stream.start()
    log.info("serving", address=identity.address, instance_id=identity.instance_id)

    try:
        await until()
    finally:
        log.info("stopping", grace_s=settings.shutdown_grace_s)
        await stop_gracefully(grpc_server.server, grpc_server.health, settings.shutdown_grace_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(wiring.cleanup)
        for stream in streams:
            CONSUMER_LAG.forget(stream)
        await asyncio.gather(responder.stop(), *(stream.stop() for stream in streams))
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await users.close()
        await database.dispose()
        shutdown_tracing()
        log.info("stopped")


def serve(spec: ServiceSpec[S], settings_class: type[S]) -> None:
    """A service process's ``main``: settings from the environment, then serve until stopped.

    A refusal to start (unsafe production settings, a schema behind with migrating left to
    another step, a port in use, a database down or missing) ends the process with status 1
    and the reason in one line, not a traceback (``common.startup``).
    """
    settings = load_settings(settings_class)
    try:
        asyncio.run(run_service(spec, settings))
    except SchemaNotAtHead as behind:
        raise SystemExit(f"{spec.name}: refusing to start: {behind}") from None
    except Exception as error:
        ports = {settings.port: f"MC_{spec.name.upper()}_PORT (or MC_HOST)"}
        if settings.metrics_port:
            ports[settings.metrics_port] = "MC_METRICS_PORT"
        line = exit_line(
            spec.name,
            error,
            ports=ports,
            database_setting=f"MC_{spec.name.upper()}_DATABASE_URL (unset: SQLite in MC_DATA_DIR)",
        )
        if line is None:
            raise
        raise SystemExit(line) from None
