"""Trader authentication: autologin, password reset, password change, profile
(seed section 2).

Public endpoints never reveal whether an email is registered; reset and autologin
tokens are one-time and burned atomically. A customer whose password change is
forced may only use ``POST /customers/me/password``, ``GET /customers/me`` and
``POST /auth/refresh`` (enforced in :func:`brokerkernel.api.auth.principal`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import identity_of, require_customer
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.sessions import login_client
from brokerkernel.kernel.customers import customer_json
from brokerkernel.kernel.security import PASSWORD_MAX, PASSWORD_MIN
from brokerkernel.kernel.storage.models import Customer, TradingAccount

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

NEW_PASSWORD = {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX}
UUID_TEXT = {"type": "string", "minLength": 1, "maxLength": 64}
FORGOT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["email"],
    "additionalProperties": False,
    "properties": {"email": {"type": "string", "minLength": 3, "maxLength": 254}},
}
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["token", "new_password"],
    "additionalProperties": False,
    "properties": {"token": UUID_TEXT, "new_password": NEW_PASSWORD},
}
ME_PASSWORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["new_password"],
    "additionalProperties": False,
    "properties": {
        "new_password": NEW_PASSWORD,
        "current_password": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}
REQUEST_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False}
FORGOT_MESSAGE = "If an account exists with that email, a reset link has been generated"
UPDATED_MESSAGE = "Password updated successfully"


def _frontend(request: web.Request) -> str:
    """The trader front end's base URL (``[kernel.auth] frontend_url``, else this host)."""
    configured = str(identity_of(request).auth["frontend_url"]).rstrip("/")
    return configured or f"{request.scheme}://{request.host}"


def reset_url_template(request: web.Request) -> str:
    return _frontend(request) + "/reset-password?token={token}"


def _query_token(request: web.Request) -> str:
    token = request.query.get("token", "")
    if not token:
        raise ApiError(
            422, [{"loc": ["query", "token"], "msg": "field required", "type": "required"}]
        )
    return token


@operation(
    "Redeem one-time autologin token",
    tags=["Authentication"],
    query={"type": "object", "properties": {"token": {"type": "string"}}},
    security="public",
)
async def autologin(request: web.Request) -> web.Response:
    """Redeem a one-time autologin token: the customer login response.
    401 invalid, used or expired; 403 disabled."""
    token = _query_token(request)
    return respond(await identity_of(request).customer_autologin(token, login_client(request)))


@operation(
    "Request password reset link (authenticated)",
    tags=["Authentication"],
    body=REQUEST_SCHEMA,
    security="customer",
)
async def request_reset(request: web.Request) -> web.Response:
    """A reset link for the logged-in trader; 429 with 3 active links already."""
    who = require_customer(request)
    await validation.body(request, REQUEST_SCHEMA)
    url = await identity_of(request).resets.request(who.subject, reset_url_template(request))
    return respond({"message": "Password reset link generated", "reset_url": url})


@operation(
    "Forgot password (public)",
    tags=["Authentication"],
    body=FORGOT_SCHEMA,
    security="public",
)
async def forgot_password(request: web.Request) -> web.Response:
    """Always 200 with the same message: no email enumeration."""
    data = await validation.body(request, FORGOT_SCHEMA)
    await identity_of(request).resets.forgot(data["email"], reset_url_template(request))
    return respond({"message": FORGOT_MESSAGE})


@operation(
    "Verify password reset token",
    tags=["Authentication"],
    query={"type": "object", "properties": {"token": {"type": "string"}}},
    security="public",
)
async def verify_reset(request: web.Request) -> web.Response:
    """Whether a reset token is valid (not burned), with the masked email; 401 if not."""
    email = await identity_of(request).resets.verify(_query_token(request))
    return respond({"valid": True, "email": email})


@operation(
    "Confirm password reset",
    tags=["Authentication"],
    body=CONFIRM_SCHEMA,
    security="public",
)
async def confirm_reset(request: web.Request) -> web.Response:
    """Burn the token and set the password (8-72 characters); every session of the
    customer is revoked. 401 invalid/expired/used token."""
    data = await validation.body(request, CONFIRM_SCHEMA)
    await identity_of(request).resets.confirm(data["token"], data["new_password"])
    return respond({"message": UPDATED_MESSAGE})


@operation(
    "Set new password",
    tags=["Authentication"],
    body=ME_PASSWORD_SCHEMA,
    security="customer",
)
async def set_password(request: web.Request) -> web.Response:
    """Set a new password (clears ``force_password_change``; other sessions are
    revoked) and get a fresh access token. ``current_password`` is required unless
    the change is forced. 403 not a customer JWT; 422 bad password."""
    who = require_customer(request)
    data = await validation.body(request, ME_PASSWORD_SCHEMA)
    assert who.session_id is not None
    token = await identity_of(request).set_customer_password(
        who.subject, who.session_id, data["new_password"], data.get("current_password")
    )
    return respond({"access_token": token, "message": UPDATED_MESSAGE})


@operation(
    "Current customer profile from JWT",
    tags=["Authentication"],
    responses={404: "Customer not found"},
    security="customer",
)
async def me(request: web.Request) -> web.Response:
    """The logged-in trader's profile and trading accounts."""
    who = require_customer(request)
    async with identity_of(request).db.read() as session:
        customer = await session.get(Customer, who.subject)
        if customer is None:
            raise not_found("Customer not found")
        accounts = list(
            await session.scalars(
                select(TradingAccount)
                .where(TradingAccount.customer_id == customer.id)
                .order_by(TradingAccount.login)
            )
        )
    return respond(customer_json(customer, accounts))


def setup(router: Router) -> None:
    add = router.add
    add("GET", "/api/customer/autologin", autologin, legacy="/auth/autologin")
    add(
        "POST",
        "/api/customer/password-reset/request",
        request_reset,
        legacy="/customers/password-reset/request",
    )
    add(
        "POST",
        "/api/customer/password-reset/forgot",
        forgot_password,
        legacy="/customers/password-reset/forgot",
    )
    add(
        "GET",
        "/api/customer/password-reset/verify",
        verify_reset,
        legacy="/customers/password-reset/verify",
    )
    add(
        "POST",
        "/api/customer/password-reset/confirm",
        confirm_reset,
        legacy="/customers/password-reset/confirm",
    )
    add("POST", "/api/customer/me/password", set_password, legacy="/customers/me/password")
    add("GET", "/api/customer/me", me, legacy="/customers/me")
