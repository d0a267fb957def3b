"""Customer KYC status: the latest provider-agnostic KYC result of each customer.

Creates ``customer_kyc`` (one row per customer with a result; none: ``not_started``),
the table of :class:`brokerkernel.kernel.kyc.CustomerKyc`, written by
``POST /webhooks/kyc``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``customer_kyc``."""
    op.create_table(
        "customer_kyc",
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=128), nullable=True),
        sa.Column("doc_type", sa.String(length=64), nullable=True),
        sa.Column("doc_country", sa.String(length=2), nullable=True),
        sa.Column("raw_result", sa.JSON(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_customer_kyc_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_kyc")),
    )


def downgrade() -> None:
    """Drop ``customer_kyc``."""
    op.drop_table("customer_kyc")
