"""Resolving an instrument's terms for a group (catalog + group override, null inherits)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.descriptors import SymbolTerms
from brokerkernel.kernel.storage.models import GroupInstrument, Instrument

_DECIMAL_FIELDS = (
    "pip_size",
    "contract_size",
    "min_lot",
    "max_lot",
    "lot_step",
    "margin_rate",
    "spread_markup_pips",
)


def resolve_terms(instrument: Instrument, override: GroupInstrument | None) -> SymbolTerms:
    """Merge the catalog row with the group's override (a null override field inherits).

    Tradeability is the most restrictive of the broker-level value and the group's.
    """

    def pick(name: str, inherited: Any) -> Any:
        value = getattr(override, name, None) if override is not None else None
        return inherited if value is None else value

    levels = ("tradable", "close_only", "non_tradable")
    broker_level = instrument.tradeability or "tradable"
    if not instrument.is_enabled or not instrument.is_active:
        broker_level = "non_tradable"
    group_level = pick("tradeability", "tradable")
    tradeability = max(broker_level, group_level, key=levels.index)
    return SymbolTerms(
        symbol=instrument.symbol,
        calc_mode=instrument.calc_mode,
        digits=instrument.digits,
        pip_size=instrument.pip_size,
        contract_size=instrument.contract_size,
        min_lot=pick("min_lot", instrument.min_lot),
        max_lot=pick("max_lot", instrument.max_lot),
        lot_step=instrument.lot_step,
        margin_rate=pick("margin_rate", instrument.margin_rate),
        spread_markup_pips=pick("spread", Decimal(0)),
        stale_threshold_ms=instrument.stale_threshold_ms,
        base_currency=instrument.base_currency,
        quote_currency=instrument.quote_currency,
        profit_currency=instrument.profit_currency,
        tradeability=tradeability,
    )


async def load_terms(session: AsyncSession, group_id: str, symbol: str) -> SymbolTerms | None:
    """The group's terms for ``symbol``, or None when the symbol is not in the catalog."""
    row = (
        await session.execute(
            select(Instrument, GroupInstrument)
            .outerjoin(
                GroupInstrument,
                (GroupInstrument.symbol == Instrument.symbol)
                & (GroupInstrument.group_id == group_id),
            )
            .where(Instrument.symbol == symbol)
        )
    ).first()
    if row is None:
        return None
    return resolve_terms(row[0], row[1])


def terms_to_json(terms: SymbolTerms) -> dict[str, Any]:
    """Snapshot for ``Position.terms`` (decimals as exact strings)."""
    data: dict[str, Any] = {name: getattr(terms, name) for name in SymbolTerms.__dataclass_fields__}
    for name in _DECIMAL_FIELDS:
        data[name] = str(data[name])
    return data


def terms_from_json(data: dict[str, Any]) -> SymbolTerms:
    values = dict(data)
    for name in _DECIMAL_FIELDS:
        values[name] = Decimal(values[name])
    return SymbolTerms(**values)
