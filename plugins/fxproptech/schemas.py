"""JSON Schemas of the ``/v1`` request bodies and query strings (422 listing every
error) and the OpenAPI descriptions of the answers."""

from __future__ import annotations

from typing import Any

from brokerkernel.kernel.kyc import KYC_STATUSES, NOT_STARTED
from brokerkernel.plugins.challenges.http import (
    EXTERNAL_REF,
    PAGE_PROPERTIES,
    REJECT_REASON,
    TRADER,
)
from brokerkernel.plugins.challenges.models import ACCOUNT_STATUSES, PAYOUT_STATUSES
from brokerkernel.plugins.challenges.plans import PLAN_PROPERTIES

ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 40}
#: ``plan_id`` of an evaluation: a plan the partner owns or may sell.
PLAN_ID: dict[str, Any] = {**ID, "description": "The challenge plan to provision"}

TRADER_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["email", "plan_id"],
    "properties": {
        **TRADER["properties"],
        "plan_id": PLAN_ID,
        "external_ref": EXTERNAL_REF,
    },
    "additionalProperties": False,
}

RISK_LIMITS: dict[str, Any] = {
    "type": "object",
    "description": "Per rule (by the rule's name in the plan) the parameters that "
    "override the plan's for this account, e.g. "
    '{"max_loss": {"percent": 12}}; an empty object clears the overrides',
    "additionalProperties": {"type": "object"},
}

TRADER_PATCH: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {
        "status": {"enum": ["active", "suspended"]},
        "tier": {"type": ["string", "null"], "minLength": 1, "maxLength": 32},
        "risk_limits": RISK_LIMITS,
    },
    "additionalProperties": False,
}

PAYMENT_REFERENCE: dict[str, Any] = {
    **EXTERNAL_REF,
    "description": "The confirmed payment (e.g. the processor's payment id); a repeat "
    "with the same reference returns the first account (whatever the rest of the body)",
}
#: An existing trader of the partner: the id of any of its trader accounts.
TRADER_ID: dict[str, Any] = {
    **ID,
    "description": "An existing trader of the partner (the id of one of its accounts)",
}

EVALUATION_CREATE: dict[str, Any] = {
    "type": "object",
    "description": "Give the trader as trader_id (an existing trader of the partner) "
    "or trader (found by email, or created)",
    "required": ["plan_id", "payment_reference"],
    "properties": {
        "plan_id": PLAN_ID,
        "payment_reference": PAYMENT_REFERENCE,
        "trader_id": TRADER_ID,
        "trader": TRADER,
    },
    "oneOf": [{"required": ["trader_id"]}, {"required": ["trader"]}],
    "additionalProperties": False,
}

ACCOUNT_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["trader_id", "plan_id"],
    "properties": {
        "trader_id": TRADER_ID,
        "plan_id": PLAN_ID,
        "payment_reference": PAYMENT_REFERENCE,
    },
    "additionalProperties": False,
}

#: The fields of a plan's rule set (``PUT /v1/rules/{id}`` replaces both).
RULE_SET_FIELDS: tuple[str, ...] = ("phases", "funded_rules")
#: ``PUT /v1/rules/{id}``: the plan schema's ``phases`` and ``funded_rules``. The
#: route checks only the field names itself and leaves the rest to the challenges
#: service, so one 422 lists the schema's and every rule's params errors.
RULE_SET: dict[str, Any] = {
    "type": "object",
    "required": list(RULE_SET_FIELDS),
    "properties": {name: PLAN_PROPERTIES[name] for name in RULE_SET_FIELDS},
    "additionalProperties": False,
}
JSON_OBJECT: dict[str, Any] = {"type": "object"}

PAYOUT_APPROVE: dict[str, Any] = {
    "type": "object",
    "required": ["payout_id"],
    "properties": {"payout_id": ID},
    "additionalProperties": False,
}

PAYOUT_REJECT: dict[str, Any] = {
    "type": "object",
    "required": ["payout_id", "reason"],
    "properties": {"payout_id": ID, "reason": REJECT_REASON},
    "additionalProperties": False,
}

TIME: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$",
    "description": "ISO 8601 date-time (UTC without an offset) or date",
}

TRADERS_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": list(ACCOUNT_STATUSES)},
        "plan": {**ID, "description": "Plan id"},
        "created_from": {**TIME, "description": "Created at or after (a date: its start)"},
        "created_to": {**TIME, "description": "Created at or before (a date: through its end)"},
        **PAGE_PROPERTIES,
    },
}

PAYOUTS_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": list(PAYOUT_STATUSES)},
        "trader_id": ID,
        **PAGE_PROPERTIES,
    },
}

MONEY: dict[str, Any] = {"type": "number", "description": "Account currency"}

TRADER_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "A trader account (the prop account; id prop_...)",
    "properties": {
        "id": {"type": "string"},
        "customer_id": {"type": "string"},
        "email": {"type": "string"},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "country": {"type": ["string", "null"]},
        "kyc_status": {"enum": [NOT_STARTED, *KYC_STATUSES]},
        "status": {"enum": list(ACCOUNT_STATUSES)},
        "tier": {"type": ["string", "null"]},
        "risk_limits": RISK_LIMITS,
        "plan_id": {"type": "string"},
        "login": {"type": "integer"},
        "currency": {"type": "string"},
        "balance": MONEY,
        "equity": MONEY,
        "pnl": MONEY,
        "evaluation": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}

EVALUATION_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "Evaluation progress: phase, P&L, drawdown, days remaining, rule status",
}

PAYOUT_RESPONSE: dict[str, Any] = {"type": "object", "description": "A payout request"}

PLAN_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "The plan with its rule set (phases[].rules, funded_rules; each rule "
    "{type, name, params} with the params' defaults filled in)",
}
