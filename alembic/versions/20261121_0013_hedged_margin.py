"""Hedged margin: each group's policy for the margin of opposite positions.

Adds to ``groups`` ``hedged_margin_mode`` (``larger_side`` | ``rate`` | ``none``) and
``hedged_margin_rate`` (0..1, used by ``rate``); see
:mod:`brokerkernel.kernel.trading.margin`. Existing groups get ``none`` (every position
in full, the charge before this revision), so no account's margin used changes in a
schema migration; switching a group's mode through the groups API recomputes the
margin of its accounts through the ledger. Groups created through the API default to
``larger_side``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the two columns (existing groups: ``none``, rate 1)."""
    with op.batch_alter_table("groups") as batch:
        batch.add_column(
            sa.Column(
                "hedged_margin_mode", sa.String(length=16), nullable=False, server_default="none"
            )
        )
        batch.add_column(
            sa.Column("hedged_margin_rate", DecimalType(), nullable=False, server_default="1")
        )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("hedged_margin_rate")
        batch.drop_column("hedged_margin_mode")
