"""Consistency (an objective): the best day's profit is at most X% of the total profit.

``best_day`` = the largest closed profit of one trading day
(``History.daily_profit``), ``total`` = the sum over the phase's days (loss days
included). The objective is met when ``best_day <= max_best_day_pct% x total``
(``inclusive: true``, FTMO 50%: equality passes) or ``<`` (``inclusive: false``,
Topstep 40%: equality fails) — DOMAIN.md, "Consistency". ``pending`` while there is
no total profit or the share is too high (trading on spreads the profit). Numbers:
best_day, best_day_date, total, share_pct (best_day / total x 100, 2 places),
limit_pct.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, RuleInput, RuleResult, Status
from brokerkernel.rules.prop.common import HUNDRED, PCT_PLACES, PERCENT, NoOrderCheck, dec, rule_set

NAME = "consistency"

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["max_best_day_pct"],
    "properties": {
        "max_best_day_pct": {**PERCENT, "description": "X: best day <= X% of total profit."},
        "inclusive": {
            "type": "boolean",
            "default": True,
            "description": "true: a best day of exactly X% passes (FTMO); false: it fails "
            "(Topstep).",
        },
    },
}


class Consistency(NoOrderCheck):
    """A configured consistency objective (see the module docstring)."""

    objective = True
    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.limit_pct = dec(params["max_best_day_pct"])
        self.inclusive = bool(params.get("inclusive", True))

    def levels(self, state: RuleInput) -> list[Level]:
        return []

    def evaluate(self, state: RuleInput) -> RuleResult:
        profits = state.history.daily_profit
        total = sum(profits.values(), Decimal(0))
        best_date = max(profits, key=lambda d: profits[d]) if profits else None
        best = profits[best_date] if best_date is not None else Decimal(0)
        numbers: dict[str, Decimal | int | str | None] = {
            "best_day": best,
            "best_day_date": None if best_date is None else best_date.isoformat(),
            "total": total,
            "share_pct": (best * HUNDRED / total).quantize(PCT_PLACES) if total > 0 else None,
            "limit_pct": self.limit_pct,
        }
        if total <= 0:
            return RuleResult(self.name, Status.PENDING, "No total profit yet", numbers)
        allowed = self.limit_pct * total
        share = best * HUNDRED
        if share <= allowed if self.inclusive else share < allowed:
            return RuleResult(self.name, Status.PASS, "", numbers)
        reason = (
            f"Best day {best} is {numbers['share_pct']}% of the total profit {total} "
            f"(limit {self.limit_pct}%)"
        )
        return RuleResult(self.name, Status.PENDING, reason, numbers)


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, Consistency, PARAMS_SCHEMA)]
