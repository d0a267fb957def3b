"""The Stripe client: PaymentIntents and refunds through the official ``stripe`` SDK
(async, on the kernel's shared aiohttp session), webhooks verified with Stripe's own
``Stripe-Signature`` check (HMAC-SHA256 of ``"{t}.{body}"``, any ``v1`` may match,
``tolerance_s`` against the wall clock; CONNECTORS.md, stripe-python
``WebhookSignature``).

Events applied: ``payment_intent.succeeded`` (APPROVED, at ``amount_received``),
``payment_intent.processing`` (PROCESSING), ``payment_intent.canceled`` (DECLINE),
``charge.dispute.created`` (CHARGEBACK of the disputed deposit) and
``refund.created`` / ``refund.updated`` / ``refund.failed`` of refunds this kernel
made. A failed attempt (``payment_intent.payment_failed``) is not final in Stripe
(the customer may try another card) and changes nothing; every other event is
acknowledged and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import aiohttp
import stripe

from brokerkernel.kernel.descriptors import (
    CallbackRejected,
    CashierRequest,
    CashierSession,
    GatewayError,
    PaymentUpdate,
    PluginContext,
    WebhookReply,
)
from brokerkernel.kernel.trading.money import from_minor, to_minor

HEADER: Final = "Stripe-Signature"
#: PaymentIntent status -> the kernel's payment status.
INTENT_STATUS: Final = {
    "requires_payment_method": "PENDING",
    "requires_confirmation": "PENDING",
    "requires_action": "PENDING",
    "processing": "PROCESSING",
    "requires_capture": "IN_PROGRESS",
    "canceled": "DECLINE",
    "succeeded": "APPROVED",
}
INTENT_EVENTS: Final = {
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.canceled",
}
#: Refund status -> status of the refund (a WITHDRAWAL): money leaves once Stripe
#: has accepted the refund (pending or succeeded).
REFUND_STATUS: Final = {
    "pending": "APPROVED",
    "succeeded": "APPROVED",
    "requires_action": "PROCESSING",
    "failed": "DECLINE",
    "canceled": "DECLINE",
}
REFUND_EVENTS: Final = {"refund.created", "refund.updated", "refund.failed"}


class StripeGateway:
    """Stripe as a :class:`~brokerkernel.kernel.descriptors.Gateway`: deposits through
    PaymentIntents confirmed in the browser with Stripe Elements (embedded)."""

    def __init__(self, context: PluginContext) -> None:
        config = context.config
        self._kernel = context.kernel
        self._secret_key: str = config["secret_key"]
        self._webhook_secret: str = config["webhook_secret"]
        self._publishable_key: str = config["publishable_key"]
        self._api_base: str = config["api_base"]
        self._tolerance_s: int = config["tolerance_s"]
        self._timeout_s: float = config["timeout_s"]
        self._client: stripe.StripeClient | None = None

    @property
    def client(self) -> stripe.StripeClient:
        """The SDK client on the kernel's HTTP session (built on first use)."""
        if self._client is None:
            self._client = stripe.StripeClient(
                self._secret_key,
                base_addresses={"api": self._api_base},
                http_client=stripe.AIOHTTPClient(
                    session=self._kernel.http,
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                ),
            )
        return self._client

    def public_config(self) -> Mapping[str, Any]:
        return {"publishable_key": self._publishable_key}

    async def create_session(self, request: CashierRequest) -> CashierSession:
        """``POST /v1/payment_intents`` (idempotent on the cashier id): the intent's id
        and ``client_secret`` for Stripe Elements."""
        intent = await self.create_intent(
            {
                "amount": to_minor(request.amount, request.currency),
                "currency": request.currency.lower(),
                "automatic_payment_methods": {"enabled": True},
                "receipt_email": request.email,
                "metadata": {
                    "cashier_id": request.cashier_id,
                    "login": str(request.login),
                    "customer_id": request.customer_id,
                },
            },
            request.cashier_id,
        )
        return CashierSession(
            reference=intent["id"], token=intent["client_secret"], details=self.public_config()
        )

    async def create_intent(
        self, params: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/payment_intents`` with ``params`` (Stripe's create parameters),
        idempotent on ``idempotency_key``: the intent as a dict (``id``,
        ``client_secret``, ``status``, ...); GatewayError when Stripe refuses or fails."""
        try:
            intent = await self.client.v1.payment_intents.create_async(
                dict(params),  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise GatewayError(_message(exc)) from exc
        document: dict[str, Any] = intent.to_dict()
        return document

    async def parse_callback(self, body: bytes, headers: Mapping[str, str]) -> PaymentUpdate | None:
        """A Stripe event: signature first (on the raw body), then its object."""
        event = self.construct_event(body, headers)
        kind, obj = event["type"], event["data"]["object"]
        if kind in INTENT_EVENTS:
            return _intent_update(obj)
        if kind in REFUND_EVENTS:
            cashier_id = (obj.get("metadata") or {}).get("cashier_id")
            status = REFUND_STATUS.get(obj.get("status"))
            if not cashier_id or status is None:
                return None
            return PaymentUpdate(cashier_id, status, obj, reference=obj.get("id"))
        if kind == "charge.dispute.created" and obj.get("payment_intent"):
            intent = await self.retrieve_intent(str(obj["payment_intent"]))
            cashier_id = (intent.get("metadata") or {}).get("cashier_id")
            if not cashier_id:
                return None
            return PaymentUpdate(cashier_id, "CHARGEBACK", obj, reference=obj.get("id"))
        return None

    def construct_event(
        self, body: bytes, headers: Mapping[str, str], secret: str | None = None
    ) -> dict[str, Any]:
        """The event of a webhook delivery, verified on the raw ``body``: its
        ``Stripe-Signature`` must match ``secret`` (a ``whsec_`` endpoint secret; this
        connector's own by default) within ``tolerance_s``. Returns the event dict
        (``id``, ``type``, ``data.object``); CallbackRejected when the header is
        missing, no ``v1`` signature matches, the timestamp is stale or the body is
        not an event."""
        given = headers.get(HEADER)
        if not given:
            raise CallbackRejected(f"missing {HEADER} header")
        try:
            stripe.WebhookSignature.verify_header(
                body.decode(), given, secret or self._webhook_secret, self._tolerance_s
            )
        except stripe.SignatureVerificationError as exc:
            raise CallbackRejected(f"{HEADER}: {exc.user_message or exc}") from exc
        try:
            event = json.loads(body)
            if not isinstance(event["type"], str) or not isinstance(event["data"]["object"], dict):
                raise TypeError("not an event")
        except (ValueError, KeyError, TypeError) as exc:
            raise CallbackRejected("not a Stripe event") from exc
        document: dict[str, Any] = event
        return document

    async def query_status(self, cashier_id: str, reference: str | None) -> PaymentUpdate | None:
        """``GET /v1/payment_intents/{id}`` of the session's intent."""
        if reference is None:
            return None
        return _intent_update(await self.retrieve_intent(reference))

    async def refund(
        self, reference: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> PaymentUpdate:
        """``POST /v1/refunds`` of the intent ``reference``; the refund's cashier id is
        the idempotency key and travels in its metadata (for its webhooks)."""
        try:
            refund = await self.client.v1.refunds.create_async(
                {
                    "payment_intent": reference,
                    "amount": to_minor(amount, currency),
                    "reason": "requested_by_customer",
                    "metadata": {"cashier_id": idempotency_key},
                },
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise GatewayError(_message(exc)) from exc
        document = refund.to_dict()
        return PaymentUpdate(
            idempotency_key,
            REFUND_STATUS.get(str(document.get("status")), "PROCESSING"),
            document,
            reference=refund.id,
        )

    def acknowledge(self) -> WebhookReply:
        return WebhookReply({"received": True})

    async def retrieve_intent(self, intent_id: str) -> dict[str, Any]:
        """``GET /v1/payment_intents/{id}``: the intent as a dict; GatewayError when
        Stripe refuses or fails."""
        try:
            intent = await self.client.v1.payment_intents.retrieve_async(intent_id)
        except stripe.StripeError as exc:
            raise GatewayError(_message(exc)) from exc
        document: dict[str, Any] = intent.to_dict()
        return document


def _intent_update(intent: Mapping[str, Any]) -> PaymentUpdate | None:
    cashier_id = (intent.get("metadata") or {}).get("cashier_id")
    status = INTENT_STATUS.get(str(intent.get("status")))
    if not cashier_id or status is None:
        return None  # not a cashier session of this kernel
    currency = str(intent.get("currency", "")).upper()
    received = intent.get("amount_received") if status == "APPROVED" else None
    return PaymentUpdate(
        cashier_id=str(cashier_id),
        status=status,
        gateway_payload=dict(intent),
        reference=intent.get("id"),
        amount=from_minor(received, currency) if isinstance(received, int) and currency else None,
        currency=currency or None,
    )


def _message(exc: stripe.StripeError) -> str:
    return exc.user_message or str(exc) or type(exc).__name__
