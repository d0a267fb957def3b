"""Pre-trade free-margin check.

Rejects a deal with ``Insufficient margin`` when the margin it needs exceeds the
account's free margin (equity - margin used, in account currency). The required
margin comes from the kernel's calculation-mode formulas
(:mod:`brokerkernel.kernel.trading.margin`, DOMAIN.md). ``min_margin_level`` (percent,
optional) also refuses deals that would leave the margin level below it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PluginContext, PreTradeCheck, Rejection, RiskRule
from brokerkernel.kernel.hookspecs import hookimpl

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min_margin_level": {
            "type": ["number", "null"],
            "minimum": 0,
            "default": None,
            "description": "Refuse deals that leave margin level (equity / margin x 100) "
            "below this percent; null disables the check.",
        }
    },
}

INSUFFICIENT_MARGIN = "Insufficient margin"


class FreeMarginRule:
    def __init__(self, context: PluginContext) -> None:
        level = context.config.get("min_margin_level")
        self._min_level = None if level is None else Decimal(str(level))

    def check(self, order: PreTradeCheck) -> Rejection | None:
        free_margin = order.equity - order.margin_used
        if order.required_margin > free_margin:
            return Rejection(INSUFFICIENT_MARGIN)
        if self._min_level is not None:
            margin_after = order.margin_used + order.required_margin
            if margin_after and order.equity / margin_after * 100 < self._min_level:
                return Rejection(INSUFFICIENT_MARGIN)
        return None


@hookimpl
def broker_register_risk_rules() -> list[RiskRule]:
    return [RiskRule(name="margin", factory=FreeMarginRule)]
