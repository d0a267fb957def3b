"""Staff users: bootstrap and creation (seed section 17)."""

from __future__ import annotations

from sqlalchemy import select

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.security import hash_password
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Role, StaffUser, new_id


class StaffError(ValueError):
    """A staff user cannot be created; the message says why."""


async def create_staff_user(
    db: Database,
    email: str,
    password: str,
    *,
    role: str = "admin",
    first_name: str = "Admin",
    last_name: str = "",
) -> StaffUser:
    """Create an active staff user with ``role``; password 8-72 characters (argon2id).

    Raises StaffError when the password length is wrong, the role does not exist
    (the database is not migrated) or the email is taken.
    """
    if not 8 <= len(password) <= 72:
        raise StaffError("password must be 8-72 characters")
    email = email.strip().lower()
    async with db.transaction() as session:
        role_id = await session.scalar(select(Role.id).where(Role.name == role))
        if role_id is None:
            raise StaffError(f"role '{role}' not found: run 'brokerkernel db upgrade' first")
        if await session.scalar(select(StaffUser.id).where(StaffUser.email == email)):
            raise StaffError(f"staff user {email} already exists")
        user = StaffUser(
            id=new_id(),
            email=email,
            password_hash=hash_password(password),
            first_name=first_name,
            last_name=last_name,
            role_id=role_id,
            is_active=True,
            created_at=MarketClock().now(),
        )
        session.add(user)
    return user
