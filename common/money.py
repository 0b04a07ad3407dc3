"""Money: integer minor units in one ISO 4217 currency, so sums, totals and refunds are exact."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import FailedPrecondition, InvalidArgument
from common.reasons import Reason

# Amounts travel as JSON numbers (CONTRACT.md): keep them exact in a double.
MAX_AMOUNT = 2**53 - 1

# ISO 4217 active codes (2024 list). No maintained package for it is installed (pycountry is
# not a dependency); the list changes a few times a decade.
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK
    MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
    PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG
    XAU XBA XBB XBC XBD XCD XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG ZWL
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())


@dataclass(frozen=True)
class Money:
    """An amount in minor units (cents for USD) and its currency; no floats, ever."""

    amount: int
    currency: str

    @classmethod
    def parse(cls, amount: int, currency: str, *, field: str) -> Money:
        """A caller's amount, checked: whole, not negative, not too large, a known currency.

        ``field`` names the request field (``price``, ``amount``) so the error points at it.
        """
        if amount < 0:
            raise InvalidArgument(f"{field}.amount must not be negative", field=f"{field}.amount")
        if amount > MAX_AMOUNT:
            raise InvalidArgument(f"{field}.amount is too large", field=f"{field}.amount")
        if currency not in ISO_4217:
            raise InvalidArgument(
                f"{field}.currency must be an ISO 4217 code in upper case, e.g. USD",
                field=f"{field}.currency",
            )
        return cls(amount, currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.amount * quantity, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise FailedPrecondition(
                f"cannot combine {self.currency} and {other.currency} amounts",
                reason=Reason.CURRENCY_MISMATCH,
            )
