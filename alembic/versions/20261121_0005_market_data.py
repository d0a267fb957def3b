"""Market data: OHLC bars and the price outage log.

Creates ``price_bars`` (one row per symbol, timeframe and bar start; prices exact
decimals, ``volume`` the tick count) and ``price_outages`` (one row per staleness
window of a symbol, ``ended_at`` null while it lasts). Models:
:mod:`brokerkernel.kernel.marketdata.models`.

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``price_bars`` and ``price_outages`` with their indexes."""
    op.create_table(
        "price_bars",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("timeframe", sa.String(length=3), nullable=False),
        sa.Column("open_time", _ts(), nullable=False),
        sa.Column("open", DecimalType(), nullable=False),
        sa.Column("high", DecimalType(), nullable=False),
        sa.Column("low", DecimalType(), nullable=False),
        sa.Column("close", DecimalType(), nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "timeframe", "open_time", name=op.f("pk_price_bars")),
    )
    op.create_table(
        "price_outages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("ended_at", _ts(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("threshold_ms", sa.Integer(), nullable=False),
        sa.Column("last_tick_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_outages")),
    )
    op.create_index(op.f("ix_price_outages_started_at"), "price_outages", ["started_at"])
    op.create_index("ix_price_outages_symbol_started_at", "price_outages", ["symbol", "started_at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_price_outages_symbol_started_at", table_name="price_outages")
    op.drop_index(op.f("ix_price_outages_started_at"), table_name="price_outages")
    op.drop_table("price_outages")
    op.drop_table("price_bars")
