"""The provider-agnostic KYC webhook (seed section 25, "Compliance & Jurisdiction").

``POST /webhooks/kyc`` is public and signed with Standard Webhooks under
``[kernel.kyc] webhook_secret`` (:mod:`brokerkernel.kernel.kyc` says why); without a
secret the endpoint does not exist (404).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.errors import not_found
from brokerkernel.api.jsonio import json_safe, respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.customers import KycResult, UnknownCustomer, record_kyc
from brokerkernel.kernel.kyc import KYC_STATUSES

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

_TEXT: Final = {"type": ["string", "null"], "minLength": 1}
#: The seed's request body.
KYC_WEBHOOK_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["customer_id", "provider", "status"],
    "properties": {
        "customer_id": {"type": "string", "minLength": 1, "maxLength": 36},
        "provider": {"type": "string", "minLength": 1, "maxLength": 64},
        "provider_id": {**_TEXT, "maxLength": 128},
        "status": {"enum": list(KYC_STATUSES)},
        "doc_type": {**_TEXT, "maxLength": 64},
        "doc_country": {"type": ["string", "null"], "pattern": "^[A-Z]{2}$"},
        "raw_result": {"type": "object"},
    },
    "additionalProperties": False,
}
KYC_WEBHOOK_RESPONSE: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "string"},
        "kyc_status": {"enum": list(KYC_STATUSES)},
        "previous_status": {"type": ["string", "null"]},
        "changed": {"type": "boolean"},
    },
}


@operation(
    "Provider-agnostic KYC webhook",
    tags=["Compliance & Jurisdiction"],
    body=KYC_WEBHOOK_SCHEMA,
    responses={
        200: KYC_WEBHOOK_RESPONSE,
        401: "Bad Standard Webhooks signature",
        404: "Customer not found (or no webhook secret configured)",
        422: "Invalid body",
    },
    security="public",
)
async def kyc_webhook(request: web.Request) -> web.Response:
    """A KYC result from SumSub, Shufti, Jumio or a manual review, forwarded by the
    integration service: the customer's status becomes ``status``
    (``customer.kyc_status_changed``; ``approved`` also ``trader.kyc_passed`` for each
    of its prop accounts). A re-delivery of the current status, or a result signed
    before the one that set the current status (late, or replayed), answers
    ``changed: false`` with the current ``kyc_status`` and emits nothing;
    ``previous_status`` is null then.
    401 ``{"detail": "Invalid signature"}``, 404 unknown customer, 422 bad body."""
    kernel = request.app[KERNEL]
    secret = kernel.kernel_config["kyc"]["webhook_secret"]
    data = await validation.signed_body(request, secret, KYC_WEBHOOK_SCHEMA)
    result = KycResult(
        customer_id=data["customer_id"],
        provider=data["provider"],
        status=data["status"],
        provider_id=data.get("provider_id"),
        doc_type=data.get("doc_type"),
        doc_country=data.get("doc_country"),
        raw_result=json_safe(data.get("raw_result", {})),  # stored in a JSON column
        signed_at=datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC),
    )
    try:
        status, change = await record_kyc(
            kernel.db, kernel.clock.now(), result, kernel.extensions.values()
        )
    except UnknownCustomer as exc:
        raise not_found("Customer not found") from exc
    return respond(
        {
            "customer_id": result.customer_id,
            "kyc_status": status,
            "previous_status": None if change is None else change.previous,
            "changed": change is not None,
        }
    )


def setup(router: Router) -> None:
    router.add("POST", "/webhooks/kyc", kyc_webhook)
