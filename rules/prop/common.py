"""What the built-in prop rules share: allowance parameters, warn levels, verdicts.

Not a plugin itself; each rule type is its own plugin module in this package
(``daily_loss``, ``max_loss``, ``profit_target``, ``trading_days``, ``consistency``,
``order_limits``, ``weekend_holding``, ``news_blackout``).

A **loss allowance** is ``percent`` of the phase's initial balance or an absolute
``amount`` in the account currency (exactly one of them). A floor rule turns it into
``floor = reference - allowance`` (the reference depends on the model: start-of-day
balance, highest end-of-day balance, initial balance, ...). Warnings are declared as
percentages of the allowance **used**: ``warn_at_pct: [50, 80]`` gives equity floors
``reference - 0.5 x allowance`` and ``reference - 0.8 x allowance`` named
``<rule>.warn_50`` and ``<rule>.warn_80`` (DOMAIN.md / ZT4 ``drawdown.warning``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PluginContext, PropRuleSet
from brokerkernel.kernel.prop.rules import (
    Level,
    LevelKind,
    OrderIntent,
    PropRule,
    RuleInput,
    RuleResult,
    Status,
)

HUNDRED = Decimal(100)
#: Percent figures in results (used_pct, share_pct, progress_pct) to 2 places.
PCT_PLACES = Decimal("0.01")

HHMM: dict[str, Any] = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
PERCENT: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0, "maximum": 100}
AMOUNT: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}

#: ``percent`` xor ``amount`` (JSON Schema fragment merged into a rule's schema).
ALLOWANCE_PROPERTIES: dict[str, Any] = {
    "percent": {**PERCENT, "description": "Allowance in percent of the initial balance."},
    "amount": {**AMOUNT, "description": "Allowance in the account currency."},
}
ALLOWANCE_ONE_OF: list[dict[str, Any]] = [
    {"required": ["percent"], "not": {"required": ["amount"]}},
    {"required": ["amount"], "not": {"required": ["percent"]}},
]
INCLUSIVE_FLOOR: dict[str, Any] = {
    "type": "boolean",
    "default": False,
    "description": "true: equity equal to the floor breaches (equity <= floor); "
    "false: only equity below it (equity < floor).",
}
WARN_AT_PCT: dict[str, Any] = {
    "type": "array",
    "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
    "uniqueItems": True,
    "default": [],
    "description": "Warn when this percent of the allowance is used (e.g. [50, 80]).",
}


def floor_params_schema(
    models: Sequence[str], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The params schema of a loss-floor rule: ``model`` (one of ``models``), the
    allowance (``percent`` xor ``amount``), ``inclusive``, ``warn_at_pct`` and the
    rule's ``extra`` properties; nothing else."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "model": {"enum": list(models), "description": "Floor model (DOMAIN.md)."},
            **ALLOWANCE_PROPERTIES,
            "inclusive": INCLUSIVE_FLOOR,
            "warn_at_pct": WARN_AT_PCT,
            **(extra or {}),
        },
        "oneOf": ALLOWANCE_ONE_OF,
    }


def dec(value: Any) -> Decimal:
    """A JSON number (int, float from TOML, or Decimal) as an exact Decimal."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def pct_text(value: Decimal) -> str:
    """``50`` for 50, ``12.5`` for 12.5: the suffix of a warn level name."""
    return format(value.normalize(), "f")


@dataclass(frozen=True, slots=True)
class Allowance:
    """``percent`` of the initial balance or an absolute ``amount`` (account currency)."""

    percent: Decimal | None
    amount: Decimal | None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Allowance:
        """From validated params (exactly one of ``percent`` and ``amount``)."""
        percent = params.get("percent")
        amount = params.get("amount")
        return cls(
            None if percent is None else dec(percent), None if amount is None else dec(amount)
        )

    def of(self, base: Decimal) -> Decimal:
        """The allowance in money: ``percent / 100 x base``, or ``amount``."""
        if self.amount is not None:
            return self.amount
        assert self.percent is not None
        return self.percent * base / HUNDRED


