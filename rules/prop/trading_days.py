"""Trading days: a minimum (objective), a maximum trading period and inactivity (limits).

* ``min_trading_days`` — days (in the plan's timezone, from
  :mod:`brokerkernel.kernel.prop.days`) on which a position was **opened**; a trade
  held over several days counts once (DOMAIN.md). ``pending`` until reached.
* ``max_trading_period_days`` — the phase must pass within this many calendar days of
  ``phase_started_at``: the period ends at the same local wall time N days later (plan
  timezone, DST-correct); from that instant on the rule is ``breach`` (the challenges
  plugin advances a passed phase before, so a breach means it expired unpassed).
* ``inactivity_days`` — no open or close for N calendar days (from the last trade, or
  the phase start without one) → ``breach`` from that instant on.

Periods are half-open: at exactly the deadline the period is over. :meth:`deadlines`
returns both deadlines so the plugin evaluates the rule then without a tick. The rule
is an objective when ``min_trading_days`` > 0; a ``breach`` of either limit fails the
phase regardless. Numbers: trading_days, min_trading_days, period_ends_at,
inactive_since, inactivity_deadline (ISO 8601 UTC strings or None).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.rules import Level, OrderIntent, RuleInput, RuleResult, Status
from brokerkernel.rules.prop.common import iso, rule_set

NAME = "trading_days"

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min_trading_days": {"type": "integer", "minimum": 0, "default": 0},
        "max_trading_period_days": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "inactivity_days": {"type": ["integer", "null"], "minimum": 1, "default": None},
    },
}


def calendar_days_later(start: datetime, days: int, state: RuleInput) -> datetime:
    """``start`` + ``days`` calendar days at the same local wall time in the plan zone."""
    local = start.astimezone(state.account.timezone)
    return (local + timedelta(days=days)).astimezone(UTC)


class TradingDays:
    """A configured trading-days rule (see the module docstring)."""

    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.min_days = int(params.get("min_trading_days", 0))
        self.max_period: int | None = params.get("max_trading_period_days")
        self.inactivity: int | None = params.get("inactivity_days")
        self.objective = self.min_days > 0

    def _period_end(self, state: RuleInput) -> datetime | None:
        if self.max_period is None:
            return None
        return calendar_days_later(state.account.phase_started_at, self.max_period, state)

    def _inactive_since(self, state: RuleInput) -> datetime:
        return state.history.last_trade_at or state.account.phase_started_at

    def _inactivity_deadline(self, state: RuleInput) -> datetime | None:
        if self.inactivity is None:
            return None
        return calendar_days_later(self._inactive_since(state), self.inactivity, state)

    def levels(self, state: RuleInput) -> list[Level]:
        return []

    def evaluate(self, state: RuleInput) -> RuleResult:
        now = state.account.now
        period_end = self._period_end(state)
        inactivity_deadline = self._inactivity_deadline(state)
        days = len(state.history.trading_days)
        numbers: dict[str, Decimal | int | str | None] = {
            "trading_days": days,
            "min_trading_days": self.min_days,
            "period_ends_at": iso(period_end),
            "inactive_since": iso(self._inactive_since(state)),
            "inactivity_deadline": iso(inactivity_deadline),
        }
        if period_end is not None and now >= period_end:
            reason = f"Maximum trading period of {self.max_period} days ended"
            return RuleResult(self.name, Status.BREACH, reason, numbers)
        if inactivity_deadline is not None and now >= inactivity_deadline:
            reason = f"No trade for {self.inactivity} days"
            return RuleResult(self.name, Status.BREACH, reason, numbers)
        if days < self.min_days:
            reason = f"{days} of {self.min_days} minimum trading days"
            return RuleResult(self.name, Status.PENDING, reason, numbers)
        return RuleResult(self.name, Status.PASS, "", numbers)

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        return None

    def deadlines(self, state: RuleInput) -> list[datetime]:
        found = (self._period_end(state), self._inactivity_deadline(state))
        return sorted(d for d in found if d is not None)


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, TradingDays, PARAMS_SCHEMA)]
