"""A local fake Stripe API speaking Stripe's wire format (form-encoded requests,
Stripe's own fixture objects from ../shared/data/vendor/stripe-fixtures3.json as
answers) and webhook signing as Stripe signs (``Stripe-Signature``, CONNECTORS.md);
shared by the Stripe connector's tests and the prop checkout's."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

WEBHOOK_SECRET = "whsec_test_2f1b8c6a9d"
SECRET_KEY = "sk_test_51Broker"
FIXTURES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "vendor" / "stripe-fixtures3.json"
)


class FakeStripe:
    """``/v1/payment_intents`` and ``/v1/refunds``: form-encoded requests, Stripe's
    fixture objects as answers."""

    def __init__(self) -> None:
        self.resources = json.loads(FIXTURES.read_text())["resources"]
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.intents: dict[str, dict[str, Any]] = {}
        self.refund_status = "succeeded"
        self.refund_error = False
        self.app = web.Application()
        self.app.router.add_post("/v1/payment_intents", self.create_intent)
        self.app.router.add_get("/v1/payment_intents/{id}", self.get_intent)
        self.app.router.add_post("/v1/refunds", self.create_refund)

    async def _form(self, request: web.Request) -> dict[str, str]:
        assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.path, form, dict(request.headers)))
        return form

    async def create_intent(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        intent = copy.deepcopy(self.resources["payment_intent"])
        number = len(self.intents) + 1
        intent.update(
            id=f"pi_test_{number}",
            client_secret=f"pi_test_{number}_secret_abc",
            amount=int(form["amount"]),
            currency=form["currency"],
            receipt_email=form.get("receipt_email"),
            metadata={
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
        )
        self.intents[intent["id"]] = intent
        return web.json_response(intent)

    async def get_intent(self, request: web.Request) -> web.Response:
        await self._form(request)
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "No such payment_intent"}},
                status=404,
            )
        return web.json_response(intent)

    async def create_refund(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if self.refund_error:
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "charge_already_refunded",
                        "message": "Charge has already been refunded.",
                    }
                },
                status=400,
            )
        refund = copy.deepcopy(self.resources["refund"])
        refund.update(
            id=f"re_test_{len(self.requests)}",
            amount=int(form["amount"]),
            payment_intent=form["payment_intent"],
            status=self.refund_status,
            metadata={"cashier_id": form["metadata[cashier_id]"]},
        )
        return web.json_response(refund)

    def succeed(self, intent_id: str, received: int | None = None) -> dict[str, Any]:
        intent = self.intents[intent_id]
        intent.update(status="succeeded", amount_received=received or intent["amount"])
        return intent


def event(kind: str, obj: dict[str, Any], event_id: str = "evt_1") -> str:
    document = copy.deepcopy(FakeStripe().resources["event"])
    document.update(id=event_id, type=kind, data={"object": obj})
    return json.dumps(document)


def signature(payload: str, timestamp: int | None = None, secret: str = WEBHOOK_SECRET) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`` with the secret's UTF-8 bytes."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"
