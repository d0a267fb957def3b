"""FXPropTech-style partner API (plugin ``fxproptech``): ``/v1`` traders, evaluations,
payouts and the ``/v1/trades/stream`` WebSocket, driven over HTTP with real partner
OAuth2 tokens (seed ``fxproptech-rest-api.txt``)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient
from conftest import Backends
from identity_helpers import partner_client, partner_tenant
from openapi_spec_validator import OpenAPIV31SpecValidator
from sqlalchemy import select
from support import DAY_START_MS, make_kernel, tick

from brokerkernel.api.app import create_app
from brokerkernel.api.jsonio import dumps
from brokerkernel.kernel.customers import KycResult, record_kyc
from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.identity.seed import PARTNER_SCOPES
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.plugins.challenges.service import (
    TRADER_EMAIL_REFUSED,
    TraderSpec,
    challenge_service,
)
from brokerkernel.plugins.fxproptech.onboarding import Onboarding, message_id
from brokerkernel.plugins.fxproptech.stream import TRADE_HUB, TradeClient

Client = TestClient[Any, Any]
Headers = dict[str, str]

PLUGINS = (
    "[plugins.challenges]\n[plugins.max_loss]\n[plugins.fxproptech]\nstream_heartbeat_s = 3600\n"
)
MAX_LOSS = {"type": "max_loss", "params": {"model": "static", "percent": 10}}
UNKNOWN = "prop_does_not_exist"
UNKNOWN_PLAN = "plan_does_not_exist"
INSUFFICIENT = {"detail": "insufficient_scope"}
STREAM = "/v1/trades/stream"
DAY = 86_400_000

#: Every REST route: (method, path, scope, status with only that scope for an unknown
#: id / an empty body).
ENDPOINTS = (
    ("GET", "/v1/traders", "accounts:read", 200),
    ("POST", "/v1/traders", "accounts:write", 422),
    ("GET", f"/v1/traders/{UNKNOWN}", "accounts:read", 404),
    ("PATCH", f"/v1/traders/{UNKNOWN}", "accounts:write", 422),
    ("GET", f"/v1/evaluations/{UNKNOWN}", "accounts:read", 404),
    ("POST", "/v1/evaluations", "accounts:write", 422),
    ("POST", f"/v1/evaluations/{UNKNOWN}/pass", "accounts:write", 404),
    ("POST", "/v1/accounts", "accounts:write", 422),
    ("GET", f"/v1/rules/{UNKNOWN_PLAN}", "plans:read", 404),
    ("PUT", f"/v1/rules/{UNKNOWN_PLAN}", "plans:write", 404),
    ("DELETE", f"/v1/evaluations/{UNKNOWN}", "accounts:write", 404),
    ("GET", "/v1/payouts", "payouts:read", 200),
    ("POST", "/v1/payouts/approve", "payouts:write", 422),
    ("POST", "/v1/payouts/reject", "payouts:write", 422),
)


@pytest.fixture
async def kernel(
    tmp_path: Path, database_url: str, redis_url: str | None, market_data_dir: Path
) -> Kernel:
    """The test kernel with the challenges and fxproptech plugins enabled."""
    return make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=PLUGINS)


async def partner(kernel: Kernel, tenant_id: str, scopes: Any = PARTNER_SCOPES) -> Headers:
    return (await partner_client(kernel, tenant_id, scopes))[1]


async def call(
    client: Client, method: str, path: str, headers: Headers, json: Any = None, status: int = 200
) -> Any:
    response = await client.request(method, path, json=json, headers=headers)
    body = await response.json()
    assert response.status == status, (response.status, body)
    return body


async def plan(
    kernel: Kernel, tenant_id: str | None, code: str, phases: int = 1, rules: Any = ()
) -> str:
    created = await challenge_service(kernel).create_plan(
        {
            "code": code,
            "name": f"{code} challenge",
            "account_size": 100000,
            "currency": "USD",
            "phases": [{"name": f"phase_{n + 1}", "rules": list(rules)} for n in range(phases)],
            "payout_first_after_days": 0,
        },
        tenant_id=tenant_id,
    )
    return str(created["id"])


def trader_body(plan_id: str, email: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "first_name": "Tess",
        "last_name": "Trader",
        "plan_id": plan_id,
        **extra,
    }


async def outbox(kernel: Kernel, type_: str) -> list[OutboxEvent]:
    async with kernel.db.read() as session:
        query = select(OutboxEvent).where(OutboxEvent.type == type_).order_by(OutboxEvent.seq)
        return list(await session.scalars(query))


async def test_every_route_needs_its_scope_and_a_prop_firm_tenant(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "off", enabled=False)
    off = await partner(kernel, "off")
    for method, path, scope, allowed in ENDPOINTS:
        only = await partner(kernel, "acme", [scope])
        others = await partner(kernel, "acme", [s for s in PARTNER_SCOPES if s != scope])
        response = await client.request(method, path, json={}, headers=only)
        assert response.status == allowed, (method, path, await response.text())
        response = await client.request(method, path, json={}, headers=others)
        assert (response.status, await response.json()) == (403, INSUFFICIENT), (method, path)
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer error="insufficient_scope", scope="{scope}"'
        )
        response = await client.request(method, path, json={}, headers=off)
        assert (response.status, await response.json()) == (
            403,
            {"detail": "prop_firm_not_enabled"},
        )
        response = await client.request(method, path, json={})
        assert (response.status, await response.json()) == (
            401,
            {"detail": "Missing or invalid Authorization header"},
        )


async def test_a_traders_kyc_status_is_its_customers_latest_result(
    client: Client, kernel: Kernel
) -> None:
    """Detail and list show the customer's KYC status (``not_started`` until a
    result); without ``[kernel.kyc] webhook_secret`` the webhook does not exist."""
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-KYC")
    body = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "kyc@acme.io"), 201)
    assert body["kyc_status"] == "not_started"
    result = KycResult(body["customer_id"], "sumsub", "resubmission_requested")
    await record_kyc(kernel.db, kernel.clock.now(), result, kernel.extensions.values())
    detail = await call(client, "GET", f"/v1/traders/{body['id']}", acme)
    listed = await call(client, "GET", "/v1/traders", acme)
    assert (detail["kyc_status"], listed["items"][0]["kyc_status"]) == (
        "resubmission_requested",
        "resubmission_requested",
    )
    response = await client.post("/webhooks/kyc", json={})
    assert (response.status, await response.json()) == (404, {"detail": "Not Found"})


async def test_create_trader_provisions_an_evaluation_and_an_onboarding_message(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-100K")

    body = await call(
        client, "POST", "/v1/traders", acme, trader_body(plan_id, "tess@acme.io"), 201
    )
    assert body["id"].startswith("prop_")
    assert {k: body[k] for k in ("email", "first_name", "last_name", "kyc_status")} == {
        "email": "tess@acme.io",
        "first_name": "Tess",
        "last_name": "Trader",
        "kyc_status": "not_started",
    }
    assert (body["status"], body["plan_id"], body["tier"]) == ("active", plan_id, None)
    assert (body["balance"], body["equity"], body["pnl"], body["currency"]) == (
        100000,
        100000,
        0,
        "USD",
    )
    assert body["evaluation"] == {"id": body["id"], "phase": "phase_1", "status": "active"}
    assert await call(client, "GET", f"/v1/traders/{body['id']}", acme) == body

    await kernel.relay.drain()
    await wait_for_outbox(kernel, "message.onboarding")
    (created,) = await outbox(kernel, "trader.created")
    (account,) = await outbox(kernel, "account.created")
    (message,) = await outbox(kernel, "message.onboarding")
    assert created.payload["customer_id"] == body["customer_id"]
    assert account.payload["source"] == "fxproptech"
    assert message.id == message_id(account.id)
    assert message.payload == {
        "tenant_id": "acme",
        "account_id": body["id"],
        "trader_id": body["id"],
        "login": body["login"],
        "plan_id": plan_id,
        "phase": "phase_1",
        "customer_id": body["customer_id"],
        "email": "tess@acme.io",
        "first_name": "Tess",
        "last_name": "Trader",
        "channel": "email",
        "template": "fxproptech.onboarding",
    }
    # The bus delivers at least once: a redelivery sends nothing twice.
    event = DomainEvent(account.id, account.type, account.payload, account.occurred_at)
    await Onboarding(kernel).on_event(event)
    assert len(await outbox(kernel, "message.onboarding")) == 1


async def wait_for_outbox(kernel: Kernel, type_: str) -> None:
    """The bus is asynchronous with Redis: wait (bounded) for an event row to appear."""
    for _ in range(200):
        if await outbox(kernel, type_):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {type_} event was written")


async def test_patch_trader_status_tier_and_risk_limits(client: Client, kernel: Kernel) -> None:
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-100K", rules=[MAX_LOSS])
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)
    path = f"/v1/traders/{trader['id']}"
    evaluation = f"/v1/evaluations/{trader['id']}"
    (rule,) = (await call(client, "GET", evaluation, acme))["rules"]
    assert (rule["rule"], rule["status"], rule["numbers"]["floor"]) == (
        "max_loss",
        "pass",
        "90000.00",
    )

    limits = {"max_loss": {"percent": 12}}
    body = await call(
        client,
        "PATCH",
        path,
        acme,
        {"status": "suspended", "tier": "gold", "risk_limits": limits},
    )
    assert (body["status"], body["tier"], body["risk_limits"]) == ("suspended", "gold", limits)
    (rule,) = (await call(client, "GET", evaluation, acme))["rules"]
    assert rule["numbers"]["floor"] == "88000.00"
    errors = await call(
        client, "PATCH", path, acme, {"risk_limits": {"max_loss": {"percent": "a"}}}, 422
    )
    assert errors == {
        "detail": [
            {
                "loc": ["body", "risk_limits", "max_loss", "percent"],
                "msg": "'a' is not of type 'number'",
                "type": "type",
            }
        ]
    }
    assert (await call(client, "GET", path, acme))["status"] == "suspended"
    body = await call(client, "PATCH", path, acme, {"status": "active", "tier": None})
    assert (body["status"], body["tier"]) == ("active", None)

    errors = await call(
        client, "PATCH", path, acme, {"status": "closed", "tier": "", "risk_limits": []}, 422
    )
    assert [(e["loc"], e["type"]) for e in errors["detail"]] == [
        (["body", "risk_limits"], "type"),
        (["body", "status"], "enum"),
        (["body", "tier"], "minLength"),
    ]
    assert (await call(client, "PATCH", path, acme, {}, 422))["detail"][0]["type"] == (
        "minProperties"
    )


async def test_list_traders_filters_by_status_plan_and_dates_with_pagination(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    small = await plan(kernel, "acme", "ACME-50K")
    large = await plan(kernel, "acme", "ACME-200K")
    ids = []
    for day, (plan_id, email) in enumerate(
        [(small, "a@a.io"), (small, "b@a.io"), (large, "c@a.io"), (small, "d@a.io")]
    ):
        tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + (day + 1) * DAY)
        body = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, email), 201)
        ids.append(body["id"])
    await call(client, "PATCH", f"/v1/traders/{ids[1]}", acme, {"status": "suspended"})

    async def listed(query: str) -> tuple[list[str], int]:
        page = await call(client, "GET", f"/v1/traders{query}", acme)
        return [t["id"] for t in page["items"]], page["total"]

    assert await listed("") == (ids[::-1], 4)
    assert await listed("?limit=2") == (ids[:1:-1], 4)
    assert await listed("?limit=2&offset=2") == ([ids[1], ids[0]], 4)
    assert await listed("?status=suspended") == ([ids[1]], 1)
    assert await listed(f"?plan={large}") == ([ids[2]], 1)
    assert await listed(f"?plan={small}&status=active") == ([ids[3], ids[0]], 2)
    assert await listed("?created_from=2014-05-09&created_to=2014-05-10") == (
        [ids[2], ids[1]],
        2,
    )
    assert await listed("?created_from=2014-05-10T00:00:00Z") == ([ids[3], ids[2]], 2)
    errors = await call(client, "GET", "/v1/traders?created_to=2014-02-30", acme, status=422)
    assert [(e["loc"], e["type"]) for e in errors["detail"]] == [
        (["query", "created_to"], "format")
    ]
    page = await call(client, "GET", "/v1/traders?limit=1&offset=3", acme)
    assert (page["limit"], page["offset"], page["total"]) == (1, 3, 4)

    errors = await call(
        client,
        "GET",
        "/v1/traders?status=gone&limit=0&offset=x&created_from=soon",
        acme,
        status=422,
    )
    assert sorted((e["loc"][1], e["type"]) for e in errors["detail"]) == [
        ("created_from", "pattern"),
        ("limit", "minimum"),
        ("offset", "type"),
        ("status", "enum"),
    ]


async def test_a_partner_never_sees_another_partners_traders(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "beta")
    acme, beta = await partner(kernel, "acme"), await partner(kernel, "beta")
    acme_plan = await plan(kernel, "acme", "ACME-100K")
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(acme_plan, "t@a.io"), 201)
    assert (await call(client, "GET", "/v1/traders", beta))["items"] == []
    for method, path in (
        ("GET", f"/v1/traders/{trader['id']}"),
        ("GET", f"/v1/evaluations/{trader['id']}"),
        ("POST", f"/v1/evaluations/{trader['id']}/pass"),
        ("DELETE", f"/v1/evaluations/{trader['id']}"),
    ):
        response = await client.request(method, path, headers=beta)
        assert response.status == 404, (method, path)
    await call(client, "PATCH", f"/v1/traders/{trader['id']}", beta, {"tier": "x"}, 404)
    # Beta can neither provision on Acme's plan nor for Acme's trader.
    await call(client, "POST", "/v1/traders", beta, trader_body(acme_plan, "b@b.io"), 404)
    await call(
        client,
        "POST",
        "/v1/evaluations",
        beta,
        {"plan_id": acme_plan, "payment_reference": "pi_1", "trader_id": trader["id"]},
        404,
    )
    # nor attach to Acme's trader by email, on its own plan either (issue 7)
    beta_plan = await plan(kernel, "beta", "BETA-100K")
    refused = {"detail": TRADER_EMAIL_REFUSED}
    body = trader_body(beta_plan, "T@A.io")
    assert await call(client, "POST", "/v1/traders", beta, body, 409) == refused
    evaluation = {"plan_id": beta_plan, "payment_reference": "pi_2", "trader": {"email": "t@a.io"}}
    assert await call(client, "POST", "/v1/evaluations", beta, evaluation, 409) == refused
    assert (await call(client, "GET", "/v1/traders", beta))["total"] == 0
    # once the broker opens an account for Acme's trader, Acme no longer provisions for it
    await challenge_service(kernel).provision(
        await plan(kernel, None, "BK-100K"),
        TraderSpec(email="t@a.io", customer_id=trader["customer_id"]),
        tenant_id=None,
        source="backoffice",
    )
    again = {"plan_id": acme_plan, "payment_reference": "pi_3", "trader_id": trader["id"]}
    assert await call(client, "POST", "/v1/evaluations", acme, again, 422) == {
        "detail": [{"loc": ["body", "trader_id"], "msg": "unknown customer", "type": "customer"}]
    }


async def test_evaluations_are_provisioned_once_per_payment_then_passed_and_archived(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-2STEP", phases=2)
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)

    body = {"plan_id": plan_id, "payment_reference": "pi_123", "trader_id": trader["id"]}
    first = await call(client, "POST", "/v1/evaluations", acme, body, 201)
    again = await call(client, "POST", "/v1/evaluations", acme, body, 201)
    assert first["id"] == again["id"] != trader["id"]
    assert (await call(client, "GET", "/v1/traders", acme))["total"] == 2
    got = await call(client, "GET", f"/v1/evaluations/{first['id']}", acme)
    assert got == first
    assert (got["phase"], got["status"]) == ("phase_1", "active")
    assert got["customer_id"] == trader["customer_id"]

    new_trader = {
        "plan_id": plan_id,
        "payment_reference": "pi_456",
        "trader": {"email": "new@a.io", "first_name": "Nia"},
    }
    other = await call(client, "POST", "/v1/evaluations", acme, new_trader, 201)
    assert other["customer_id"] != trader["customer_id"]

    errors = await call(
        client, "POST", "/v1/evaluations", acme, {"trader_id": "x", "trader": {}}, 422
    )
    assert sorted(tuple(e["loc"]) for e in errors["detail"]) == [
        ("body",),
        ("body", "payment_reference"),
        ("body", "plan_id"),
        ("body", "trader", "email"),
    ]

    passed = await call(client, "POST", f"/v1/evaluations/{first['id']}/pass", acme)
    assert passed["phase"] == "phase_2"
    passed = await call(client, "POST", f"/v1/evaluations/{first['id']}/pass", acme)
    assert passed["phase"] == "funded"
    archived = await call(client, "DELETE", f"/v1/evaluations/{first['id']}", acme)
    assert archived["status"] == "archived"
    assert (await call(client, "GET", f"/v1/traders/{first['id']}", acme))["status"] == ("archived")


async def test_payouts_list_and_approve(client: Client, kernel: Kernel) -> None:
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "beta")
    acme, beta = await partner(kernel, "acme"), await partner(kernel, "beta")
    plan_id = await plan(kernel, "acme", "ACME-100K")
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)
    await call(client, "POST", f"/v1/evaluations/{trader['id']}/pass", acme)
    service = challenge_service(kernel)
    await service.balance_operation(
        trader["id"],
        tenant_id="acme",
        operation="adjust",
        amount=Decimal(5000),
        comment="profit",
        actor="test",
    )
    payout = await service.request_payout(
        trader["id"],
        tenant_id="acme",
        amount=Decimal(1000),
        destination={"type": "bank", "iban": "CZ6508000000192000145399"},
        execute=False,
        actor="test",
    )

    page = await call(client, "GET", "/v1/payouts?status=pending", acme)
    assert page["total"] == 1 and page["items"][0]["id"] == payout["id"]
    listed = page["items"][0]
    assert (listed["amount"], listed["trader_share"], listed["firm_share"]) == (1000, 800, 200)
    assert listed["destination"] == {"type": "bank", "iban": "CZ6508000000192000145399"}
    assert (await call(client, "GET", "/v1/payouts?status=processed", acme))["total"] == 0
    assert (await call(client, "GET", "/v1/payouts", beta))["total"] == 0
    await call(client, "POST", "/v1/payouts/approve", beta, {"payout_id": payout["id"]}, 404)

    approved = await call(client, "POST", "/v1/payouts/approve", acme, {"payout_id": payout["id"]})
    assert approved["status"] == "processed"
    page = await call(client, "GET", f"/v1/payouts?status=processed&trader_id={trader['id']}", acme)
    assert [p["id"] for p in page["items"]] == [payout["id"]]
    assert (await call(client, "GET", f"/v1/traders/{trader['id']}", acme))["balance"] == 104000
    errors = await call(client, "POST", "/v1/payouts/approve", acme, {"id": 1}, 422)
    assert [(e["loc"], e["type"]) for e in errors["detail"]] == [
        (["body", "payout_id"], "required"),
        (["body"], "additionalProperties"),
    ]


async def test_a_pending_payout_is_declined_with_a_reason(client: Client, kernel: Kernel) -> None:
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "beta")
    acme, beta = await partner(kernel, "acme"), await partner(kernel, "beta")
    plan_id = await plan(kernel, "acme", "ACME-100K")
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)
    await call(client, "POST", f"/v1/evaluations/{trader['id']}/pass", acme)
    service = challenge_service(kernel)
    await service.balance_operation(
        trader["id"],
        tenant_id="acme",
        operation="adjust",
        amount=Decimal(5000),
        comment="profit",
        actor="test",
    )
    payout = await service.request_payout(
        trader["id"],
        tenant_id="acme",
        amount=Decimal(1000),
        destination=None,
        execute=False,
        actor="test",
    )
    reject = {"payout_id": payout["id"], "reason": "Consistency rule not met"}
    errors = await call(client, "POST", "/v1/payouts/reject", acme, {"payout_id": 7}, 422)
    assert [(e["loc"], e["type"]) for e in errors["detail"]] == [
        (["body", "reason"], "required"),
        (["body", "payout_id"], "type"),
    ]
    assert await call(client, "POST", "/v1/payouts/reject", beta, reject, 404) == {
        "detail": "Payout not found"
    }
    declined = await call(client, "POST", "/v1/payouts/reject", acme, reject)
    assert (declined["status"], declined["reason"], declined["trader_id"]) == (
        "rejected",
        "Consistency rule not met",
        trader["id"],
    )
    assert declined["processed_by"].startswith("partner:")
    assert (await call(client, "GET", f"/v1/traders/{trader['id']}", acme))["balance"] == 105000
    approve = {"payout_id": payout["id"]}
    for path, body in (("/v1/payouts/reject", reject), ("/v1/payouts/approve", approve)):
        assert await call(client, "POST", path, acme, body, 409) == {
            "detail": "The payout is rejected"
        }
    page = await call(client, "GET", "/v1/payouts?status=rejected", acme)
    assert [p["id"] for p in page["items"]] == [payout["id"]]
    [event] = await outbox(kernel, "payout.rejected")
    assert (event.payload["reason"], event.payload["amount"], event.payload["tenant_id"]) == (
        "Consistency rule not met",
        "1000.00",
        "acme",
    )


# --- the trade stream --------------------------------------------------------------------


async def receive(ws: Any) -> dict[str, Any]:
    message = await ws.receive(timeout=10)
    assert message.type is WSMsgType.TEXT, message
    frame: dict[str, Any] = message.json()
    return frame


async def test_the_stream_sends_a_partners_own_trades_only(client: Client, kernel: Kernel) -> None:
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "beta")
    acme, beta = await partner(kernel, "acme"), await partner(kernel, "beta")
    acme_trader = await call(
        client,
        "POST",
        "/v1/traders",
        acme,
        trader_body(await plan(kernel, "acme", "A"), "a@a.io"),
        201,
    )
    beta_trader = await call(
        client,
        "POST",
        "/v1/traders",
        beta,
        trader_body(await plan(kernel, "beta", "B"), "b@b.io"),
        201,
    )
    beta_token = beta["Authorization"].removeprefix("Bearer ")
    async with (
        client.ws_connect(STREAM, headers=acme) as acme_ws,
        client.ws_connect(f"{STREAM}?access_token={beta_token}") as beta_ws,
    ):
        ready = await receive(acme_ws)
        assert (ready["event"], ready["id"], ready["data"]) == (
            "stream.ready",
            None,
            {"tenant_id": "acme"},
        )
        assert (await receive(beta_ws))["data"] == {"tenant_id": "beta"}

        login = acme_trader["login"]
        request_id = await kernel.trading.submit(login, "EURUSD", 0, Decimal("0.10"))
        await kernel.trading.idle()
        status = await kernel.trading.request_status(request_id)
        assert status is not None and status["status"] == "executed", status
        ticket = status["order"]
        await kernel.trading.modify_stops(login, ticket, Decimal("1.30000"), None)
        await kernel.trading.close(login, ticket)
        await kernel.relay.drain()

        opened, modified, closed = [await receive(acme_ws) for _ in range(3)]
        assert [f["event"] for f in (opened, modified, closed)] == [
            "trade.opened",
            "trade.modified",
            "trade.closed",
        ]
        assert opened["data"]["trader_id"] == acme_trader["id"]
        assert {k: opened["data"][k] for k in ("login", "ticket", "symbol", "cmd", "volume")} == {
            "login": login,
            "ticket": ticket,
            "symbol": "EURUSD",
            "cmd": 0,
            "volume": "0.10",
        }
        assert opened["data"]["price"] == "1.39298"
        assert (modified["data"]["sl"], modified["data"]["previous_sl"]) == ("1.30000", None)
        assert (closed["data"]["price"], closed["data"]["remaining_volume"]) == ("1.39286", "0.00")
        assert closed["data"]["profit"] == "-1.20"
        assert closed["ts"] == "2014-05-07T00:00:07.135000Z"
        assert len({opened["id"], modified["id"], closed["id"]}) == 3

        # Each stream gets its own tenant's trades only.
        await kernel.trading.submit(beta_trader["login"], "EURUSD", 1, Decimal("1"))
        await kernel.trading.idle()
        await kernel.relay.drain()
        beta_opened = await receive(beta_ws)
        assert (beta_opened["event"], beta_opened["data"]["login"]) == (
            "trade.opened",
            beta_trader["login"],
        )
        assert beta_opened["data"]["trader_id"] == beta_trader["id"]
        await acme_ws.send_json({"action": "ping"})
        assert (await receive(acme_ws))["event"] == "pong"
        await beta_ws.send_str("hello")
        assert (await receive(beta_ws))["event"] == "error"


@pytest.mark.skipif(
    Backends.from_environment().redis_url is None, reason="needs Redis (several processes)"
)
async def test_a_stream_on_another_process_gets_the_trades(
    client: Client,
    kernel: Kernel,
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    """The bus hands each event to one process; every process's streams still get it."""
    (tmp_path / "b").mkdir()
    other = make_kernel(tmp_path / "b", database_url, redis_url, market_data_dir, extra=PLUGINS)
    other_client = await aiohttp_client(create_app(other))
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    trader = await call(
        client,
        "POST",
        "/v1/traders",
        acme,
        trader_body(await plan(kernel, "acme", "A"), "a@a.io"),
        201,
    )
    await other.identity.rbac.changed()  # the tenant and client created on the first
    async with other_client.ws_connect(STREAM, headers=acme) as ws:
        assert (await receive(ws))["event"] == "stream.ready"
        login = trader["login"]
        request_id = await kernel.trading.submit(login, "EURUSD", 1, Decimal("0.05"))
        await kernel.trading.idle()
        status = await kernel.trading.request_status(request_id)
        assert status is not None and status["status"] == "executed", status
        await kernel.trading.close(login, status["order"])
        opened, closed = await receive(ws), await receive(ws)
        assert (opened["event"], opened["data"]["ticket"]) == ("trade.opened", status["order"])
        assert (closed["event"], closed["data"]["profit"]) == ("trade.closed", "-0.60")


