"""Staff users: bootstrap and creation (seed section 17)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.identity.models import Team
from brokerkernel.kernel.security import PASSWORD_MAX, PASSWORD_MIN, hash_password_async
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Role, StaffUser, new_id


class StaffError(ValueError):
    """A staff user cannot be created; the message says why and ``status`` is the
    HTTP answer (409 email taken, 422 bad password, role or team)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


async def create_staff_user(
    db: Database,
    email: str,
    password: str,
    *,
    role: str | int = "admin",
    first_name: str = "Admin",
    last_name: str = "",
    team_id: str | None = None,
) -> StaffUser:
    """Create an active staff user with ``role`` (name or id) in ``team_id``.

    The password must be 8-72 characters (seed section 2) and is hashed with argon2id.
    Raises StaffError when the password length is wrong, the role or team does not
    exist (the database may not be migrated) or the email is taken.
    """
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise StaffError(f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")
    email = email.strip().lower()
    password_hash = await hash_password_async(password)
    async with db.transaction() as session:
        by = Role.name == role if isinstance(role, str) else Role.id == role
        role_id = await session.scalar(select(Role.id).where(by))
        if role_id is None:
            raise StaffError(f"role '{role}' not found: run 'brokerkernel db upgrade' first")
        if team_id is not None and await session.get(Team, team_id) is None:
            raise StaffError(f"team '{team_id}' not found")
        if await session.scalar(select(StaffUser.id).where(StaffUser.email == email)):
            raise StaffError(f"staff user {email} already exists", status=409)
        user = StaffUser(
            id=new_id(),
            email=email,
            password_hash=password_hash,
            first_name=first_name,
            last_name=last_name,
            role_id=role_id,
            team_id=team_id,
            is_active=True,
            created_at=MarketClock().now(),
            last_login_at=None,
        )
        session.add(user)
    return user


def user_json(user: StaffUser) -> dict[str, Any]:
    """The seed's UserResponse (section 17); never the password hash."""
    return {
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "full_name": f"{user.first_name} {user.last_name}".strip(),
        "team_id": user.team_id,
        "role_id": user.role_id,
        "is_active": user.is_active,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }
