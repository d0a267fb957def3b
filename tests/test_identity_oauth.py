"""Partner OAuth2 (ZT4 partner API): client provisioning, the client-credentials
grant driven by a real OAuth2 client library (Authlib), and the entitlement gate."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import select
from support import create_admin, register_trader, staff_headers

from brokerkernel.api.app import create_app
from brokerkernel.api.auth import require_partner
from brokerkernel.kernel.identity.models import PartnerClient
from brokerkernel.kernel.runtime import Kernel

Client = TestClient[Any, Any]
Factory = Any
CLIENT_FIELDS = {
    "id",
    "client_id",
    "name",
    "tenant_id",
    "scopes",
    "scope",
    "is_active",
    "created_by",
    "created_at",
    "last_used_at",
}


async def plans(request: web.Request) -> web.Response:
    """A stand-in prop-firm endpoint guarded like the real ones (scope plans:read)."""
    who = require_partner(request, "plans:read")
    return web.json_response({"client_id": who.subject, "tenant_id": who.tenant_id})


@pytest.fixture
async def partner_api(kernel: Kernel, aiohttp_client: Factory) -> tuple[Client, dict[str, str]]:
    app = create_app(kernel)
    app.router.add_get("/api/v1/propfirm/plans", plans)
    client = await aiohttp_client(app)
    await create_admin(kernel)
    return client, await staff_headers(client)


async def new_client(client: Client, staff: dict[str, str], scopes: list[str]) -> dict[str, Any]:
    response = await client.post(
        "/api/admin/partner-clients",
        json={"name": "Acme Prop", "scopes": scopes},
        headers=staff,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def oauth(client: Client, created: dict[str, Any], **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=created["client_id"],
        client_secret=created["client_secret"],
        base_url=str(client.make_url("")),
        **kwargs,
    )


async def test_admin_creates_a_client_whose_secret_is_shown_once_and_stored_hashed(
    partner_api: tuple[Client, dict[str, str]], kernel: Kernel
) -> None:
    client, staff = partner_api
    created = await new_client(client, staff, ["plans:read", "catalog:read"])
    assert set(created) == CLIENT_FIELDS | {"client_secret"}
    assert created["scopes"] == ["plans:read", "catalog:read"]
    assert created["scope"] == "plans:read catalog:read"
    assert created["tenant_id"] == "default" and created["client_id"].startswith("pc_")

    listed = await (await client.get("/api/admin/partner-clients", headers=staff)).json()
    assert [set(c) for c in listed] == [CLIENT_FIELDS]
    fetched = await client.get(f"/api/admin/partner-clients/{created['id']}", headers=staff)
    assert "client_secret" not in await fetched.json()
    async with kernel.db.read() as session:
        stored = await session.scalar(select(PartnerClient.secret_hash))
    assert stored == hashlib.sha256(created["client_secret"].encode()).hexdigest()

    response = await client.post(
        "/api/admin/partner-clients",
        json={"name": "Bad", "scopes": ["plans:read", "root:all"], "tenant_id": "nope"},
        headers=staff,
    )
    assert response.status == 422
    response = await client.post(
        "/api/admin/partner-clients",
        json={"name": "Bad", "scopes": ["plans:read"], "tenant_id": "nope"},
        headers=staff,
    )
    assert (response.status, await response.json()) == (404, {"detail": "Tenant not found"})


async def test_authlib_client_credentials_grant_and_the_entitlement_gate(
    partner_api: tuple[Client, dict[str, str]],
) -> None:
    client, staff = partner_api
    created = await new_client(client, staff, ["plans:read", "catalog:read"])

    async with oauth(client, created) as partner:  # client_secret_basic, Authlib's default
        token = await partner.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
        assert token["scope"] == "plans:read catalog:read"

        response = await partner.get("/api/v1/propfirm/plans")
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "prop_firm_not_enabled"},
        )
        enable = await client.patch(
            "/api/admin/tenants/default", json={"prop_firm_enabled": True}, headers=staff
        )
        assert enable.status == 200 and (await enable.json())["prop_firm_enabled"] is True
        response = await partner.get("/api/v1/propfirm/plans")
        assert (response.status_code, response.json()) == (
            200,
            {"client_id": created["client_id"], "tenant_id": "default"},
        )

    async with oauth(client, created, scope="catalog:read") as narrow:
        token = await narrow.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert token["scope"] == "catalog:read"
        response = await narrow.get("/api/v1/propfirm/plans")
        assert (response.status_code, response.json()) == (403, {"detail": "insufficient_scope"})
        assert response.headers["WWW-Authenticate"] == (
            'Bearer error="insufficient_scope", scope="plans:read"'
        )

    async with oauth(client, created, scope="plans:read payouts:write") as wide:
        with pytest.raises(OAuthError) as refused:
            await wide.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert refused.value.error == "invalid_scope"
        assert refused.value.description == "Scope not granted to this client: payouts:write"


async def test_client_secret_post_bad_secrets_and_rfc6749_errors(
    partner_api: tuple[Client, dict[str, str]],
) -> None:
    client, staff = partner_api
    created = await new_client(client, staff, ["accounts:read"])
    async with oauth(client, created, token_endpoint_auth_method="client_secret_post") as partner:
        token = await partner.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert token["scope"] == "accounts:read"

    async with oauth(client, {**created, "client_secret": "wrong"}) as impostor:
        with pytest.raises(OAuthError) as refused:
            await impostor.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert refused.value.error == "invalid_client"

    response = await client.post(
        "/api/v1/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "pc_x", "client_secret": "y"},
    )
    assert response.status == 401
    assert await response.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed",
    }
    assert response.headers["Cache-Control"] == "no-store"
    response = await client.post(
        "/api/v1/oauth/token",
        data={"grant_type": "password", "username": "a", "password": "b"},
    )
    assert (response.status, (await response.json())["error"]) == (400, "unsupported_grant_type")
    response = await client.post("/api/v1/oauth/token", json={"grant_type": "client_credentials"})
    assert (response.status, (await response.json())["error"]) == (400, "invalid_request")
    response = await client.post(
        "/api/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!"},
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


async def test_deactivating_a_client_or_rotating_its_secret_applies_at_once(
    partner_api: tuple[Client, dict[str, str]],
) -> None:
    client, staff = partner_api
    await client.patch(
        "/api/admin/tenants/default", json={"prop_firm_enabled": True}, headers=staff
    )
    created = await new_client(client, staff, ["plans:read"])
    async with oauth(client, created) as partner:
        await partner.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert (await partner.get("/api/v1/propfirm/plans")).status_code == 200

        response = await client.post(
            f"/api/admin/partner-clients/{created['id']}/rotate-secret", headers=staff
        )
        rotated = await response.json()
        assert response.status == 200 and rotated["client_secret"] != created["client_secret"]
        response = await client.patch(
            f"/api/admin/partner-clients/{created['id']}", json={"is_active": False}, headers=staff
        )
        assert (await response.json())["is_active"] is False
        response = await partner.get("/api/v1/propfirm/plans")
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})

    await client.patch(
        f"/api/admin/partner-clients/{created['id']}", json={"is_active": True}, headers=staff
    )
    async with oauth(client, created) as old:
        with pytest.raises(OAuthError):
            await old.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
    async with oauth(client, rotated) as new:
        token = await new.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        assert token["scope"] == "plans:read"


async def test_partner_staff_and_trader_tokens_stay_in_their_lanes(
    partner_api: tuple[Client, dict[str, str]],
) -> None:
    client, staff = partner_api
    created = await new_client(client, staff, ["plans:read"])
    async with oauth(client, created) as partner:
        await partner.fetch_token("/api/v1/oauth/token", grant_type="client_credentials")
        response = await partner.get("/api/admin/users")
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "Staff access required"},
        )
    response = await client.get("/api/v1/propfirm/plans", headers=staff)
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Partner access token required"},
    )
    _, trader = await register_trader(client, "lanes@test.io")
    response = await client.post(
        "/api/admin/partner-clients", json={"name": "X", "scopes": ["plans:read"]}, headers=trader
    )
    assert (response.status, await response.json()) == (403, {"detail": "Staff access required"})
    response = await client.get("/api/admin/tenants", headers=staff)
    assert [t["id"] for t in await response.json()] == ["default"]
    response = await client.post(
        "/api/admin/tenants", json={"id": "second", "name": "Second broker"}, headers=staff
    )
    assert response.status == 201
    assert (await response.json())["prop_firm_enabled"] is False
