"""Administration (seed sections 2, 17, 18, 19; ZT4 "Provisioning partner clients").

Staff users, teams, roles, the permission catalog and team overrides, 2FA, login
sessions, broker tenants and partner OAuth2 clients. Each route checks the
permission the seed names under its path; every change that grants access runs the
privilege-escalation guards (:mod:`brokerkernel.kernel.identity.guards`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import Principal, identity_of, principal, require_staff, require_user
from brokerkernel.api.errors import ApiError, forbidden, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.identity import guards
from brokerkernel.kernel.identity.models import AuthSession, BrokerTenant, PartnerClient
from brokerkernel.kernel.identity.rbac import (
    EDIT_SCOPES,
    PII_LEVELS,
    VIEW_SCOPES,
    RolePolicy,
    StaffAccess,
)
from brokerkernel.kernel.identity.roles import ROLE_UPDATABLE, permission_json, role_json
from brokerkernel.kernel.identity.seed import PARTNER_SCOPES
from brokerkernel.kernel.identity.teams import team_json
from brokerkernel.kernel.security import PASSWORD_MAX, PASSWORD_MIN
from brokerkernel.kernel.staff import StaffError, create_staff_user, user_json

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

EMAIL = {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "maxLength": 254}
NAME = {"type": "string", "maxLength": 128}
ID = {"type": "string", "minLength": 1, "maxLength": 64}
NULLABLE_ID = {"type": ["string", "null"], "minLength": 1, "maxLength": 64}
CODE = {
    "type": "object",
    "required": ["code"],
    "additionalProperties": False,
    "properties": {"code": {"type": "string", "minLength": 6, "maxLength": 16}},
}
GRANT = {
    "type": "object",
    "required": ["granted"],
    "additionalProperties": False,
    "properties": {"granted": {"type": "boolean"}},
}
USER_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["email", "password", "role_id"],
    "additionalProperties": False,
    "properties": {
        "email": EMAIL,
        "password": {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
        "first_name": NAME,
        "last_name": NAME,
        "team_id": NULLABLE_ID,
        "role_id": {"type": "integer", "minimum": 1},
    },
}
USER_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "first_name": NAME,
        "last_name": NAME,
        "team_id": NULLABLE_ID,
        "role_id": {"type": "integer", "minimum": 1},
        "is_active": {"type": "boolean"},
    },
}
TEAM_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {**NAME, "minLength": 1}, "parent_team_id": NULLABLE_ID},
}
TEAM_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {**NAME, "minLength": 1},
        "parent_team_id": NULLABLE_ID,
        "is_active": {"type": "boolean"},
    },
}
ROLE_PROPERTIES: dict[str, Any] = {
    "display_name": {**NAME, "minLength": 1},
    "description": {"type": ["string", "null"], "maxLength": 2000},
    "customer_view_scope": {"enum": list(VIEW_SCOPES)},
    "customer_edit_scope": {"enum": list(EDIT_SCOPES)},
    "pii_email": {"enum": list(PII_LEVELS)},
    "pii_phone": {"enum": list(PII_LEVELS)},
    "can_export_pii": {"type": "boolean"},
    "level": {"type": "integer", "minimum": 0, "maximum": 1000},
    "is_active": {"type": "boolean"},
}
ROLE_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "display_name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,63}$"},
        **{k: v for k, v in ROLE_PROPERTIES.items() if k != "is_active"},
    },
}
ROLE_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {k: ROLE_PROPERTIES[k] for k in ROLE_UPDATABLE},
}
PERMISSION_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "display_name", "category"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_:.]{1,63}$"},
        "display_name": {**NAME, "minLength": 1},
        "description": {"type": ["string", "null"], "maxLength": 2000},
        "category": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
    },
}
SCOPES = {
    "type": "array",
    "items": {"enum": list(PARTNER_SCOPES)},
    "minItems": 1,
    "uniqueItems": True,
}
PARTNER_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "scopes"],
    "additionalProperties": False,
    "properties": {"name": {**NAME, "minLength": 1}, "tenant_id": ID, "scopes": SCOPES},
}
PARTNER_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {**NAME, "minLength": 1},
        "scopes": SCOPES,
        "is_active": {"type": "boolean"},
    },
}
TENANT_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
        "name": {**NAME, "minLength": 1},
        "prop_firm_enabled": {"type": "boolean"},
    },
}
TENANT_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"name": {**NAME, "minLength": 1}, "prop_firm_enabled": {"type": "boolean"}},
}
#: OpenAPI schemas of the integer path parameters.
ROLE_PATH: dict[str, Any] = {"role_id": {"type": "integer"}}
PERMISSION_PATH: dict[str, Any] = {"permission_id": {"type": "integer"}}


def _actor(who: Principal) -> StaffAccess:
    """The caller as the escalation guards see them (current role and permissions)."""
    return StaffAccess(
        user_id=who.subject,
        role=who.policy or RolePolicy(0, "", frozenset()),
        team_id=who.team_id,
        team_path=who.team_path,
        permissions=who.permissions,
        is_active=True,
    )


def _no_content() -> web.Response:
    return web.Response(status=204)


# --------------------------------------------------------------------------- users


@operation(
    "Create a broker staff account",
    tags=["Users (Broker Staff)"],
    body=USER_CREATE,
    responses={201: "Created"},
    security="staff:edit_users",
)
async def create_user(request: web.Request) -> web.Response:
    """Create a staff account (201 UserResponse); 409 email taken, 403 role above yours."""
    who = require_staff(request, "edit_users")
    data = await validation.body(request, USER_CREATE)
    identity = identity_of(request)
    role = RolePolicy.of(await identity.roles.role(data["role_id"]))
    guards.check_assignable(_actor(who).role, who.permissions, role)
    try:
        user = await create_staff_user(
            identity.db,
            data["email"],
            data["password"],
            role=data["role_id"],
            first_name=data.get("first_name", ""),
            last_name=data.get("last_name", ""),
            team_id=data.get("team_id"),
        )
    except StaffError as exc:
        detail = "Email already registered." if exc.status == 409 else str(exc)
        raise ApiError(exc.status, detail) from exc
    await identity.rbac.changed()
    return respond(user_json(user), status=201)


@operation(
    "Current user profile from JWT",
    tags=["Users (Broker Staff)"],
    security="staff",
)
async def me(request: web.Request) -> web.Response:
    """The caller's profile with role, effective permissions and 2FA state."""
    who = require_user(request)
    identity = identity_of(request)
    user = await identity.users.get(who.subject)
    async with identity.db.read() as session:
        two_factor = await identity.two_factor.enabled(session, user.id)
    return respond(
        {
            **user_json(user),
            "role": who.role,
            "permissions": sorted(who.permissions),
            "team_path": who.team_path,
            "two_factor_enabled": two_factor,
        }
    )