async def test_stream_refuses_bad_tokens_and_closes_when_access_ends(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    extra = "[plugins.challenges]\n[plugins.fxproptech]\nstream_heartbeat_s = 0.05\n"
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=extra)
    client = await aiohttp_client(create_app(kernel))
    await partner_tenant(kernel, "acme")
    client_id, acme = await partner_client(kernel, "acme", ["accounts:read"])
    narrow = await partner(kernel, "acme", ["payouts:read"])

    for headers, status in (({}, 401), (narrow, 403), ({"Authorization": "Bearer x"}, 401)):
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect(STREAM, headers=headers)
        assert refused.value.status == status
    assert (await client.get(STREAM, headers=acme)).status == 426

    async with client.ws_connect(STREAM, headers=acme) as ws:
        assert (await receive(ws))["event"] == "stream.ready"
        heartbeat = await receive(ws)
        assert (heartbeat["event"], heartbeat["data"]) == ("heartbeat", {})
        await kernel.identity.partners.update_client(client_id, {"is_active": False})
        message = await ws.receive(timeout=10)
        if message.type is WSMsgType.TEXT:  # a heartbeat sent before the change
            assert message.json()["event"] == "heartbeat"
            message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE
        assert (ws.close_code, message.extra) == (4401, "Invalid token")


