"""The Praxis cashier client (API 1.3; CONNECTORS.md, doc.praxiscashier.com).

Signing (Praxis "Authentication"): the values of a method's signature fields, in the
documented order and skipping nulls, are concatenated, the ``merchant_secret``
appended, and the SHA-384 hex digest sent as ``GT-Authentication``. Responses and
notifications carry the same header over their own fields and are verified the same
way (constant-time compare). Amounts travel in minor units (cents). Request
timestamps are wall-clock Unix seconds: they are checked by Praxis, whatever market
time a replay is at.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import aiohttp

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

VERSION: Final = "1.3"
HEADER: Final = "GT-Authentication"
CASHIER_REQUEST_FIELDS: Final = (
    "merchant_id",
    "application_key",
    "timestamp",
    "intent",
    "cid",
    "order_id",
)
CASHIER_RESPONSE_FIELDS: Final = ("status", "timestamp", "redirect_url")
FIND_ORDER_REQUEST_FIELDS: Final = ("merchant_id", "application_key", "timestamp", "order_id")
_TRANSACTION_FIELDS: Final = (
    "customer.customer_token",
    "session.order_id",
    "transaction.tid",
    "transaction.currency",
    "transaction.amount",
    "transaction.conversion_rate",
    "transaction.processed_currency",
    "transaction.processed_amount",
)
NOTIFICATION_FIELDS: Final = ("merchant_id", "application_key", "timestamp", *_TRANSACTION_FIELDS)
FIND_ORDER_RESPONSE_FIELDS: Final = ("status", "timestamp", *_TRANSACTION_FIELDS)
REPLY_FIELDS: Final = ("status", "timestamp")

#: Praxis ``transaction_status`` (payments and payouts) -> the kernel's payment status.
STATUS_MAP: Final = {
    "initialized": "PENDING",
    "requested": "PENDING",
    "pending": "PROCESSING",
    "pending_async": "PROCESSING",
    "in progress": "PROCESSING",
    "authorized": "IN_PROGRESS",
    "approved": "APPROVED",
    "rejected": "REJECT",
    "cancelled": "DECLINE",
    "error": "DECLINE",
    "refund": "REFUND",
    "partial_refund": "REFUND",
    "chargeback": "CHARGEBACK",
}
INTENTS: Final = {"deposit": "payment", "withdrawal": "withdrawal"}


def field_value(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``transaction.tid``), None when absent."""
    node: Any = document
    for key in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def signature(document: Mapping[str, Any], fields: Sequence[str], secret: str) -> str:
    """SHA-384 hex of the non-null values of ``fields`` (in order) + ``secret``."""
    values = (field_value(document, path) for path in fields)
    text = "".join(str(value) for value in values if value is not None) + secret
    return hashlib.sha384(text.encode()).hexdigest()


def verified(body: bytes, given: str, fields: Sequence[str], secret: str) -> dict[str, Any]:
    """The JSON object ``body`` (decimal fractions kept as their exact text: what Praxis
    signed) once its ``GT-Authentication`` value ``given`` matches the
    :func:`signature` of its ``fields`` (constant-time compare); ValueError saying why
    not: ``body is not JSON``, ``body is not a JSON object`` or ``invalid
    GT-Authentication signature``."""
    try:
        document = json.loads(body, parse_float=str)
    except ValueError as exc:
        raise ValueError("body is not JSON") from exc
    if not isinstance(document, dict):
        raise ValueError("body is not a JSON object")
    if not hmac.compare_digest(signature(document, fields, secret), given.strip().lower()):
        raise ValueError(f"invalid {HEADER} signature")
    return document


