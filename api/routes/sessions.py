"""Staff and customer login and token refresh (seed section 2).

Access tokens last 15 minutes (HS256); refresh tokens 7 days, rotated on every use
(the response carries the next one) and revocable with their session. Staff with
2FA enabled get ``{"requires_2fa": true, ...}`` until they send ``totp_code``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.middlewares import client_ip
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.identity.service import Client

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

LOGIN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["email", "password"],
    "properties": {
        "email": {"type": "string", "minLength": 3, "maxLength": 254},
        "password": {"type": "string", "minLength": 1, "maxLength": 128},
        "totp_code": {"type": ["string", "null"], "maxLength": 32},
    },
    "additionalProperties": False,
}
CUSTOMER_LOGIN_SCHEMA: dict[str, Any] = {
    **LOGIN_SCHEMA,
    "properties": {k: v for k, v in LOGIN_SCHEMA["properties"].items() if k != "totp_code"},
}
REFRESH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["refresh_token"],
    "properties": {"refresh_token": {"type": "string", "minLength": 1, "maxLength": 256}},
    "additionalProperties": False,
}


def login_client(request: web.Request) -> Client:
    """The session's device (User-Agent) and client IP."""
    return Client(device=request.headers.get("User-Agent"), ip=client_ip(request))


@operation(
    "Broker staff login",
    tags=["Authentication"],
    body=LOGIN_SCHEMA,
    security="public",
)
async def staff_login(request: web.Request) -> web.Response:
    """Staff login: tokens and ``user``; 401 wrong credentials or 2FA code, 403 disabled."""
    data = await validation.body(request, LOGIN_SCHEMA)
    identity = request.app[KERNEL].identity
    body = await identity.staff_login(
        data["email"], data["password"], data.get("totp_code"), login_client(request)
    )
    return respond(body)


@operation(
    "Customer (trader) login",
    tags=["Authentication"],
    body=CUSTOMER_LOGIN_SCHEMA,
    security="public",
)
async def customer_login(request: web.Request) -> web.Response:
    """Trader login: tokens and ``customer``; 401 wrong credentials, 403 disabled."""
    data = await validation.body(request, CUSTOMER_LOGIN_SCHEMA)
    identity = request.app[KERNEL].identity
    return respond(
        await identity.customer_login(data["email"], data["password"], login_client(request))
    )


@operation(
    "Refresh access token",
    tags=["Authentication"],
    body=REFRESH_SCHEMA,
    security="public",
)
async def refresh(request: web.Request) -> web.Response:
    """Exchange a refresh token (staff and customers) for a new access token and the
    next refresh token; 401 when invalid, expired, revoked or reused."""
    data = await validation.body(request, REFRESH_SCHEMA)
    return respond(await request.app[KERNEL].identity.refresh(data["refresh_token"]))


def setup(router: Router) -> None:
    router.add("POST", "/api/admin/users/login", staff_login, legacy="/users/login")
    router.add("POST", "/api/customer/login", customer_login, legacy="/customers/login")
    router.add("POST", "/api/admin/auth/refresh", refresh, legacy="/auth/refresh")