@dataclass(frozen=True, slots=True)
class FloorSpec:
    """How a floor rule reports: its name, ``inclusive``, warn percents of the
    allowance used, and the breach / warn reasons (``{floor}`` etc. are filled in)."""

    name: str
    inclusive: bool
    warn_at_pct: tuple[Decimal, ...]
    breach_reason: str
    warn_reason: str

    @classmethod
    def from_params(
        cls, name: str, params: Mapping[str, Any], breach_reason: str, warn_reason: str
    ) -> FloorSpec:
        return cls(
            name=name,
            inclusive=bool(params.get("inclusive", False)),
            warn_at_pct=tuple(sorted(dec(p) for p in params.get("warn_at_pct", ()))),
            breach_reason=breach_reason,
            warn_reason=warn_reason,
        )

    def warn_level(self, pct: Decimal, floor: Decimal, allowance: Decimal) -> Decimal:
        """Equity at which ``pct`` percent of the allowance is used."""
        return floor + allowance - allowance * pct / HUNDRED

    def levels(self, floor: Decimal, allowance: Decimal) -> list[Level]:
        """The floor (``<name>``) and one inclusive floor per warn percent
        (``<name>.warn_<pct>``)."""
        levels = [Level(self.name, floor, LevelKind.FLOOR, self.inclusive)]
        levels += [
            Level(
                f"{self.name}.warn_{pct_text(pct)}",
                self.warn_level(pct, floor, allowance),
                LevelKind.FLOOR,
                True,
            )
            for pct in self.warn_at_pct
        ]
        return levels

    def trailing_levels(self, allowance: Decimal, lock: Decimal | None) -> list[Level]:
        """The same levels trailing the account's equity peak (risk-engine
        ``TRAILING_FLOOR``: ``min(peak - offset, lock)``): the floor ``peak - allowance``
        locked at ``lock``, and per warn percent ``peak - pct% x allowance`` locked at
        :meth:`warn_level` of ``lock`` — equal to :meth:`levels` of ``floor =
        min(peak - allowance, lock)`` at every peak."""
        levels = [Level(self.name, allowance, LevelKind.TRAILING_FLOOR, self.inclusive, lock)]
        levels += [
            Level(
                f"{self.name}.warn_{pct_text(pct)}",
                allowance * pct / HUNDRED,
                LevelKind.TRAILING_FLOOR,
                True,
                None if lock is None else self.warn_level(pct, lock, allowance),
            )
            for pct in self.warn_at_pct
        ]
        return levels

    def result(
        self,
        equity: Decimal,
        floor: Decimal,
        allowance: Decimal,
        extra: Mapping[str, Decimal | int | str | None] | None = None,
    ) -> RuleResult:
        """``breach`` past the floor, ``warn`` at or past the highest warn level reached,
        else ``pass``. Numbers: floor, equity, headroom (equity - floor), limit (the
        allowance), used (reference - equity, at least 0), used_pct (of the allowance,
        2 places), warn_pct (the warn level reached or None), plus ``extra``."""
        reference = floor + allowance
        used = max(reference - equity, Decimal(0))
        used_pct = (used * HUNDRED / allowance).quantize(PCT_PLACES) if allowance else HUNDRED
        reached = [p for p in self.warn_at_pct if equity <= self.warn_level(p, floor, allowance)]
        numbers: dict[str, Decimal | int | str | None] = {
            "floor": floor,
            "equity": equity,
            "headroom": equity - floor,
            "limit": allowance,
            "used": used,
            "used_pct": used_pct,
            "warn_pct": reached[-1] if reached else None,
            **(extra or {}),
        }
        fill = {"floor": floor, "equity": equity, "used_pct": used_pct}
        breached = equity <= floor if self.inclusive else equity < floor
        if breached:
            return RuleResult(self.name, Status.BREACH, self.breach_reason.format(**fill), numbers)
        if reached:
            warn = {**fill, "warn_pct": pct_text(reached[-1])}
            return RuleResult(self.name, Status.WARN, self.warn_reason.format(**warn), numbers)
        return RuleResult(self.name, Status.PASS, "", numbers)


class NoOrderCheck:
    """Mixin for rules that vet no orders and need no deadlines."""

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        return None

    def deadlines(self, state: RuleInput) -> Sequence[datetime]:
        return []


def iso(value: datetime | None) -> str | None:
    """An instant as ISO 8601 UTC text (``...Z``) for result numbers; None stays None."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ParamsRuleType:
    """A rule type (:class:`~brokerkernel.kernel.prop.rules.RuleType`) whose rules are
    built from their name and validated params alone: ``configure`` calls ``rule``."""

    def __init__(self, rule: Callable[[str, Mapping[str, Any]], PropRule]) -> None:
        self.rule = rule

    def configure(self, name: str, params: Mapping[str, Any]) -> PropRule:
        return self.rule(name, params)


def rule_set(
    name: str, rule: Callable[[str, Mapping[str, Any]], PropRule], schema: Mapping[str, Any]
) -> PropRuleSet:
    """The descriptor of rule type ``name`` (params validated against ``schema``) whose
    rules are ``rule(name, params)``; the plugin context is not needed."""

    def factory(context: PluginContext) -> ParamsRuleType:
        return ParamsRuleType(rule)

    return PropRuleSet(name=name, factory=factory, config_schema=schema)
