"""Pending orders cmd 2-7 (seed section 12): validation, triggers, stop-limits, expiry."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from support import DAY_START_MS, deposit, market_order, register_trader, tick
from trading_support import (
    get,
    history,
    ledger,
    override,
    place_pending,
    positions,
    send,
    set_mode,
    state,
)

from brokerkernel.kernel.runtime import Kernel

Client = Any
T0 = DAY_START_MS + 7135  # the client fixture's EURUSD tick: bid 1.39286 / ask 1.39298
BID, ASK = Decimal("1.39286"), Decimal("1.39298")


async def _trader(
    client: Client, staff: dict[str, str], email: str, amount: str = "10000"
) -> tuple[int, dict[str, str]]:
    login, trader = await register_trader(client, email)
    await deposit(client, staff, login, amount)
    return login, trader


async def _place(
    client: Client,
    kernel: Kernel,
    trader: dict[str, str],
    login: int,
    cmd: int,
    price: str,
    **more: Any,
) -> tuple[int, Any]:
    return await place_pending(
        client,
        kernel,
        trader,
        login=login,
        symbol="EURUSD",
        cmd=cmd,
        volume=Decimal("0.10"),
        trigger_price=Decimal(price),
        **more,
    )


async def test_a_placed_order_reserves_no_margin_and_lists_by_status(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "place@test.io")

    status, order = await _place(
        client,
        kernel,
        trader,
        login,
        2,
        "1.38500",
        sl=Decimal("1.38000"),
        tp=Decimal("1.39500"),
        expiry_at="2014-05-08T00:00:00Z",
        comment="Buy limit on EUR",
    )

    assert status == 201
    assert {
        k: v for k, v in order.items() if k not in ("order_id", "created_at", "updated_at")
    } == {
        "login": login,
        "symbol": "EURUSD",
        "cmd": 2,
        "volume": Decimal("0.1"),
        "trigger_price": Decimal("1.385"),
        "limit_price": None,
        "sl": Decimal("1.38"),
        "tp": Decimal("1.395"),
        "expiry_at": "2014-05-08T00:00:00Z",
        "comment": "Buy limit on EUR",
        "status": "active",
        "reason": None,
        "position_ticket": None,
        "stop_triggered_at": None,
    }
    account = await state(client, trader, login)
    assert (account["margin_used"], account["free_margin"]) == (0, 10000)
    active = await get(client, f"/api/customer/orders/pending?login={login}&status=active", trader)
    filled = await get(client, f"/api/customer/orders/pending?login={login}&status=filled", trader)
    assert [o["order_id"] for o in active] == [order["order_id"]] and filled == []
    assert [e["event_type"] for e in await ledger(client, staff, login)] == ["deposit"]


@pytest.mark.parametrize(
    ("cmd", "name", "rule", "market"),
    [
        (2, "BUY_LIMIT", "below the ask", ASK),
        (3, "SELL_LIMIT", "above the bid", BID),
        (4, "BUY_STOP", "above the ask", ASK),
        (5, "SELL_STOP", "below the bid", BID),
        (6, "BUY_STOP_LIMIT", "above the ask", ASK),
        (7, "SELL_STOP_LIMIT", "below the bid", BID),
    ],
)
async def test_trigger_price_at_the_market_is_refused_one_point_away_accepted(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    cmd: int,
    name: str,
    rule: str,
    market: Decimal,
) -> None:
    login, trader = await _trader(client, staff, f"place{cmd}@test.io")
    point = Decimal("0.00001")
    good = market + point if "above" in rule else market - point
    limit = {"limit_price": good} if cmd in (6, 7) else {}

    at_market = await _place(client, kernel, trader, login, cmd, str(market), **limit)
    one_point = await _place(client, kernel, trader, login, cmd, str(good), **limit)

    assert at_market == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "trigger_price"],
                    "msg": f"{name} trigger_price must be {rule} {market}",
                    "type": "trigger_price",
                }
            ]
        },
    )
    assert one_point[0] == 201 and one_point[1]["status"] == "active"


async def test_limit_price_required_for_stop_limits_refused_otherwise(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "limit@test.io")

    missing = await _place(client, kernel, trader, login, 6, "1.39500")
    extra = await _place(client, kernel, trader, login, 4, "1.39500", limit_price=Decimal("1.396"))

    assert missing == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "limit_price"],
                    "msg": "required for cmd 6 and 7",
                    "type": "required",
                }
            ]
        },
    )
    assert extra == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "limit_price"],
                    "msg": "only allowed for cmd 6 and 7",
                    "type": "forbidden",
                }
            ]
        },
    )


async def test_every_field_error_is_listed_at_once(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "fields@test.io")

    status, body = await place_pending(
        client,
        kernel,
        trader,
        login=login,
        symbol="EURUSD",
        cmd=3,
        volume=Decimal("0.015"),
        trigger_price=Decimal("1.392861"),
        sl=Decimal("1.38"),
        expiry_at="2014-05-06T00:00:00Z",
    )
    bad_schema = await send(
        client,
        "POST",
        "/api/customer/orders/pending",
        trader,
        {"login": login, "symbol": "EURUSD", "cmd": 1, "volume": -1, "extra": True},
    )

    assert status == 422
    assert [(e["loc"][1], e["type"]) for e in body["detail"]] == [
        ("volume", "volume"),
        ("expiry_at", "expiry"),
        ("trigger_price", "price_grid"),
        ("sl", "stops"),
    ]
    assert bad_schema[0] == 422
    assert sorted((tuple(e["loc"]), e["type"]) for e in bad_schema[1]["detail"]) == [
        (("body",), "additionalProperties"),
        (("body", "cmd"), "enum"),
        (("body", "trigger_price"), "required"),
        (("body", "volume"), "exclusiveMinimum"),
    ]


@pytest.mark.parametrize(
    ("cmd", "price", "untouched", "touched", "fill"),
    [
        # buy limit: ask <= price (fills at the ask)
        (2, "1.39000", ("1.38989", "1.39001"), ("1.38988", "1.39000"), "1.39"),
        # sell limit: bid >= price (fills at the bid)
        (3, "1.39500", ("1.39499", "1.39511"), ("1.39500", "1.39512"), "1.395"),
        # buy stop: ask >= price
        (4, "1.39500", ("1.39487", "1.39499"), ("1.39488", "1.39500"), "1.395"),
        # sell stop: bid <= price
        (5, "1.39000", ("1.39001", "1.39013"), ("1.39000", "1.39012"), "1.39"),
    ],
)
async def test_each_trigger_rule_on_both_sides_of_the_boundary(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    cmd: int,
    price: str,
    untouched: tuple[str, str],
    touched: tuple[str, str],
    fill: str,
) -> None:
    login, trader = await _trader(client, staff, f"trigger{cmd}@test.io")
    await _place(client, kernel, trader, login, cmd, price, sl=None, tp=None)

    tick(kernel, "EURUSD", *untouched, T0 + 1000)
    await kernel.trading.idle()
    assert await positions(client, trader, login) == []

    tick(kernel, "EURUSD", *touched, T0 + 2000)
    await kernel.trading.idle()

    (position,) = await positions(client, trader, login)
    assert (position["cmd"], position["open_price"], position["volume"]) == (
        cmd % 2,
        Decimal(fill),
        Decimal("0.1"),
    )
    (filled,) = await get(client, f"/api/customer/orders/pending?login={login}", trader)
    assert (filled["status"], filled["position_ticket"]) == ("filled", position["ticket"])


async def test_stop_limit_fills_within_the_limit(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "sl-fill@test.io")
    await _place(client, kernel, trader, login, 6, "1.39500", limit_price=Decimal("1.39520"))

    tick(kernel, "EURUSD", "1.39498", "1.39510", T0 + 1000)
    await kernel.trading.idle()

    (position,) = await positions(client, trader, login)
    assert (position["cmd"], position["open_price"]) == (0, Decimal("1.3951"))


async def test_stop_limit_that_gapped_past_its_limit_becomes_a_limit_order(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "sl-gap@test.io")
    await _place(client, kernel, trader, login, 7, "1.39000", limit_price=Decimal("1.38950"))

    # sell stop-limit: the bid gapped from above 1.39000 to 1.38900, below the 1.38950 limit
    tick(kernel, "EURUSD", "1.38900", "1.38912", T0 + 1000)
    await kernel.trading.idle()

    assert await positions(client, trader, login) == []
    (converted,) = await get(client, f"/api/customer/orders/pending?login={login}", trader)
    assert (
        converted["status"],
        converted["cmd"],
        converted["trigger_price"],
        converted["limit_price"],
        converted["stop_triggered_at"],
    ) == ("active", 3, Decimal("1.3895"), None, "2014-05-07T00:00:08.135000Z")

    # now a sell limit at 1.38950: fills when the bid comes back up to it
    tick(kernel, "EURUSD", "1.38949", "1.38961", T0 + 2000)
    await kernel.trading.idle()
    assert await positions(client, trader, login) == []
    tick(kernel, "EURUSD", "1.38950", "1.38962", T0 + 3000)
    await kernel.trading.idle()
    (position,) = await positions(client, trader, login)
    assert (position["cmd"], position["open_price"]) == (1, Decimal("1.3895"))


@pytest.mark.parametrize(
    ("cmd", "stop", "limit", "untouched", "touched", "outcome"),
    [
        # buy stop-limit: the stop on ask >= 1.39500, then within the limit if ask <= 1.39510
        (6, "1.39500", "1.39510", ("1.39487", "1.39499"), ("1.39498", "1.39510"), "1.3951"),
        (6, "1.39500", "1.39510", ("1.39487", "1.39499"), ("1.39499", "1.39511"), 2),
        # sell stop-limit: the stop on bid <= 1.39000, then within the limit if bid >= 1.38990
        (7, "1.39000", "1.38990", ("1.39001", "1.39013"), ("1.38990", "1.39002"), "1.3899"),
        (7, "1.39000", "1.38990", ("1.39001", "1.39013"), ("1.38989", "1.39001"), 3),
    ],
)
async def test_stop_limit_fill_or_conversion_on_both_sides_of_the_limit(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    cmd: int,
    stop: str,
    limit: str,
    untouched: tuple[str, str],
    touched: tuple[str, str],
    outcome: str | int,
) -> None:
    """At the limit the stop-limit fills at the quote; one point past it the order
    becomes a limit order (cmd 2/3) at the limit price (seed section 12)."""
    login, trader = await _trader(client, staff, f"stoplimit{cmd}{outcome}@test.io")
    await _place(client, kernel, trader, login, cmd, stop, limit_price=Decimal(limit))

    tick(kernel, "EURUSD", *untouched, T0 + 1000)
    await kernel.trading.idle()
    (waiting,) = await get(client, f"/api/customer/orders/pending?login={login}", trader)
    tick(kernel, "EURUSD", *touched, T0 + 2000)
    await kernel.trading.idle()

    assert (waiting["status"], waiting["cmd"]) == ("active", cmd)
    (order,) = await get(client, f"/api/customer/orders/pending?login={login}", trader)
    opened = await positions(client, trader, login)
    if isinstance(outcome, str):
        assert order["status"] == "filled"
        assert [(p["cmd"], p["open_price"]) for p in opened] == [(cmd % 2, Decimal(outcome))]
    else:
        assert opened == []
        assert (order["status"], order["cmd"], order["trigger_price"], order["limit_price"]) == (
            "active",
            outcome,
            Decimal(limit),
            None,
        )


async def test_an_active_order_triggers_on_the_groups_current_quote_after_a_spread_change(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """The group's EURUSD markup (2 pips: ask + 0.0001) is removed while a buy limit at
    1.39200 waits: a raw ask of 1.39200 now reaches it and fills it."""
    await override(client, staff, "EURUSD", spread=Decimal("2"))
    login, trader = await _trader(client, staff, "respread@test.io")
    await _place(client, kernel, trader, login, 2, "1.39200")
    await override(client, staff, "EURUSD", spread=None)
    for step in range(100):  # the config change reaches the trading service via the bus
        tick(kernel, "EURUSD", "1.39188", "1.39200", T0 + 1000 + step)
        await kernel.relay.drain()
        await kernel.trading.idle()
        if await positions(client, trader, login):
            break
        await asyncio.sleep(0.05)

    (position,) = await positions(client, trader, login)
    assert (position["cmd"], position["open_price"]) == (0, Decimal("1.392"))


async def test_margin_is_checked_at_execution_and_a_refused_order_is_rejected(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "poor@test.io", amount="100")
    # 1 lot needs ~1,390 USD of margin; placing it needs none
    status, _ = await place_pending(
        client,
        kernel,
        trader,
        login=login,
        symbol="EURUSD",
        cmd=4,
        volume=Decimal("1"),
        trigger_price=Decimal("1.39400"),
    )
    assert status == 201

    tick(kernel, "EURUSD", "1.39388", "1.39400", T0 + 1000)
    await kernel.trading.idle()

    (rejected,) = await get(client, f"/api/customer/orders/pending?login={login}", trader)
    assert (rejected["status"], rejected["reason"]) == ("rejected", "Insufficient margin")
    assert await positions(client, trader, login) == []
    assert [e["event_type"] for e in await ledger(client, staff, login)] == ["deposit"]


async def test_expiry_and_gtc(client: Client, kernel: Kernel, staff: dict[str, str]) -> None:
    login, trader = await _trader(client, staff, "expiry@test.io")
    _, expiring = await _place(
        client, kernel, trader, login, 2, "1.38000", expiry_at="2014-05-07T00:00:09.000Z"
    )
    _, gtc = await _place(client, kernel, trader, login, 2, "1.38000")

    tick(kernel, "EURUSD", "1.39286", "1.39298", T0 + 1864)  # 00:00:08.999
    await kernel.trading.idle()
    assert {
        o["status"]
        for o in await get(client, f"/api/customer/orders/pending?login={login}", trader)
    } == {"active"}
    tick(kernel, "EURUSD", "1.39286", "1.39298", T0 + 1865)  # 00:00:09.000
    await kernel.trading.idle()

    by_id = {
        o["order_id"]: o["status"]
        for o in await get(client, f"/api/customer/orders/pending?login={login}", trader)
    }
    assert by_id == {expiring["order_id"]: "expired", gtc["order_id"]: "active"}


async def test_modify_validates_against_the_market_and_locks_the_row(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "modify@test.io")
    _, order = await _place(client, kernel, trader, login, 2, "1.38000", sl=Decimal("1.37000"))
    _, stop_limit = await _place(
        client, kernel, trader, login, 6, "1.39500", limit_price=Decimal("1.39600")
    )
    path = f"/api/customer/orders/pending/{order['order_id']}?login={login}"

    moved = await send(
        client,
        "PATCH",
        path,
        trader,
        {"trigger_price": Decimal("1.38100"), "sl": 0, "tp": Decimal("1.39")},
    )
    above_ask = await send(client, "PATCH", path, trader, {"trigger_price": Decimal("1.39298")})
    limit_on_limit = await send(client, "PATCH", path, trader, {"limit_price": Decimal("1.38")})
    stop_limit_limit = await send(
        client,
        "PATCH",
        f"/api/customer/orders/pending/{stop_limit['order_id']}?login={login}",
        trader,
        {"limit_price": Decimal("1.39700")},
    )
    nothing = await send(client, "PATCH", path, trader, {})

    assert moved[0] == 200
    assert (moved[1]["trigger_price"], moved[1]["sl"], moved[1]["tp"]) == (
        Decimal("1.381"),
        None,
        Decimal("1.39"),
    )
    assert above_ask == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "trigger_price"],
                    "msg": "BUY_LIMIT trigger_price must be below the ask 1.39298",
                    "type": "trigger_price",
                },
                # the order's TP 1.39 would no longer be above its price
                {
                    "loc": ["body", "tp"],
                    "msg": "must be above the order price 1.39298",
                    "type": "stops",
                },
            ]
        },
    )
    assert limit_on_limit == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "limit_price"],
                    "msg": "can only be set on stop-limit orders (cmd 6/7)",
                    "type": "forbidden",
                }
            ]
        },
    )
    assert stop_limit_limit[0] == 200 and stop_limit_limit[1]["limit_price"] == Decimal("1.397")
    assert nothing[0] == 422 and nothing[1]["detail"][0]["type"] == "minProperties"


async def test_cancel_only_active_orders_and_unknown_ids(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "cancel@test.io")
    other, other_trader = await _trader(client, staff, "cancel-other@test.io")
    _, order = await _place(client, kernel, trader, login, 2, "1.38000")
    path = f"/api/customer/orders/pending/{order['order_id']}?login={login}"

    first = await send(client, "DELETE", path, trader, {})
    again = await send(client, "DELETE", path, trader, {})
    modify_cancelled = await send(client, "PATCH", path, trader, {"sl": Decimal("1.37")})
    unknown = await send(
        client, "DELETE", f"/api/customer/orders/pending/1?login={login}", trader, {}
    )
    foreign = await send(
        client,
        "DELETE",
        f"/api/customer/orders/pending/{order['order_id']}?login={other}",
        other_trader,
        {},
    )
    not_yours = await send(client, "DELETE", path, other_trader, {})

    assert first[0] == 200 and first[1]["status"] == "cancelled"
    assert again == (409, {"detail": "Pending order is not active (status cancelled)"})
    assert modify_cancelled == (409, {"detail": "Pending order is not active (status cancelled)"})
    assert unknown == (404, {"detail": "Pending order not found"})
    assert foreign == (404, {"detail": "Pending order not found"})
    assert not_yours == (403, {"detail": "Not your trading account"})


async def test_pending_order_fill_carries_sl_tp_and_books_like_a_market_order(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "carry@test.io")
    await _place(
        client, kernel, trader, login, 2, "1.39200", sl=Decimal("1.38000"), tp=Decimal("1.40000")
    )

    tick(kernel, "EURUSD", "1.39188", "1.39200", T0 + 1000)
    await kernel.trading.idle()
    (position,) = await positions(client, trader, login)
    # then the TP triggers on the bid
    tick(kernel, "EURUSD", "1.40000", "1.40012", T0 + 2000)
    await kernel.trading.idle()

    assert (position["sl"], position["tp"], position["margin"]) == (
        Decimal("1.38"),
        Decimal("1.4"),
        Decimal("139.2"),
    )
    (deal,) = await history(client, trader, login)
    assert (deal["reason"], deal["profit"]) == ("tp", Decimal("80"))
    account = await state(client, trader, login)
    assert (account["balance"], account["margin_used"]) == (Decimal("10080"), 0)


async def test_a_fill_adding_to_a_netting_position_applies_its_sl_tp(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """Netting (MT5): a deal that adds to the symbol's one position sets that position's
    SL/TP to the order's when the order carries them; one it does not carry is kept."""
    login, trader = await _trader(client, staff, "netsltp@test.io")
    assert (await set_mode(client, staff, login, "netting"))[0] == 200
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.10")  # at 1.39298
    await _place(client, kernel, trader, login, 2, "1.39200", tp=Decimal("1.40000"))

    tick(kernel, "EURUSD", "1.39188", "1.39200", T0 + 1000)
    await kernel.trading.idle()

    (position,) = await positions(client, trader, login)
    assert (position["volume"], position["open_price"], position["sl"], position["tp"]) == (
        Decimal("0.2"),
        Decimal("1.39249"),
        None,
        Decimal("1.4"),
    )
