"""Maximum loss limit: equity must stay above the phase's max-loss floor.

Models (DOMAIN.md, "Max loss"; ``A`` the allowance: ``percent`` of the initial
balance or ``amount``):

* ``static`` — ``initial - A`` (FTMO 2-step 10%: equity >= 90,000 on 100k);
* ``trailing_eod_balance`` — ``History.peak_eod_balance - A``, never decreasing,
  optionally locked at ``initial + lock_offset`` (Topstep 50K / 2,000, lock 0: 48,000
  → 48,500 → stays 48,500 → 50,000 locked);
* ``trailing_intraday_equity`` — ``peak equity - A`` with the peak including
  unrealised profit, never decreasing, optional lock (Apex style). The rule declares
  risk-engine ``TRAILING_FLOOR`` levels (offset ``A``, lock ``initial + lock_offset``;
  warnings likewise): the engine raises the account's equity peak on every tick and
  the floor follows it with no crossing per new high; the challenges plugin seeds the
  engine's peak from ``History.peak_equity`` and refreshes ``History.peak_equity``
  from the engine's peak before :meth:`MaxLoss.evaluate`, which stays exact on it;
* ``ftmo_one_step`` — ``max(highest midnight balance, initial) - A``, never
  decreasing (FTMO 1-step, A = 10% of initial).

Never-decreasing floors start from ``History.max_loss_floor``: the ``floor`` number of
every result is the floor now, which the challenges plugin stores back into
``History.max_loss_floor``. Levels: ``<name>`` and ``<name>.warn_<pct>`` (percent of
``A`` used below ``floor + A``), trailing floors for the intraday model.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, RuleInput, RuleResult
from brokerkernel.rules.prop.common import (
    Allowance,
    FloorSpec,
    NoOrderCheck,
    dec,
    floor_params_schema,
    rule_set,
)

NAME = "max_loss"
MODELS = ("static", "trailing_eod_balance", "trailing_intraday_equity", "ftmo_one_step")
TRAILING = frozenset(MODELS[1:])

PARAMS_SCHEMA: dict[str, Any] = floor_params_schema(
    MODELS,
    {
        "lock_offset": {
            "type": ["number", "null"],
            "default": None,
            "description": "Trailing models: the floor stops rising at initial + "
            "lock_offset (0 = Topstep's lock at the starting balance); null: no lock.",
        },
    },
)


class MaxLoss(NoOrderCheck):
    """A configured max-loss limit (see the module docstring)."""

    objective = False
    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.model: str = params["model"]
        self.allowance = Allowance.from_params(params)
        offset = params.get("lock_offset")
        self.lock_offset = None if offset is None else dec(offset)
        self.spec = FloorSpec.from_params(
            name,
            params,
            breach_reason="Max loss limit: equity {equity} reached the max-loss floor {floor}",
            warn_reason="Max loss: {warn_pct}% of the allowance used (floor {floor})",
        )

    def _peak(self, state: RuleInput) -> Decimal:
        history, initial = state.history, state.account.initial_balance
        if self.model == "trailing_intraday_equity":
            return max(history.peak_equity, state.account.equity, initial)
        if self.model == "static":
            return initial
        return max(history.peak_eod_balance, initial)

    def _lock(self, state: RuleInput) -> Decimal | None:
        if self.lock_offset is None or self.model not in (
            "trailing_eod_balance",
            "trailing_intraday_equity",
        ):
            return None
        return state.account.initial_balance + self.lock_offset

    def floor(self, state: RuleInput) -> tuple[Decimal, Decimal]:
        """``(floor, allowance)`` now, account currency."""
        allowance = self.allowance.of(state.account.initial_balance)
        floor = self._peak(state) - allowance
        if self.model in TRAILING:
            previous = state.history.max_loss_floor
            if previous is not None:
                floor = max(floor, previous)
            lock = self._lock(state)
            if lock is not None:
                floor = min(floor, lock)
        return floor, allowance

    def levels(self, state: RuleInput) -> list[Level]:
        floor, allowance = self.floor(state)
        if self.model == "trailing_intraday_equity":
            return self.spec.trailing_levels(allowance, self._lock(state))
        return self.spec.levels(floor, allowance)

    def evaluate(self, state: RuleInput) -> RuleResult:
        floor, allowance = self.floor(state)
        lock = self._lock(state)
        return self.spec.result(
            state.account.equity,
            floor,
            allowance,
            {
                "model": self.model,
                "peak": self._peak(state),
                "lock_level": lock,
                "locked": int(lock is not None and floor == lock),
            },
        )


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, MaxLoss, PARAMS_SCHEMA)]
