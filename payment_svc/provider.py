"""The payment-provider interface, its retry/timeout wrapper and the sandbox provider.

Every call carries an idempotency key the service derives from its own ids (``<payment>:auth``,
``<payment>:capture``, ``<refund>``...), so a call repeated after a timeout or a crash is answered
with the first call's result and never charges twice. A real provider is one more subclass of
``PaymentProvider`` and one more entry in ``PROVIDERS``, chosen by ``MC_PAYMENT_PROVIDER``.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, select

from common.clock import now
from common.db import Database, UtcDateTime, insert_on_conflict
from common.logging import get_logger
from common.money import Money
from payment_svc.domain import CardOnFile, FailureReason, ValidCard

_log = get_logger(__name__)


@dataclass(frozen=True)
class ProviderResult:
    """The provider's answer: approved with its reference, or why not."""

    approved: bool
    reference: str = ""
    failure: FailureReason | None = None

    @property
    def retryable(self) -> bool:
        return self.failure is FailureReason.PROCESSOR_ERROR


class PaymentProvider(ABC):
    """What checkout, cancel and refund need from a card processor."""

    @abstractmethod
    def tokenize(self, card: ValidCard) -> CardOnFile:
        """Exchange the card for a token; the number and CVC go no further than this."""

    @abstractmethod
    async def authorize(self, key: str, token: str, amount: Money) -> ProviderResult: ...

    @abstractmethod
    async def capture(self, key: str, authorization: str, amount: Money) -> ProviderResult: ...

    @abstractmethod
    async def void(self, key: str, authorization: str) -> ProviderResult: ...

    @abstractmethod
    async def refund(self, key: str, authorization: str, amount: Money) -> ProviderResult: ...


class ResilientProvider(PaymentProvider):
    """Bounds every call with a timeout and retries processor errors with exponential back-off.

    A timeout counts as a processor error: the call is repeated with the same key, which the
    provider answers idempotently, so a late first answer cannot lead to a second charge.
    """

    def __init__(
        self,
        inner: PaymentProvider,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.05,
    ) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s

    def tokenize(self, card: ValidCard) -> CardOnFile:
        return self._inner.tokenize(card)

    async def authorize(self, key: str, token: str, amount: Money) -> ProviderResult:
        return await self._retrying(
            "authorize", key, lambda: self._inner.authorize(key, token, amount)
        )

    async def capture(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        return await self._retrying(
            "capture", key, lambda: self._inner.capture(key, authorization, amount)
        )

    async def void(self, key: str, authorization: str) -> ProviderResult:
        return await self._retrying("void", key, lambda: self._inner.void(key, authorization))

    async def refund(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        return await self._retrying(
            "refund", key, lambda: self._inner.refund(key, authorization, amount)
        )

    async def _retrying(
        self, operation: str, key: str, call: Callable[[], Awaitable[ProviderResult]]
    ) -> ProviderResult:
        result = ProviderResult(False, failure=FailureReason.PROCESSOR_ERROR)
        for attempt in range(1, self._attempts + 1):
            try:
                async with asyncio.timeout(self._timeout_s):
                    result = await call()
            except TimeoutError:
                result = ProviderResult(False, failure=FailureReason.PROCESSOR_ERROR)
            if not result.retryable:
                return result
            _log.warning("provider_retrying", operation=operation, key=key, attempt=attempt)
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        return result


# The sandbox card numbers of CONTRACT.md and how the sandbox answers them; any other valid
# number is approved. "nocapture" authorizes but refuses the capture, the one way to reach the
# saga's capture compensation (void, release, CAPTURE_FAILED) from outside.
SANDBOX_BEHAVIOUR = {
    "4000000000000002": "declined",
    "4000000000009995": "insufficient",
    "4000000000000119": "processor",
    "4000000000000341": "nocapture",
}

# An authorization of a "nocapture" card carries this prefix: capture only sees the reference.
_NO_CAPTURE_PREFIX = "sbx_nocapture_"

sandbox_ledger = Table(
    "payment_sandbox_ledger",
    MetaData(),
    Column("key", String(200), primary_key=True),
    Column("operation", String(16), nullable=False),
    Column("amount", Integer, nullable=False),
    Column("approved", Integer, nullable=False),
    Column("reference", String(64), nullable=False),
    Column("failure", String(32), nullable=True),
    Column("create_time", UtcDateTime(), nullable=False),
)


class SandboxProvider(PaymentProvider):
    """A processor simulator that behaves by the sandbox card numbers.

    Its ledger of answered keys lives in a table of its own (a real processor keeps its ledger
    on its side, so it survives our crashes too): a repeated key gets the recorded answer, and
    tests can count captures per payment to prove nobody was charged twice.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    def tokenize(self, card: ValidCard) -> CardOnFile:
        # The token names the behaviour, never the number (like a real sandbox's test tokens).
        behaviour = SANDBOX_BEHAVIOUR.get(card.number, "approve")
        return CardOnFile(
            token=f"tok_sandbox_{behaviour}_{uuid.uuid4().hex}",
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            holder_name=card.holder_name,
        )

    async def authorize(self, key: str, token: str, amount: Money) -> ProviderResult:
        behaviour = token.split("_")[2] if token.startswith("tok_sandbox_") else "declined"
        if behaviour == "processor":
            # Retryable and not recorded: the processor never got as far as deciding.
            return ProviderResult(False, failure=FailureReason.PROCESSOR_ERROR)
        failure = {
            "declined": FailureReason.CARD_DECLINED,
            "insufficient": FailureReason.INSUFFICIENT_FUNDS,
        }.get(behaviour)
        prefix = _NO_CAPTURE_PREFIX if behaviour == "nocapture" else "sbx_"
        return await self._record(key, "authorize", amount.amount, failure, prefix=prefix)

    async def capture(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        # Refused for good (not a processor error): retrying the capture cannot help.
        failure = (
            FailureReason.CARD_DECLINED if authorization.startswith(_NO_CAPTURE_PREFIX) else None
        )
        return await self._record(key, "capture", amount.amount, failure)

    async def void(self, key: str, authorization: str) -> ProviderResult:
        return await self._record(key, "void", 0, None)

    async def refund(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        return await self._record(key, "refund", amount.amount, None)

    async def _record(
        self,
        key: str,
        operation: str,
        amount: int,
        failure: FailureReason | None,
        *,
        prefix: str = "sbx_",
    ) -> ProviderResult:
        async with self._database.session() as connection:
            await connection.execute(
                insert_on_conflict(connection, sandbox_ledger)
                .values(
                    key=key,
                    operation=operation,
                    amount=amount,
                    approved=int(failure is None),
                    reference=f"{prefix}{uuid.uuid4().hex}",
                    failure=failure.value if failure else None,
                    create_time=now(),
                )
                .on_conflict_do_nothing()
            )
            row = (
                await connection.execute(select(sandbox_ledger).where(sandbox_ledger.c.key == key))
            ).one()
        return ProviderResult(
            bool(row.approved),
            reference=row.reference,
            failure=FailureReason(row.failure) if row.failure else None,
        )


ProviderFactory = Callable[[Database], PaymentProvider]

PROVIDERS: dict[str, ProviderFactory] = {"sandbox": SandboxProvider}
