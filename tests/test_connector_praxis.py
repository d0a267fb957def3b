"""The Praxis connector against a local fake Praxis speaking API 1.3 (CONNECTORS.md):
cashier sessions, GT-Authentication on requests, responses and notifications, the
signed reply, status mapping, replays, find-order reconciliation, refunds, chargebacks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from connector_support import post_webhook, serve
from money_support import (
    balance,
    compliance_status,
    json_body,
    ledger_rows,
    payment_app,
    transaction,
    transactions_of,
)
from support import deposit, register_trader, staff_headers

from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.runtime import Kernel

Client = Any
SECRET = "praxis-merchant-secret"
MERCHANT, APPLICATION = "API-Broker", "Sandbox"
NOTIFICATION_FIELDS = (
    "merchant_id",
    "application_key",
    "timestamp",
    "customer.customer_token",
    "session.order_id",
    "transaction.tid",
    "transaction.currency",
    "transaction.amount",
    "transaction.conversion_rate",
    "transaction.processed_currency",
    "transaction.processed_amount",
)


def sign(document: dict[str, Any], fields: Sequence[str], secret: str = SECRET) -> str:
    """Praxis's algorithm, written independently of the connector: the non-null values
    of ``fields`` in order, then the secret, SHA-384 hex."""
    parts = []
    for path in fields:
        value: Any = document
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            parts.append(str(value))
    return hashlib.sha384(("".join(parts) + secret).encode()).hexdigest()


class FakePraxis:
    """``/cashier/cashier`` and ``/agent/find-order`` as Praxis answers them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.transactions: dict[str, dict[str, Any]] = {}
        self.fail = False
        self.bad_signature = False
        self.app = web.Application()
        self.app.router.add_post("/cashier/cashier", self.cashier)
        self.app.router.add_post("/agent/find-order", self.find_order)

    def _reply(self, body: dict[str, Any], fields: Sequence[str]) -> web.Response:
        signature = sign(body, fields, "wrong" if self.bad_signature else SECRET)
        return web.json_response(body, headers={"GT-Authentication": signature})

    async def _request(self, request: web.Request, fields: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.requests.append((request.path, body))
        assert request.headers["GT-Authentication"] == sign(body, fields)
        assert (body["merchant_id"], body["application_key"], body["version"]) == (
            MERCHANT,
            APPLICATION,
            "1.3",
        )
        assert abs(body["timestamp"] - time.time()) < 60
        return body

    async def cashier(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=503, text="maintenance")
        body = await self._request(
            request, ("merchant_id", "application_key", "timestamp", "intent", "cid", "order_id")
        )
        self.sessions[body["order_id"]] = body
        reply = {
            "status": 0,
            "description": "Ok",
            "redirect_url": f"https://pci-gw-test.praxispay.com/cashier/{body['order_id']}",
            "version": "1.3",
            "timestamp": int(time.time()),
        }
        return self._reply(reply, ("status", "timestamp", "redirect_url"))

    async def find_order(self, request: web.Request) -> web.Response:
        body = await self._request(
            request, ("merchant_id", "application_key", "timestamp", "order_id")
        )
        order = body["order_id"]
        if order not in self.sessions:
            reply: dict[str, Any] = {
                "status": 1,
                "description": "Order not found",
                "version": "1.3",
                "timestamp": int(time.time()),
            }
        else:
            reply = {
                "status": 0,
                "description": "Ok",
                **notification(self.sessions[order], self.transactions.get(order)),
            }
            reply.pop("merchant_id")
            reply.pop("application_key")
        return self._reply(reply, ("status", "timestamp", *NOTIFICATION_FIELDS[3:]))


def notification(
    session: dict[str, Any],
    transaction: dict[str, Any] | None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A Praxis payment notification of ``session`` (the cashier request)."""
    return {
        "merchant_id": MERCHANT,
        "application_key": APPLICATION,
        "conversion_rate": "1.000000",
        "customer": {"customer_token": f"tok-{session['cid'][:8]}", "country": "DE"},
        "session": {
            "auth_token": "auth-" + session["order_id"][:8],
            "intent": session["intent"],
            "session_status": "created",
            "order_id": session["order_id"],
            "currency": session["currency"],
            "amount": session["amount"],
            "cid": session["cid"],
        },
        "transaction": transaction,
        "version": "1.3",
        "timestamp": int(time.time()) if timestamp is None else timestamp,
    }


def payment(status: str, tid: int, amount: int, currency: str = "USD") -> dict[str, Any]:
    return {
        "transaction_type": "sale",
        "transaction_status": status,
        "tid": tid,
        "transaction_id": f"psp-{tid}",
        "currency": currency,
        "amount": amount,
        "conversion_rate": "1.000000",
        "processed_currency": currency,
        "processed_amount": amount,
        "payment_method": "Credit Card",
        "gateway": "Test Gateway",
    }


@pytest.fixture
async def praxis(aiohttp_server: Any) -> tuple[FakePraxis, TestServer]:
    return await serve(aiohttp_server, FakePraxis())


@pytest.fixture
async def app(
    praxis: tuple[FakePraxis, TestServer],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, Kernel]:
    _fake, server = praxis
    extra = f"""
[plugins.praxis]
merchant_id = "{MERCHANT}"
application_key = "{APPLICATION}"
merchant_secret = "{SECRET}"
base_url = "{server.make_url("/")}"
notification_url = "https://broker.test/webhooks/praxis"
return_url = "https://broker.test/cashier/done"
"""
    return await payment_app(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, extra
    )


async def open_session(
    client: Client, trader: dict[str, str], body: dict[str, Any], expect: int = 201
) -> dict[str, Any]:
    response = await client.post("/payments/session", json=body, headers=trader)
    return await json_body(response, expect)


async def notify(
    client: Client, document: dict[str, Any], signature: str | None = "sign"
) -> tuple[int, Any, Any]:
    if signature == "sign":
        signature = sign(document, NOTIFICATION_FIELDS)
    signed = None if signature is None else ("GT-Authentication", signature)
    return await post_webhook(client, "/webhooks/praxis", json.dumps(document), signed)


async def charge_back(client: Client, staff: dict[str, str], tx_id: str) -> dict[str, Any]:
    response = await client.post(
        f"/api/backoffice/transactions/{tx_id}/chargeback",
        json={"reason": "dispute"},
        headers=staff,
    )
    return await json_body(response, 201)


async def test_deposit_session_notification_reply_and_replay(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    fake, _ = praxis
    login, trader = await register_trader(client, "praxis@test.io")

    opened = await open_session(client, trader, {"amount": "250.00", "currency": "USD"})
    ((path, sent),) = fake.requests
    status, reply, headers = await notify(
        client, notification(sent, payment("approved", 9001, 25000))
    )
    replay = await notify(client, notification(sent, payment("approved", 9001, 25000)))

    assert opened == {
        "transaction_id": opened["transaction_id"],
        "cashier_id": sent["order_id"],
        "gateway": "praxis",
        "type": "redirect",
        "redirect_url": f"https://pci-gw-test.praxispay.com/cashier/{sent['order_id']}",
        "token": None,
    }
    assert (path, sent["intent"], sent["amount"], sent["currency"]) == (
        "/cashier/cashier",
        "payment",
        25000,
        "USD",
    )
    assert (sent["notification_url"], sent["return_url"], sent["locale"]) == (
        "https://broker.test/webhooks/praxis",
        "https://broker.test/cashier/done",
        "en",
    )
    assert status == 200
    assert reply == {
        "status": 0,
        "description": "Ok",
        "version": "1.3",
        "timestamp": reply["timestamp"],
    }
    assert headers["GT-Authentication"] == sign(reply, ("status", "timestamp"))
    assert replay[0] == 200
    assert await balance(kernel, login) == (Decimal("250.00"), 0)
    rows = await ledger_rows(kernel, login)
    assert [(r.event_type, r.balance_delta) for r in rows] == [("deposit", 250)]
    (tx,) = await transactions_of(kernel, login)
    assert (tx.status, tx.source, tx.gate_name, tx.gateway_reference, tx.cashier_id) == (
        "APPROVED",
        "cashier",
        "praxis",
        "9001",
        sent["order_id"],
    )
    assert tx.approved_by == "gateway:praxis"


async def test_signatures_valid_tampered_stale_and_missing(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    fake, _ = praxis
    login, trader = await register_trader(client, "sigs@test.io")
    await open_session(client, trader, {"amount": "100", "currency": "USD"})
    sent = fake.requests[0][1]
    approved = notification(sent, payment("approved", 7, 10000))

    tampered = {**approved, "transaction": {**approved["transaction"], "amount": 9999900}}
    stale = notification(sent, payment("approved", 7, 10000), int(time.time()) - 2 * 86400)
    other_merchant = {**approved, "merchant_id": "API-Other"}
    results = [
        await notify(client, tampered, sign(approved, NOTIFICATION_FIELDS)),
        await notify(client, approved, None),
        await notify(client, stale),
        await notify(client, other_merchant),
        await notify(client, approved, sign(approved, NOTIFICATION_FIELDS, "not-the-secret")),
        await post_webhook(client, "/webhooks/praxis", "{not json", ("GT-Authentication", "x")),
        await post_webhook(client, "/webhooks/praxis", "[1]", ("GT-Authentication", "x")),
    ]

    assert [(status, body) for status, body, _ in results] == [
        (400, {"detail": "invalid GT-Authentication signature"}),
        (400, {"detail": "missing GT-Authentication header"}),
        (400, {"detail": "stale notification (timestamp out of tolerance)"}),
        (400, {"detail": "notification for another merchant or application"}),
        (400, {"detail": "invalid GT-Authentication signature"}),
        (400, {"detail": "body is not JSON"}),
        (400, {"detail": "body is not a JSON object"}),
    ]
    assert await balance(kernel, login) == (0, 0)
    valid = await notify(client, approved)
    assert valid[0] == 200
    assert await balance(kernel, login) == (Decimal("100"), 0)


async def test_status_mapping_and_processed_amount(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    fake, _ = praxis
    login, trader = await register_trader(client, "states@test.io")
    await open_session(client, trader, {"amount": "100", "currency": "USD"})
    await open_session(client, trader, {"amount": "40", "currency": "USD"})
    first, second = (body for _, body in fake.requests)
    seen = []

    for status in ("initialized", "pending", "authorized"):
        await notify(client, notification(first, payment(status, 1, 10000)))
        seen.append({t.cashier_id: t.status for t in await transactions_of(kernel, login)})
    # the customer changed the amount in the cashier: 80.00 was processed
    await notify(client, notification(first, payment("approved", 1, 8000)))
    await notify(client, notification(second, payment("rejected", 2, 4000)))
    late = await notify(client, notification(second, payment("approved", 2, 4000)))

    assert [s[first["order_id"]] for s in seen] == ["PENDING", "PROCESSING", "IN_PROGRESS"]
    txs = {t.cashier_id: t for t in await transactions_of(kernel, login)}
    assert (txs[first["order_id"]].status, txs[first["order_id"]].amount) == ("APPROVED", 80)
    assert txs[second["order_id"]].status == "REJECT"
    assert late[0] == 200  # acknowledged (Praxis stops resending) but not applied
    assert await balance(kernel, login) == (Decimal("80.00"), 0)
    staff = await staff_headers(client)
    response = await client.get(
        f"/api/backoffice/transactions/{txs[second['order_id']].id}", headers=staff
    )
    outcomes = sorted(c["outcome"] for c in (await response.json())["callbacks"])
    assert outcomes == ["applied", "conflict"]


async def test_refund_and_chargeback_notifications(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    fake, _ = praxis
    login, trader = await register_trader(client, "refund@test.io")
    await open_session(client, trader, {"amount": "300", "currency": "USD"})
    sent = fake.requests[0][1]
    await notify(client, notification(sent, payment("approved", 10, 30000)))
    refund = notification(
        sent, {**payment("partial_refund", 11, 5000), "transaction_type": "refund"}
    )

    await notify(client, refund)
    await notify(client, refund)  # replayed: recorded once
    await notify(client, notification(sent, payment("chargeback", 12, 30000)))

    txs = await transactions_of(kernel, login)
    assert sorted((t.type, t.status, t.amount) for t in txs) == [
        ("CHARGEBACK", "APPROVED", -300),
        ("DEPOSIT", "APPROVED", 300),
        ("WITHDRAWAL", "APPROVED", -50),
    ]
    assert [r.event_type for r in await ledger_rows(kernel, login)] == [
        "deposit",
        "withdrawal",
        "chargeback",
    ]
    assert await balance(kernel, login) == (Decimal("-50.00"), 0)


async def test_find_order_reconciles_a_missed_notification(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    fake, _ = praxis
    staff = await staff_headers(client)
    login, trader = await register_trader(client, "reconcile@test.io")
    opened = await open_session(client, trader, {"amount": "75.50", "currency": "USD"})
    fake.transactions[opened["cashier_id"]] = payment("approved", 42, 7550)
    url = f"/api/backoffice/transactions/{opened['transaction_id']}/reconcile"

    response = await client.post(url, headers=staff)
    body = await response.json(loads=loads)
    again = await (await client.post(url, headers=staff)).json()

    assert fake.requests[-1][0] == "/agent/find-order"
    assert fake.requests[-1][1]["order_id"] == opened["cashier_id"]
    assert (response.status, body["outcome"], body["transaction"]["status"]) == (
        200,
        "applied",
        "APPROVED",
    )
    assert again["outcome"] == "duplicate"
    assert await balance(kernel, login) == (Decimal("75.50"), 0)


async def test_withdrawal_session_limits_and_provider_failures(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    fake, _ = praxis
    staff = await staff_headers(client)
    login, trader = await register_trader(client, "payout@test.io")
    await deposit(client, staff, login, "100")

    too_much = await open_session(
        client, trader, {"amount": "100.01", "currency": "USD", "direction": "withdrawal"}, 422
    )
    payout = await open_session(
        client, trader, {"amount": "60", "currency": "USD", "direction": "withdrawal"}
    )
    fake.bad_signature = True
    forged = await open_session(client, trader, {"amount": "10", "currency": "USD"}, 502)
    fake.bad_signature, fake.fail = False, True
    down = await open_session(client, trader, {"amount": "10", "currency": "USD"}, 502)

    assert too_much == {
        "detail": [
            {
                "loc": ["body", "amount"],
                "msg": "exceeds the withdrawable amount 100.00 USD",
                "type": "maximum",
            }
        ]
    }
    assert fake.requests[0][1]["intent"] == "withdrawal"
    assert forged == {
        "detail": "praxis: /cashier/cashier response: invalid GT-Authentication signature"
    }
    assert down == {"detail": "praxis: HTTP 503 from /cashier/cashier"}
    txs = {t.id: t for t in await transactions_of(kernel, login)}
    assert txs[payout["transaction_id"]].status == "PENDING"
    assert sorted(t.status for t in txs.values() if t.source == "cashier") == [
        "DECLINE",
        "DECLINE",
        "PENDING",
    ]
    assert await balance(kernel, login) == (Decimal("100.00"), 0)


async def test_frozen_customers_cannot_open_deposits(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    client, kernel = app
    staff = await staff_headers(client)
    login, trader = await register_trader(client, "frozen@test.io")
    first = await deposit(client, staff, login, "10")
    assert (await charge_back(client, staff, first["id"]))["account_frozen"] is False
    await transaction(client, staff, login, "CORRECTION_OUT", "1", status="APPROVED")
    second = await deposit(client, staff, login, "5")
    assert (await charge_back(client, staff, second["id"]))["account_frozen"] is True

    refused = await open_session(client, trader, {"amount": "50", "currency": "USD"}, 403)
    assert refused == {"detail": "Account is frozen: deposits are not allowed"}
    assert await compliance_status(kernel, login) == "frozen"
    assert praxis[0].requests == []


async def test_concurrent_deliveries_of_one_notification_move_money_once(
    app: tuple[Client, Kernel], praxis: tuple[FakePraxis, TestServer]
) -> None:
    """Praxis retries while the first delivery is still being handled: the
    transaction row lock (PostgreSQL) / single writer (SQLite) lets one apply it."""
    client, kernel = app
    fake, _ = praxis
    login, trader = await register_trader(client, "burst@test.io")
    await open_session(client, trader, {"amount": "42.42", "currency": "USD"})
    document = notification(fake.requests[0][1], payment("approved", 5, 4242))

    results = await asyncio.gather(*(notify(client, document) for _ in range(10)))

    assert [status for status, _, _ in results] == [200] * 10
    assert [(r.event_type, r.balance_delta) for r in await ledger_rows(kernel, login)] == [
        ("deposit", Decimal("42.42"))
    ]
    staff = await staff_headers(client)
    (tx,) = await transactions_of(kernel, login)
    response = await client.get(f"/api/backoffice/transactions/{tx.id}", headers=staff)
    outcomes = sorted(c["outcome"] for c in (await response.json())["callbacks"])
    assert outcomes == ["applied"] + ["duplicate"] * 9
