"""The ``bridgerpay`` connector: BridgerPay's embedded cashier as a payment gateway.

Enable it in ``plugins.toml``::

    [plugins.bridgerpay]
    user_name = "merchant@broker.example"
    password = "${BRIDGERPAY_PASSWORD}"
    api_key = "${BRIDGERPAY_API_KEY}"
    cashier_key = "f1c2..."            # public: the front end passes it to the cashier
    # base_url = "https://api-sandbox.bridgerpay.com"

``POST /payments/bridgerpay/session`` (customer token, seed section 9) creates a
PENDING deposit and returns the cashier token for the iframe; webhooks arrive at
``POST /integrations/webhooks/bridgerpay`` and, since BridgerPay signs nothing, only
trigger a read of the deposit's status from BridgerPay, which is then applied
(approved -> APPROVED; declined, error, cancelled -> DECLINE; in_process ->
PROCESSING).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from brokerkernel.api.jsonio import respond
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.payments import (
    SESSION_SCHEMA,
    add_gateway_webhook,
    open_cashier_session,
)
from brokerkernel.connectors.bridgerpay.client import BridgerPayGateway
from brokerkernel.kernel.descriptors import HttpRoutes, PaymentGateway
from brokerkernel.kernel.hookspecs import hookimpl

__all__ = ["CONFIG_SCHEMA", "BridgerPayGateway"]

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["user_name", "password", "api_key", "cashier_key"],
    "properties": {
        "user_name": {"type": "string", "minLength": 1},
        "password": {"type": "string", "minLength": 1, "writeOnly": True},
        "api_key": {
            "type": "string",
            "minLength": 1,
            "writeOnly": True,
            "description": "Merchant API key (part of the API paths).",
        },
        "cashier_key": {
            "type": "string",
            "minLength": 1,
            "description": "Public key the embedded cashier is loaded with.",
        },
        "base_url": {
            "type": "string",
            "pattern": "^https?://",
            "default": "https://api.bridgerpay.com",
        },
        "script_url": {
            "type": "string",
            "pattern": "^https?://",
            "default": "https://embed.bridgerpay.com/connector.min.js",
        },
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "default": 30},
    },
}


@operation(
    "Create BridgerPay cashier session",
    tags=["Payment Routing & BridgerPay"],
    body=SESSION_SCHEMA,
    responses={201: "Created", 502: "BridgerPay failed"},
    security="customer",
)
async def session(request: web.Request) -> web.Response:
    """Create a BridgerPay cashier session (seed section 9): a PENDING deposit and the
    cashier token for the iframe."""
    opened = await open_cashier_session(request, "bridgerpay")
    return respond(
        {
            "transaction_id": opened.transaction.id,
            "cashier_token": opened.session.token,
            "cashier_session_id": opened.transaction.cashier_id,
            **opened.session.details,
        },
        status=201,
    )


def _routes(app: web.Application, _kernel: Any) -> None:
    app.router.add_post("/payments/bridgerpay/session", session)
    add_gateway_webhook(app, "bridgerpay")


@hookimpl
def broker_register_payment_gateways() -> Iterator[PaymentGateway]:
    yield PaymentGateway(
        name="bridgerpay",
        factory=BridgerPayGateway,
        kind="embed",
        title="BridgerPay",
        directions=("deposit",),
    )


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    yield HttpRoutes(name="bridgerpay", setup=_routes)
