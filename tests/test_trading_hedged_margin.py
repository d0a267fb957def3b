"""Hedged margin of hedging accounts (DOMAIN.md: the larger side is charged, cTrader,
or a configurable hedged-margin rate, MT5): the group's policy, the free-margin check
after the deal, partial closes, group changes and stop-out on the hedged margin.

EURUSD is quoted without spread at 1.40000, so 1 lot (100,000 EUR) at 1:100 and a 1%
margin rate snapshots 1,400.00 USD of margin per position and floating profit is 0.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from support import DAY_START_MS, deposit, market_order, register_trader, tick
from trading_support import (
    create_group,
    get,
    history,
    ledger,
    move_account,
    positions,
    send,
    state,
    update_group,
)

from brokerkernel.kernel.runtime import Kernel

Client = Any
T0 = DAY_START_MS + 7135  # the client fixture's EURUSD tick


async def _trader(
    client: Client, kernel: Kernel, staff: dict[str, str], email: str, amount: str
) -> tuple[int, dict[str, str]]:
    """EURUSD at 1.40000 / 1.40000 and a new trader who deposited ``amount`` USD."""
    tick(kernel, "EURUSD", "1.40000", "1.40000", T0 + 100)
    login, trader = await register_trader(client, email)
    await deposit(client, staff, login, amount)
    return login, trader


async def _money(client: Client, trader: dict[str, str], login: int) -> tuple[Any, ...]:
    account = await state(client, trader, login)
    return account["margin_used"], account["free_margin"], account["margin_level"]


async def _ledger_margin(client: Client, staff: dict[str, str], login: int) -> Decimal:
    """The sum of the account's ledger margin deltas."""
    return sum((row["margin_delta"] for row in await ledger(client, staff, login)), Decimal(0))


@pytest.mark.parametrize(
    ("policy", "pair", "after_partial"),
    [
        # every position in full: 1,400 + 1,400, then 1,400 + 840
        ({"hedged_margin_mode": "none"}, ("2800", "7200", "357.14"), "2240"),
        # cTrader: the larger side
        ({"hedged_margin_mode": "larger_side"}, ("1400", "8600", "714.29"), "1400"),
        # MT5 rate 0.5: 2,800 - 0.5 x 1 x (1,400 + 1,400); then 2,240 - 0.5 x 0.6 x 2,800
        (
            {"hedged_margin_mode": "rate", "hedged_margin_rate": Decimal("0.5")},
            ("1400", "8600", "714.29"),
            "1400",
        ),
        # rate 0.25: 2,800 - 0.75 x 2,800; then 2,240 - 0.75 x 0.6 x 2,800
        (
            {"hedged_margin_mode": "rate", "hedged_margin_rate": Decimal("0.25")},
            ("700", "9300", "1428.57"),
            "980",
        ),
    ],
)
async def test_one_lot_buy_and_sell_under_each_policy_and_a_partial_close(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    policy: dict[str, Any],
    pair: tuple[str, str, str],
    after_partial: str,
) -> None:
    await update_group(client, staff, **policy)
    login, trader = await _trader(client, kernel, staff, "hedge@test.io", "10000")

    buy = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    assert await _money(client, trader, login) == (1400, 8600, Decimal("714.29"))
    sell = await market_order(client, kernel, trader, login, "EURUSD", 1, "1")

    assert (buy["status"], sell["status"]) == ("executed", "executed")
    assert await _money(client, trader, login) == tuple(Decimal(value) for value in pair)
    response = await client.delete(
        f"/api/crm/orders/{sell['order']}?login={login}&volume=0.4", headers=trader
    )
    assert response.status == 200, await response.text()
    await kernel.trading.idle()

    held = {p["ticket"]: p["margin"] for p in await positions(client, trader, login)}
    assert held == {buy["order"]: 1400, sell["order"]: 840}  # snapshots split in proportion
    (deal,) = await history(client, trader, login)
    assert (deal["volume"], deal["margin"]) == (Decimal("0.4"), 560)
    account = await state(client, trader, login)
    assert (account["margin_used"], account["free_margin"]) == (
        Decimal(after_partial),
        10000 - Decimal(after_partial),
    )
    assert await _ledger_margin(client, staff, login) == Decimal(after_partial)