class PraxisGateway:
    """Praxis as a :class:`~brokerkernel.kernel.descriptors.Gateway` (redirect cashier)."""

    def __init__(self, context: PluginContext) -> None:
        config = context.config
        self._kernel = context.kernel
        self._merchant_id: str = config["merchant_id"]
        self._application_key: str = config["application_key"]
        self._secret: str = config["merchant_secret"]
        self._base_url: str = config["base_url"].rstrip("/")
        self._notification_url: str = config["notification_url"]
        self._return_url: str = config["return_url"]
        self._max_age_s: int = config["max_notification_age_s"]
        self._timeout = aiohttp.ClientTimeout(total=config["timeout_s"])

    def public_config(self) -> Mapping[str, Any]:
        return {}

    async def create_session(self, request: CashierRequest) -> CashierSession:
        """``POST /cashier/cashier``: the session's ``redirect_url`` (iframe src)."""
        body = {
            "merchant_id": self._merchant_id,
            "application_key": self._application_key,
            "intent": INTENTS[request.direction],
            "currency": request.currency,
            "amount": to_minor(request.amount, request.currency),
            "cid": request.customer_id,
            "locale": request.locale,
            "notification_url": self._notification_url,
            "return_url": self._return_url,
            "order_id": request.cashier_id,
            "version": VERSION,
            "timestamp": int(time.time()),
        }
        reply = await self._post(
            "/cashier/cashier", body, CASHIER_REQUEST_FIELDS, CASHIER_RESPONSE_FIELDS
        )
        if reply.get("status") != 0 or not reply.get("redirect_url"):
            raise GatewayError(f"cashier refused: {reply.get('description')}")
        return CashierSession(redirect_url=str(reply["redirect_url"]))

    async def parse_callback(self, body: bytes, headers: Mapping[str, str]) -> PaymentUpdate | None:
        """A payment notification: signature, merchant, freshness
        (``max_notification_age_s``), then the status of its transaction."""
        given = headers.get(HEADER)
        if not given:
            raise CallbackRejected(f"missing {HEADER} header")
        try:
            document = verified(body, given, NOTIFICATION_FIELDS, self._secret)
        except ValueError as exc:
            raise CallbackRejected(str(exc)) from exc
        if (document.get("merchant_id"), document.get("application_key")) != (
            self._merchant_id,
            self._application_key,
        ):
            raise CallbackRejected("notification for another merchant or application")
        timestamp = document.get("timestamp")
        if not isinstance(timestamp, int) or abs(time.time() - timestamp) > self._max_age_s:
            raise CallbackRejected("stale notification (timestamp out of tolerance)")
        return self._update(document)

    async def query_status(self, cashier_id: str, reference: str | None) -> PaymentUpdate | None:
        """``POST /agent/find-order``: the session's latest transaction."""
        body = {
            "merchant_id": self._merchant_id,
            "application_key": self._application_key,
            "order_id": cashier_id,
            "version": VERSION,
            "timestamp": int(time.time()),
        }
        reply = await self._post(
            "/agent/find-order", body, FIND_ORDER_REQUEST_FIELDS, FIND_ORDER_RESPONSE_FIELDS
        )
        if reply.get("status") != 0:
            return None
        return self._update(reply)

    async def refund(
        self, reference: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> PaymentUpdate:
        raise GatewayError(
            "refunds are made in the Praxis back office; its refund notification records them"
        )

    def acknowledge(self) -> WebhookReply:
        """``{"status": 0, ...}`` signed over status and timestamp (else Praxis resends)."""
        body = {"status": 0, "description": "Ok", "version": VERSION, "timestamp": int(time.time())}
        return WebhookReply(body, {HEADER: signature(body, REPLY_FIELDS, self._secret)})

    # --- helpers ---------------------------------------------------------------------

    def _update(self, document: Mapping[str, Any]) -> PaymentUpdate | None:
        order_id = field_value(document, "session.order_id")
        if not order_id:
            raise CallbackRejected("no session.order_id")
        transaction = document.get("transaction")
        if transaction is None:  # the session expired without a transaction
            return PaymentUpdate(str(order_id), "DECLINE", dict(document))
        status = STATUS_MAP.get(str(transaction.get("transaction_status")))
        if status is None:
            return None
        currency = transaction.get("currency")
        amount = transaction.get("amount")  # minor units, an integer (or its digits)
        cents = int(amount) if isinstance(amount, int | str) and str(amount).isdigit() else None
        return PaymentUpdate(
            cashier_id=str(order_id),
            status=status,
            gateway_payload=dict(document),
            reference=None if transaction.get("tid") is None else str(transaction["tid"]),
            amount=None if cents is None or not currency else from_minor(cents, currency),
            currency=currency,
        )

    async def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        request_fields: Sequence[str],
        response_fields: Sequence[str],
    ) -> dict[str, Any]:
        """POST a signed request; the reply, its ``GT-Authentication`` verified."""
        headers = {HEADER: signature(body, request_fields, self._secret)}
        try:
            async with self._kernel.http.post(
                self._base_url + path, json=body, headers=headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
                given = response.headers.get(HEADER, "")
                if response.status >= 500:
                    raise GatewayError(f"HTTP {response.status} from {path}")
        except aiohttp.ClientError as exc:
            raise GatewayError(f"{path} unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise GatewayError(f"{path} timed out") from exc
        try:
            return verified(raw, given, response_fields, self._secret)
        except ValueError as exc:
            raise GatewayError(f"{path} response: {exc}") from exc
