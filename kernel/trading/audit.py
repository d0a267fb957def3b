"""The audit log (seed section 31): an immutable row per financial state change.

Each row names the entity (``order``, ``position``, ``pending_order``, ``account``,
``transaction``), the action (``open``, ``close``, ``partial_close``, ``stop_out``,
``swap``, ``modify_sltp``, ``place``, ``modify``, ``cancel``, ``fill``, ``expire``,
``reject``, ...), the account's balance, credit and used margin before and after
(account currency) and the service that made the change. Rows are written in the
same unit of work as the change; the table refuses UPDATE and DELETE (revision 0007).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

ORDER_SERVICE = "order-service"
RISK_SERVICE = "risk-service"
SWAP_SERVICE = "swap-service"


class AuditedAccount(Protocol):
    login: int
    balance: Decimal
    credit: Decimal
    margin: Decimal


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account's balance, credit and used margin at one moment (account currency)."""

    balance: Decimal
    credit: Decimal
    margin: Decimal


def snapshot(account: AuditedAccount) -> Snapshot:
    return Snapshot(account.balance, account.credit, account.margin)


def row(
    account: AuditedAccount,
    before: Snapshot,
    *,
    entity_type: str,
    entity_id: str,
    action: str,
    details: dict[str, Any],
    source: str,
    at: datetime,
) -> dict[str, Any]:
    """The values of one audit row: ``before`` against the account as it is now.

    ``details`` must be JSON-serialisable (decimals as strings).
    """
    return {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "action": action,
        "login": account.login,
        "details": details,
        "balance_before": before.balance,
        "balance_after": account.balance,
        "credit_before": before.credit,
        "credit_after": account.credit,
        "margin_used_before": before.margin,
        "margin_used_after": account.margin,
        "source_service": source,
        "created_at": at,
    }
