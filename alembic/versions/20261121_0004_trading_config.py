"""Trading configuration: CFDINDEX/FUTURES terms, swaps, one default group.

Adds to ``instruments`` the fields the CFDINDEX and FUTURES calculation modes need
(``tick_size``, ``tick_price``, ``initial_margin``) and the swap settings
(``swap_type`` points|percent|money, ``swap_long``, ``swap_short``,
``swap_triple_day``); to ``group_instruments`` the group's swap config (null
inherits); and a partial unique index so that at most one group is the default.
Existing instruments get no swap (0 points) and Wednesday as the triple-swap day.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_INDEX = "uq_groups_is_default"


def upgrade() -> None:
    """Add the columns (defaults fill existing rows) and the one-default index."""
    with op.batch_alter_table("instruments") as batch:
        batch.add_column(sa.Column("tick_size", DecimalType(), nullable=True))
        batch.add_column(sa.Column("tick_price", DecimalType(), nullable=True))
        batch.add_column(sa.Column("initial_margin", DecimalType(), nullable=True))
        batch.add_column(
            sa.Column("swap_type", sa.String(length=8), nullable=False, server_default="points")
        )
        batch.add_column(sa.Column("swap_long", DecimalType(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("swap_short", DecimalType(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column(
                "swap_triple_day", sa.String(length=9), nullable=True, server_default="wednesday"
            )
        )
    with op.batch_alter_table("group_instruments") as batch:
        batch.add_column(sa.Column("swap_type", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("swap_long", DecimalType(), nullable=True))
        batch.add_column(sa.Column("swap_short", DecimalType(), nullable=True))
    op.create_index(
        DEFAULT_INDEX,
        "groups",
        ["is_default"],
        unique=True,
        postgresql_where=sa.text("is_default"),
        sqlite_where=sa.text("is_default"),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_index(DEFAULT_INDEX, table_name="groups")
    with op.batch_alter_table("group_instruments") as batch:
        for column in ("swap_short", "swap_long", "swap_type"):
            batch.drop_column(column)
    with op.batch_alter_table("instruments") as batch:
        for column in (
            "swap_triple_day",
            "swap_short",
            "swap_long",
            "swap_type",
            "initial_margin",
            "tick_price",
            "tick_size",
        ):
            batch.drop_column(column)
