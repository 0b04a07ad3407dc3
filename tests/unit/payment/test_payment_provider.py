"""The provider wrapper: timeouts and processor errors retried with the same key, then failed."""

from __future__ import annotations

import asyncio

from common.money import Money
from payment_svc.domain import (
    CardBrand,
    CardOnFile,
    FailureReason,
    ValidCard,
)
from payment_svc.provider import PaymentProvider, ProviderResult, ResilientProvider

AMOUNT = Money(1000, "USD")


class ScriptedProvider(PaymentProvider):
    """Answers authorize from a script; records the keys it was called with."""

    def __init__(self, *answers: ProviderResult | None) -> None:
        self.answers = list(answers)
        self.keys: list[str] = []

    def tokenize(self, card: ValidCard) -> CardOnFile:
        return CardOnFile("tok", card.brand, card.last4, card.exp_month, card.exp_year, "x")

    async def authorize(self, key: str, token: str, amount: Money) -> ProviderResult:
        self.keys.append(key)
        answer = self.answers.pop(0)
        if answer is None:  # hang: the wrapper's timeout must cut it off
            await asyncio.sleep(60)
        assert answer is not None
        return answer

    async def capture(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        return ProviderResult(True, "cap")

    async def void(self, key: str, authorization: str) -> ProviderResult:
        return ProviderResult(True, "void")

    async def refund(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        return ProviderResult(True, "ref")


ERROR = ProviderResult(False, failure=FailureReason.PROCESSOR_ERROR)
DECLINE = ProviderResult(False, failure=FailureReason.CARD_DECLINED)
APPROVE = ProviderResult(True, "auth-1")


async def test_a_processor_error_is_retried_with_the_same_key_until_approved() -> None:
    inner = ScriptedProvider(ERROR, ERROR, APPROVE)

    result = await ResilientProvider(inner, attempts=3, backoff_s=0).authorize("k", "t", AMOUNT)

    assert result == APPROVE
    assert inner.keys == ["k", "k", "k"]


async def test_processor_errors_past_the_attempts_fail_as_processor_error() -> None:
    inner = ScriptedProvider(ERROR, ERROR)

    result = await ResilientProvider(inner, attempts=2, backoff_s=0).authorize("k", "t", AMOUNT)

    assert result.failure is FailureReason.PROCESSOR_ERROR
    assert result.retryable


async def test_a_decline_is_final_and_not_retried() -> None:
    inner = ScriptedProvider(DECLINE, APPROVE)

    result = await ResilientProvider(inner, attempts=3, backoff_s=0).authorize("k", "t", AMOUNT)

    assert result == DECLINE
    assert inner.keys == ["k"]


async def test_a_call_past_its_timeout_is_retried_like_a_processor_error() -> None:
    inner = ScriptedProvider(None, APPROVE)
    wrapper = ResilientProvider(inner, timeout_s=0.05, attempts=2, backoff_s=0)

    result = await wrapper.authorize("k", "t", AMOUNT)

    assert result == APPROVE


def test_tokenizing_keeps_brand_and_last4_only() -> None:
    card = ValidCard("4242424242424242", 12, 2030, "123", "Ada", CardBrand.VISA)

    on_file = ResilientProvider(ScriptedProvider()).tokenize(card)

    assert (on_file.brand, on_file.last4) == (CardBrand.VISA, "4242")
    assert "4242424242424242" not in repr(on_file)
