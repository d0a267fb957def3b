"""Economic calendar: high-impact events (news blackout, GET /calendar).

Creates ``economic_events`` (seed section 30 fields; figures exact decimals; one row
per (event_name, currency, event_date), the key imports upsert on). Model:
:class:`brokerkernel.kernel.marketdata.calendar.EconomicEvent`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``economic_events`` with its unique key and time index."""
    op.create_table(
        "economic_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_name", sa.String(length=200), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("category", sa.String(length=128), nullable=True),
        sa.Column("impact", sa.String(length=8), nullable=False),
        sa.Column("event_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actual", DecimalType(), nullable=True),
        sa.Column("forecast", DecimalType(), nullable=True),
        sa.Column("previous", DecimalType(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_economic_events")),
        sa.UniqueConstraint(
            "event_name",
            "currency",
            "event_date",
            name=op.f("uq_economic_events_event_name_currency_event_date"),
        ),
    )
    op.create_index(op.f("ix_economic_events_event_date"), "economic_events", ["event_date"])


def downgrade() -> None:
    """Drop ``economic_events``."""
    op.drop_index(op.f("ix_economic_events_event_date"), table_name="economic_events")
    op.drop_table("economic_events")
