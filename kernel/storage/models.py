"""SQLAlchemy 2 models of the kernel's tables.

Money, prices and volumes are :class:`~brokerkernel.kernel.storage.types.DecimalType`
(NUMERIC on PostgreSQL, exact text on SQLite); Python values are ``Decimal``.
Times are timezone-aware UTC. Alembic owns the schema (``alembic/versions``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from uuid_utils import uuid7

from brokerkernel.kernel.storage.types import DecimalType, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ZERO = Decimal(0)


def new_id() -> str:
    """A new primary key or request id: a UUID version 7 (RFC 9562 section 5.7) as
    its 36-character string, e.g. ``"01a1fee1-a7c6-7356-adcf-f693a3abc446"``.

    Version 7 leads with the Unix time in milliseconds (then a counter and random
    bits), so ids made later sort later: rows go in at the right-hand end of their
    primary-key B-tree instead of at random pages (SQLite and PostgreSQL both insert
    cheaper and keep their indexes denser). uuid-utils makes them in userspace,
    reseeded after ``fork``; ``uuid.uuid4`` calls ``os.urandom``, which releases the
    GIL, and under load the event loop then waits for the database driver's thread to
    hand it back (about 0.2 ms a call measured with a busy second thread).
    """
    return str(uuid7())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        Decimal: DecimalType(),
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
    }


class Instrument(Base):
    """Master instrument catalog (seed section 15) with MT5 calculation modes."""

    __tablename__ = "instruments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    symbol: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(64))
    calc_mode: Mapped[str] = mapped_column(String(24))
    base_currency: Mapped[str] = mapped_column(String(8))
    quote_currency: Mapped[str] = mapped_column(String(8))
    profit_currency: Mapped[str] = mapped_column(String(8))
    digits: Mapped[int] = mapped_column(SmallInteger)
    pip_size: Mapped[Decimal]
    contract_size: Mapped[Decimal]
    min_lot: Mapped[Decimal]
    max_lot: Mapped[Decimal]
    lot_step: Mapped[Decimal]
    margin_rate: Mapped[Decimal]
    spread: Mapped[Decimal]
    stale_threshold_ms: Mapped[int] = mapped_column(Integer, default=10_000)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tradeability: Mapped[str | None] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32), default="none")
    created_at: Mapped[datetime]
    # CFDINDEX / FUTURES terms and swaps (revision 0004; see kernel/trading/margin.py).
    tick_size: Mapped[Decimal | None]
    tick_price: Mapped[Decimal | None]
    initial_margin: Mapped[Decimal | None]
    swap_type: Mapped[str] = mapped_column(String(8), default="points")
    swap_long: Mapped[Decimal] = mapped_column(default=ZERO)
    swap_short: Mapped[Decimal] = mapped_column(default=ZERO)
    swap_triple_day: Mapped[str | None] = mapped_column(String(9), default="wednesday")


class Group(Base):
    """Trading group (seed section 16): currency, leverage, margin call/stop-out levels.

    At most one row has ``is_default`` (a partial unique index, revision 0004).
    """

    __tablename__ = "groups"
    __table_args__ = (
        Index(
            "uq_groups_is_default",
            "is_default",
            unique=True,
            postgresql_where=text("is_default"),
            sqlite_where=text("is_default"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(8))
    default_leverage: Mapped[int] = mapped_column(Integer)
    margin_call_level: Mapped[Decimal]
    stopout_level: Mapped[Decimal]
    commission_type: Mapped[str | None] = mapped_column(String(16))
    commission_value: Mapped[Decimal | None]
    swap_free: Mapped[bool] = mapped_column(Boolean, default=False)
    swap_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    swap_multiplier: Mapped[Decimal] = mapped_column(default=Decimal(1))
    swap_free_days: Mapped[int] = mapped_column(Integer, default=0)
    is_islamic: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    max_exposure: Mapped[Decimal | None]
    net_max_exposure: Mapped[bool] = mapped_column(Boolean, default=False)
    # Hedged margin (revision 0013; kernel.trading.margin): larger_side | rate | none.
    hedged_margin_mode: Mapped[str] = mapped_column(String(16), default="none")
    hedged_margin_rate: Mapped[Decimal] = mapped_column(default=Decimal(1))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class GroupInstrument(Base):
    """Per-group instrument override; every null column inherits from the catalog.

    ``spread`` is the group's spread markup in pips, converted to a price delta at fill.
    """

    __tablename__ = "group_instruments"
    __table_args__ = (UniqueConstraint("group_id", "symbol"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"))
    symbol: Mapped[str] = mapped_column(ForeignKey("instruments.symbol"))
    spread: Mapped[Decimal | None]
    margin_rate: Mapped[Decimal | None]
    tradeability: Mapped[str | None] = mapped_column(String(16))
    commission_type: Mapped[str | None] = mapped_column(String(16))
    commission_value: Mapped[Decimal | None]
    min_lot: Mapped[Decimal | None]
    max_lot: Mapped[Decimal | None]
    # The group's swap config (revision 0004): all three set, or all null (inherit).
    swap_type: Mapped[str | None] = mapped_column(String(8))
    swap_long: Mapped[Decimal | None]
    swap_short: Mapped[Decimal | None]


class Role(Base):
    """Staff role; ``permissions`` lists the permission codes it grants.

    RBAC columns (seed section 19, revision 0002): ``customer_view_scope`` own/team/all,
    ``customer_edit_scope`` none/own/team/all, ``pii_email``/``pii_phone``
    full/masked/hidden, ``can_export_pii``, ``level`` (seniority; escalation guard).
    """

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    customer_view_scope: Mapped[str] = mapped_column(String(8), default="own")
    customer_edit_scope: Mapped[str] = mapped_column(String(8), default="none")
    pii_email: Mapped[str] = mapped_column(String(8), default="masked")
    pii_phone: Mapped[str] = mapped_column(String(8), default="masked")
    can_export_pii: Mapped[bool] = mapped_column(Boolean, default=False)
    level: Mapped[int] = mapped_column(Integer, default=0)


class StaffUser(Base):
    """Broker staff (CRM/back-office) user; password hashed with argon2."""

    __tablename__ = "staff_users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str] = mapped_column(String(128), default="")
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"))
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class Customer(Base):
    """A trader (seed section 3)."""

    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str] = mapped_column(String(128), default="")
    phone: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(2))
    gender: Mapped[str | None] = mapped_column(String(16))
    registration_source: Mapped[str] = mapped_column(String(16), default="organic")
    affiliate_id: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str | None] = mapped_column(String(64))
    funnel: Mapped[str | None] = mapped_column(String(64))
    affiliate_lead_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    compliance_status: Mapped[str] = mapped_column(String(16), default="active")
    force_password_change: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    reg_time: Mapped[datetime]


class TradingAccount(Base):
    """A trading account, addressed by its ``login``.

    ``balance``, ``credit`` and ``margin`` are in ``currency`` and always equal the
    running totals of the account's last ledger event; ``ledger_seq`` is that event's
    ``sequence_num``.
    """

    __tablename__ = "trading_accounts"

    id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    login: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"), index=True)
    currency: Mapped[str] = mapped_column(String(8))
    leverage: Mapped[int] = mapped_column(Integer)
    account_type: Mapped[str] = mapped_column(String(8), default="real")
    balance: Mapped[Decimal] = mapped_column(default=ZERO)
    credit: Mapped[Decimal] = mapped_column(default=ZERO)
    margin: Mapped[Decimal] = mapped_column(default=ZERO)
    ledger_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # Revision 0007: bumped by every write to the account's money, positions or
    # pending orders (kernel/trading/ledger.py), so cached account state is checked
    # against it; "hedging" (independent positions) or "netting" (one per symbol).
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    account_mode: Mapped[str] = mapped_column(String(8), default="hedging")


class Position(Base):
    """An open position (MT5 "order" in the seed's trading API), keyed by ``ticket``.

    ``cmd`` 0 buy / 1 sell; ``volume`` in lots; prices in quote currency; ``margin``,
    ``commission`` and ``swap`` in account currency. ``terms`` snapshots the group's
    instrument terms at open, so a group change does not alter an open position.
    """

    __tablename__ = "positions"

    ticket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    login: Mapped[int] = mapped_column(ForeignKey("trading_accounts.login"), index=True)
    symbol: Mapped[str] = mapped_column(String(32))
    cmd: Mapped[int] = mapped_column(SmallInteger)
    volume: Mapped[Decimal]
    open_price: Mapped[Decimal]
    open_time: Mapped[datetime]
    sl: Mapped[Decimal | None]
    tp: Mapped[Decimal | None]
    margin: Mapped[Decimal]
    commission: Mapped[Decimal] = mapped_column(default=ZERO)
    swap: Mapped[Decimal] = mapped_column(default=ZERO)
    open_fx_rate: Mapped[Decimal]
    comment: Mapped[str | None] = mapped_column(String(128))
    terms: Mapped[dict[str, Any]]
    # Revision 0007: the last daily rollover whose swap was charged (None: none yet).
    last_rollover_at: Mapped[datetime | None]


class TradeHistory(Base):
    """A closed deal (seed section 13). A partial close is its own row whose
    ``parent_order`` is the position's ticket; ``reason`` is manual, sl, tp or stop-out.
    """

    __tablename__ = "trade_history"

    ticket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    login: Mapped[int] = mapped_column(ForeignKey("trading_accounts.login"), index=True)
    symbol: Mapped[str] = mapped_column(String(32))
    cmd: Mapped[int] = mapped_column(SmallInteger)
    volume: Mapped[Decimal]
    open_price: Mapped[Decimal]
    open_time: Mapped[datetime]
    close_price: Mapped[Decimal]
    close_time: Mapped[datetime]
    profit: Mapped[Decimal]
    commission: Mapped[Decimal]
    swap: Mapped[Decimal]
    margin: Mapped[Decimal]
    open_fx_rate: Mapped[Decimal]
    close_fx_rate: Mapped[Decimal]
    reason: Mapped[str] = mapped_column(String(16))
    parent_order: Mapped[int | None] = mapped_column(BigInteger)


class LedgerEvent(Base):
    """One monetary event on an account (seed section 7): deltas and running totals.

    ``sequence_num`` counts the account's events from 1 without gaps; the unique
    ``idempotency_key`` makes every write retry-safe.
    """

    __tablename__ = "ledger_events"
    __table_args__ = (
        UniqueConstraint("account_id", "sequence_num"),
        Index("ix_ledger_events_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.login"))
    event_type: Mapped[str] = mapped_column(String(24))
    reference_type: Mapped[str] = mapped_column(String(24))
    reference_id: Mapped[str] = mapped_column(String(64))
    balance_delta: Mapped[Decimal]
    credit_delta: Mapped[Decimal]
    margin_delta: Mapped[Decimal]
    balance_after: Mapped[Decimal]
    credit_after: Mapped[Decimal]
    margin_after: Mapped[Decimal]
    sequence_num: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(256))
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    created_at: Mapped[datetime]


class Transaction(Base):
    """A monetary movement request (seed section 8): type, status, source.

    ``amount`` (in ``currency``), ``account_amount`` (account currency) and
    ``usd_amount`` are signed: negative for money leaving (withdrawal, credit out,
    chargeback, ...), so a derived balance is a plain sum of approved rows. Columns
    from ``reason`` on are revision 0003's (see :mod:`brokerkernel.kernel.money`).
    """

    __tablename__ = "transactions"
    __table_args__ = (Index("ix_transactions_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("trading_accounts.id"), index=True)
    login: Mapped[int] = mapped_column(BigInteger, index=True)
    type: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(8))
    account_amount: Mapped[Decimal]
    usd_amount: Mapped[Decimal | None]
    exchange_rate_usd: Mapped[Decimal | None]
    gate_name: Mapped[str | None] = mapped_column(String(64))
    proof_reference: Mapped[str | None] = mapped_column(String(128))
    comment: Mapped[str | None] = mapped_column(Text)
    cashier_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(36))
    approved_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    gateway_reference: Mapped[str | None] = mapped_column(String(128))
    original_transaction_id: Mapped[str | None] = mapped_column(String(36), index=True)
    declined_by: Mapped[str | None] = mapped_column(String(36))
    deleted_by: Mapped[str | None] = mapped_column(String(36))


class OutboxEvent(Base):
    """A domain event stored in the transaction that caused it, published after commit.

    ``seq`` orders publication: events of one account are written under its row lock,
    so they are published in the order they happened.
    """

    __tablename__ = "outbox_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    published_at: Mapped[datetime | None] = mapped_column(index=True)


# Customers' KYC status (POST /webhooks/kyc).
from brokerkernel.kernel import kyc as _kyc_models  # noqa: E402, F401

# Identity and access control (teams, permissions, sessions, 2FA, partners) share Base.
from brokerkernel.kernel.identity import models as _identity_models  # noqa: E402, F401

# The economic calendar (news blackout rules, GET /calendar) shares Base.
from brokerkernel.kernel.marketdata import calendar as _calendar_models  # noqa: E402, F401

# Market data: OHLC bars and the price outage log.
from brokerkernel.kernel.marketdata import models as _marketdata_models  # noqa: E402, F401

# Money: broker settings, withdrawal approval rules, payment routes and callbacks.
from brokerkernel.kernel.money import models as _money_models  # noqa: E402, F401

# The trading core's tables (pending orders, stop-out events, audit log) share Base.
from brokerkernel.kernel.trading import models as _trading_models  # noqa: E402, F401
