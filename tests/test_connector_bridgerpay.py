"""The BridgerPay connector against a local fake BridgerPay (CONNECTORS.md): login and
token reuse/renewal, cashier sessions, and webhooks confirmed by re-reading the
deposit's status (BridgerPay signs nothing)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from connector_support import post_webhook, serve
from money_support import balance, json_body, ledger_rows, payment_app, transactions_of
from support import register_trader

from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.runtime import Kernel

Client = Any
API_KEY, CASHIER_KEY = "bp-api-key", "ck_test"


def envelope(code: int, result: Any = None, message: str = "Success") -> web.Response:
    status = {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
    }
    return web.json_response(
        {"response": {"status": status[code], "code": code, "message": message}, "result": result},
        status=code,
    )


class FakeBridgerPay:
    def __init__(self) -> None:
        self.logins = 0
        self.refused = 0
        self.expires_in = 7200
        self.tokens: set[str] = set()
        self.sessions: list[dict[str, Any]] = []
        self.deposits: dict[str, dict[str, Any]] = {}
        self.app = web.Application()
        self.app.router.add_post("/v2/auth/login", self.login)
        self.app.router.add_post("/v2/cashier/session/create/{api_key}", self.create_session)
        self.app.router.add_get("/v1/merchant/{api_key}/deposits/{order_id}", self.deposit)

    def revoke(self) -> None:
        self.tokens.clear()

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token in self.tokens and request.match_info["api_key"] == API_KEY:
            return True
        self.refused += 1
        return False

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body != {"user_name": "merchant@broker.test", "password": "bp-password"}:
            return envelope(403, None, "login_failue")
        self.logins += 1
        token = f"jwt-{self.logins}"
        self.tokens.add(token)
        return envelope(200, {"access_token": {"token": token, "expires_in": self.expires_in}})

    async def create_session(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return envelope(401, None, "unauthorized")
        body = await request.json(loads=loads)
        if not all(body.get(k) for k in ("cashier_key", "order_id", "currency", "country")):
            return envelope(400, None, "missing required fields")
        self.sessions.append(body)
        return envelope(200, {"cashier_token": f"ct-{body['order_id']}"})

    async def deposit(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return envelope(401, None, "unauthorized")
        found = self.deposits.get(request.match_info["order_id"])
        if found is None:
            return envelope(404, None, "deposit not found")
        return envelope(200, {"deposit": found})


@pytest.fixture
async def bridgerpay(aiohttp_server: Any) -> tuple[FakeBridgerPay, TestServer]:
    return await serve(aiohttp_server, FakeBridgerPay())


@pytest.fixture
async def app(
    bridgerpay: tuple[FakeBridgerPay, TestServer],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, Kernel]:
    extra = f"""
[kernel.payments]
default_gateway = "bridgerpay"

