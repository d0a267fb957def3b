"""Tables of the challenges plugin (revision 0009): plans, prop accounts, days, payouts.

Money columns are exact ``Decimal`` (NUMERIC) in the plan's currency; times are aware
UTC; trading days (``date``) are days of the plan's timezone after its reset time
(:mod:`brokerkernel.kernel.prop.days`). The models share the kernel's ``Base`` so one
metadata holds every table (Alembic's model parity check imports this module).

A prop account's **cycle** counts its attempts at phases: it starts at 1 and grows on
every phase change and every reset, so trading days and daily profit of earlier
phases never count towards the current one.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base

#: Plan visibility: ``public`` (every tenant may sell it), ``private`` (only the
#: tenants in ``allowed_tenants``), ``hidden`` (only its owner).
VISIBILITIES = ("public", "private", "hidden")
PLAN_STATUSES = ("active", "retired")
ACCOUNT_STATUSES = (
    "active",
    "passed_pending_approval",
    "funded",
    "failed",
    "archived",
    "suspended",
)
PAYOUT_STATUSES = ("pending", "processed", "rejected", "failed")


class PropPlan(Base):
    """A challenge plan: size, price, phases with their rules, funded terms, payouts.

    ``phases`` is a list of ``{"name", "rules": [{"type", "name"?, "params"}],
    "auto_advance"?}``; ``funded_rules`` the rules of the funded stage (same item
    shape). ``profit_split`` is the trader's share in percent (80 = 80%);
    ``payout_first_after_days`` counts from the funded start, ``payout_every_days``
    from the last payout; ``payout_minimum`` in ``currency``. ``day_reset_time``
    ``"HH:MM"`` in ``timezone`` (IANA) starts each trading day.
    ``drawdown_after_payout`` is ``keep`` (floors unchanged) or ``rebase`` (initial
    balance, peaks and the trailing floor re-based on the balance after the payout).
    ``scaling`` (null: none) is ``{"every_months", "min_profit_pct", "increase_pct",
    "min_payouts"?, "max_size"?, "profit_split"?}`` (ChallengeService.approve_payout);
    ``reset_fee`` what a reset costs the trader (recorded, paid outside the account).
    ``tenant_id`` None: broker-owned.
    """

    __tablename__ = "prop_plans"
    __table_args__ = (UniqueConstraint("owner_key", "code"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: ``tenant_id`` or ``"-"`` for the broker: makes (owner, code) unique in SQL.
    owner_key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    account_size: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(8))
    leverage: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal]
    group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id"))
    phases: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    funded_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    profit_split: Mapped[Decimal]
    payout_first_after_days: Mapped[int] = mapped_column(Integer)
    payout_every_days: Mapped[int] = mapped_column(Integer)
    payout_minimum: Mapped[Decimal]
    scaling: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reset_fee: Mapped[Decimal | None]
    visibility: Mapped[str] = mapped_column(String(16))
    allowed_tenants: Mapped[list[str]] = mapped_column(JSON)
    day_reset_time: Mapped[str] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64))
    drawdown_after_payout: Mapped[str] = mapped_column(String(8))
    auto_advance: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PropAccount(Base):
    """A trader's challenge account: its trading account (``login``), plan, phase,
    status and the state its rules need (day snapshot, peaks, breach).

    ``phase_index`` counts the plan's phases from 0; ``phase`` is the phase's name or
    ``"funded"``. ``day`` / ``day_reset_at`` / ``day_start_balance`` /
    ``day_start_equity`` are the current trading day's snapshot; ``peak_eod_balance``
    the highest balance at a day reset (the initial balance included); ``peak_equity``
    the highest equity seen; ``max_loss_floor`` the trailing max-loss floor reached
    (never decreasing). ``account_size`` / ``profit_split`` / ``scaled_at``: the
    funded account's scaling (the plan's ``scaling``). ``warnings`` maps a warning
    level to the trading day it was last announced (once per threshold per day).
    ``idempotency_key`` is ``"<tenant or ->:<external_ref>"`` (unique).
    """

    __tablename__ = "prop_accounts"
    __table_args__ = (Index("ix_prop_accounts_tenant_status", "tenant_id", "status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    login: Mapped[int] = mapped_column(ForeignKey("trading_accounts.login"), unique=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("prop_plans.id"), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    external_ref: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    phase_index: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    cycle: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(32))
    initial_balance: Mapped[Decimal]
    phase_started_at: Mapped[datetime]
    funded_at: Mapped[datetime | None]
    day: Mapped[date] = mapped_column(Date)
    day_reset_at: Mapped[datetime]
    day_start_balance: Mapped[Decimal]
    day_start_equity: Mapped[Decimal]
    peak_eod_balance: Mapped[Decimal]
    peak_equity: Mapped[Decimal]
    max_loss_floor: Mapped[Decimal | None]
    breach_rule: Mapped[str | None] = mapped_column(String(64))
    breach_reason: Mapped[str | None] = mapped_column(Text)
    breach_floor: Mapped[Decimal | None]
    breach_equity: Mapped[Decimal | None]
    breached_at: Mapped[datetime | None]
    target_reached_at: Mapped[datetime | None]
    last_trade_at: Mapped[datetime | None]
    last_payout_at: Mapped[datetime | None]
    #: The account's size now: the plan's, grown by the plan's scaling.
    account_size: Mapped[Decimal]
    #: The trader's share after scaling (percent); None: the plan's ``profit_split``.
    profit_split: Mapped[Decimal | None]
    #: When the account last scaled (the next scaling cycle starts there).
    scaled_at: Mapped[datetime | None]
    rule_overrides: Mapped[dict[str, Any]]
    warnings: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]


class PropTradingDay(Base):
    """A trading day (plan timezone) on which the account opened a position."""

    __tablename__ = "prop_trading_days"

    login: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    cycle: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class PropDailyProfit(Base):
    """Closed profit of one trading day (realised P&L + commission + swap of the deals
    closed that day, account currency), recomputed from the deal history."""

    __tablename__ = "prop_daily_profit"

    login: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    cycle: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    profit: Mapped[Decimal]


class PropPayout(Base):
    """A payout of a funded account: ``amount`` leaves the balance (one ledger
    withdrawal row, ``ledger_ref`` the money transaction's id when processed); the
    trader receives ``trader_share`` = amount x profit split, the firm keeps
    ``firm_share`` = amount - trader_share (account currency)."""

    __tablename__ = "prop_payouts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("prop_accounts.id"), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    login: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[Decimal]
    trader_share: Mapped[Decimal]
    firm_share: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), index=True)
    destination: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    processed_by: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    ledger_ref: Mapped[str | None] = mapped_column(String(64))
