"""Prop-firm challenges: plans, prop accounts, day snapshots, trading days, payouts.

Tables of the ``challenges`` plugin (:mod:`brokerkernel.plugins.challenges.models`):
``prop_plans``, ``prop_accounts`` (one per challenge trading account),
``prop_trading_days`` and ``prop_daily_profit`` (per account and cycle) and
``prop_payouts``. Money is NUMERIC (exact text on SQLite).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _money(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, DecimalType(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "prop_plans",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("owner_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        _money("account_size"),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        _money("price"),
        sa.Column("group_id", sa.String(length=36), nullable=True),
        sa.Column("phases", sa.JSON(), nullable=False),
        sa.Column("funded_rules", sa.JSON(), nullable=False),
        _money("profit_split"),
        sa.Column("payout_first_after_days", sa.Integer(), nullable=False),
        sa.Column("payout_every_days", sa.Integer(), nullable=False),
        _money("payout_minimum"),
        sa.Column("scaling", sa.JSON(), nullable=True),
        _money("reset_fee", nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("allowed_tenants", sa.JSON(), nullable=False),
        sa.Column("day_reset_time", sa.String(length=5), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("drawdown_after_payout", sa.String(length=8), nullable=False),
        sa.Column("auto_advance", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_prop_plans_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prop_plans")),
        sa.UniqueConstraint("owner_key", "code", name=op.f("uq_prop_plans_owner_key_code")),
    )
    op.create_index(op.f("ix_prop_plans_tenant_id"), "prop_plans", ["tenant_id"])

    op.create_table(
        "prop_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_ref", sa.String(length=128), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("phase_index", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=True),
        _money("initial_balance"),
        sa.Column("phase_started_at", _ts(), nullable=False),
        sa.Column("funded_at", _ts(), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("day_reset_at", _ts(), nullable=False),
        _money("day_start_balance"),
        _money("day_start_equity"),
        _money("peak_eod_balance"),
        _money("peak_equity"),
        _money("max_loss_floor", nullable=True),
        sa.Column("breach_rule", sa.String(length=64), nullable=True),
        sa.Column("breach_reason", sa.Text(), nullable=True),
        _money("breach_floor", nullable=True),
        _money("breach_equity", nullable=True),
        sa.Column("breached_at", _ts(), nullable=True),
        sa.Column("target_reached_at", _ts(), nullable=True),
        sa.Column("last_trade_at", _ts(), nullable=True),
        sa.Column("last_payout_at", _ts(), nullable=True),
        _money("account_size"),
        _money("profit_split", nullable=True),
        sa.Column("scaled_at", _ts(), nullable=True),
        sa.Column("rule_overrides", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_prop_accounts_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["login"],
            ["trading_accounts.login"],
            name=op.f("fk_prop_accounts_login_trading_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["prop_plans.id"], name=op.f("fk_prop_accounts_plan_id_prop_plans")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prop_accounts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_prop_accounts_idempotency_key")),
        sa.UniqueConstraint("login", name=op.f("uq_prop_accounts_login")),
    )
    op.create_index(op.f("ix_prop_accounts_plan_id"), "prop_accounts", ["plan_id"])
    op.create_index(op.f("ix_prop_accounts_customer_id"), "prop_accounts", ["customer_id"])
    op.create_index(op.f("ix_prop_accounts_created_at"), "prop_accounts", ["created_at"])
    op.create_index("ix_prop_accounts_tenant_status", "prop_accounts", ["tenant_id", "status"])

    op.create_table(
        "prop_trading_days",
        sa.Column("login", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cycle", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("login", "cycle", "day", name=op.f("pk_prop_trading_days")),
    )
    op.create_table(
        "prop_daily_profit",
        sa.Column("login", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cycle", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _money("profit"),
        sa.PrimaryKeyConstraint("login", "cycle", "day", name=op.f("pk_prop_daily_profit")),
    )

    op.create_table(
        "prop_payouts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("login", sa.BigInteger(), nullable=False),
        _money("amount"),
        _money("trader_share"),
        _money("firm_share"),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("processed_by", sa.String(length=64), nullable=True),
        sa.Column("requested_at", _ts(), nullable=False),
        sa.Column("processed_at", _ts(), nullable=True),
        sa.Column("ledger_ref", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["prop_accounts.id"],
            name=op.f("fk_prop_payouts_account_id_prop_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prop_payouts")),
    )
    op.create_index(op.f("ix_prop_payouts_account_id"), "prop_payouts", ["account_id"])
    op.create_index(op.f("ix_prop_payouts_tenant_id"), "prop_payouts", ["tenant_id"])
    op.create_index(op.f("ix_prop_payouts_status"), "prop_payouts", ["status"])


def downgrade() -> None:
    op.drop_table("prop_payouts")
    op.drop_table("prop_daily_profit")
    op.drop_table("prop_trading_days")
    op.drop_table("prop_accounts")
    op.drop_table("prop_plans")
