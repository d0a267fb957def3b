"""The Stripe connector: the official SDK against a local fake Stripe API answering
with Stripe's own fixture objects (../shared/data/vendor/stripe-fixtures3.json);
webhooks signed as Stripe signs them (``Stripe-Signature``, CONNECTORS.md)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import stripe
from aiohttp.test_utils import TestServer
from connector_support import post_webhook, serve
from money_support import balance, json_body, ledger_rows, payment_app, transactions_of
from stripe_support import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, event, signature
from support import register_trader, staff_headers

from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.runtime import Kernel

Client = Any


@pytest.fixture
async def stripe_api(aiohttp_server: Any) -> tuple[FakeStripe, TestServer]:
    return await serve(aiohttp_server, FakeStripe())


@pytest.fixture
async def app(
    stripe_api: tuple[FakeStripe, TestServer],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, Kernel]:
    base = str(stripe_api[1].make_url("")).rstrip("/")
    extra = f"""
[kernel.payments]
default_gateway = "stripe"

[plugins.stripe]
secret_key = "{SECRET_KEY}"
webhook_secret = "{WEBHOOK_SECRET}"
publishable_key = "pk_test_51Broker"
api_base = "{base}"
"""
    return await payment_app(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, extra
    )


async def deliver(client: Client, payload: str, header: str | None) -> tuple[int, Any]:
    signed = None if header is None else ("Stripe-Signature", header)
    status, body, _ = await post_webhook(client, "/integrations/webhooks/stripe", payload, signed)
    return status, body


async def open_intent(client: Client, trader: dict[str, str], amount: str) -> dict[str, Any]:
    """A Stripe session for ``amount`` USD: the answer plus its PaymentIntent id as
    ``reference``."""
    response = await client.post(
        "/payments/session", json={"amount": amount, "currency": "USD"}, headers=trader
    )
    opened = await json_body(response, 201)
    opened["reference"] = opened["token"].split("_secret")[0]
    return opened


async def paid_deposit(
    client: Client, fake: FakeStripe, amount: str = "200.00"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A trader, a Stripe session for ``amount`` USD and its succeeded webhook."""
    login, trader = await register_trader(client, f"stripe{len(fake.intents)}@test.io")
    opened = await open_intent(client, trader, amount)
    payload = event("payment_intent.succeeded", fake.succeed(opened["reference"]))
    assert (await deliver(client, payload, signature(payload)))[0] == 200
    return login, opened, trader