@operation(
    "List broker staff with filters",
    tags=["Users (Broker Staff)"],
    query={
        "type": "object",
        "properties": {
            "page": {"type": "integer", "default": 1, "minimum": 1},
            "page_size": {"type": "integer", "default": 50, "minimum": 1, "maximum": 500},
            "role_id": {"type": "integer", "minimum": 1},
            "is_active": {"type": "boolean"},
            "team_id": {"type": "string"},
            "search": {"type": "string"},
        },
    },
    security="staff:view_users",
)
async def list_users(request: web.Request) -> web.Response:
    """Staff filtered by team, role, active state and ``search``; paged, ordered by
    email; ``X-Total-Count`` holds the number of matches."""
    require_staff(request, "view_users")
    page = validation.query_int(request, "page", default=1, minimum=1)
    page_size = validation.query_int(request, "page_size", default=50, minimum=1, maximum=500)
    assert page is not None and page_size is not None
    users, total = await identity_of(request).users.find(
        team_id=request.query.get("team_id") or None,
        role_id=validation.query_int(request, "role_id", minimum=1),
        is_active=validation.query_bool(request, "is_active"),
        search=request.query.get("search") or None,
        page=page,
        page_size=page_size,
    )
    return respond([user_json(u) for u in users], headers={"X-Total-Count": str(total)})


