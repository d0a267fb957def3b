"""Baseline: the kernel's tables and their reference data.

Creates every table of ``brokerkernel.kernel.storage.models`` with
naming-convention constraint names, on PostgreSQL the sequences that number
trading accounts and positions, and seeds the staff roles, the default trading
group and the instrument catalog of :mod:`brokerkernel.kernel.storage.seed`.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.storage.seed import GROUPS, INSTRUMENTS, ROLES
from brokerkernel.kernel.storage.types import DecimalType

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("kernel",)
depends_on: str | Sequence[str] | None = None

#: PostgreSQL sequences: (name, first value).
SEQUENCES: tuple[tuple[str, int], ...] = (
    ("trading_account_login_seq", 10001),
    ("position_ticket_seq", 100001),
)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the kernel's tables (and sequences on PostgreSQL); insert the seed rows."""
    instruments = op.create_table(
        "instruments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("asset_class", sa.String(length=64), nullable=False),
        sa.Column("calc_mode", sa.String(length=24), nullable=False),
        sa.Column("base_currency", sa.String(length=8), nullable=False),
        sa.Column("quote_currency", sa.String(length=8), nullable=False),
        sa.Column("profit_currency", sa.String(length=8), nullable=False),
        sa.Column("digits", sa.SmallInteger(), nullable=False),
        sa.Column("pip_size", DecimalType(), nullable=False),
        sa.Column("contract_size", DecimalType(), nullable=False),
        sa.Column("min_lot", DecimalType(), nullable=False),
        sa.Column("max_lot", DecimalType(), nullable=False),
        sa.Column("lot_step", DecimalType(), nullable=False),
        sa.Column("margin_rate", DecimalType(), nullable=False),
        sa.Column("spread", DecimalType(), nullable=False),
        sa.Column("stale_threshold_ms", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("tradeability", sa.String(length=16), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruments")),
        sa.UniqueConstraint("symbol", name=op.f("uq_instruments_symbol")),
    )
    groups = op.create_table(
        "groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("default_leverage", sa.Integer(), nullable=False),
        sa.Column("margin_call_level", DecimalType(), nullable=False),
        sa.Column("stopout_level", DecimalType(), nullable=False),
        sa.Column("commission_type", sa.String(length=16), nullable=True),
        sa.Column("commission_value", DecimalType(), nullable=True),
        sa.Column("swap_free", sa.Boolean(), nullable=False),
        sa.Column("swap_enabled", sa.Boolean(), nullable=False),
        sa.Column("swap_multiplier", DecimalType(), nullable=False),
        sa.Column("swap_free_days", sa.Integer(), nullable=False),
        sa.Column("is_islamic", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("max_exposure", DecimalType(), nullable=True),
        sa.Column("net_max_exposure", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )
    op.create_table(
        "group_instruments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("spread", DecimalType(), nullable=True),
        sa.Column("margin_rate", DecimalType(), nullable=True),
        sa.Column("tradeability", sa.String(length=16), nullable=True),
        sa.Column("commission_type", sa.String(length=16), nullable=True),
        sa.Column("commission_value", DecimalType(), nullable=True),
        sa.Column("min_lot", DecimalType(), nullable=True),
        sa.Column("max_lot", DecimalType(), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_instruments_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["symbol"],
            ["instruments.symbol"],
            name=op.f("fk_group_instruments_symbol_instruments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_instruments")),
        sa.UniqueConstraint(
            "group_id", "symbol", name=op.f("uq_group_instruments_group_id_symbol")
        ),
    )
    roles = op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("name", name=op.f("uq_roles_name")),
    )
    op.create_table(
        "staff_users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("first_name", sa.String(length=128), nullable=False),
        sa.Column("last_name", sa.String(length=128), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.String(length=36), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("last_login_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_staff_users_role_id_roles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_users")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_users_email")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=False),
        sa.Column("last_name", sa.String(length=128), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("gender", sa.String(length=16), nullable=True),
        sa.Column("registration_source", sa.String(length=16), nullable=False),
        sa.Column("affiliate_id", sa.String(length=64), nullable=True),
        sa.Column("campaign_id", sa.String(length=64), nullable=True),
        sa.Column("funnel", sa.String(length=64), nullable=True),
        sa.Column("affiliate_lead_id", sa.String(length=64), nullable=True),
        sa.Column("compliance_status", sa.String(length=16), nullable=False),
        sa.Column("force_password_change", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("reg_time", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("affiliate_lead_id", name=op.f("uq_customers_affiliate_lead_id")),
        sa.UniqueConstraint("email", name=op.f("uq_customers_email")),
    )
    op.create_table(
        "trading_accounts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("login", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("account_type", sa.String(length=8), nullable=False),
        sa.Column("balance", DecimalType(), nullable=False),
        sa.Column("credit", DecimalType(), nullable=False),
        sa.Column("margin", DecimalType(), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_trading_accounts_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_trading_accounts_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("login", name=op.f("pk_trading_accounts")),
        sa.UniqueConstraint("id", name=op.f("uq_trading_accounts_id")),
    )
    op.create_index(op.f("ix_trading_accounts_customer_id"), "trading_accounts", ["customer_id"])
    op.create_index(op.f("ix_trading_accounts_group_id"), "trading_accounts", ["group_id"])
    op.create_table(
        "positions",
        sa.Column("ticket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("cmd", sa.SmallInteger(), nullable=False),
        sa.Column("volume", DecimalType(), nullable=False),
        sa.Column("open_price", DecimalType(), nullable=False),
        sa.Column("open_time", _ts(), nullable=False),
        sa.Column("sl", DecimalType(), nullable=True),
        sa.Column("tp", DecimalType(), nullable=True),
        sa.Column("margin", DecimalType(), nullable=False),
        sa.Column("commission", DecimalType(), nullable=False),
        sa.Column("swap", DecimalType(), nullable=False),
        sa.Column("open_fx_rate", DecimalType(), nullable=False),
        sa.Column("comment", sa.String(length=128), nullable=True),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["login"],
            ["trading_accounts.login"],
            name=op.f("fk_positions_login_trading_accounts"),
        ),
        sa.PrimaryKeyConstraint("ticket", name=op.f("pk_positions")),
    )
    op.create_index(op.f("ix_positions_login"), "positions", ["login"])
    op.create_table(
        "trade_history",
        sa.Column("ticket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("cmd", sa.SmallInteger(), nullable=False),
        sa.Column("volume", DecimalType(), nullable=False),
        sa.Column("open_price", DecimalType(), nullable=False),
        sa.Column("open_time", _ts(), nullable=False),
        sa.Column("close_price", DecimalType(), nullable=False),
        sa.Column("close_time", _ts(), nullable=False),
        sa.Column("profit", DecimalType(), nullable=False),
        sa.Column("commission", DecimalType(), nullable=False),
        sa.Column("swap", DecimalType(), nullable=False),
        sa.Column("margin", DecimalType(), nullable=False),
        sa.Column("open_fx_rate", DecimalType(), nullable=False),
        sa.Column("close_fx_rate", DecimalType(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("parent_order", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["login"],
            ["trading_accounts.login"],
            name=op.f("fk_trade_history_login_trading_accounts"),
        ),
        sa.PrimaryKeyConstraint("ticket", name=op.f("pk_trade_history")),
    )
    op.create_index(op.f("ix_trade_history_login"), "trade_history", ["login"])
    op.create_table(
        "ledger_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=24), nullable=False),
        sa.Column("reference_type", sa.String(length=24), nullable=False),
        sa.Column("reference_id", sa.String(length=64), nullable=False),
        sa.Column("balance_delta", DecimalType(), nullable=False),
        sa.Column("credit_delta", DecimalType(), nullable=False),
        sa.Column("margin_delta", DecimalType(), nullable=False),
        sa.Column("balance_after", DecimalType(), nullable=False),
        sa.Column("credit_after", DecimalType(), nullable=False),
        sa.Column("margin_after", DecimalType(), nullable=False),
        sa.Column("sequence_num", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("idempotency_key", sa.String(length=160), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.login"],
            name=op.f("fk_ledger_events_account_id_trading_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_events")),
        sa.UniqueConstraint(
            "account_id",
            "sequence_num",
            name=op.f("uq_ledger_events_account_id_sequence_num"),
        ),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_events_idempotency_key")),
    )
    op.create_index(
        "ix_ledger_events_account_created", "ledger_events", ["account_id", "created_at"]
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("login", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("amount", DecimalType(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("account_amount", DecimalType(), nullable=False),
        sa.Column("usd_amount", DecimalType(), nullable=True),
        sa.Column("exchange_rate_usd", DecimalType(), nullable=True),
        sa.Column("gate_name", sa.String(length=64), nullable=True),
        sa.Column("proof_reference", sa.String(length=128), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("cashier_id", sa.String(length=128), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("approved_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_transactions_account_id_trading_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint("cashier_id", name=op.f("uq_transactions_cashier_id")),
    )
    op.create_index(op.f("ix_transactions_account_id"), "transactions", ["account_id"])
    op.create_index(op.f("ix_transactions_login"), "transactions", ["login"])
    op.create_table(
        "outbox_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.Column("published_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("id", name=op.f("uq_outbox_events_id")),
    )
    op.create_index(op.f("ix_outbox_events_published_at"), "outbox_events", ["published_at"])

    is_postgresql = op.get_bind().dialect.name == "postgresql"
    if is_postgresql:
        for name, start in SEQUENCES:
            op.execute(sa.schema.CreateSequence(sa.Sequence(name, start=start)))

    op.bulk_insert(roles, [dict(row) for row in ROLES])
    op.bulk_insert(groups, [dict(row) for row in GROUPS])
    op.bulk_insert(instruments, [dict(row) for row in INSTRUMENTS])
    if is_postgresql:
        # The role ids were given explicitly: move the SERIAL sequence past them.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('roles', 'id'), (SELECT max(id) FROM roles))"
        )


def downgrade() -> None:
    """Drop everything :func:`upgrade` created, seed rows included."""
    if op.get_bind().dialect.name == "postgresql":
        for name, _start in reversed(SEQUENCES):
            op.execute(sa.schema.DropSequence(sa.Sequence(name)))

    op.drop_index(op.f("ix_outbox_events_published_at"), table_name="outbox_events")
    op.drop_table("outbox_events")
    op.drop_index(op.f("ix_transactions_login"), table_name="transactions")
    op.drop_index(op.f("ix_transactions_account_id"), table_name="transactions")
    op.drop_table("transactions")
    op.drop_index("ix_ledger_events_account_created", table_name="ledger_events")
    op.drop_table("ledger_events")
    op.drop_index(op.f("ix_trade_history_login"), table_name="trade_history")
    op.drop_table("trade_history")
    op.drop_index(op.f("ix_positions_login"), table_name="positions")
    op.drop_table("positions")
    op.drop_index(op.f("ix_trading_accounts_group_id"), table_name="trading_accounts")
    op.drop_index(op.f("ix_trading_accounts_customer_id"), table_name="trading_accounts")
    op.drop_table("trading_accounts")
    op.drop_table("customers")
    op.drop_table("staff_users")
    op.drop_table("roles")
    op.drop_table("group_instruments")
    op.drop_table("groups")
    op.drop_table("instruments")