async def test_session_creates_a_payment_intent_through_the_sdk(
    app: tuple[Client, Kernel], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel = app
    fake, _ = stripe_api
    login, trader = await register_trader(client, "elements@test.io")

    response = await client.post(
        "/payments/session", json={"amount": "199.00", "currency": "USD"}, headers=trader
    )
    body = await response.json()

    path, form, headers = fake.requests[0]
    (tx,) = await transactions_of(kernel, login)
    assert response.status == 201
    assert body == {
        "transaction_id": tx.id,
        "cashier_id": tx.cashier_id,
        "gateway": "stripe",
        "type": "embed",
        "redirect_url": None,
        "token": "pi_test_1_secret_abc",
        "publishable_key": "pk_test_51Broker",
    }
    assert path == "/v1/payment_intents"
    assert form == {
        "amount": "19900",
        "currency": "usd",
        "automatic_payment_methods[enabled]": "true",
        "receipt_email": "elements@test.io",
        "metadata[cashier_id]": tx.cashier_id,
        "metadata[login]": str(login),
        "metadata[customer_id]": form["metadata[customer_id]"],
    }
    assert headers["Idempotency-Key"] == tx.cashier_id
    assert (tx.status, tx.gateway_reference, tx.amount) == ("PENDING", "pi_test_1", 199)


async def test_webhook_signatures_valid_tampered_stale_missing_and_multiple_v1(
    app: tuple[Client, Kernel], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel = app
    fake, _ = stripe_api
    login, trader = await register_trader(client, "sig@test.io")
    intent_id = (await open_intent(client, trader, "50"))["reference"]
    payload = event("payment_intent.succeeded", fake.succeed(intent_id))
    good = signature(payload)
    t = good.split(",")[0]

    tampered = await deliver(
        client, payload.replace('"amount_received": 5000', '"amount_received": 9999'), good
    )
    stale = await deliver(client, payload, signature(payload, int(time.time()) - 301))
    missing = await deliver(client, payload, None)
    wrong_secret = await deliver(client, payload, signature(payload, secret="whsec_other"))
    only_v0 = await deliver(client, payload, good.replace("v1=", "v0="))
    assert await balance(kernel, login) == (0, 0)
    rotated = await deliver(client, payload, f"{t},v1={'0' * 64},{good.split(',')[1]}")
    replay = await deliver(client, payload, good)

    no_match = "Stripe-Signature: No signatures found matching the expected signature for payload"
    assert tampered == wrong_secret == (400, {"detail": no_match})
    assert stale[0] == 400
    assert stale[1]["detail"].startswith("Stripe-Signature: Timestamp outside the tolerance zone")
    assert missing == (400, {"detail": "missing Stripe-Signature header"})
    assert only_v0 == (
        400,
        {"detail": "Stripe-Signature: No signatures found with expected scheme v1"},
    )
    assert rotated == replay == (200, {"received": True})
    # the SDK's own verifier agrees with the signature the test computed
    assert (
        stripe.Webhook.construct_event(payload, good, WEBHOOK_SECRET).type
        == "payment_intent.succeeded"
    )
    assert [(r.event_type, r.balance_delta) for r in await ledger_rows(kernel, login)] == [
        ("deposit", 50)
    ]


async def test_intent_events_map_to_statuses_and_foreign_intents_are_ignored(
    app: tuple[Client, Kernel], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel = app
    fake, _ = stripe_api
    login, trader = await register_trader(client, "events@test.io")
    ids = [(await open_intent(client, trader, amount))["reference"] for amount in ("10", "20")]
    first, second = (fake.intents[i] for i in ids)
    foreign = {**copy.deepcopy(first), "id": "pi_other", "metadata": {}, "status": "succeeded"}

    deliveries = [
        event("payment_intent.processing", {**first, "status": "processing"}, "evt_a"),
        event(
            "payment_intent.payment_failed",
            {**second, "status": "requires_payment_method"},
            "evt_b",
        ),
        event("payment_intent.canceled", {**second, "status": "canceled"}, "evt_c"),
        event("payment_intent.succeeded", foreign, "evt_d"),
        event("customer.created", {"id": "cus_1", "object": "customer"}, "evt_e"),
    ]
    results = [await deliver(client, p, signature(p)) for p in deliveries]

    assert results == [(200, {"received": True})] * 5
    statuses = {t.gateway_reference: t.status for t in await transactions_of(kernel, login)}
    assert statuses == {ids[0]: "PROCESSING", ids[1]: "DECLINE"}
    assert await balance(kernel, login) == (0, 0)


async def test_refunds_through_the_api_and_their_limits(
    app: tuple[Client, Kernel], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel = app
    fake, _ = stripe_api
    staff = await staff_headers(client)
    login, opened, _ = await paid_deposit(client, fake, "200.00")
    url = f"/api/backoffice/transactions/{opened['transaction_id']}/refund"

    partial = await client.post(url, json={"amount": "50"}, headers=staff)
    partial_body = await partial.json(loads=loads)
    too_much = await client.post(url, json={"amount": "150.01"}, headers=staff)
    fake.refund_status = "failed"
    failed = await (await client.post(url, json={"amount": "10"}, headers=staff)).json()
    fake.refund_status, fake.refund_error = "succeeded", True
    refused = await client.post(url, json={"amount": "10"}, headers=staff)
    fake.refund_error = False
    rest = await (await client.post(url, json={}, headers=staff)).json(loads=loads)
    nothing_left = await client.post(url, json={}, headers=staff)

    refund_requests = [(form, h) for path, form, h in fake.requests if path == "/v1/refunds"]
    form, headers = refund_requests[0]
    assert partial.status == 201
    assert (partial_body["type"], partial_body["status"], partial_body["amount"]) == (
        "WITHDRAWAL",
        "APPROVED",
        -50,
    )
    assert partial_body["original_transaction_id"] == opened["transaction_id"]
    assert form == {
        "payment_intent": opened["reference"],
        "amount": "5000",
        "reason": "requested_by_customer",
        "metadata[cashier_id]": partial_body["cashier_id"],
    }
    assert headers["Idempotency-Key"] == partial_body["cashier_id"]
    assert (too_much.status, await too_much.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "amount"],
                    "msg": "must be > 0 and at most 150.00",
                    "type": "maximum",
                }
            ]
        },
    )
    assert failed["status"] == "DECLINE"
    assert (refused.status, await refused.json()) == (
        502,
        {"detail": "stripe: Charge has already been refunded."},
    )
    assert (rest["status"], rest["amount"]) == ("APPROVED", -150)
    assert nothing_left.status == 422
    assert await balance(kernel, login) == (0, 0)
    assert [r.balance_delta for r in await ledger_rows(kernel, login)] == [200, -50, -150]


async def test_dispute_charges_the_deposit_back_once(
    app: tuple[Client, Kernel], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel = app
    fake, _ = stripe_api
    login, opened, _ = await paid_deposit(client, fake, "80.00")
    dispute = {**copy.deepcopy(fake.resources["dispute"]), "payment_intent": opened["reference"]}
    payload = event("charge.dispute.created", dispute, "evt_dispute")

    first = await deliver(client, payload, signature(payload))
    replay = await deliver(client, payload, signature(payload))

    assert first == replay == (200, {"received": True})
    txs = sorted((t.type, t.amount) for t in await transactions_of(kernel, login))
    assert txs == [("CHARGEBACK", -80), ("DEPOSIT", 80)]
    assert await balance(kernel, login) == (0, 0)
