"""ZT4-style partner API (plugin ``propfirm_api``): Orchestration ``/api/v1/propfirm``,
Storefront ``/api/v1/storefront`` and the broker's prop admin routes, driven over
HTTP with real partner OAuth2 tokens (seed ``zt4-propfirm-partner-api.txt``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from identity_helpers import bearer, staff_with
from sqlalchemy import func, select
from support import DAY_START_MS, make_kernel, register_trader, staff_headers, tick
from yarl import URL

from brokerkernel.kernel.identity.seed import PARTNER_SCOPES
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent, TradingAccount
from brokerkernel.plugins.challenges.service import (
    TRADER_EMAIL_REFUSED,
    PropError,
    TraderSpec,
    challenge_service,
)
from brokerkernel.plugins.propfirm_api.common import SSO_REFUSED

Client = TestClient[Any, Any]
Headers = dict[str, str]

PLUGINS = """
[plugins.daily_loss]
[plugins.max_loss]
[plugins.profit_target]
[plugins.challenges]
[plugins.propfirm_api]
"""
#: The README quick start's phase: FTMO-style daily loss, static max loss, a target.
RULES = [
    {"type": "daily_loss", "params": {"model": "balance_minus_initial_pct", "percent": 5}},
    {"type": "max_loss", "params": {"model": "static", "percent": 10}},
    {"type": "profit_target", "params": {"percent": 10}},
]
ORCHESTRATION = (
    "plans:read",
    "plans:write",
    "accounts:read",
    "accounts:write",
    "balance:write",
    "payouts:read",
    "payouts:write",
)
STOREFRONT = (
    "catalog:read",
    "accounts:provision",
    "accounts:read",
    "metrics:read",
    "payouts:request",
)
INSUFFICIENT = {"detail": "insufficient_scope"}
UNKNOWN = "prop_does_not_exist"

#: Every partner endpoint: (method, path, scope, status with only that scope for an
#: unknown id / an empty body).
PARTNER_ENDPOINTS = (
    ("GET", "/api/v1/propfirm/plans", "plans:read", 200),
    ("POST", "/api/v1/propfirm/plans", "plans:write", 422),
    ("GET", f"/api/v1/propfirm/plans/{UNKNOWN}", "plans:read", 404),
    ("PATCH", f"/api/v1/propfirm/plans/{UNKNOWN}", "plans:write", 404),
    ("DELETE", f"/api/v1/propfirm/plans/{UNKNOWN}", "plans:write", 404),
    ("POST", "/api/v1/propfirm/accounts", "accounts:write", 422),
    ("GET", "/api/v1/propfirm/accounts", "accounts:read", 200),
    ("GET", f"/api/v1/propfirm/accounts/{UNKNOWN}", "accounts:read", 404),
    ("GET", f"/api/v1/propfirm/accounts/{UNKNOWN}/metrics", "accounts:read", 404),
    ("POST", f"/api/v1/propfirm/accounts/{UNKNOWN}/phase", "accounts:write", 404),
    ("POST", f"/api/v1/propfirm/accounts/{UNKNOWN}/reset", "accounts:write", 404),
    ("POST", f"/api/v1/propfirm/accounts/{UNKNOWN}/balance", "balance:write", 422),
    ("DELETE", f"/api/v1/propfirm/accounts/{UNKNOWN}", "accounts:write", 404),
    ("POST", f"/api/v1/propfirm/accounts/{UNKNOWN}/sso", "accounts:read", 404),
    ("POST", f"/api/v1/propfirm/accounts/{UNKNOWN}/payouts", "payouts:write", 404),
    ("GET", "/api/v1/propfirm/payouts", "payouts:read", 200),
    ("GET", f"/api/v1/propfirm/payouts/{UNKNOWN}", "payouts:read", 404),
    ("GET", "/api/v1/storefront/catalog", "catalog:read", 200),
    ("GET", f"/api/v1/storefront/catalog/{UNKNOWN}", "catalog:read", 404),
    ("POST", "/api/v1/storefront/accounts", "accounts:provision", 422),
    ("GET", f"/api/v1/storefront/accounts/{UNKNOWN}", "accounts:read", 404),
    ("GET", f"/api/v1/storefront/accounts/{UNKNOWN}/metrics", "metrics:read", 404),
    ("POST", f"/api/v1/storefront/accounts/{UNKNOWN}/sso", "accounts:read", 404),
    ("POST", f"/api/v1/storefront/accounts/{UNKNOWN}/payout-request", "payouts:request", 404),
)


@pytest.fixture
async def kernel(
    tmp_path: Path, database_url: str, redis_url: str | None, market_data_dir: Path
) -> Kernel:
    """The test kernel with the challenges and propfirm_api plugins enabled."""
    return make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=PLUGINS)


async def tenant(kernel: Kernel, tenant_id: str, *, enabled: bool = True) -> None:
    await kernel.identity.partners.create_tenant(tenant_id, f"{tenant_id} prop", enabled)


async def partner(kernel: Kernel, tenant_id: str, scopes: tuple[str, ...] | list[str]) -> Headers:
    """Bearer headers of a new client of ``tenant_id`` granted ``scopes`` (the
    client-credentials exchange of ``POST /api/v1/oauth/token``)."""
    client, secret = await kernel.identity.partners.create_client(
        f"{tenant_id} firm", tenant_id, list(scopes), None
    )
    token = await kernel.identity.partners.exchange(client.client_id, secret, None)
    return bearer(token["access_token"])


async def events(kernel: Kernel, *types: str) -> list[dict[str, Any]]:
    """Outbox events of ``types`` in order: ``{"type", **payload}``."""
    async with kernel.db.read() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type.in_(types)).order_by(OutboxEvent.seq)
        )
        return [{"type": row.type, **row.payload} for row in rows]


def later(kernel: Kernel, seconds: int) -> None:
    """Move the market clock (which stamps prop accounts) ``seconds`` past the
    client fixture's first quote."""
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7135 + seconds * 1000)


