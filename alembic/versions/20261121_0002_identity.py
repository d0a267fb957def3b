"""Identity and access control: teams, permission catalog, sessions, 2FA, partners.

Adds the RBAC columns of ``roles`` (seed section 19) and fills them for the
baseline roles, links ``staff_users.team_id`` to the new ``teams`` table, and
creates the permission catalog, team permission overrides, login sessions with
rotating refresh tokens, staff TOTP and backup codes, customer password-reset
tokens, broker tenants and partner OAuth2 clients
(:mod:`brokerkernel.kernel.identity.models`). Seeds the catalog, grants the
administrator every new permission and inserts the default tenant
(:mod:`brokerkernel.kernel.identity.seed`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from brokerkernel.kernel.identity.seed import (
    DEFAULT_TENANT,
    NEW_PERMISSIONS,
    PERMISSION_CATALOG,
    ROLE_POLICIES,
)
from brokerkernel.kernel.storage.seed import SEED_CREATED_AT

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (name, type, server default for existing rows) of the roles' RBAC columns; every
#: column but ``description`` is NOT NULL. Least privilege for roles not in the seed.
ROLE_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any], Any], ...] = (
    ("description", sa.Text(), None),
    ("customer_view_scope", sa.String(length=8), sa.text("'own'")),
    ("customer_edit_scope", sa.String(length=8), sa.text("'none'")),
    ("pii_email", sa.String(length=8), sa.text("'masked'")),
    ("pii_phone", sa.String(length=8), sa.text("'masked'")),
    ("can_export_pii", sa.Boolean(), sa.false()),
    ("level", sa.Integer(), sa.text("0")),
)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _roles() -> sa.TableClause:
    return sa.table(
        "roles",
        sa.column("id", sa.Integer()),
        sa.column("name", sa.String()),
        sa.column("permissions", sa.JSON()),
        *(sa.column(name, type_) for name, type_, _default in ROLE_COLUMNS),
    )


def upgrade() -> None:
    """Create the identity tables, extend roles and staff users, insert the seed rows."""
    with op.batch_alter_table("roles") as batch:
        for name, type_, default in ROLE_COLUMNS:
            batch.add_column(
                sa.Column(name, type_, nullable=default is None, server_default=default)
            )

    op.create_table(
        "teams",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("parent_team_id", sa.String(length=36), nullable=True),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_team_id"], ["teams.id"], name=op.f("fk_teams_parent_team_id_teams")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
    )
    op.create_index(op.f("ix_teams_parent_team_id"), "teams", ["parent_team_id"])
    op.create_index(
        "ix_teams_path", "teams", ["path"], postgresql_ops={"path": "varchar_pattern_ops"}
    )
    with op.batch_alter_table("staff_users") as batch:
        batch.create_foreign_key(op.f("fk_staff_users_team_id_teams"), "teams", ["team_id"], ["id"])
        batch.create_index(op.f("ix_staff_users_team_id"), ["team_id"])

    permissions = op.create_table(
        "permissions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permissions")),
        sa.UniqueConstraint("name", name=op.f("uq_permissions_name")),
    )
    op.create_index(op.f("ix_permissions_category"), "permissions", ["category"])
    op.create_table(
        "team_permission_overrides",
        sa.Column("team_id", sa.String(length=36), nullable=False),
        sa.Column("permission_id", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["permission_id"],
            ["permissions.id"],
            name=op.f("fk_team_permission_overrides_permission_id_permissions"),
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_team_permission_overrides_team_id_teams")
        ),
        sa.PrimaryKeyConstraint(
            "team_id", "permission_id", name=op.f("pk_team_permission_overrides")
        ),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=36), nullable=False),
        sa.Column("device", sa.String(length=512), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("last_used_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    op.create_index("ix_auth_sessions_subject", "auth_sessions", ["subject_type", "subject_id"])
    op.create_table(
        "auth_refresh_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("rotated_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_auth_refresh_tokens_session_id_auth_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_refresh_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_auth_refresh_tokens_session_id"), "auth_refresh_tokens", ["session_id"]
    )
    op.create_table(
        "staff_totp",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("secret_sealed", sa.String(length=256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("enabled_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_users.id"], name=op.f("fk_staff_totp_user_id_staff_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_staff_totp")),
    )
    op.create_table(
        "staff_backup_codes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("used_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_users.id"],
            name=op.f("fk_staff_backup_codes_user_id_staff_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_backup_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_staff_backup_codes_code_hash")),
    )
    op.create_index(op.f("ix_staff_backup_codes_user_id"), "staff_backup_codes", ["user_id"])
    op.create_table(
        "password_reset_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("used_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_password_reset_tokens_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_reset_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_reset_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_password_reset_tokens_customer_id"), "password_reset_tokens", ["customer_id"]
    )
    tenants = op.create_table(
        "broker_tenants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prop_firm_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broker_tenants")),
    )
    op.create_table(
        "partner_clients",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("last_used_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["broker_tenants.id"],
            name=op.f("fk_partner_clients_tenant_id_broker_tenants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_clients")),
        sa.UniqueConstraint("client_id", name=op.f("uq_partner_clients_client_id")),
    )
    op.create_index(op.f("ix_partner_clients_tenant_id"), "partner_clients", ["tenant_id"])

    op.bulk_insert(
        permissions,
        [
            {
                "id": index,
                "name": name,
                "display_name": display,
                "description": None,
                "category": category,
                "created_at": SEED_CREATED_AT,
            }
            for index, (name, category, display) in enumerate(PERMISSION_CATALOG, start=1)
        ],
    )
    op.bulk_insert(tenants, [{**DEFAULT_TENANT, "created_at": SEED_CREATED_AT}])
    roles = _roles()
    connection = op.get_bind()
    for name, policy in ROLE_POLICIES.items():
        values = dict(policy)
        if name == "admin":
            granted = connection.scalar(sa.select(roles.c.permissions).where(roles.c.name == name))
            values["permissions"] = [*(granted or []), *NEW_PERMISSIONS]
        op.execute(roles.update().where(roles.c.name == name).values(**values))
    if connection.dialect.name == "postgresql":
        # The catalog ids were given explicitly: move the SERIAL sequence past them.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('permissions', 'id'), "
            "(SELECT max(id) FROM permissions))"
        )


def downgrade() -> None:
    """Drop everything :func:`upgrade` created; the administrator loses the new grants."""
    roles = _roles()
    connection = op.get_bind()
    granted = connection.scalar(sa.select(roles.c.permissions).where(roles.c.name == "admin"))
    if granted is not None:
        kept = [name for name in granted if name not in NEW_PERMISSIONS]
        op.execute(roles.update().where(roles.c.name == "admin").values(permissions=kept))

    op.drop_index(op.f("ix_partner_clients_tenant_id"), table_name="partner_clients")
    op.drop_table("partner_clients")
    op.drop_table("broker_tenants")
    op.drop_index(op.f("ix_password_reset_tokens_customer_id"), table_name="password_reset_tokens")
    op.drop_table("password_reset_tokens")
    op.drop_index(op.f("ix_staff_backup_codes_user_id"), table_name="staff_backup_codes")
    op.drop_table("staff_backup_codes")
    op.drop_table("staff_totp")
    op.drop_index(op.f("ix_auth_refresh_tokens_session_id"), table_name="auth_refresh_tokens")
    op.drop_table("auth_refresh_tokens")
    op.drop_index("ix_auth_sessions_subject", table_name="auth_sessions")
    op.drop_table("auth_sessions")
    op.drop_table("team_permission_overrides")
    op.drop_index(op.f("ix_permissions_category"), table_name="permissions")
    op.drop_table("permissions")
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_index(op.f("ix_staff_users_team_id"))
        batch.drop_constraint(op.f("fk_staff_users_team_id_teams"), type_="foreignkey")
    op.drop_index("ix_teams_path", table_name="teams")
    op.drop_index(op.f("ix_teams_parent_team_id"), table_name="teams")
    op.drop_table("teams")
    with op.batch_alter_table("roles") as batch:
        for name, _type, _default in reversed(ROLE_COLUMNS):
            batch.drop_column(name)
