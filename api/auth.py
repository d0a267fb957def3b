"""Bearer-token authentication and the access checks routes use.

The :func:`authenticate` step of the gateway (``api/middlewares.py``) verifies the
``Authorization`` header once per request and checks the token's session against
the revocation set in the cache port; the synchronous helpers below then answer from
the in-process RBAC cache (:mod:`brokerkernel.kernel.identity.rbac`), so a role,
permission, team or user change applies to the very next request, not at token
expiry (tokens carry no permissions). While that cache is degraded its last snapshot
answers and each check is counted in ``permission_checks_skipped`` (seed section 1,
``/health``).

401 bodies are exactly the seed's gateway section: "Missing or invalid Authorization
header", "Token expired", "Invalid token". Kinds: staff (``type: "user"``),
``customer`` (traders) and ``partner`` (OAuth2 client credentials, ZT4 partner API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, false, select, true

from brokerkernel.api.errors import ApiError, forbidden, unauthorized
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.identity.models import Team
from brokerkernel.kernel.identity.pii import mask_customer
from brokerkernel.kernel.identity.ratelimit import Counted
from brokerkernel.kernel.identity.rbac import RbacCache, RolePolicy
from brokerkernel.kernel.identity.service import Identity
from brokerkernel.kernel.security import TokenError
from brokerkernel.kernel.storage.models import StaffUser

MISSING_AUTH = "Missing or invalid Authorization header"
INVALID = "Invalid token"
FORCED_CHANGE = "Password change required"

#: The routes a customer with ``force_password_change`` may use (seed section 2).
PASSWORD_CHANGE_ROUTES = frozenset(
    {
        ("POST", "/api/customer/me/password"),
        ("POST", "/customers/me/password"),
        ("GET", "/api/customer/me"),
        ("GET", "/customers/me"),
        ("POST", "/api/admin/auth/refresh"),
        ("POST", "/auth/refresh"),
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling.

    ``kind`` is "user" (staff), "customer" or "partner"; ``subject`` the user id,
    customer id or OAuth2 client id. Staff: ``permissions`` (effective, team
    overrides applied), ``policy`` (role scopes and PII rules), ``role``, ``team_id``
    and ``team_path``. Customers: ``logins`` and ``force_password_change``.
    Partners: ``scopes`` and ``tenant_id``. ``session_id`` is the token's session;
    ``verified`` is False when the RBAC cache was degraded (a possibly stale answer).
    """

    kind: str
    subject: str
    permissions: frozenset[str] = frozenset()
    logins: frozenset[int] = frozenset()
    session_id: str | None = None
    role: str | None = None
    policy: RolePolicy | None = None
    team_id: str | None = None
    team_path: str | None = None
    scopes: frozenset[str] = frozenset()
    tenant_id: str | None = None
    force_password_change: bool = False
    verified: bool = True

    @property
    def is_staff(self) -> bool:
        return self.kind == "user"

    @property
    def view_scope(self) -> str:
        """``customer_view_scope`` of a staff caller (own/team/all); "own" otherwise."""
        return self.policy.customer_view_scope if self.policy is not None else "own"

    @property
    def edit_scope(self) -> str:
        """``customer_edit_scope`` of a staff caller (none/own/team/all)."""
        return self.policy.customer_edit_scope if self.policy is not None else "none"


PRINCIPAL = web.RequestKey("principal", Principal)
AUTH_ERROR = web.RequestKey("auth_error", ApiError)
#: The request was counted against its user's rate limit while authenticating.
RATE_COUNTED = web.RequestKey("rate_counted", Counted)


def identity_of(request: web.Request) -> Identity:
    """The kernel's identity service for ``request``'s app."""
    return request.app[KERNEL].identity


async def _staff_principal(rbac: RbacCache, subject: str, sid: str) -> Principal:
    access = rbac.staff(subject)
    if access is None and not rbac.degraded:
        await rbac.ensure_known(user_id=subject)
        access = rbac.staff(subject)
    if access is None:
        if not rbac.degraded:
            raise unauthorized(INVALID)  # the user no longer exists
        return Principal(kind="user", subject=subject, session_id=sid, verified=False)
    if not access.is_active:
        raise unauthorized(INVALID)
    return Principal(
        kind="user",
        subject=subject,
        permissions=access.permissions,
        session_id=sid,
        role=access.role.name,
        policy=access.role,
        team_id=access.team_id,
        team_path=access.team_path,
        verified=not rbac.degraded,
    )


