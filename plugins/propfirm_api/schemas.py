"""JSON Schemas of the partner API's request bodies (validated with
:func:`brokerkernel.api.validation.body`: 422 listing every field error) and the
OpenAPI descriptions of their answers.

Field names are snake_case like the rest of the API, except ``planId``, which the
ZT4 seed names ("Provision against a plan by planId").
"""

from __future__ import annotations

from typing import Any

from brokerkernel.api.validation import decimal_schema
from brokerkernel.plugins.challenges.http import (
    EXTERNAL_REF,
    PAGE_PROPERTIES,
    REJECT_REASON,
    TRADER,
)
from brokerkernel.plugins.challenges.models import ACCOUNT_STATUSES, PAYOUT_STATUSES
from brokerkernel.plugins.challenges.plans import PLAN_SCHEMA, PLAN_UPDATE_SCHEMA

#: Plan bodies (POST / PATCH) as the challenges service validates them. The routes
#: only check for a JSON object (:data:`JSON_OBJECT`) and leave the rest to the
#: service, which reports the schema's errors and every rule's params errors in one
#: 422 (a route-level check would stop at the schema's).
PLAN = PLAN_SCHEMA
PLAN_PATCH = PLAN_UPDATE_SCHEMA
JSON_OBJECT: dict[str, Any] = {"type": "object"}

BALANCE_OPERATIONS = ("deposit", "withdraw", "credit", "adjust")

PROVISION: dict[str, Any] = {
    "type": "object",
    "required": ["planId", "trader"],
    "properties": {
        "planId": {"type": "string", "minLength": 1, "maxLength": 40},
        "trader": TRADER,
        "external_ref": EXTERNAL_REF,
    },
    "additionalProperties": False,
}

BALANCE: dict[str, Any] = {
    "type": "object",
    "required": ["operation", "amount"],
    "properties": {
        "operation": {"enum": list(BALANCE_OPERATIONS)},
        "amount": decimal_schema(
            description="Account currency: deposit and withdraw positive; credit and "
            "adjust signed (negative removes), not zero"
        ),
        "comment": {"type": "string", "maxLength": 255, "default": ""},
    },
    "additionalProperties": False,
    "allOf": [
        {
            "if": {"properties": {"operation": {"enum": ["credit", "adjust"]}}},
            "then": {"properties": {"amount": {"not": {"const": 0}}}},
            "else": {"properties": {"amount": {"exclusiveMinimum": 0}}},
        }
    ],
}

PAYOUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": decimal_schema(
            exclusive_minimum=0,
            nullable=True,
            description="Account currency, before the profit split; omitted or null: "
            "all withdrawable profit",
        ),
        "destination": {
            "type": ["object", "null"],
            "description": "Where the trader's share goes (e.g. bank or wallet details)",
        },
    },
    "additionalProperties": False,
}

#: ``PATCH /api/backoffice/prop/payouts/{id}/reject``.
PAYOUT_REJECT: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": REJECT_REASON},
    "additionalProperties": False,
}

PLANS_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {"include_retired": {"type": "boolean", "default": False}},
}

ACCOUNTS_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": list(ACCOUNT_STATUSES)},
        "phase": {
            "type": "string",
            "maxLength": 32,
            "description": "A phase name of the plan, or funded",
        },
        "plan_id": {"type": "string", "maxLength": 40},
        **PAGE_PROPERTIES,
    },
}

PAYOUTS_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": list(PAYOUT_STATUSES)},
        "account_id": {"type": "string", "maxLength": 40},
        **PAGE_PROPERTIES,
    },
}

#: The 404 answer of every id the caller may not see (unknown or another tenant's).
NOT_FOUND = "Not found (or another tenant's)"

#: The answers of ``GET .../accounts/{id}`` and ``.../metrics`` (both postures).
STATE_RESPONSES: dict[int, Any] = {200: "The account's state", 404: NOT_FOUND}
METRICS_RESPONSES: dict[int, Any] = {
    200: "Metrics incl. the status of every rule",
    404: NOT_FOUND,
}

#: A body that must be empty (or ``{}``): POSTs that only trigger an action.
EMPTY_BODY: dict[str, Any] = {"type": "object", "additionalProperties": False}

SSO_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["token", "url", "expires_in", "expires_at"],
    "properties": {
        "token": {"type": "string", "description": "One-time autologin token"},
        "url": {
            "type": "string",
            "description": "GET /api/customer/autologin?token=... on this API: opens the "
            "trader's session once, 401 afterwards",
        },
        "expires_in": {"type": "integer", "description": "Seconds until the token expires"},
        "expires_at": {"type": "string", "format": "date-time"},
    },
}
