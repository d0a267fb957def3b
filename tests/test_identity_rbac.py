"""Roles, the permission catalog, grants, team overrides, escalation guards, scopes,
PII masking and the RBAC cache across processes (seed sections 17-19)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from identity_helpers import (
    bearer,
    make_role,
    make_staff,
    second_kernel,
    staff_token,
    staff_with,
)
from sqlalchemy import select
from support import register_trader

from brokerkernel.api.app import create_app
from brokerkernel.api.auth import (
    Principal,
    authenticate,
    customer_scope_clause,
    require_customer_access,
    require_pii_export,
    show_customer,
)
from brokerkernel.kernel.identity.pii import mask_customer, mask_email, mask_phone
from brokerkernel.kernel.identity.rbac import RolePolicy
from brokerkernel.kernel.identity.seed import PERMISSION_CATALOG
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Role, StaffUser

Client = TestClient[Any, Any]
Factory = Any


async def permission_id(client: Client, staff: dict[str, str], name: str) -> int:
    catalog = await (await client.get("/api/admin/permissions", headers=staff)).json()
    return next(p["id"] for p in catalog if p["name"] == name)


# ---------------------------------------------------------------- catalog and roles


async def test_catalog_holds_every_seed_permission_and_filters_by_category(
    client: Client, staff: dict[str, str]
) -> None:
    response = await client.get("/api/admin/permissions", headers=staff)
    catalog = await response.json()
    assert [(p["id"], p["name"], p["category"]) for p in catalog] == [
        (i, name, category) for i, (name, category, _) in enumerate(PERMISSION_CATALOG, 1)
    ]
    response = await client.get("/permissions?category=finance", headers=staff)
    assert [p["name"] for p in await response.json()] == [
        "create_deposits",
        "approve_deposits",
        "process_chargebacks",
        "close_accounts",
        "manage_payment_routing",
    ]


async def test_seeded_roles_have_their_rbac_columns(client: Client, staff: dict[str, str]) -> None:
    response = await client.get("/api/admin/roles", headers=staff)
    roles = {r["name"]: r for r in await response.json()}
    assert {k: roles["admin"][k] for k in ("customer_view_scope", "pii_email", "level")} == {
        "customer_view_scope": "all",
        "pii_email": "full",
        "level": 100,
    }
    assert set(roles["admin"]["permissions"]) == {name for name, _, _ in PERMISSION_CATALOG}
    assert roles["dealer"]["customer_edit_scope"] == "none"
    assert roles["support"]["pii_phone"] == "masked" and roles["support"]["level"] == 10


async def test_create_update_and_validate_roles(client: Client, staff: dict[str, str]) -> None:
    body = {
        "name": "retention_agent",
        "display_name": "Retention Agent",
        "description": "Handles churning customers",
        "customer_view_scope": "own",
        "customer_edit_scope": "none",
        "pii_email": "masked",
        "pii_phone": "masked",
        "can_export_pii": False,
        "level": 0,
    }
    response = await client.post("/api/admin/roles", json=body, headers=staff)
    created = await response.json()
    assert response.status == 201
    assert created == {**body, "id": created["id"], "is_active": True, "permissions": []}

    response = await client.post("/api/admin/roles", json=body, headers=staff)
    assert (response.status, await response.json()) == (409, {"detail": "Role name already exists"})
    response = await client.post(
        "/api/admin/roles",
        json={"name": "x y", "display_name": "X", "pii_email": "partial", "level": -1},
        headers=staff,
    )
    assert response.status == 422
    assert [e["loc"] for e in (await response.json())["detail"]] == [
        ["body", "level"],
        ["body", "name"],
        ["body", "pii_email"],
    ]
    response = await client.patch(
        f"/api/admin/roles/{created['id']}",
        json={"customer_view_scope": "team", "is_active": False},
        headers=staff,
    )
    assert response.status == 200
    assert (await response.json())["customer_view_scope"] == "team"
    listed = await (await client.get("/api/admin/roles", headers=staff)).json()
    assert "retention_agent" not in {r["name"] for r in listed}
    listed = await (await client.get("/roles?include_inactive=true", headers=staff)).json()
    assert "retention_agent" in {r["name"] for r in listed}
    response = await client.get("/api/admin/roles/999", headers=staff)
    assert (response.status, await response.json()) == (404, {"detail": "Role not found"})
    response = await client.get("/api/admin/roles/abc", headers=staff)
    assert response.status == 422


async def test_grants_apply_to_existing_tokens_at_once(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    _, agent = await staff_with(kernel, "rbac_agent", ["view_customers"])
    role_id = (await (await client.get("/api/admin/users/me", headers=agent)).json())["role_id"]
    view_users = await permission_id(client, staff, "view_users")

    response = await client.get("/api/admin/users", headers=agent)
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Missing permission: view_users"},
    )
    response = await client.put(
        f"/api/admin/roles/{role_id}/permissions/{view_users}",
        json={"granted": True},
        headers=staff,
    )
    assert response.status == 200
    assert (await response.json())["permissions"] == ["view_customers", "view_users"]
    assert (await client.get("/api/admin/users", headers=agent)).status == 200

    granted = await (
        await client.get(f"/api/admin/roles/{role_id}/permissions", headers=staff)
    ).json()
    assert [p["name"] for p in granted if p["granted"]] == ["view_customers", "view_users"]
    assert len(granted) == len(PERMISSION_CATALOG)

    response = await client.delete(f"/roles/{role_id}/permissions/{view_users}", headers=staff)
    assert response.status == 200
    assert (await client.get("/api/admin/users", headers=agent)).status == 403


async def test_privilege_escalation_guards(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    _, lead = await staff_with(
        kernel,
        "team_lead",
        ["manage_roles", "edit_users", "view_users"],
        customer_view_scope="team",
        customer_edit_scope="own",
        pii_email="masked",
        level=20,
    )
    view_audit = await permission_id(client, staff, "view_audit")
    view_users = await permission_id(client, staff, "view_users")
    admin_role = 1

    response = await client.put(
        f"/api/admin/roles/{admin_role}/permissions/{view_audit}",
        json={"granted": False},
        headers=lead,
    )
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Privilege escalation: the role ranks above your own (level 100)"},
    )
    response = await client.post(
        "/api/admin/roles",
        json={"name": "agent_x", "display_name": "X", "customer_edit_scope": "all"},
        headers=lead,
    )
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Privilege escalation: customer_edit_scope 'all' exceeds your own 'own'"},
    )
    for field, value in (("pii_email", "full"), ("level", 21), ("can_export_pii", True)):
        response = await client.post(
            "/api/admin/roles",
            json={"name": "agent_y", "display_name": "Y", field: value},
            headers=lead,
        )
        assert response.status == 403, field
    response = await client.post(
        "/api/admin/roles",
        json={"name": "junior", "display_name": "Junior", "customer_view_scope": "team"},
        headers=lead,
    )
    junior = (await response.json())["id"]
    assert response.status == 201
    response = await client.put(
        f"/api/admin/roles/{junior}/permissions/{view_audit}",
        json={"granted": True},
        headers=lead,
    )
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Privilege escalation: you do not hold view_audit"},
    )
    response = await client.put(
        f"/api/admin/roles/{junior}/permissions/{view_users}", json={"granted": True}, headers=lead
    )
    assert response.status == 200

    # assigning a role: not one that ranks above, nor one with permissions you lack
    response = await client.post(
        "/api/admin/users",
        json={"email": "boss@broker.test", "password": "Boss-Pass-123", "role_id": admin_role},
        headers=lead,
    )
    assert response.status == 403
    response = await client.post(
        "/api/admin/users",
        json={"email": "kid@broker.test", "password": "Kid-Pass-1234", "role_id": junior},
        headers=lead,
    )
    assert response.status == 201
    admin_id = (await (await client.get("/api/admin/users/me", headers=staff)).json())["id"]
    response = await client.patch(
        f"/api/admin/users/{admin_id}", json={"first_name": "Eve"}, headers=lead
    )
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Privilege escalation: the user's role ranks above your own (level 100)"},
    )


async def test_team_overrides_follow_the_path_and_the_deepest_wins(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    europe = await (
        await client.post("/api/admin/teams", json={"name": "Europe"}, headers=staff)
    ).json()
    prague = await (
        await client.post(
            "/api/admin/teams",
            json={"name": "Prague", "parent_team_id": europe["id"]},
            headers=staff,
        )
    ).json()
    _, agent = await staff_with(kernel, "desk", ["view_customers"], team_id=prague["id"])
    view_users = await permission_id(client, staff, "view_users")

    assert (await client.get("/api/admin/users", headers=agent)).status == 403
    response = await client.put(
        f"/api/admin/teams/{europe['id']}/permissions/{view_users}",
        json={"granted": True},
        headers=staff,
    )
    override = await response.json()
    assert response.status == 200
    assert {k: override[k] for k in ("team_id", "permission_id", "permission", "granted")} == {
        "team_id": europe["id"],
        "permission_id": view_users,
        "permission": "view_users",
        "granted": True,
    }
    assert (await client.get("/api/admin/users", headers=agent)).status == 200

    await client.put(
        f"/teams/{prague['id']}/permissions/{view_users}", json={"granted": False}, headers=staff
    )
    assert (await client.get("/api/admin/users", headers=agent)).status == 403
    listed = await (
        await client.get(f"/api/admin/teams/{prague['id']}/permissions", headers=staff)
    ).json()
    assert [(o["permission"], o["granted"]) for o in listed] == [("view_users", False)]

    response = await client.delete(
        f"/api/admin/teams/{prague['id']}/permissions/{view_users}", headers=staff
    )
    assert response.status == 204
    assert (await client.get("/api/admin/users", headers=agent)).status == 200
    response = await client.delete(
        f"/api/admin/teams/{prague['id']}/permissions/{view_users}", headers=staff
    )
    assert (response.status, await response.json()) == (
        404,
        {"detail": "Permission override not found"},
    )


# ------------------------------------------------------------------------ staff users


async def test_staff_user_crud_filters_search_and_paging(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    team = await (
        await client.post("/api/admin/teams", json={"name": "Sales"}, headers=staff)
    ).json()
    body = {
        "email": "Jane.Smith@Broker.test",
        "first_name": "Jane",
        "last_name": "Smith",
        "password": "secret123",
        "team_id": team["id"],
        "role_id": 2,
    }
    response = await client.post("/api/admin/users", json=body, headers=staff)
    jane = await response.json()
    assert response.status == 201
    assert {k: jane[k] for k in ("email", "full_name", "team_id", "role_id", "is_active")} == {
        "email": "jane.smith@broker.test",
        "full_name": "Jane Smith",
        "team_id": team["id"],
        "role_id": 2,
        "is_active": True,
    }
    response = await client.post("/api/admin/users", json=body, headers=staff)
    assert (response.status, await response.json()) == (
        409,
        {"detail": "Email already registered."},
    )
    response = await client.post(
        "/api/admin/users",
        json={**body, "email": "short@broker.test", "password": "x" * 7},
        headers=staff,
    )
    assert response.status == 422
    for index in range(3):
        await make_staff(kernel, f"support{index}@broker.test", "support")

    async def emails(query: str) -> tuple[list[str], str]:
        response = await client.get(f"/api/admin/users?{query}", headers=staff)
        assert response.status == 200, await response.text()
        return [u["email"] for u in await response.json()], response.headers["X-Total-Count"]

    assert await emails(f"team_id={team['id']}") == (["jane.smith@broker.test"], "1")
    assert await emails("role_id=3&page_size=2&page=2") == (["support2@broker.test"], "3")
    assert await emails("search=SMI") == (["jane.smith@broker.test"], "1")
    assert await emails("search=100%25") == ([], "0")
    response = await client.get("/api/admin/users?page_size=501", headers=staff)
    assert response.status == 422

    response = await client.patch(
        f"/api/admin/users/{jane['id']}",
        json={"last_name": "Doe", "team_id": None, "is_active": False},
        headers=staff,
    )
    assert response.status == 200
    patched = await response.json()
    assert (patched["full_name"], patched["team_id"], patched["is_active"]) == (
        "Jane Doe",
        None,
        False,
    )
    assert await emails("is_active=false") == (["jane.smith@broker.test"], "1")
    response = await client.get("/api/admin/users/nope", headers=staff)
    assert (response.status, await response.json()) == (404, {"detail": "User not found"})
    me = await (await client.get("/api/admin/users/me", headers=staff)).json()
    assert me["role"] == "admin" and me["two_factor_enabled"] is False
    response = await client.patch(
        f"/api/admin/users/{me['id']}", json={"is_active": False}, headers=staff
    )
    assert (response.status, await response.json()) == (
        400,
        {"detail": "You cannot deactivate yourself"},
    )


async def test_presence_ping_and_online(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    me = await (await client.get("/api/admin/users/me", headers=staff)).json()
    other = await make_staff(kernel, "quiet@broker.test", "support")
    response = await client.get(f"/api/admin/users/{me['id']}/online", headers=staff)
    assert await response.json() == {"user_id": me["id"], "online": False}
    response = await client.post(f"/api/admin/users/{me['id']}/ping", headers=staff)
    assert response.status == 204
    response = await client.get(f"/users/{me['id']}/online", headers=staff)
    assert await response.json() == {"user_id": me["id"], "online": True}
    response = await client.post(f"/api/admin/users/{other}/ping", headers=staff)
    assert response.status == 403


# --------------------------------------------------------------- scopes and PII


def test_pii_masking_per_role() -> None:
    customer = {"id": "c1", "email": "trader@example.com", "phone": "+447700900000"}

    def policy(email: str, phone: str) -> RolePolicy:
        return RolePolicy(1, "r", frozenset(), pii_email=email, pii_phone=phone)

    assert mask_email("trader@example.com") == "tr***@example.com"
    assert mask_email("ab@example.com") == "a***@example.com"
    assert mask_phone("+447700900000") == "+44*******000"
    assert mask_customer(policy("full", "full"), customer) == customer
    assert mask_customer(policy("masked", "hidden"), customer) == {
        "id": "c1",
        "email": "tr***@example.com",
        "phone": None,
    }
    assert mask_customer(None, customer)["email"] is None
    staff = Principal(kind="user", subject="u", policy=policy("hidden", "masked"))
    trader = Principal(kind="customer", subject="c1")
    assert show_customer(staff, customer)["phone"] == "+44*******000"
    assert show_customer(trader, customer) == customer


async def test_customer_scope_clause_selects_own_team_or_all(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    root = await (
        await client.post("/api/admin/teams", json={"name": "Root"}, headers=staff)
    ).json()
    child = await (
        await client.post(
            "/api/admin/teams", json={"name": "Child", "parent_team_id": root["id"]}, headers=staff
        )
    ).json()
    other = await (
        await client.post("/api/admin/teams", json={"name": "Other"}, headers=staff)
    ).json()
    lead = await make_staff(kernel, "lead@broker.test", "support", root["id"])
    member = await make_staff(kernel, "member@broker.test", "support", child["id"])
    outsider = await make_staff(kernel, "outsider@broker.test", "support", other["id"])

    async def owners(scope: str) -> set[str]:
        who = Principal(
            kind="user",
            subject=lead,
            team_path=root["path"],
            policy=RolePolicy(9, "x", frozenset(), customer_view_scope=scope),
        )
        async with kernel.db.read() as session:
            rows = await session.scalars(
                select(StaffUser.id).where(customer_scope_clause(who, StaffUser.id))
            )
            return set(rows)

    assert await owners("own") == {lead}
    assert await owners("team") == {lead, member}
    assert outsider in await owners("all") and len(await owners("all")) == 4


async def test_staff_limited_to_own_customers_cannot_open_accounts_by_login(
    client: Client, kernel: Kernel
) -> None:
    login, _ = await register_trader(client, "scoped@test.io")
    _, own = await staff_with(kernel, "own_agent", ["view_customers"], customer_view_scope="own")
    response = await client.get(f"/api/crm/accounts/{login}/state", headers=own)
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Customer outside your view scope"},
    )


# ------------------------------------------------------------- cache across processes


async def test_a_change_made_on_one_process_reaches_another_on_its_next_poll(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    tmp_path: Path,
    market_data_dir: Path,
    aiohttp_client: Factory,
) -> None:
    other_kernel = second_kernel(kernel, tmp_path, market_data_dir)
    other = await aiohttp_client(create_app(other_kernel))
    role_id = await make_role(kernel, "roamer", ["view_customers"])
    await make_staff(kernel, "roamer@broker.test", role_id)
    token = bearer(await staff_token(kernel, "roamer@broker.test"))
    assert (await other.get("/api/admin/users", headers=token)).status == 403

    view_users = await permission_id(client, staff, "view_users")
    response = await client.put(
        f"/api/admin/roles/{role_id}/permissions/{view_users}",
        json={"granted": True},
        headers=staff,
    )
    assert response.status == 200
    assert (await client.get("/api/admin/users", headers=token)).status == 200
    assert (await other.get("/api/admin/users", headers=token)).status == 403  # not polled yet
    await other_kernel.identity.rbac.poll()
    assert (await other.get("/api/admin/users", headers=token)).status == 200


async def test_a_degraded_cache_answers_from_its_last_snapshot_and_counts_it(
    client: Client, kernel: Kernel, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    role_id = await make_role(kernel, "stale_reader", ["view_users"])
    await make_staff(kernel, "stale@broker.test", role_id)
    reader = bearer(await staff_token(kernel, "stale@broker.test"))
    rbac = kernel.identity.rbac
    real_load = rbac.load

    async def unreachable() -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(rbac, "load", unreachable)
    rbac.version = "another process changed something"
    await rbac.poll()
    assert rbac.degraded
    async with kernel.db.transaction() as session:  # a change this process cannot see
        role = await session.get(Role, role_id)
        assert role is not None
        role.permissions = []

    assert (await client.get("/api/admin/users", headers=reader)).status == 200
    assert (await client.get("/api/admin/roles", headers=staff)).status == 200
    response = await client.get("/api/admin/teams", headers=reader)
    assert response.status == 200
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 503
    assert body["status"] == "degraded" and body["checks"]["rbac_cache"] == "degraded"
    assert body["permission_checks_skipped"] == 3
    assert (await (await client.get("/health/all")).json())["status"] == "degraded"

    monkeypatch.setattr(rbac, "load", real_load)
    await rbac.poll()
    assert not rbac.degraded
    response = await client.get("/api/admin/users", headers=reader)
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Missing permission: view_users"},
    )
    body = await (await client.get("/health")).json()
    assert (body["status"], body["permission_checks_skipped"]) == ("ok", 3)


async def test_pii_export_needs_the_permission_and_the_role_flag(
    client: Client, kernel: Kernel
) -> None:
    app = client.app
    _, exporter = await staff_with(kernel, "exporter", ["view_customers"], can_export_pii=True)
    _, viewer = await staff_with(kernel, "viewer", ["view_customers"])

    async def export(headers: dict[str, str]) -> int:
        request = make_mocked_request("GET", "/export", headers=headers, app=app)
        await authenticate(request)
        try:
            require_pii_export(request, "view_customers")
        except web.HTTPException as exc:
            assert exc.text == '{"detail":"Your role cannot export PII"}'
            return exc.status
        return 200

    assert await export(exporter) == 200
    assert await export(viewer) == 403


async def test_customer_access_follows_the_owner_and_the_view_or_edit_scope(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    root = await (
        await client.post("/api/admin/teams", json={"name": "Desk"}, headers=staff)
    ).json()
    child = await (
        await client.post(
            "/api/admin/teams", json={"name": "Shift", "parent_team_id": root["id"]}, headers=staff
        )
    ).json()
    lead_id, lead = await staff_with(
        kernel,
        "desk_lead",
        ["view_customers", "edit_customer_details"],
        team_id=root["id"],
        customer_view_scope="team",
        customer_edit_scope="own",
    )
    member = await make_staff(kernel, "shift@broker.test", "support", child["id"])
    outsider = await make_staff(kernel, "elsewhere@broker.test", "support")

    async def allowed(owner: str | None, *, edit: bool = False) -> bool | str:
        request = make_mocked_request("GET", "/customers/x", headers=lead, app=client.app)
        await authenticate(request)
        permission = "edit_customer_details" if edit else "view_customers"
        try:
            require_customer_access(request, permission, owner, edit=edit)
        except web.HTTPException as exc:
            return str(json.loads(exc.text or "{}")["detail"])
        return True

    assert await allowed(lead_id) is True
    assert await allowed(member) is True
    assert await allowed(outsider) == "Customer outside your view scope"
    assert await allowed(None) == "Customer outside your view scope"
    assert await allowed(lead_id, edit=True) is True
    assert await allowed(member, edit=True) == "Customer outside your edit scope"
