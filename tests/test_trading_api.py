"""Market orders, fills, margin, closes and the ledger through the HTTP API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support import (
    DAY_START_MS,
    deposit,
    market_order,
    register_trader,
    tick,
)
from trading_support import add_instrument, override

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import LedgerEvent, OutboxEvent

Client = TestClient[Any, Any]


async def test_buy_fills_at_ask_and_sell_at_bid_of_the_known_tick(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "fills@test.io")
    await deposit(client, staff, login, "10000.00")

    buy = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.10")
    sell = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.10")

    assert buy["status"] == "executed" and sell["status"] == "executed"
    response = await client.get(f"/api/crm/orders?login={login}", headers=trader)
    positions = {p["ticket"]: p for p in await response.json()}
    assert positions[buy["order"]]["open_price"] == 1.39298
    assert positions[sell["order"]]["open_price"] == 1.39286
    # margin = 0.1 lot x 100,000 EUR x 1.39298 USD/EUR x max(1%, 1/100) = 139.298 -> 139.30
    assert positions[buy["order"]]["margin"] == 139.3
    assert positions[sell["order"]]["margin"] == 139.29
    # marked at the closing side: the buy closes on bid, the sell on ask
    assert positions[buy["order"]]["current_price"] == 1.39286
    assert positions[buy["order"]]["profit"] == -1.2
    assert positions[sell["order"]]["profit"] == -1.2


async def test_group_spread_markup_widens_fills_by_half_the_markup_each_side(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await override(client, staff, "EURUSD", spread=Decimal("2"))
    login, trader = await register_trader(client, "markup@test.io")
    await deposit(client, staff, login, "10000")

    buy = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.01")
    sell = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.01")

    response = await client.get(f"/api/crm/history?login={login}", headers=trader)
    assert await response.json() == []
    response = await client.get(f"/api/crm/orders?login={login}", headers=trader)
    prices = {p["ticket"]: p["open_price"] for p in await response.json()}
    # 2 pips x 0.0001 = 0.0002 of markup: ask + 0.0001, bid - 0.0001
    assert prices[buy["order"]] == 1.39308
    assert prices[sell["order"]] == 1.39276


async def test_order_beyond_free_margin_is_rejected_and_writes_nothing(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "margin@test.io")
    await deposit(client, staff, login, "1000.00")

    # 1 lot needs 1,392.98 USD of margin; free margin is 1,000.00
    rejected = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    # 0.71 lot needs 989.02 (989.0158 rounded): fits
    filled = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.71")

    assert rejected == {
        "request_id": rejected["request_id"],
        "status": "rejected",
        "reason": "Insufficient margin",
    }
    assert filled["status"] == "executed"
    response = await client.get(f"/api/backoffice/accounts/{login}/ledger", headers=staff)
    ledger = await response.json()
    assert [
        (e["event_type"], e["sequence_num"], e["margin_delta"], e["margin_after"]) for e in ledger
    ] == [
        ("order_open", 2, 989.02, 989.02),
        ("deposit", 1, 0, 0),
    ]


async def test_gbpusd_margin_matches_the_domain_worked_example(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """DOMAIN.md (mql5.com forum 2271): 5 lots GBPUSD at 1.58772, 1:100 -> 7,938.60 USD."""
    await add_instrument(client, staff, symbol="GBPUSD_X")
    tick(kernel, "GBPUSD_X", "1.58772", "1.58772", DAY_START_MS + 8000)
    login, trader = await register_trader(client, "gbp@test.io")
    await deposit(client, staff, login, "10000.00")

    order = await market_order(client, kernel, trader, login, "GBPUSD_X", 0, "5")

    assert order["status"] == "executed"
    response = await client.get(f"/api/crm/accounts/{login}/state", headers=trader)
    state = await response.json()
    assert state["margin_used"] == 7938.6
    assert state["equity"] == 10000
    assert state["free_margin"] == 2061.4
    assert state["margin_level"] == 125.97  # DOMAIN.md rounds it to 126%


async def test_partial_then_full_close_splits_margin_and_books_profit(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "close@test.io")
    await deposit(client, staff, login, "5000.00")
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    ticket = order["order"]
    tick(kernel, "EURUSD", "1.39400", "1.39412", DAY_START_MS + 60_000)

    response = await client.delete(
        f"/api/crm/orders/{ticket}?login={login}&volume=0.3", headers=trader
    )
    partial = await response.json()
    response = await client.delete(f"/api/crm/orders/{ticket}?login={login}", headers=trader)
    final = await response.json()

    assert partial["parent_order"] == ticket and partial["ticket"] != ticket
    assert (partial["volume"], partial["close_price"], partial["profit"], partial["margin"]) == (
        0.3,
        1.394,
        30.6,
        417.89,
    )
    # 0.3 x 100,000 x (1.39400 - 1.39298) = 30.60; margin 1,392.98 x 0.3 = 417.894 -> 417.89
    assert final["ticket"] == ticket and final["parent_order"] is None
    assert (final["volume"], final["profit"], final["margin"]) == (0.7, 71.4, 975.09)
    assert final["open_fx_rate"] == 1 and final["close_fx_rate"] == 1
    response = await client.get(f"/api/crm/accounts/{login}/state", headers=trader)
    state = await response.json()
    assert (state["balance"], state["margin_used"], state["equity"]) == (5102, 0, 5102)
    response = await client.get(f"/api/crm/history?login={login}", headers=trader)
    # both deals closed at the same market time: ordered by ticket
    assert [d["ticket"] for d in await response.json()] == [ticket, partial["ticket"]]
    response = await client.get(f"/api/backoffice/accounts/{login}/ledger", headers=staff)
    events = await response.json()
    assert [
        (e["event_type"], e["balance_delta"], e["margin_delta"], e["balance_after"]) for e in events
    ] == [
        ("trade_pnl", 71.4, 0, 5102),
        ("margin_release", 0, -975.09, 5030.6),
        ("trade_pnl", 30.6, 0, 5030.6),
        ("margin_release", 0, -417.89, 5000),
        ("order_open", 0, 1392.98, 5000),
        ("deposit", 5000, 0, 5000),
    ]


async def test_ledger_sums_equal_the_account_and_sequence_has_no_gaps(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "ledger@test.io")
    await deposit(client, staff, login, "2500.55")
    for i in range(3):
        order = await market_order(client, kernel, trader, login, "EURUSD", i % 2, "0.2")
        tick(kernel, "EURUSD", f"1.3930{i}", f"1.3931{i}", DAY_START_MS + 10_000 * (i + 1))
        await client.delete(
            f"/api/crm/orders/{order['order']}?login={login}&volume=0.05", headers=trader
        )
        await client.delete(f"/api/crm/orders/{order['order']}?login={login}", headers=trader)

    async with kernel.db.read() as session:
        events = (
            await session.scalars(select(LedgerEvent).where(LedgerEvent.account_id == login))
        ).all()
    state = await kernel.trading.account_state(login)

    assert state is not None
    assert sorted(e.sequence_num for e in events) == list(range(1, len(events) + 1))
    assert sum((e.balance_delta for e in events), Decimal(0)) == state["balance"]
    assert sum((e.margin_delta for e in events), Decimal(0)) == state["margin_used"] == 0
    last = max(events, key=lambda e: e.sequence_num)
    assert last.balance_after == state["balance"]


async def test_volume_off_the_lot_step_and_unknown_symbol_are_rejected(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "volume@test.io")
    await deposit(client, staff, login, "1000")

    off_step = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.015")
    unknown = await market_order(client, kernel, trader, login, "NOPE", 0, "0.01")

    assert (off_step["status"], off_step["reason"]) == ("rejected", "Invalid volume")
    assert (unknown["status"], unknown["reason"]) == ("rejected", "Unknown symbol")


async def test_stale_quote_is_rejected_with_no_fresh_quote(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "stale@test.io")
    await deposit(client, staff, login, "1000")
    # XAUUSD ticks move the market clock 10.001 s past the last EURUSD tick
    tick(kernel, "XAUUSD", "1290.10", "1290.50", DAY_START_MS + 7135 + 10_001)

    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.01")

    assert (order["status"], order["reason"]) == ("rejected", "No fresh quote")


async def test_order_body_errors_are_all_reported_with_422(client: Client, kernel: Kernel) -> None:
    login, trader = await register_trader(client, "bad@test.io")

    response = await client.post(
        "/api/customer/orders",
        json={"login": login, "cmd": 9, "volume": -1, "extra": 1},
        headers=trader,
    )

    assert response.status == 422
    body = await response.json()
    assert sorted((tuple(e["loc"]), e["type"]) for e in body["detail"]) == [
        (("body",), "additionalProperties"),
        (("body", "cmd"), "enum"),
        (("body", "symbol"), "required"),
        (("body", "volume"), "exclusiveMinimum"),
    ]


async def test_trader_cannot_trade_or_read_another_login(client: Client, kernel: Kernel) -> None:
    login_a, _ = await register_trader(client, "a@test.io")
    _, trader_b = await register_trader(client, "b@test.io")

    order = await client.post(
        "/api/customer/orders",
        json={"login": login_a, "symbol": "EURUSD", "cmd": 0, "volume": 0.01},
        headers=trader_b,
    )
    state = await client.get(f"/api/crm/accounts/{login_a}/state", headers=trader_b)

    assert (order.status, await order.json()) == (403, {"detail": "Not your trading account"})
    assert (state.status, await state.json()) == (403, {"detail": "Not your trading account"})


async def test_401_bodies_are_exactly_the_gateway_seeds(client: Client, kernel: Kernel) -> None:
    expired = kernel.tokens.issue("someone", {"type": "customer", "logins": []})
    import jwt

    claims = jwt.decode(expired, options={"verify_signature": False})
    claims["exp"] = claims["iat"] - 1
    from support import JWT_SECRET

    expired = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    missing = await client.get("/api/crm/orders?login=10001")
    invalid = await client.get(
        "/api/crm/orders?login=10001", headers={"Authorization": "Bearer abc.def.ghi"}
    )
    old = await client.get(
        "/api/crm/orders?login=10001", headers={"Authorization": f"Bearer {expired}"}
    )

    assert (missing.status, await missing.json()) == (
        401,
        {"detail": "Missing or invalid Authorization header"},
    )
    assert (invalid.status, await invalid.json()) == (401, {"detail": "Invalid token"})
    assert (old.status, await old.json()) == (401, {"detail": "Token expired"})


async def test_legacy_path_answers_with_deprecation_headers(client: Client, kernel: Kernel) -> None:
    login, trader = await register_trader(client, "legacy@test.io")

    response = await client.get(f"/accounts/{login}/state", headers=trader)

    assert response.status == 200
    assert response.headers["Deprecation"] == "true"
    assert response.headers["Link"] == '</api/crm/accounts/{login}/state>; rel="successor-version"'
    assert (await response.json())["login"] == str(login)


async def test_duplicate_email_answers_200_duplicate_without_a_second_customer(
    client: Client,
) -> None:
    first = await client.post(
        "/api/customer/register", json={"email": "dup@test.io", "password": "Password-1"}
    )
    second = await client.post(
        "/api/customer/register", json={"email": "DUP@test.io", "password": "Password-2"}
    )

    assert first.status == 201
    assert (second.status, await second.json()) == (
        200,
        {
            "duplicate": True,
            "customer_id": (await first.json())["id"],
            "message": "Email already registered.",
        },
    )


async def test_deposit_with_more_decimals_than_the_currency_is_refused(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "cents@test.io")

    response = await client.post(
        "/api/backoffice/transactions/manual",
        json={
            "login": login,
            "type": "DEPOSIT",
            "amount": "10.001",
            "currency": "USD",
            "status": "APPROVED",
        },
        headers=staff,
    )

    assert (response.status, await response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "amount"],
                    "msg": "has more decimals than USD allows (2)",
                    "type": "decimalPlaces",
                }
            ]
        },
    )
    state = await kernel.trading.account_state(login)
    assert state is not None and state["balance"] == 0


async def test_committed_events_are_published_through_the_outbox(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "events@test.io")
    await deposit(client, staff, login, "1000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.01")

    await kernel.relay.drain()

    async with kernel.db.read() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.occurred_at))).all()
    assert [r.type for r in rows] == ["account.created", "transaction.created", "order.opened"]
    assert all(r.published_at is not None for r in rows)


async def test_health_reports_database_and_cache(client: Client, kernel: Kernel) -> None:
    response = await client.get("/health")

    body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == ("disabled" if kernel.settings.redis_url is None else "ok")
