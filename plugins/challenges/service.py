"""The challenges plugin's service: plans, prop accounts, lifecycle and payouts.

Every method raises :class:`PropError` for a refused request. Views are JSON-ready
dicts (money as Decimal in the plan's currency, times as UTC datetimes).

Tenancy: ``tenant_id=None`` is the broker's own staff (sees everything); a partner's
tenant id restricts every read and write to that tenant's plans, accounts and payouts
(a foreign id answers 404, never 403). A tenant may also provision on broker-owned
plans its catalog shows (``catalog=True``: ``public`` plans, and ``private`` ones
listing the tenant in ``allowed_tenants``). A partner provisions for its own traders
only: an existing customer is reused when every trading account it holds is a prop
account of that tenant (:meth:`ChallengeService._customer`).

Money moves through the kernel's ledger only: the initial balance is an approved
system DEPOSIT (one ledger row) in the unit of work that creates the account; balance
operations are approved system transactions; a processed payout is an approved
WITHDRAWAL of the payout amount (a failed one writes nothing); a scaling, when due at
a payout or a day reset, is an approved DEPOSIT of the increase; a reset fee is only
recorded (paid outside the account); phase changes and resets set the balance back
to the plan size with one correction row on the account's order worker
(:mod:`brokerkernel.plugins.challenges.engine`).
"""

from __future__ import annotations

import math
import uuid
from calendar import monthrange
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.api.jsonio import json_safe
from brokerkernel.kernel.config import DefaultingValidator
from brokerkernel.kernel.customers import KycChange, new_customer, new_real_account
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.money.transactions import Actor, TransactionRequest, TransactionService
from brokerkernel.kernel.prop.days import day_start, trading_day
from brokerkernel.kernel.storage.models import (
    Customer,
    Group,
    Position,
    TradingAccount,
    Transaction,
    new_id,
)
from brokerkernel.kernel.trading import ledger
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.jobs import FutureJob
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.state import AccountState
from brokerkernel.plugins.challenges.engine import (
    TRADING,
    PhaseJob,
    PlanSpec,
    PropEngine,
    PropView,
    StatusJob,
    money_text,
    peak_of,
    positions_of,
)
from brokerkernel.plugins.challenges.models import (
    ACCOUNT_STATUSES,
    PropAccount,
    PropDailyProfit,
    PropPayout,
    PropPlan,
    PropTradingDay,
)
from brokerkernel.plugins.challenges.plans import (
    PLAN_DEFAULTS,
    RuleTypeEntry,
    plan_json,
    validate_plan,
)

