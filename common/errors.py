"""Domain errors, each naming the gRPC status it becomes at the service boundary, and its reason.

Services raise these from domain and use-case code; one server interceptor turns them into
``context.abort(code, message)``. Nothing here imports gRPC, so ``domain.py`` may use them: the
status is carried by name and resolved to ``grpc.StatusCode`` at the boundary. A subclass for
one cause declares its reason (``common.reasons.Reason``) as a class attribute::

    class PaymentDeclined(FailedPrecondition):
        reason = Reason.PAYMENT_DECLINED
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from common.reasons import Reason


class FieldViolation(NamedTuple):
    """One offending request field (a ``google.rpc.BadRequest`` field violation)."""

    field: str
    description: str


class DomainError(Exception):
    """A failure the caller can act on; its message is safe to show to the caller."""

    status_name: str = "FAILED_PRECONDITION"
    # A machine-readable cause (google.rpc.ErrorInfo), finer than the status: PAYMENT_DECLINED,
    # IDEMPOTENCY_KEY_REUSED... A subclass for one cause declares it; a few reasons have their
    # own HTTP status (402, 422), declared with the reason in common.reasons.
    reason: str | None = None

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: Reason | None = None,
        retry_after_s: float | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        # The offending request field (google.rpc.BadRequest), for the client to point at.
        self.field = field
        if reason is not None:  # finer than the class's own reason
            self.reason = reason
        # When the caller may try again (google.rpc.RetryInfo; the gateway's Retry-After).
        self.retry_after_s = retry_after_s
        # Several offending fields at once (the proto's declared rules); ``field`` names one.
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        if field is None and self.violations:
            self.field = self.violations[0].field

    def field_violations(self) -> tuple[FieldViolation, ...]:
        """Every offending field with what was expected of it; empty when none is named."""
        if self.violations:
            return self.violations
        return () if self.field is None else (FieldViolation(self.field, self.message),)


class InvalidArgument(DomainError):
    """The request itself is wrong, whatever the system's state."""

    status_name = "INVALID_ARGUMENT"


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state that allows it."""

    status_name = "FAILED_PRECONDITION"


class OutOfRange(DomainError):
    """A value is past a valid range that depends on state (a page past the end, a refund)."""

    status_name = "OUT_OF_RANGE"


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it does."""

    status_name = "NOT_FOUND"


class AlreadyExists(DomainError):
    """Creating the resource would duplicate a unique key."""

    status_name = "ALREADY_EXISTS"


class Aborted(DomainError):
    """A concurrent change won; the caller may retry from a fresh read."""

    status_name = "ABORTED"


class Unauthenticated(DomainError):
    """The caller has no valid credentials."""

    status_name = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller is known but lacks the right."""

    status_name = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """A quota or rate limit is used up."""

    status_name = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A dependency cannot be reached right now; retrying later may succeed."""

    status_name = "UNAVAILABLE"
