"""Stripe prop checkout: checkout payments and the Stripe events applied to them.

Creates ``prop_payments`` (one purchase of a challenge tier; the PaymentIntent id is
unique, its client secret is never stored) and ``prop_payment_events`` (Stripe event
ids already applied, so a redelivered event changes nothing). Tables of
:mod:`brokerkernel.plugins.prop_checkout.models`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the two tables and their indexes."""
    op.create_table(
        "prop_payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("tier_id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("market", sa.String(length=32), nullable=False),
        sa.Column("asset_class", sa.String(length=32), nullable=False),
        sa.Column("account_size", DecimalType(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stripe_payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("prop_account_id", sa.String(length=40), nullable=True),
        sa.Column("login", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("paid_at", _ts(), nullable=True),
        sa.Column("provisioned_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_prop_payments_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prop_payments")),
        sa.UniqueConstraint("prop_account_id", name=op.f("uq_prop_payments_prop_account_id")),
        sa.UniqueConstraint(
            "stripe_payment_intent_id", name=op.f("uq_prop_payments_stripe_payment_intent_id")
        ),
    )
    op.create_index(op.f("ix_prop_payments_customer_id"), "prop_payments", ["customer_id"])
    op.create_index(op.f("ix_prop_payments_status"), "prop_payments", ["status"])
    op.create_table(
        "prop_payment_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["prop_payments.id"],
            name=op.f("fk_prop_payment_events_payment_id_prop_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prop_payment_events")),
    )
    op.create_index(
        op.f("ix_prop_payment_events_payment_id"), "prop_payment_events", ["payment_id"]
    )


def downgrade() -> None:
    """Drop the tables of :func:`upgrade`."""
    op.drop_index(op.f("ix_prop_payment_events_payment_id"), table_name="prop_payment_events")
    op.drop_table("prop_payment_events")
    op.drop_index(op.f("ix_prop_payments_status"), table_name="prop_payments")
    op.drop_index(op.f("ix_prop_payments_customer_id"), table_name="prop_payments")
    op.drop_table("prop_payments")
