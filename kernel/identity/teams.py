"""Staff teams with materialized paths (seed section 18).

A team's ``path`` lists the ids from the root down to itself, ``/root/child/``, so
its subtree is ``path LIKE '<path>%'`` (one index scan) and ``depth`` is the number
of ancestors. Re-parenting rewrites the moved team's and every descendant's path and
depth in one UPDATE inside one transaction; every tree change first locks the team
rows (``FOR UPDATE``; SQLite has a single writer), so concurrent moves cannot build
a cycle. A team cannot become its own parent or move under its own descendant (400).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.models import Team
from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import StaffUser, new_id

TEAM_FIELDS = (
    "id",
    "name",
    "parent_team_id",
    "path",
    "depth",
    "is_active",
    "created_at",
    "updated_at",
)


def team_json(team: Team) -> dict[str, Any]:
    """The seed's TeamResponse."""
    return {name: getattr(team, name) for name in TEAM_FIELDS}


class TeamService:
    """Team hierarchy reads and changes; ``changed`` is awaited after each commit
    (the RBAC cache reloads: team paths drive overrides and team scopes)."""

    def __init__(
        self, db: Database, wall: WallClock, changed: Callable[[], Awaitable[None]]
    ) -> None:
        self._db = db
        self._wall = wall
        self._changed = changed

    @staticmethod
    async def _parent(session: AsyncSession, parent_id: str | None) -> Team | None:
        if parent_id is None:
            return None
        parent = await session.get(Team, parent_id, with_for_update=True)
        if parent is None:
            raise IdentityError(404, "Parent team not found")
        return parent

    async def create(self, name: str, parent_team_id: str | None) -> Team:
        """A new team under ``parent_team_id`` (None: a root); 404 for an unknown parent."""
        now = self._wall.now()
        async with self._db.transaction() as session:
            parent = await self._parent(session, parent_team_id)
            team_id = new_id()
            team = Team(
                id=team_id,
                name=name,
                parent_team_id=parent_team_id,
                path=f"{parent.path if parent else '/'}{team_id}/",
                depth=parent.depth + 1 if parent else 0,
                is_active=True,
                created_at=now,
                updated_at=now,
            )
            session.add(team)
        await self._changed()
        return team

    async def update(self, team_id: str, changes: dict[str, Any]) -> Team:
        """Apply ``name``, ``is_active`` and ``parent_team_id`` (re-parenting) changes.

        Raises IdentityError 404 (team or parent unknown) or 400 (a cycle).
        """
        async with self._db.transaction() as session:
            await session.execute(select(Team.id).with_for_update())  # serialise tree changes
            team = await session.get(Team, team_id)
            if team is None:
                raise IdentityError(404, "Team not found")
            if "name" in changes:
                team.name = changes["name"]
            if "is_active" in changes:
                team.is_active = changes["is_active"]
            team.updated_at = self._wall.now()
            if "parent_team_id" in changes and changes["parent_team_id"] != team.parent_team_id:
                await self._move(session, team, changes["parent_team_id"])
        await self._changed()
        return team

    async def _move(self, session: AsyncSession, team: Team, parent_id: str | None) -> None:
        if parent_id == team.id:
            raise IdentityError(400, "Team cannot be its own parent")
        parent = await self._parent(session, parent_id)
        if parent is not None and parent.path.startswith(team.path):
            raise IdentityError(400, "Cannot re-parent a team under its own descendant")
        old_prefix = team.path
        new_prefix = f"{parent.path if parent else '/'}{team.id}/"
        delta = (parent.depth + 1 if parent else 0) - team.depth
        team.parent_team_id = parent_id
        await session.flush()
        await session.execute(
            update(Team)
            .where(Team.path.like(f"{old_prefix}%"))
            .values(
                path=literal(new_prefix) + func.substr(Team.path, len(old_prefix) + 1),
                depth=Team.depth + delta,
            )
            .execution_options(synchronize_session=False)
        )
        await session.refresh(team)

    async def get(self, team_id: str) -> Team:
        async with self._db.read() as session:
            team = await session.get(Team, team_id)
        if team is None:
            raise IdentityError(404, "Team not found")
        return team

    async def find(
        self,
        *,
        is_active: bool | None = None,
        depth: int | None = None,
        parent_team_id: str | None = None,
    ) -> list[Team]:
        """Teams ordered by path (each parent before its children), filtered."""
        query = select(Team).order_by(Team.depth, Team.name, Team.id)
        if is_active is not None:
            query = query.where(Team.is_active.is_(is_active))
        if depth is not None:
            query = query.where(Team.depth == depth)
        if parent_team_id is not None:
            query = query.where(Team.parent_team_id == parent_team_id)
        async with self._db.read() as session:
            return list(await session.scalars(query))

    async def subtree(self, team_id: str) -> list[Team]:
        """All descendants of the team at any depth (not the team itself)."""
        team = await self.get(team_id)
        async with self._db.read() as session:
            rows = await session.scalars(
                select(Team)
                .where(Team.path.like(f"{team.path}%"), Team.id != team.id)
                .order_by(Team.depth, Team.name, Team.id)
            )
            return list(rows)

    async def tree(self) -> list[dict[str, Any]]:
        """Every team as nested JSON (``children`` lists), roots first, by name."""
        nodes: dict[str, dict[str, Any]] = {}
        roots: list[dict[str, Any]] = []
        for team in await self.find():
            node = {**team_json(team), "children": []}
            nodes[team.id] = node
            parent = nodes.get(team.parent_team_id or "")
            (parent["children"] if parent is not None else roots).append(node)
        return roots

    async def users(self, team_id: str, *, subtree: bool) -> list[StaffUser]:
        """Active users directly in the team, or in it and all its descendants."""
        team = await self.get(team_id)
        query = select(StaffUser).where(StaffUser.is_active.is_(True))
        if subtree:
            query = query.where(
                StaffUser.team_id.in_(select(Team.id).where(Team.path.like(f"{team.path}%")))
            )
        else:
            query = query.where(StaffUser.team_id == team.id)
        async with self._db.read() as session:
            return list(await session.scalars(query.order_by(StaffUser.email)))
