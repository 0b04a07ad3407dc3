"""JSON logging for every process: structlog and the standard library through one renderer."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from common.instance import new_instance_id
from common.request_context import request_id_var

# Fields every reader looks for first; the rest follow in the order they were added.
_LEADING_KEYS = (
    "timestamp",
    "level",
    "service",
    "instance",
    "event",
    "request_id",
    "trace_id",
    "span_id",
    "logger",
)


class _StderrHandler(logging.Handler):
    """Writes one line per record to whatever ``sys.stderr`` is at the time of the record.

    A StreamHandler keeps the stream it was built with; pytest (and daemonising tools) swap
    ``sys.stderr`` later, and a handler still holding a closed capture stream fails on every
    record. Looking the stream up per record avoids that, as ``logging.lastResort`` does.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class _AddService:
    """Names the process in every record, so merged logs of all services stay attributable:
    the service, and the instance (the id the health stream and the traces know it by), so
    the lines of one replica can be told from another's.

    ``service`` is always this process: a value a call logs under that name (another service's
    name, one a caller claimed) moves to ``logged_service`` rather than disguising the line as
    another process's. Call sites should name such values themselves (``claimed_service``).
    """

    def __init__(self, service: str, instance: str) -> None:
        self._service = service
        self._instance = instance

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        logged = event_dict.get("service")
        if logged is not None and logged != self._service:
            event_dict["logged_service"] = logged
        event_dict["service"] = self._service
        event_dict.setdefault("instance", self._instance)
        return event_dict


def _add_request_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # Read from our ContextVar as well as structlog's contextvars: standard-library records
    # (grpc, sqlalchemy, ...) emitted while serving a call get the id too.
    request_id = request_id_var.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # The ids of the current OpenTelemetry span, in the W3C hex form trace back-ends show, so
    # a log line leads to its trace and back.
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


# 13 to 19 digits, optionally grouped by single spaces or dashes, not part of a longer number.
_CARD_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _mask(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    if not 13 <= len(digits) <= 19 or not _luhn(digits):
        return match.group(0)
    return f"[card ****{digits[-4:]}]"


def mask_card_numbers(text: str) -> str:
    """``text`` with every card-like number (13-19 digits passing Luhn) masked to its last 4."""
    return _CARD_CANDIDATE.sub(_mask, text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_card_numbers(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(item) for item in value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**12:
        return mask_card_numbers(str(value))
    return value


def scrub_card_numbers(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor masking card numbers in every field, rendered tracebacks included.

    Defence in depth: the payment service never logs card data, but a stray repr, a library's
    message or an exception text must not leak one either.
    """
    return {key: _scrub(value) for key, value in event_dict.items()}


class CardNumberFilter(logging.Filter):
    """Standard-library filter masking card numbers in a record's message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = mask_card_numbers(record.getMessage())
            record.args = None
        elif isinstance(record.msg, str):
            record.msg = mask_card_numbers(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_card_numbers(record.exc_text)
        return True


def _order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    ordered: dict[str, Any] = {k: event_dict[k] for k in _LEADING_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


def _level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    try:
        return levels[level.upper()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {sorted(levels)}") from None


def configure_logging(service: str, level: str = "INFO", *, instance: str | None = None) -> None:
    """Send every log record of this process to stderr as one JSON object per line.

    ``instance`` is the process's instance id (``common.instance``); a process that has none
    of its own (a migration, the seed script) gets a new one.

    Safe to call again (tests, re-configuration): it replaces what an earlier call installed
    and leaves other handlers (pytest's caplog, for one) alone.
    """
    threshold = _level(level)

    # Applied to structlog events and to standard-library records alike.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_request_id,
        _add_trace_ids,
        _AddService(service, instance or new_instance_id()),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]

    # structlog events go through the standard library too, so one handler renders everything
    # and the level threshold is the root logger's, in one place.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Cached loggers would keep the processors of the first call and make a second
        # configure_logging (another service name in tests) ineffective for them.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A plain-text traceback, not dict_tracebacks: that one records local variables by
            # default, and locals can hold card numbers or passwords.
            structlog.processors.format_exc_info,
            scrub_card_numbers,
            _order_keys,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.addFilter(CardNumberFilter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # These narrate every start, stop and rebalance at INFO; their warnings still show, and
    # MC_LOG_LEVEL=DEBUG brings everything back.
    for chatty in CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(threshold, logging.WARNING))


CHATTY_LIBRARIES = ("faust", "mode", "aiokafka", "alembic", "common.kafka")


def reset_logging() -> None:
    """Undo ``configure_logging`` (tests): our handler removed, structlog back to its defaults."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; ``name`` (usually ``__name__``) becomes the ``logger`` field."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
