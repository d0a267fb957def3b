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
``<name>`` (the floor) and ``<name>.warn_<pct>`` per ``warn_at_pct``;
:meth:`DailyLoss.day_levels` gives them for many accounts at a day reset (the same
exact Decimal formula, no per-account rule input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, RuleInput, RuleResult
from brokerkernel.rules.prop.common import (
    Allowance,
    FloorSpec,
    NoOrderCheck,
    floor_params_schema,
    rule_set,
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

PARAMS_SCHEMA: dict[str, Any] = floor_params_schema(MODELS)


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
        day = state.day
        return self._floor(day.start_balance, day.start_equity, state.account.initial_balance)

    def _floor(
        self, start_balance: Decimal, start_equity: Decimal, initial: Decimal
    ) -> tuple[Decimal, Decimal]:
        model = self.model
        if model in ("balance_minus_initial_pct", "balance_pct"):
            reference = start_balance
        elif model == "equity_pct":
            reference = start_equity
        elif model == "fixed_initial_pct":
            reference = initial
        else:
            reference = max(start_balance, start_equity)
        allowance = self.allowance.of(initial if model.endswith("minus_initial_pct") else reference)
        return reference - allowance, allowance

    def levels(self, state: RuleInput) -> list[Level]:
        return self.spec.levels(*self.floor(state))

    def day_levels(
        self,
        start_balance: Sequence[Decimal],
        start_equity: Sequence[Decimal],
        initial: Sequence[Decimal],
    ) -> dict[str, list[Decimal]]:
        """The levels of a new day for many accounts (``DayLevels``): the floor and
        each warning, exact Decimal, equal to :meth:`levels` account by account."""
        floors: list[Decimal] = []
        warns: list[list[Decimal]] = [[] for _ in self.spec.warn_at_pct]
        warn_level = self.spec.warn_level
        pcts = list(enumerate(self.spec.warn_at_pct))
        floor_of = self._floor
        for balance, equity, start in zip(start_balance, start_equity, initial, strict=True):
            floor, allowance = floor_of(balance, equity, start)
            floors.append(floor)
            for index, pct in pcts:
                warns[index].append(warn_level(pct, floor, allowance))
        names = [level.name for level in self.spec.levels(Decimal(0), Decimal(0))]
        return dict(zip(names, [floors, *warns], strict=True))

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


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, DailyLoss, PARAMS_SCHEMA)]