async def _partner_principal(rbac: RbacCache, claims: Mapping[str, Any]) -> Principal:
    client_id = str(claims["sub"])
    entry = rbac.partner(client_id)
    if entry is None and not rbac.degraded:
        await rbac.ensure_known(client_id=client_id)
        entry = rbac.partner(client_id)
    if entry is None or not entry.is_active:
        raise unauthorized(INVALID)
    return Principal(
        kind="partner",
        subject=client_id,
        scopes=frozenset(str(claims.get("scope", "")).split()) & entry.scopes,
        tenant_id=entry.tenant_id,
        verified=not rbac.degraded,
    )


async def authenticate(request: web.Request, *, count: bool = False) -> None:
    """Resolve the ``Authorization`` header, if any, into the request's principal.

    Called by the gateway before the handler; a bad header is only an error when the
    route asks for a principal (public routes ignore it). With ``count`` a staff or
    customer request is also counted against its user's rate limit in the same cache
    round trip as the revocation check (``RATE_COUNTED``).
    """
    header = request.headers.get("Authorization")
    if header is None:
        return
    try:
        request[PRINCIPAL] = await _resolve(request, header, count)
    except ApiError as exc:
        request[AUTH_ERROR] = exc


async def _resolve(request: web.Request, header: str, count: bool) -> Principal:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized(MISSING_AUTH)
    identity = identity_of(request)
    try:
        claims = identity.tokens.verify(token)
    except TokenError as exc:
        raise unauthorized(exc.detail) from exc
    kind = claims.get("type")
    if kind == "partner":
        return await _partner_principal(identity.rbac, claims)
    sid = claims.get("sid")
    if kind not in ("user", "customer") or not isinstance(sid, str):
        raise unauthorized(INVALID)
    subject = str(claims["sub"])
    window = identity.rate_window(f"{kind}:{subject}", "rate_limit_per_user") if count else None
    if window is None:
        revoked = await identity.sessions.is_revoked(sid)
    else:
        revoked, used = await identity.sessions.is_revoked_counting(sid, window)
        request[RATE_COUNTED] = Counted(window, used)
    if revoked:
        raise unauthorized(INVALID)
    if kind == "user":
        return await _staff_principal(identity.rbac, subject, sid)
    return _customer_principal(token, claims)


#: Customer principals by raw access token (see :func:`_customer_principal`).
_CUSTOMERS: dict[str, Principal] = {}
#: How many :data:`_CUSTOMERS` keeps (the oldest entry goes first).
CUSTOMER_MEMO_SIZE = 4096


def _customer_principal(token: str, claims: Mapping[str, Any]) -> Principal:
    """The customer principal of ``token``, whose ``claims`` (signature, expiry) were
    just verified and whose session is not revoked.

    A customer principal is a function of the token's claims alone, and those of the
    token string itself, so it is built once per token and remembered (the last
    :data:`CUSTOMER_MEMO_SIZE` tokens): a trader sends the same token for up to 15
    minutes. Looked up only after this request's own verification and revocation
    check, so expiry and revocation still apply at once, on every process.
    """
    known = _CUSTOMERS.get(token)
    if known is None:
        known = Principal(
            kind="customer",
            subject=str(claims["sub"]),
            logins=frozenset(int(x) for x in claims.get("logins", [])),
            session_id=claims["sid"],
            force_password_change=claims.get("force_password_change") is True,
        )
        if len(_CUSTOMERS) >= CUSTOMER_MEMO_SIZE:
            del _CUSTOMERS[next(iter(_CUSTOMERS))]
        _CUSTOMERS[token] = known
    return known


def principal(request: web.Request) -> Principal:
    """The authenticated caller; raises 401 with the seed's exact body otherwise.

    A customer whose password change is forced gets 403 on every route but the
    three the seed exempts.
    """
    if PRINCIPAL not in request:
        raise request[AUTH_ERROR] if AUTH_ERROR in request else unauthorized(MISSING_AUTH)
    who = request[PRINCIPAL]
    if who.force_password_change:
        route = request.match_info.route.resource
        canonical = route.canonical if route is not None else request.path
        if (request.method, canonical) not in PASSWORD_CHANGE_ROUTES:
            raise forbidden(FORCED_CHANGE)
    return who


def _check_permission(request: web.Request, who: Principal, permission: str) -> None:
    if not who.verified:
        identity_of(request).rbac.skipped()
    if permission not in who.permissions:
        raise forbidden(f"Missing permission: {permission}")


def require_staff(request: web.Request, permission: str) -> Principal:
    """A staff caller holding ``permission`` (seed names it per endpoint); else 401/403."""
    who = principal(request)
    if not who.is_staff:
        raise forbidden("Staff access required")
    _check_permission(request, who, permission)
    return who


