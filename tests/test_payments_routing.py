"""Payment routing and gateway resolution (seed section 9), the provider-agnostic
payment callback (section 8) and withdrawal approval rules (section 10)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from money_support import balance, ledger_rows, payment_app, staff_as, transaction
from support import CALLBACK_SECRET, register_trader, signed, staff_headers

from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.config import closed_schema, redact, validate_section
from brokerkernel.kernel.plugins import installed_entry_points
from brokerkernel.kernel.runtime import Kernel

Client = Any
GATEWAYS = f"""
[kernel.payments]
callback_secret = "{CALLBACK_SECRET}"

[plugins.praxis]
merchant_id = "API-Broker"
application_key = "Sandbox"
merchant_secret = "praxis-secret"
base_url = "http://127.0.0.1:9"
notification_url = "https://broker.test/webhooks/praxis"
return_url = "https://broker.test/cashier/done"

[plugins.bridgerpay]
user_name = "merchant@broker.test"
password = "bp-password"
api_key = "bp-api-key"
cashier_key = "ck_test"
base_url = "http://127.0.0.1:9"
"""


@pytest.fixture
async def app(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, Kernel]:
    return await payment_app(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, GATEWAYS
    )


async def call(client: Client, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    response = await client.request(method, url, **kwargs)
    text = await response.text()
    return response.status, loads(text) if text else None


async def test_available_gateways_list_enabled_and_installed_ones(
    app: tuple[Client, Kernel],
) -> None:
    client, _ = app
    staff = await staff_headers(client)
    status, body = await call(
        client, "GET", "/api/platform/payments/gateways/available", headers=staff
    )
    assert status == 200
    assert body == [
        {
            "id": "bridgerpay",
            "name": "BridgerPay",
            "type": "embed",
            "enabled": True,
            "directions": ["deposit"],
        },
        {
            "id": "praxis",
            "name": "Praxis",
            "type": "redirect",
            "enabled": True,
            "directions": ["deposit", "withdrawal"],
        },
        {
            "id": "stripe",
            "name": "Stripe",
            "type": "embed",
            "enabled": False,
            "directions": ["deposit"],
        },
    ]


async def test_routing_upsert_resolve_fallback_and_delete(app: tuple[Client, Kernel]) -> None:
    client, _ = app
    staff = await staff_headers(client)
    route = {"deposit_gateway": "bridgerpay", "withdrawal_gateway": "praxis", "note": "Brazil"}

    created = await call(
        client, "PUT", "/api/platform/payments/routing/BR", json=route, headers=staff
    )
    replaced = await call(
        client,
        "PUT",
        "/api/platform/payments/routing/BR",
        json={**route, "note": "BR"},
        headers=staff,
    )
    listed_status, listed = await call(client, "GET", "/payments/routing", headers=staff)
    deposit = await call(client, "GET", "/payments/gateway?country=BR")
    withdrawal = await call(client, "GET", "/payments/gateway?country=BR&direction=withdrawal")
    elsewhere = await call(client, "GET", "/payments/gateway?country=DE")

    assert (created[0], replaced[0], listed_status) == (201, 200, 200)
    assert [{k: v for k, v in r.items() if k != "updated_at"} for r in listed] == [
        {
            "country": "BR",
            "deposit_gateway": "bridgerpay",
            "withdrawal_gateway": "praxis",
            "is_active": True,
            "note": "BR",
        }
    ]
    assert listed[0]["updated_at"] == "2014-05-07T00:00:07.135000Z"
    assert deposit == (
        200,
        {
            "gateway": "bridgerpay",
            "country": "BR",
            "direction": "deposit",
            "type": "embed",
            "script_url": "https://embed.bridgerpay.com/connector.min.js",
            "cashier_key": "ck_test",
        },
    )
    assert withdrawal == (
        200,
        {"gateway": "praxis", "country": "BR", "direction": "withdrawal", "type": "redirect"},
    )
    assert elsewhere[1]["gateway"] == "praxis"

    await call(
        client,
        "PUT",
        "/api/platform/payments/routing/BR",
        json={**route, "is_active": False},
        headers=staff,
    )
    assert (await call(client, "GET", "/payments/gateway?country=BR"))[1]["gateway"] == "praxis"
    assert await call(client, "DELETE", "/api/platform/payments/routing/BR", headers=staff) == (
        204,
        None,
    )
    assert await call(client, "DELETE", "/api/platform/payments/routing/BR", headers=staff) == (
        404,
        {"detail": "No payment routing for BR"},
    )


async def test_routing_refuses_gateways_not_enabled_or_wrong_direction(
    app: tuple[Client, Kernel],
) -> None:
    client, kernel = app
    staff = await staff_headers(client)
    support = await staff_as(client, kernel, "support@broker.test", "support")
    url = "/api/platform/payments/routing/BR"

    status, body = await call(
        client,
        "PUT",
        url,
        json={"deposit_gateway": "stripe", "withdrawal_gateway": "bridgerpay"},
        headers=staff,
    )
    forbidden = await call(
        client,
        "PUT",
        url,
        json={"deposit_gateway": "praxis", "withdrawal_gateway": "praxis"},
        headers=support,
    )
    bad_country = await call(
        client,
        "PUT",
        "/api/platform/payments/routing/brazil",
        json={"deposit_gateway": "praxis", "withdrawal_gateway": "praxis"},
        headers=staff,
    )

    assert (status, body) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "deposit_gateway"],
                    "msg": "gateway 'stripe' is not enabled (enabled: bridgerpay, praxis)",
                    "type": "gateway",
                },
                {
                    "loc": ["body", "withdrawal_gateway"],
                    "msg": "bridgerpay cannot process withdrawals",
                    "type": "gateway",
                },
            ]
        },
    )
    assert forbidden == (403, {"detail": "Missing permission: manage_payment_routing"})
    assert bad_country == (
        422,
        {
            "detail": [
                {"loc": ["path", "country"], "msg": "must be ISO 3166-1 alpha-2", "type": "pattern"}
            ]
        },
    )
    assert (await call(client, "GET", "/payments/routing", headers=staff))[1] == []


async def test_resolve_validates_the_query(app: tuple[Client, Kernel]) -> None:
    client, _ = app
    assert await call(client, "GET", "/payments/gateway") == (
        422,
        {
            "detail": [
                {
                    "loc": ["query", "country"],
                    "msg": "'country' is a required property",
                    "type": "required",
                }
            ]
        },
    )
    status, body = await call(client, "GET", "/payments/gateway?country=br&direction=up")
    assert status == 422
    assert [e["loc"] for e in body["detail"]] == [["query", "country"], ["query", "direction"]]


async def test_without_payment_connectors_resolve_is_503_and_callbacks_404(
    client: Client,
) -> None:
    assert await call(client, "GET", "/payments/gateway?country=DE") == (
        503,
        {"detail": "No payment gateway is available for deposits from DE"},
    )
    # without [kernel.payments] callback_secret the callback endpoint does not exist
    request = signed({"cashier_id": "ext-9", "status": "APPROVED"})
    assert await call(client, "POST", "/transactions/payment-callback", **request) == (
        404,
        {"detail": "Not Found"},
    )


async def test_cashier_transactions_are_idempotent_on_cashier_id(
    app: tuple[Client, Kernel],
) -> None:
    client, _ = app
    staff = await staff_headers(client)
    login, _ = await register_trader(client, "cashier@test.io")
    body = {
        "login": login,
        "type": "DEPOSIT",
        "amount": "250",
        "currency": "USD",
        "cashier_id": "ext-7",
        "gate_name": "acquirer-x",
        "gateway_reference": "psp-991",
    }
    first = await call(
        client, "POST", "/api/backoffice/transactions/cashier", json=body, headers=staff
    )
    second = await call(
        client, "POST", "/transactions/cashier", json={**body, "amount": "999"}, headers=staff
    )

    assert first[0] == 201 and second[0] == 200
    assert second[1] == first[1]
    assert (first[1]["source"], first[1]["status"], first[1]["gateway_reference"]) == (
        "cashier",
        "PENDING",
        "psp-991",
    )


async def test_payment_callback_applies_once_and_reports_conflicts(
    app: tuple[Client, Kernel],
) -> None:
    client, kernel = app
    staff = await staff_headers(client)
    login, _ = await register_trader(client, "callback@test.io")
    body = {
        "login": login,
        "type": "DEPOSIT",
        "amount": "100",
        "currency": "EUR",
        "cashier_id": "ext-8",
    }
    created = await call(
        client, "POST", "/api/backoffice/transactions/cashier", json=body, headers=staff
    )
    assert created[1]["account_amount"] == Decimal("139.29")  # 100 x 1.39292
    approved = {
        "cashier_id": "ext-8",
        "status": "APPROVED",
        "gateway_payload": {"psp": "acquirer-x", "amount": 90.0},
        "amount": "90",
        "currency": "EUR",
        "reference": "psp-1",
    }
    request = signed(approved, "msg_approved")

    first = await call(client, "POST", "/transactions/payment-callback", **request)
    replay = await call(client, "POST", "/transactions/payment-callback", **request)
    conflict = await call(
        client,
        "POST",
        "/transactions/payment-callback",
        **signed({"cashier_id": "ext-8", "status": "DECLINE"}),
    )
    unknown = await call(
        client,
        "POST",
        "/transactions/payment-callback",
        **signed({"cashier_id": "nope", "status": "DECLINE"}),
    )
    chargeback = signed({"cashier_id": "ext-8", "status": "CHARGEBACK"}, "msg_cb")
    charged = await call(client, "POST", "/transactions/payment-callback", **chargeback)
    charged_again = await call(client, "POST", "/transactions/payment-callback", **chargeback)

    tx_id = created[1]["id"]
    assert first == (
        200,
        {
            "cashier_id": "ext-8",
            "transaction_id": tx_id,
            "status": "APPROVED",
            "outcome": "applied",
        },
    )
    assert replay == (200, {**first[1], "outcome": "duplicate"})
    assert conflict == (
        409,
        {"detail": "Callback conflicts with the transaction: transaction is APPROVED"},
    )
    assert unknown == (404, {"detail": "Transaction not found"})
    assert (charged[1]["outcome"], charged_again[1]["outcome"]) == ("applied", "duplicate")
    # the provider processed 90 EUR: at the transaction's rate 90 x 1.3929 = 125.36 USD
    rows = await ledger_rows(kernel, login)
    assert [(r.event_type, r.balance_delta) for r in rows] == [
        ("deposit", Decimal("125.36")),
        ("chargeback", Decimal("-125.36")),
    ]
    single_status, single = await call(
        client, "GET", f"/api/backoffice/transactions/{tx_id}", headers=staff
    )
    assert single_status == 200
    assert (single["amount"], single["account_amount"], single["gateway_reference"]) == (
        90,
        Decimal("125.36"),
        "psp-1",
    )
    assert sorted(c["outcome"] for c in single["callbacks"]) == [
        "applied",
        "applied",
        "conflict",
        "duplicate",
        "duplicate",
    ]
    assert {c["gateway"] for c in single["callbacks"]} == {"internal"}
    assert await balance(kernel, login) == (0, 0)


async def test_payment_callback_refuses_bad_signatures(app: tuple[Client, Kernel]) -> None:
    with_secret, _ = app
    body = {"cashier_id": "ext-9", "status": "APPROVED"}
    tampered = signed(body)
    tampered["data"] = json.dumps({**body, "status": "REFUND"})
    stale = signed(body)
    stale["headers"]["webhook-timestamp"] = str(int(time.time()) - 301)
    wrong_key = signed(body, secret="whsec_" + "A" * 32)
    missing = {"json": body}

    for request in (tampered, stale, wrong_key, missing):
        assert await call(with_secret, "POST", "/transactions/payment-callback", **request) == (
            401,
            {"detail": "Invalid signature"},
        )


async def test_withdrawal_approval_rules_crud_and_effect(app: tuple[Client, Kernel]) -> None:
    client, kernel = app
    staff = await staff_headers(client)
    compliance = await staff_as(client, kernel, "compliance@broker.test", "compliance")
    login, _ = await register_trader(client, "bigwd@test.io")
    await transaction(client, staff, login, "DEPOSIT", "90000", status="APPROVED")
    rules_url = "/api/platform/withdrawal-approval-rules"

    status, defaults = await call(client, "GET", rules_url, headers=staff)
    assert status == 200
    assert [(r["min_amount_usd"], r["max_amount_usd"], r["required_role"]) for r in defaults] == [
        (0, 1000, "agent"),
        (1000, 10000, "manager"),
        (10000, None, "compliance"),
    ]

    created = await call(
        client,
        "POST",
        rules_url,
        json={"min_amount_usd": 50000, "max_amount_usd": None, "required_role": "admin"},
        headers=staff,
    )
    assert created[0] == 201
    big = await transaction(client, staff, login, "WITHDRAWAL", "60000")
    refused = await call(
        client, "PATCH", f"/api/backoffice/transactions/{big['id']}/approve", headers=compliance
    )
    assert refused == (
        403,
        {
            "detail": "Withdrawal of 60000.00 USD requires role admin or higher "
            "(withdrawal approval rules); your role is compliance"
        },
    )
    rule_url = f"{rules_url}/{created[1]['id']}"
    updated = await call(
        client,
        "PUT",
        rule_url,
        json={"min_amount_usd": 70000, "required_role": "admin"},
        headers=staff,
    )
    assert (updated[0], updated[1]["min_amount_usd"]) == (200, 70000)
    assert await call(client, "DELETE", rule_url, headers=staff) == (204, None)
    listed = (await call(client, "GET", "/withdrawal-approval-rules", headers=staff))[1]
    assert [r["id"] for r in listed] == [r["id"] for r in defaults]
    approved = await call(
        client, "PATCH", f"/api/backoffice/transactions/{big['id']}/approve", headers=compliance
    )
    assert approved[1]["status"] == "APPROVED"

    assert await call(
        client,
        "POST",
        rules_url,
        json={"min_amount_usd": "-1", "max_amount_usd": "-5", "required_role": "ghost"},
        headers=staff,
    ) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "min_amount_usd"],
                    "msg": "must be greater than or equal to 0",
                    "type": "minimum",
                },
                {
                    "loc": ["body", "max_amount_usd"],
                    "msg": "must be greater than min_amount_usd",
                    "type": "band",
                },
                {"loc": ["body", "required_role"], "msg": "must be an active role", "type": "role"},
            ]
        },
    )
    missing = f"{rules_url}/7a1c0e52-4d0b-4f7e-9a10-00000000beef"
    assert await call(
        client, "PUT", missing, json={"min_amount_usd": 1, "required_role": "admin"}, headers=staff
    ) == (404, {"detail": "Withdrawal approval rule not found"})
    assert await call(
        client,
        "POST",
        rules_url,
        json={"min_amount_usd": 1, "required_role": "agent"},
        headers=compliance,
    ) == (
        403,
        {"detail": "Missing permission: manage_broker_config"},
    )


@pytest.mark.parametrize(
    ("plugin", "config", "secrets"),
    [
        (
            "praxis",
            {
                "merchant_id": "m",
                "application_key": "a",
                "merchant_secret": "s3cret",
                "notification_url": "https://b.test/webhooks/praxis",
                "return_url": "https://b.test/",
            },
            {"merchant_secret"},
        ),
        (
            "bridgerpay",
            {"user_name": "u", "password": "pw", "api_key": "k", "cashier_key": "ck"},
            {"password", "api_key"},
        ),
        (
            "stripe",
            {"secret_key": "sk_test_1", "webhook_secret": "whsec_1", "publishable_key": "pk_1"},
            {"secret_key", "webhook_secret"},
        ),
    ],
)
def test_connector_configs_validate_and_redact_their_credentials(
    plugin: str, config: dict[str, Any], secrets: set[str]
) -> None:
    schema = closed_schema(installed_entry_points()[plugin].load().CONFIG_SCHEMA)
    where = f"plugins.toml: [plugins.{plugin}]"

    values, errors = validate_section(schema, config, where, {})
    shown = redact(schema, values)
    _, missing = validate_section(schema, {}, where, {})

    assert errors == []
    assert {k for k, v in shown.items() if v == "***"} == secrets
    assert missing == [f"{where} {key}: '{key}' is a required property" for key in sorted(config)]
