"""Tables of identity and access control (revision ``0002``).

Teams with materialized paths (seed section 18), the permission catalog and team
overrides (section 19), sessions and rotating refresh tokens, staff 2FA (section 2),
customer password-reset tokens, broker tenants and partner OAuth2 clients (ZT4
partner API). Secrets are never stored: refresh, reset and client secrets as SHA-256
digests, backup codes as keyed digests, TOTP seeds encrypted (AES-256-GCM).
Times are aware UTC (wall clock).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base, new_id


class Team(Base):
    """An organisational unit of staff (seed section 18).

    ``path`` is the materialized path of ids from the root, ``/root/child/``, so a
    subtree is one ``path LIKE '<path>%'`` index scan; ``depth`` is 0 for a root.
    """

    __tablename__ = "teams"
    __table_args__ = (
        Index("ix_teams_path", "path", postgresql_ops={"path": "varchar_pattern_ops"}),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    parent_team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    path: Mapped[str] = mapped_column(String(2048))
    depth: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Permission(Base):
    """A permission a role can grant; ``name`` is the code the seed names per endpoint."""

    __tablename__ = "permissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime]


class TeamPermissionOverride(Base):
    """Grants (``granted``) or withholds a permission for a team's members and the
    teams below it, whatever their role says; the deepest team's override wins."""

    __tablename__ = "team_permission_overrides"

    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    permission_id: Mapped[int] = mapped_column(ForeignKey("permissions.id"), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class AuthSession(Base):
    """A login session of a staff user (``subject_type`` "user") or a customer.

    Its id is the ``sid`` claim of every access token it issues; revoking it stops
    those tokens at once. ``expires_at`` follows the newest refresh token (7 days).
    """

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_subject", "subject_type", "subject_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(36))
    device: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class RefreshToken(Base):
    """One refresh token of a session (its family). Used once: ``rotated_at`` is set
    when it is exchanged; presenting it again revokes the whole session."""

    __tablename__ = "auth_refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("auth_sessions.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]


class StaffTotp(Base):
    """A staff user's TOTP seed (RFC 6238), sealed with AES-256-GCM.

    ``enabled`` turns true once a code was verified; ``last_used_step`` (30 s steps
    since the epoch) refuses replaying a code that was already accepted.
    """

    __tablename__ = "staff_totp"

    user_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), primary_key=True)
    secret_sealed: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    enabled_at: Mapped[datetime | None]


class BackupCode(Base):
    """A single-use 2FA backup code, stored as a keyed digest."""

    __tablename__ = "staff_backup_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class PasswordResetToken(Base):
    """A customer's password-reset token (seed section 2), stored as a digest;
    ``used_at`` is set atomically when it is burned."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class BrokerTenant(Base):
    """A broker tenant; partner clients belong to one. ``prop_firm_enabled`` is the
    ZT4 entitlement gate of every prop-firm endpoint."""

    __tablename__ = "broker_tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prop_firm_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class PartnerClient(Base):
    """An OAuth2 client-credentials client of a partner firm (ZT4 partner API).

    ``secret_hash`` is the SHA-256 of the secret, which is shown once; ``scopes`` the
    granted scope names.
    """

    __tablename__ = "partner_clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("broker_tenants.id"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
