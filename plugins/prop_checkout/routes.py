"""``/v2/payments``: the Stripe prop checkout (seed ``stripe-prop-checkout-flow.txt``).

Customer routes take the trader's bearer token (``require_customer``); the webhook is
public and verified by its ``Stripe-Signature``. Bodies are validated (422 listing
every field error) and then checked against the configured tier (422 per field that
differs). ``Idempotency-Key`` on the POSTs is honoured by the API gateway.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import require_customer
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.descriptors import CallbackRejected, GatewayError
from brokerkernel.plugins.challenges.service import PropError
from brokerkernel.plugins.prop_checkout.service import PLUGIN_NAME, PropCheckout

TAGS = ("payments",)
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 32}
CHECKOUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tier_id", "market", "asset_class", "account_size", "amount_cents"],
    "properties": {
        "tier_id": {**_TEXT, "maxLength": 64, "description": "Challenge tier identifier"},
        "market": {**_TEXT, "description": 'e.g. "crypto"'},
        "asset_class": {**_TEXT, "description": 'e.g. "crypto" / "forex"'},
        "account_size": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 10**12,
            "description": "Funded account size in USD",
        },
        "amount_cents": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10**11,
            "description": "Price charged, in cents",
        },
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$", "default": "usd"},
    },
    "additionalProperties": False,
}
FREE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tier_id", "asset_class", "account_size"],
    "properties": {
        key: CHECKOUT_SCHEMA["properties"][key]
        for key in ("tier_id", "market", "asset_class", "account_size")
    },
    "additionalProperties": False,
}
CHECKOUT_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "payment_id": {"type": "string", "examples": ["pay_..."]},
        "stripe_payment_intent_id": {"type": "string", "examples": ["pi_..."]},
        "client_secret": {"type": "string", "examples": ["pi_..._secret_..."]},
        "amount_cents": {"type": "integer"},
        "currency": {"type": "string"},
        "status": {"type": "string", "examples": ["requires_payment_method"]},
    },
}
ACCOUNT_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "examples": ["prop_..."]},
        "tier_id": {"type": "string"},
        "asset_class": {"type": "string"},
        "account_size": {"type": "number"},
        "status": {"type": "string", "examples": ["active"]},
        "subaccount_id": {"type": "integer", "description": "The trading account's login"},
        "subaccount_uuid": {"type": "string", "description": "The trading account's id"},
        "synthetic_hotkey": {
            "type": "string",
            "description": "SS58 (prefix 42) address derived from the account id; no key "
            "behind it (identifies the account, signs nothing)",
        },
        "stripe_payment_intent_id": {"type": ["string", "null"]},
    },
}
PENDING_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {"payment_id": {"type": "string"}, "status": {"const": "succeeded"}},
}


def _checkout(request: web.Request) -> PropCheckout:
    service = request.app[KERNEL].extensions.get(PLUGIN_NAME)
    if not isinstance(service, PropCheckout):
        raise ApiError(503, "The prop checkout is not running")
    return service


def _refusal(exc: PropError | GatewayError) -> ApiError:
    if isinstance(exc, GatewayError):
        return ApiError(502, f"stripe: {exc}")
    return ApiError(exc.status, exc.detail)


@operation(
    "Create a checkout (PaymentIntent) for a challenge tier",
    tags=TAGS,
    body=CHECKOUT_SCHEMA,
    responses={
        200: CHECKOUT_RESPONSE,
        409: "The tier's challenge plan is not on sale",
        422: "Invalid body, or it differs from the configured tier",
        502: "Stripe refused or failed",
    },
    security="customer",
)
async def checkout(request: web.Request) -> web.Response:
    """Create a PaymentIntent for the tier; confirm it in the browser with
    ``client_secret`` and Stripe Elements. The account comes with the webhook."""
    who = require_customer(request)
    data = await validation.body(request, CHECKOUT_SCHEMA)
    try:
        return respond(await _checkout(request).checkout(who.subject, data))
    except (PropError, GatewayError) as exc:
        raise _refusal(exc) from exc


@operation(
    "Create a free (comped) prop account",
    tags=TAGS,
    body=FREE_SCHEMA,
    responses={
        201: ACCOUNT_RESPONSE,
        202: PENDING_RESPONSE,
        409: "Tier not on sale, or its per-customer limit reached",
        422: "Invalid body, differs from the tier, or the tier is not free",
    },
    security="customer",
)
async def free(request: web.Request) -> web.Response:
    """Provision an account of a free tier without Stripe: 201 with the account, or 202
    when provisioning must be retried (the account appears in the list later)."""
    who = require_customer(request)
    data = await validation.body(request, FREE_SCHEMA)
    try:
        payment_id, account = await _checkout(request).free(who.subject, data)
    except PropError as exc:
        raise _refusal(exc) from exc
    if account is None:
        return respond({"payment_id": payment_id, "status": "succeeded"}, status=202)
    return respond(account, status=201)


@operation(
    "List my prop accounts",
    tags=TAGS,
    responses={200: {"type": "array", "items": ACCOUNT_RESPONSE}},
    security="customer",
)
async def list_accounts(request: web.Request) -> web.Response:
    """The caller's provisioned prop accounts, newest first (poll after paying)."""
    who = require_customer(request)
    try:
        return respond(await _checkout(request).accounts(who.subject))
    except PropError as exc:
        raise _refusal(exc) from exc


@operation(
    "Get one of my prop accounts",
    tags=TAGS,
    responses={200: ACCOUNT_RESPONSE, 404: "Prop account not found"},
    security="customer",
)
async def get_account(request: web.Request) -> web.Response:
    who = require_customer(request)
    try:
        return respond(await _checkout(request).account(who.subject, request.match_info["id"]))
    except PropError as exc:
        raise _refusal(exc) from exc


@operation(
    "Stripe webhook of the prop checkout",
    tags=TAGS,
    responses={
        200: {"type": "object", "properties": {"received": {"const": True}}},
        400: "Missing, invalid or stale Stripe-Signature",
    },
    security="public",
)
async def webhook(request: web.Request) -> web.Response:
    """``payment_intent.*`` events, verified on the raw body with the endpoint secret;
    provisioning runs after the answer."""
    body = await request.read()
    try:
        await _checkout(request).apply_event(body, request.headers)
    except CallbackRejected as exc:
        raise ApiError(400, str(exc)) from exc
    except PropError as exc:
        raise _refusal(exc) from exc
    return respond({"received": True})


def setup_routes(app: web.Application, _kernel: Any) -> None:
    """Add the ``/v2/payments`` routes (``broker_register_routes``)."""
    app.router.add_post("/v2/payments/checkout", checkout)
    app.router.add_post("/v2/payments/free", free)
    app.router.add_get("/v2/payments/prop-accounts", list_accounts)
    app.router.add_get("/v2/payments/prop-accounts/{id}", get_account)
    app.router.add_post("/v2/payments/webhook", webhook)
