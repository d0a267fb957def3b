"""Tables of the prop checkout plugin (revision 0011): challenge purchases and the
Stripe events applied to them.

A :class:`PropPayment` is one purchase of a tier: checked against the configured tier
when created, paid through a Stripe PaymentIntent (or free), then provisioned into a
prop account by the challenges plugin. ``status`` only moves forward::

    requires_payment_method -> requires_action / requires_confirmation -> processing
        -> succeeded (paid, provisioning pending) -> provisioned
    any unpaid status -> canceled;  any unpaid status -> flagged (amount or currency
    of the paid intent differ from the tier and the stored payment: no account)

The PaymentIntent's ``client_secret`` is never stored (the API returns it once; an
``Idempotency-Key`` replay comes from the gateway's sealed response store).
The models share the kernel's ``Base`` (one metadata; Alembic's parity check).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base

#: Statuses a PaymentIntent may still leave (the intent is not paid yet), by rank.
UNPAID_STATUSES = {
    "requires_payment_method": 0,
    "requires_confirmation": 1,
    "requires_action": 1,
    "processing": 2,
}
SUCCEEDED = "succeeded"
PROVISIONED = "provisioned"
FLAGGED = "flagged"
CANCELED = "canceled"


class PropPayment(Base):
    """One purchase of a challenge tier by a customer.

    ``amount_cents`` in the minor unit of ``currency`` (lowercase ISO 4217, as Stripe
    writes it); ``account_size`` in the plan's currency; ``plan_id`` is the challenge
    plan the tier named when the payment was created. ``stripe_payment_intent_id`` is
    None for free tiers. ``prop_account_id`` / ``login`` are set once provisioned.
    ``attempts``, ``lease_until`` (wall clock) and ``last_error`` belong to the
    provisioning worker (a claimed row is not picked by another worker before the
    lease ends; a failure backs off).
    """

    __tablename__ = "prop_payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    tier_id: Mapped[str] = mapped_column(String(64))
    plan_id: Mapped[str] = mapped_column(String(40))
    market: Mapped[str] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(32))
    account_size: Mapped[Decimal]
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    flag_reason: Mapped[str | None] = mapped_column(Text)
    prop_account_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    login: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    provisioned_at: Mapped[datetime | None]


class PropPaymentEvent(Base):
    """A Stripe event applied to a payment, by Stripe's event id: a redelivery of the
    same event finds its row and changes nothing."""

    __tablename__ = "prop_payment_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("prop_payments.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime]
