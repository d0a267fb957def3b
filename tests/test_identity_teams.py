"""Teams with materialized paths (seed section 18)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from identity_helpers import make_staff

from brokerkernel.kernel.runtime import Kernel

Client = TestClient[Any, Any]


async def create(client: Client, staff: dict[str, str], name: str, parent: Any = None) -> Any:
    body = {"name": name} if parent is None else {"name": name, "parent_team_id": parent["id"]}
    response = await client.post("/api/admin/teams", json=body, headers=staff)
    assert response.status == 201, await response.text()
    return await response.json()


async def names(client: Client, staff: dict[str, str], path: str) -> list[str]:
    response = await client.get(path, headers=staff)
    assert response.status == 200, await response.text()
    return [item.get("name") or item["email"] for item in await response.json()]


async def test_paths_depths_tree_children_and_subtree(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    europe = await create(client, staff, "Europe")
    cz = await create(client, staff, "Czechia", europe)
    prague = await create(client, staff, "Prague", cz)
    de = await create(client, staff, "Germany", europe)
    asia = await create(client, staff, "Asia")

    assert (europe["path"], europe["depth"], europe["parent_team_id"]) == (
        f"/{europe['id']}/",
        0,
        None,
    )
    assert (prague["path"], prague["depth"]) == (f"/{europe['id']}/{cz['id']}/{prague['id']}/", 2)
    assert set(prague) == {
        "id",
        "name",
        "parent_team_id",
        "path",
        "depth",
        "is_active",
        "created_at",
        "updated_at",
    }

    tree = await (await client.get("/api/admin/teams/tree", headers=staff)).json()

    def shape(nodes: list[Any]) -> list[Any]:
        return [(n["name"], shape(n["children"])) for n in nodes]

    assert shape(tree) == [
        ("Asia", []),
        ("Europe", [("Czechia", [("Prague", [])]), ("Germany", [])]),
    ]
    base = f"/api/admin/teams/{europe['id']}"
    assert await names(client, staff, f"{base}/children") == ["Czechia", "Germany"]
    assert await names(client, staff, f"{base}/subtree") == ["Czechia", "Germany", "Prague"]
    assert await names(client, staff, f"/teams/{asia['id']}/subtree") == []
    assert await names(client, staff, "/api/admin/teams?depth=1") == ["Czechia", "Germany"]
    assert await names(client, staff, f"/api/admin/teams?parent_team_id={cz['id']}") == ["Prague"]
    assert (await (await client.get(f"/api/admin/teams/{de['id']}", headers=staff)).json())[
        "name"
    ] == "Germany"

    await make_staff(kernel, "ana@broker.test", "support", europe["id"])
    await make_staff(kernel, "petr@broker.test", "support", prague["id"])
    await make_staff(kernel, "yuki@broker.test", "support", asia["id"])
    assert await names(client, staff, f"{base}/users") == ["ana@broker.test"]
    assert await names(client, staff, f"{base}/subtree/users") == [
        "ana@broker.test",
        "petr@broker.test",
    ]


async def test_reparenting_recomputes_every_descendant_in_one_step(
    client: Client, staff: dict[str, str]
) -> None:
    europe = await create(client, staff, "Europe")
    cz = await create(client, staff, "Czechia", europe)
    prague = await create(client, staff, "Prague", cz)
    brno = await create(client, staff, "Brno", cz)
    emea = await create(client, staff, "EMEA")
    sales = await create(client, staff, "Sales", emea)

    response = await client.patch(
        f"/api/admin/teams/{cz['id']}", json={"parent_team_id": sales["id"]}, headers=staff
    )
    moved = await response.json()
    assert response.status == 200
    assert (moved["path"], moved["depth"], moved["parent_team_id"]) == (
        f"/{emea['id']}/{sales['id']}/{cz['id']}/",
        2,
        sales["id"],
    )
    for child in (prague, brno):
        row = await (await client.get(f"/api/admin/teams/{child['id']}", headers=staff)).json()
        assert (row["path"], row["depth"]) == (
            f"/{emea['id']}/{sales['id']}/{cz['id']}/{child['id']}/",
            3,
        )
    assert await names(client, staff, f"/api/admin/teams/{europe['id']}/subtree") == []

    response = await client.patch(
        f"/teams/{cz['id']}", json={"parent_team_id": None, "name": "CZ"}, headers=staff
    )
    root = await response.json()
    assert (root["path"], root["depth"], root["name"]) == (f"/{cz['id']}/", 0, "CZ")
    row = await (await client.get(f"/api/admin/teams/{prague['id']}", headers=staff)).json()
    assert (row["path"], row["depth"]) == (f"/{cz['id']}/{prague['id']}/", 1)


async def test_cycles_and_unknown_teams_are_refused(client: Client, staff: dict[str, str]) -> None:
    europe = await create(client, staff, "Europe")
    cz = await create(client, staff, "Czechia", europe)
    prague = await create(client, staff, "Prague", cz)

    response = await client.patch(
        f"/api/admin/teams/{europe['id']}", json={"parent_team_id": europe["id"]}, headers=staff
    )
    assert (response.status, await response.json()) == (
        400,
        {"detail": "Team cannot be its own parent"},
    )
    response = await client.patch(
        f"/api/admin/teams/{europe['id']}", json={"parent_team_id": prague["id"]}, headers=staff
    )
    assert (response.status, await response.json()) == (
        400,
        {"detail": "Cannot re-parent a team under its own descendant"},
    )
    response = await client.post(
        "/api/admin/teams", json={"name": "X", "parent_team_id": "missing"}, headers=staff
    )
    assert (response.status, await response.json()) == (404, {"detail": "Parent team not found"})
    response = await client.get("/api/admin/teams/missing/subtree", headers=staff)
    assert (response.status, await response.json()) == (404, {"detail": "Team not found"})
    unchanged = await (await client.get(f"/api/admin/teams/{europe['id']}", headers=staff)).json()
    assert unchanged["path"] == europe["path"]


async def test_concurrent_crossing_moves_never_build_a_cycle(
    client: Client, staff: dict[str, str]
) -> None:
    a = await create(client, staff, "A")
    b = await create(client, staff, "B")
    first, second = await asyncio.gather(
        client.patch(
            f"/api/admin/teams/{a['id']}", json={"parent_team_id": b["id"]}, headers=staff
        ),
        client.patch(
            f"/api/admin/teams/{b['id']}", json={"parent_team_id": a["id"]}, headers=staff
        ),
    )
    assert sorted([first.status, second.status]) == [200, 400]
    tree = await (await client.get("/api/admin/teams/tree", headers=staff)).json()
    assert len(tree) == 1 and len(tree[0]["children"]) == 1