async def test_fully_hedged_pair_at_rate_zero_has_no_margin_level(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await update_group(client, staff, hedged_margin_mode="rate", hedged_margin_rate=0)
    login, trader = await _trader(client, kernel, staff, "zero@test.io", "10000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    sell = await market_order(client, kernel, trader, login, "EURUSD", 1, "1")

    assert await _money(client, trader, login) == (0, 10000, None)
    # closing a leg un-hedges the other: its margin comes back in full
    response = await client.delete(f"/api/crm/orders/{sell['order']}?login={login}", headers=trader)
    assert response.status == 200, await response.text()
    await kernel.trading.idle()
    assert await _money(client, trader, login) == (1400, 8600, Decimal("714.29"))
    rows = [(r["event_type"], r["margin_delta"]) for r in await ledger(client, staff, login)]
    assert rows == [
        ("deposit", 0),
        ("order_open", 1400),
        ("order_open", -1400),
        ("margin_release", 1400),
        ("trade_pnl", 0),
    ]


async def test_second_leg_accepted_or_refused_exactly_at_the_free_margin_boundary(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """Rate 0.75: a 1-lot sell against a 1-lot buy raises the margin from 1,400 to
    2,800 - 0.25 x 2,800 = 2,100, i.e. needs 700 of free margin (MT5: the margin after
    the deal); under larger_side it needs none."""
    await update_group(client, staff, hedged_margin_mode="rate", hedged_margin_rate=Decimal("0.75"))
    exact, exact_trader = await _trader(client, kernel, staff, "exact@test.io", "2100")
    short, short_trader = await _trader(client, kernel, staff, "short@test.io", "2099.99")
    for login, trader in ((exact, exact_trader), (short, short_trader)):
        assert (await market_order(client, kernel, trader, login, "EURUSD", 0, "1"))[
            "status"
        ] == "executed"

    accepted = await market_order(client, kernel, exact_trader, exact, "EURUSD", 1, "1")
    refused = await market_order(client, kernel, short_trader, short, "EURUSD", 1, "1")

    assert accepted["status"] == "executed"
    assert await _money(client, exact_trader, exact) == (2100, 0, 100)
    assert {k: v for k, v in refused.items() if k != "request_id"} == {
        "status": "rejected",
        "reason": "Insufficient margin",
    }
    assert await _money(client, short_trader, short) == (1400, Decimal("699.99"), Decimal("150"))

    # larger_side: the opposite leg up to the larger side's margin costs nothing, even
    # with no free margin left; anything above it needs free margin
    await update_group(client, staff, hedged_margin_mode="larger_side")
    full, full_trader = await _trader(client, kernel, staff, "full@test.io", "1400")
    await market_order(client, kernel, full_trader, full, "EURUSD", 0, "1")
    hedge = await market_order(client, kernel, full_trader, full, "EURUSD", 1, "1")
    more = await market_order(client, kernel, full_trader, full, "EURUSD", 1, "0.01")
    assert (hedge["status"], more["status"], more.get("reason")) == (
        "executed",
        "rejected",
        "Insufficient margin",
    )
    assert await _money(client, full_trader, full) == (1400, 0, 100)


async def test_policy_change_and_group_reassignment_reprice_through_the_ledger(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await update_group(client, staff, hedged_margin_mode="none")
    login, trader = await _trader(client, kernel, staff, "move@test.io", "10000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    await market_order(client, kernel, trader, login, "EURUSD", 1, "1")
    netting, netting_trader = await _trader(client, kernel, staff, "net@test.io", "10000")
    status, _ = await send(
        client,
        "PATCH",
        f"/api/platform/accounts/{netting}/mode",
        staff,
        {"account_mode": "netting"},
    )
    assert status == 200
    await market_order(client, kernel, netting_trader, netting, "EURUSD", 0, "1")
    assert (await _money(client, trader, login))[0] == 2800

    standard = await update_group(client, staff, hedged_margin_mode="larger_side")
    assert (standard["hedged_margin_mode"], standard["hedged_margin_rate"]) == ("larger_side", 1)
    assert (await _money(client, trader, login))[0] == 1400
    quarter = await create_group(
        client, staff, name="quarter", hedged_margin_mode="rate", hedged_margin_rate=Decimal("0.25")
    )
    await move_account(client, staff, login, quarter["id"])
    assert (await _money(client, trader, login))[0] == 700
    await update_group(client, staff, quarter["id"], hedged_margin_rate=1)
    assert (await _money(client, trader, login))[0] == 2800

    rows = await ledger(client, staff, login)
    assert [(r["event_type"], r["reference_type"], r["margin_delta"]) for r in rows[3:]] == [
        ("margin_release", "group", -1400),
        ("margin_release", "group", -700),
        ("order_open", "group", 2100),
    ]
    assert rows[-1]["margin_after"] == 2800
    # a netting account holds one position per symbol: charged in full, untouched
    assert (await _money(client, netting_trader, netting))[0] == 1400
    assert [r["event_type"] for r in await ledger(client, staff, netting)] == [
        "deposit",
        "order_open",
    ]


async def test_group_fields_are_validated(client: Client, staff: dict[str, str]) -> None:
    status, body = await send(
        client,
        "PATCH",
        "/api/platform/groups/" + (await get(client, "/api/platform/groups", {}))[0]["id"],
        staff,
        {"hedged_margin_mode": "half", "hedged_margin_rate": Decimal("1.5")},
    )
    assert status == 422
    assert sorted((tuple(e["loc"]), e["type"]) for e in body["detail"]) == [
        (("body", "hedged_margin_mode"), "enum"),
        (("body", "hedged_margin_rate"), "maximum"),
    ]
    status, body = await send(
        client, "POST", "/api/platform/groups", staff, {"name": "neg", "hedged_margin_rate": -1}
    )
    assert (status, [(tuple(e["loc"]), e["type"]) for e in body["detail"]]) == (
        422,
        [(("body", "hedged_margin_rate"), "minimum")],
    )


async def test_stop_out_uses_the_hedged_margin(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """larger_side: buy 2 lots + sell 1 lot are charged 2,800 (2,800 + 1,400 in full),
    net long 1 lot. At 1.38900 equity 1,900 is 67.86% (in full it would be 45.24%, a
    stop-out); at 1.38300 equity 1,300 is 46.43% < 50%: the buy (-3,400) closes first,
    then the sell alone is charged 1,400 and equity 1,300 is 92.86%."""
    await update_group(client, staff, hedged_margin_mode="larger_side")
    login, trader = await _trader(client, kernel, staff, "stop@test.io", "3000")
    buy = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    sell = await market_order(client, kernel, trader, login, "EURUSD", 1, "1")
    assert (await _money(client, trader, login))[0] == 2800

    tick(kernel, "EURUSD", "1.38900", "1.38900", T0 + 1000)
    await kernel.trading.idle()
    assert await _money(client, trader, login) == (2800, -900, Decimal("67.86"))
    assert len(await positions(client, trader, login)) == 2

    tick(kernel, "EURUSD", "1.38300", "1.38300", T0 + 2000)
    await kernel.trading.idle()

    assert [p["ticket"] for p in await positions(client, trader, login)] == [sell["order"]]
    (deal,) = await history(client, trader, login)
    assert (deal["ticket"], deal["reason"], deal["profit"]) == (
        buy["order"],
        "stop-out",
        Decimal("-3400"),
    )
    (event,) = await get(client, f"/api/backoffice/stopout-events?login={login}", staff)
    assert (
        event["margin_level_at_trigger"],
        event["margin_level_after_close"],
        event["equity_at_trigger"],
        event["positions_remaining"],
    ) == (Decimal("46.43"), Decimal("92.86"), 1300, 1)
    account = await state(client, trader, login)
    assert (account["balance"], account["equity"], account["margin_used"]) == (-400, 1300, 1400)
    assert await _ledger_margin(client, staff, login) == 1400
