"""ACME's custom prop rule: equity must stay above an absolute floor.

Written only against the public rule API (:mod:`brokerkernel.kernel.prop.rules`), the
way a third party would: one rule type ``acme_equity_floor`` with the JSON Schema of
its per-plan params, registered through ``broker_register_prop_rules``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerkernel import hookimpl
from brokerkernel.kernel.descriptors import PluginContext, PropRuleSet
from brokerkernel.kernel.prop.rules import (
    Level,
    LevelKind,
    OrderIntent,
    RuleInput,
    RuleResult,
    floor_result,
)

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["floor"],
    "properties": {
        "floor": {"type": "number", "exclusiveMinimum": 0},
        "warn_at": {"type": ["number", "null"], "default": None},
        "inclusive": {"type": "boolean", "default": False},
    },
}


class EquityFloor:
    objective = False

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.floor = Decimal(str(params["floor"]))
        warn_at = params.get("warn_at")
        self.warn_at = None if warn_at is None else Decimal(str(warn_at))
        self.inclusive = bool(params.get("inclusive", False))

    def levels(self, state: RuleInput) -> list[Level]:
        levels = [Level(self.name, self.floor, LevelKind.FLOOR, self.inclusive)]
        if self.warn_at is not None:
            levels.append(Level(f"{self.name}.warn", self.warn_at, LevelKind.FLOOR, True))
        return levels

    def evaluate(self, state: RuleInput) -> RuleResult:
        return floor_result(
            self.name,
            state.account.equity,
            self.floor,
            self.inclusive,
            "Equity below ACME's absolute floor",
            self.warn_at,
        )

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        return None

    def deadlines(self, state: RuleInput) -> list[datetime]:
        return []


class EquityFloorType:
    def __init__(self, context: PluginContext) -> None:
        self.context = context

    def configure(self, name: str, params: Mapping[str, Any]) -> EquityFloor:
        return EquityFloor(name, params)


@hookimpl
def broker_register_prop_rules() -> list[PropRuleSet]:
    return [
        PropRuleSet(name="acme_equity_floor", factory=EquityFloorType, config_schema=PARAMS_SCHEMA)
    ]
