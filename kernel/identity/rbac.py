"""The in-process RBAC cache: every permission and scope check reads it.

:class:`RbacCache` holds a :class:`Snapshot` of roles (permissions, customer
scopes, PII rules, level), staff users (role, team, active), teams (materialized
paths), team permission overrides, broker tenants and partner clients. It is
loaded at startup and reloaded when a change is committed: the process that made
the change reloads at once and writes a new random value under the cache key
``rbac:version``; every process polls that key (Redis with ``REDIS_URL``) every
``poll_s`` seconds and reloads when it differs. When the database or the cache
cannot be read the cache is *degraded*: checks are answered from the last snapshot
loaded, which may be stale, and ``permission_checks_skipped`` counts them (seed
section 1, ``/health``); a user the stale snapshot does not know has no access.

Effective staff permissions (seed section 19): the role's grants, then each team
override from the root down to the user's own team (the deepest override wins).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.identity.models import (
    BrokerTenant,
    PartnerClient,
    Permission,
    Team,
    TeamPermissionOverride,
)
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Role, StaffUser
from brokerkernel.kernel.tasks import cancel_and_wait

log = logging.getLogger(__name__)

VERSION_KEY = "rbac:version"

#: Orders of the RBAC columns, lowest first (privilege-escalation guards compare them).
VIEW_SCOPES = ("own", "team", "all")
EDIT_SCOPES = ("none", "own", "team", "all")
PII_LEVELS = ("hidden", "masked", "full")


@dataclass(frozen=True, slots=True)
class RolePolicy:
    """A role's grants and customer-data rules (seed section 19)."""

    id: int
    name: str
    permissions: frozenset[str]
    customer_view_scope: str = "own"
    customer_edit_scope: str = "none"
    pii_email: str = "masked"
    pii_phone: str = "masked"
    can_export_pii: bool = False
    level: int = 0
    is_active: bool = True

    @classmethod
    def of(cls, role: Role) -> RolePolicy:
        return cls(
            id=role.id,
            name=role.name,
            permissions=frozenset(role.permissions) if role.is_active else frozenset(),
            customer_view_scope=role.customer_view_scope,
            customer_edit_scope=role.customer_edit_scope,
            pii_email=role.pii_email,
            pii_phone=role.pii_phone,
            can_export_pii=role.can_export_pii,
            level=role.level,
            is_active=role.is_active,
        )


@dataclass(frozen=True, slots=True)
class StaffAccess:
    """A staff user's effective access: role policy, team and permissions."""

    user_id: str
    role: RolePolicy
    team_id: str | None
    team_path: str | None
    permissions: frozenset[str]
    is_active: bool


@dataclass(frozen=True, slots=True)
class PartnerEntry:
    """A partner OAuth2 client as the gateway checks it on each request."""

    client_id: str
    tenant_id: str
    scopes: frozenset[str]
    is_active: bool


@dataclass(slots=True)
class Snapshot:
    """One consistent read of the RBAC tables (see the module docstring)."""

    roles: dict[int, RolePolicy]
    users: dict[str, tuple[int, str | None, bool]]
    teams: dict[str, tuple[str, bool]]
    overrides: dict[str, dict[str, bool]]
    tenants: dict[str, bool]
    partners: dict[str, PartnerEntry]
    _staff: dict[str, StaffAccess | None] = field(default_factory=dict)

    def team_path(self, team_id: str | None) -> str | None:
        entry = self.teams.get(team_id) if team_id is not None else None
        return entry[0] if entry is not None else None

    def effective_permissions(self, role: RolePolicy, team_id: str | None) -> frozenset[str]:
        """The role's grants with the overrides of the team's path applied, root first."""
        path = self.team_path(team_id)
        if path is None or not self.overrides:
            return role.permissions
        granted = set(role.permissions)
        for ancestor in path.strip("/").split("/"):
            for name, grant in self.overrides.get(ancestor, {}).items():
                if grant:
                    granted.add(name)
                else:
                    granted.discard(name)
        return frozenset(granted)

    def staff(self, user_id: str) -> StaffAccess | None:
        """The effective access of ``user_id``; None for an unknown user (memoized)."""
        if user_id in self._staff:
            return self._staff[user_id]
        user = self.users.get(user_id)
        access = None
        if user is not None:
            role_id, team_id, is_active = user
            role = self.roles.get(role_id) or RolePolicy(role_id, "", frozenset(), is_active=False)
            access = StaffAccess(
                user_id=user_id,
                role=role,
                team_id=team_id,
                team_path=self.team_path(team_id),
                permissions=self.effective_permissions(role, team_id)
                if role.is_active
                else frozenset(),
                is_active=is_active,
            )
        self._staff[user_id] = access
        return access


