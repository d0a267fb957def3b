"""The access matrix: every protected route, an allowed and a denied caller.

Each route the app registers is checked with the access the seed names under its
path (``broker-platform-api-reference.txt``: a permission, ``AUTH``, ``CUSTOMER`` or
``PUBLIC``; ``zt4-propfirm-partner-api.txt``: a partner scope). Allowed: a staff role
holding only that permission (a trader for CUSTOMER, any staff user for AUTH, a
partner token with the scope) must get past access control (not 401/403). Denied: a
role holding every permission but that one gets exactly ``403 {"detail": "Missing
permission: <name>"}`` (CUSTOMER: a staff token; AUTH: no token; partner: a token
without the scope).

Adding a route: nothing to do when the seed names it and its handler checks access
before reading the body; otherwise add a :class:`Row` to ``ROWS`` (the access of a
route the seed does not list, path or query values, a body). A route with no access
known fails :func:`test_every_route_has_a_known_access`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from identity_helpers import bearer, make_role, make_staff, staff_token
from support import register_trader

from brokerkernel.kernel.identity.seed import PARTNER_SCOPES, PERMISSION_CATALOG
from brokerkernel.kernel.runtime import Kernel

Client = TestClient[Any, Any]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PUBLIC, AUTH, CUSTOMER = "PUBLIC", "AUTH", "CUSTOMER"
SEEDS = Path(
    os.environ.get("BROKERKERNEL_SEEDS", Path(__file__).resolve().parents[2] / "shared" / "seeds")
)
ALLOWED_LOGIN = 99_999_999
SOME_ID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Row:
    """How to call one route. ``access`` overrides the seed's word (required for
    routes the seed does not list); ``params`` fill path parameters (``$name`` takes a
    value the test made: ``$admin_id``, ``$trader_login``, ``$trader_account_id``,
    ``$request_id``); ``denied`` is the exact 403 detail when it is not the default
    for the access kind."""

    access: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    query: str = f"login={ALLOWED_LOGIN}"
    body: Any = field(default_factory=dict)
    denied: str | None = None


#: Routes needing more than the defaults, keyed by (method, registered path).
ROWS: dict[tuple[str, str], Row] = {
    # the body is validated before the account check
    ("POST", "/api/customer/orders"): Row(
        body={"login": ALLOWED_LOGIN, "symbol": "EURUSD", "cmd": 0, "volume": 0.01}
    ),
    ("POST", "/api/customer/orders/pending"): Row(
        body={
            "login": ALLOWED_LOGIN,
            "symbol": "EURUSD",
            "cmd": 2,
            "volume": 0.01,
            "trigger_price": 1.2,
        }
    ),
    # the resource is looked up before the account check: it must exist
    ("GET", "/api/customer/orders/request/{request_id}"): Row(params={"request_id": "$request_id"}),
    ("GET", "/api/crm/accounts/{account_id}/balance"): Row(
        params={"account_id": "$trader_account_id"}
    ),
    ("GET", "/api/crm/accounts/{account_id}/transactions"): Row(
        params={"account_id": "$trader_account_id"}
    ),
    # presence is refreshed for yourself only
    ("POST", "/api/admin/users/{id}/ping"): Row(params={"id": "$admin_id"}),
    # beyond the seed: identity (issue 4)
    ("GET", "/api/customer/me"): Row(CUSTOMER),
    ("GET", "/api/admin/tenants"): Row("manage_broker_config"),
    ("POST", "/api/admin/tenants"): Row("manage_broker_config"),
    ("PATCH", "/api/admin/tenants/{id}"): Row("manage_broker_config"),
    ("POST", "/api/admin/partner-clients"): Row("manage_partner_clients"),
    ("GET", "/api/admin/partner-clients"): Row("manage_partner_clients"),
    ("GET", "/api/admin/partner-clients/{id}"): Row("manage_partner_clients"),
    ("PATCH", "/api/admin/partner-clients/{id}"): Row("manage_partner_clients"),
    ("POST", "/api/admin/partner-clients/{id}/rotate-secret"): Row("manage_partner_clients"),
    ("POST", "/api/v1/oauth/token"): Row(PUBLIC),
    ("GET", "/openapi.json"): Row(PUBLIC),
    ("GET", "/docs"): Row(PUBLIC),
    ("GET", "/docs/static"): Row(PUBLIC),  # Swagger UI's files
    # beyond the seed: other issues' routes, as their handlers declare them
    ("POST", "/api/backoffice/transactions/{id}/refund"): Row("approve_deposits"),
    ("POST", "/api/backoffice/transactions/{id}/reconcile"): Row("approve_deposits"),
    ("GET", "/api/platform/groups/{id}/swap-rates"): Row("view_customers"),
    ("PUT", "/api/platform/groups/{id}/swap-config"): Row("manage_groups"),
    ("PATCH", "/api/platform/accounts/{login}/mode"): Row("manage_groups"),
    ("GET", "/api/prices/outages"): Row("view_audit"),
    ("POST", "/api/platform/prices/{symbol}"): Row("manage_prices"),
    ("POST", "/api/platform/calendar"): Row("manage_broker_config"),
    ("GET", "/api/customer/ws/prices"): Row(PUBLIC),
    ("POST", "/payments/session"): Row(CUSTOMER, denied="Customer access required"),
    ("POST", "/payments/bridgerpay/session"): Row(denied="Customer access required"),
}

#: Values for path parameters, by name (anything else gets SOME_ID).
PARAMS = {
    "login": str(ALLOWED_LOGIN),
    "ticket": "1",
    "role_id": "999999",  # an unknown role: the escalation guards rank known ones
    "permission_id": "1",
    "symbol": "EURUSD",
    "country": "DE",
    "currency": "USD",
}


def shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def seed_access() -> dict[tuple[str, str], str]:
    """(method, path shape) -> the seed's access word or ``partner:<scope>``."""
    reference = SEEDS / "broker-platform-api-reference.txt"
    if not reference.is_file():
        pytest.fail(f"seed documents not found in {SEEDS}; set BROKERKERNEL_SEEDS")
    table: dict[tuple[str, str], str] = {}
    lines = reference.read_text().splitlines()
    for index, line in enumerate(lines[:-2]):
        if line in METHODS and lines[index + 1].startswith("/"):
            path, _, legacy = lines[index + 1].partition("Legacy:")
            for each in (path, legacy):
                if each.strip():
                    table[(line, shape(each.strip()))] = lines[index + 2].strip()
    scopes = "|".join(re.escape(s) for s in sorted(PARTNER_SCOPES, key=len, reverse=True))
    row = re.compile(rf"^({'|'.join(METHODS)})(/\S*?)({scopes})")
    base = ""
    for line in (SEEDS / "zt4-propfirm-partner-api.txt").read_text().splitlines():
        for prefix in ("/api/v1/propfirm", "/api/v1/storefront"):
            if line.rstrip().endswith(prefix):
                base = prefix
        match = row.match(line)
        if match and base:
            table[(match.group(1), shape(base + match.group(2)))] = f"partner:{match.group(3)}"
    return table