@operation(
    "Single user profile",
    tags=["Users (Broker Staff)"],
    security="staff:view_users",
)
async def get_user(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    return respond(user_json(await identity_of(request).users.get(request.match_info["id"])))


@operation(
    "Update user fields",
    tags=["Users (Broker Staff)"],
    body=USER_PATCH,
    security="staff:edit_users",
)
async def update_user(request: web.Request) -> web.Response:
    """Update name, team, role or active state; deactivating revokes the user's sessions."""
    who = require_staff(request, "edit_users")
    data = await validation.body(request, USER_PATCH)
    user = await identity_of(request).users.update(_actor(who), request.match_info["id"], data)
    return respond(user_json(user))


@operation(
    "Heartbeat -- refresh online presence",
    tags=["Users (Broker Staff)"],
    security="staff",
)
async def ping_user(request: web.Request) -> web.Response:
    """Refresh your own online presence (300 s) and stamp ``last_login_at`` (204)."""
    who = require_user(request)
    if request.match_info["id"] != who.subject:
        raise forbidden("You can only refresh your own presence")
    await identity_of(request).users.ping(who.subject)
    return _no_content()


@operation(
    "Check Redis online status",
    tags=["Users (Broker Staff)"],
    security="staff:view_users",
)
async def user_online(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    user_id = request.match_info["id"]
    return respond({"user_id": user_id, "online": await identity_of(request).users.online(user_id)})


# --------------------------------------------------------------------------- teams


@operation(
    "Create a team",
    tags=["Teams"],
    body=TEAM_CREATE,
    responses={201: "Created"},
    security="staff:edit_users",
)
async def create_team(request: web.Request) -> web.Response:
    """Create a team; ``path`` and ``depth`` are computed (201 TeamResponse)."""
    require_staff(request, "edit_users")
    data = await validation.body(request, TEAM_CREATE)
    team = await identity_of(request).teams.create(data["name"], data.get("parent_team_id"))
    return respond(team_json(team), status=201)


@operation(
    "Flat list of teams",
    tags=["Teams"],
    query={
        "type": "object",
        "properties": {
            "is_active": {"type": "boolean"},
            "depth": {"type": "integer", "minimum": 0},
            "parent_team_id": {"type": "string"},
        },
    },
    security="staff:view_users",
)
async def list_teams(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    teams = await identity_of(request).teams.find(
        is_active=validation.query_bool(request, "is_active"),
        depth=validation.query_int(request, "depth", minimum=0),
        parent_team_id=request.query.get("parent_team_id") or None,
    )
    return respond([team_json(t) for t in teams])


@operation(
    "Full hierarchy as nested JSON",
    tags=["Teams"],
    security="staff:view_users",
)
async def team_tree(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    return respond(await identity_of(request).teams.tree())


@operation(
    "Single team by ID",
    tags=["Teams"],
    security="staff:view_users",
)
async def get_team(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    return respond(team_json(await identity_of(request).teams.get(request.match_info["id"])))


@operation(
    "Direct children only (one level down)",
    tags=["Teams"],
    security="staff:view_users",
)
async def team_children(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    teams = identity_of(request).teams
    team = await teams.get(request.match_info["id"])
    return respond([team_json(t) for t in await teams.find(parent_team_id=team.id)])


@operation(
    "All descendants at any depth",
    tags=["Teams"],
    security="staff:view_users",
)
async def team_subtree(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    teams = await identity_of(request).teams.subtree(request.match_info["id"])
    return respond([team_json(t) for t in teams])


async def _team_members(request: web.Request, *, subtree: bool) -> web.Response:
    """The active users of team ``{id}`` (and of the teams below it when ``subtree``)."""
    require_staff(request, "view_users")
    users = await identity_of(request).teams.users(request.match_info["id"], subtree=subtree)
    return respond([user_json(u) for u in users])


@operation(
    "All active users directly in this team",
    tags=["Teams"],
    security="staff:view_users",
)
async def team_users(request: web.Request) -> web.Response:
    return await _team_members(request, subtree=False)


@operation(
    "All active users in this team and all descendants",
    tags=["Teams"],
    security="staff:view_users",
)
async def team_subtree_users(request: web.Request) -> web.Response:
    return await _team_members(request, subtree=True)


@operation(
    "Update a team",
    tags=["Teams"],
    body=TEAM_PATCH,
    security="staff:edit_users",
)
async def update_team(request: web.Request) -> web.Response:
    """Rename, (de)activate or re-parent (descendant paths recomputed atomically);
    400 for a cycle."""
    require_staff(request, "edit_users")
    data = await validation.body(request, TEAM_PATCH)
    team = await identity_of(request).teams.update(request.match_info["id"], data)
    return respond(team_json(team))


@operation(
    "List permission overrides for a team",
    tags=["Teams"],
    security="staff:view_users",
)
async def team_overrides(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    return respond(await identity_of(request).roles.team_overrides(request.match_info["id"]))


@operation(
    "Set a permission override for a team",
    tags=["Teams"],
    body=GRANT,
    path=PERMISSION_PATH,
    security="staff:manage_roles",
)
async def set_team_override(request: web.Request) -> web.Response:
    """Grant (``granted: true``) or withhold a permission for a team and the teams
    below it; granting needs you to hold the permission."""
    who = require_staff(request, "manage_roles")
    permission_id = validation.path_int(request, "permission_id")
    data = await validation.body(request, GRANT)
    roles = identity_of(request).roles
    team_id = request.match_info["id"]
    await roles.set_override(_actor(who), team_id, permission_id, data["granted"])
    overrides = await roles.team_overrides(team_id)
    return respond(next(o for o in overrides if o["permission_id"] == permission_id))


@operation(
    "Remove a permission override (reverts to role default)",
    tags=["Teams"],
    path=PERMISSION_PATH,
    security="staff:manage_roles",
)
async def remove_team_override(request: web.Request) -> web.Response:
    require_staff(request, "manage_roles")
    permission_id = validation.path_int(request, "permission_id")
    await identity_of(request).roles.remove_override(request.match_info["id"], permission_id)
    return _no_content()


# --------------------------------------------------------------- roles, permissions


@operation(
    "List all roles",
    tags=["Roles & Permissions"],
    query={"type": "object", "properties": {"include_inactive": {"type": "boolean"}}},
    security="staff:view_users",
)
async def list_roles(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    include = validation.query_bool(request, "include_inactive") or False
    return respond([role_json(r) for r in await identity_of(request).roles.roles(include)])


@operation(
    "Create a role",
    tags=["Roles & Permissions"],
    body=ROLE_CREATE,
    security="staff:manage_roles",
)
async def create_role(request: web.Request) -> web.Response:
    """A new role (201); no scope, PII rule or level above your own role's."""
    who = require_staff(request, "manage_roles")
    data = await validation.body(request, ROLE_CREATE)
    return respond(role_json(await identity_of(request).roles.create_role(_actor(who), data)), 201)


@operation(
    "Single role by ID",
    tags=["Roles & Permissions"],
    path=ROLE_PATH,
    security="staff:view_users",
)
async def get_role(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    role_id = validation.path_int(request, "role_id")
    return respond(role_json(await identity_of(request).roles.role(role_id)))


@operation(
    "Update role fields",
    tags=["Roles & Permissions"],
    body=ROLE_PATCH,
    path=ROLE_PATH,
    security="staff:manage_roles",
)
async def update_role(request: web.Request) -> web.Response:
    who = require_staff(request, "manage_roles")
    role_id = validation.path_int(request, "role_id")
    data = await validation.body(request, ROLE_PATCH)
    role = await identity_of(request).roles.update_role(_actor(who), role_id, data)
    return respond(role_json(role))


@operation(
    "List all permissions with granted status for a role",
    tags=["Roles & Permissions"],
    path=ROLE_PATH,
    security="staff:view_users",
)
async def role_permissions(request: web.Request) -> web.Response:
    """Every catalog permission with ``granted`` for the role."""
    require_staff(request, "view_users")
    role_id = validation.path_int(request, "role_id")
    return respond(await identity_of(request).roles.role_permissions(role_id))


async def _set_role_grant(request: web.Request, granted: bool | None) -> web.Response:
    """Set role ``{role_id}``'s grant of ``{permission_id}`` to ``granted`` (``None``:
    the ``granted`` of the :data:`GRANT` body); answers the role (``role_json``)."""
    who = require_staff(request, "manage_roles")
    role_id = validation.path_int(request, "role_id")
    permission_id = validation.path_int(request, "permission_id")
    if granted is None:
        granted = bool((await validation.body(request, GRANT))["granted"])
    role = await identity_of(request).roles.set_grant(_actor(who), role_id, permission_id, granted)
    return respond(role_json(role))


@operation(
    "Grant or revoke a permission",
    tags=["Roles & Permissions"],
    body=GRANT,
    path={**ROLE_PATH, **PERMISSION_PATH},
    security="staff:manage_roles",
)
async def set_role_permission(request: web.Request) -> web.Response:
    """Grant or revoke (``granted``); you cannot grant a permission you do not hold."""
    return await _set_role_grant(request, None)


@operation(
    "Remove a permission grant",
    tags=["Roles & Permissions"],
    path={**ROLE_PATH, **PERMISSION_PATH},
    security="staff:manage_roles",
)
async def remove_role_permission(request: web.Request) -> web.Response:
    return await _set_role_grant(request, False)


@operation(
    "List all defined permissions",
    tags=["Roles & Permissions"],
    query={"type": "object", "properties": {"category": {"type": "string"}}},
    security="staff:view_users",
)
async def list_permissions(request: web.Request) -> web.Response:
    require_staff(request, "view_users")
    category = request.query.get("category") or None
    return respond([permission_json(p) for p in await identity_of(request).roles.catalog(category)])


@operation(
    "Create a new permission definition",
    tags=["Roles & Permissions"],
    body=PERMISSION_CREATE,
    security="staff:manage_roles",
)
async def create_permission(request: web.Request) -> web.Response:
    require_staff(request, "manage_roles")
    data = await validation.body(request, PERMISSION_CREATE)
    return respond(permission_json(await identity_of(request).roles.create_permission(data)), 201)


# -------------------------------------------------------------------------- 2FA


@operation(
    "Generate TOTP secret for 2FA setup",
    tags=["Authentication"],
    security="staff",
)
async def totp_setup(request: web.Request) -> web.Response:
    """A new TOTP secret and its ``otpauth://`` URI; 400 when 2FA is already enabled."""
    who = require_user(request)
    identity = identity_of(request)
    user = await identity.users.get(who.subject)
    secret, uri = await identity.two_factor.setup(user.id, user.email)
    return respond({"secret": secret, "qr_uri": uri, "message": "Scan QR code, then verify"})


@operation(
    "Verify TOTP code to enable 2FA",
    tags=["Authentication"],
    body=CODE,
    security="staff",
)
async def totp_verify(request: web.Request) -> web.Response:
    """Enable 2FA with a valid code; returns 10 single-use backup codes (shown once)."""
    who = require_user(request)
    data = await validation.body(request, CODE)
    codes = await identity_of(request).two_factor.enable(who.subject, data["code"])
    return respond(
        {"enabled": True, "backup_codes": codes, "message": "2FA enabled. Save backup codes."}
    )


@operation(
    "Disable 2FA",
    tags=["Authentication"],
    body=CODE,
    security="staff",
)
async def totp_disable(request: web.Request) -> web.Response:
    who = require_user(request)
    data = await validation.body(request, CODE)
    await identity_of(request).two_factor.disable(who.subject, data["code"])
    return respond({"enabled": False, "message": "2FA has been disabled"})


# ------------------------------------------------------------------------ sessions


def _session_json(session: AuthSession, current: str | None) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "device": session.device,
        "ip": session.ip,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "expires_at": session.expires_at,
        "current": session.id == current,
    }


def _session_owner(request: web.Request) -> Principal:
    who = principal(request)
    if who.kind not in ("user", "customer"):
        raise forbidden("Sessions belong to staff users and customers")
    return who


@operation(
    "List active sessions",
    tags=["Authentication"],
    security=("customer", "staff"),
)
async def list_sessions(request: web.Request) -> web.Response:
    """The caller's active sessions, newest first (staff and customers)."""
    who = _session_owner(request)
    sessions = await identity_of(request).sessions.active(who.kind, who.subject)
    return respond([_session_json(s, who.session_id) for s in sessions])


@operation(
    "Revoke a specific session",
    tags=["Authentication"],
    responses={404: "Session not found"},
    security=("customer", "staff"),
)
async def revoke_session(request: web.Request) -> web.Response:
    """Revoke one of your sessions; its tokens stop working at once (204; 404 unknown)."""
    who = _session_owner(request)
    revoked = await identity_of(request).sessions.revoke(
        who.kind, who.subject, only=request.match_info["session_id"]
    )
    if not revoked:
        raise not_found("Session not found")
    return _no_content()


@operation(
    "Revoke all other sessions",
    tags=["Authentication"],
    security=("customer", "staff"),
)
async def revoke_other_sessions(request: web.Request) -> web.Response:
    """Revoke every session but the current one (the token's ``sid``)."""
    who = _session_owner(request)
    revoked = await identity_of(request).sessions.revoke(who.kind, who.subject, keep=who.session_id)
    return respond({"revoked": revoked})


# ------------------------------------------------------------ tenants and partners


def _tenant_json(tenant: BrokerTenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "prop_firm_enabled": tenant.prop_firm_enabled,
        "created_at": tenant.created_at,
    }


def _client_json(client: PartnerClient) -> dict[str, Any]:
    return {
        "id": client.id,
        "client_id": client.client_id,
        "name": client.name,
        "tenant_id": client.tenant_id,
        "scopes": client.scopes,
        "scope": " ".join(client.scopes),
        "is_active": client.is_active,
        "created_by": client.created_by,
        "created_at": client.created_at,
        "last_used_at": client.last_used_at,
    }


@operation(
    "List partner tenants",
    tags=["Partners"],
    security="staff:manage_broker_config",
)
async def list_tenants(request: web.Request) -> web.Response:
    require_staff(request, "manage_broker_config")
    return respond([_tenant_json(t) for t in await identity_of(request).partners.tenants()])


@operation(
    "Create a partner tenant",
    tags=["Partners"],
    body=TENANT_CREATE,
    responses={201: "Created"},
    security="staff:manage_broker_config",
)
async def create_tenant(request: web.Request) -> web.Response:
    require_staff(request, "manage_broker_config")
    data = await validation.body(request, TENANT_CREATE)
    tenant = await identity_of(request).partners.create_tenant(
        data["id"], data["name"], data.get("prop_firm_enabled", False)
    )
    return respond(_tenant_json(tenant), status=201)


@operation(
    "Update a partner tenant",
    tags=["Partners"],
    body=TENANT_PATCH,
    security="staff:manage_broker_config",
)
async def update_tenant(request: web.Request) -> web.Response:
    """Rename a tenant or switch its prop-firm entitlement (applies at once)."""
    require_staff(request, "manage_broker_config")
    data = await validation.body(request, TENANT_PATCH)
    tenant = await identity_of(request).partners.update_tenant(request.match_info["id"], data)
    return respond(_tenant_json(tenant))


@operation(
    "Create a partner OAuth client",
    tags=["Partners"],
    body=PARTNER_CREATE,
    responses={201: "Created"},
    security="staff:manage_partner_clients",
)
async def create_partner_client(request: web.Request) -> web.Response:
    """Issue a partner ``client_id`` and ``client_secret`` (shown once) with granted
    scopes under a tenant (default ``default``); 201."""
    who = require_staff(request, "manage_partner_clients")
    data = await validation.body(request, PARTNER_CREATE)
    client, secret = await identity_of(request).partners.create_client(
        data["name"], data.get("tenant_id", "default"), data["scopes"], who.subject
    )
    return respond({**_client_json(client), "client_secret": secret}, status=201)


@operation(
    "List partner OAuth clients",
    tags=["Partners"],
    query={"type": "object", "properties": {"tenant_id": {"type": "string"}}},
    security="staff:manage_partner_clients",
)
async def list_partner_clients(request: web.Request) -> web.Response:
    require_staff(request, "manage_partner_clients")
    clients = await identity_of(request).partners.clients(request.query.get("tenant_id") or None)
    return respond([_client_json(c) for c in clients])


@operation(
    "Get a partner OAuth client",
    tags=["Partners"],
    security="staff:manage_partner_clients",
)
async def get_partner_client(request: web.Request) -> web.Response:
    require_staff(request, "manage_partner_clients")
    return respond(
        _client_json(await identity_of(request).partners.client(request.match_info["id"]))
    )


@operation(
    "Update a partner OAuth client",
    tags=["Partners"],
    body=PARTNER_PATCH,
    security="staff:manage_partner_clients",
)
async def update_partner_client(request: web.Request) -> web.Response:
    """Rename, change scopes or (de)activate; a deactivated client's tokens stop at once."""
    require_staff(request, "manage_partner_clients")
    data = await validation.body(request, PARTNER_PATCH)
    client, _ = await identity_of(request).partners.update_client(request.match_info["id"], data)
    return respond(_client_json(client))


@operation(
    "Rotate a partner client secret",
    tags=["Partners"],
    security="staff:manage_partner_clients",
)
async def rotate_partner_secret(request: web.Request) -> web.Response:
    """A new ``client_secret`` (shown once); the old one stops working."""
    require_staff(request, "manage_partner_clients")
    client, secret = await identity_of(request).partners.update_client(
        request.match_info["id"], {}, rotate_secret=True
    )
    return respond({**_client_json(client), "client_secret": secret})


def setup(router: Router) -> None:
    add = router.add
    add("POST", "/api/admin/users", create_user, legacy="/users")
    add("GET", "/api/admin/users/me", me, legacy="/users/me")
    add("GET", "/api/admin/users", list_users, legacy="/users")
    add("GET", "/api/admin/users/{id}", get_user, legacy="/users/{id}")
    add("PATCH", "/api/admin/users/{id}", update_user, legacy="/users/{id}")
    add("POST", "/api/admin/users/{id}/ping", ping_user, legacy="/users/{id}/ping")
    add("GET", "/api/admin/users/{id}/online", user_online, legacy="/users/{id}/online")

    add("POST", "/api/admin/teams", create_team, legacy="/teams")
    add("GET", "/api/admin/teams", list_teams, legacy="/teams")
    add("GET", "/api/admin/teams/tree", team_tree, legacy="/teams/tree")
    add("GET", "/api/admin/teams/{id}", get_team, legacy="/teams/{id}")
    add("GET", "/api/admin/teams/{id}/children", team_children, legacy="/teams/{id}/children")
    add("GET", "/api/admin/teams/{id}/subtree", team_subtree, legacy="/teams/{id}/subtree")
    add("GET", "/api/admin/teams/{id}/users", team_users, legacy="/teams/{id}/users")
    add(
        "GET",
        "/api/admin/teams/{id}/subtree/users",
        team_subtree_users,
        legacy="/teams/{id}/subtree/users",
    )
    add("PATCH", "/api/admin/teams/{id}", update_team, legacy="/teams/{id}")
    add(
        "GET", "/api/admin/teams/{id}/permissions", team_overrides, legacy="/teams/{id}/permissions"
    )
    for method, handler in (("PUT", set_team_override), ("DELETE", remove_team_override)):
        add(
            method,
            "/api/admin/teams/{id}/permissions/{permission_id}",
            handler,
            legacy="/teams/{id}/permissions/{permission_id}",
        )

    add("GET", "/api/admin/roles", list_roles, legacy="/roles")
    add("POST", "/api/admin/roles", create_role, legacy="/roles")
    add("GET", "/api/admin/roles/{role_id}", get_role, legacy="/roles/{role_id}")
    add("PATCH", "/api/admin/roles/{role_id}", update_role, legacy="/roles/{role_id}")
    add(
        "GET",
        "/api/admin/roles/{role_id}/permissions",
        role_permissions,
        legacy="/roles/{role_id}/permissions",
    )
    for method, handler in (("PUT", set_role_permission), ("DELETE", remove_role_permission)):
        add(
            method,
            "/api/admin/roles/{role_id}/permissions/{permission_id}",
            handler,
            legacy="/roles/{role_id}/permissions/{permission_id}",
        )
    add("GET", "/api/admin/permissions", list_permissions, legacy="/permissions")
    add("POST", "/api/admin/permissions", create_permission, legacy="/permissions")

    add("POST", "/api/admin/auth/2fa/setup", totp_setup, legacy="/auth/2fa/setup")
    add("POST", "/api/admin/auth/2fa/verify", totp_verify, legacy="/auth/2fa/verify")
    add("POST", "/api/admin/auth/2fa/disable", totp_disable, legacy="/auth/2fa/disable")
    add("GET", "/api/admin/auth/sessions", list_sessions, legacy="/auth/sessions")
    add("DELETE", "/api/admin/auth/sessions/{session_id}", revoke_session)
    add("DELETE", "/api/admin/auth/sessions", revoke_other_sessions, legacy="/auth/sessions")

    add("GET", "/api/admin/tenants", list_tenants)
    add("POST", "/api/admin/tenants", create_tenant)
    add("PATCH", "/api/admin/tenants/{id}", update_tenant)
    add("POST", "/api/admin/partner-clients", create_partner_client)
    add("GET", "/api/admin/partner-clients", list_partner_clients)
    add("GET", "/api/admin/partner-clients/{id}", get_partner_client)
    add("PATCH", "/api/admin/partner-clients/{id}", update_partner_client)
    add("POST", "/api/admin/partner-clients/{id}/rotate-secret", rotate_partner_secret)
