"""Alembic migrations on the configured backend: round trip, model parity, seeds, decimals."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Base, Group, Instrument, Role
from brokerkernel.kernel.storage.seed import (
    DEFAULT_GROUP,
    DEFAULT_GROUP_ID,
    INSTRUMENT_SYMBOLS,
    INSTRUMENTS,
    PERMISSIONS,
    ROLES,
)
from brokerkernel.plugins.challenges import models as _challenge_models  # noqa: F401
from brokerkernel.plugins.prop_checkout import models as _prop_checkout_models  # noqa: F401
from brokerkernel.plugins.webhooks import models as _webhook_models  # noqa: F401

KERNEL_TABLES = {
    # 0001 kernel baseline
    "customers",
    "group_instruments",
    "groups",
    "instruments",
    "ledger_events",
    "outbox_events",
    "positions",
    "roles",
    "staff_users",
    "trade_history",
    "trading_accounts",
    "transactions",
    # 0002 identity
    "auth_refresh_tokens",
    "auth_sessions",
    "broker_tenants",
    "partner_clients",
    "password_reset_tokens",
    "permissions",
    "staff_backup_codes",
    "staff_totp",
    "team_permission_overrides",
    "teams",
    # 0003 money
    "broker_settings",
    "payment_callbacks",
    "payment_routes",
    "withdrawal_approval_rules",
    # 0005 market data
    "price_bars",
    "price_outages",
    # 0007 trading core
    "audit_log",
    "pending_orders",
    "stopout_events",
    # 0008 economic calendar
    "economic_events",
    # 0009 challenges
    "prop_accounts",
    "prop_daily_profit",
    "prop_payouts",
    "prop_plans",
    "prop_trading_days",
    # 0010 partner webhooks
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_subscriptions",
    # 0011 prop checkout
    "prop_payment_events",
    "prop_payments",
    # 0012 KYC status
    "customer_kyc",
}
SEEDED_COUNTS = {
    "instruments": 5,
    "roles": 6,
    "groups": 1,
    "permissions": 25,
    "broker_settings": 1,
    "broker_tenants": 1,
    "withdrawal_approval_rules": 3,
}
HEAD = "0013"
POSTGRESQL_SEQUENCES = {"trading_account_login_seq": 10001, "position_ticket_seq": 100001}


def _as_utc(value: Any) -> Any:
    """SQLite returns naive datetimes (stored as UTC text); make them comparable."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _table_names(connection: Connection) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


def _sequence_names(connection: Connection) -> set[str]:
    if connection.dialect.name != "postgresql":
        return set()
    return set(sa.inspect(connection).get_sequence_names())


async def _assert_migrated_baseline(url: str) -> None:
    """Tables, sequences and seed rows are exactly what the baseline creates."""
    database = Database(url)
    try:
        async with database.read() as session:
            connection = await session.connection()
            tables = await connection.run_sync(_table_names)
            assert tables == KERNEL_TABLES | {"alembic_version"}
            if database.dialect == "postgresql":
                sequences = await connection.run_sync(_sequence_names)
                assert set(POSTGRESQL_SEQUENCES) <= sequences
                for name, start in POSTGRESQL_SEQUENCES.items():
                    value = await session.scalar(sa.select(sa.func.nextval(name)))
                    assert value == start, name

            for table in sorted(KERNEL_TABLES):
                count = await session.scalar(
                    sa.select(sa.func.count()).select_from(sa.table(table))
                )
                assert count == SEEDED_COUNTS.get(table, 0), table

            instruments = {
                row.symbol: row for row in (await session.scalars(sa.select(Instrument))).all()
            }
            assert tuple(sorted(instruments)) == tuple(sorted(INSTRUMENT_SYMBOLS))
            eurusd = instruments["EURUSD"]
            assert eurusd.contract_size == Decimal("100000")
            assert isinstance(eurusd.contract_size, Decimal)
            assert eurusd.pip_size == Decimal("0.0001")
            assert instruments["USDJPY"].pip_size == Decimal("0.01")
            assert instruments["XAUUSD"].digits == 3
            assert instruments["BTCUSD"].margin_rate == Decimal("0.5")
            for seeded in INSTRUMENTS:
                row = instruments[seeded["symbol"]]
                for column, expected in seeded.items():
                    assert _as_utc(getattr(row, column)) == expected, (seeded["symbol"], column)

            group = await session.get_one(Group, DEFAULT_GROUP_ID)
            for column, expected in DEFAULT_GROUP.items():
                assert _as_utc(getattr(group, column)) == expected, column

            roles = {row.name: row for row in (await session.scalars(sa.select(Role))).all()}
            assert set(roles) == {"admin", "dealer", "support", "agent", "manager", "compliance"}
            assert roles["admin"].display_name == "Administrator"
            # later revisions grant the admin the permissions they add
            assert set(PERMISSIONS) <= set(roles["admin"].permissions)
            for seeded in ROLES:
                assert roles[seeded["name"]].id == seeded["id"]
                assert set(seeded["permissions"]) <= set(roles[seeded["name"]].permissions)

        # The next role id follows the seeded ones (PostgreSQL: the sequence was moved).
        async with database.transaction() as session:
            role = Role(name="auditor", display_name="Auditor", permissions=["view_audit"])
            session.add(role)
            await session.flush()
            assert role.id == SEEDED_COUNTS["roles"] + 1
            await session.delete(role)
    finally:
        await database.dispose()