async def test_the_v1_routes_are_documented(client: Client) -> None:
    document = await call(client, "GET", "/openapi.json", {})
    OpenAPIV31SpecValidator(document).validate()
    paths = document["paths"]
    documented = {
        (method.upper(), path, operation["security"][0]["partnerOAuth"][0])
        for path, item in paths.items()
        if path.startswith("/v1/")
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert documented == {
        (m, p.replace(UNKNOWN, "{id}").replace(UNKNOWN_PLAN, "{id}"), s) for m, p, s, _ in ENDPOINTS
    } | {("GET", STREAM, "accounts:read")}
    create = paths["/v1/traders"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"]["required"] == ["email", "plan_id"]
    account = paths["/v1/accounts"]["post"]["requestBody"]["content"]["application/json"]
    assert account["schema"]["required"] == ["trader_id", "plan_id"]
    rules = paths["/v1/rules/{id}"]["put"]["requestBody"]["content"]["application/json"]
    assert rules["schema"]["required"] == ["phases", "funded_rules"]
    assert rules["schema"]["properties"]["phases"]["items"]["required"] == ["name", "rules"]


class _Transport:
    """A transport whose peer stopped reading: ``buffered`` bytes are unsent."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, frame: bytes) -> None:
        self.written.append(frame)

    def abort(self) -> None:
        raise AssertionError("the close handshake should be tried first")


class _Socket:
    closed = False

    def __init__(self) -> None:
        self.closes: list[tuple[int, bytes]] = []

    async def close(self, *, code: int, message: bytes) -> None:
        self.closes.append((code, message))


async def test_a_slow_stream_client_is_closed_instead_of_slowing_the_others(
    client: Client,
) -> None:
    hub = client.app[TRADE_HUB]
    fast, slow = _Transport(0), _Transport(1_048_577)  # just above the default limit
    clients = [
        TradeClient(_Socket(), None, transport, "acme", "token")  # type: ignore[arg-type]
        for transport in (fast, slow)
    ]
    frame = b"\x81\x02{}"
    for stream in clients:
        hub.write(stream, frame)
    await hub.stop()  # waits for the closes running in the background
    assert (fast.written, slow.written) == ([frame], [])
    assert hub.dropped_slow == 1
    assert (clients[0].ws.closes, clients[1].ws.closes) == ([], [(1008, b"Slow consumer")])


async def test_post_accounts_opens_an_account_for_an_existing_trader(
    client: Client, kernel: Kernel
) -> None:
    """Seed status box ``POST /v1/accounts 201 Created``."""
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "beta")
    acme, beta = await partner(kernel, "acme"), await partner(kernel, "beta")
    plan_id = await plan(kernel, "acme", "ACME-100K", rules=[MAX_LOSS])
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)

    body = {"trader_id": trader["id"], "plan_id": plan_id, "payment_reference": "pi_77"}
    opened = await call(client, "POST", "/v1/accounts", acme, body, 201)
    assert opened["id"].startswith("prop_") and opened["id"] != trader["id"]
    assert opened == await call(client, "GET", f"/v1/evaluations/{opened['id']}", acme)
    assert (opened["customer_id"], opened["plan_id"], opened["phase"], opened["status"]) == (
        trader["customer_id"],
        plan_id,
        "phase_1",
        "active",
    )
    assert (opened["initial_balance"], opened["balance"], opened["pnl"]) == (100000, 100000, 0)
    # idempotent on payment_reference; without one every call opens another account
    assert await call(client, "POST", "/v1/accounts", acme, body, 201) == opened
    body.pop("payment_reference")
    third = await call(client, "POST", "/v1/accounts", acme, body, 201)
    fourth = await call(client, "POST", "/v1/accounts", acme, body, 201)
    assert len({trader["id"], opened["id"], third["id"], fourth["id"]}) == 4
    assert (await call(client, "GET", "/v1/traders", acme))["total"] == 4
    created = await outbox(kernel, "account.created")
    assert [e.payload["source"] for e in created] == ["fxproptech"] + ["fxproptech_account"] * 3
    assert len(await outbox(kernel, "trader.created")) == 1

    not_found = {"detail": "Account not found"}
    missing = {"trader_id": UNKNOWN, "plan_id": plan_id}
    assert await call(client, "POST", "/v1/accounts", acme, missing, 404) == not_found
    foreign = {"trader_id": trader["id"], "plan_id": await plan(kernel, "beta", "BETA-1")}
    assert await call(client, "POST", "/v1/accounts", beta, foreign, 404) == not_found
    no_plan = {"detail": "Plan not found"}
    for plan_ref in ("plan_nope", foreign["plan_id"], await plan(kernel, None, "BK-100K")):
        other = {"trader_id": trader["id"], "plan_id": plan_ref}
        assert await call(client, "POST", "/v1/accounts", acme, other, 404) == no_plan
    await challenge_service(kernel).retire_plan(plan_id, tenant_id="acme")
    retired = {"detail": "The plan is retired"}
    assert await call(client, "POST", "/v1/accounts", acme, body, 409) == retired

    errors = await call(client, "POST", "/v1/accounts", acme, {}, 422)
    assert errors == {
        "detail": [
            {
                "loc": ["body", "trader_id"],
                "msg": "'trader_id' is a required property",
                "type": "required",
            },
            {
                "loc": ["body", "plan_id"],
                "msg": "'plan_id' is a required property",
                "type": "required",
            },
        ]
    }
    bad = {"trader_id": 7, "plan_id": "", "payment_reference": "", "login": 1}
    errors = await call(client, "POST", "/v1/accounts", acme, bad, 422)
    assert [(e["loc"], e["type"]) for e in errors["detail"]] == [
        (["body"], "additionalProperties"),
        (["body", "payment_reference"], "minLength"),
        (["body", "plan_id"], "minLength"),
        (["body", "trader_id"], "type"),
    ]


async def test_post_accounts_refuses_a_trader_holding_accounts_elsewhere(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-100K")
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)
    await challenge_service(kernel).provision(
        await plan(kernel, None, "BK-100K"),
        TraderSpec(email="t@a.io", customer_id=trader["customer_id"]),
        tenant_id=None,
        source="backoffice",
    )
    body = {"trader_id": trader["id"], "plan_id": plan_id}
    assert await call(client, "POST", "/v1/accounts", acme, body, 422) == {
        "detail": [{"loc": ["body", "trader_id"], "msg": "unknown customer", "type": "customer"}]
    }


def rule_set(percent: int) -> dict[str, Any]:
    max_loss = {"type": "max_loss", "params": {"model": "static", "percent": percent}}
    return {
        "phases": [{"name": "phase_1", "rules": [max_loss]}, {"name": "phase_2", "rules": []}],
        "funded_rules": [max_loss],
    }


async def test_put_rules_replaces_a_plans_rule_set_and_relevels_its_accounts(
    client: Client, kernel: Kernel
) -> None:
    """Seed status box ``PUT /v1/rules/{id} 200 Updated`` (and its GET)."""
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-2STEP", phases=2, rules=[MAX_LOSS])
    trader = await call(client, "POST", "/v1/traders", acme, trader_body(plan_id, "t@a.io"), 201)
    evaluation = f"/v1/evaluations/{trader['id']}"
    path = f"/v1/rules/{plan_id}"
    before = await call(client, "GET", path, acme)
    service_view = await challenge_service(kernel).get_plan(plan_id, tenant_id="acme")
    assert before == json.loads(dumps(service_view))
    assert [p["name"] for p in before["phases"]] == ["phase_1", "phase_2"]
    (rule,) = (await call(client, "GET", evaluation, acme))["rules"]
    assert rule["numbers"]["floor"] == "90000.00"

    updated = await call(client, "PUT", path, acme, rule_set(12))
    assert updated == await call(client, "GET", path, acme)
    assert updated["id"] == plan_id and updated["code"] == "ACME-2STEP"
    phase_1, phase_2 = updated["phases"]
    ((rule_type, name, params),) = [(r["type"], r["name"], r["params"]) for r in phase_1["rules"]]
    assert (rule_type, name, params["model"], params["percent"]) == (
        "max_loss",
        "max_loss",
        "static",
        12,
    )
    assert (phase_2["rules"], updated["funded_rules"]) == ([], phase_1["rules"])
    # the account in phase_1 runs on the new rules at once (no need to wait for a phase)
    (rule,) = (await call(client, "GET", evaluation, acme))["rules"]
    assert rule["numbers"]["floor"] == "88000.00"
    passed = await call(client, "POST", f"{evaluation}/pass", acme)
    assert (passed["phase"], passed["rules"]) == ("phase_2", [])


async def test_put_rules_reports_every_field_error_and_changes_nothing(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    acme = await partner(kernel, "acme")
    plan_id = await plan(kernel, "acme", "ACME-100K", rules=[MAX_LOSS])
    path = f"/v1/rules/{plan_id}"
    before = await call(client, "GET", path, acme)
    body = {
        "phases": [
            {
                "name": "Phase 1",
                "rules": [{"type": "nope"}, {"type": "max_loss", "params": {"percent": "a"}}],
            }
        ],
        "code": "OTHER",
    }
    assert await call(client, "PUT", path, acme, body, 422) == {
        "detail": [
            {
                "loc": ["body", "funded_rules"],
                "msg": "'funded_rules' is a required property",
                "type": "required",
            },
            {
                "loc": ["body", "code"],
                "msg": "'code' is not part of a rule set (phases, funded_rules)",
                "type": "additionalProperties",
            },
            {
                "loc": ["body", "phases", 0, "name"],
                "msg": "'Phase 1' does not match '^[a-z][a-z0-9_]{0,31}$'",
                "type": "pattern",
            },
            {
                "loc": ["body", "phases", 0, "rules", 0, "type"],
                "msg": "unknown rule type 'nope' (known: max_loss)",
                "type": "rule_type",
            },
            {
                "loc": ["body", "phases", 0, "rules", 1, "params", "model"],
                "msg": "'model' is a required property",
                "type": "required",
            },
            {
                "loc": ["body", "phases", 0, "rules", 1, "params", "percent"],
                "msg": "'a' is not of type 'number'",
                "type": "type",
            },
        ]
    }
    assert await call(client, "PUT", path, acme, {"phases": [], "funded_rules": {}}, 422) == {
        "detail": [
            {"loc": ["body", "funded_rules"], "msg": "{} is not of type 'array'", "type": "type"},
            {"loc": ["body", "phases"], "msg": "[] should be non-empty", "type": "minItems"},
        ]
    }
    assert await call(client, "PUT", path, acme, {}, 422) == {
        "detail": [
            {
                "loc": ["body", "phases"],
                "msg": "'phases' is a required property",
                "type": "required",
            },
            {
                "loc": ["body", "funded_rules"],
                "msg": "'funded_rules' is a required property",
                "type": "required",
            },
        ]
    }
    assert await call(client, "GET", path, acme) == before


async def test_rules_of_broker_and_foreign_plans_are_not_found(
    client: Client, kernel: Kernel
) -> None:
    await partner_tenant(kernel, "acme")
    await partner_tenant(kernel, "beta")
    acme, beta = await partner(kernel, "acme"), await partner(kernel, "beta")
    acme_plan = await plan(kernel, "acme", "ACME-100K")
    broker_plan = await plan(kernel, None, "BK-100K")  # public: in Acme's catalog
    not_found = {"detail": "Plan not found"}
    for who, plan_id in ((beta, acme_plan), (acme, broker_plan)):
        path = f"/v1/rules/{plan_id}"
        assert await call(client, "GET", path, who, status=404) == not_found
        assert await call(client, "PUT", path, who, rule_set(5), 404) == not_found
        assert await call(client, "PUT", path, who, {"code": "X"}, 404) == not_found
    service = challenge_service(kernel)
    assert (await service.get_plan(acme_plan, tenant_id="acme"))["phases"] == [
        {"name": "phase_1", "rules": []}
    ]
    assert (await service.get_plan(broker_plan, tenant_id=None))["phases"] == [
        {"name": "phase_1", "rules": []}
    ]
