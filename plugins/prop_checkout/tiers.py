"""Challenge tiers on sale: the ``tiers`` table of ``[plugins.prop_checkout]`` and the
check of a purchase request against its tier."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from brokerkernel.plugins.challenges.service import PropError

TIER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["plan", "amount_cents", "market", "asset_class", "account_size"],
    "properties": {
        "plan": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "Code of the broker-owned challenge plan an account is provisioned in.",
        },
        "amount_cents": {
            "type": "integer",
            "minimum": 0,
            "description": "Price in the currency's minor unit; 0 makes a free (comped) tier, "
            "sold only through POST /v2/payments/free.",
        },
        "currency": {"type": "string", "pattern": "^[a-z]{3}$", "default": "usd"},
        "market": {"type": "string", "minLength": 1, "maxLength": 32},
        "asset_class": {"type": "string", "minLength": 1, "maxLength": 32},
        "account_size": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Funded account size (the plan's currency).",
        },
        "limit_per_customer": {
            "type": "integer",
            "minimum": 1,
            "description": "At most this many accounts of this tier per customer "
            "(free tiers; unlimited when absent).",
        },
    },
}


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier on sale: ``plan`` (challenge plan code), price ``amount_cents`` in
    ``currency`` (lowercase ISO 4217), ``market``, ``asset_class``, ``account_size``."""

    id: str
    plan: str
    amount_cents: int
    currency: str
    market: str
    asset_class: str
    account_size: Decimal
    limit_per_customer: int | None = None

    @property
    def free(self) -> bool:
        return self.amount_cents == 0


def load_tiers(config: Mapping[str, Any]) -> dict[str, Tier]:
    """The validated ``tiers`` table (defaults applied) as :class:`Tier` by id."""
    return {
        tier_id: Tier(
            id=tier_id,
            plan=item["plan"],
            amount_cents=item["amount_cents"],
            currency=item["currency"],
            market=item["market"],
            asset_class=item["asset_class"],
            account_size=Decimal(str(item["account_size"])),
            limit_per_customer=item.get("limit_per_customer"),
        )
        for tier_id, item in config.items()
    }


def _error(field: str, msg: str, type_: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": msg, "type": type_}


def check_purchase(tiers: Mapping[str, Tier], data: Mapping[str, Any], *, free: bool) -> Tier:
    """The tier a validated request body buys; PropError 422 listing every field that
    differs from the tier (``market`` only when given on the free route, where the
    price fields are absent). A free tier through checkout or a paid tier through
    the free route is a ``tier_id`` error."""
    tier = tiers.get(data["tier_id"])
    if tier is None:
        raise PropError(422, [_error("tier_id", "unknown tier", "tier")])
    errors: list[dict[str, Any]] = []
    if free and not tier.free:
        errors.append(
            _error("tier_id", "is not a free tier: use POST /v2/payments/checkout", "paid_tier")
        )
    if not free and tier.free:
        errors.append(_error("tier_id", "is a free tier: use POST /v2/payments/free", "free_tier"))
    given: dict[str, Any] = {
        "market": data.get("market"),
        "asset_class": data["asset_class"],
        "account_size": Decimal(data["account_size"]),
    }
    expected: dict[str, Any] = {
        "market": tier.market,
        "asset_class": tier.asset_class,
        "account_size": tier.account_size,
    }
    if not free:
        given.update(amount_cents=data["amount_cents"], currency=data["currency"].lower())
        expected.update(amount_cents=tier.amount_cents, currency=tier.currency)
    errors += [
        _error(field, f"must be {expected[field]} for tier {tier.id}", "tier_mismatch")
        for field, value in given.items()
        if value is not None and value != expected[field]
    ]
    if errors:
        raise PropError(422, errors)
    return tier
