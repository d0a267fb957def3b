"""Staff and customer login and token refresh (seed section 2).

Access tokens last 15 minutes, refresh tokens 7 days (HS256). Revocable sessions,
2FA and refresh rotation belong to the identity work (issue 4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.errors import ApiError, unauthorized
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.customers import customer_json
from brokerkernel.kernel.security import ACCESS_TTL_S, TokenError, verify_password
from brokerkernel.kernel.storage.models import Customer, Role, StaffUser, TradingAccount

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

LOGIN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["email", "password"],
    "properties": {
        "email": {"type": "string", "minLength": 3, "maxLength": 254},
        "password": {"type": "string", "minLength": 1, "maxLength": 128},
        "totp_code": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
REFRESH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["refresh_token"],
    "properties": {"refresh_token": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}
WRONG_CREDENTIALS = "Invalid email or password"


def _tokens(request: web.Request, subject: str, claims: dict[str, Any]) -> dict[str, Any]:
    issuer = request.app[KERNEL].tokens
    return {
        "access_token": issuer.issue(subject, claims),
        "refresh_token": issuer.issue(subject, claims, purpose="refresh"),
        "expires_in": ACCESS_TTL_S,
        "token_type": "bearer",
    }


async def staff_login(request: web.Request) -> web.Response:
    data = await validation.body(request, LOGIN_SCHEMA)
    kernel = request.app[KERNEL]
    async with kernel.db.transaction() as session:
        user = await session.scalar(
            select(StaffUser).where(StaffUser.email == data["email"].strip().lower())
        )
        if (
            not verify_password(user.password_hash if user else None, data["password"])
            or user is None
        ):
            raise unauthorized(WRONG_CREDENTIALS)
        if not user.is_active:
            raise ApiError(403, "Account disabled")
        role = await session.get(Role, user.role_id)
        user.last_login_at = kernel.clock.now()
    permissions = sorted(role.permissions) if role is not None and role.is_active else []
    body = _tokens(
        request,
        user.id,
        {"type": "user", "role": role.name if role else None, "permissions": permissions},
    )
    body["user"] = {
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
    return respond(body)


async def customer_login(request: web.Request) -> web.Response:
    data = await validation.body(request, LOGIN_SCHEMA)
    kernel = request.app[KERNEL]
    async with kernel.db.read() as session:
        customer = await session.scalar(
            select(Customer).where(Customer.email == data["email"].strip().lower())
        )
        if (
            not verify_password(customer.password_hash if customer else None, data["password"])
            or customer is None
        ):
            raise unauthorized(WRONG_CREDENTIALS)
        if not customer.is_active:
            raise ApiError(403, "Account disabled")
        accounts = list(
            (
                await session.scalars(
                    select(TradingAccount)
                    .where(TradingAccount.customer_id == customer.id)
                    .order_by(TradingAccount.login)
                )
            ).all()
        )
    logins = [a.login for a in accounts if a.is_active]
    claims = {
        "type": "customer",
        "login": logins[0] if logins else None,
        "logins": logins,
        "compliance_status": customer.compliance_status,
        "force_password_change": customer.force_password_change,
    }
    body = _tokens(request, customer.id, claims)
    body["customer"] = customer_json(customer, accounts)
    return respond(body)


async def refresh(request: web.Request) -> web.Response:
    """Exchange a refresh token for a new access token (staff and customers)."""
    data = await validation.body(request, REFRESH_SCHEMA)
    issuer = request.app[KERNEL].tokens
    try:
        claims = issuer.verify(data["refresh_token"], purpose="refresh")
    except TokenError as exc:
        raise unauthorized("Invalid, expired, or revoked refresh token") from exc
    kept = {k: v for k, v in claims.items() if k not in ("sub", "iat", "exp", "jti", "token_use")}
    return respond(
        {
            "access_token": issuer.issue(claims["sub"], kept),
            "expires_in": ACCESS_TTL_S,
            "token_type": "bearer",
        }
    )


def setup(router: Router) -> None:
    router.add("POST", "/api/admin/users/login", staff_login, legacy="/users/login")
    router.add("POST", "/api/customer/login", customer_login, legacy="/customers/login")
    router.add("POST", "/api/admin/auth/refresh", refresh, legacy="/auth/refresh")
