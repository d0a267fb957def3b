"""Withdrawal approval rules (seed section 10): USD thresholds -> required staff role.

A rule covers ``min_amount_usd <= amount < max_amount_usd`` (no upper bound when
``max_amount_usd`` is null). The seed's defaults: agent below 1,000 USD, manager below
10,000 USD, compliance from 10,000 USD (revision 0003 inserts them and those three
roles). A rule is met by its role or any role of a higher ``level`` (the roles'
seniority, seed section 19): approval by a lower role is refused. Where active rules
overlap, the most senior required role applies; an amount no active rule covers needs
no particular role. Amounts are converted to USD at approval time through the
kernel's FX rates (:class:`~brokerkernel.kernel.pricing.FxConverter`).

Functions work inside the caller's unit of work and raise
:class:`~brokerkernel.kernel.trading.service.TradingError`: 403 role too junior, 404
unknown rule, 422 with every field error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.money.models import WithdrawalApprovalRule
from brokerkernel.kernel.storage.models import Role, new_id
from brokerkernel.kernel.trading.instruments import field_error
from brokerkernel.kernel.trading.service import TradingError

#: The seed's default rules, inserted by revision 0003 (fixed ids: stable references).
DEFAULT_RULES: Final[tuple[dict[str, Any], ...]] = (
    {
        "id": "7a1c0e52-4d0b-4f7e-9a10-000000000001",
        "min_amount_usd": Decimal("0"),
        "max_amount_usd": Decimal("1000"),
        "required_role": "agent",
        "is_active": True,
    },
    {
        "id": "7a1c0e52-4d0b-4f7e-9a10-000000000002",
        "min_amount_usd": Decimal("1000"),
        "max_amount_usd": Decimal("10000"),
        "required_role": "manager",
        "is_active": True,
    },
    {
        "id": "7a1c0e52-4d0b-4f7e-9a10-000000000003",
        "min_amount_usd": Decimal("10000"),
        "max_amount_usd": None,
        "required_role": "compliance",
        "is_active": True,
    },
)

#: The payment-desk roles the default rules name, inserted by revision 0003 when
#: missing: seniority ``level`` between support (10) and admin (100).
APPROVAL_ROLES: Final[tuple[dict[str, Any], ...]] = (
    {
        "name": "agent",
        "display_name": "Payments Agent",
        "description": "Approves withdrawals below 1,000 USD",
        "permissions": ["view_customers", "view_orders", "create_deposits", "approve_deposits"],
        "level": 20,
    },
    {
        "name": "manager",
        "display_name": "Payments Manager",
        "description": "Approves withdrawals below 10,000 USD; processes chargebacks",
        "permissions": [
            "view_customers",
            "view_orders",
            "create_deposits",
            "approve_deposits",
            "process_chargebacks",
        ],
        "level": 40,
    },
    {
        "name": "compliance",
        "display_name": "Compliance Officer",
        "description": "Approves withdrawals of any amount; processes chargebacks",
        "permissions": [
            "view_customers",
            "view_orders",
            "approve_deposits",
            "process_chargebacks",
            "view_audit",
        ],
        "level": 60,
    },
)


@dataclass(frozen=True, slots=True)
class RuleInput:
    """A rule as created or replaced: band in USD; ``required_role`` an active role."""

    min_amount_usd: Decimal
    max_amount_usd: Decimal | None
    required_role: str
    is_active: bool = True


async def _levels(session: AsyncSession, names: Sequence[str]) -> dict[str, int]:
    rows = await session.execute(
        select(Role.name, Role.level).where(Role.name.in_(names), Role.is_active.is_(True))
    )
    return {name: level for name, level in rows}


async def required_role(session: AsyncSession, amount_usd: Decimal) -> str | None:
    """The most senior role the active rules require for ``amount_usd`` (USD), if any."""
    # Bands compared in Python: SQLite holds the amounts as exact decimal text.
    matching = sorted(
        {
            r.required_role
            for r in await list_rules(session)
            if r.min_amount_usd <= amount_usd
            and (r.max_amount_usd is None or amount_usd < r.max_amount_usd)
        }
    )
    if not matching:
        return None
    levels = await _levels(session, matching)
    # A role that no longer exists outranks every existing one: nobody but it qualifies.
    return max(matching, key=lambda name: levels.get(name, 1 << 30))


async def check_approver(session: AsyncSession, role: str | None, amount_usd: Decimal) -> None:
    """Raise TradingError 403 when ``role`` ranks below what the rules require for
    ``amount_usd`` (a withdrawal, converted to USD)."""
    needed = await required_role(session, amount_usd)
    if needed is None or role == needed:
        return
    levels = await _levels(session, [needed, *([role] if role else [])])
    if role is None or role not in levels or levels[role] < levels.get(needed, 1 << 30):
        raise TradingError(
            403,
            f"Withdrawal of {amount_usd} USD requires role {needed} or higher "
            f"(withdrawal approval rules); your role is {role or 'none'}",
        )


async def list_rules(session: AsyncSession) -> list[WithdrawalApprovalRule]:
    """Active rules ordered by ``min_amount_usd`` (seed section 10; sorted in Python,
    as SQLite orders the exact decimal text as text)."""
    rules = await session.scalars(
        select(WithdrawalApprovalRule).where(WithdrawalApprovalRule.is_active.is_(True))
    )
    return sorted(rules, key=lambda rule: (rule.min_amount_usd, rule.id))


async def _validate(session: AsyncSession, rule: RuleInput) -> None:
    errors: list[dict[str, Any]] = []
    if rule.min_amount_usd < 0:
        errors.append(
            field_error("min_amount_usd", "must be greater than or equal to 0", "minimum")
        )
    if rule.max_amount_usd is not None and rule.max_amount_usd <= rule.min_amount_usd:
        errors.append(field_error("max_amount_usd", "must be greater than min_amount_usd", "band"))
    if rule.required_role not in await _levels(session, [rule.required_role]):
        errors.append(field_error("required_role", "must be an active role", "role"))
    if errors:
        raise TradingError(422, errors)


async def create_rule(
    session: AsyncSession, rule: RuleInput, now: datetime
) -> WithdrawalApprovalRule:
    await _validate(session, rule)
    row = WithdrawalApprovalRule(id=new_id(), created_at=now)
    _assign(row, rule, now)
    session.add(row)
    return row


async def update_rule(
    session: AsyncSession, rule_id: str, rule: RuleInput, now: datetime
) -> WithdrawalApprovalRule:
    row = await session.get(WithdrawalApprovalRule, rule_id, with_for_update=True)
    if row is None:
        raise TradingError(404, "Withdrawal approval rule not found")
    await _validate(session, rule)
    _assign(row, rule, now)
    return row


async def deactivate_rule(session: AsyncSession, rule_id: str, now: datetime) -> None:
    """Soft delete: ``is_active = false`` (seed section 10)."""
    row = await session.get(WithdrawalApprovalRule, rule_id, with_for_update=True)
    if row is None:
        raise TradingError(404, "Withdrawal approval rule not found")
    row.is_active = False
    row.updated_at = now


def _assign(row: WithdrawalApprovalRule, rule: RuleInput, now: datetime) -> None:
    row.min_amount_usd = rule.min_amount_usd
    row.max_amount_usd = rule.max_amount_usd
    row.required_role = rule.required_role
    row.is_active = rule.is_active
    row.updated_at = now
