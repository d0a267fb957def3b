"""Trader autologin, password reset, forced password change and profile (seed section 2)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from aiohttp.test_utils import TestClient
from identity_helpers import TRADER_PASSWORD, bearer, customer_id_of
from sqlalchemy import select
from support import JWT_SECRET, register_trader

from brokerkernel.kernel.identity.models import PasswordResetToken
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Customer, OutboxEvent

Client = TestClient[Any, Any]
UNUSABLE = {"detail": "Token invalid, expired, or already used"}
AUTOLOGIN_REFUSED = {"detail": "Autologin token invalid, already used, or expired"}


async def set_customer(kernel: Kernel, email: str, **values: Any) -> None:
    async with kernel.db.transaction() as session:
        customer = await session.scalar(select(Customer).where(Customer.email == email))
        assert customer is not None
        for key, value in values.items():
            setattr(customer, key, value)


# ----------------------------------------------------------------------- autologin


async def test_autologin_token_logs_in_once(client: Client, kernel: Kernel) -> None:
    login, _ = await register_trader(client, "auto@test.io")
    customer_id = await customer_id_of(kernel, "auto@test.io")
    token, _ = await kernel.identity.autologin.issue(customer_id, affiliate=False)

    response = await client.get(f"/api/customer/autologin?token={token}")
    body = await response.json()
    assert response.status == 200
    assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type", "customer"}
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert (claims["type"], claims["login"], claims["sub"]) == ("customer", login, customer_id)

    response = await client.get(f"/auth/autologin?token={token}")
    assert (response.status, await response.json()) == (401, AUTOLOGIN_REFUSED)
    response = await client.get("/api/customer/autologin")
    assert response.status == 422


async def test_concurrent_redemptions_burn_the_token_once(client: Client, kernel: Kernel) -> None:
    await register_trader(client, "race@test.io")
    customer_id = await customer_id_of(kernel, "race@test.io")
    token, _ = await kernel.identity.autologin.issue(customer_id, affiliate=True)
    responses = await asyncio.gather(
        *(client.get(f"/api/customer/autologin?token={token}") for _ in range(5))
    )
    assert sorted(r.status for r in responses) == [200, 401, 401, 401, 401]


async def test_autologin_lifetimes_15_minutes_organic_72_hours_affiliate(
    client: Client, kernel: Kernel
) -> None:
    await register_trader(client, "ttl@test.io")
    customer_id = await customer_id_of(kernel, "ttl@test.io")
    wall = kernel.tokens.wall
    organic, organic_expiry = await kernel.identity.autologin.issue(customer_id, affiliate=False)
    affiliate, affiliate_expiry = await kernel.identity.autologin.issue(customer_id, affiliate=True)
    assert round((affiliate_expiry - organic_expiry).total_seconds()) == 72 * 3600 - 15 * 60

    wall.offset_s = 15 * 60 + 1
    response = await client.get(f"/api/customer/autologin?token={organic}")
    assert (response.status, await response.json()) == (401, AUTOLOGIN_REFUSED)
    wall.offset_s = 71 * 3600
    response = await client.get(f"/api/customer/autologin?token={affiliate}")
    assert response.status == 200


async def test_autologin_of_a_disabled_customer_is_403(client: Client, kernel: Kernel) -> None:
    await register_trader(client, "off@test.io")
    customer_id = await customer_id_of(kernel, "off@test.io")
    token, _ = await kernel.identity.autologin.issue(customer_id, affiliate=False)
    await set_customer(kernel, "off@test.io", is_active=False)
    response = await client.get(f"/api/customer/autologin?token={token}")
    assert (response.status, await response.json()) == (403, {"detail": "Account disabled"})


# ----------------------------------------------------------- forced password change


async def test_forced_password_change_allows_only_three_routes(
    client: Client, kernel: Kernel
) -> None:
    login, _ = await register_trader(client, "forced@test.io")
    await set_customer(kernel, "forced@test.io", force_password_change=True)
    token, _ = await kernel.identity.autologin.issue(
        await customer_id_of(kernel, "forced@test.io"), affiliate=True
    )
    session = await (await client.get(f"/api/customer/autologin?token={token}")).json()
    forced = bearer(session["access_token"])
    assert jwt.decode(session["access_token"], JWT_SECRET, algorithms=["HS256"])[
        "force_password_change"
    ]

    for method, path in (
        ("GET", f"/api/crm/orders?login={login}"),
        ("GET", f"/api/crm/accounts/{login}/state"),
        ("GET", "/api/admin/auth/sessions"),
        ("POST", "/api/customer/password-reset/request"),
    ):
        response = await client.request(method, path, headers=forced, json={})
        assert (response.status, await response.json()) == (
            403,
            {"detail": "Password change required"},
        ), path
    assert (await client.get("/customers/me", headers=forced)).status == 200
    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert response.status == 200

    response = await client.post(
        "/customers/me/password", json={"new_password": "Chosen-Pass-9"}, headers=forced
    )
    changed = await response.json()
    assert response.status == 200
    assert changed["message"] == "Password updated successfully"
    claims = jwt.decode(changed["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["force_password_change"] is False
    response = await client.get(
        f"/api/crm/orders?login={login}", headers=bearer(changed["access_token"])
    )
    assert response.status == 200
    response = await client.post(
        "/api/customer/login", json={"email": "forced@test.io", "password": "Chosen-Pass-9"}
    )
    assert response.status == 200


async def test_password_change_rules(client: Client, kernel: Kernel, staff: dict[str, str]) -> None:
    _, trader = await register_trader(client, "change@test.io")
    other_session = await (
        await client.post(
            "/api/customer/login", json={"email": "change@test.io", "password": TRADER_PASSWORD}
        )
    ).json()
    url = "/api/customer/me/password"

    response = await client.post(url, json={"new_password": "New-Pass-123"}, headers=staff)
    assert (response.status, await response.json()) == (403, {"detail": "Not a customer JWT"})
    response = await client.post(url, json={"new_password": "x" * 7}, headers=trader)
    assert response.status == 422
    response = await client.post(url, json={"new_password": "x" * 73}, headers=trader)
    assert response.status == 422
    response = await client.post(url, json={"new_password": "New-Pass-123"}, headers=trader)
    assert (response.status, await response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "current_password"],
                    "msg": "required unless a password change is forced",
                    "type": "required",
                }
            ]
        },
    )
    response = await client.post(
        url, json={"new_password": "New-Pass-123", "current_password": "wrong"}, headers=trader
    )
    assert response.status == 422
    response = await client.post(
        url,
        json={"new_password": "New-Pass-123", "current_password": TRADER_PASSWORD},
        headers=trader,
    )
    assert response.status == 200
    # this session continues; the other one was revoked
    assert (await client.get("/api/customer/me", headers=trader)).status == 200
    response = await client.get("/api/customer/me", headers=bearer(other_session["access_token"]))
    assert response.status == 401


# ------------------------------------------------------------------ password reset


async def test_reset_request_limit_verify_confirm_and_burn(client: Client, kernel: Kernel) -> None:
    _, trader = await register_trader(client, "reset@test.io")
    urls = []
    for _ in range(3):
        response = await client.post(
            "/api/customer/password-reset/request", json={}, headers=trader
        )
        assert response.status == 200
        urls.append((await response.json())["reset_url"])
    response = await client.post("/customers/password-reset/request", json={}, headers=trader)
    assert response.status == 429
    assert await response.json() == {
        "detail": "Too many password reset requests: at most 3 active links per 15 minutes"
    }
    parts = urlsplit(urls[0])
    assert (parts.path, parts.netloc) == ("/reset-password", f"127.0.0.1:{client.port}")
    token = parse_qs(parts.query)["token"][0]

    for _ in range(2):  # verifying does not burn
        response = await client.get(f"/api/customer/password-reset/verify?token={token}")
        assert (response.status, await response.json()) == (
            200,
            {"valid": True, "email": "re***@test.io"},
        )
    response = await client.post(
        "/api/customer/password-reset/confirm",
        json={"token": token, "new_password": "short"},
    )
    assert response.status == 422
    response = await client.post(
        "/api/customer/password-reset/confirm",
        json={"token": token, "new_password": "Reset-Pass-42"},
    )
    assert (response.status, await response.json()) == (
        200,
        {"message": "Password updated successfully"},
    )
    response = await client.post(
        "/customers/password-reset/confirm", json={"token": token, "new_password": "Again-Pass-1"}
    )
    assert (response.status, await response.json()) == (401, UNUSABLE)
    # the customer's other links are burned and every session revoked
    other = parse_qs(urlsplit(urls[1]).query)["token"][0]
    response = await client.get(f"/customers/password-reset/verify?token={other}")
    assert (response.status, await response.json()) == (401, UNUSABLE)
    assert (await client.get("/api/customer/me", headers=trader)).status == 401
    response = await client.post(
        "/api/customer/login", json={"email": "reset@test.io", "password": "Reset-Pass-42"}
    )
    assert response.status == 200
    async with kernel.db.read() as session:
        hashes = set(await session.scalars(select(PasswordResetToken.token_hash)))
    assert len(hashes) == 3 and token not in hashes


async def test_forgot_never_reveals_whether_the_email_exists(
    client: Client, kernel: Kernel
) -> None:
    await register_trader(client, "known@test.io")
    message = {"message": "If an account exists with that email, a reset link has been generated"}
    for email in ("known@test.io", "unknown@test.io", "KNOWN@test.io"):
        response = await client.post("/api/customer/password-reset/forgot", json={"email": email})
        assert (response.status, await response.json()) == (200, message)
    for _ in range(2):  # over the limit: still the same answer
        response = await client.post(
            "/customers/password-reset/forgot", json={"email": "known@test.io"}
        )
        assert (response.status, await response.json()) == (200, message)
    async with kernel.db.read() as session:
        events = list(
            await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == "customer.password_reset_requested")
            )
        )
    customer_id = await customer_id_of(kernel, "known@test.io")
    assert len(events) == 3
    assert {e.payload["customer_id"] for e in events} == {customer_id}
    assert all(e.payload["reset_url"].startswith("http://127.0.0.1:") for e in events)


async def test_concurrent_confirms_burn_the_token_once_and_expiry_applies(
    client: Client, kernel: Kernel
) -> None:
    _, trader = await register_trader(client, "twice@test.io")
    urls = [
        (
            await (
                await client.post("/api/customer/password-reset/request", json={}, headers=trader)
            ).json()
        )["reset_url"]
        for _ in range(2)
    ]
    first, second = (parse_qs(urlsplit(u).query)["token"][0] for u in urls)
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/customer/password-reset/confirm",
                json={"token": first, "new_password": f"Racing-Pass-{i}"},
            )
            for i in range(3)
        )
    )
    assert sorted(r.status for r in responses) == [200, 401, 401]

    _, again = await register_trader(client, "late@test.io")
    late = (
        await (
            await client.post("/api/customer/password-reset/request", json={}, headers=again)
        ).json()
    )["reset_url"]
    kernel.tokens.wall.offset_s = 15 * 60 + 1
    response = await client.get(f"/api/customer/password-reset/verify?{urlsplit(late).query}")
    assert (response.status, await response.json()) == (401, UNUSABLE)
    assert second != first
