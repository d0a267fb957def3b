"""The ``stripe`` connector: Stripe PaymentIntents as a payment gateway (deposits).

Enable it in ``plugins.toml``::

    [plugins.stripe]
    secret_key = "${STRIPE_SECRET_KEY}"           # sk_live_... / sk_test_...
    webhook_secret = "${STRIPE_WEBHOOK_SECRET}"   # whsec_... of the endpoint below
    publishable_key = "pk_live_..."

A session creates a PaymentIntent and returns its ``client_secret`` (confirmed in the
browser with Stripe Elements). Stripe's events arrive at ``POST
/integrations/webhooks/stripe`` and are verified with ``Stripe-Signature`` (300 s
tolerance, any ``v1``). Approved deposits can be refunded through
``POST /api/backoffice/transactions/{id}/refund``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from brokerkernel.api.routes.payments import add_gateway_webhook
from brokerkernel.connectors.stripe.client import StripeGateway
from brokerkernel.kernel.descriptors import HttpRoutes, PaymentGateway
from brokerkernel.kernel.hookspecs import hookimpl

__all__ = ["CONFIG_SCHEMA", "StripeGateway"]

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["secret_key", "webhook_secret", "publishable_key"],
    "properties": {
        "secret_key": {"type": "string", "pattern": "^(sk|rk)_", "writeOnly": True},
        "webhook_secret": {"type": "string", "pattern": "^whsec_", "writeOnly": True},
        "publishable_key": {"type": "string", "pattern": "^pk_"},
        "api_base": {
            "type": "string",
            "pattern": "^https?://",
            "default": "https://api.stripe.com",
            "description": "Stripe API base URL (a local fake server in tests).",
        },
        "tolerance_s": {
            "type": "integer",
            "minimum": 1,
            "default": 300,
            "description": "Stripe-Signature timestamps older than this are refused.",
        },
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "default": 30},
    },
}


def _routes(app: web.Application, _kernel: Any) -> None:
    add_gateway_webhook(app, "stripe")


@hookimpl
def broker_register_payment_gateways() -> Iterator[PaymentGateway]:
    yield PaymentGateway(
        name="stripe",
        factory=StripeGateway,
        kind="embed",
        title="Stripe",
        directions=("deposit",),
    )


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    yield HttpRoutes(name="stripe", setup=_routes)
