"""Staff user administration (seed section 17): search, update, presence.

Updates run the privilege-escalation guards: a staff user cannot edit a user whose
role ranks above their own, cannot assign a role exceeding their own access, and
cannot deactivate themselves. Deactivating a user revokes all their sessions; every
change reloads the RBAC cache (a role or team change applies to the next request).
Presence is a cache key with a 300 s TTL refreshed by ``POST /users/{id}/ping``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, or_, select

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.identity import guards
from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.models import Team
from brokerkernel.kernel.identity.rbac import RolePolicy, StaffAccess
from brokerkernel.kernel.identity.sessions import SessionService
from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Role, StaffUser

PRESENCE_TTL_S = 300
PRESENCE_PREFIX = "presence:user:"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class StaffDirectory:
    """Staff user queries and updates (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        wall: WallClock,
        sessions: SessionService,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._db = db
        self._cache = cache
        self._wall = wall
        self._sessions = sessions
        self._changed = changed

    async def find(
        self,
        *,
        team_id: str | None = None,
        role_id: int | None = None,
        is_active: bool | None = None,
        search: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> tuple[list[StaffUser], int]:
        """One page of users ordered by email, and the total matching count.

        ``search`` matches first name, last name or email case-insensitively.
        """
        query = select(StaffUser)
        if team_id is not None:
            query = query.where(StaffUser.team_id == team_id)
        if role_id is not None:
            query = query.where(StaffUser.role_id == role_id)
        if is_active is not None:
            query = query.where(StaffUser.is_active.is_(is_active))
        if search:
            pattern = f"%{_like_escape(search.strip())}%"
            query = query.where(
                or_(
                    StaffUser.first_name.ilike(pattern, escape="\\"),
                    StaffUser.last_name.ilike(pattern, escape="\\"),
                    StaffUser.email.ilike(pattern, escape="\\"),
                )
            )
        async with self._db.read() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(StaffUser.email).limit(page_size).offset((page - 1) * page_size)
            )
            return list(rows), int(total or 0)

    async def get(self, user_id: str) -> StaffUser:
        async with self._db.read() as session:
            user = await session.get(StaffUser, user_id)
        if user is None:
            raise IdentityError(404, "User not found")
        return user

    async def update(self, actor: StaffAccess, user_id: str, changes: dict[str, Any]) -> StaffUser:
        """Apply ``first_name``, ``last_name``, ``team_id``, ``role_id``, ``is_active``.

        Raises IdentityError 403 (escalation guards), 404 (user, role or team
        unknown) or 400 (deactivating yourself).
        """
        async with self._db.transaction() as session:
            user = await session.get(StaffUser, user_id, with_for_update=True)
            if user is None:
                raise IdentityError(404, "User not found")
            current = await session.get(Role, user.role_id)
            if current is not None and user.id != actor.user_id:
                guards.check_role_rank(actor.role, RolePolicy.of(current), "user's role")
            if "role_id" in changes and changes["role_id"] != user.role_id:
                role = await session.get(Role, changes["role_id"])
                if role is None:
                    raise IdentityError(404, "Role not found")
                guards.check_assignable(actor.role, actor.permissions, RolePolicy.of(role))
            if (
                changes.get("team_id") is not None
                and await session.get(Team, changes["team_id"]) is None
            ):
                raise IdentityError(404, "Team not found")
            if changes.get("is_active") is False and user.id == actor.user_id:
                raise IdentityError(400, "You cannot deactivate yourself")
            for key in ("first_name", "last_name", "team_id", "role_id", "is_active"):
                if key in changes:
                    setattr(user, key, changes[key])
            if changes.get("is_active") is False:
                await self._sessions.revoke(
                    "user", user.id, reason="user_disabled", session=session
                )
        await self._changed()
        return user

    async def ping(self, user_id: str) -> None:
        """Refresh the user's presence (300 s) and stamp ``last_login_at``."""
        await self._cache.set(PRESENCE_PREFIX + user_id, "1", PRESENCE_TTL_S)
        async with self._db.transaction() as session:
            user = await session.get(StaffUser, user_id)
            if user is None:
                raise IdentityError(404, "User not found")
            user.last_login_at = self._wall.now()

    async def online(self, user_id: str) -> bool:
        await self.get(user_id)
        return await self._cache.get(PRESENCE_PREFIX + user_id) is not None
