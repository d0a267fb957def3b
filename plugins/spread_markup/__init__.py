"""Group spread markup: widens the raw quote by the group's ``spread`` override.

The group instrument override ``spread`` is in pips (seed section 16) and is
converted to a price delta at fill time with the instrument's ``pip_size``. The
markup is split evenly: the bid moves down and the ask up by half of it each, so
the spread a group sees is the raw spread plus the markup. A split that is not a
whole number of price points is rounded outward to the instrument's digits.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PluginContext, QuoteAdjuster, SymbolTerms
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.pricing import Quote

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {},
}


class SpreadMarkup:
    def __init__(self, context: PluginContext) -> None:
        self._context = context

    def adjust(self, quote: Quote, terms: SymbolTerms) -> Quote:
        if not terms.spread_markup_pips:
            return quote
        half = terms.spread_markup_pips * terms.pip_size / 2
        point = Decimal(1).scaleb(-terms.digits)
        return replace(
            quote,
            bid=(quote.bid - half).quantize(point, rounding=ROUND_FLOOR),
            ask=(quote.ask + half).quantize(point, rounding=ROUND_CEILING),
        )


@hookimpl
def broker_register_quote_adjusters() -> list[QuoteAdjuster]:
    return [QuoteAdjuster(name="group_spread_markup", factory=SpreadMarkup, order=100)]
