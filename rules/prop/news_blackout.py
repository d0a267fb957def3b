"""News blackout: no open or close around high-impact economic events.

An event of the kernel's economic calendar
(:mod:`brokerkernel.kernel.marketdata.calendar`) whose ``impact`` is in ``impacts``
(default ``["high"]``) blacks out every symbol whose base or quote currency is the
event's currency (from the instrument catalog; ``EURUSD`` → EUR and USD), plus the
symbols listed for that currency in ``currency_symbols`` (e.g. ``{"USD": ["US30",
"XAUUSD"]}`` for indices and metals), from ``minutes_before`` before the event to
``minutes_after`` after it (DOMAIN.md: "no open/close incl. SL/TP fills from N minutes
before to N after"). ``inclusive`` (default true): a trade exactly at a window edge is
inside it.

What happens to a trade in a window (:meth:`NewsBlackout.check_order`):

* an order the trader sends (open or close) is **refused** whatever ``on_violation``;
* a fill the trader did not send now (``OrderIntent.automatic``: SL, TP, stop-out, a
  pending order triggering) cannot be refused; ``on_violation`` decides:
  ``"refuse"`` lets it through (the firm only forbids active trading), ``"breach"``
  fails the phase (a ``breach`` result), ``"flag"`` flags it for review (a ``warn``
  result → ``risk.violation_flagged``).

Numbers: event_id, event_name, event_currency, event_date, window_start, window_end.
The rule watches no equity level and its ``evaluate`` always passes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from brokerkernel.kernel.descriptors import PluginContext, PropRuleSet
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.marketdata.calendar import IMPACTS, CalendarEvent
from brokerkernel.kernel.prop.rules import OrderIntent, RuleInput, RuleResult, Status
from brokerkernel.rules.prop.common import iso

NAME = "news_blackout"
VIOLATIONS = ("refuse", "breach", "flag")

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "minutes_before": {"type": "integer", "minimum": 0, "maximum": 1440, "default": 2},
        "minutes_after": {"type": "integer", "minimum": 0, "maximum": 1440, "default": 2},
        "impacts": {
            "type": "array",
            "items": {"enum": list(IMPACTS)},
            "minItems": 1,
            "uniqueItems": True,
            "default": ["high"],
        },
        "currency_symbols": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Z]{3}$"},
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "default": {},
            "description": "Extra symbols moved by a currency's events (indices, metals).",
        },
        "inclusive": {
            "type": "boolean",
            "default": True,
            "description": "true: a trade exactly at a window edge is inside the window.",
        },
        "on_violation": {
            "enum": list(VIOLATIONS),
            "default": "refuse",
            "description": "Trader orders in a window are always refused; for SL/TP, "
            "stop-out and pending fills: refuse = let through, breach = fail the phase, "
            "flag = risk.violation_flagged.",
        },
    },
}


class Calendar(Protocol):
    """What the rule needs of the economic calendar."""

    def events_between(
        self,
        currencies: Collection[str] | None,
        start: datetime,
        end: datetime,
        impacts: Collection[str] | None = None,
    ) -> list[CalendarEvent]: ...


#: symbol -> (base currency, quote currency), None for an unknown symbol.
CurrencyLookup = Callable[[str], tuple[str, str] | None]


class NewsBlackout:
    """A configured news blackout (see the module docstring)."""

    objective = False
    uses_day = False  # its levels do not read state.day: kept at a day reset

    def __init__(
        self,
        name: str,
        params: Mapping[str, Any],
        calendar: Calendar,
        currencies_of: CurrencyLookup,
    ) -> None:
        self.name = name
        self.minutes_before = int(params.get("minutes_before", 2))
        self.minutes_after = int(params.get("minutes_after", 2))
        self.before = timedelta(minutes=self.minutes_before)
        self.after = timedelta(minutes=self.minutes_after)
        self.impacts = tuple(params.get("impacts", ("high",)))
        self.inclusive = bool(params.get("inclusive", True))
        self.on_violation: str = params.get("on_violation", "refuse")
        self.extra: dict[str, set[str]] = {}
        for currency, symbols in params.get("currency_symbols", {}).items():
            for symbol in symbols:
                self.extra.setdefault(symbol, set()).add(currency)
        self.calendar = calendar
        self.currencies_of = currencies_of

    def currencies(self, symbol: str) -> set[str]:
        """The currencies whose events black out ``symbol``."""
        found = set(self.extra.get(symbol, ()))
        pair = self.currencies_of(symbol)
        if pair is not None:
            found.update(pair)
        return found

    def event_at(self, symbol: str, at: datetime) -> CalendarEvent | None:
        """The first event whose window contains ``at`` for ``symbol``, or None."""
        events = self.calendar.events_between(
            self.currencies(symbol), at - self.after, at + self.before, self.impacts
        )
        for event in events:
            if self.inclusive or (
                event.event_date - self.before < at < event.event_date + self.after
            ):
                return event
        return None

    def levels(self, state: RuleInput) -> list[Any]:
        return []

    def evaluate(self, state: RuleInput) -> RuleResult:
        return RuleResult(self.name, Status.PASS)

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        event = self.event_at(order.symbol, order.at)
        if event is None:
            return None
        if order.automatic:
            if self.on_violation == "refuse":
                return None
            status = Status.BREACH if self.on_violation == "breach" else Status.WARN
        else:
            status = Status.BREACH
        action = "close" if order.closing else "open"
        reason = (
            f"News blackout: no {action} on {order.symbol} from "
            f"{self.minutes_before} min before to {self.minutes_after} min after "
            f"{event.event_name} ({event.currency}, {iso(event.event_date)})"
        )
        numbers: dict[str, Decimal | int | str | None] = {
            "event_id": event.id,
            "event_name": event.event_name,
            "event_currency": event.currency,
            "event_date": iso(event.event_date),
            "window_start": iso(event.event_date - self.before),
            "window_end": iso(event.event_date + self.after),
        }
        return RuleResult(self.name, status, reason, numbers)

    def deadlines(self, state: RuleInput) -> list[datetime]:
        return []


class NewsBlackoutType:
    """Rule type ``news_blackout`` (params: :data:`PARAMS_SCHEMA`); needs the kernel's
    calendar (``context.kernel.calendar``) and instrument catalog (``kernel.terms``)."""

    def __init__(self, context: PluginContext) -> None:
        if context.kernel is None:
            raise RuntimeError("news_blackout needs the running kernel's economic calendar")
        self.kernel = context.kernel

    def _currencies_of(self, symbol: str) -> tuple[str, str] | None:
        terms = self.kernel.terms.instrument(symbol)
        return None if terms is None else (terms.base_currency, terms.quote_currency)

    def configure(self, name: str, params: Mapping[str, Any]) -> NewsBlackout:
        return NewsBlackout(name, params, self.kernel.calendar, self._currencies_of)


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [PropRuleSet(name=NAME, factory=NewsBlackoutType, config_schema=PARAMS_SCHEMA)]
