"""Customer KYC status: statuses, settings and the ``customer_kyc`` table (revision
``0012``), for the provider-agnostic KYC webhook (seed section 25).

``POST /webhooks/kyc`` (:mod:`brokerkernel.api.routes.kyc`) hands each verified result
to :func:`brokerkernel.kernel.customers.record_kyc`: a customer's status is one row of
``customer_kyc`` holding its latest result — ``status`` one of :data:`KYC_STATUSES`,
the provider, its reference, the document and the provider's raw result. A customer
without a row is :data:`NOT_STARTED`.

Config ``[kernel.kyc] webhook_secret`` (:data:`KYC_SCHEMA`): the Standard Webhooks
secret the integration service signs its calls with, as for
``POST /transactions/payment-callback``. The seed only says "HMAC-verified"; Standard
Webhooks is HMAC-SHA256 over ``id.timestamp.body`` and refuses a call older than 5
minutes, where a bare HMAC of the body would accept a replay at any time. Within those
5 minutes a captured call could still be replayed, so results apply in the order they
were signed: one signed before the result that set the current status (an old
``approved`` replayed after a ``rejected``, or a late delivery) changes nothing
(``signed_at``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base

#: The statuses a result may carry: ``pending`` (under review), ``approved``,
#: ``rejected`` (final), ``resubmission_requested`` (the provider asks for new
#: documents, e.g. SumSub ``RED`` + ``RETRY``).
KYC_STATUSES: Final = ("pending", "approved", "rejected", "resubmission_requested")
#: The status of a customer no result was received for.
NOT_STARTED: Final = "not_started"

_PROPERTIES: Final[dict[str, dict[str, Any]]] = {
    "webhook_secret": {
        "type": "string",
        "pattern": "^(whsec_[A-Za-z0-9+/]+={0,2})?$",
        "default": "",
        "writeOnly": True,
        "description": "Standard Webhooks secret (whsec_ + base64) that signs calls to "
        "POST /webhooks/kyc from the integration service; empty turns that endpoint "
        "off (404).",
    },
}
#: ``[kernel.kyc]``, referenced from :data:`brokerkernel.kernel.config.KERNEL_SCHEMA`.
KYC_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "description": "KYC: the signed provider-agnostic KYC webhook.",
    "properties": _PROPERTIES,
    "default": {key: prop["default"] for key, prop in _PROPERTIES.items()},
}


class CustomerKyc(Base):
    """A customer's latest KYC result (one row per customer; none: not started).
    ``doc_country`` ISO 3166-1 alpha-2; ``signed_at`` UTC, when the call carrying it
    was signed (``webhook-timestamp``; None if not received signed); ``updated_at``
    UTC, when it was received."""

    __tablename__ = "customer_kyc"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str | None] = mapped_column(String(128))
    doc_type: Mapped[str | None] = mapped_column(String(64))
    doc_country: Mapped[str | None] = mapped_column(String(2))
    raw_result: Mapped[dict[str, Any]]
    signed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
