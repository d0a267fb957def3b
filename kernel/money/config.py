"""The ``[kernel.payments]`` settings: JSON Schema with defaults.

Referenced from :data:`brokerkernel.kernel.config.KERNEL_SCHEMA` as the ``payments``
property, so it is validated with the rest of ``[kernel]``::

    [kernel.payments]
    default_gateway = "${DEFAULT_PAYMENT_GATEWAY:-praxis}"   # seed section 9
    callback_secret = "${PAYMENT_CALLBACK_SECRET:-}"         # whsec_...; empty: off
"""

from __future__ import annotations

from typing import Any, Final

_PROPERTIES: Final[dict[str, dict[str, Any]]] = {
    "default_gateway": {
        "type": "string",
        "default": "praxis",
        "description": "Payment gateway for countries without a routing rule "
        "(seed section 9: DEFAULT_PAYMENT_GATEWAY, default praxis).",
    },
    "callback_secret": {
        "type": "string",
        "pattern": "^(whsec_[A-Za-z0-9+/]+={0,2})?$",
        "default": "",
        "writeOnly": True,
        "description": "Standard Webhooks secret (whsec_ + base64) that signs calls to "
        "POST /transactions/payment-callback from an external integration service; "
        "empty turns that endpoint off (404).",
    },
}

PAYMENTS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Payments: default cashier gateway, internal payment callbacks.",
    "properties": _PROPERTIES,
    "default": {key: prop["default"] for key, prop in _PROPERTIES.items()},
}
