"""Challenge plans: the JSON Schema of a plan, rule validation and configuration.

A plan's phases list rules as ``{"type": "<rule type>", "name"?: str, "params": {...}}``
(``name`` defaults to the type; unique within the phase). ``params`` are validated
against the rule type's ``config_schema`` (its ``PropRuleSet`` descriptor) with its
defaults applied, and stored JSON-safe (exact decimals as ints, or floats whose
shortest repr is the decimal, e.g. 0.05).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator

from brokerkernel.api.jsonio import json_safe
from brokerkernel.kernel.config import DefaultingValidator
from brokerkernel.kernel.prop.rules import PropRule, RuleType
from brokerkernel.plugins.challenges.models import VISIBILITIES, PropPlan

_NUMBER = {"type": "number"}
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,47}$"},
        "params": {"type": "object", "default": {}},
    },
}
_RULES = {"type": "array", "items": _RULE}

PLAN_PROPERTIES: dict[str, Any] = {
    "code": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    "name": {"type": "string", "minLength": 1, "maxLength": 128},
    "description": {"type": ["string", "null"]},
    "account_size": {**_NUMBER, "exclusiveMinimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "leverage": {"type": "integer", "minimum": 1, "maximum": 10000},
    "price": {**_NUMBER, "minimum": 0},
    "group_id": {"type": ["string", "null"]},
    "phases": {
        "type": "array",
        "minItems": 1,
        "maxItems": 5,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "rules"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
                "rules": _RULES,
                "auto_advance": {"type": "boolean"},
            },
        },
    },
    "funded_rules": _RULES,
    "profit_split": {**_NUMBER, "minimum": 0, "maximum": 100},
    "payout_first_after_days": {"type": "integer", "minimum": 0},
    "payout_every_days": {"type": "integer", "minimum": 0},
    "payout_minimum": {**_NUMBER, "minimum": 0},
    "scaling": {
        "type": ["object", "null"],
        "additionalProperties": False,
        "required": ["every_months", "min_profit_pct", "increase_pct"],
        "properties": {
            "every_months": {"type": "integer", "minimum": 1},
            "min_profit_pct": {**_NUMBER, "minimum": 0},
            "min_payouts": {"type": "integer", "minimum": 0},
            "increase_pct": {**_NUMBER, "exclusiveMinimum": 0},
            "max_size": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "profit_split": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        },
    },
    "reset_fee": {"type": ["number", "null"], "minimum": 0},
    "visibility": {"enum": list(VISIBILITIES)},
    "allowed_tenants": {"type": "array", "items": {"type": "string"}},
    "day_reset_time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
    "timezone": {"type": "string", "minLength": 1},
    "drawdown_after_payout": {"enum": ["keep", "rebase"]},
    "auto_advance": {"type": "boolean"},
}

#: Body of a new plan (POST); defaults are the plan's, not the API's.
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["code", "name", "account_size", "phases"],
    "properties": PLAN_PROPERTIES,
}
#: Body of a plan change (PATCH): any subset of the fields.
PLAN_UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": PLAN_PROPERTIES,
}

PLAN_DEFAULTS: dict[str, Any] = {
    "description": None,
    "currency": "USD",
    "leverage": 100,
    "price": Decimal(0),
    "group_id": None,
    "funded_rules": [],
    "profit_split": Decimal(80),
    "payout_first_after_days": 14,
    "payout_every_days": 14,
    "payout_minimum": Decimal(0),
    "scaling": None,
    "reset_fee": None,
    "visibility": "public",
    "allowed_tenants": [],
    "day_reset_time": "00:00",
    "timezone": "UTC",
    "drawdown_after_payout": "keep",
}

PLAN_MONEY = ("account_size", "price", "profit_split", "payout_minimum", "reset_fee")
_validator = Draft202012Validator(PLAN_SCHEMA)
_update_validator = Draft202012Validator(PLAN_UPDATE_SCHEMA)


@dataclass(frozen=True, slots=True)
class RuleTypeEntry:
    """A registered rule type: the built :class:`RuleType` and its params schema."""

    name: str
    rule_type: RuleType
    schema: Mapping[str, Any]


def _error(loc: Sequence[Any], msg: str, type_: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": type_}


def _schema_errors(
    validator: Draft202012Validator, data: Any, prefix: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    errors = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.path]):
        loc: list[Any] = [*prefix, *error.absolute_path]
        if error.validator == "required":
            loc.append(error.message.split("'")[1])
        errors.append(_error(loc, error.message, str(error.validator)))
    return errors


def _rule_errors(
    rules: Any, where: list[Any], types: Mapping[str, RuleTypeEntry]
) -> list[dict[str, Any]]:
    """Errors of one rule list (types known, names unique, params valid); fills in
    each rule's ``name`` and the params' defaults."""
    errors: list[dict[str, Any]] = []
    if not isinstance(rules, list):
        return errors
    names: set[str] = set()
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        loc = [*where, index]
        entry = types.get(rule.get("type", ""))
        if entry is None:
            known = ", ".join(sorted(types)) or "none"
            errors.append(
                _error(
                    [*loc, "type"],
                    f"unknown rule type {rule.get('type')!r} (known: {known})",
                    "rule_type",
                )
            )
            continue
        name = rule.setdefault("name", entry.name)
        if name in names:
            errors.append(_error([*loc, "name"], f"duplicate rule name {name!r}", "unique"))
        names.add(name)
        params = rule.setdefault("params", {})
        errors.extend(_schema_errors(DefaultingValidator(entry.schema), params, [*loc, "params"]))
    return errors


def validate_plan(
    data: Mapping[str, Any], types: Mapping[str, RuleTypeEntry], *, partial: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(plan values, 422 items)``: ``data`` checked against :data:`PLAN_SCHEMA` (or
    the update schema when ``partial``), every rule's type and params, the timezone.
    The values carry the rules' names and params defaults (rules need no other fix)."""
    values = json.loads(json.dumps(json_safe(dict(data))))
    errors = _schema_errors(_update_validator if partial else _validator, values)
    for index, phase in enumerate(values.get("phases") or []):
        if isinstance(phase, dict):
            errors.extend(_rule_errors(phase.get("rules"), ["phases", index, "rules"], types))
    errors.extend(_rule_errors(values.get("funded_rules"), ["funded_rules"], types))
    zone = values.get("timezone")
    if isinstance(zone, str):
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(_error(["timezone"], f"unknown IANA timezone {zone!r}", "timezone"))
    for key in PLAN_MONEY:
        if key in data and data[key] is not None:
            values[key] = Decimal(str(data[key]))
    return values, errors


