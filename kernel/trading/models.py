"""Tables of the trading core (revision 0007): pending orders, stop-out events, audit log.

Imported at the bottom of :mod:`brokerkernel.kernel.storage.models`, so the one
``Base.metadata`` (and Alembic's model parity check) sees them. Money, prices and
volumes are exact ``Decimal`` columns; times are aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base

#: Pending order statuses (seed section 12); only ``active`` orders can trigger.
PENDING_STATUSES = ("active", "filled", "cancelled", "expired", "rejected")


class PendingOrder(Base):
    """A pending order (seed section 12), numbered from the deal ticket sequence.

    ``cmd`` 2 buy limit, 3 sell limit, 4 buy stop, 5 sell stop, 6 buy stop-limit,
    7 sell stop-limit; ``volume`` in lots; ``trigger_price``, ``limit_price``, ``sl``
    and ``tp`` in the symbol's quote currency. A stop-limit whose stop triggered while
    the price had gapped past its limit becomes a limit order (cmd 2/3 at the limit
    price) and keeps the time of that in ``stop_triggered_at``. ``expiry_at`` None is
    good till cancelled. ``position_ticket`` is the position a fill opened; ``reason``
    why it was rejected at execution (e.g. ``Insufficient margin``).
    """

    __tablename__ = "pending_orders"
    __table_args__ = (Index("ix_pending_orders_login_status", "login", "status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    login: Mapped[int] = mapped_column(ForeignKey("trading_accounts.login"))
    symbol: Mapped[str] = mapped_column(String(32))
    cmd: Mapped[int] = mapped_column(SmallInteger)
    volume: Mapped[Decimal]
    trigger_price: Mapped[Decimal]
    limit_price: Mapped[Decimal | None]
    sl: Mapped[Decimal | None]
    tp: Mapped[Decimal | None]
    expiry_at: Mapped[datetime | None]
    comment: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(128))
    position_ticket: Mapped[int | None] = mapped_column(BigInteger)
    stop_triggered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class StopoutEvent(Base):
    """One forced close of a stop-out (seed section 31), for the dealing room.

    Margin levels and ``stopout_level`` in percent; ``equity_at_trigger`` and
    ``profit_realized`` in account currency; ``margin_level_after_close`` is None when
    no margin is left.
    """

    __tablename__ = "stopout_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    login: Mapped[int] = mapped_column(BigInteger, index=True)
    order_ticket: Mapped[int] = mapped_column(BigInteger)
    symbol: Mapped[str] = mapped_column(String(32))
    margin_level_at_trigger: Mapped[Decimal]
    margin_level_after_close: Mapped[Decimal | None]
    equity_at_trigger: Mapped[Decimal]
    profit_realized: Mapped[Decimal]
    close_price: Mapped[Decimal]
    stopout_level: Mapped[Decimal]
    positions_remaining: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class AuditLogEntry(Base):
    """An immutable row per financial state change (seed section 31).

    Before/after balance, credit and used margin are the account's, in its currency;
    ``source_service`` names the writer (``order-service``, ``swap-service``,
    ``risk-service``, ...). UPDATE and DELETE are refused by a database trigger.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_login_id", "login", "id"),
        Index("ix_audit_log_entity", "entity_type", "entity_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    login: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]]
    balance_before: Mapped[Decimal]
    balance_after: Mapped[Decimal]
    credit_before: Mapped[Decimal]
    credit_after: Mapped[Decimal]
    margin_used_before: Mapped[Decimal]
    margin_used_after: Mapped[Decimal]
    source_service: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
