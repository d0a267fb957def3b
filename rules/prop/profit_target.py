"""Profit target of a phase (an objective).

``percent`` of the initial balance or ``amount`` (account currency), measured as
(DOMAIN.md, "Profit target"):

* ``basis: "balance"`` — closed balance - initial (FTMO). With ``require_flat`` (the
  default) the target only counts with no open position: met on balance with
  positions open → ``pending`` ("close all positions"). No per-tick level: the balance
  changes only on fills, after which the rule is evaluated.
* ``basis: "equity"`` — equity - initial, watched per tick through a CEILING level
  named ``<name>`` at ``initial + target``.

``inclusive`` (default true): reaching the target exactly meets it (>=); false: it
must be exceeded (>). Numbers: target (money), target_level (initial + target),
value (profit on the basis), progress_pct, open_positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, LevelKind, RuleInput, RuleResult, Status
from brokerkernel.rules.prop.common import (
    ALLOWANCE_ONE_OF,
    AMOUNT,
    HUNDRED,
    PCT_PLACES,
    PERCENT,
    Allowance,
    NoOrderCheck,
    rule_set,
)

NAME = "profit_target"

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "percent": {**PERCENT, "description": "Target in percent of the initial balance."},
        "amount": {**AMOUNT, "description": "Target in the account currency."},
        "basis": {"enum": ["balance", "equity"], "default": "balance"},
        "require_flat": {
            "type": "boolean",
            "default": True,
            "description": "basis balance: the target counts only with no open position.",
        },
        "inclusive": {
            "type": "boolean",
            "default": True,
            "description": "true: reaching the target exactly meets it (>=); false: >.",
        },
    },
    "oneOf": ALLOWANCE_ONE_OF,
}


class ProfitTarget(NoOrderCheck):
    """A configured profit target (see the module docstring)."""

    objective = True
    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.target = Allowance.from_params(params)
        self.basis: str = params.get("basis", "balance")
        self.require_flat = bool(params.get("require_flat", True))
        self.inclusive = bool(params.get("inclusive", True))

    def levels(self, state: RuleInput) -> list[Level]:
        if self.basis != "equity":
            return []
        initial = state.account.initial_balance
        level = initial + self.target.of(initial)
        return [Level(self.name, level, LevelKind.CEILING, self.inclusive)]

    def evaluate(self, state: RuleInput) -> RuleResult:
        account = state.account
        target = self.target.of(account.initial_balance)
        reached = account.equity if self.basis == "equity" else account.balance
        value = reached - account.initial_balance
        numbers: dict[str, Decimal | int | str | None] = {
            "target": target,
            "target_level": account.initial_balance + target,
            "value": value,
            "progress_pct": (max(value, Decimal(0)) * HUNDRED / target).quantize(PCT_PLACES),
            "open_positions": len(account.positions),
        }
        met = value >= target if self.inclusive else value > target
        if not met:
            return RuleResult(self.name, Status.PENDING, "Profit target not reached", numbers)
        if self.basis == "balance" and self.require_flat and account.positions:
            return RuleResult(
                self.name,
                Status.PENDING,
                "Profit target reached on balance; close all positions to complete it",
                numbers,
            )
        return RuleResult(self.name, Status.PASS, "", numbers)


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, ProfitTarget, PARAMS_SCHEMA)]
