"""The ``prop_checkout`` plugin: selling challenges with Stripe (``/v2/payments``).

A trader buys a configured tier: ``POST /v2/payments/checkout`` creates a Stripe
PaymentIntent (through the enabled Stripe connector's SDK client and API key), the
browser confirms it with Stripe Elements, and the ``payment_intent.succeeded`` event
at ``POST /v2/payments/webhook`` provisions a prop account in the tier's challenge
plan (the ``challenges`` plugin) exactly once; ``GET /v2/payments/prop-accounts``
lists the caller's accounts. Free tiers (price 0) are provisioned at once by
``POST /v2/payments/free``. Enable it with::

    [plugins.stripe]                              # the connector: API key, client
    secret_key = "${STRIPE_SECRET_KEY}"
    ...

    [plugins.challenges]

    [plugins.prop_checkout]
    gateway = "stripe"                            # default
    webhook_secret = "${STRIPE_PROP_WEBHOOK_SECRET}"  # whsec_ of /v2/payments/webhook

    [plugins.prop_checkout.tiers.tier_25k]
    plan = "crypto-25k"                           # a broker-owned challenge plan code
    amount_cents = 19900
    currency = "usd"                              # default
    market = "crypto"
    asset_class = "crypto"
    account_size = 25000

    [plugins.prop_checkout.tiers.tier_demo]
    plan = "demo-10k"
    amount_cents = 0                              # free: POST /v2/payments/free only
    market = "crypto"
    asset_class = "crypto"
    account_size = 10000
    limit_per_customer = 1
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from brokerkernel.kernel.descriptors import HttpRoutes
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.plugins.challenges.service import PropError
from brokerkernel.plugins.prop_checkout.routes import setup_routes
from brokerkernel.plugins.prop_checkout.service import PLUGIN_NAME, PropCheckout
from brokerkernel.plugins.prop_checkout.tiers import TIER_SCHEMA

__all__ = ["CONFIG_SCHEMA", "PropCheckout"]

log = logging.getLogger(__name__)

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["webhook_secret", "tiers"],
    "properties": {
        "gateway": {
            "type": "string",
            "default": "stripe",
            "description": "The enabled Stripe connector whose API key and SDK client "
            "create and read the PaymentIntents.",
        },
        "webhook_secret": {
            "type": "string",
            "pattern": "^whsec_",
            "writeOnly": True,
            "description": "Signing secret of the Stripe endpoint that points at "
            "POST /v2/payments/webhook.",
        },
        "tiers": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,64}$"},
            "additionalProperties": TIER_SCHEMA,
            "description": "Tiers on sale by tier_id.",
        },
        "poll_interval_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 5,
            "description": "How often the provisioner looks for paid payments not yet "
            "provisioned (besides being woken by the webhook).",
        },
        "lease_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 120,
            "description": "How long one worker holds a payment it provisions.",
        },
        "retry_interval_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 10,
            "description": "First retry delay of a failed provisioning (doubles, max 1 h).",
        },
    },
}


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    """``/v2/payments/checkout``, ``/free``, ``/prop-accounts[/{id}]``, ``/webhook``."""
    yield HttpRoutes(name=PLUGIN_NAME, setup=setup_routes)


@hookimpl
def broker_on_startup(kernel: Any) -> None:
    """Publish the service in ``kernel.extensions`` and start its provisioner (which
    first provisions payments left paid but not provisioned)."""
    service = PropCheckout(kernel, kernel.plugins.plugin_config(PLUGIN_NAME))
    try:
        service.stripe()
    except PropError as exc:
        log.error("prop_checkout: %s; paid tiers answer 503", exc.detail)
    kernel.extensions[PLUGIN_NAME] = service
    service.provisioner.start()


@hookimpl
async def broker_on_shutdown(kernel: Any) -> None:
    """Let the provisioner finish the payment in hand and stop."""
    service = kernel.extensions.pop(PLUGIN_NAME, None)
    if isinstance(service, PropCheckout):
        await service.provisioner.stop()