async def _assert_empty(url: str) -> None:
    database = Database(url)
    try:
        async with database.read() as session:
            connection = await session.connection()
            assert await connection.run_sync(_table_names) == {"alembic_version"}
            assert not set(POSTGRESQL_SEQUENCES) & await connection.run_sync(_sequence_names)
            assert await session.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 0
    finally:
        await database.dispose()


async def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    url = empty_database_url
    assert migrate.current(url) is None
    assert migrate.head_revisions() == (HEAD,)

    # Called directly inside the running event loop: migrate isolates itself in a thread.
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    await _assert_migrated_baseline(url)

    await asyncio.to_thread(migrate.downgrade, url, "base")
    assert await asyncio.to_thread(migrate.current, url) is None
    await _assert_empty(url)

    await asyncio.to_thread(migrate.upgrade, url, "head")
    assert migrate.current(url) == HEAD
    await _assert_migrated_baseline(url)


def test_migration_files_are_date_first() -> None:
    versions = migrate.script_location() / "versions"
    names = sorted(path.name for path in versions.glob("*.py"))
    assert names, versions
    for name in names:
        assert re.fullmatch(r"20\d{6}_[0-9a-z]+_[0-9a-z_]+\.py", name), name


def _compare(connection: Connection, metadata: sa.MetaData) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_schema_matches_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.read() as session:
            connection = await session.connection()
            assert await connection.run_sync(_compare, Base.metadata) == []

            # The comparison is not vacuous: a drifted model is reported.
            drifted = sa.MetaData(naming_convention=Base.metadata.naming_convention)
            for table in Base.metadata.tables.values():
                table.to_metadata(drifted)
            drifted.tables["instruments"].c.pip_size.type = sa.Integer()
            drifted.tables["groups"].c.description.nullable = False
            sa.Table("unexpected", drifted, sa.Column("id", sa.Integer, primary_key=True))
            kinds = {
                (diff[0][0] if isinstance(diff, list) else diff[0])
                for diff in await connection.run_sync(_compare, drifted)
            }
            assert {"modify_type", "modify_nullable", "add_table"} <= kinds
    finally:
        await database.dispose()


EXACT_VALUES = [
    Decimal("1234567890.12345678"),
    Decimal("-987654321.0000000001"),
    Decimal("999999999999999999.9999999999"),  # NUMERIC(28, 10) at its limit
    Decimal("0.1") + Decimal("0.2"),  # 0.3 exactly, unlike the float sum
    Decimal("0.0000000001"),
]


async def test_decimal_round_trip(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            for index, value in enumerate(EXACT_VALUES):
                session.add(
                    Instrument(
                        **{
                            **INSTRUMENTS[0],
                            "id": f"00000000-0000-4000-8000-{index:012d}",
                            "symbol": f"TEST{index}",
                            "contract_size": value,
                            "pip_size": value,
                            "spread": -value,
                        }
                    )
                )
                session.add(
                    Group(
                        **{
                            **DEFAULT_GROUP,
                            "id": f"00000000-0000-4000-9000-{index:012d}",
                            "name": f"test-{index}",
                            "is_default": False,
                            "max_exposure": value,
                            "commission_value": value,
                            "margin_call_level": value,
                        }
                    )
                )

        async with database.read() as session:
            for index, value in enumerate(EXACT_VALUES):
                instrument = await session.scalar(
                    sa.select(Instrument).where(Instrument.symbol == f"TEST{index}")
                )
                assert instrument is not None
                assert isinstance(instrument.contract_size, Decimal)
                assert instrument.contract_size == value
                assert instrument.pip_size == value
                assert instrument.spread == -value
                group = await session.scalar(sa.select(Group).where(Group.name == f"test-{index}"))
                assert group is not None
                assert isinstance(group.max_exposure, Decimal)
                assert group.max_exposure == value
                assert group.commission_value == value
                assert group.margin_call_level == value

            # The driver itself never hands back a float.
            raw = await session.scalar(
                sa.text("SELECT contract_size FROM instruments WHERE symbol = 'TEST0'")
            )
            assert not isinstance(raw, float)
            assert Decimal(raw) == EXACT_VALUES[0]
    finally:
        await database.dispose()
