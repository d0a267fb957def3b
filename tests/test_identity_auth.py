"""Staff and trader login, tokens, refresh rotation, sessions and 2FA (seed section 2)."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pyotp
import pytest
from aiohttp.test_utils import TestClient
from identity_helpers import STAFF_PASSWORD, bearer, make_staff, staff_token
from sqlalchemy import select
from support import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, register_trader

from brokerkernel.kernel.identity.models import AuthSession, BackupCode, StaffTotp
from brokerkernel.kernel.identity.service import Client as LoginClient
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Customer

Client = TestClient[Any, Any]
USER_FIELDS = {
    "id",
    "email",
    "first_name",
    "last_name",
    "full_name",
    "team_id",
    "role_id",
    "is_active",
    "created_at",
    "last_login_at",
}


async def test_staff_login_returns_seed_shape_and_hs256_tokens_of_15_minutes(
    client: Client, kernel: Kernel
) -> None:
    response = await client.post(
        "/api/admin/users/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    text = await response.text()
    body = await response.json()

    assert response.status == 200
    assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type", "user"}
    assert body["expires_in"] == 900 and body["token_type"] == "bearer"
    assert set(body["user"]) == USER_FIELDS
    assert body["user"]["email"] == ADMIN_EMAIL and body["user"]["role_id"] == 1
    assert body["user"]["full_name"] == "Ada" and body["user"]["last_login_at"] is not None
    assert "argon2" not in text and "password" not in text
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["type"] == "user" and claims["role"] == "admin" and claims["role_id"] == 1
    assert claims["exp"] - claims["iat"] == 900
    assert claims["sub"] == body["user"]["id"]
    async with kernel.db.read() as session:
        stored = await session.get(AuthSession, claims["sid"])
    assert stored is not None and stored.subject_id == claims["sub"]
    assert (stored.expires_at - stored.created_at).total_seconds() == 7 * 24 * 3600
    # the refresh token is opaque and only its digest is stored
    assert body["refresh_token"].count(".") == 0 and len(body["refresh_token"]) >= 40


@pytest.mark.parametrize(
    ("email", "password"),
    [(ADMIN_EMAIL, "Wrong-Pass-123"), ("nobody@broker.test", ADMIN_PASSWORD)],
)
async def test_wrong_credentials_answer_the_same_401(
    client: Client, email: str, password: str
) -> None:
    response = await client.post(
        "/api/admin/users/login", json={"email": email, "password": password}
    )
    assert response.status == 401
    assert await response.json() == {"detail": "Invalid email or password"}


async def test_disabled_staff_gets_403_and_customer_login_checks_too(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    user_id = await make_staff(kernel, "gone@broker.test", "support")
    response = await client.patch(
        f"/api/admin/users/{user_id}", json={"is_active": False}, headers=staff
    )
    assert response.status == 200
    response = await client.post(
        "/api/admin/users/login", json={"email": "gone@broker.test", "password": STAFF_PASSWORD}
    )
    assert response.status == 403
    assert await response.json() == {"detail": "Account disabled"}

    response = await client.post(
        "/api/customer/login", json={"email": "x@test.io", "password": "whatever-1"}
    )
    assert (response.status, await response.json()) == (
        401,
        {"detail": "Invalid email or password"},
    )


async def test_customer_token_carries_the_seed_claims(client: Client) -> None:
    login, _ = await register_trader(client, "claims@test.io")
    response = await client.post(
        "/api/customer/login", json={"email": "claims@test.io", "password": "Trader-Pass-1"}
    )
    body = await response.json()
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])

    assert response.status == 200
    assert claims["type"] == "customer"
    assert claims["login"] == login and claims["logins"] == [login]
    assert claims["compliance_status"] == "active"
    assert claims["force_password_change"] is False
    assert body["customer"]["email"] == "claims@test.io"
    assert body["customer"]["trading_accounts"][0]["login"] == str(login)


async def test_jwt_errors_have_the_exact_seed_bodies(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    missing = "Missing or invalid Authorization header"
    cases = {
        None: missing,
        "Basic YWxhZGRpbjpvcGVu": missing,
        "Bearer": missing,
        "Bearer not-a-jwt": "Invalid token",
        "Bearer " + jwt.encode({"sub": "x", "type": "user"}, "other-secret-" * 4): "Invalid token",
        "Bearer " + jwt.encode({"sub": "x", "iat": 1, "exp": 2**40}, None, algorithm="none"): (
            "Invalid token"
        ),
    }
    for header, detail in cases.items():
        headers = {} if header is None else {"Authorization": header}
        response = await client.get("/api/admin/users/me", headers=headers)
        assert (response.status, await response.json()) == (401, {"detail": detail}), header

    kernel.tokens.wall.offset_s = 901
    response = await client.get("/api/admin/users/me", headers=staff)
    assert (response.status, await response.json()) == (401, {"detail": "Token expired"})


async def test_a_remembered_customer_token_still_expires_and_is_revoked_at_once(
    client: Client, kernel: Kernel
) -> None:
    # the gateway remembers a customer's principal per token (api/auth.py); the
    # token's expiry and its session's revocation still apply on the next request
    _, trader = await register_trader(client, "remembered@test.io")
    me = await client.get("/api/customer/me", headers=trader)
    assert me.status == 200
    kernel.tokens.wall.offset_s = 901
    response = await client.get("/api/customer/me", headers=trader)
    assert (response.status, await response.json()) == (401, {"detail": "Token expired"})
    kernel.tokens.wall.offset_s = 0
    assert (await client.get("/api/customer/me", headers=trader)).status == 200

    revoked = await kernel.identity.sessions.revoke("customer", (await me.json())["id"])
    response = await client.get("/api/customer/me", headers=trader)
    assert revoked == 1
    assert (response.status, await response.json()) == (401, {"detail": "Invalid token"})


async def test_refresh_rotates_and_reuse_after_rotation_revokes_the_family(
    client: Client, kernel: Kernel
) -> None:
    first = await (
        await client.post(
            "/api/admin/users/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    ).json()

    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    second = await response.json()
    assert response.status == 200
    assert set(second) == {"access_token", "refresh_token", "expires_in", "token_type"}
    assert second["refresh_token"] != first["refresh_token"]
    response = await client.get("/api/admin/users/me", headers=bearer(second["access_token"]))
    assert response.status == 200

    kernel.tokens.wall.offset_s = 11  # past the 10 s reuse grace
    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert (response.status, await response.json()) == (
        401,
        {"detail": "Invalid, expired, or revoked refresh token"},
    )
    # the whole family is gone: the newest refresh token and the session's access tokens
    response = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert response.status == 401
    for token in (first["access_token"], second["access_token"]):
        response = await client.get("/api/admin/users/me", headers=bearer(token))
        assert (response.status, await response.json()) == (401, {"detail": "Invalid token"})
    claims = jwt.decode(first["access_token"], JWT_SECRET, algorithms=["HS256"])
    async with kernel.db.read() as session:
        revoked = await session.get(AuthSession, claims["sid"])
    assert revoked is not None and revoked.revoked_reason == "refresh_reuse"


async def test_two_concurrent_refreshes_within_the_grace_both_succeed(client: Client) -> None:
    tokens = await (
        await client.post(
            "/api/admin/users/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    ).json()
    body = {"refresh_token": tokens["refresh_token"]}
    first, second = await asyncio.gather(
        client.post("/api/admin/auth/refresh", json=body),
        client.post("/api/admin/auth/refresh", json=body),
    )
    assert (first.status, second.status) == (200, 200)
    refreshed = {(await first.json())["refresh_token"], (await second.json())["refresh_token"]}
    assert len(refreshed) == 2


async def test_refresh_issues_current_claims_and_expired_refresh_is_refused(
    client: Client, kernel: Kernel
) -> None:
    await register_trader(client, "fresh@test.io")
    tokens = await (
        await client.post(
            "/api/customer/login", json={"email": "fresh@test.io", "password": "Trader-Pass-1"}
        )
    ).json()
    async with kernel.db.transaction() as session:
        customer = await session.scalar(select(Customer).where(Customer.email == "fresh@test.io"))
        assert customer is not None
        customer.compliance_status = "restricted"
    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    refreshed = await response.json()
    claims = jwt.decode(refreshed["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["compliance_status"] == "restricted" and claims["type"] == "customer"

    kernel.tokens.wall.offset_s = 7 * 24 * 3600 + 1
    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": refreshed["refresh_token"]}
    )
    assert response.status == 401


async def test_sessions_list_revoke_one_and_revoke_all_others(client: Client) -> None:
    logins = []
    for agent in ("Desk/1.0", "Phone/2.0", "Tablet/3.0"):
        response = await client.post(
            "/api/admin/users/login",
            json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            headers={"User-Agent": agent},
        )
        logins.append(await response.json())
    desk, phone, tablet = (bearer(x["access_token"]) for x in logins)

    response = await client.get("/api/admin/auth/sessions", headers=desk)
    sessions = await response.json()
    assert response.status == 200
    assert [s["device"] for s in sessions] == ["Tablet/3.0", "Phone/2.0", "Desk/1.0"]
    assert [s["current"] for s in sessions] == [False, False, True]
    assert {s["ip"] for s in sessions} == {"127.0.0.1"}
    phone_sid = sessions[1]["session_id"]

    response = await client.delete(f"/api/admin/auth/sessions/{phone_sid}", headers=desk)
    assert response.status == 204
    response = await client.get("/api/admin/users/me", headers=phone)
    assert (response.status, await response.json()) == (401, {"detail": "Invalid token"})
    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": logins[1]["refresh_token"]}
    )
    assert response.status == 401
    response = await client.delete(f"/api/admin/auth/sessions/{phone_sid}", headers=desk)
    assert (response.status, await response.json()) == (404, {"detail": "Session not found"})

    response = await client.delete("/api/admin/auth/sessions", headers=desk)
    assert (response.status, await response.json()) == (200, {"revoked": 1})
    response = await client.get("/api/admin/users/me", headers=tablet)
    assert response.status == 401
    response = await client.get("/auth/sessions", headers=desk)
    assert [s["device"] for s in await response.json()] == ["Desk/1.0"]


async def test_a_user_cannot_revoke_someone_elses_session(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await make_staff(kernel, "other@broker.test", "support")
    other = bearer(await staff_token(kernel, "other@broker.test"))
    sid = (await (await client.get("/api/admin/auth/sessions", headers=staff)).json())[0][
        "session_id"
    ]
    response = await client.delete(f"/api/admin/auth/sessions/{sid}", headers=other)
    assert response.status == 404
    assert (await client.get("/api/admin/users/me", headers=staff)).status == 200


async def test_deactivating_a_user_stops_their_tokens_at_once(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    user_id = await make_staff(kernel, "leaver@broker.test", "support")
    body = await kernel.identity.staff_login(
        "leaver@broker.test", STAFF_PASSWORD, None, LoginClient(device="pytest", ip="127.0.0.1")
    )
    headers = bearer(body["access_token"])
    assert (await client.get("/api/admin/users/me", headers=headers)).status == 200

    response = await client.patch(
        f"/api/admin/users/{user_id}", json={"is_active": False}, headers=staff
    )
    assert response.status == 200
    response = await client.get("/api/admin/users/me", headers=headers)
    assert (response.status, await response.json()) == (401, {"detail": "Invalid token"})
    response = await client.post(
        "/api/admin/auth/refresh", json={"refresh_token": body["refresh_token"]}
    )
    assert response.status == 401


async def test_totp_setup_verify_login_backup_codes_and_disable(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    wall = kernel.tokens.wall
    response = await client.post("/api/admin/auth/2fa/setup", headers=staff)
    setup = await response.json()
    assert response.status == 200
    assert setup["message"] == "Scan QR code, then verify"
    totp = pyotp.TOTP(setup["secret"])
    assert setup["qr_uri"] == totp.provisioning_uri(name=ADMIN_EMAIL, issuer_name="brokerkernel")
    assert setup["qr_uri"].startswith("otpauth://totp/brokerkernel:admin%40broker.test?secret=")

    response = await client.post(
        "/api/admin/auth/2fa/verify", json={"code": "000000"}, headers=staff
    )
    if totp.at(wall.time()) != "000000":
        assert (response.status, await response.json()) == (400, {"detail": "Invalid 2FA code"})
    response = await client.post(
        "/auth/2fa/verify", json={"code": totp.at(wall.time())}, headers=staff
    )
    enabled = await response.json()
    assert response.status == 200
    assert enabled["enabled"] is True and enabled["message"] == "2FA enabled. Save backup codes."
    codes = enabled["backup_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(c) == 8 and int(c, 16) >= 0 for c in codes)
    async with kernel.db.read() as session:
        stored = list(await session.scalars(select(BackupCode.code_hash)))
        sealed = await session.scalar(select(StaffTotp.secret_sealed))
    assert len(stored) == 10 and not set(codes) & set(stored)
    assert sealed is not None and setup["secret"] not in sealed

    login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    response = await client.post("/api/admin/users/login", json=login)
    assert (response.status, await response.json()) == (
        200,
        {"requires_2fa": True, "message": "Enter your 2FA code"},
    )
    wall.offset_s += 30  # the next step: the code used to enable is not replayed
    code = totp.at(wall.time())
    response = await client.post("/api/admin/users/login", json={**login, "totp_code": code})
    assert response.status == 200 and "access_token" in await response.json()
    response = await client.post("/api/admin/users/login", json={**login, "totp_code": code})
    assert (response.status, await response.json()) == (401, {"detail": "Invalid 2FA code"})

    response = await client.post("/api/admin/users/login", json={**login, "totp_code": codes[3]})
    assert response.status == 200
    response = await client.post("/api/admin/users/login", json={**login, "totp_code": codes[3]})
    assert response.status == 401
    response = await client.post(
        "/api/admin/users/login", json={**login, "totp_code": codes[4].upper()}
    )
    assert response.status == 200

    response = await client.post("/api/admin/auth/2fa/setup", headers=staff)
    assert (response.status, await response.json()) == (400, {"detail": "2FA is already enabled"})
    response = await client.post(
        "/api/admin/auth/2fa/disable", json={"code": codes[5]}, headers=staff
    )
    assert (response.status, await response.json()) == (400, {"detail": "Invalid 2FA code"})
    wall.offset_s += 30
    response = await client.post(
        "/api/admin/auth/2fa/disable", json={"code": totp.at(wall.time())}, headers=staff
    )
    assert (response.status, await response.json()) == (
        200,
        {"enabled": False, "message": "2FA has been disabled"},
    )
    response = await client.post("/api/admin/users/login", json=login)
    assert response.status == 200 and "access_token" in await response.json()
    async with kernel.db.read() as session:
        assert list(await session.scalars(select(BackupCode))) == []


async def test_2fa_endpoints_are_for_staff_and_validate_the_code(
    client: Client, staff: dict[str, str]
) -> None:
    _, trader = await register_trader(client, "no2fa@test.io")
    response = await client.post("/api/admin/auth/2fa/setup", headers=trader)
    assert (response.status, await response.json()) == (403, {"detail": "Staff access required"})
    response = await client.post("/api/admin/auth/2fa/verify", json={}, headers=staff)
    assert response.status == 422
    assert (await response.json())["detail"][0]["loc"] == ["body", "code"]
    response = await client.post(
        "/api/admin/auth/2fa/verify", json={"code": "123456"}, headers=staff
    )
    assert (response.status, await response.json()) == (
        400,
        {"detail": "2FA setup has not been started"},
    )
