"""Roles, the permission catalog, grants and team overrides (seed sections 18, 19).

A role's grants are the permission names in ``roles.permissions``; the catalog
(``permissions``) gives them ids, display names and categories. Every change runs
the privilege-escalation guards (:mod:`~brokerkernel.kernel.identity.guards`) for
the acting staff user and, after commit, reloads the RBAC cache on every process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.identity import guards
from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.models import Permission, Team, TeamPermissionOverride
from brokerkernel.kernel.identity.rbac import RolePolicy, StaffAccess
from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Role

#: Role columns a PATCH may change (seed section 19, "Updatable fields").
ROLE_UPDATABLE = (
    "display_name",
    "description",
    "customer_view_scope",
    "customer_edit_scope",
    "pii_email",
    "pii_phone",
    "can_export_pii",
    "level",
    "is_active",
)
ROLE_FIELDS = ("id", "name", *ROLE_UPDATABLE)


def role_json(role: Role) -> dict[str, Any]:
    """A role with its RBAC columns and granted permission names."""
    return {**{name: getattr(role, name) for name in ROLE_FIELDS}, "permissions": role.permissions}


def permission_json(permission: Permission) -> dict[str, Any]:
    return {
        "id": permission.id,
        "name": permission.name,
        "display_name": permission.display_name,
        "description": permission.description,
        "category": permission.category,
    }


class RoleService:
    """Role and permission administration; ``changed`` reloads the RBAC cache."""

    def __init__(
        self, db: Database, wall: WallClock, changed: Callable[[], Awaitable[None]]
    ) -> None:
        self._db = db
        self._wall = wall
        self._changed = changed

    # --- roles ------------------------------------------------------------------

    async def roles(self, include_inactive: bool = False) -> list[Role]:
        query = select(Role).order_by(Role.id)
        if not include_inactive:
            query = query.where(Role.is_active.is_(True))
        async with self._db.read() as session:
            return list(await session.scalars(query))

    async def role(self, role_id: int) -> Role:
        async with self._db.read() as session:
            role = await session.get(Role, role_id)
        if role is None:
            raise IdentityError(404, "Role not found")
        return role

    async def create_role(self, actor: StaffAccess, values: dict[str, Any]) -> Role:
        """A new role (no permissions yet); 403 above the actor's role, 409 name taken."""
        guards.check_role_values(actor.role, values)
        async with self._db.transaction() as session:
            if await session.scalar(select(Role.id).where(Role.name == values["name"])):
                raise IdentityError(409, "Role name already exists")
            role = Role(permissions=[], is_active=True, **values)
            session.add(role)
        await self._changed()
        return role

    async def update_role(self, actor: StaffAccess, role_id: int, values: dict[str, Any]) -> Role:
        """Apply ``values`` (see ROLE_UPDATABLE); 403 on escalation, 404 unknown role."""
        guards.check_role_values(actor.role, values)
        async with self._db.transaction() as session:
            role = await self._locked(session, role_id)
            guards.check_role_rank(actor.role, RolePolicy.of(role))
            for key, value in values.items():
                setattr(role, key, value)
        await self._changed()
        return role

    @staticmethod
    async def _locked(session: AsyncSession, role_id: int) -> Role:
        role = await session.get(Role, role_id, with_for_update=True)
        if role is None:
            raise IdentityError(404, "Role not found")
        return role

    # --- grants -----------------------------------------------------------------

    async def role_permissions(self, role_id: int) -> list[dict[str, Any]]:
        """Every catalog permission with ``granted`` for the role."""
        role = await self.role(role_id)
        granted = set(role.permissions)
        return [{**permission_json(p), "granted": p.name in granted} for p in await self.catalog()]

    async def set_grant(
        self, actor: StaffAccess, role_id: int, permission_id: int, granted: bool
    ) -> Role:
        """Grant (or revoke) a permission; granting needs the actor to hold it (403)."""
        async with self._db.transaction() as session:
            permission = await self._permission(session, permission_id)
            role = await self._locked(session, role_id)
            guards.check_role_rank(actor.role, RolePolicy.of(role))
            if granted:
                guards.check_grants(actor.permissions, [permission.name])
                if permission.name not in role.permissions:
                    role.permissions = [*role.permissions, permission.name]
            else:
                role.permissions = [p for p in role.permissions if p != permission.name]
        await self._changed()
        return role

    # --- catalog ----------------------------------------------------------------

    async def catalog(self, category: str | None = None) -> list[Permission]:
        query = select(Permission).order_by(Permission.id)
        if category is not None:
            query = query.where(Permission.category == category)
        async with self._db.read() as session:
            return list(await session.scalars(query))

    async def create_permission(self, values: dict[str, Any]) -> Permission:
        """A new catalog entry; 409 when the name exists."""
        async with self._db.transaction() as session:
            if await session.scalar(select(Permission.id).where(Permission.name == values["name"])):
                raise IdentityError(409, "Permission already exists")
            permission = Permission(created_at=self._wall.now(), **values)
            session.add(permission)
        return permission

    @staticmethod
    async def _permission(session: AsyncSession, permission_id: int) -> Permission:
        permission = await session.get(Permission, permission_id)
        if permission is None:
            raise IdentityError(404, "Permission not found")
        return permission

    # --- team overrides ------------------------------------------------------------

    async def team_overrides(self, team_id: str) -> list[dict[str, Any]]:
        async with self._db.read() as session:
            if await session.get(Team, team_id) is None:
                raise IdentityError(404, "Team not found")
            rows = await session.execute(
                select(Permission, TeamPermissionOverride)
                .join(TeamPermissionOverride, TeamPermissionOverride.permission_id == Permission.id)
                .where(TeamPermissionOverride.team_id == team_id)
                .order_by(Permission.id)
            )
            return [
                {
                    "team_id": team_id,
                    "permission_id": permission.id,
                    "permission": permission.name,
                    "granted": override.granted,
                    "updated_at": override.updated_at,
                }
                for permission, override in rows
            ]

    async def set_override(
        self, actor: StaffAccess, team_id: str, permission_id: int, granted: bool
    ) -> None:
        """Grant or withhold a permission for a team; granting needs the actor to hold it."""
        async with self._db.transaction() as session:
            if await session.get(Team, team_id) is None:
                raise IdentityError(404, "Team not found")
            permission = await self._permission(session, permission_id)
            if granted:
                guards.check_grants(actor.permissions, [permission.name])
            override = await session.get(
                TeamPermissionOverride, (team_id, permission_id), with_for_update=True
            )
            if override is None:
                override = TeamPermissionOverride(team_id=team_id, permission_id=permission_id)
                session.add(override)
            override.granted = granted
            override.updated_at = self._wall.now()
        await self._changed()

    async def remove_override(self, team_id: str, permission_id: int) -> None:
        """Revert the team to its roles' grants; 404 when there was no override."""
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(TeamPermissionOverride).where(
                    TeamPermissionOverride.team_id == team_id,
                    TeamPermissionOverride.permission_id == permission_id,
                )
            )
            if getattr(result, "rowcount", 0) == 0:
                raise IdentityError(404, "Permission override not found")
        await self._changed()