def plan_body(code: str, **overrides: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"{code} challenge",
        "account_size": 100000,
        "currency": "USD",
        "price": 99,
        "phases": [{"name": "phase_1", "rules": []}],
        "profit_split": 80,
        "payout_first_after_days": 0,
        "payout_every_days": 14,
        "payout_minimum": 0,
        **overrides,
    }


def provision_body(plan_id: str, email: str, **extra: Any) -> dict[str, Any]:
    return {
        "planId": plan_id,
        "trader": {"email": email, "first_name": "Tess", "last_name": "Trader"},
        **extra,
    }


async def call(
    client: Client,
    method: str,
    path: str,
    headers: Headers,
    json: Any = None,
    status: int = 200,
) -> Any:
    response = await client.request(method, path, json=json, headers=headers)
    body = await response.json()
    assert response.status == status, (response.status, body)
    return body


async def create_plan(client: Client, headers: Headers, code: str, **overrides: Any) -> Any:
    return await call(
        client, "POST", "/api/v1/propfirm/plans", headers, plan_body(code, **overrides), 201
    )


async def provision(
    client: Client, headers: Headers, plan_id: str, email: str, **extra: Any
) -> Any:
    return await call(
        client,
        "POST",
        "/api/v1/propfirm/accounts",
        headers,
        provision_body(plan_id, email, **extra),
        201,
    )


# --- the entitlement gate -----------------------------------------------------------


async def test_every_endpoint_answers_with_its_scope_and_refuses_without_it(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    without: dict[str, Headers] = {}
    for method, path, scope, allowed in PARTNER_ENDPOINTS:
        only = await partner(kernel, "alpha", [scope])
        response = await client.request(method, path, json={}, headers=only)
        assert response.status == allowed, (method, path, await response.text())
        if scope not in without:
            others = [s for s in PARTNER_SCOPES if s != scope]
            without[scope] = await partner(kernel, "alpha", others)
        response = await client.request(method, path, json={}, headers=without[scope])
        assert (response.status, await response.json()) == (403, INSUFFICIENT), (method, path)
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer error="insufficient_scope", scope="{scope}"'
        )


async def test_a_tenant_not_prop_firm_enabled_is_refused_everywhere(
    client: Client, kernel: Kernel
) -> None:
    headers = await partner(kernel, "default", PARTNER_SCOPES)  # the seed tenant: off
    for method, path, _scope, _allowed in PARTNER_ENDPOINTS:
        response = await client.request(method, path, json={}, headers=headers)
        assert (response.status, await response.json()) == (
            403,
            {"detail": "prop_firm_not_enabled"},
        ), (method, path)
    staff = await staff_headers(client)
    response = await client.get("/api/v1/propfirm/plans", headers=staff)
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Partner access token required"},
    )


# --- Orchestration: plans -----------------------------------------------------------


