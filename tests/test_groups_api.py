"""Trading groups, group instrument overrides, swap config and account reassignment
over HTTP (seed sections 16 and 6)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from support import (
    DAY_START_MS,
    create_admin,
    deposit,
    market_order,
    register_trader,
    staff_headers,
    tick,
)

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Group, OutboxEvent, TradingAccount, new_id
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP, DEFAULT_GROUP_ID

Client = TestClient[Any, Any]

STANDARD = {
    "id": DEFAULT_GROUP_ID,
    "name": "standard",
    "description": "Default trading group",
    "currency": "USD",
    "default_leverage": 100,
    "margin_call_level": 100,
    "stopout_level": 50,
    "commission_type": None,
    "commission_value": None,
    "swap_free": False,
    "swap_enabled": True,
    "swap_multiplier": 1,
    "swap_free_days": 0,
    "is_islamic": False,
    "is_default": True,
    "max_exposure": None,
    "net_max_exposure": False,
    # Groups that existed before revision 0013 keep every position in full.
    "hedged_margin_mode": "none",
    "hedged_margin_rate": 1,
    "is_active": True,
    "created_at": "2026-11-21T00:00:00Z",
}
# The seed's request example (section 16).
VIP = {
    "name": "vip",
    "description": "VIP clients",
    "currency": "USD",
    "default_leverage": 200,
    "margin_call_level": 50,
    "stopout_level": 20,
    "commission_type": "per_lot",
    "commission_value": 5,
    "swap_free": False,
    "swap_enabled": True,
    "swap_multiplier": 1,
    "swap_free_days": 0,
    "is_islamic": False,
    "is_default": False,
    "max_exposure": 500000,
    "net_max_exposure": False,
}
CLOCK_NOW = "2014-05-07T00:00:07.135000Z"  # the client fixture's EURUSD tick


async def _create(client: Client, staff: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/platform/groups", json={**VIP, **fields}, headers=staff)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_public_list_and_get(client: Client) -> None:
    listed = await client.get("/api/platform/groups")
    legacy = await client.get("/groups")
    one = await client.get(f"/api/platform/groups/{DEFAULT_GROUP_ID}")
    missing = await client.get("/api/platform/groups/no-such-group")

    assert (listed.status, await listed.json()) == (200, [STANDARD])
    assert (legacy.status, await legacy.json(), legacy.headers["Deprecation"]) == (
        200,
        [STANDARD],
        "true",
    )
    assert (one.status, await one.json()) == (200, STANDARD)
    assert (missing.status, await missing.json()) == (404, {"detail": "Group not found"})


async def test_create_the_seed_example_and_refuse_a_taken_name(
    client: Client, staff: dict[str, str]
) -> None:
    created = await client.post("/api/platform/groups", json=VIP, headers=staff)
    again = await client.post("/api/platform/groups", json=VIP, headers=staff)

    assert created.status == 201
    body = await created.json()
    assert body == {
        **VIP,
        "id": body["id"],
        "hedged_margin_mode": "larger_side",
        "hedged_margin_rate": 1,
        "is_active": True,
        "created_at": CLOCK_NOW,
    }
    assert (again.status, await again.json()) == (409, {"detail": "Group name already exists"})
    listed = await client.get("/api/platform/groups")
    assert [g["name"] for g in await listed.json()] == ["standard", "vip"]


async def test_group_rules_stopout_below_margin_call_islamic_and_commission_pair(
    client: Client, staff: dict[str, str]
) -> None:
    levels = await client.post(
        "/api/platform/groups",
        json={**VIP, "margin_call_level": 50, "stopout_level": 50},
        headers=staff,
    )
    commission = await client.post(
        "/api/platform/groups",
        json={**VIP, "commission_type": "per_lot", "commission_value": None},
        headers=staff,
    )
    schema = await client.post(
        "/api/platform/groups",
        json={"default_leverage": 0, "currency": "usd", "commission_type": "bogus", "x": 1},
        headers=staff,
    )
    islamic = await _create(client, staff, name="islamic", is_islamic=True, swap_free=False)

    assert (levels.status, await levels.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "stopout_level"],
                    "msg": "must be less than margin_call_level",
                    "type": "level_order",
                }
            ]
        },
    )
    assert (commission.status, await commission.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "commission_value"],
                    "msg": "commission_type and commission_value are set together "
                    "(both or neither)",
                    "type": "commission_pair",
                }
            ]
        },
    )
    assert schema.status == 422
    assert sorted((tuple(e["loc"]), e["type"]) for e in (await schema.json())["detail"]) == [
        (("body",), "additionalProperties"),
        (("body", "commission_type"), "enum"),
        (("body", "currency"), "pattern"),
        (("body", "default_leverage"), "minimum"),
        (("body", "name"), "required"),
    ]
    assert (islamic["is_islamic"], islamic["swap_free"]) == (True, True)


async def test_patch_applies_the_rules_to_the_merged_group(
    client: Client, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    url = f"/api/platform/groups/{vip['id']}"

    crossing = await client.patch(url, json={"stopout_level": 60}, headers=staff)
    moved = await client.patch(
        url, json={"margin_call_level": 80, "stopout_level": 60}, headers=staff
    )
    islamic = await client.patch(url, json={"is_islamic": True, "swap_free": False}, headers=staff)
    stays_free = await client.patch(url, json={"swap_free": False}, headers=staff)
    cleared = await client.patch(
        f"/groups/{vip['id']}",
        json={"commission_type": None, "commission_value": None, "max_exposure": None},
        headers=staff,
    )
    empty = await client.patch(url, json={}, headers=staff)
    missing = await client.patch(
        "/api/platform/groups/nope", json={"description": "x"}, headers=staff
    )

    assert (crossing.status, (await crossing.json())["detail"][0]["type"]) == (422, "level_order")
    body = await moved.json()
    assert (moved.status, body["margin_call_level"], body["stopout_level"]) == (200, 80, 60)
    assert ((await islamic.json())["swap_free"], (await stays_free.json())["swap_free"]) == (
        True,
        True,
    )
    body = await cleared.json()
    assert (body["commission_type"], body["commission_value"], body["max_exposure"]) == (
        None,
        None,
        None,
    )
    assert (empty.status, (await empty.json())["detail"][0]["type"]) == (422, "minProperties")
    assert (missing.status, await missing.json()) == (404, {"detail": "Group not found"})


async def test_exactly_one_default_group(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff, is_default=True)

    standard = await client.get(f"/api/platform/groups/{DEFAULT_GROUP_ID}")
    unset = await client.patch(
        f"/api/platform/groups/{vip['id']}", json={"is_default": False}, headers=staff
    )
    login, _ = await register_trader(client, "new-default@test.io")
    back = await client.patch(
        f"/api/platform/groups/{DEFAULT_GROUP_ID}", json={"is_default": True}, headers=staff
    )
    vip_after = await client.get(f"/api/platform/groups/{vip['id']}")

    assert vip["is_default"] is True
    assert (await standard.json())["is_default"] is False
    assert (unset.status, await unset.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "is_default"],
                    "msg": "exactly one group is the default; make another group the default "
                    "instead",
                    "type": "default",
                }
            ]
        },
    )
    async with kernel.db.read() as session:
        account = await session.get_one(TradingAccount, login)
    # the account took the new default group's currency and leverage
    assert (account.group_id, account.leverage) == (vip["id"], 200)
    assert (back.status, (await back.json())["is_default"]) == (200, True)
    assert (await vip_after.json())["is_default"] is False
    defaults = [g["name"] for g in await (await client.get("/groups")).json() if g["is_default"]]
    assert defaults == ["standard"]


async def test_soft_delete_is_refused_while_accounts_are_assigned_then_succeeds(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    login, _ = await register_trader(client, "mover@test.io")  # joins "standard"
    standard_url = f"/api/platform/groups/{DEFAULT_GROUP_ID}"

    default_refused = await client.delete(standard_url, headers=staff)
    await client.patch(
        f"/api/platform/groups/{vip['id']}", json={"is_default": True}, headers=staff
    )
    assigned_refused = await client.delete(standard_url, headers=staff)
    patch_refused = await client.patch(standard_url, json={"is_active": False}, headers=staff)
    moved = await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": vip["id"]}, headers=staff
    )
    deleted = await client.delete(standard_url, headers=staff)
    deleted_again = await client.delete(f"/groups/{DEFAULT_GROUP_ID}", headers=staff)
    listed = await client.get("/api/platform/groups")
    shown = await client.get(standard_url)
    to_inactive = await client.patch(
        f"/accounts/{login}/group", json={"group_id": DEFAULT_GROUP_ID}, headers=staff
    )
    restored = await client.patch(standard_url, json={"is_active": True}, headers=staff)

    assert (default_refused.status, await default_refused.json()) == (
        409,
        {"detail": "The default group cannot be deleted; make another group the default first"},
    )
    assert (assigned_refused.status, await assigned_refused.json()) == (
        409,
        {"detail": "Active accounts assigned; reassign them first"},
    )
    assert (patch_refused.status, await patch_refused.json()) == (
        409,
        {"detail": "Active accounts assigned; reassign them first"},
    )
    assert (moved.status, await moved.json()) == (
        200,
        {
            "login": login,
            "group_id": vip["id"],
            "group_name": "vip",
            "previous_group_id": DEFAULT_GROUP_ID,
        },
    )
    assert (deleted.status, await deleted.read()) == (204, b"")
    assert deleted_again.status == 204
    assert [g["name"] for g in await listed.json()] == ["vip"]
    assert (await shown.json())["is_active"] is False
    assert (to_inactive.status, await to_inactive.json()) == (
        409,
        {"detail": "Group is not active"},
    )
    assert (restored.status, (await restored.json())["is_active"]) == (200, True)
    async with kernel.db.read() as session:
        events = (
            await session.scalars(
                select(OutboxEvent.payload).where(OutboxEvent.type == "account.group_changed")
            )
        ).all()
    assert events == [{"login": login, "from_group_id": DEFAULT_GROUP_ID, "to_group_id": vip["id"]}]


async def test_a_groups_currency_does_not_change_under_its_active_accounts(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """Accounts hold their group's currency (reassignment refuses another one), so the
    currency of a group with active accounts stays until they are reassigned."""
    vip = await _create(client, staff)
    login, _ = await register_trader(client, "currency@test.io")  # joins "standard"
    url = f"/api/platform/groups/{DEFAULT_GROUP_ID}"

    refused = await client.patch(url, json={"currency": "EUR"}, headers=staff)
    unchanged = await client.patch(url, json={"currency": "USD", "description": "x"}, headers=staff)
    await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": vip["id"]}, headers=staff
    )
    changed = await client.patch(url, json={"currency": "EUR"}, headers=staff)

    assert (refused.status, await refused.json()) == (
        409,
        {"detail": "Active accounts assigned; reassign them first"},
    )
    assert (unchanged.status, (await unchanged.json())["description"]) == (200, "x")
    assert (changed.status, (await changed.json())["currency"]) == (200, "EUR")


async def test_reassignment_errors(client: Client, kernel: Kernel, staff: dict[str, str]) -> None:
    euro = await _create(client, staff, name="euro", currency="EUR")
    login, trader = await register_trader(client, "reassign@test.io")
    await create_admin(kernel, "support@broker.test", role="support")
    support = await staff_headers(client, "support@broker.test")

    currency = await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": euro["id"]}, headers=staff
    )
    no_account = await client.patch(
        "/api/platform/accounts/99999/group", json={"group_id": euro["id"]}, headers=staff
    )
    no_group = await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": "nope"}, headers=staff
    )
    bad_login = await client.patch(
        "/api/platform/accounts/abc/group", json={"group_id": euro["id"]}, headers=staff
    )
    bad_body = await client.patch(f"/api/platform/accounts/{login}/group", json={}, headers=staff)
    as_support = await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": euro["id"]}, headers=support
    )
    as_trader = await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": euro["id"]}, headers=trader
    )

    assert (currency.status, await currency.json()) == (
        409,
        {"detail": "Group currency EUR differs from the account currency USD"},
    )
    assert (no_account.status, await no_account.json()) == (404, {"detail": "Account not found"})
    assert (no_group.status, await no_group.json()) == (404, {"detail": "Group not found"})
    assert (bad_login.status, await bad_login.json()) == (
        422,
        {"detail": [{"loc": ["path", "login"], "msg": "must be an integer", "type": "type"}]},
    )
    assert (bad_body.status, await bad_body.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "group_id"],
                    "msg": "'group_id' is a required property",
                    "type": "required",
                }
            ]
        },
    )
    assert (as_support.status, await as_support.json()) == (
        403,
        {"detail": "Missing permission: manage_groups"},
    )
    assert (as_trader.status, await as_trader.json()) == (403, {"detail": "Staff access required"})


async def test_override_put_creates_then_updates_and_null_inherits(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    url = f"/api/platform/groups/{vip['id']}/instruments/EURUSD"
    seed_example = {
        "spread": 2,
        "margin_rate": 0.015,
        "tradeability": "close_only",
        "commission_type": "per_lot",
        "commission_value": 5,
        "min_lot": 0.01,
        "max_lot": 50,
    }

    created = await client.put(url, json=seed_example, headers=staff)
    created_terms = kernel.terms.terms(vip["id"], "EURUSD")
    updated = await client.put(
        f"/groups/{vip['id']}/instruments/EURUSD",
        json={"tradeability": None, "margin_rate": None, "max_lot": None},
        headers=staff,
    )
    listed = await client.get(f"/api/platform/groups/{vip['id']}/instruments", headers=staff)

    empty_swap = {"swap_type": None, "swap_long": None, "swap_short": None}
    assert (created.status, await created.json()) == (
        201,
        {"group_id": vip["id"], "symbol": "EURUSD", **seed_example, **empty_swap},
    )
    assert created_terms is not None
    assert (
        created_terms.spread_markup_pips,
        created_terms.margin_rate,
        created_terms.tradeability,
        created_terms.max_lot,
        created_terms.commission_type,
        created_terms.commission_value,
    ) == (Decimal(2), Decimal("0.015"), "close_only", Decimal(50), "per_lot", Decimal(5))
    expected = {
        "group_id": vip["id"],
        "symbol": "EURUSD",
        **seed_example,
        "tradeability": None,
        "margin_rate": None,
        "max_lot": None,
        **empty_swap,
    }
    assert (updated.status, await updated.json()) == (200, expected)
    assert (listed.status, await listed.json()) == (200, [expected])
    # null inherits the catalog; values set stay overridden
    inherited = kernel.terms.terms(vip["id"], "EURUSD")
    assert inherited is not None
    assert (
        inherited.spread_markup_pips,
        inherited.margin_rate,
        inherited.tradeability,
        inherited.max_lot,
        inherited.min_lot,
    ) == (Decimal(2), Decimal("0.01"), "tradable", Decimal(100), Decimal("0.01"))
    # other groups and symbols are untouched; commission without override is the group's
    standard = kernel.terms.terms(DEFAULT_GROUP_ID, "EURUSD")
    assert standard is not None
    assert (standard.spread_markup_pips, standard.commission_type) == (Decimal(0), None)
    gbpusd = kernel.terms.terms(vip["id"], "GBPUSD")
    assert gbpusd is not None
    assert (gbpusd.commission_type, gbpusd.commission_value) == ("per_lot", Decimal(5))


async def test_override_validation_and_permissions(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    url = f"/api/platform/groups/{vip['id']}/instruments/EURUSD"
    _, trader = await register_trader(client, "override@test.io")

    lots = await client.put(url, json={"min_lot": 200}, headers=staff)
    pair = await client.put(url, json={"commission_type": "per_lot"}, headers=staff)
    schema = await client.put(url, json={"tradeability": "bogus", "spread": -1}, headers=staff)
    no_group = await client.put(
        "/api/platform/groups/nope/instruments/EURUSD", json={}, headers=staff
    )
    no_symbol = await client.put(
        f"/api/platform/groups/{vip['id']}/instruments/NOPE", json={}, headers=staff
    )
    as_trader = await client.get(f"/api/platform/groups/{vip['id']}/instruments", headers=trader)
    no_group_list = await client.get("/api/platform/groups/nope/instruments", headers=staff)

    assert (lots.status, await lots.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "min_lot"],
                    "msg": "the group's min_lot 200 exceeds its max_lot 100",
                    "type": "lot_range",
                }
            ]
        },
    )
    assert (pair.status, (await pair.json())["detail"][0]["type"]) == (422, "commission_pair")
    assert sorted((tuple(e["loc"]), e["type"]) for e in (await schema.json())["detail"]) == [
        (("body", "spread"), "minimum"),
        (("body", "tradeability"), "enum"),
    ]
    assert (no_group.status, await no_group.json()) == (404, {"detail": "Group not found"})
    assert (no_symbol.status, await no_symbol.json()) == (
        404,
        {"detail": "Instrument NOPE not found"},
    )
    assert (as_trader.status, await as_trader.json()) == (403, {"detail": "Staff access required"})
    assert (no_group_list.status, await no_group_list.json()) == (
        404,
        {"detail": "Group not found"},
    )


async def test_override_spread_markup_and_margin_rate_reach_the_fill(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff, is_default=True)  # new accounts join vip at 1:200
    await client.put(
        f"/api/platform/groups/{vip['id']}/instruments/EURUSD",
        json={"spread": 2, "margin_rate": 0.015},
        headers=staff,
    )
    login, trader = await register_trader(client, "vip-fill@test.io")
    await deposit(client, staff, login, "10000")

    buy = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    sell = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.1")

    response = await client.get(f"/api/crm/orders?login={login}", headers=trader)
    positions = {p["ticket"]: p for p in await response.json()}
    # raw 1.39286 / 1.39298; 2 pips x 0.0001 of markup, half on each side
    assert positions[buy["order"]]["open_price"] == 1.39308
    assert positions[sell["order"]]["open_price"] == 1.39276
    # 0.1 lot x 100,000 x 1.39308 = 13,930.80 USD x max(0.015, 1/200) = 208.962 -> 208.96
    assert positions[buy["order"]]["margin"] == 208.96
    # 13,927.60 x 0.015 = 208.914 -> 208.91
    assert positions[sell["order"]]["margin"] == 208.91


async def test_reassigned_account_keeps_the_terms_of_its_open_positions(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    await client.put(
        f"/api/platform/groups/{vip['id']}/instruments/EURUSD",
        json={"spread": 2, "margin_rate": 0.05},
        headers=staff,
    )
    login, trader = await register_trader(client, "keeps-terms@test.io")
    await deposit(client, staff, login, "10000")
    opened = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")

    moved = await client.patch(
        f"/api/platform/accounts/{login}/group", json={"group_id": vip["id"]}, headers=staff
    )
    tick(kernel, "EURUSD", "1.39400", "1.39412", DAY_START_MS + 60_000)
    fresh = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    closed = await client.delete(f"/api/crm/orders/{opened['order']}?login={login}", headers=trader)

    assert moved.status == 200
    deal = await closed.json()
    # opened in "standard": no markup and 1% margin; it closes at the raw bid
    assert (deal["open_price"], deal["margin"], deal["close_price"], deal["profit"]) == (
        1.39298,
        139.3,
        1.394,
        10.2,
    )
    response = await client.get(f"/api/crm/orders/{fresh['order']}?login={login}", headers=trader)
    position = await response.json()
    # the new deal uses vip: ask 1.39412 + 0.0001; margin 13,942.20 x 5% = 697.11
    assert (position["open_price"], position["margin"]) == (1.39422, 697.11)


async def test_swap_config_upsert_and_resolved_rates(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    gid = vip["id"]
    await client.put(f"/api/platform/groups/{gid}/instruments/EURUSD", json={}, headers=staff)

    upserted = await client.put(
        f"/api/platform/groups/{gid}/swap-config",
        json={
            "instruments": {
                "BTCUSD": {"swap_type": "percent", "swap_long": -0.05, "swap_short": -0.05},
                "EURUSD": {"swap_type": "points", "swap_long": -5.5, "swap_short": -3.2},
            }
        },
        headers=staff,
    )
    rates = await client.get(f"/api/platform/groups/{gid}/swap-rates", headers=staff)
    await client.patch(f"/api/platform/groups/{gid}", json={"swap_multiplier": 1.5}, headers=staff)
    multiplied = await client.get(f"/broker/groups/{gid}/swap-rates", headers=staff)

    assert (upserted.status, await upserted.json()) == (
        200,
        {"group_id": gid, "instruments_updated": 1, "instruments_created": 1},
    )
    body = await rates.json()
    assert {k: v for k, v in body.items() if k != "rates"} == {
        "group_id": gid,
        "group_name": "vip",
        "swap_enabled": True,
        "swap_free": False,
        "is_islamic": False,
        "swap_multiplier": 1,
        "swap_free_days": 0,
    }
    assert body["rates"] == [
        {
            "symbol": "BTCUSD",
            "source": "group",
            "swap_type": "percent",
            "swap_long": -0.05,
            "swap_short": -0.05,
            "effective_swap_long": -0.05,
            "effective_swap_short": -0.05,
            "swap_triple_day": "wednesday",
        },
        {
            "symbol": "EURUSD",
            "source": "group",
            "swap_type": "points",
            "swap_long": -5.5,
            "swap_short": -3.2,
            "effective_swap_long": -5.5,
            "effective_swap_short": -3.2,
            "swap_triple_day": "wednesday",
        },
        *[
            {
                "symbol": symbol,
                "source": "instrument",
                "swap_type": "points",
                "swap_long": 0,
                "swap_short": 0,
                "effective_swap_long": 0,
                "effective_swap_short": 0,
                "swap_triple_day": "wednesday",
            }
            for symbol in ("GBPUSD", "USDJPY", "XAUUSD")
        ],
    ]
    eurusd = next(r for r in (await multiplied.json())["rates"] if r["symbol"] == "EURUSD")
    # -5.5 x 1.5 = -8.25; -3.2 x 1.5 = -4.8
    assert (eurusd["swap_long"], eurusd["effective_swap_long"]) == (-5.5, -8.25)
    assert eurusd["effective_swap_short"] == -4.8
    terms = kernel.terms.terms(gid, "EURUSD")
    assert terms is not None
    assert (terms.swap_type, terms.swap_long, terms.swap_short) == (
        "points",
        Decimal("-5.5"),
        Decimal("-3.2"),
    )


async def test_islamic_swap_free_and_disabled_swaps_charge_nothing(
    client: Client, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    gid = vip["id"]
    await client.patch(
        "/api/platform/instruments/XAUUSD",
        json={"swap_long": -12.5, "swap_short": 4.25},
        headers=staff,
    )

    async def xauusd() -> tuple[Any, ...]:
        body = await (
            await client.get(f"/api/platform/groups/{gid}/swap-rates", headers=staff)
        ).json()
        rate = next(r for r in body["rates"] if r["symbol"] == "XAUUSD")
        return (
            rate["source"],
            rate["swap_long"],
            rate["effective_swap_long"],
            rate["effective_swap_short"],
        )

    normal = await xauusd()
    await client.patch(f"/api/platform/groups/{gid}", json={"is_islamic": True}, headers=staff)
    islamic = await xauusd()
    await client.patch(
        f"/api/platform/groups/{gid}",
        json={"is_islamic": False, "swap_free": False, "swap_enabled": False},
        headers=staff,
    )
    disabled = await xauusd()
    await client.patch(f"/api/platform/groups/{gid}", json={"swap_enabled": True}, headers=staff)
    enabled = await xauusd()

    assert normal == ("instrument", -12.5, -12.5, 4.25)
    assert islamic == ("instrument", -12.5, 0, 0)
    assert disabled == ("instrument", -12.5, 0, 0)
    assert enabled == ("instrument", -12.5, -12.5, 4.25)


async def test_swap_config_null_entry_removes_the_group_rates_and_errors(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    vip = await _create(client, staff)
    url = f"/api/platform/groups/{vip['id']}/swap-config"
    entry = {"swap_type": "money", "swap_long": -2, "swap_short": -1}
    await client.put(url, json={"instruments": {"EURUSD": entry}}, headers=staff)
    _, trader = await register_trader(client, "swaps@test.io")

    removed = await client.put(
        url, json={"instruments": {"EURUSD": None, "GBPUSD": None}}, headers=staff
    )
    unknown = await client.put(
        url, json={"instruments": {"BTCUSDT": entry, "EURUSD": entry, "XYZ": entry}}, headers=staff
    )
    schema = await client.put(
        url,
        json={"instruments": {"EURUSD": {"swap_type": "bogus", "swap_long": 1}}},
        headers=staff,
    )
    empty = await client.put(url, json={"instruments": {}}, headers=staff)
    no_group = await client.put(
        "/api/platform/groups/nope/swap-config",
        json={"instruments": {"EURUSD": entry}},
        headers=staff,
    )
    as_trader = await client.get(f"/api/platform/groups/{vip['id']}/swap-rates", headers=trader)

    assert (removed.status, await removed.json()) == (
        200,
        {"group_id": vip["id"], "instruments_updated": 1, "instruments_created": 0},
    )
    terms = kernel.terms.terms(vip["id"], "EURUSD")
    assert terms is not None and (terms.swap_type, terms.swap_long) == ("points", Decimal(0))
    assert (unknown.status, await unknown.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "instruments", "BTCUSDT"],
                    "msg": "Instrument BTCUSDT not found",
                    "type": "unknown_symbol",
                },
                {
                    "loc": ["body", "instruments", "XYZ"],
                    "msg": "Instrument XYZ not found",
                    "type": "unknown_symbol",
                },
            ]
        },
    )
    assert sorted((tuple(e["loc"]), e["type"]) for e in (await schema.json())["detail"]) == [
        (("body", "instruments", "EURUSD", "swap_short"), "required"),
        (("body", "instruments", "EURUSD", "swap_type"), "enum"),
    ]
    assert (empty.status, (await empty.json())["detail"][0]["type"]) == (422, "minProperties")
    assert (no_group.status, await no_group.json()) == (404, {"detail": "Group not found"})
    assert (as_trader.status, await as_trader.json()) == (403, {"detail": "Staff access required"})


async def test_the_database_holds_at_most_one_default_group(kernel: Kernel) -> None:
    """The partial unique index of revision 0004 backs the rule against races."""
    with pytest.raises(IntegrityError):
        async with kernel.db.transaction() as session:
            session.add(Group(**{**DEFAULT_GROUP, "id": new_id(), "name": "second-default"}))
