"""Margin call and stop-out through the risk engine and the exact Decimal path
(DOMAIN.md worked example; seed section 31 stop-out events)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from support import DAY_START_MS, deposit, market_order, register_trader, tick
from trading_support import add_instrument, get, history, positions, send, state, update_group

from brokerkernel.kernel.risk.rules import Crossing, LevelKind
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.kernel.trading.stopout import MarginCallThrottle

Client = Any
T0 = DAY_START_MS + 7135


async def _events(kernel: Kernel, type_: str) -> list[dict[str, Any]]:
    async with kernel.db.read() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == type_).order_by(OutboxEvent.seq)
        )
        return [dict(row.payload) for row in rows]


async def _gbp_trader(
    client: Client, kernel: Kernel, staff: dict[str, str], email: str, amount: str
) -> tuple[int, dict[str, str]]:
    """GBPUSD_X added and quoted at 1.58772 (T0 + 100 ms), and a new trader who deposited
    ``amount`` USD: ``(login, trader headers)``."""
    await add_instrument(client, staff, symbol="GBPUSD_X")
    tick(kernel, "GBPUSD_X", "1.58772", "1.58772", T0 + 100)
    login, trader = await register_trader(client, email)
    await deposit(client, staff, login, amount)
    return login, trader


async def _gbp(kernel: Kernel, bid: str, time_ms: int) -> None:
    tick(kernel, "GBPUSD_X", bid, bid, time_ms)
    await kernel.trading.idle()


async def test_domain_example_stop_out_strictly_below_3969_30(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """5 lots GBPUSD at 1.58772, 1:100: margin 7,938.60; stop-out at 50% -> equity below
    3,969.30. With a balance of 9,999.30 that is a bid of 1.57566 (-6,030.00)."""
    login, trader = await _gbp_trader(client, kernel, staff, "domain@test.io", "9999.30")
    order = await market_order(client, kernel, trader, login, "GBPUSD_X", 0, "5")
    assert (await state(client, trader, login))["margin_used"] == Decimal("7938.6")

    await _gbp(kernel, "1.57900", T0 + 1000)  # equity 5,639.30: 71.04% < 100% margin call
    await _gbp(kernel, "1.57566", T0 + 2000)  # equity 3,969.30: exactly 50%, no stop-out
    at_level = await state(client, trader, login)
    assert (at_level["equity"], at_level["margin_level"]) == (Decimal("3969.3"), Decimal("50"))
    assert [p["ticket"] for p in await positions(client, trader, login)] == [order["order"]]

    await _gbp(kernel, "1.57565", T0 + 3000)  # equity 3,964.30: below, stop-out

    assert await positions(client, trader, login) == []
    (deal,) = await history(client, trader, login)
    assert (deal["reason"], deal["close_price"], deal["profit"]) == (
        "stop-out",
        Decimal("1.57565"),
        Decimal("-6035"),
    )
    (event,) = await get(client, f"/api/backoffice/stopout-events?login={login}", staff)
    assert {k: v for k, v in event.items() if k not in ("id", "created_at")} == {
        "login": login,
        "order_ticket": order["order"],
        "symbol": "GBPUSD_X",
        "margin_level_at_trigger": Decimal("49.94"),
        "margin_level_after_close": None,
        "equity_at_trigger": Decimal("3964.3"),
        "profit_realized": Decimal("-6035"),
        "close_price": Decimal("1.57565"),
        "stopout_level": 50,
        "positions_remaining": 0,
    }
    assert event["created_at"] == "2014-05-07T00:00:10.135000Z"
    final = await state(client, trader, login)
    assert (final["balance"], final["margin_used"], final["equity"]) == (
        Decimal("3964.3"),
        0,
        Decimal("3964.3"),
    )
    (warning,) = await _events(kernel, "account.margin_call")
    assert (warning["login"], warning["margin_level"], warning["equity"]) == (
        login,
        "71.04",
        "5639.30",
    )
    (stop_out,) = await _events(kernel, "account.stop_out")
    assert (stop_out["order_ticket"], stop_out["margin_level_at_trigger"]) == (
        order["order"],
        "49.94",
    )


async def test_least_profitable_first_and_re_check_after_each_close(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _gbp_trader(client, kernel, staff, "two@test.io", "3000")
    # margins 1,392.98 + 1,587.72 = 2,980.70
    eur = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    gbp = await market_order(client, kernel, trader, login, "GBPUSD_X", 0, "1")

    # GBP -300 and EUR -2,000: equity 700 = 23.48%
    tick(kernel, "GBPUSD_X", "1.58472", "1.58472", T0 + 1000)
    tick(kernel, "EURUSD", "1.37298", "1.37310", T0 + 1000)
    await kernel.trading.idle()

    # the EUR position (-2,000) is the least profitable and goes first; then 700 /
    # 1,587.72 = 44.09% is still below 50%: the GBP position (-300) goes too
    deals = await history(client, trader, login)
    assert [(d["ticket"], d["profit"], d["reason"]) for d in deals] == [
        (eur["order"], Decimal("-2000"), "stop-out"),
        (gbp["order"], Decimal("-300"), "stop-out"),
    ]
    events = await get(client, f"/api/backoffice/stopout-events?login={login}", staff)
    # newest first
    assert [
        (
            e["order_ticket"],
            e["margin_level_at_trigger"],
            e["margin_level_after_close"],
            e["equity_at_trigger"],
            e["positions_remaining"],
        )
        for e in events
    ] == [
        (gbp["order"], Decimal("44.09"), None, Decimal("700"), 0),
        (eur["order"], Decimal("23.48"), Decimal("44.09"), Decimal("700"), 1),
    ]
    paged = await get(
        client, f"/api/backoffice/stopout-events?login={login}&limit=1&offset=1", staff
    )
    assert [e["order_ticket"] for e in paged] == [eur["order"]]


async def test_a_close_that_lifts_the_level_stops_the_stop_out(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _gbp_trader(client, kernel, staff, "lift@test.io", "3000")
    eur = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    gbp = await market_order(client, kernel, trader, login, "GBPUSD_X", 0, "1")

    # GBP +228, EUR -1,798: equity 1,430 = 47.98% of 2,980.70 -> close EUR (the worst);
    # then 1,430 / 1,587.72 = 90.07%: the GBP position stays
    tick(kernel, "GBPUSD_X", "1.59000", "1.59000", T0 + 1000)
    tick(kernel, "EURUSD", "1.37500", "1.37512", T0 + 1000)
    await kernel.trading.idle()

    assert [p["ticket"] for p in await positions(client, trader, login)] == [gbp["order"]]
    (event,) = await get(client, f"/api/backoffice/stopout-events?login={login}", staff)
    assert (
        event["order_ticket"],
        event["margin_level_at_trigger"],
        event["margin_level_after_close"],
        event["equity_at_trigger"],
        event["profit_realized"],
        event["positions_remaining"],
    ) == (eur["order"], Decimal("47.98"), Decimal("90.07"), Decimal("1430"), Decimal("-1798"), 1)


async def test_stopout_events_api_access_and_paging(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    _, trader = await register_trader(client, "api@test.io")

    by_trader = await client.get("/api/backoffice/stopout-events", headers=trader)
    too_many = await send(client, "GET", "/api/backoffice/stopout-events?limit=501", staff, {})
    bad_login = await send(client, "GET", "/api/backoffice/stopout-events?login=abc", staff, {})
    empty = await get(client, "/api/backoffice/stopout-events?offset=5", staff)

    assert by_trader.status == 403
    assert too_many == (
        422,
        {
            "detail": [
                {"loc": ["query", "limit"], "msg": "must be between 1 and 500", "type": "range"}
            ]
        },
    )
    assert bad_login == (
        422,
        {"detail": [{"loc": ["query", "login"], "msg": "must be an integer", "type": "type"}]},
    )
    assert empty == []


async def test_money_moved_by_other_writers_reaches_the_risk_engine(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "refresh@test.io")
    await deposit(client, staff, login, "1000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    assert round(kernel.risk.equity(login), 6) == 998.8  # 1,000 - 1.20 of spread

    await deposit(client, staff, login, "500")
    for _ in range(100):  # the deposit's event reaches the trading service via the bus
        await kernel.relay.drain()
        await kernel.trading.idle()
        if round(kernel.risk.equity(login), 6) == 1498.8:
            break
        await asyncio.sleep(0.05)

    assert round(kernel.risk.equity(login), 6) == 1498.8
    assert (await state(client, trader, login))["equity"] == Decimal("1498.8")


async def test_group_level_changes_reach_the_risk_engine(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "levels@test.io")
    await deposit(client, staff, login, "1000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")  # margin 139.30

    def stop_out_level() -> Decimal:
        (level,) = [w.level.value for w in kernel.risk.watched(login) if w.rule == "stop_out"]
        return level

    assert stop_out_level() == Decimal("69.65")  # 50% of 139.30
    await update_group(client, staff, stopout_level=Decimal("30"))
    for _ in range(100):  # the config change reaches the trading service via the bus
        await kernel.relay.drain()
        await kernel.trading.idle()
        if stop_out_level() != Decimal("69.65"):
            break
        await asyncio.sleep(0.05)

    assert stop_out_level() == Decimal("41.79")  # 30% of 139.30


async def test_margin_call_warnings_repeat_at_most_once_per_interval_of_market_time(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """An account hovering at its margin-call level crosses it on every dip (the engine
    re-arms on the way back up); ``[kernel.trading] margin_call_interval_s`` (default
    300 s of market time) keeps it to one ``account.margin_call`` per interval."""
    login, trader = await _gbp_trader(client, kernel, staff, "hover@test.io", "9999.30")
    await market_order(client, kernel, trader, login, "GBPUSD_X", 0, "5")

    first = T0 + 1000
    dips = [first, first + 60_000, first + 299_999, first + 300_000, first + 300_500]
    for at in dips:
        await _gbp(kernel, "1.57900", at)  # 71.04% < 100%: a crossing
        await _gbp(kernel, "1.58772", at + 100)  # back above: re-armed

    warnings = await _events(kernel, "account.margin_call")
    assert [(w["login"], w["margin_level"]) for w in warnings] == [(login, "71.04")] * 2
    assert kernel.risk.snapshot().crossings == len(dips)


def test_the_margin_call_throttle_admits_one_check_at_a_time_and_0_never_waits() -> None:
    def crossing(time_ms: int) -> Crossing:
        return Crossing(
            7, "margin_call", "margin_call", LevelKind.FLOOR, Decimal(1), 0.5, Decimal(1), time_ms
        )

    throttle, eager = MarginCallThrottle(60), MarginCallThrottle(0)
    first = throttle.admit(crossing(1_000))
    queued_meanwhile = throttle.admit(crossing(2_000))
    throttle.settled(7, 1_000, warned=False)  # the price had moved back: no warning
    after_no_warning = throttle.admit(crossing(3_000))
    throttle.settled(7, 3_000, warned=True)
    within = throttle.admit(crossing(62_999))
    at_interval = throttle.admit(crossing(63_000))
    eager.settled(7, 1_000, warned=eager.admit(crossing(1_000)))

    assert (first, queued_meanwhile, after_no_warning) == (True, False, True)
    assert (within, at_interval) == (False, True)
    assert eager.admit(crossing(1_000)) is True
