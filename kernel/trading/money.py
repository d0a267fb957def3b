"""Decimal money helpers: currency minor units and rounding.

Amounts in an account's currency are rounded half-up to the currency's minor unit
(ISO 4217 exponent; crypto at 8 places), as MT5 rounds deal profit to account digits.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

# ISO 4217 exponents that differ from 2, plus crypto units.
_MINOR_UNITS = {
    "JPY": 0,
    "KRW": 0,
    "HUF": 2,
    "CLP": 0,
    "VND": 0,
    "KWD": 3,
    "BHD": 3,
    "BTC": 8,
    "ETH": 8,
    "USDT": 6,
}


def minor_units(currency: str) -> int:
    """Decimal places of ``currency`` (2 unless listed)."""
    return _MINOR_UNITS.get(currency, 2)


@lru_cache(maxsize=256)
def quantum(currency: str) -> Decimal:
    """``currency``'s minor unit as a Decimal (``0.01`` for USD); cached: every
    rounding of money takes it."""
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded half-up to ``currency``'s minor unit."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def has_valid_scale(amount: Decimal, currency: str) -> bool:
    """True when ``amount`` has no more decimals than ``currency`` allows."""
    exponent = amount.normalize().as_tuple().exponent
    return isinstance(exponent, int) and -exponent <= minor_units(currency)


def to_minor(amount: Decimal, currency: str) -> int:
    """``amount`` in the currency's minor units (cents), as payment providers take it;
    ValueError when it has more decimals than the currency allows."""
    if not has_valid_scale(amount, currency):
        raise ValueError(f"{amount} has more decimals than {currency} allows")
    return int(amount.scaleb(minor_units(currency)))


def from_minor(units: int, currency: str) -> Decimal:
    """An amount in minor units (cents) as a Decimal of ``currency``."""
    return Decimal(units).scaleb(-minor_units(currency))