async def test_orchestration_plan_crud_with_every_field_error_and_retire(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", ORCHESTRATION)
    plan = await create_plan(client, firm, "ALPHA-100K", price=149.5)
    assert plan["tenant_id"] == "alpha" and plan["status"] == "active"
    assert (plan["account_size"], plan["price"], plan["profit_split"]) == (100000, 149.5, 80)
    assert plan["phases"] == [{"name": "phase_1", "rules": []}]

    assert await call(client, "GET", "/api/v1/propfirm/plans", firm) == [plan]
    path = f"/api/v1/propfirm/plans/{plan['id']}"
    assert await call(client, "GET", path, firm) == plan
    changed = await call(client, "PATCH", path, firm, {"price": 199, "name": "Alpha 100K"})
    assert (changed["price"], changed["name"], changed["code"]) == (199, "Alpha 100K", "ALPHA-100K")

    duplicate = await client.post(
        "/api/v1/propfirm/plans", json=plan_body("ALPHA-100K"), headers=firm
    )
    assert duplicate.status == 409
    bad = plan_body("x y", account_size=-5)
    del bad["name"]
    bad["phases"] = [{"name": "phase_1", "rules": [{"type": "no_such_rule"}]}]
    detail = (await call(client, "POST", "/api/v1/propfirm/plans", firm, bad, 422))["detail"]
    assert sorted((tuple(map(str, e["loc"])), e["type"]) for e in detail) == [
        (("body", "account_size"), "exclusiveMinimum"),
        (("body", "code"), "pattern"),
        (("body", "name"), "required"),
        (("body", "phases", "0", "rules", "0", "type"), "rule_type"),
    ]
    response = await client.post("/api/v1/propfirm/plans", data="[1]", headers=firm)
    assert response.status == 422

    unused = await create_plan(client, firm, "ALPHA-UNUSED")
    gone = await call(client, "DELETE", f"/api/v1/propfirm/plans/{unused['id']}", firm)
    assert gone["id"] == unused["id"]
    await call(client, "GET", f"/api/v1/propfirm/plans/{unused['id']}", firm, status=404)

    await provision(client, firm, plan["id"], "tess@firm.test")
    retired = await call(client, "DELETE", path, firm)
    assert retired["status"] == "retired"
    assert await call(client, "GET", "/api/v1/propfirm/plans", firm) == []
    listed = await call(client, "GET", "/api/v1/propfirm/plans?include_retired=true", firm)
    assert [p["id"] for p in listed] == [plan["id"]]
    bad = await call(
        client, "GET", "/api/v1/propfirm/plans?include_retired=maybe", firm, status=422
    )
    assert [(e["loc"], e["type"]) for e in bad["detail"]] == [
        (["query", "include_retired"], "type")
    ]
    refused = await client.post(
        "/api/v1/propfirm/accounts", json=provision_body(plan["id"], "late@firm.test"), headers=firm
    )
    assert refused.status == 409


# --- Orchestration: accounts ----------------------------------------------------------


async def test_provisioning_creates_the_trader_once_and_lists_with_filters_and_pages(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", ORCHESTRATION)
    small = await create_plan(client, firm, "ALPHA-10K", account_size=10000)
    large = await create_plan(client, firm, "ALPHA-200K", account_size=200000)

    later(kernel, 1)
    first = await provision(client, firm, small["id"], "tess@firm.test", external_ref="order-1")
    assert first["id"].startswith("prop_") and isinstance(first["login"], int)
    assert (first["plan_id"], first["phase"], first["status"]) == (small["id"], "phase_1", "active")
    assert (first["balance"], first["equity"]) == (10000, 10000)
    again = await provision(client, firm, small["id"], "tess@firm.test", external_ref="order-1")
    assert again["id"] == first["id"]  # idempotent on external_ref
    later(kernel, 2)
    second = await provision(client, firm, large["id"], "tess@firm.test")
    assert second["customer_id"] == first["customer_id"]  # the trader is found by email
    later(kernel, 3)
    third = await provision(client, firm, small["id"], "omar@firm.test")
    assert third["customer_id"] != first["customer_id"]

    created = await events(kernel, "account.created", "trader.created")
    assert [(e["type"], e["account_id"], e["tenant_id"]) for e in created] == [
        ("account.created", first["id"], "alpha"),
        ("trader.created", first["id"], "alpha"),
        ("account.created", second["id"], "alpha"),
        ("account.created", third["id"], "alpha"),
        ("trader.created", third["id"], "alpha"),
    ]
    assert (created[0]["source"], created[0]["initial_balance"]) == ("propfirm_api", "10000.00")
    assert created[1]["email"] == "tess@firm.test"

    everything = await call(client, "GET", "/api/v1/propfirm/accounts", firm)
    assert (everything["total"], everything["limit"], everything["offset"]) == (3, 50, 0)
    assert [a["id"] for a in everything["items"]] == [third["id"], second["id"], first["id"]]
    page = await call(client, "GET", "/api/v1/propfirm/accounts?limit=1&offset=1", firm)
    assert (page["total"], [a["id"] for a in page["items"]]) == (3, [second["id"]])
    by_plan = await call(client, "GET", f"/api/v1/propfirm/accounts?plan_id={small['id']}", firm)
    assert (by_plan["total"], [a["id"] for a in by_plan["items"]]) == (
        2,
        [third["id"], first["id"]],
    )
    funded = await call(client, "GET", "/api/v1/propfirm/accounts?phase=funded", firm)
    assert funded == {"items": [], "total": 0, "limit": 50, "offset": 0}
    active = await call(client, "GET", "/api/v1/propfirm/accounts?status=active&limit=2", firm)
    assert (active["total"], len(active["items"])) == (3, 2)

    bad = await call(
        client, "GET", "/api/v1/propfirm/accounts?status=won&limit=0&offset=-1", firm, status=422
    )
    assert [(e["loc"], e["type"]) for e in bad["detail"]] == [
        (["query", "limit"], "minimum"),
        (["query", "offset"], "minimum"),
        (["query", "status"], "enum"),
    ]
    bad = await call(client, "GET", "/api/v1/propfirm/payouts?limit=x&offset=1.5", firm, status=422)
    assert [(e["loc"], e["type"]) for e in bad["detail"]] == [
        (["query", "limit"], "type"),
        (["query", "offset"], "type"),
    ]
    detail = (
        await call(
            client,
            "POST",
            "/api/v1/propfirm/accounts",
            firm,
            {"planId": "", "trader": {"email": "nope", "tier": "vip"}, "balance": 5},
            422,
        )
    )["detail"]
    assert sorted(tuple(map(str, e["loc"])) for e in detail) == [
        ("body",),  # additional property "balance"
        ("body", "planId"),
        ("body", "trader"),  # additional property "tier"
        ("body", "trader", "email"),
    ]


async def test_account_state_metrics_phase_reset_balance_and_archive(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", ORCHESTRATION)
    plan = await create_plan(
        client,
        firm,
        "ALPHA-50K",
        account_size=50000,
        timezone="Europe/Prague",
        phases=[{"name": "phase_1", "rules": RULES}],
    )
    account = await provision(client, firm, plan["id"], "tess@firm.test")
    path = f"/api/v1/propfirm/accounts/{account['id']}"

    state = await call(client, "GET", path, firm)
    assert (state["id"], state["phase"], state["equity"]) == (account["id"], "phase_1", 50000)
    metrics = await call(client, "GET", path + "/metrics", firm)
    assert (metrics["equity"], metrics["target"], metrics["target_progress_pct"]) == (
        50000,
        55000,
        0,
    )
    assert (metrics["day"], metrics["max_drawdown"], metrics["trading_days"]) == (
        "2014-05-07",
        0,
        0,
    )
    assert [(r["rule"], r["status"], r["numbers"].get("floor")) for r in metrics["rules"]] == [
        ("daily_loss", "pass", "47500.00"),
        ("max_loss", "pass", "45000.00"),
        ("profit_target", "pending", None),
    ]

    deposited = await call(
        client, "POST", path + "/balance", firm, {"operation": "deposit", "amount": 1000.25}
    )
    assert deposited["account"]["balance"] == 51000.25 and deposited["transaction_id"]
    adjusted = await call(
        client, "POST", path + "/balance", firm, {"operation": "adjust", "amount": -0.25}
    )
    assert adjusted["account"]["balance"] == 51000
    detail = (
        await call(
            client,
            "POST",
            path + "/balance",
            firm,
            {"operation": "withdraw", "amount": -5, "comment": 7},
            422,
        )
    )["detail"]
    assert sorted(tuple(map(str, e["loc"])) for e in detail) == [
        ("body", "amount"),
        ("body", "comment"),
    ]
    response = await client.post(
        path + "/balance", json={"operation": "adjust", "amount": 0}, headers=firm
    )
    assert response.status == 422

    reset = await call(client, "POST", path + "/reset", firm)
    assert (reset["phase"], reset["balance"]) == ("phase_1", 50000)
    funded = await call(client, "POST", path + "/phase", firm)
    assert (funded["phase"], funded["status"]) == ("funded", "funded")
    await call(client, "POST", path + "/phase", firm, {"to": "funded"}, 422)

    archived = await call(client, "DELETE", path, firm)
    assert archived["status"] == "archived"
    listed = await call(client, "GET", "/api/v1/propfirm/accounts?status=archived", firm)
    assert [a["id"] for a in listed["items"]] == [account["id"]]


async def test_sso_token_is_redeemed_once_at_the_customer_autologin(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", (*ORCHESTRATION, *STOREFRONT))
    plan = await create_plan(client, firm, "ALPHA-SSO")
    account = await provision(client, firm, plan["id"], "tess@firm.test")

    for base in ("/api/v1/propfirm", "/api/v1/storefront"):
        sso = await call(client, "POST", f"{base}/accounts/{account['id']}/sso", firm)
        assert set(sso) == {"token", "url", "expires_in", "expires_at"}
        assert sso["expires_in"] == 900  # autologin_organic_minutes = 15
        assert sso["url"] == str(client.make_url(f"/api/customer/autologin?token={sso['token']}"))
        redeem = str(URL(sso["url"]).relative())
        session = await call(client, "GET", redeem, {})
        assert session["customer"]["email"] == "tess@firm.test"
        assert [a["login"] for a in session["customer"]["trading_accounts"]] == [
            str(account["login"])
        ]  # the seed writes logins as strings there
        me = await call(client, "GET", "/api/customer/me", bearer(session["access_token"]))
        assert me["email"] == "tess@firm.test"
        replay = await client.get(redeem)
        assert (replay.status, await replay.json()) == (
            401,
            {"detail": "Autologin token invalid, already used, or expired"},
        )

    # defence in depth: once the broker opens another account for the trader (staff
    # reuse any customer), the partner no longer signs the trader in
    broker = await broker_plan(client, await staff_headers(client), "BK-SSO")
    await challenge_service(kernel).provision(
        broker["id"],
        TraderSpec(email="tess@firm.test", customer_id=account["customer_id"]),
        tenant_id=None,
        source="backoffice",
    )
    for base in ("/api/v1/propfirm", "/api/v1/storefront"):
        path = f"{base}/accounts/{account['id']}/sso"
        assert await call(client, "POST", path, firm, status=409) == {"detail": SSO_REFUSED}


async def test_a_partner_reuses_only_its_own_trader(client: Client, kernel: Kernel) -> None:
    """Issue 7: a partner provisioning by email or customer id never attaches to a
    broker client or another firm's trader (two partners and a broker customer)."""
    retail_login, _ = await register_trader(client, "retail@broker.test")
    await tenant(kernel, "alpha")
    await tenant(kernel, "beta")
    alpha = await partner(kernel, "alpha", (*ORCHESTRATION, *STOREFRONT))
    beta = await partner(kernel, "beta", ORCHESTRATION)
    alpha_plan = await create_plan(client, alpha, "ALPHA-ID")
    beta_plan = await create_plan(client, beta, "BETA-ID")
    catalog = await broker_plan(client, await staff_headers(client), "BK-ID")

    first = await provision(client, alpha, alpha_plan["id"], "tess@firm.test")
    second = await provision(client, alpha, alpha_plan["id"], "TESS@firm.test")  # its own
    shop = await call(
        client,
        "POST",
        "/api/v1/storefront/accounts",
        alpha,
        provision_body(catalog["id"], "tess@firm.test"),
        201,
    )
    assert {second["customer_id"], shop["customer_id"]} == {first["customer_id"]}
    assert second["login"] != first["login"]

    refused = {"detail": TRADER_EMAIL_REFUSED}
    body = provision_body(alpha_plan["id"], "retail@broker.test")
    path = "/api/v1/propfirm/accounts"
    assert await call(client, "POST", path, alpha, body, 409) == refused  # a broker client
    body = provision_body(catalog["id"], "retail@broker.test")
    assert await call(client, "POST", "/api/v1/storefront/accounts", alpha, body, 409) == refused
    body = provision_body(beta_plan["id"], "tess@firm.test")
    assert await call(client, "POST", path, beta, body, 409) == refused  # alpha's trader

    service = challenge_service(kernel)
    async with kernel.db.read() as session:
        retail_customer = await session.scalar(
            select(TradingAccount.customer_id).where(TradingAccount.login == retail_login)
        )
    unknown = [{"loc": ["body", "customer_id"], "msg": "unknown customer", "type": "customer"}]
    for customer_id in (retail_customer, first["customer_id"], "cus_does_not_exist"):
        with pytest.raises(PropError) as foreign:
            await service.provision(
                beta_plan["id"],
                TraderSpec(email="x@beta.test", customer_id=customer_id),
                tenant_id="beta",
                source="test",
            )
        assert (foreign.value.status, foreign.value.detail) == (422, unknown)  # no leak
    own = await service.provision(
        alpha_plan["id"],
        TraderSpec(email="ignored@alpha.test", customer_id=first["customer_id"]),
        tenant_id="alpha",
        source="test",
    )
    assert own["customer_id"] == first["customer_id"]

    created = await events(kernel, "account.created", "trader.created")
    assert [(e["type"], e["tenant_id"]) for e in created if "plan_id" in e] == [
        ("account.created", "alpha"),
        ("trader.created", "alpha"),
        *[("account.created", "alpha")] * 3,
    ]  # the refusals wrote nothing (the first event is the retail registration's)
    async with kernel.db.read() as session:
        accounts = await session.scalar(
            select(func.count())
            .select_from(TradingAccount)
            .where(TradingAccount.customer_id == retail_customer)
        )
    assert accounts == 1


async def test_a_partner_sees_only_its_own_plans_accounts_and_payouts(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    await tenant(kernel, "beta")
    alpha = await partner(kernel, "alpha", PARTNER_SCOPES)
    beta = await partner(kernel, "beta", PARTNER_SCOPES)
    plan = await create_plan(client, alpha, "SHARED-CODE")
    account = await provision(client, alpha, plan["id"], "tess@firm.test")
    await call(client, "POST", f"/api/v1/propfirm/accounts/{account['id']}/phase", alpha)
    await call(
        client,
        "POST",
        f"/api/v1/propfirm/accounts/{account['id']}/balance",
        alpha,
        {"operation": "adjust", "amount": 2000},
    )
    payout = await call(
        client,
        "POST",
        f"/api/v1/propfirm/accounts/{account['id']}/payouts",
        alpha,
        {"amount": 1000},
        201,
    )

    own = await create_plan(client, beta, "SHARED-CODE")  # codes are per owner
    assert own["id"] != plan["id"]
    assert [p["id"] for p in await call(client, "GET", "/api/v1/propfirm/plans", beta)] == [
        own["id"]
    ]
    empty = {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert await call(client, "GET", "/api/v1/propfirm/accounts", beta) == empty
    assert await call(client, "GET", "/api/v1/propfirm/payouts", beta) == empty
    account_path = f"/api/v1/propfirm/accounts/{account['id']}"
    foreign = (
        ("GET", f"/api/v1/propfirm/plans/{plan['id']}", None),
        ("PATCH", f"/api/v1/propfirm/plans/{plan['id']}", {"price": 1}),
        ("DELETE", f"/api/v1/propfirm/plans/{plan['id']}", None),
        ("POST", "/api/v1/propfirm/accounts", provision_body(plan["id"], "x@beta.test")),
        ("GET", account_path, None),
        ("GET", account_path + "/metrics", None),
        ("POST", account_path + "/phase", None),
        ("POST", account_path + "/reset", None),
        ("POST", account_path + "/balance", {"operation": "deposit", "amount": 1}),
        ("POST", account_path + "/sso", None),
        ("POST", account_path + "/payouts", {"amount": 1}),
        ("DELETE", account_path, None),
        ("GET", f"/api/v1/propfirm/payouts/{payout['id']}", None),
        ("GET", f"/api/v1/storefront/accounts/{account['id']}", None),
        ("GET", f"/api/v1/storefront/accounts/{account['id']}/metrics", None),
        ("POST", f"/api/v1/storefront/accounts/{account['id']}/sso", None),
        ("POST", f"/api/v1/storefront/accounts/{account['id']}/payout-request", {"amount": 1}),
    )
    for method, path, body in foreign:
        response = await client.request(method, path, json=body, headers=beta)
        assert response.status == 404, (method, path, await response.text())
    state = await call(client, "GET", account_path, alpha)  # untouched by beta's calls
    assert (state["status"], state["phase"]) == ("funded", "funded")
    alpha_payouts = await call(client, "GET", "/api/v1/propfirm/payouts", alpha)
    assert [p["id"] for p in alpha_payouts["items"]] == [payout["id"]]


# --- Storefront and the broker's admin routes -------------------------------------------


async def broker_plan(client: Client, staff: Headers, code: str, **overrides: Any) -> Any:
    return await call(
        client, "POST", "/api/platform/prop/plans", staff, plan_body(code, **overrides), 201
    )


async def test_storefront_sells_the_broker_catalog_and_payouts_wait_for_approval(
    client: Client, kernel: Kernel
) -> None:
    staff = await staff_headers(client)
    await tenant(kernel, "alpha")
    await tenant(kernel, "beta")
    shop = await partner(kernel, "alpha", STOREFRONT)
    both = await partner(kernel, "alpha", (*ORCHESTRATION, *STOREFRONT))  # one client, two sets
    public = await broker_plan(client, staff, "BK-25K", account_size=25000, price=149)
    private = await broker_plan(
        client, staff, "BK-BETA", visibility="private", allowed_tenants=["beta"]
    )
    hidden = await broker_plan(client, staff, "BK-HIDDEN", visibility="hidden")
    own = await create_plan(client, both, "ALPHA-OWN")  # a partner plan: not in the catalog
    assert public["tenant_id"] is None

    catalog = await call(client, "GET", "/api/v1/storefront/catalog", shop)
    assert [p["id"] for p in catalog] == [public["id"]]
    assert catalog[0]["price"] == 149 and catalog[0]["phases"] == public["phases"]
    assert (
        await call(client, "GET", f"/api/v1/storefront/catalog/{public['id']}", shop)
        == (catalog[0])
    )
    for plan in (private, hidden, own):
        await call(client, "GET", f"/api/v1/storefront/catalog/{plan['id']}", shop, status=404)
    beta_shop = await partner(kernel, "beta", STOREFRONT)
    beta_catalog = await call(client, "GET", "/api/v1/storefront/catalog", beta_shop)
    assert sorted(p["id"] for p in beta_catalog) == sorted([public["id"], private["id"]])

    rules = {"profit_split": 100, "account_size": 1000000, "phases": []}
    detail = (
        await call(
            client,
            "POST",
            "/api/v1/storefront/accounts",
            shop,
            {**provision_body(public["id"], "tess@shop.test"), **rules},
            422,
        )
    )["detail"]
    assert [(e["loc"], e["type"]) for e in detail] == [(["body"], "additionalProperties")]
    assert all(name in detail[0]["msg"] for name in rules)
    await call(
        client,
        "POST",
        "/api/v1/storefront/accounts",
        shop,
        provision_body(own["id"], "tess@shop.test"),
        404,
    )  # the partner's own plan is not in its catalog
    await call(
        client,
        "POST",
        "/api/v1/propfirm/accounts",
        both,
        provision_body(public["id"], "tess@shop.test"),
        404,
    )  # nor is a broker plan an Orchestration plan
    account = await call(
        client,
        "POST",
        "/api/v1/storefront/accounts",
        shop,
        provision_body(public["id"], "tess@shop.test", external_ref="shop-1"),
        201,
    )
    assert (account["plan_id"], account["balance"], account["phase"]) == (
        public["id"],
        25000,
        "phase_1",
    )
    path = f"/api/v1/storefront/accounts/{account['id']}"
    assert (await call(client, "GET", path, shop))["id"] == account["id"]
    assert (await call(client, "GET", path + "/metrics", shop))["equity"] == 25000
    orchestrated = await call(client, "GET", f"/api/v1/propfirm/accounts/{account['id']}", both)
    assert orchestrated["id"] == account["id"]  # one tenant, one set of accounts

    # funded with profit by the broker's staff, then the partner requests a payout
    await call(client, "POST", f"/api/v1/propfirm/accounts/{account['id']}/phase", both)
    await call(
        client,
        "POST",
        f"/api/v1/propfirm/accounts/{account['id']}/balance",
        both,
        {"operation": "adjust", "amount": 1500},
    )
    pending = await call(client, "POST", path + "/payout-request", shop, {"amount": 1000}, 202)
    assert (pending["status"], pending["amount"]) == ("pending", 1000)
    assert (pending["trader_share"], pending["firm_share"]) == (800, 200)
    still = await call(client, "GET", path, shop)
    assert still["balance"] == 26500  # nothing moved yet

    listed = await call(client, "GET", "/api/backoffice/prop/payouts?status=pending", staff)
    assert [p["id"] for p in listed["items"]] == [pending["id"]]
    approved = await call(
        client, "PATCH", f"/api/backoffice/prop/payouts/{pending['id']}/approve", staff
    )
    assert (approved["id"], approved["status"]) == (pending["id"], "processed")
    assert (await call(client, "GET", path, shop))["balance"] == 25500
    again = await client.patch(
        f"/api/backoffice/prop/payouts/{pending['id']}/approve", headers=staff
    )
    assert again.status == 409
    seen = await call(client, "GET", f"/api/v1/propfirm/payouts/{pending['id']}", both)
    assert seen["status"] == "processed"
    payout_events = await events(kernel, "payout.requested", "payout.processed")
    assert [
        (e["type"], e["payout_id"], e["tenant_id"], e["trader_share"]) for e in payout_events
    ] == [
        ("payout.requested", pending["id"], "alpha", "800.00"),
        ("payout.processed", pending["id"], "alpha", "800.00"),
    ]
    [created] = await events(kernel, "account.created")
    assert (created["account_id"], created["source"]) == (account["id"], "storefront")


async def test_broker_plan_admin_and_payout_approval_need_staff_permissions(
    client: Client, kernel: Kernel
) -> None:
    staff = await staff_headers(client)
    plan = await broker_plan(client, staff, "BK-10K", account_size=10000)
    path = f"/api/platform/prop/plans/{plan['id']}"
    assert await call(client, "GET", "/api/platform/prop/plans", staff) == [plan]
    assert await call(client, "GET", path, staff) == plan
    changed = await call(client, "PATCH", path, staff, {"visibility": "hidden"})
    assert changed["visibility"] == "hidden"
    detail = (await call(client, "PATCH", path, staff, {"leverage": 0, "bogus": 1}, 422))["detail"]
    assert sorted(e["type"] for e in detail) == ["additionalProperties", "minimum"]
    assert (await call(client, "DELETE", path, staff))["id"] == plan["id"]
    await call(client, "GET", path, staff, status=404)

    _, dealer = await staff_with(kernel, "prop_viewer", ["view_customers"])
    admin_routes = (
        ("GET", "/api/platform/prop/plans", "manage_groups"),
        ("POST", "/api/platform/prop/plans", "manage_groups"),
        ("GET", path, "manage_groups"),
        ("PATCH", path, "manage_groups"),
        ("DELETE", path, "manage_groups"),
        ("GET", "/api/backoffice/prop/payouts", "approve_deposits"),
        ("PATCH", "/api/backoffice/prop/payouts/x/approve", "approve_deposits"),
        ("PATCH", "/api/backoffice/prop/payouts/x/reject", "approve_deposits"),
    )
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", PARTNER_SCOPES)
    for method, route, permission in admin_routes:
        response = await client.request(method, route, json={}, headers=dealer)
        assert (response.status, await response.json()) == (
            403,
            {"detail": f"Missing permission: {permission}"},
        )
        response = await client.request(method, route, json={}, headers=firm)
        assert (response.status, await response.json()) == (
            403,
            {"detail": "Staff access required"},
        )
    unknown = await client.patch("/api/backoffice/prop/payouts/x/approve", headers=staff)
    assert unknown.status == 404


async def test_the_broker_declines_a_pending_payout_and_no_money_moves(
    client: Client, kernel: Kernel
) -> None:
    staff = await staff_headers(client)
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", (*ORCHESTRATION, *STOREFRONT))
    plan = await broker_plan(client, staff, "BK-DECLINE", account_size=25000)
    account = await call(
        client,
        "POST",
        "/api/v1/storefront/accounts",
        firm,
        provision_body(plan["id"], "tess@shop.test"),
        201,
    )
    orchestrated = f"/api/v1/propfirm/accounts/{account['id']}"
    await call(client, "POST", orchestrated + "/phase", firm)
    await call(
        client, "POST", orchestrated + "/balance", firm, {"operation": "adjust", "amount": 1500}
    )
    path = f"/api/v1/storefront/accounts/{account['id']}"
    pending = await call(client, "POST", path + "/payout-request", firm, {"amount": 1000}, 202)
    reject = f"/api/backoffice/prop/payouts/{pending['id']}/reject"

    invalid = await call(client, "PATCH", reject, staff, {"reason": "", "x": 1}, 422)
    assert [(e["loc"], e["type"]) for e in invalid["detail"]] == [
        (["body"], "additionalProperties"),
        (["body", "reason"], "minLength"),
    ]
    unknown = "/api/backoffice/prop/payouts/payout_nope/reject"
    missing = await call(client, "PATCH", unknown, staff, {"reason": "kyc"}, 404)
    assert missing == {"detail": "Payout not found"}
    rejected = await call(client, "PATCH", reject, staff, {"reason": "KYC documents expired"})
    assert (rejected["id"], rejected["status"], rejected["reason"]) == (
        pending["id"],
        "rejected",
        "KYC documents expired",
    )
    assert (rejected["ledger_ref"], rejected["processed_at"] is not None) == (None, True)
    assert (await call(client, "GET", path, firm))["balance"] == 26500  # nothing moved
    for verb in ("reject", "approve"):
        again = f"/api/backoffice/prop/payouts/{pending['id']}/{verb}"
        body = {"reason": "twice"} if verb == "reject" else None
        assert await call(client, "PATCH", again, staff, body, 409) == {
            "detail": "The payout is rejected"
        }
    seen = await call(client, "GET", f"/api/v1/propfirm/payouts/{pending['id']}", firm)
    assert seen == rejected
    [event] = await events(kernel, "payout.rejected")
    assert {
        k: event[k] for k in ("payout_id", "tenant_id", "amount", "trader_share", "reason")
    } == {
        "payout_id": pending["id"],
        "tenant_id": "alpha",
        "amount": "1000.00",
        "trader_share": "800.00",
        "reason": "KYC documents expired",
    }
    retry = await call(client, "POST", path + "/payout-request", firm, {"amount": 1000}, 202)
    assert retry["status"] == "pending"  # a declined payout blocks no new request


async def test_payouts_split_the_profit_and_are_refused_before_the_cadence_or_below_minimum(
    client: Client, kernel: Kernel
) -> None:
    await tenant(kernel, "alpha")
    firm = await partner(kernel, "alpha", ORCHESTRATION)
    plan = await create_plan(
        client,
        firm,
        "ALPHA-PAY",
        profit_split=90,
        payout_first_after_days=14,
        payout_minimum=500,
    )
    account = await provision(client, firm, plan["id"], "tess@firm.test")
    path = f"/api/v1/propfirm/accounts/{account['id']}"
    not_funded = await call(client, "POST", path + "/payouts", firm, {"amount": 600}, 409)
    assert not_funded == {"detail": "Payouts are only for funded accounts (this one is active)"}
    funded = await call(client, "POST", path + "/phase", firm)
    eligible = datetime.fromisoformat(funded["funded_at"]) + timedelta(days=14)
    early = await call(client, "POST", path + "/payouts", firm, {"amount": 600}, 409)
    assert early == {"detail": f"The next payout is possible from {eligible.isoformat()}"}
    later(kernel, 15 * 86400)
    no_profit = await call(client, "POST", path + "/payouts", firm, {}, 409)
    assert no_profit == {"detail": "No profit to pay out (profit 0.00)"}
    await call(client, "POST", path + "/balance", firm, {"operation": "adjust", "amount": 1000})
    # money in messages has the currency's digits on every backend (not NUMERIC's scale)
    small = await call(client, "POST", path + "/payouts", firm, {"amount": 400}, 422)
    assert small["detail"] == [
        {
            "loc": ["body", "amount"],
            "msg": "is below the plan's payout minimum 500.00",
            "type": "minimum",
        }
    ]
    too_much = await call(client, "POST", path + "/payouts", firm, {"amount": 1000.01}, 422)
    assert too_much["detail"] == [
        {
            "loc": ["body", "amount"],
            "msg": "exceeds the profit available 1000.00",
            "type": "maximum",
        }
    ]
    withdraw = {"operation": "withdraw", "amount": 101000.01}
    over = await call(client, "POST", path + "/balance", firm, withdraw, 422)
    assert over["detail"] == [
        {
            "loc": ["body", "amount"],
            "msg": "exceeds the withdrawable amount 101000.00",
            "type": "maximum",
        }
    ]
    zero = await call(client, "POST", path + "/payouts", firm, {"amount": 0}, 422)
    assert [(e["loc"], e["type"]) for e in zero["detail"]] == [
        (["body", "amount"], "exclusiveMinimum")
    ]

    payout = await call(
        client,
        "POST",
        path + "/payouts",
        firm,
        {"amount": 600, "destination": {"iban": "CZ6508000000192000145399"}},
        201,
    )
    assert (payout["status"], payout["amount"], payout["account_id"]) == (
        "processed",
        600,
        account["id"],
    )
    assert (payout["trader_share"], payout["firm_share"]) == (540, 60)  # 90% split
    assert payout["destination"] == {"iban": "CZ6508000000192000145399"}
    assert (await call(client, "GET", path, firm))["balance"] == 100400
    assert await call(client, "GET", f"/api/v1/propfirm/payouts/{payout['id']}", firm) == payout
    listed = await call(client, "GET", f"/api/v1/propfirm/payouts?account_id={account['id']}", firm)
    assert (listed["total"], listed["items"]) == (1, [payout])
    pending = await call(client, "GET", "/api/v1/propfirm/payouts?status=pending", firm)
    assert pending["total"] == 0
    paid_at = datetime.fromisoformat(payout["processed_at"])
    again = await call(client, "POST", path + "/payouts", firm, {"amount": 500}, 409)
    assert again == {  # the next one waits payout_every_days (14)
        "detail": f"The next payout is possible from {(paid_at + timedelta(days=14)).isoformat()}"
    }
