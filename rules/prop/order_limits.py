"""Order limits: max lots per order, max open positions, max exposure, required SL.

Checked before an order opens a position (:meth:`OrderLimits.check_order`); a
violation refuses the order with a clear reason (a ``breach`` result from
``check_order`` is a refusal, not a failed phase). A pending order triggering
(``OrderIntent.automatic``) cannot be refused: its violation is a ``warn`` (flagged
for review, ``risk.violation_flagged``), judged against the positions before its fill.
Closes (``closing``) are never refused. Each maximum is optional (null: none);
``inclusive`` (default true) says whether the maximum itself is allowed (volume <= max)
or must stay below it (<):

* ``max_lots_per_order`` — the order's volume in lots;
* ``max_open_positions`` — open positions after the order;
* ``max_exposure_usd`` — gross notional in USD of the open positions
  (``PositionView.notional_usd``) plus the order's (``OrderIntent.notional_usd``);
* ``require_stop_loss`` — an opening order without ``sl`` is refused.

Numbers of a refusal: the checked ``value`` and its ``limit``. ``evaluate`` passes
(limits are enforced on orders) and reports open_positions and exposure_usd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, OrderIntent, RuleInput, RuleResult, Status
from brokerkernel.rules.prop.common import AMOUNT, dec, rule_set

NAME = "order_limits"

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_lots_per_order": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None},
        "max_open_positions": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "max_exposure_usd": {**AMOUNT, "type": ["number", "null"], "default": None},
        "require_stop_loss": {"type": "boolean", "default": False},
        "inclusive": {
            "type": "boolean",
            "default": True,
            "description": "true: a value equal to the maximum is allowed (<=); false: <.",
        },
    },
}


def exposure_usd(state: RuleInput) -> Decimal:
    """Gross notional (USD) of the account's open positions."""
    return sum((p.notional_usd for p in state.account.positions), Decimal(0))


class OrderLimits:
    """A configured set of order limits (see the module docstring)."""

    objective = False
    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        lots = params.get("max_lots_per_order")
        exposure = params.get("max_exposure_usd")
        self.max_lots = None if lots is None else dec(lots)
        self.max_positions: int | None = params.get("max_open_positions")
        self.max_exposure = None if exposure is None else dec(exposure)
        self.require_sl = bool(params.get("require_stop_loss", False))
        self.inclusive = bool(params.get("inclusive", True))

    def _over(self, value: Decimal | int, limit: Decimal | int | None) -> bool:
        if limit is None:
            return False
        return value > limit if self.inclusive else value >= limit

    def _refuse(self, reason: str, value: Decimal | int, limit: Decimal | int) -> RuleResult:
        return RuleResult(self.name, Status.BREACH, reason, {"value": value, "limit": limit})

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        if order.closing:
            return None
        result = self._violation(state, order)
        if result is not None and order.automatic:
            return replace(result, status=Status.WARN)
        return result

    def _violation(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        if self.max_lots is not None and self._over(order.volume, self.max_lots):
            lots = format(order.volume.normalize(), "f")  # a stored volume has NUMERIC scale
            reason = f"Order volume {lots} lots exceeds the maximum of {self.max_lots}"
            return self._refuse(reason, order.volume, self.max_lots)
        positions = len(state.account.positions) + 1
        if self.max_positions is not None and self._over(positions, self.max_positions):
            reason = f"{positions} open positions would exceed the maximum of {self.max_positions}"
            return self._refuse(reason, positions, self.max_positions)
        exposure = exposure_usd(state) + order.notional_usd
        if self.max_exposure is not None and self._over(exposure, self.max_exposure):
            reason = (
                f"Exposure {exposure:.2f} USD would exceed the maximum of {self.max_exposure} USD"
            )
            return self._refuse(reason, exposure, self.max_exposure)
        if self.require_sl and order.sl is None:
            return RuleResult(self.name, Status.BREACH, "A stop-loss is required", {})
        return None

    def levels(self, state: RuleInput) -> list[Level]:
        return []

    def evaluate(self, state: RuleInput) -> RuleResult:
        numbers: dict[str, Decimal | int | str | None] = {
            "open_positions": len(state.account.positions),
            "exposure_usd": exposure_usd(state),
        }
        return RuleResult(self.name, Status.PASS, "", numbers)

    def deadlines(self, state: RuleInput) -> list[datetime]:
        return []


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, OrderLimits, PARAMS_SCHEMA)]
