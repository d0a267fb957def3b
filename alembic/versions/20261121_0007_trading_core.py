"""Trading core: pending orders, stop-out events, the audit log, account versions.

Adds ``trading_accounts.version`` (bumped by every write to an account's money,
positions or pending orders, so cached account state can be checked against it) and
``trading_accounts.account_mode`` (``hedging`` or ``netting``);
``positions.last_rollover_at`` (swap bookkeeping: the last daily rollover charged);
the ``pending_orders`` (seed section 12), ``stopout_events`` and ``audit_log``
(section 31) tables. ``audit_log`` is append-only: a trigger refuses UPDATE and
DELETE on both backends.

Revision ID: 0007
Revises: 0001
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = "audit_log is append-only"


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the columns (existing rows: version 0, hedging) and create the tables."""
    with op.batch_alter_table("trading_accounts") as batch:
        batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("account_mode", sa.String(length=8), nullable=False, server_default="hedging")
        )
    with op.batch_alter_table("positions") as batch:
        batch.add_column(sa.Column("last_rollover_at", _ts(), nullable=True))

    op.create_table(
        "pending_orders",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("cmd", sa.SmallInteger(), nullable=False),
        sa.Column("volume", DecimalType(), nullable=False),
        sa.Column("trigger_price", DecimalType(), nullable=False),
        sa.Column("limit_price", DecimalType(), nullable=True),
        sa.Column("sl", DecimalType(), nullable=True),
        sa.Column("tp", DecimalType(), nullable=True),
        sa.Column("expiry_at", _ts(), nullable=True),
        sa.Column("comment", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=128), nullable=True),
        sa.Column("position_ticket", sa.BigInteger(), nullable=True),
        sa.Column("stop_triggered_at", _ts(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["login"],
            ["trading_accounts.login"],
            name=op.f("fk_pending_orders_login_trading_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_orders")),
    )
    op.create_index("ix_pending_orders_login_status", "pending_orders", ["login", "status"])
    op.create_index(op.f("ix_pending_orders_status"), "pending_orders", ["status"])

    op.create_table(
        "stopout_events",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=False),
        sa.Column("order_ticket", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("margin_level_at_trigger", DecimalType(), nullable=False),
        sa.Column("margin_level_after_close", DecimalType(), nullable=True),
        sa.Column("equity_at_trigger", DecimalType(), nullable=False),
        sa.Column("profit_realized", DecimalType(), nullable=False),
        sa.Column("close_price", DecimalType(), nullable=False),
        sa.Column("stopout_level", DecimalType(), nullable=False),
        sa.Column("positions_remaining", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stopout_events")),
    )
    op.create_index(op.f("ix_stopout_events_login"), "stopout_events", ["login"])

    op.create_table(
        "audit_log",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("balance_before", DecimalType(), nullable=False),
        sa.Column("balance_after", DecimalType(), nullable=False),
        sa.Column("credit_before", DecimalType(), nullable=False),
        sa.Column("credit_after", DecimalType(), nullable=False),
        sa.Column("margin_used_before", DecimalType(), nullable=False),
        sa.Column("margin_used_after", DecimalType(), nullable=False),
        sa.Column("source_service", sa.String(length=64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_login_id", "audit_log", ["login", "id"])
    op.create_index("ix_audit_log_entity", "audit_log", ["entity_type", "entity_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER audit_log_no_{verb}")
    op.drop_index("ix_audit_log_entity", table_name="audit_log")
    op.drop_index("ix_audit_log_login_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_stopout_events_login"), table_name="stopout_events")
    op.drop_table("stopout_events")
    op.drop_index(op.f("ix_pending_orders_status"), table_name="pending_orders")
    op.drop_index("ix_pending_orders_login_status", table_name="pending_orders")
    op.drop_table("pending_orders")
    with op.batch_alter_table("positions") as batch:
        batch.drop_column("last_rollover_at")
    with op.batch_alter_table("trading_accounts") as batch:
        batch.drop_column("account_mode")
        batch.drop_column("version")