[plugins.bridgerpay]
user_name = "merchant@broker.test"
password = "bp-password"
api_key = "{API_KEY}"
cashier_key = "{CASHIER_KEY}"
base_url = "{bridgerpay[1].make_url("/")}"
"""
    return await payment_app(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, extra
    )


async def trader(
    client: Client, email: str, country: str | None = "BR"
) -> tuple[int, dict[str, str]]:
    return await register_trader(client, email, first_name="Ana", country=country)


async def session(client: Client, headers: dict[str, str], expect: int = 201) -> dict[str, Any]:
    response = await client.post(
        "/payments/bridgerpay/session", json={"amount": 500, "currency": "USD"}, headers=headers
    )
    return await json_body(response, expect)


async def webhook(
    client: Client, kind: str, order_id: str, status: str = "approved"
) -> tuple[int, Any]:
    document = {
        "webhook": {"type": kind},
        "data": {
            "order_id": order_id,
            "charge": {
                "type": "deposit",
                "id": "ch_1",
                "operation_type": "deposit",
                "attributes": {"status": status, "amount": 500, "currency": "USD"},
            },
        },
    }
    status, body, _ = await post_webhook(
        client, "/integrations/webhooks/bridgerpay", json.dumps(document)
    )
    return status, body


def deposit_record(status: str, amount: str = "500.00") -> dict[str, Any]:
    return {
        "status": status,
        "decline_reason": None if status == "approved" else "Do not honor",
        "transaction_id": "bp-tx-77",
        "amount": float(amount),
        "currency": "USD",
    }


async def test_session_creates_a_pending_deposit_and_returns_the_cashier_token(
    app: tuple[Client, Kernel], bridgerpay: tuple[FakeBridgerPay, TestServer]
) -> None:
    client, kernel = app
    fake, _ = bridgerpay
    login, headers = await trader(client, "bp@test.io")

    body = await session(client, headers)

    (sent,) = fake.sessions
    assert body == {
        "transaction_id": body["transaction_id"],
        "cashier_token": f"ct-{sent['order_id']}",
        "cashier_session_id": sent["order_id"],
        "script_url": "https://embed.bridgerpay.com/connector.min.js",
        "cashier_key": CASHIER_KEY,
    }
    assert (sent["cashier_key"], sent["currency"], sent["country"], sent["amount"]) == (
        CASHIER_KEY,
        "USD",
        "BR",
        500,
    )
    assert (sent["email"], sent["first_name"], sent["language"]) == ("bp@test.io", "Ana", "en")
    (tx,) = await transactions_of(kernel, login)
    assert (tx.id, tx.status, tx.type, tx.gate_name, tx.cashier_id) == (
        body["transaction_id"],
        "PENDING",
        "DEPOSIT",
        "bridgerpay",
        sent["order_id"],
    )


async def test_webhook_moves_money_only_after_bridgerpay_confirms_it(
    app: tuple[Client, Kernel], bridgerpay: tuple[FakeBridgerPay, TestServer]
) -> None:
    client, kernel = app
    fake, _ = bridgerpay
    login, headers = await trader(client, "confirm@test.io")
    honest = (await session(client, headers))["cashier_session_id"]
    forged = (await session(client, headers))["cashier_session_id"]
    fake.deposits[honest] = deposit_record("in_process")
    fake.deposits[forged] = deposit_record("declined")

    processing = await webhook(client, "approved", honest)  # a hint; BridgerPay says in_process
    lie = await webhook(client, "approved", forged)  # BridgerPay says declined
    fake.deposits[honest] = deposit_record("approved")
    approved = await webhook(client, "approved", honest)
    replay = await webhook(client, "approved", honest)
    unknown = await webhook(client, "approved", "no-such-order")
    malformed = await client.post("/integrations/webhooks/bridgerpay", data=b"[1, 2]")
    init = await webhook(client, "cashier.session.init", honest)

    assert [processing, lie, approved, replay, init] == [(200, {"status": "ok"})] * 5
    assert unknown == (400, {"detail": "BridgerPay does not know order no-such-order"})
    assert (malformed.status, await malformed.json()) == (
        400,
        {"detail": "not a BridgerPay webhook"},
    )
    txs = {t.cashier_id: t for t in await transactions_of(kernel, login)}
    assert (txs[honest].status, txs[honest].gateway_reference) == ("APPROVED", "bp-tx-77")
    assert txs[forged].status == "DECLINE"
    assert [(r.event_type, r.balance_delta) for r in await ledger_rows(kernel, login)] == [
        ("deposit", 500)
    ]
    assert await balance(kernel, login) == (Decimal("500.00"), 0)


async def test_access_token_is_reused_renewed_at_expiry_and_after_a_401(
    app: tuple[Client, Kernel], bridgerpay: tuple[FakeBridgerPay, TestServer]
) -> None:
    client, _ = app
    fake, _server = bridgerpay
    _, headers = await trader(client, "token@test.io")

    await session(client, headers)
    await session(client, headers)
    reused = (fake.logins, fake.refused)
    fake.revoke()  # BridgerPay no longer accepts the cached token: 401, log in, retry
    await session(client, headers)
    after_401 = (fake.logins, fake.refused)
    fake.expires_in = 60  # within the renewal margin: expired as soon as it is issued
    fake.revoke()
    await session(client, headers)  # 401, then a token that is already due
    await session(client, headers)  # renewed before use: no 401

    assert (reused, after_401) == ((1, 0), (2, 1))
    assert (fake.logins, fake.refused) == (4, 2)
    assert len(fake.sessions) == 5


async def test_customers_without_a_country_cannot_use_bridgerpay(
    app: tuple[Client, Kernel], bridgerpay: tuple[FakeBridgerPay, TestServer]
) -> None:
    client, kernel = app
    login, headers = await trader(client, "nocountry@test.io", country=None)
    assert await session(client, headers, expect=502) == {
        "detail": "bridgerpay: BridgerPay needs the customer's country"
    }
    assert [t.status for t in await transactions_of(kernel, login)] == ["DECLINE"]
    assert bridgerpay[0].sessions == []