class RbacCache:
    """The process's RBAC snapshot and its refresh (see the module docstring)."""

    def __init__(self, db: Database, cache: Cache, poll_s: float = 1.0) -> None:
        self._db = db
        self._cache = cache
        self._poll_s = poll_s
        self.snapshot: Snapshot | None = None
        self.version: str | None = None
        self.healthy = False
        #: Checks answered from token claims because the cache was degraded.
        self.permission_checks_skipped = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._reload = asyncio.Lock()

    @property
    def degraded(self) -> bool:
        return self.snapshot is None or not self.healthy

    def skipped(self) -> None:
        """Count one permission check answered without the live cache."""
        self.permission_checks_skipped += 1

    async def start(self) -> None:
        """Load the snapshot (raising if the database cannot be read) and start polling."""
        self.version = await self._cache.get(VERSION_KEY)
        await self.load()
        self._task = asyncio.create_task(self._poll_forever(), name="rbac-cache-poll")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None

    async def load(self) -> None:
        """Read every RBAC table into a new snapshot; marks the cache healthy."""
        async with self._lock:
            async with self._db.read() as session:
                roles = {r.id: RolePolicy.of(r) for r in await session.scalars(select(Role))}
                users = {
                    row.id: (row.role_id, row.team_id, row.is_active)
                    for row in await session.execute(
                        select(
                            StaffUser.id, StaffUser.role_id, StaffUser.team_id, StaffUser.is_active
                        )
                    )
                }
                teams = {
                    row.id: (row.path, row.is_active)
                    for row in await session.execute(select(Team.id, Team.path, Team.is_active))
                }
                overrides: dict[str, dict[str, bool]] = {}
                for row in await session.execute(
                    select(
                        TeamPermissionOverride.team_id,
                        Permission.name,
                        TeamPermissionOverride.granted,
                    ).join(Permission, Permission.id == TeamPermissionOverride.permission_id)
                ):
                    overrides.setdefault(row.team_id, {})[row.name] = row.granted
                tenants = {
                    row.id: row.prop_firm_enabled
                    for row in await session.execute(
                        select(BrokerTenant.id, BrokerTenant.prop_firm_enabled)
                    )
                }
                partners = {
                    client.client_id: PartnerEntry(
                        client.client_id,
                        client.tenant_id,
                        frozenset(client.scopes),
                        client.is_active,
                    )
                    for client in await session.scalars(select(PartnerClient))
                }
            self.snapshot = Snapshot(roles, users, teams, overrides, tenants, partners)
            self.healthy = True

    async def ensure_known(self, *, user_id: str = "", client_id: str = "") -> None:
        """Reload when a staff user or partner client named by a valid token is missing:
        created moments ago by another process (or the CLI). Concurrent callers reload
        once; a failed reload degrades the cache."""
        loaded = self.snapshot
        if loaded is not None and (user_id in loaded.users or client_id in loaded.partners):
            return
        async with self._reload:
            if self.snapshot is loaded:
                try:
                    await self.load()
                except Exception:
                    log.exception("rbac cache degraded: checks use the last snapshot")
                    self.healthy = False

    async def changed(self) -> None:
        """Call after committing an RBAC change: reload here, signal the other processes."""
        self.version = str(uuid.uuid4())
        try:
            await self._cache.set(VERSION_KEY, self.version)
        except Exception:
            log.exception("rbac: cannot publish the new version; other processes poll the database")
            self.healthy = False
        await self.load()

    async def poll(self) -> None:
        """Reload when another process changed the RBAC tables; degrade on errors."""
        try:
            version = await self._cache.get(VERSION_KEY)
            if version != self.version or not self.healthy:
                self.version = version
                await self.load()
        except Exception:
            if self.healthy:
                log.exception("rbac cache degraded: checks use the last snapshot")
            self.healthy = False

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            await self.poll()

    def staff(self, user_id: str) -> StaffAccess | None:
        """Effective access of a staff user from the snapshot (the last one loaded
        while degraded), or None when unknown."""
        return None if self.snapshot is None else self.snapshot.staff(user_id)

    def tenant_enabled(self, tenant_id: str | None) -> bool:
        """Whether ``tenant_id`` is enabled for the prop-firm API (ZT4 entitlement gate)."""
        if self.snapshot is None or tenant_id is None:
            return False
        return self.snapshot.tenants.get(tenant_id, False)

    def partner(self, client_id: str) -> PartnerEntry | None:
        return None if self.snapshot is None else self.snapshot.partners.get(client_id)