PLUGIN_NAME = "challenges"
#: Recorded with every plan change; each process's engine reloads the plan.
PLAN_UPDATED = "plan.updated"
HUNDRED = Decimal(100)
PERCENT = Decimal("0.01")
SYSTEM = Actor("system")
#: The 409 detail when a partner provisions with the email of a customer that is not
#: its own trader (neutral: it does not say whose the email is).
TRADER_EMAIL_REFUSED = "This trader email cannot be used"


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
    found (by email) or created from the other fields (a partner finds only its own
    traders)."""

    email: str
    first_name: str = ""
    last_name: str = ""
    country: str | None = None
    phone: str | None = None
    customer_id: str | None = None


def _field(field: str, msg: str, type_: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": msg, "type": type_}


def plan_spec(plan: PropPlan) -> PlanSpec:
    """What evaluation needs of a plan row."""
    return PlanSpec(
        id=plan.id,
        account_size=plan.account_size,
        currency=plan.currency,
        phases=tuple(plan.phases),
        funded_rules=tuple(plan.funded_rules),
        reset_time=plan.day_reset_time,
        zone=ZoneInfo(plan.timezone),
        auto_advance=plan.auto_advance,
        drawdown_after_payout=plan.drawdown_after_payout,
        reset_fee=plan.reset_fee,
    )


def payout_json(payout: PropPayout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "account_id": payout.account_id,
        "tenant_id": payout.tenant_id,
        "login": payout.login,
        "amount": payout.amount,
        "trader_share": payout.trader_share,
        "firm_share": payout.firm_share,
        "currency": payout.currency,
        "status": payout.status,
        "destination": payout.destination,
        "reason": payout.reason,
        "requested_by": payout.requested_by,
        "processed_by": payout.processed_by,
        "requested_at": payout.requested_at,
        "processed_at": payout.processed_at,
        "ledger_ref": payout.ledger_ref,
    }


def _pct(part: Decimal, whole: Decimal) -> Decimal | None:
    return (part / whole * HUNDRED).quantize(PERCENT) if whole else None


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` ``months`` calendar months later (the day clamped to the month's
    last day: Jan 31 + 1 month = Feb 28/29)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, monthrange(year, month)[1]))


async def account_owners(session: AsyncSession, customer_id: str) -> list[tuple[bool, str | None]]:
    """One ``(is_prop, tenant_id)`` per trading account of ``customer_id`` (a retail
    account: ``(False, None)``; a broker prop account: ``(True, None)``)."""
    query = (
        select(PropAccount.id.is_not(None), PropAccount.tenant_id)
        .select_from(TradingAccount)
        .outerjoin(PropAccount, PropAccount.login == TradingAccount.login)
        .where(TradingAccount.customer_id == customer_id)
    )
    return [(bool(is_prop), tenant) for is_prop, tenant in await session.execute(query)]


def foreign_to(owners: Sequence[tuple[bool, str | None]], tenant_id: str | None) -> bool:
    """Whether any of ``owners`` (:func:`account_owners`) is not a prop account of
    ``tenant_id``: a retail account, the broker's or another tenant's prop account."""
    return any(not is_prop or tenant != tenant_id for is_prop, tenant in owners)


async def _tenants_own(session: AsyncSession, customer_id: str, tenant_id: str | None) -> bool:
    """Whether a partner may provision for ``customer_id``: always for the broker
    (``tenant_id`` None: staff, or the customer's own Stripe checkout); for a partner
    only its own trader, whose trading accounts (at least one) are all prop accounts of
    ``tenant_id`` (issue 7: a partner never attaches to a broker client or another
    firm's trader found by email or id)."""
    if tenant_id is None:
        return True
    owners = await account_owners(session, customer_id)
    return bool(owners) and not foreign_to(owners, tenant_id)


Histories = tuple[dict[tuple[int, int], list[date]], dict[tuple[int, int], dict[date, Decimal]]]


async def _histories(session: AsyncSession, logins: Collection[int] | None) -> Histories:
    """Trading days and daily profit by ``(login, cycle)`` of ``logins`` (None: every
    account) with one query each."""
    day_query = select(PropTradingDay.login, PropTradingDay.cycle, PropTradingDay.day)
    profit_query = select(
        PropDailyProfit.login, PropDailyProfit.cycle, PropDailyProfit.day, PropDailyProfit.profit
    )
    if logins is not None:
        day_query = day_query.where(PropTradingDay.login.in_(list(logins)))
        profit_query = profit_query.where(PropDailyProfit.login.in_(list(logins)))
    days: dict[tuple[int, int], list[date]] = {}
    for login, cycle, day in await session.execute(day_query):
        days.setdefault((login, cycle), []).append(day)
    profit: dict[tuple[int, int], dict[date, Decimal]] = {}
    for login, cycle, day, amount in await session.execute(profit_query):
        profit.setdefault((login, cycle), {})[day] = amount
    return days, profit


class ChallengeService:
    """Plans, prop accounts, lifecycle and payouts (module docstring).

    ``kernel`` is the running kernel, ``engine`` the plugin's :class:`PropEngine`,
    ``config`` the plugin's validated ``[plugins.challenges]`` section.
    """

    def __init__(self, kernel: Any, engine: PropEngine, config: Mapping[str, Any]) -> None:
        self.kernel = kernel
        self.engine = engine
        self.config = config

    @property
    def types(self) -> Mapping[str, RuleTypeEntry]:
        return self.engine.types

    # --- startup ----------------------------------------------------------------------

    async def load(self) -> None:
        """Cache every plan and every prop account not archived (with its history);
        note failed accounts that still hold positions (closed by the schedule's
        :meth:`PropEngine.retry_closes`)."""
        async with self.kernel.db.read() as session:
            for plan in (await session.scalars(select(PropPlan))).all():
                self.engine.set_plan(plan_spec(plan))
            rows = (
                await session.scalars(select(PropAccount).where(PropAccount.status != "archived"))
            ).all()
            days, profit = await _histories(session, None)
            unclosed = await session.scalars(
                select(PropAccount.login).where(
                    PropAccount.status == "failed",
                    PropAccount.login.in_(select(Position.login)),
                )
            )
            self.engine.unclosed.update(unclosed)
        for row in rows:
            key = (row.login, row.cycle)
            self.engine.install(
                self.engine.view_of(
                    row, self.engine.plans[row.plan_id], days.get(key, ()), profit.get(key)
                )
            )

    # --- plans ------------------------------------------------------------------------

    def _visible(self, plan: PropPlan, tenant_id: str | None, catalog: bool) -> bool:
        if tenant_id is None or plan.tenant_id == tenant_id:
            return True
        if not catalog or plan.tenant_id is not None:
            return False
        return plan.visibility == "public" or (
            plan.visibility == "private" and tenant_id in (plan.allowed_tenants or [])
        )

    async def _plan(
        self, session: AsyncSession, plan_id: str, tenant_id: str | None, catalog: bool = False
    ) -> PropPlan:
        plan = await session.get(PropPlan, plan_id)
        if plan is None or not self._visible(plan, tenant_id, catalog):
            raise PropError(404, "Plan not found")
        return plan

    async def list_plans(
        self,
        *,
        tenant_id: str | None,
        catalog: bool = False,
        include_retired: bool = False,
    ) -> list[dict[str, Any]]:
        """Plans the caller owns (``catalog=False``: a partner's own, the broker's own
        for None) or may sell (``catalog=True``: broker-owned plans visible to the
        tenant, and its own)."""
        async with self.kernel.db.read() as session:
            query = select(PropPlan).order_by(PropPlan.created_at, PropPlan.id)
            if not include_retired:
                query = query.where(PropPlan.status == "active")
            plans = (await session.scalars(query)).all()
        if catalog:
            chosen = [p for p in plans if self._visible(p, tenant_id, True)]
        else:
            chosen = [p for p in plans if p.tenant_id == tenant_id]
        return [plan_json(p) for p in chosen]

    async def get_plan(
        self, plan_id: str, *, tenant_id: str | None, catalog: bool = False
    ) -> dict[str, Any]:
        """One plan; 404 when unknown or not visible to the tenant."""
        async with self.kernel.db.read() as session:
            return plan_json(await self._plan(session, plan_id, tenant_id, catalog))

    async def _plan_errors(
        self, session: AsyncSession, values: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        errors = []
        group_id = values.get("group_id")
        if group_id is not None and await session.get(Group, group_id) is None:
            errors.append(_field("group_id", f"unknown group {group_id!r}", "group"))
        return errors

    async def create_plan(
        self, data: Mapping[str, Any], *, tenant_id: str | None
    ) -> dict[str, Any]:
        """422 with every field error (rule params checked against each rule type's
        schema), 409 on a duplicate ``code`` for the owner."""
        values, errors = validate_plan(data, self.types)
        now = self.kernel.clock.now()
        async with self.kernel.db.transaction() as session:
            errors.extend(await self._plan_errors(session, values))
            if errors:
                raise PropError(422, errors)
            owner = tenant_id or "-"
            duplicate = await session.scalar(
                select(PropPlan.id).where(
                    PropPlan.owner_key == owner, PropPlan.code == values["code"]
                )
            )
            if duplicate is not None:
                raise PropError(409, f"A plan with code {values['code']!r} exists")
            fields = {
                **PLAN_DEFAULTS,
                "auto_advance": bool(self.config["auto_advance"]),
                **values,
            }
            plan = PropPlan(
                id=f"plan_{uuid.uuid4().hex[:20]}",
                tenant_id=tenant_id,
                owner_key=owner,
                status="active",
                created_at=now,
                updated_at=now,
                **fields,
            )
            session.add(plan)
        self.engine.set_plan(plan_spec(plan))
        return plan_json(plan)

    async def update_plan(
        self, plan_id: str, changes: Mapping[str, Any], *, tenant_id: str | None
    ) -> dict[str, Any]:
        """Change a plan (the same checks as :meth:`create_plan`); rules of its
        accounts are rebuilt. 404 unknown, 409 duplicate code, 422 field errors."""
        values, errors = validate_plan(changes, self.types, partial=True)
        async with self.kernel.db.transaction() as session:
            plan = await self._plan(session, plan_id, tenant_id)
            errors.extend(await self._plan_errors(session, values))
            if errors:
                raise PropError(422, errors)
            if "code" in values and values["code"] != plan.code:
                duplicate = await session.scalar(
                    select(PropPlan.id).where(
                        PropPlan.owner_key == plan.owner_key, PropPlan.code == values["code"]
                    )
                )
                if duplicate is not None:
                    raise PropError(409, f"A plan with code {values['code']!r} exists")
            for key, value in values.items():
                setattr(plan, key, value)
            plan.updated_at = self.kernel.clock.now()
            # Other processes rebuild their accounts' rules from it (reload_plan).
            record_event(
                session,
                PLAN_UPDATED,
                {"plan_id": plan.id, "tenant_id": plan.tenant_id},
                plan.updated_at,
            )
        self.engine.set_plan(plan_spec(plan))
        return plan_json(plan)

    async def reload_plan(self, plan_id: str) -> None:
        """Re-read a plan another process changed and rebuild its accounts' rules
        (the ``plan.updated`` event); a deleted plan is ignored."""
        async with self.kernel.db.read() as session:
            plan = await session.get(PropPlan, plan_id)
        if plan is not None:
            self.engine.set_plan(plan_spec(plan))

    async def retire_plan(self, plan_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """Deleted when no account ever used it (``status: deleted`` in the answer),
        else ``status: retired`` (kept for its accounts, no new provisioning)."""
        async with self.kernel.db.transaction() as session:
            plan = await self._plan(session, plan_id, tenant_id)
            used = await session.scalar(
                select(func.count()).select_from(PropAccount).where(PropAccount.plan_id == plan_id)
            )
            view = plan_json(plan)
            if not used:
                await session.delete(plan)
                view["status"] = "deleted"
                return view
            plan.status = "retired"
            plan.updated_at = self.kernel.clock.now()
            return plan_json(plan)

    # --- accounts ---------------------------------------------------------------------

    async def _group_id(self, session: AsyncSession, plan: PropPlan) -> str:
        group_id = plan.group_id
        if group_id is None and self.config.get("default_group"):
            group_id = await session.scalar(
                select(Group.id).where(Group.name == self.config["default_group"])
            )
        if group_id is None:
            group_id = await session.scalar(
                select(Group.id).where(Group.is_default.is_(True)).limit(1)
            )
        if group_id is None:
            raise PropError(503, "No trading group is configured for the plan")
        return str(group_id)

    async def _customer(
        self, session: AsyncSession, trader: TraderSpec, tenant_id: str | None, now: datetime
    ) -> tuple[Customer, bool]:
        """The trader's customer and whether it was created now. A partner
        (``tenant_id`` set) reuses only its own trader (:func:`_tenants_own`): another
        ``customer_id`` answers 422 ``unknown customer`` like a nonexistent one (no
        existence leak), another customer's email 409 :data:`TRADER_EMAIL_REFUSED`."""
        if trader.customer_id is not None:
            customer = await session.get(Customer, trader.customer_id)
            if customer is None or not await _tenants_own(session, customer.id, tenant_id):
                raise PropError(422, [_field("customer_id", "unknown customer", "customer")])
            return customer, False
        email = trader.email.strip().lower()
        customer = await session.scalar(select(Customer).where(Customer.email == email))
        if customer is not None:
            if not await _tenants_own(session, customer.id, tenant_id):
                raise PropError(409, TRADER_EMAIL_REFUSED)
            return customer, False
        customer = new_customer(
            email,
            now,
            password_hash=None,
            registration_source="prop",
            first_name=trader.first_name,
            last_name=trader.last_name,
            phone=trader.phone,
            country=trader.country,
        )
        session.add(customer)
        await session.flush()
        return customer, True

    async def kyc_changed(self, session: AsyncSession, change: KycChange) -> None:
        """The kernel's :class:`~brokerkernel.kernel.customers.KycListener`: when a
        customer's KYC status becomes ``approved``, one ``trader.kyc_passed`` (in the
        unit of work of ``session``) per prop account of the customer that is not
        archived — an FXPropTech trader is the prop account, routed to its tenant: the
        account's base payload with ``provider``, ``provider_id``, ``doc_type`` and
        ``doc_country``."""
        result = change.result
        if result.status != "approved":
            return
        rows = await session.scalars(
            select(PropAccount)
            .where(PropAccount.customer_id == result.customer_id, PropAccount.status != "archived")
            .order_by(PropAccount.login)
        )
        document = {
            "provider": result.provider,
            "provider_id": result.provider_id,
            "doc_type": result.doc_type,
            "doc_country": result.doc_country,
        }
        for row in rows:
            payload = {**self._view(row).base_payload(), **document}
            record_event(session, "trader.kyc_passed", payload, change.at)

    async def holds_foreign_accounts(self, customer_id: str, tenant_id: str | None) -> bool:
        """Whether ``customer_id`` holds a trading account that is not a prop account
        of ``tenant_id`` (:func:`foreign_to`)."""
        async with self.kernel.db.read() as session:
            return foreign_to(await account_owners(session, customer_id), tenant_id)

    async def _by_key(self, key: str, tenant_id: str | None) -> dict[str, Any] | None:
        async with self.kernel.db.read() as session:
            account_id = await session.scalar(
                select(PropAccount.id).where(PropAccount.idempotency_key == key)
            )
        return (
            None if account_id is None else await self.get_account(account_id, tenant_id=tenant_id)
        )

    async def _system_move(
        self,
        session: AsyncSession,
        account: TradingAccount,
        kind: str,
        amount: Decimal,
        comment: str,
        actor: Actor,
        now: datetime,
    ) -> Transaction:
        """One approved system transaction of ``kind`` moving ``amount`` (account
        currency, signed: negative leaves) on ``account`` in ``session``: one ledger row
        and ``transaction.created``."""
        move = Transaction(
            id=new_id(),
            account_id=account.id,
            login=account.login,
            type=kind,
            status="PENDING",
            source="system",
            amount=amount,
            currency=account.currency,
            account_amount=amount,
            comment=comment,
            created_by=actor.id,
            created_at=now,
            updated_at=now,
        )
        session.add(move)
        await self.kernel.transactions.approve_in(session, move, account, actor, now)
        TransactionService.event(session, "transaction.created", move, now)
        return move

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
        ``account.created`` emitted, and ``trader.created`` for a new customer).
        Idempotent on ``(tenant_id, external_ref)``: a repeat returns the first account.
        404 unknown plan, 409 retired plan or (a partner) another customer's email,
        422 unknown ``customer_id`` (for a partner: not its own trader; see
        :meth:`_customer`)."""
        key = None if external_ref is None else f"{tenant_id or '-'}:{external_ref}"
        if key is not None:
            existing = await self._by_key(key, tenant_id)
            if existing is not None:
                return existing
        kernel = self.kernel
        now = kernel.clock.now()
        try:
            async with kernel.db.transaction() as session:
                plan = await self._plan(session, plan_id, tenant_id, catalog)
                if plan.status != "active":
                    raise PropError(409, "The plan is retired")
                spec = self.engine.plans.get(plan.id) or plan_spec(plan)
                customer, created = await self._customer(session, trader, tenant_id, now)
                account = new_real_account(
                    await kernel.ids.next_login(session),
                    customer.id,
                    await self._group_id(session, plan),
                    plan.currency,
                    plan.leverage,
                    now,
                )
                session.add(account)
                await session.flush()
                size = plan.account_size
                await self._system_move(
                    session,
                    account,
                    "DEPOSIT",
                    size,
                    f"Prop challenge {plan.code}: initial balance",
                    SYSTEM,
                    now,
                )
                day = trading_day(now, spec.reset_time, spec.zone)
                prop = PropAccount(
                    id=f"prop_{uuid.uuid4().hex[:20]}",
                    login=account.login,
                    plan_id=plan.id,
                    tenant_id=tenant_id,
                    customer_id=customer.id,
                    source=source,
                    external_ref=external_ref,
                    idempotency_key=key,
                    phase_index=0,
                    phase=spec.phase_name(0),
                    cycle=1,
                    status="active",
                    initial_balance=size,
                    account_size=size,
                    phase_started_at=now,
                    day=day,
                    day_reset_at=day_start(day, spec.reset_time, spec.zone),
                    day_start_balance=size,
                    day_start_equity=size,
                    peak_eod_balance=size,
                    peak_equity=size,
                    rule_overrides={},
                    warnings={},
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
                session.add(prop)
                view = self.engine.view_of(prop, spec)
                payload = view.base_payload()
                record_event(
                    session,
                    "account.created",
                    {
                        **payload,
                        "source": source,
                        "initial_balance": money_text(size, plan.currency),
                        "currency": plan.currency,
                    },
                    now,
                )
                if created:
                    record_event(
                        session, "trader.created", {**payload, "email": customer.email}, now
                    )
        except IntegrityError:
            if key is None:
                raise
            existing = await self._by_key(key, tenant_id)
            if existing is None:
                raise
            return existing
        self.engine.install(view)
        return await self.get_account(prop.id, tenant_id=tenant_id)

    def _account_query(self, tenant_id: str | None) -> Any:
        query = select(PropAccount)
        if tenant_id is not None:
            query = query.where(PropAccount.tenant_id == tenant_id)
        return query

    async def _row(self, account_id: str, tenant_id: str | None) -> PropAccount:
        async with self.kernel.db.read() as session:
            row: PropAccount | None = await session.scalar(
                self._account_query(tenant_id).where(PropAccount.id == account_id)
            )
        if row is None:
            raise PropError(404, "Account not found")
        return row

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
        """``(accounts, total)`` newest first (the :meth:`get_account` view)."""
        query = self._account_query(tenant_id)
        for column, value in (
            (PropAccount.status, status),
            (PropAccount.phase, phase),
            (PropAccount.plan_id, plan_id),
            (PropAccount.customer_id, customer_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if created_from is not None:
            query = query.where(PropAccount.created_at >= created_from)
        if created_to is not None:
            query = query.where(PropAccount.created_at <= created_to)
        async with self.kernel.db.read() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = (
                await session.scalars(
                    query.order_by(PropAccount.created_at.desc(), PropAccount.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return await self._accounts_json(rows), int(total or 0)

    async def get_account(self, account_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """State: id, login, plan_id, phase, status, balance, equity, drawdown used
        (daily and max), target progress, trading days, timestamps. 404 unknown."""
        return (await self._accounts_json([await self._row(account_id, tenant_id)]))[0]

    async def get_accounts(
        self, account_ids: Sequence[str], *, tenant_id: str | None
    ) -> dict[str, dict[str, Any]]:
        """The :meth:`get_account` views of ``account_ids`` by id, read at once (a
        constant number of queries); unknown and foreign ids are left out."""
        if not account_ids:
            return {}
        async with self.kernel.db.read() as session:
            rows = (
                await session.scalars(
                    self._account_query(tenant_id).where(PropAccount.id.in_(account_ids))
                )
            ).all()
        return {view["id"]: view for view in await self._accounts_json(rows)}

    async def _accounts_json(self, rows: Sequence[PropAccount]) -> list[dict[str, Any]]:
        """The views of ``rows`` with a constant number of queries (histories of every
        row at once, the trading accounts in one read)."""
        return [self._account_json(row, metrics) for row, metrics in await self._metrics(rows)]

    @staticmethod
    def _account_json(row: PropAccount, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": row.id,
            "login": row.login,
            "plan_id": row.plan_id,
            "tenant_id": row.tenant_id,
            "customer_id": row.customer_id,
            "source": row.source,
            "external_ref": row.external_ref,
            "phase": row.phase,
            "phase_index": row.phase_index,
            "status": row.status,
            "tier": row.tier,
            "currency": metrics["currency"],
            "initial_balance": row.initial_balance,
            "account_size": row.account_size,
            "profit_split": row.profit_split,
            "scaled_at": row.scaled_at,
            **{k: v for k, v in metrics.items() if k not in ("rules", "currency")},
            "breach": None
            if row.breach_rule is None
            else {
                "rule": row.breach_rule,
                "reason": row.breach_reason,
                "floor": row.breach_floor,
                "equity": row.breach_equity,
                "at": row.breached_at,
            },
            "rule_overrides": row.rule_overrides,
            "phase_started_at": row.phase_started_at,
            "funded_at": row.funded_at,
            "last_trade_at": row.last_trade_at,
            "last_payout_at": row.last_payout_at,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    async def metrics(self, account_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """Metrics snapshot: ``id``, ``login``, ``phase``, ``status`` (as
        :meth:`get_account`), ``equity``, ``balance``; ``daily_drawdown`` = max(0, day
        start balance - equity) and ``max_drawdown`` = max(0, initial - equity) with
        their percent of the initial balance; ``profit``, ``target`` and
        ``target_progress_pct`` (profit / (target - initial) x 100); ``trading_days``;
        ``best_day_share_pct`` (best day / total closed profit x 100); ``days_remaining``
        (whole days, rounded up, to the earliest ``period_ends_at`` a rule reports; None
        without a maximum trading period); ``rules``: one item per rule
        ``{rule, type, objective, status, reason, numbers}`` (money as strings). 404."""
        return (await self.evaluation(account_id, tenant_id=tenant_id))[1]

    async def evaluation(
        self, account_id: str, *, tenant_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The :meth:`get_account` view and the :meth:`metrics` snapshot of one account
        from one computation (the two agree). 404 unknown."""
        row = await self._row(account_id, tenant_id)
        metrics = (await self._metrics([row]))[0][1]
        snapshot = {"id": row.id, "login": row.login, "phase": row.phase, "status": row.status}
        return self._account_json(row, metrics), {**snapshot, **metrics}

    async def _metrics(
        self, rows: Sequence[PropAccount]
    ) -> list[tuple[PropAccount, dict[str, Any]]]:
        """Each row with its metrics (the :meth:`metrics` keys but id and login); the
        histories and trading accounts of every row are read at once. 404 when a
        trading account is gone."""
        logins = [row.login for row in rows]
        async with self.kernel.db.read() as session:
            days, profit = await _histories(session, logins)
        held = await self.kernel.trading.snapshots(logins)
        metrics = []
        for row in rows:
            state = held.get(row.login)
            if state is None:
                raise PropError(404, "Account not found")
            key = (row.login, row.cycle)
            metrics.append(
                (row, self._row_metrics(row, days.get(key, []), profit.get(key, {}), state))
            )
        return metrics

    def _row_metrics(
        self,
        row: PropAccount,
        days: Sequence[date],
        profit: Mapping[date, Decimal],
        held: AccountState,
    ) -> dict[str, Any]:
        kernel = self.kernel
        plan = self.engine.plans[row.plan_id]
        view = self.engine.view_of(row, plan, days, profit)
        currency = plan.currency
        positions, equity = positions_of(held, kernel.trading.valuation)
        balance = held.balance
        state = view.input(kernel.clock.now(), balance, equity, held.margin, positions)
        results = [(c, c.rule.evaluate(state)) for c in view.rules]
        initial = view.initial_balance
        equity_now = state.account.equity
        daily = max(Decimal(0), view.day.start_balance - equity_now)
        overall = max(Decimal(0), initial - equity_now)
        target_result = next((r for c, r in results if c.type == "profit_target"), None)
        target = None if target_result is None else target_result.numbers.get("target_level")
        progress = None if target_result is None else target_result.numbers.get("progress_pct")
        gain = equity_now - initial
        total = sum(profit.values(), Decimal(0))
        best = max(profit.values(), default=Decimal(0))
        ends = [
            datetime.fromisoformat(str(r.numbers["period_ends_at"]).replace("Z", "+00:00"))
            for _, r in results
            if r.numbers.get("period_ends_at")
        ]
        remaining = (
            None
            if not ends
            else max(0, math.ceil((min(ends) - state.account.now) / timedelta(days=1)))
        )
        return {
            "currency": currency,
            "balance": round_money(balance, currency),
            "equity": round_money(equity_now, currency),
            "daily_drawdown": round_money(daily, currency),
            "daily_drawdown_pct": _pct(daily, initial),
            "max_drawdown": round_money(overall, currency),
            "max_drawdown_pct": _pct(overall, initial),
            "profit": round_money(gain, currency),
            "target": target,
            "target_progress_pct": progress,
            "trading_days": len(days),
            "best_day_share_pct": _pct(best, total) if total > 0 else None,
            "days_remaining": remaining,
            "day": view.day.day,
            "day_start_balance": view.day.start_balance,
            "day_start_equity": view.day.start_equity,
            "rules": [
                {
                    "rule": c.rule.name,
                    "type": c.type,
                    "objective": c.rule.objective,
                    "status": r.status.value,
                    "reason": r.reason,
                    "numbers": {
                        k: money_text(v, currency) if isinstance(v, Decimal) else v
                        for k, v in r.numbers.items()
                    },
                }
                for c, r in results
            ],
        }

    async def _job(self, job: FutureJob) -> Any:
        self.kernel.trading.workers.submit(job)
        try:
            return await job.future
        except TradingError as exc:
            raise PropError(exc.status, exc.detail) from exc

    async def advance_phase(
        self, account_id: str, *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        """Start the next phase (manual approval of ``passed_pending_approval``, or a
        staff decision on an active account): balance set back to the plan size.
        404 unknown, 409 not active/pending or already funded."""
        row = await self._row(account_id, tenant_id)
        await self._job(PhaseJob(self.engine, row.login, "advance", actor))
        return await self.get_account(account_id, tenant_id=tenant_id)

    async def reset(self, account_id: str, *, tenant_id: str | None, actor: str) -> dict[str, Any]:
        """A fresh account for the current phase: positions closed, the balance set
        back to the plan size (one ledger row), trading days, profit, peaks, breach and
        scaling cleared, status active (funded on the funded stage). The account view
        plus ``reset_fee``: the plan's fee the trader owes for it (None without one;
        recorded on ``account.reset``, paid outside the trading account — no money moves
        on it). 404, 409 archived."""
        row = await self._row(account_id, tenant_id)
        await self._job(PhaseJob(self.engine, row.login, "reset", actor))
        view = await self.get_account(account_id, tenant_id=tenant_id)
        return {**view, "reset_fee": self.engine.plans[row.plan_id].reset_fee}

    OPERATIONS = {
        "deposit": ("DEPOSIT", "DEPOSIT"),
        "withdraw": ("WITHDRAWAL", "WITHDRAWAL"),
        "credit": ("CREDIT_IN", "CREDIT_OUT"),
        "adjust": ("CORRECTION_IN", "CORRECTION_OUT"),
    }

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
        """``operation``: deposit, withdraw (amount > 0), credit or adjust (signed
        amount; negative removes); one approved system transaction and ledger row each.
        A withdrawal is limited to the withdrawable amount (min(balance, free margin)).
        Returns ``{"account": view, "transaction_id"}``. 404, 409 archived, 422."""
        row = await self._row(account_id, tenant_id)
        kinds = self.OPERATIONS.get(operation)
        if kinds is None:
            raise PropError(422, [_field("operation", f"unknown operation {operation!r}", "enum")])
        if amount == 0 or (operation in ("deposit", "withdraw") and amount < 0):
            raise PropError(422, [_field("amount", "must be greater than 0", "exclusiveMinimum")])
        if row.status == "archived":
            raise PropError(409, "The account is archived")
        kind = kinds[0] if amount > 0 else kinds[1]
        plan = self.engine.plans[row.plan_id]
        state = await self.kernel.trading.account_state(row.login)
        if kind == "WITHDRAWAL" and state is not None and amount > state["max_withdrawable"]:
            withdrawable = money_text(state["max_withdrawable"], plan.currency)
            raise PropError(
                422,
                [_field("amount", f"exceeds the withdrawable amount {withdrawable}", "maximum")],
            )
        try:
            tx = await self.kernel.transactions.create_manual(
                TransactionRequest(
                    type=kind,
                    login=row.login,
                    amount=abs(amount),
                    currency=plan.currency,
                    status="APPROVED",
                    comment=comment or f"Prop {operation}",
                    source="system",
                ),
                actor,
            )
        except TradingError as exc:
            raise PropError(exc.status, exc.detail) from exc
        await self.kernel.trading.snapshot(row.login)
        return {
            "account": await self.get_account(account_id, tenant_id=tenant_id),
            "transaction_id": tx.id,
        }

    async def update_account(
        self, account_id: str, changes: Mapping[str, Any], *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        """``status`` (active/suspended), ``tier``, ``rule_overrides`` (per rule name,
        params replacing the plan's, validated against the rule type's schema).
        404, 409 (status not allowed from the current one), 422."""
        row = await self._row(account_id, tenant_id)
        errors = []
        overrides = changes.get("rule_overrides")
        if overrides is not None:
            errors.extend(self._override_errors(row, overrides))
        status = changes.get("status")
        if status is not None and status not in ("active", "suspended"):
            errors.append(_field("status", "must be active or suspended", "enum"))
        if errors:
            raise PropError(422, errors)
        if status is not None and status != row.status:
            plan = self.engine.plans[row.plan_id]
            if status == "suspended":
                await self._job(StatusJob(self.engine, row.login, "suspended", TRADING))
            else:
                target = "funded" if row.phase_index >= len(plan.phases) else "active"
                await self._job(StatusJob(self.engine, row.login, target, ("suspended",)))
        if "tier" in changes or overrides is not None:
            async with self.kernel.db.transaction() as session:
                fresh = await session.get(PropAccount, row.id, with_for_update=True)
                assert fresh is not None
                if "tier" in changes:
                    fresh.tier = changes["tier"]
                if overrides is not None:
                    fresh.rule_overrides = json_safe(dict(overrides))
                fresh.version += 1
                fresh.updated_at = self.kernel.clock.now()
            await self._reinstall(fresh)
        return await self.get_account(account_id, tenant_id=tenant_id)

    def _override_errors(self, row: PropAccount, overrides: Any) -> list[dict[str, Any]]:
        if not isinstance(overrides, Mapping):
            return [_field("rule_overrides", "must be an object", "type")]
        plan = self.engine.plans[row.plan_id]
        by_name = {item.get("name", item["type"]): item for item in plan.rules_of(row.phase_index)}
        errors = []
        for name, params in overrides.items():
            item = by_name.get(name)
            if item is None or item["type"] not in self.types:
                errors.append(_field("rule_overrides", f"no rule {name!r} in the phase", "rule"))
                continue
            merged = {**json_safe(item.get("params") or {}), **json_safe(dict(params or {}))}
            for error in DefaultingValidator(self.types[item["type"]].schema).iter_errors(merged):
                errors.append(
                    {
                        "loc": ["body", "rule_overrides", name, *error.absolute_path],
                        "msg": error.message,
                        "type": str(error.validator),
                    }
                )
        return errors

    async def _reinstall(self, row: PropAccount) -> None:
        async with self.kernel.db.read() as session:
            days, profit = await self.engine.load_history(session, row.login, row.cycle)
        self.engine.install(self.engine.view_of(row, self.engine.plans[row.plan_id], days, profit))
        if self.kernel.trading.risk is not None:
            self.kernel.trading.risk.settle()

    async def archive(
        self, account_id: str, *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        """Close every position and archive the account (no trading, kept for
        records). 404, 409 already archived."""
        row = await self._row(account_id, tenant_id)
        allowed = [s for s in ACCOUNT_STATUSES if s != "archived"]
        await self._job(StatusJob(self.engine, row.login, "archived", allowed))
        return await self.get_account(account_id, tenant_id=tenant_id)

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
        """A payout of a funded account's profit (closed balance - initial balance):
        ``amount`` None pays all of it. ``trader_share`` = amount x profit_split / 100
        (rounded to the currency), ``firm_share`` the rest. Refusals: 409 not funded,
        positions open, a payout pending, no profit, or before the cadence allows
        (first ``payout_first_after_days`` after the funded start, then
        ``payout_every_days`` after the last payout; the date is in the message);
        422 amount not positive, above the profit or below the plan's minimum.
        ``execute`` True processes it at once, False leaves it ``pending`` approval.
        Emits ``payout.requested`` (and ``payout.processed``)."""
        row = await self._row(account_id, tenant_id)
        kernel = self.kernel
        async with kernel.db.read() as session:
            plan = await session.get(PropPlan, row.plan_id)
            pending = await session.scalar(
                select(func.count())
                .select_from(PropPayout)
                .where(PropPayout.account_id == row.id, PropPayout.status == "pending")
            )
        assert plan is not None
        currency = plan.currency
        if row.status != "funded":
            raise PropError(409, f"Payouts are only for funded accounts (this one is {row.status})")
        if pending:
            raise PropError(409, "A payout of this account is pending")
        now = kernel.clock.now()
        start = row.last_payout_at or row.funded_at or row.phase_started_at
        wait = plan.payout_every_days if row.last_payout_at else plan.payout_first_after_days
        eligible = start + timedelta(days=wait)
        if now < eligible:
            raise PropError(409, f"The next payout is possible from {eligible.isoformat()}")
        state = await kernel.trading.snapshot(row.login)
        if state is None:
            raise PropError(404, "Account not found")
        if state.positions:
            raise PropError(409, "Close every position before requesting a payout")
        profit = state.balance - row.initial_balance
        if profit <= 0:
            raise PropError(409, f"No profit to pay out (profit {money_text(profit, currency)})")
        value = profit if amount is None else amount
        errors = []
        if value <= 0:
            errors.append(_field("amount", "must be greater than 0", "exclusiveMinimum"))
        elif value > profit:
            errors.append(
                _field(
                    "amount",
                    f"exceeds the profit available {money_text(profit, currency)}",
                    "maximum",
                )
            )
        elif value < plan.payout_minimum:
            errors.append(
                _field(
                    "amount",
                    "is below the plan's payout minimum "
                    f"{money_text(plan.payout_minimum, currency)}",
                    "minimum",
                )
            )
        if errors:
            raise PropError(422, errors)
        split = plan.profit_split if row.profit_split is None else row.profit_split
        trader_share = round_money(value * split / HUNDRED, currency)
        payout = PropPayout(
            id=f"payout_{uuid.uuid4().hex[:20]}",
            account_id=row.id,
            tenant_id=row.tenant_id,
            login=row.login,
            amount=value,
            trader_share=trader_share,
            firm_share=value - trader_share,
            currency=currency,
            status="pending",
            destination=json_safe(dict(destination)) if destination is not None else None,
            requested_by=actor,
            requested_at=now,
        )
        async with kernel.db.transaction() as session:
            session.add(payout)
            record_event(
                session,
                "payout.requested",
                {**self._view(row).base_payload(), **self._payout_numbers(payout)},
                now,
            )
        if execute:
            return await self.approve_payout(payout.id, tenant_id=tenant_id, actor=actor)
        return payout_json(payout)

    @staticmethod
    def _payout_numbers(payout: PropPayout) -> dict[str, Any]:
        return {
            "payout_id": payout.id,
            "amount": money_text(payout.amount, payout.currency),
            "trader_share": money_text(payout.trader_share, payout.currency),
            "firm_share": money_text(payout.firm_share, payout.currency),
        }

    async def approve_payout(
        self, payout_id: str, *, tenant_id: str | None, actor: str
    ) -> dict[str, Any]:
        """Process a pending payout in one unit of work: an approved WITHDRAWAL of the
        amount (one ledger row, ``ledger_ref`` its transaction id), ``last_payout_at``
        set, the plan's scaling applied when due (:meth:`_scale`, ``account.scaled``),
        and with the plan's ``drawdown_after_payout`` = ``rebase`` the initial
        balance, peaks and trailing floor re-based on the balance after the payout
        (``keep``: only the day snapshot moves down by the amount, since the money left
        without a loss). Emits ``payout.processed``.

        When the payout can no longer be processed — the account left ``funded``
        (breached, failed, archived) or its profit (balance - initial balance) no
        longer covers the amount since the request — it ends ``failed`` instead, in
        the same unit of work: ``reason`` says why, no ledger row is written, and
        ``payout.failed`` is emitted (the payout numbers and ``reason``); the answer is
        that payout. 404 unknown or another tenant's, 409 not pending."""
        kernel = self.kernel
        now = kernel.clock.now()
        async with kernel.db.transaction() as session:
            payout = await session.get(PropPayout, payout_id, with_for_update=True)
            if payout is None or (tenant_id is not None and payout.tenant_id != tenant_id):
                raise PropError(404, "Payout not found")
            if payout.status != "pending":
                raise PropError(409, f"The payout is {payout.status}")
            # the trading account before the prop account, as the order workers lock
            # them (PostgreSQL deadlocks on the opposite order)
            account = await ledger.lock_account(session, payout.login)
            assert account is not None
            row = await session.get(PropAccount, payout.account_id, with_for_update=True)
            assert row is not None
            profit = account.balance - row.initial_balance
            if row.status != "funded":
                failure: str | None = f"The account is {row.status}"
            elif payout.amount > profit:
                failure = (
                    f"The account's profit {money_text(profit, payout.currency)} no longer "
                    "covers the payout"
                )
            else:
                failure = None
            if failure is not None:
                self._decline(session, payout, row, "failed", failure, actor, now)
                return payout_json(payout)
            withdrawal = await self._system_move(
                session,
                account,
                "WITHDRAWAL",
                -payout.amount,
                f"Prop payout {payout.id}",
                Actor(actor),
                now,
            )
            payout.status = "processed"
            payout.processed_by = actor
            payout.processed_at = now
            payout.ledger_ref = withdrawal.id
            plan = self.engine.plans[row.plan_id]
            row.last_payout_at = now
            row.day_start_balance -= payout.amount
            row.day_start_equity -= payout.amount
            if plan.drawdown_after_payout == "rebase":
                row.initial_balance = account.balance
                row.peak_eod_balance = row.peak_equity = account.balance
                row.max_loss_floor = None
            row.version += 1
            row.updated_at = now
            view = self.engine.view_of(row, plan)
            record_event(
                session,
                "payout.processed",
                {**view.base_payload(), **self._payout_numbers(payout)},
                now,
            )
            await self._scale(session, row, account, Actor(actor), now)
        await self._reinstall(row)
        return payout_json(payout)

    async def reject_payout(
        self, payout_id: str, *, tenant_id: str | None, actor: str, reason: str
    ) -> dict[str, Any]:
        """Decline a pending payout: status ``rejected`` with ``reason``, who and when;
        no money moves (the profit stays on the account, a new request may follow).
        Emits ``payout.rejected`` (the payout numbers and ``reason``). 404 unknown or
        another tenant's, 409 not pending."""
        now = self.kernel.clock.now()
        async with self.kernel.db.transaction() as session:
            payout = await session.get(PropPayout, payout_id, with_for_update=True)
            if payout is None or (tenant_id is not None and payout.tenant_id != tenant_id):
                raise PropError(404, "Payout not found")
            if payout.status != "pending":
                raise PropError(409, f"The payout is {payout.status}")
            row = await session.get(PropAccount, payout.account_id)
            assert row is not None
            self._decline(session, payout, row, "rejected", reason, actor, now)
        return payout_json(payout)

    def _view(self, row: PropAccount) -> PropView:
        """The account's cached view, else one built from ``row``."""
        return self.engine.views.get(row.login) or self.engine.view_of(
            row, self.engine.plans[row.plan_id]
        )

    def _decline(
        self,
        session: AsyncSession,
        payout: PropPayout,
        row: PropAccount,
        status: str,
        reason: str,
        actor: str,
        now: datetime,
    ) -> None:
        """End a pending payout ``status`` (``rejected`` or ``failed``) with ``reason``,
        who and when, no money moved; emits ``payout.<status>`` (the payout numbers
        and ``reason``) in ``session``."""
        payout.status = status
        payout.reason = reason
        payout.processed_by = actor
        payout.processed_at = now
        record_event(
            session,
            f"payout.{status}",
            {**self._view(row).base_payload(), **self._payout_numbers(payout), "reason": reason},
            now,
        )

    async def _scale(
        self,
        session: AsyncSession,
        row: PropAccount,
        account: TradingAccount,
        actor: Actor,
        now: datetime,
    ) -> bool:
        """The plan's scaling, checked in the unit of work of ``session`` when a payout
        is processed and at each day reset of the plan (:meth:`scale_due`).

        The scaling cycle runs from the funded start (or the last scaling) for
        ``every_months`` calendar months; once it has run, the account qualifies when
        the cycle holds at least ``min_payouts`` processed payouts and its profit —
        the payouts processed in the cycle + (balance - initial balance) — is at least
        ``min_profit_pct`` % of the account size. The size then grows by
        ``increase_pct`` % (capped at ``max_size``; rounded to the currency): one
        approved system DEPOSIT (one ledger row), the initial balance, day snapshot,
        peaks and trailing floor move up by the increase (the floors follow the new
        size), ``profit_split`` replaces the trader's share when given, a new cycle
        starts and ``account.scaled`` is emitted with the numbers (money as strings:
        ``previous_size``, ``account_size``, ``increase``, ``cycle_profit``, ``payouts``,
        ``profit_split``). Not qualifying: the cycle goes on to the next check.
        Returns whether the account scaled (the caller bumps the row's version)."""
        plan = await session.get(PropPlan, row.plan_id)
        rules = None if plan is None else plan.scaling
        if plan is None or not rules or row.status != "funded":
            return False
        start = row.scaled_at or row.funded_at or row.phase_started_at
        if now < add_months(start, int(rules["every_months"])):
            return False
        amounts = (
            await session.scalars(
                select(PropPayout.amount).where(
                    PropPayout.account_id == row.id,
                    PropPayout.status == "processed",
                    PropPayout.processed_at > start,
                )
            )
        ).all()
        size = row.account_size
        profit = sum(amounts, Decimal(0)) + account.balance - row.initial_balance
        minimum = Decimal(str(rules["min_profit_pct"]))
        if len(amounts) < int(rules.get("min_payouts") or 0) or profit * HUNDRED < minimum * size:
            return False
        target = size * (HUNDRED + Decimal(str(rules["increase_pct"]))) / HUNDRED
        if rules.get("max_size") is not None:
            target = min(target, Decimal(str(rules["max_size"])))
        currency = plan.currency
        increase = round_money(target - size, currency)
        if increase <= 0:
            return False
        await self._system_move(
            session,
            account,
            "DEPOSIT",
            increase,
            f"Prop account {row.id} scaled to {money_text(size + increase, currency)}",
            actor,
            now,
        )
        row.account_size = size + increase
        row.initial_balance += increase
        row.day_start_balance += increase
        row.day_start_equity += increase
        row.peak_eod_balance += increase
        engine_peak = self.engine.peak(row.login)  # a peak reached since the last write
        if engine_peak is not None:
            row.peak_equity = max(row.peak_equity, peak_of(engine_peak))
        row.peak_equity += increase
        if row.max_loss_floor is not None:
            row.max_loss_floor += increase
        if rules.get("profit_split") is not None:
            row.profit_split = Decimal(str(rules["profit_split"]))
        row.scaled_at = now
        split = plan.profit_split if row.profit_split is None else row.profit_split
        numbers = {
            "previous_size": money_text(size, currency),
            "account_size": money_text(row.account_size, currency),
            "increase": money_text(increase, currency),
            "cycle_profit": money_text(profit, currency),
            "payouts": len(amounts),
            "profit_split": format(split.normalize(), "f"),  # a stored split has NUMERIC scale
        }
        record_event(session, "account.scaled", {**self._view(row).base_payload(), **numbers}, now)
        return True

    async def scale_due(self, plan_id: str, at: datetime) -> int:
        """The day reset's scaling check of ``plan_id`` at ``at`` (UTC): every funded
        account whose scaling cycle has run (``every_months`` since the funded start
        or the last scaling) is checked by :meth:`_scale` in its own unit of work (the
        trading account locked before the prop account, as the order workers lock
        them; a second process finds the new cycle and does nothing), so an account
        that qualifies scales at the first reset after its cycle ends even without a
        payout then. Returns the accounts scaled. One query when the plan has no
        scaling."""
        async with self.kernel.db.read() as session:
            rules = await session.scalar(select(PropPlan.scaling).where(PropPlan.id == plan_id))
            if not rules:
                return 0
            # a coarse bound (a month has >= 28 days); _scale checks the calendar months
            ended = at - timedelta(days=28 * int(rules["every_months"]))
            start = func.coalesce(
                PropAccount.scaled_at, PropAccount.funded_at, PropAccount.phase_started_at
            )
            ids = (
                await session.scalars(
                    select(PropAccount.id).where(
                        PropAccount.plan_id == plan_id,
                        PropAccount.status == "funded",
                        start <= ended,
                    )
                )
            ).all()
        scaled = 0
        for account_id in ids:
            async with self.kernel.db.transaction() as session:
                login = await session.scalar(
                    select(PropAccount.login).where(PropAccount.id == account_id)
                )
                account = await ledger.lock_account(session, login)
                row = await session.get(PropAccount, account_id, with_for_update=True)
                assert account is not None and row is not None
                if not await self._scale(session, row, account, SYSTEM, at):
                    continue
                row.version += 1
                row.updated_at = at
            scaled += 1
            await self._reinstall(row)
        return scaled

    async def list_payouts(
        self,
        *,
        tenant_id: str | None,
        status: str | None = None,
        account_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """``(payouts, total)`` newest first."""
        query = select(PropPayout)
        if tenant_id is not None:
            query = query.where(PropPayout.tenant_id == tenant_id)
        if status is not None:
            query = query.where(PropPayout.status == status)
        if account_id is not None:
            query = query.where(PropPayout.account_id == account_id)
        async with self.kernel.db.read() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = (
                await session.scalars(
                    query.order_by(PropPayout.requested_at.desc(), PropPayout.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return [payout_json(p) for p in rows], int(total or 0)

    async def get_payout(self, payout_id: str, *, tenant_id: str | None) -> dict[str, Any]:
        """One payout; 404 unknown or another tenant's."""
        async with self.kernel.db.read() as session:
            payout = await session.get(PropPayout, payout_id)
        if payout is None or (tenant_id is not None and payout.tenant_id != tenant_id):
            raise PropError(404, "Payout not found")
        return payout_json(payout)


def challenge_service(kernel: Any) -> ChallengeService:
    """The running challenges service; RuntimeError when the plugin is not enabled."""
    service = kernel.extensions.get(PLUGIN_NAME)
    if not isinstance(service, ChallengeService):
        raise RuntimeError("the challenges plugin is not enabled")
    return service
