"""Tables of the money module (revision ``0003``): broker settings, withdrawal
approval rules, per-country payment routes and the log of payment callbacks.

Money is :class:`~brokerkernel.kernel.storage.types.DecimalType`; times are aware UTC.
The transactions themselves are :class:`~brokerkernel.kernel.storage.models.Transaction`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base, new_id


class BrokerSetting(Base):
    """A broker-wide key/value setting (seed section 21), e.g. ``maker_checker_enabled``.

    Values are text (``"true"``/``"false"`` for flags), as the seed stores them.
    """

    __tablename__ = "broker_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime]


class WithdrawalApprovalRule(Base):
    """A withdrawal amount band and the staff role needed to approve it (seed section 10).

    The band is ``min_amount_usd <= amount < max_amount_usd`` in USD (``max`` null: no
    upper bound). ``is_active = false`` is the soft delete.
    """

    __tablename__ = "withdrawal_approval_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    min_amount_usd: Mapped[Decimal]
    max_amount_usd: Mapped[Decimal | None]
    required_role: Mapped[str] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PaymentRoute(Base):
    """Which gateway handles deposits and withdrawals for a country (seed section 9).

    ``country`` is ISO 3166-1 alpha-2; gateway values are payment-gateway names.
    """

    __tablename__ = "payment_routes"

    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    deposit_gateway: Mapped[str] = mapped_column(String(64))
    withdrawal_gateway: Mapped[str] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class PaymentCallback(Base):
    """One payment status update received (webhook or internal callback), for audit.

    ``outcome`` says what the kernel did: ``applied``, ``duplicate`` (already in that
    state: no money moved), ``conflict`` (contradicts a final state: nothing changed)
    or ``unknown`` (no transaction has this ``cashier_id``).
    """

    __tablename__ = "payment_callbacks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    gateway: Mapped[str] = mapped_column(String(64))
    cashier_id: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