def configure(
    rules: Sequence[Mapping[str, Any]],
    types: Mapping[str, RuleTypeEntry],
    overrides: Mapping[str, Any] | None = None,
) -> tuple[PropRule, ...]:
    """The configured rules of a phase; ``overrides`` maps a rule name to params that
    replace the plan's (an account's ``rule_overrides``). A rule whose type is not
    registered any more is left out (logged by the caller's startup check)."""
    configured = []
    for rule in rules:
        entry = types.get(rule["type"])
        if entry is None:
            continue
        name = rule.get("name") or entry.name
        params = dict(rule.get("params") or {})
        params.update((overrides or {}).get(name) or {})
        configured.append(entry.rule_type.configure(name, params))
    return tuple(configured)


def plan_json(plan: PropPlan) -> dict[str, Any]:
    """The API view of a plan (money as Decimal)."""
    return {
        "id": plan.id,
        "code": plan.code,
        "tenant_id": plan.tenant_id,
        "name": plan.name,
        "description": plan.description,
        "account_size": plan.account_size,
        "currency": plan.currency,
        "leverage": plan.leverage,
        "price": plan.price,
        "group_id": plan.group_id,
        "phases": plan.phases,
        "funded_rules": plan.funded_rules,
        "profit_split": plan.profit_split,
        "payout_first_after_days": plan.payout_first_after_days,
        "payout_every_days": plan.payout_every_days,
        "payout_minimum": plan.payout_minimum,
        "scaling": plan.scaling,
        "reset_fee": plan.reset_fee,
        "visibility": plan.visibility,
        "allowed_tenants": plan.allowed_tenants,
        "day_reset_time": plan.day_reset_time,
        "timezone": plan.timezone,
        "drawdown_after_payout": plan.drawdown_after_payout,
        "auto_advance": plan.auto_advance,
        "status": plan.status,
        "created_at": plan.created_at,
        "updated_at": plan.updated_at,
    }
