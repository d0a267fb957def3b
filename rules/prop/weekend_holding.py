"""Weekend holding ban: no position may be open over the weekend.

The weekend runs from Friday ``close_time`` to Sunday ``open_time`` (local times in
``timezone``, DST-correct; defaults 17:00 to 17:00 ``America/New_York``, the forex
week). The window is half-open ``[Friday close, Sunday open)``: a position still open
at the Friday close instant is a breach (DOMAIN.md: "positions open at the configured
Friday close"). :meth:`deadlines` returns the next Friday close (now included), so the
challenges plugin evaluates the rule exactly then, with no tick needed. Numbers:
friday_close, sunday_open (ISO 8601 UTC) and open_positions. ``configure`` raises
ValueError for an unknown ``timezone``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from brokerkernel.kernel.descriptors import PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.prop.days import parse_reset
from brokerkernel.kernel.prop.rules import Level, OrderIntent, RuleInput, RuleResult, Status
from brokerkernel.rules.prop.common import HHMM, iso, rule_set

NAME = "weekend_holding"
FRIDAY = 4

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "close_time": {**HHMM, "default": "17:00", "description": "Friday close, HH:MM."},
        "open_time": {**HHMM, "default": "17:00", "description": "Sunday open, HH:MM."},
        "timezone": {"type": "string", "minLength": 1, "default": "America/New_York"},
    },
}


class WeekendHolding:
    """A configured weekend holding ban (see the module docstring)."""

    objective = False
    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.close = parse_reset(params.get("close_time", "17:00"))
        self.open = parse_reset(params.get("open_time", "17:00"))
        zone = params.get("timezone", "America/New_York")
        try:
            self.zone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown time zone {zone!r}") from exc

    def _close_on(self, friday: date) -> datetime:
        return datetime.combine(friday, self.close, self.zone).astimezone(UTC)

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The latest weekend window starting at or before ``now``: (close, open) UTC."""
        local = now.astimezone(self.zone).date()
        friday = local - timedelta(days=(local.weekday() - FRIDAY) % 7)
        if self._close_on(friday) > now:
            friday -= timedelta(days=7)
        sunday_open = datetime.combine(friday + timedelta(days=2), self.open, self.zone)
        return self._close_on(friday), sunday_open.astimezone(UTC)

    def next_close(self, now: datetime) -> datetime:
        """The first Friday close at or after ``now`` (UTC)."""
        local = now.astimezone(self.zone).date()
        friday = local + timedelta(days=(FRIDAY - local.weekday()) % 7)
        close = self._close_on(friday)
        return close if close >= now else self._close_on(friday + timedelta(days=7))

    def levels(self, state: RuleInput) -> list[Level]:
        return []

    def evaluate(self, state: RuleInput) -> RuleResult:
        now = state.account.now
        close, reopen = self.window(now)
        open_positions = len(state.account.positions)
        numbers: dict[str, Decimal | int | str | None] = {
            "friday_close": iso(close),
            "sunday_open": iso(reopen),
            "open_positions": open_positions,
        }
        if open_positions and close <= now < reopen:
            reason = (
                f"{open_positions} position(s) held over the weekend (Friday close {iso(close)})"
            )
            return RuleResult(self.name, Status.BREACH, reason, numbers)
        return RuleResult(self.name, Status.PASS, "", numbers)

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        return None

    def deadlines(self, state: RuleInput) -> list[datetime]:
        return [self.next_close(state.account.now)]


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [rule_set(NAME, WeekendHolding, PARAMS_SCHEMA)]
