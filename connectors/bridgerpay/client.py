"""The BridgerPay cashier client (CONNECTORS.md; docs.bridgerpay.com, API v2).

Every response is wrapped ``{"response": {status, code, message}, "result": ...}``.
``POST /v2/auth/login`` gives a JWT access token (7,200 s): it is kept in memory until
a minute before it expires, then renewed; a 401 renews it at once and the call is
retried once. BridgerPay documents no webhook signature, so a webhook is only a hint:
the deposit's status is read back from ``GET /v1/merchant/{API_KEY}/deposits/
{order_id}`` and that is what the kernel applies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import aiohttp

from brokerkernel.api.jsonio import dumps
from brokerkernel.kernel.descriptors import (
    CallbackRejected,
    CashierRequest,
    CashierSession,
    GatewayError,
    PaymentUpdate,
    PluginContext,
    WebhookReply,
)

TOKEN_MARGIN_S: Final = 60
DEFAULT_TOKEN_TTL_S: Final = 7200
#: Deposit status -> the kernel's payment status (seed section 9, plus refunds).
STATUS_MAP: Final = {
    "approved": "APPROVED",
    "declined": "DECLINE",
    "error": "DECLINE",
    "cancelled": "DECLINE",
    "in_process": "PROCESSING",
    "pending": "PENDING",
    "refunded": "REFUND",
}
#: Webhook types after which the deposit's status is read back and applied.
PAYMENT_WEBHOOKS: Final = frozenset({"approved", "declined", "partly_refunded", "refunded"})


class BridgerPayGateway:
    """BridgerPay as a :class:`~brokerkernel.kernel.descriptors.Gateway` (embedded
    cashier: the front end loads ``script_url`` with ``cashier_key`` and the token)."""

    def __init__(self, context: PluginContext) -> None:
        config = context.config
        self._kernel = context.kernel
        self._user_name: str = config["user_name"]
        self._password: str = config["password"]
        self._api_key: str = config["api_key"]
        self._cashier_key: str = config["cashier_key"]
        self._base_url: str = config["base_url"].rstrip("/")
        self._script_url: str = config["script_url"]
        self._timeout = aiohttp.ClientTimeout(total=config["timeout_s"])
        self._token: str | None = None
        self._token_expires = 0.0
        self._login_lock = asyncio.Lock()
        self.logins = 0

    def public_config(self) -> Mapping[str, Any]:
        return {"script_url": self._script_url, "cashier_key": self._cashier_key}

    async def create_session(self, request: CashierRequest) -> CashierSession:
        """``POST /v2/cashier/session/create/{API_KEY}``: the cashier token."""
        if not request.country:
            raise GatewayError("BridgerPay needs the customer's country")
        result = await self._call(
            "POST",
            f"/v2/cashier/session/create/{self._api_key}",
            {
                "cashier_key": self._cashier_key,
                "order_id": request.cashier_id,
                "currency": request.currency,
                "country": request.country,
                "amount": request.amount,
                "first_name": request.first_name,
                "last_name": request.last_name,
                "email": request.email,
                "phone": request.phone,
                "language": request.locale[:2],
            },
        )
        token = result.get("cashier_token") if isinstance(result, dict) else None
        if not token:
            raise GatewayError("no cashier_token in the session response")
        return CashierSession(token=str(token), details=self.public_config())

    async def parse_callback(self, body: bytes, headers: Mapping[str, str]) -> PaymentUpdate | None:
        """A webhook names an order; its status comes from BridgerPay's API."""
        try:
            document = json.loads(body)
            kind = document["webhook"]["type"]
            order_id = document["data"]["order_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CallbackRejected("not a BridgerPay webhook") from exc
        if kind not in PAYMENT_WEBHOOKS:
            return None  # session init/close: no payment status
        update = await self.query_status(str(order_id), None)
        if update is None:
            raise CallbackRejected(f"BridgerPay does not know order {order_id}")
        return PaymentUpdate(
            cashier_id=update.cashier_id,
            status=update.status,
            gateway_payload={"webhook": document, "deposit": update.gateway_payload},
            reference=update.reference,
            amount=update.amount,
            currency=update.currency,
        )

    async def query_status(self, cashier_id: str, reference: str | None) -> PaymentUpdate | None:
        """``GET /v1/merchant/{API_KEY}/deposits/{order_id}``; None when unknown."""
        result = await self._call(
            "GET", f"/v1/merchant/{self._api_key}/deposits/{cashier_id}", None, missing_ok=True
        )
        deposit = result.get("deposit") if isinstance(result, dict) else None
        if not isinstance(deposit, dict):
            return None
        status = STATUS_MAP.get(str(deposit.get("status")))
        if status is None:
            return None
        amount = deposit.get("amount")
        return PaymentUpdate(
            cashier_id=cashier_id,
            status=status,
            gateway_payload=deposit,
            reference=None
            if deposit.get("transaction_id") is None
            else str(deposit["transaction_id"]),
            amount=None if amount is None else Decimal(str(amount)),
            currency=deposit.get("currency"),
        )

    async def refund(
        self, reference: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> PaymentUpdate:
        raise GatewayError("refunds are made in the BridgerPay back office")

    def acknowledge(self) -> WebhookReply:
        return WebhookReply({"status": "ok"})

    # --- helpers ---------------------------------------------------------------------

    async def _access_token(self, renew: bool = False) -> str:
        async with self._login_lock:
            if renew or self._token is None or time.monotonic() >= self._token_expires:
                result = await self._request(
                    "POST",
                    "/v2/auth/login",
                    {"user_name": self._user_name, "password": self._password},
                    token=None,
                )
                access = result.get("access_token") if isinstance(result, dict) else None
                if not isinstance(access, dict) or not access.get("token"):
                    raise GatewayError("login answered without an access token")
                ttl = float(access.get("expires_in") or DEFAULT_TOKEN_TTL_S)
                self._token = str(access["token"])
                self._token_expires = time.monotonic() + max(ttl - TOKEN_MARGIN_S, 0.0)
                self.logins += 1
            assert self._token is not None
            return self._token

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None, missing_ok: bool = False
    ) -> Any:
        token = await self._access_token()
        try:
            return await self._request(method, path, body, token, missing_ok)
        except _Unauthorized:
            token = await self._access_token(renew=True)
            return await self._request(method, path, body, token, missing_ok)

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        token: str | None,
        missing_ok: bool = False,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None if body is None else dumps(body)  # Decimal amounts as exact numbers
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._kernel.http.request(
                method, self._base_url + path, data=data, headers=headers, timeout=self._timeout
            ) as response:
                status = response.status
                raw = await response.read()
        except aiohttp.ClientError as exc:
            raise GatewayError(f"{path} unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise GatewayError(f"{path} timed out") from exc
        try:
            envelope = json.loads(raw, parse_float=Decimal)
            code = int(envelope["response"]["code"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GatewayError(f"{path}: HTTP {status}, not a BridgerPay response") from exc
        if token is not None and (status == 401 or code == 401):
            raise _Unauthorized
        if missing_ok and (status == 404 or code == 404):
            return None
        if status >= 300 or code >= 300:
            raise GatewayError(f"{path}: {code} {envelope['response'].get('message')}")
        return envelope.get("result")


class _Unauthorized(Exception):
    """The access token was refused: log in again."""