def routes(app: web.Application) -> list[tuple[str, str]]:
    """The app's (method, path) pairs, without HEAD and the legacy aliases."""
    found = []
    for route in app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None:
            continue
        if getattr(route.handler, "__name__", "") == "legacy":
            continue  # a deprecated alias: the same handler as its seed path
        found.append((route.method, resource.canonical))
    return sorted(set(found))


def access_of(method: str, path: str, seed: dict[tuple[str, str], str]) -> str | None:
    row = ROWS.get((method, path))
    if row is not None and row.access is not None:
        return row.access
    return seed.get((method, shape(path)))


def test_every_route_has_a_known_access(client: Client) -> None:
    seed = seed_access()
    unknown = [f"{m} {p}" for m, p in routes(client.app) if access_of(m, p, seed) is None]
    assert unknown == [], "add a Row (with its access) to ROWS for: " + ", ".join(unknown)


def test_every_permission_the_routes_need_is_in_the_catalog(client: Client) -> None:
    seed = seed_access()
    catalog = {name for name, _, _ in PERMISSION_CATALOG}
    needed = {access_of(m, p, seed) for m, p in routes(client.app)}
    words = {w for w in needed if w and w not in (PUBLIC, AUTH, CUSTOMER)}
    assert {w for w in words if not w.startswith("partner:")} <= catalog