def require_user(request: web.Request) -> Principal:
    """Any authenticated staff user (the seed's "AUTH" staff endpoints); else 401/403."""
    who = principal(request)
    if not who.is_staff:
        raise forbidden("Staff access required")
    return who


def require_customer(request: web.Request) -> Principal:
    """A trader's token (the seed's "CUSTOMER" endpoints); 403 "Not a customer JWT"."""
    who = principal(request)
    if who.kind != "customer":
        raise forbidden("Not a customer JWT")
    return who


def require_account_access(request: web.Request, login: int, permission: str) -> Principal:
    """Staff with ``permission`` whose ``customer_view_scope`` is "all", or the
    customer who owns ``login``; else 401/403.

    Staff limited to their own or their team's customers must be checked against the
    account's owner: routes that know it call :func:`require_customer_access`.
    """
    who = principal(request)
    if who.is_staff:
        _check_permission(request, who, permission)
        if who.view_scope != "all":
            raise forbidden("Customer outside your view scope")
    elif who.kind != "customer" or login not in who.logins:
        raise ApiError(403, "Not your trading account")
    return who


def owner_in_scope(request: web.Request, who: Principal, owner_id: str | None, scope: str) -> bool:
    """Whether a customer owned by staff user ``owner_id`` is within ``scope``
    (own/team/all; "none" admits nobody) of ``who``; team scope covers the caller's
    team and every team below it (seed section 19)."""
    if scope == "all":
        return True
    if scope == "none" or owner_id is None:
        return False
    if scope == "own":
        return owner_id == who.subject
    owner = identity_of(request).rbac.staff(owner_id)
    return (
        who.team_path is not None
        and owner is not None
        and owner.team_path is not None
        and owner.team_path.startswith(who.team_path)
    )


def require_customer_access(
    request: web.Request, permission: str, owner_id: str | None, *, edit: bool = False
) -> Principal:
    """Staff with ``permission`` whose view scope (``edit``: edit scope) covers a
    customer owned by ``owner_id``; 403 "Customer outside your view/edit scope"."""
    who = require_staff(request, permission)
    scope, what = (who.edit_scope, "edit") if edit else (who.view_scope, "view")
    if not owner_in_scope(request, who, owner_id, scope):
        raise forbidden(f"Customer outside your {what} scope")
    return who


def customer_scope_clause(
    who: Principal, owner_column: ColumnElement[Any], *, edit: bool = False
) -> ColumnElement[bool]:
    """A WHERE clause limiting customer queries to ``who``'s view (or edit) scope.

    ``owner_column`` is the customers' owner (a staff user id). Team scope selects
    owners whose team lies in the caller's subtree (one ``path LIKE`` scan).
    """
    scope = who.edit_scope if edit else who.view_scope
    if scope == "all":
        return true()
    if scope == "own":
        return owner_column == who.subject
    if scope == "team" and who.team_path is not None:
        team_owners = (
            select(StaffUser.id)
            .join(Team, StaffUser.team_id == Team.id)
            .where(Team.path.like(f"{who.team_path}%"))
        )
        return owner_column.in_(team_owners)
    return false()


def show_customer(who: Principal, customer: Mapping[str, Any]) -> dict[str, Any]:
    """A customer response with email and phone masked per the caller's role
    (``pii_email`` / ``pii_phone``); traders and partners see it unmasked."""
    if not who.is_staff:
        return dict(customer)
    return mask_customer(who.policy, customer)


def require_pii_export(request: web.Request, permission: str) -> Principal:
    """Staff with ``permission`` whose role has ``can_export_pii``; else 403."""
    who = require_staff(request, permission)
    if who.policy is None or not who.policy.can_export_pii:
        raise forbidden("Your role cannot export PII")
    return who


def require_partner(request: web.Request, scope: str) -> Principal:
    """A partner token whose tenant is prop-firm enabled and which carries ``scope``.

    ZT4 entitlement gate: 403 ``{"detail": "prop_firm_not_enabled"}`` for a tenant
    not enabled, 403 ``{"detail": "insufficient_scope"}`` (with an RFC 6750
    ``WWW-Authenticate`` header) when the scope is missing.
    """
    who = principal(request)
    if who.kind != "partner":
        raise forbidden("Partner access token required")
    rbac = identity_of(request).rbac
    if not who.verified:
        rbac.skipped()
    if not rbac.tenant_enabled(who.tenant_id):
        raise ApiError(403, "prop_firm_not_enabled")
    if scope not in who.scopes:
        error = ApiError(403, "insufficient_scope")
        error.headers["WWW-Authenticate"] = f'Bearer error="insufficient_scope", scope="{scope}"'
        raise error
    return who
