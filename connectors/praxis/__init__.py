"""The ``praxis`` connector: the Praxis cashier (API 1.3) as a payment gateway.

Enable it in ``plugins.toml``::

    [plugins.praxis]
    merchant_id = "API-merchant"
    application_key = "Sandbox"
    merchant_secret = "${PRAXIS_MERCHANT_SECRET}"
    notification_url = "https://broker.example/webhooks/praxis"
    return_url = "https://broker.example/cashier/done"
    # base_url = "https://gw.praxisgate.com"   # live; the default is the sandbox

A session opens the hosted cashier (``intent`` payment or withdrawal) and returns its
``redirect_url`` (an iframe src). Notifications arrive at ``POST /webhooks/praxis``
(also ``/integrations/webhooks/praxis``), are verified (GT-Authentication SHA-384,
merchant, freshness), applied once per status, and answered with the signed
``{"status": 0}`` Praxis expects. ``find-order`` reconciles a session's status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from brokerkernel.api.routes.payments import add_gateway_webhook
from brokerkernel.connectors.praxis.client import PraxisGateway
from brokerkernel.kernel.descriptors import HttpRoutes, PaymentGateway
from brokerkernel.kernel.hookspecs import hookimpl

__all__ = ["CONFIG_SCHEMA", "PraxisGateway"]

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "merchant_id",
        "application_key",
        "merchant_secret",
        "notification_url",
        "return_url",
    ],
    "properties": {
        "merchant_id": {"type": "string", "minLength": 1, "maxLength": 50},
        "application_key": {"type": "string", "minLength": 1, "maxLength": 32},
        "merchant_secret": {
            "type": "string",
            "minLength": 1,
            "writeOnly": True,
            "description": "Signs requests and verifies responses and notifications.",
        },
        "base_url": {
            "type": "string",
            "pattern": "^https?://",
            "default": "https://pci-gw-test.praxispay.com",
            "description": "Sandbox pci-gw-test.praxispay.com; live gw.praxisgate.com.",
        },
        "notification_url": {
            "type": "string",
            "pattern": "^https?://",
            "description": "Public URL of this kernel's POST /webhooks/praxis.",
        },
        "return_url": {
            "type": "string",
            "pattern": "^https?://",
            "description": "Where the cashier sends the customer back.",
        },
        "max_notification_age_s": {
            "type": "integer",
            "minimum": 60,
            "default": 86400,
            "description": "Notifications whose timestamp is further than this from now "
            "are refused as stale (replays are harmless anyway: applying is idempotent).",
        },
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "default": 30},
    },
}


def _routes(app: web.Application, _kernel: Any) -> None:
    add_gateway_webhook(app, "praxis", "/webhooks/praxis")


@hookimpl
def broker_register_payment_gateways() -> Iterator[PaymentGateway]:
    yield PaymentGateway(name="praxis", factory=PraxisGateway, kind="redirect", title="Praxis")


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    yield HttpRoutes(name="praxis", setup=_routes)
