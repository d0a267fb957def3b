"""The challenges plugin's service: plans, prop accounts, lifecycle and payouts.

CONTRACT STUB written by the lead so the partner-API plugins can be built in
parallel; the challenges helper replaces the bodies (and may add parameters with
defaults, never remove or rename). Every method raises :class:`PropError` for a
refused request. Views are JSON-ready dicts (money as Decimal, times as UTC datetimes).

Tenancy: ``tenant_id=None`` is the broker's own staff (sees everything);
a partner's tenant id restricts every read and write to that tenant's plans,
accounts and payouts (a foreign id answers 404, never 403).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

PLUGIN_NAME = "challenges"


class PropError(Exception):
    """A refused prop-firm request: HTTP ``status`` and ``detail`` (a string, or a list
    of field errors in the 422 shape of api/validation.py)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TraderSpec:
    """The trader to provision for: an existing customer by ``customer_id``, or one
    found (by email) or created from the other fields."""

    email: str
    first_name: str = ""
    last_name: str = ""
    country: str | None = None
    phone: str | None = None
    customer_id: str | None = None


class ChallengeService:
    # --- plans ------------------------------------------------------------------------
    async def list_plans(
        self,
        *,
        tenant_id: str | None,
        catalog: bool = False,
        include_retired: bool = False,
    ) -> list[dict[str, Any]]:
        """Plans the caller owns (``catalog=False``: a partner's own, the broker's own
        for None) or may sell (``catalog=True``: broker-owned plans visible to the
        tenant)."""
        raise NotImplementedError

    async def get_plan(
        self, plan_id: str, *, tenant_id: str | None, catalog: bool = False
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def create_plan(
        self, data: Mapping[str, Any], *, tenant_id: str | None
    ) -> dict[str, Any]:
        """422 with every field error (rule params checked against each rule type's
        schema), 409 on a duplicate ``code`` for the owner."""
        raise NotImplementedError

    async def update_plan(
        self, plan_id: str, changes: Mapping[str, Any], *, tenant_id: str | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def retire_plan(self, plan_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """Deleted when no account ever used it, else ``status: retired`` (kept for
        its accounts, no new provisioning)."""
        raise NotImplementedError

    # --- accounts ---------------------------------------------------------------------
    async def provision(
        self,
        plan_id: str,
        trader: TraderSpec,
        *,
        tenant_id: str | None,
        source: str,
        external_ref: str | None = None,
        catalog: bool = False,
    ) -> dict[str, Any]:
        """A new prop account in the plan's first phase (trading account with the
        plan's size, currency, leverage and group; the initial balance a ledger row;
        ``account.created`` emitted). Idempotent on ``(tenant_id, external_ref)``: a
        repeat returns the first account. 404 unknown plan, 409 retired plan."""
        raise NotImplementedError

    async def list_accounts(
        self,
        *,
        tenant_id: str | None,
        status: str | None = None,
        phase: str | None = None,
        plan_id: str | None = None,
        customer_id: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """``(accounts, total)`` newest first."""
        raise NotImplementedError

    async def get_account(self, account_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """State: id, login, plan_id, phase, status, balance, equity, drawdown used
        (daily and max), target progress, trading days, timestamps."""
        raise NotImplementedError

    async def metrics(self, account_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """Metrics snapshot incl. the rule status list (one RuleResult per rule)."""
        raise NotImplementedError

    async def advance_phase(
        self, account_id: str, *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def reset(self, account_id: str, *, tenant_id: str | None, actor: str) -> dict[str, Any]:
        raise NotImplementedError

    async def balance_operation(
        self,
        account_id: str,
        *,
        tenant_id: str | None,
        operation: str,
        amount: Decimal,
        comment: str,
        actor: str,
    ) -> dict[str, Any]:
        """``operation``: deposit, withdraw, credit or adjust (signed amount); one
        ledger row each."""
        raise NotImplementedError

    async def update_account(
        self, account_id: str, changes: Mapping[str, Any], *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        """``status`` (active/suspended), ``tier``, ``rule_overrides`` (per rule params)."""
        raise NotImplementedError

    async def archive(
        self, account_id: str, *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        raise NotImplementedError

    # --- payouts ----------------------------------------------------------------------
    async def request_payout(
        self,
        account_id: str,
        *,
        tenant_id: str | None,
        amount: Decimal | None,
        destination: Mapping[str, Any] | None,
        execute: bool,
        actor: str,
    ) -> dict[str, Any]:
        """Profit split applied; refused (409/422 with the reason and dates/amounts)
        before the plan's cadence allows or below its minimum. ``execute`` True
        processes it at once (Orchestration), False leaves it ``pending`` approval."""
        raise NotImplementedError

    async def approve_payout(
        self, payout_id: str, *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def list_payouts(
        self,
        *,
        tenant_id: str | None,
        status: str | None = None,
        account_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        raise NotImplementedError

    async def get_payout(self, payout_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        raise NotImplementedError


def challenge_service(kernel: Any) -> ChallengeService:
    """The running challenges service; RuntimeError when the plugin is not enabled."""
    service = kernel.extensions.get(PLUGIN_NAME)
    if not isinstance(service, ChallengeService):
        raise RuntimeError("the challenges plugin is not enabled")
    return service
