"""Revision 0002 (identity): seeded catalog, role policies and tenant; round trip."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from brokerkernel.kernel.identity.seed import NEW_PERMISSIONS, PERMISSION_CATALOG, ROLE_POLICIES
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.db import Database

IDENTITY_TABLES = {
    "teams",
    "permissions",
    "team_permission_overrides",
    "auth_sessions",
    "auth_refresh_tokens",
    "staff_totp",
    "staff_backup_codes",
    "password_reset_tokens",
    "broker_tenants",
    "partner_clients",
}
ROLE_COLUMNS = {
    "description",
    "customer_view_scope",
    "customer_edit_scope",
    "pii_email",
    "pii_phone",
    "can_export_pii",
    "level",
}


def _schema(connection: Connection) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(connection)
    roles = {column["name"] for column in inspector.get_columns("roles")}
    return set(inspector.get_table_names()), roles


async def _state(url: str) -> tuple[set[str], set[str], list[str]]:
    database = Database(url)
    try:
        async with database.read() as session:
            tables, roles = await (await session.connection()).run_sync(_schema)
            admin = await session.scalar(sa.text("SELECT permissions FROM roles WHERE id = 1"))
    finally:
        await database.dispose()
    granted = admin if isinstance(admin, list) else json.loads(admin)
    return tables, roles, granted


async def _seeded(url: str) -> None:
    database = Database(url)
    try:
        async with database.read() as session:
            catalog = (
                await session.execute(
                    sa.text("SELECT id, name, category FROM permissions ORDER BY id")
                )
            ).all()
            assert [tuple(row) for row in catalog] == [
                (i, name, category) for i, (name, category, _) in enumerate(PERMISSION_CATALOG, 1)
            ]
            tenant = (
                await session.execute(sa.text("SELECT id, prop_firm_enabled FROM broker_tenants"))
            ).all()
            assert [(row[0], bool(row[1])) for row in tenant] == [("default", False)]
            for name, policy in ROLE_POLICIES.items():
                row = (
                    await session.execute(
                        sa.text(
                            "SELECT customer_view_scope, customer_edit_scope, pii_email, "
                            "pii_phone, can_export_pii, level FROM roles WHERE name = :name"
                        ),
                        {"name": name},
                    )
                ).one()
                assert (*row[:4], bool(row[4]), row[5]) == (
                    policy["customer_view_scope"],
                    policy["customer_edit_scope"],
                    policy["pii_email"],
                    policy["pii_phone"],
                    policy["can_export_pii"],
                    policy["level"],
                ), name
    finally:
        await database.dispose()


async def test_identity_revision_upgrades_downgrades_and_upgrades_again(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    await asyncio.to_thread(migrate.upgrade, url)
    tables, roles, admin = await _state(url)
    assert tables >= IDENTITY_TABLES and roles >= ROLE_COLUMNS
    assert set(NEW_PERMISSIONS) <= set(admin)
    await _seeded(url)

    await asyncio.to_thread(migrate.downgrade, url, "0001")  # every revision above the baseline
    tables, roles, admin = await _state(url)
    assert not IDENTITY_TABLES & tables and not ROLE_COLUMNS & roles
    assert not set(NEW_PERMISSIONS) & set(admin)

    await asyncio.to_thread(migrate.upgrade, url)
    tables, roles, admin = await _state(url)
    assert tables >= IDENTITY_TABLES and roles >= ROLE_COLUMNS
    await _seeded(url)