class Callers:
    """Tokens for the matrix, made on first use: per permission a role holding only
    it and one holding all others; per scope partner tokens with and without it."""

    def __init__(self, kernel: Kernel, staff: dict[str, str], trader: dict[str, str]) -> None:
        self.kernel = kernel
        self.staff = staff
        self.trader = trader
        self._made: dict[str, dict[str, str]] = {}
        self._tenant_enabled = False

    async def _staff(self, key: str, permissions: list[str]) -> dict[str, str]:
        if key not in self._made:
            name = re.sub(r"[^a-z0-9_]", "_", key)
            role_id = await make_role(self.kernel, name, permissions)
            await make_staff(self.kernel, f"{name}@matrix.test", role_id)
            self._made[key] = bearer(await staff_token(self.kernel, f"{name}@matrix.test"))
        return self._made[key]

    async def only(self, permission: str) -> dict[str, str]:
        return await self._staff(f"only_{permission}", [permission])

    async def all_but(self, permission: str) -> dict[str, str]:
        others = [name for name, _, _ in PERMISSION_CATALOG if name != permission]
        return await self._staff(f"all_but_{permission}", others)

    async def partner(self, scopes: list[str]) -> dict[str, str]:
        key = "partner:" + " ".join(scopes)
        if key not in self._made:
            partners = self.kernel.identity.partners
            if not self._tenant_enabled:
                await partners.update_tenant("default", {"prop_firm_enabled": True})
                self._tenant_enabled = True
            client, secret = await partners.create_client("matrix", "default", scopes, None)
            token = await partners.exchange(client.client_id, secret, None)
            self._made[key] = bearer(token["access_token"])
        return self._made[key]

    async def pair(self, access: str) -> tuple[dict[str, str], dict[str, str], int, str]:
        """(allowed headers, denied headers, denied status, denied detail)."""
        if access == AUTH:
            return self.staff, {}, 401, "Missing or invalid Authorization header"
        if access == CUSTOMER:
            return self.trader, self.staff, 403, "Not a customer JWT"
        if access.startswith("partner:"):
            scope = access.split(":", 1)[1]
            others = [s for s in PARTNER_SCOPES if s != scope]
            return (
                await self.partner(list(PARTNER_SCOPES)),
                await self.partner(others),
                403,
                "insufficient_scope",
            )
        return (
            await self.only(access),
            await self.all_but(access),
            403,
            f"Missing permission: {access}",
        )


async def test_each_protected_route_admits_the_allowed_and_refuses_the_denied(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "matrix@test.io")
    callers = Callers(kernel, staff, trader)
    account = await (await client.get("/api/customer/me", headers=trader)).json()
    order = await client.post(
        "/api/customer/orders",
        json={"login": login, "symbol": "EURUSD", "cmd": 0, "volume": 0.01},
        headers=trader,
    )
    made = {
        "$admin_id": (await (await client.get("/api/admin/users/me", headers=staff)).json())["id"],
        "$trader_login": str(login),
        "$trader_account_id": account["trading_accounts"][0]["id"],
        "$request_id": (await order.json())["request_id"],
    }
    seed = seed_access()
    failures: list[str] = []
    checked = 0

    async def call(method: str, path: str, row: Row, headers: dict[str, str]) -> tuple[int, Any]:
        def value(match: re.Match[str]) -> str:
            given = row.params.get(match.group(1), PARAMS.get(match.group(1), SOME_ID))
            return made.get(given, given)

        url = re.sub(r"\{([^}]+)\}", value, path)
        response = await client.request(
            method,
            f"{url}?{row.query}",
            json=None if method == "GET" else row.body,
            headers=headers,
        )
        try:
            body = await response.json() if response.status in (401, 403) else None
        finally:
            response.close()  # streams (SSE) are not read
        return response.status, body

    for method, path in routes(client.app):
        access = access_of(method, path, seed)
        if access is None or access == PUBLIC:
            continue
        row = ROWS.get((method, path), Row())
        allowed, denied, status, detail = await callers.pair(access)
        detail = row.denied or detail
        got = await call(method, path, row, allowed)
        if got[0] in (401, 403):
            failures.append(f"{method} {path} [{access}] allowed caller got {got}")
        got = await call(method, path, row, denied)
        if got != (status, {"detail": detail}):
            failures.append(f"{method} {path} [{access}] denied caller got {got}")
        checked += 1

    assert failures == [], "\n".join(failures)
    assert checked >= 60
