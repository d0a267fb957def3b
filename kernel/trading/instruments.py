"""The instrument catalog and its broker-level configuration (seed section 15).

Functions work inside the caller's unit of work (they add to the session; the caller
commits, then reloads :class:`~brokerkernel.kernel.trading.terms.TermsCache`). Every
change records ``platform.config_changed``. Refusals raise
:class:`~brokerkernel.kernel.trading.service.TradingError` with the HTTP status: 404
unknown symbol, 409 symbol exists, 422 with every field error
(``{"loc": ["body", field], "msg": ..., "type": ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.models import Instrument, new_id
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.margin import SUPPORTED_MODES, TICK_MODES
from brokerkernel.kernel.trading.terms import record_config_change

CALC_MODES = tuple(sorted(SUPPORTED_MODES))
#: Swap units (DOMAIN.md): ``points`` of 10^-digits per lot per night, ``percent`` a
#: year on the position's value (rate/100/360 x price x contract x lots a night),
#: ``money`` in the account currency per lot per night.
SWAP_TYPES = ("points", "percent", "money")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: Broker-level tradeability; None (tradable) clears it (seed section 15).
BROKER_TRADEABILITY = ("close_only",)

#: Fields a new instrument must be given (the API's create schema requires them).
INSTRUMENT_REQUIRED = (
    "symbol",
    "category",
    "asset_class",
    "calc_mode",
    "base_currency",
    "quote_currency",
    "digits",
    "pip_size",
    "contract_size",
    "margin_rate",
)
#: Defaults of the optional fields of a new instrument.
INSTRUMENT_DEFAULTS: Mapping[str, Any] = {
    "display_name": None,  # the symbol
    "profit_currency": None,  # the quote currency
    "min_lot": Decimal("0.01"),
    "max_lot": Decimal("100"),
    "lot_step": Decimal("0.01"),
    "spread": Decimal(0),
    "stale_threshold_ms": 10_000,
    "is_active": True,
    "is_enabled": True,
    "tradeability": None,
    "provider": "none",
    "tick_size": None,
    "tick_price": None,
    "initial_margin": None,
    "swap_type": "points",
    "swap_long": Decimal(0),
    "swap_short": Decimal(0),
    "swap_triple_day": "wednesday",
}
DECIMAL_FIELDS = frozenset(
    {
        "pip_size",
        "contract_size",
        "min_lot",
        "max_lot",
        "lot_step",
        "margin_rate",
        "spread",
        "tick_size",
        "tick_price",
        "initial_margin",
        "swap_long",
        "swap_short",
    }
)


def field_error(field: str, msg: str, type_: str) -> dict[str, Any]:
    """One 422 item about body field ``field``."""
    return {"loc": ["body", field], "msg": msg, "type": type_}


def as_decimals(values: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """``values`` with the JSON integers of ``fields`` as Decimal (floats never occur:
    the API parses fractions as Decimal)."""
    return {
        k: Decimal(v) if k in fields and isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in values.items()
    }


def _multiple_of_point(value: Decimal, digits: int) -> bool:
    return value % Decimal(1).scaleb(-digits) == 0


def check_instrument(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rules across fields of a complete instrument row; returns the 422 items.

    ``min_lot`` <= ``max_lot``; ``pip_size`` and ``tick_size`` are multiples of the
    price point 10^-digits; CFDINDEX and FUTURES need ``tick_size`` and
    ``tick_price``, FUTURES also ``initial_margin`` (MT5 formulas, margin.py).
    """
    errors: list[dict[str, Any]] = []
    if values["min_lot"] > values["max_lot"]:
        errors.append(field_error("min_lot", "must not exceed max_lot", "lot_range"))
    digits = values["digits"]
    for name in ("pip_size", "tick_size"):
        value = values[name]
        if value is not None and not _multiple_of_point(value, digits):
            point = format(Decimal(1).scaleb(-digits), "f")
            errors.append(
                field_error(
                    name,
                    f"must be a multiple of the price point {point} (digits {digits})",
                    "price_point",
                )
            )
    mode = values["calc_mode"]
    needed: tuple[str, ...] = ("tick_size", "tick_price") if mode in TICK_MODES else ()
    if mode == "FUTURES":
        needed += ("initial_margin",)
    for name in needed:
        if values[name] is None:
            errors.append(field_error(name, f"required by calc_mode {mode}", "required"))
    return errors


def instrument_values(instrument: Instrument) -> dict[str, Any]:
    """The row's configurable columns (what :func:`check_instrument` reads)."""
    return {
        name: getattr(instrument, name) for name in (*INSTRUMENT_REQUIRED, *INSTRUMENT_DEFAULTS)
    }


async def create_instrument(
    session: AsyncSession, data: Mapping[str, Any], at: datetime
) -> Instrument:
    """Add an instrument to the catalog; 409 ``Symbol already exists``, 422 rules."""
    values = {**INSTRUMENT_DEFAULTS, **as_decimals(data, DECIMAL_FIELDS)}
    values["display_name"] = values["display_name"] or values["symbol"]
    values["profit_currency"] = values["profit_currency"] or values["quote_currency"]
    if await session.scalar(select(Instrument.id).where(Instrument.symbol == values["symbol"])):
        raise TradingError(409, "Symbol already exists")
    errors = check_instrument(values)
    if errors:
        raise TradingError(422, errors)
    instrument = Instrument(id=new_id(), created_at=at, **values)
    session.add(instrument)
    record_config_change(
        session, entity="instrument", key=instrument.symbol, action="created", at=at
    )
    return instrument


async def update_instrument(
    session: AsyncSession, symbol: str, changes: Mapping[str, Any], at: datetime
) -> Instrument:
    """Change an instrument's configuration (row-locked); 404 unknown, 422 rules.

    Open positions keep the terms they snapshotted at open.
    """
    instrument = await session.scalar(
        select(Instrument).where(Instrument.symbol == symbol).with_for_update()
    )
    if instrument is None:
        raise TradingError(404, f"Instrument {symbol} not found")
    values = {**instrument_values(instrument), **as_decimals(changes, DECIMAL_FIELDS)}
    errors = check_instrument(values)
    if errors:
        raise TradingError(422, errors)
    for name in changes:
        setattr(instrument, name, values[name])
    record_config_change(session, entity="instrument", key=symbol, action="updated", at=at)
    return instrument
