"""Money: broker settings, withdrawal approval rules, payment routes and callbacks.

Creates the tables of :mod:`brokerkernel.kernel.money.models` and seeds the setting
``maker_checker_enabled`` ("false"), the seed's default withdrawal approval rules and
the three payment-desk roles they name (agent, manager, compliance; inserted only
when missing, with their seniority ``level``, a column of revision 0002). Adds to
``transactions`` the chargeback/refund link, the provider reference, the reason and
who declined or deleted a transaction, and an index for the pending-approval list.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.money.approvals import APPROVAL_ROLES, DEFAULT_RULES
from brokerkernel.kernel.money.settings import DEFAULTS
from brokerkernel.kernel.storage.seed import SEED_CREATED_AT
from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRANSACTION_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("reason", sa.Text()),
    ("gateway_reference", sa.String(length=128)),
    ("original_transaction_id", sa.String(length=36)),
    ("declined_by", sa.String(length=36)),
    ("deleted_by", sa.String(length=36)),
)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the tables, add the columns, insert the defaults."""
    settings = op.create_table(
        "broker_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_broker_settings")),
    )
    rules = op.create_table(
        "withdrawal_approval_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("min_amount_usd", DecimalType(), nullable=False),
        sa.Column("max_amount_usd", DecimalType(), nullable=True),
        sa.Column("required_role", sa.String(length=64), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withdrawal_approval_rules")),
    )
    op.create_table(
        "payment_routes",
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("deposit_gateway", sa.String(length=64), nullable=False),
        sa.Column("withdrawal_gateway", sa.String(length=64), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("country", name=op.f("pk_payment_routes")),
    )
    op.create_table(
        "payment_callbacks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("cashier_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_callbacks")),
    )
    op.create_index(op.f("ix_payment_callbacks_cashier_id"), "payment_callbacks", ["cashier_id"])
    with op.batch_alter_table("transactions") as batch:
        for name, type_ in TRANSACTION_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    op.create_index(
        op.f("ix_transactions_original_transaction_id"),
        "transactions",
        ["original_transaction_id"],
    )
    op.create_index("ix_transactions_status_created_at", "transactions", ["status", "created_at"])

    op.bulk_insert(settings, [{**row, "updated_at": SEED_CREATED_AT} for row in DEFAULTS])
    op.bulk_insert(
        rules,
        [
            {**row, "created_at": SEED_CREATED_AT, "updated_at": SEED_CREATED_AT}
            for row in DEFAULT_RULES
        ],
    )
    roles = sa.table(
        "roles",
        sa.column("name", sa.String()),
        sa.column("display_name", sa.String()),
        sa.column("permissions", sa.JSON()),
        sa.column("is_active", sa.Boolean()),
        sa.column("description", sa.Text()),
        sa.column("customer_view_scope", sa.String()),
        sa.column("customer_edit_scope", sa.String()),
        sa.column("level", sa.Integer()),
    )
    bind = op.get_bind()
    existing = set(bind.execute(sa.select(roles.c.name)).scalars())
    missing = [
        {**role, "is_active": True, "customer_view_scope": "all", "customer_edit_scope": "none"}
        for role in APPROVAL_ROLES
        if role["name"] not in existing
    ]
    if missing:
        op.bulk_insert(roles, missing)


def downgrade() -> None:
    """Drop what :func:`upgrade` created (the payment-desk roles too, when unused)."""
    roles = sa.table("roles", sa.column("id", sa.Integer()), sa.column("name", sa.String()))
    staff = sa.table("staff_users", sa.column("role_id", sa.Integer()))
    op.execute(
        roles.delete().where(
            roles.c.name.in_([role["name"] for role in APPROVAL_ROLES]),
            roles.c.id.not_in(sa.select(staff.c.role_id)),
        )
    )
    op.drop_index("ix_transactions_status_created_at", table_name="transactions")
    op.drop_index(op.f("ix_transactions_original_transaction_id"), table_name="transactions")
    with op.batch_alter_table("transactions") as batch:
        for name, _type in reversed(TRANSACTION_COLUMNS):
            batch.drop_column(name)
    op.drop_index(op.f("ix_payment_callbacks_cashier_id"), table_name="payment_callbacks")
    op.drop_table("payment_callbacks")
    op.drop_table("payment_routes")
    op.drop_table("withdrawal_approval_rules")
    op.drop_table("broker_settings")
