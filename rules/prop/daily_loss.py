"""Daily loss limit: equity must stay above a floor fixed at each day reset.

The floor models (DOMAIN.md, "Daily loss"; ``p`` the ``percent``, SB / SE the balance /
equity at the day reset, from :class:`~brokerkernel.kernel.prop.rules.DaySnapshot`):

=========================================  =======================================
``balance_minus_initial_pct`` (FTMO)       SB - p x initial
``balance_pct`` (Alpha Capital)            SB x (1 - p)
``max_balance_equity_pct`` (The5ers)       max(SB, SE) x (1 - p)
``max_balance_equity_minus_initial_pct``   max(SB, SE) - p x initial
``equity_pct`` (Fintokei)                  SE x (1 - p)
``fixed_initial_pct``                      initial x (1 - p), not carried over
=========================================  =======================================

With ``amount`` instead of ``percent`` every model is ``reference - amount`` (the
reference being SB, max(SB, SE), SE or initial as above). Worked example (DOMAIN.md):
initial 100,000, SB 102,000, SE 101,500, 5%: FTMO 97,000; The5ers 96,900; Alpha
96,900. ``inclusive`` says whether equity equal to the floor breaches. Levels:
``<name>`` (the floor) and ``<name>.warn_<pct>`` per ``warn_at_pct``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PluginContext, PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, RuleInput, RuleResult
from brokerkernel.rules.prop.common import (
    ALLOWANCE_ONE_OF,
    ALLOWANCE_PROPERTIES,
    INCLUSIVE_FLOOR,
    WARN_AT_PCT,
    Allowance,
    FloorSpec,
    NoOrderCheck,
)

NAME = "daily_loss"
MODELS = (
    "balance_minus_initial_pct",
    "balance_pct",
    "max_balance_equity_pct",
    "max_balance_equity_minus_initial_pct",
    "equity_pct",
    "fixed_initial_pct",
)

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model"],
    "properties": {
        "model": {"enum": list(MODELS), "description": "Floor model (DOMAIN.md)."},
        **ALLOWANCE_PROPERTIES,
        "inclusive": INCLUSIVE_FLOOR,
        "warn_at_pct": WARN_AT_PCT,
    },
    "oneOf": ALLOWANCE_ONE_OF,
}


class DailyLoss(NoOrderCheck):
    """A configured daily-loss limit (see the module docstring)."""

    objective = False

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.model: str = params["model"]
        self.allowance = Allowance.from_params(params)
        self.spec = FloorSpec.from_params(
            name,
            params,
            breach_reason="Daily loss limit: equity {equity} reached the daily floor {floor}",
            warn_reason="Daily loss: {warn_pct}% of the allowance used (floor {floor})",
        )

    def floor(self, state: RuleInput) -> tuple[Decimal, Decimal]:
        """``(floor, allowance)`` of the current day, account currency."""
        initial = state.account.initial_balance
        day = state.day
        reference = {
            "balance_minus_initial_pct": day.start_balance,
            "balance_pct": day.start_balance,
            "max_balance_equity_pct": max(day.start_balance, day.start_equity),
            "max_balance_equity_minus_initial_pct": max(day.start_balance, day.start_equity),
            "equity_pct": day.start_equity,
            "fixed_initial_pct": initial,
        }[self.model]
        base = initial if self.model.endswith("minus_initial_pct") else reference
        allowance = self.allowance.of(base)
        return reference - allowance, allowance

    def levels(self, state: RuleInput) -> list[Level]:
        return self.spec.levels(*self.floor(state))

    def evaluate(self, state: RuleInput) -> RuleResult:
        floor, allowance = self.floor(state)
        return self.spec.result(
            state.account.equity,
            floor,
            allowance,
            {
                "model": self.model,
                "day": state.day.day.isoformat(),
                "start_balance": state.day.start_balance,
                "start_equity": state.day.start_equity,
            },
        )


class DailyLossType:
    """Rule type ``daily_loss`` (params: :data:`PARAMS_SCHEMA`)."""

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    def configure(self, name: str, params: Mapping[str, Any]) -> DailyLoss:
        return DailyLoss(name, params)


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [PropRuleSet(name=NAME, factory=DailyLossType, config_schema=PARAMS_SCHEMA)]
