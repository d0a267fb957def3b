"""Market orders: volume, tradeability, exposure, commission, FX, netting, crossed quotes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from support import DAY_START_MS, deposit, market_order, register_trader, tick
from trading_support import (
    get,
    history,
    ledger,
    override,
    positions,
    send,
    set_mode,
    state,
    update_group,
)

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.pricing import FxConverter, Quote, QuoteBook
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import TradingAccount
from brokerkernel.kernel.trading.valuation import Valuation

Client = Any
T0 = DAY_START_MS + 7135  # the client fixture's EURUSD tick: bid 1.39286 / ask 1.39298


async def _trader(
    client: Client, staff: dict[str, str], email: str, amount: str = "100000"
) -> tuple[int, dict[str, str]]:
    login, trader = await register_trader(client, email)
    await deposit(client, staff, login, amount)
    return login, trader


async def _footprint(client: Client, kernel: Kernel, staff: dict[str, str], login: int) -> Any:
    """Everything an order could change on an account."""
    async with kernel.db.read() as session:
        version = await session.scalar(
            select(TradingAccount.version).where(TradingAccount.login == login)
        )
    audit = await get(client, f"/api/backoffice/audit-log?login={login}", staff)
    return (
        version,
        await ledger(client, staff, login),
        await positions(client, staff, login),
        audit,
    )


@pytest.mark.parametrize(
    ("volume", "accepted"),
    [
        ("0.009", False),  # below min_lot 0.01
        ("0.01", True),
        ("0.015", False),  # off the 0.01 lot step
        ("100", True),
        ("100.01", False),  # above max_lot 100
    ],
)
async def test_volume_limits_and_step(
    client: Client, kernel: Kernel, staff: dict[str, str], volume: str, accepted: bool
) -> None:
    login, trader = await _trader(client, staff, f"vol{volume}@test.io", "1000000")

    order = await market_order(client, kernel, trader, login, "EURUSD", 0, volume)

    assert order["status"] == ("executed" if accepted else "rejected")
    if not accepted:
        assert order["reason"] == "Invalid volume"


async def test_group_lot_limits_override_and_null_inherits(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "lots@test.io", "1000000")
    await override(client, staff, "EURUSD", min_lot=Decimal("0.1"), max_lot=Decimal("1"))

    small = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.05")
    big = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    await override(client, staff, "EURUSD", min_lot=None, max_lot=None)
    inherited = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")

    assert (small["reason"], big["reason"]) == ("Invalid volume", "Invalid volume")
    assert inherited["status"] == "executed"


async def test_tradeability_close_only_and_non_tradable(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "trade@test.io")
    open_order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")

    status, _ = await send(
        client, "PATCH", "/api/platform/instruments/EURUSD", staff, {"tradeability": "close_only"}
    )
    assert status == 200
    refused = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.1")
    partial = await client.delete(
        f"/api/crm/orders/{open_order['order']}?login={login}&volume=0.05", headers=trader
    )
    await override(client, staff, "EURUSD", tradeability="non_tradable")
    disabled = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.1")
    close = await client.delete(
        f"/api/crm/orders/{open_order['order']}?login={login}", headers=trader
    )

    assert (refused["status"], refused["reason"]) == ("rejected", "Symbol is close-only")
    assert partial.status == 200
    assert disabled["reason"] == "Trading is disabled for this symbol"
    assert (close.status, await close.json()) == (
        409,
        {"detail": "Trading is disabled for this symbol"},
    )


async def test_exposure_limit_gross_counts_both_sides(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await update_group(client, staff, max_exposure=Decimal("300000"), net_max_exposure=False)
    login, trader = await _trader(client, staff, "gross@test.io")

    # 1 lot EURUSD = 100,000 x mid 1.39292 = 139,292 USD
    first = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    hedge = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.15")
    before = await _footprint(client, kernel, staff, login)
    refused = await market_order(client, kernel, trader, login, "EURUSD", 1, "1")

    assert first["status"] == hedge["status"] == "executed"
    assert (refused["status"], refused["reason"]) == ("rejected", "EXPOSURE_LIMIT_EXCEEDED")
    assert await _footprint(client, kernel, staff, login) == before
    account = await state(client, trader, login)
    # gross 2.15 lots x 139,292 = 299,477.80; net 1.85 lots = 257,690.20
    assert (account["gross_exposure"], account["net_exposure"]) == (
        Decimal("299477.8"),
        Decimal("257690.2"),
    )


async def test_exposure_limit_net_lets_hedges_through(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await update_group(client, staff, max_exposure=Decimal("300000"), net_max_exposure=True)
    login, trader = await _trader(client, staff, "net@test.io")

    first = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    hedge = await market_order(client, kernel, trader, login, "EURUSD", 1, "1")
    more = await market_order(client, kernel, trader, login, "EURUSD", 0, "1.15")
    refused = await market_order(client, kernel, trader, login, "EURUSD", 0, "1.2")

    assert [first["status"], hedge["status"], more["status"]] == ["executed"] * 3
    assert (refused["status"], refused["reason"]) == ("rejected", "EXPOSURE_LIMIT_EXCEEDED")


async def test_commission_per_lot_is_charged_per_side_group_then_override(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await update_group(client, staff, commission_type="per_lot", commission_value=Decimal("5"))
    login, trader = await _trader(client, staff, "fee@test.io", "10000")

    group_fee = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    await override(
        client, staff, "EURUSD", commission_type="per_lot", commission_value=Decimal("7")
    )
    override_fee = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.5")
    closed = await client.delete(
        f"/api/crm/orders/{group_fee['order']}?login={login}", headers=trader
    )

    rows = [
        (e["event_type"], e["balance_delta"], e["reference_id"])
        for e in await ledger(client, staff, login)
        if e["event_type"] == "commission"
    ]
    assert rows == [
        ("commission", Decimal("-5"), str(group_fee["order"])),
        ("commission", Decimal("-3.5"), str(override_fee["order"])),
        # the close is charged with the terms the position snapshotted at open (seed
        # section 6): the group's 5 per lot, not the later override
        ("commission", Decimal("-5"), str(group_fee["order"])),
    ]
    deal = await closed.json()
    assert deal["commission"] == 10  # 5 at open + 5 at close
    (position,) = await positions(client, trader, login)
    assert position["commission"] == Decimal("3.5")


async def test_crossed_quotes_are_never_filled_at(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "crossed@test.io")
    tick(kernel, "EURUSD", "1.39400", "1.39390", T0 + 1000)  # ask < bid: dropped
    tick(kernel, "XAUUSD", "1290.50", "1290.10", T0 + 1000)  # the only XAUUSD quote, crossed

    eurusd = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    gold = await market_order(client, kernel, trader, login, "XAUUSD", 0, "0.1")

    (position,) = await positions(client, trader, login)
    assert (position["ticket"], position["open_price"]) == (eurusd["order"], Decimal("1.39298"))
    assert (gold["status"], gold["reason"]) == ("rejected", "No fresh quote")
    assert kernel.quotes.stats.crossed_dropped == 2


async def test_rejected_order_changes_nothing(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "nothing@test.io", "1000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.5")
    before = await _footprint(client, kernel, staff, login)

    for symbol, volume in (("EURUSD", "1"), ("EURUSD", "0.001"), ("NOPE", "0.1")):
        order = await market_order(client, kernel, trader, login, symbol, 1, volume)
        assert order["status"] == "rejected"

    assert await _footprint(client, kernel, staff, login) == before


async def test_profit_in_another_currency_converts_at_the_close_price(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "jpy@test.io", "10000")
    tick(kernel, "USDJPY", "101.488", "101.500", T0 + 100)

    order = await market_order(client, kernel, trader, login, "USDJPY", 0, "1")
    tick(kernel, "USDJPY", "101.600", "101.612", T0 + 200)
    response = await client.delete(
        f"/api/crm/orders/{order['order']}?login={login}", headers=trader
    )

    deal = await response.json()
    # FOREX margin: 100,000 USD (the base is the account currency) x 1% = 1,000.00
    assert deal["margin"] == 1000
    # 1 lot x 100,000 x 0.100 = 10,000 JPY / 101.600 = 98.4251968... USD
    assert (deal["profit"], deal["open_fx_rate"], deal["close_fx_rate"]) == (
        98.43,
        0.0098522167,
        0.0098425197,
    )


def test_bid_ask_conversion_takes_the_side_less_favourable_to_the_account() -> None:
    book = QuoteBook(MarketClock())
    book.publish(Quote("EURUSD", Decimal("1.10000"), Decimal("1.20000"), 1, "test"))
    mid = Valuation(book, FxConverter(book, "mid"), [], "mid")
    sides = Valuation(book, FxConverter(book, "bid_ask"), [], "bid_ask")

    # USD -> EUR on an EUR account: a gain converts at 1/ask, a loss at 1/bid
    assert mid.rate("USD", "EUR") == mid.rate("USD", "EUR", gain=False) == 1 / Decimal("1.15")
    assert sides.rate("USD", "EUR") == 1 / Decimal("1.2")
    assert sides.rate("USD", "EUR", gain=False) == 1 / Decimal("1.1")
    # EUR -> USD: a gain at the bid, a loss at the ask
    assert (sides.rate("EUR", "USD"), sides.rate("EUR", "USD", gain=False)) == (
        Decimal("1.1"),
        Decimal("1.2"),
    )


async def test_netting_adds_reduces_and_reverses_one_position(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "netting@test.io")
    assert await set_mode(client, staff, login, "netting") == (
        200,
        {"login": login, "account_mode": "netting"},
    )

    first = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    tick(kernel, "EURUSD", "1.39388", "1.39400", T0 + 1000)
    added = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.5")
    (grown,) = await positions(client, trader, login)
    reduced = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.5")
    (smaller,) = await positions(client, trader, login)
    reversed_ = await market_order(client, kernel, trader, login, "EURUSD", 1, "2")
    (short,) = await positions(client, trader, login)

    assert first["order"] == added["order"] == reduced["order"] == grown["ticket"]
    # (1 x 1.39298 + 0.5 x 1.39400) / 1.5 = 1.39332
    assert (grown["volume"], grown["open_price"], grown["margin"]) == (
        Decimal("1.5"),
        Decimal("1.39332"),
        Decimal("2089.98"),
    )
    assert (smaller["volume"], smaller["open_price"]) == (Decimal("1"), Decimal("1.39332"))
    assert (short["ticket"], short["cmd"], short["volume"], short["open_price"]) == (
        reversed_["order"],
        1,
        Decimal("1"),
        Decimal("1.39388"),
    )
    deals = await history(client, trader, login)
    # 0.5 x 100,000 x (1.39388 - 1.39332) = 28.00, then 1.0 lot: 56.00 (same market
    # time: listed by ticket, the position's own ticket first)
    assert [(d["volume"], d["profit"], d["parent_order"]) for d in deals] == [
        (Decimal("1"), Decimal("56"), None),
        (Decimal("0.5"), Decimal("28"), first["order"]),
    ]
    account = await state(client, trader, login)
    assert (account["balance"], account["margin_used"], account["account_mode"]) == (
        Decimal("100084"),
        short["margin"],
        "netting",
    )


async def test_account_mode_changes_only_when_flat(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _trader(client, staff, "mode@test.io")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")

    busy = await set_mode(client, staff, login, "netting")
    bad = await set_mode(client, staff, login, "fifo")
    unknown = await set_mode(client, staff, 999_999, "netting")
    by_trader = await send(
        client, "PATCH", f"/api/platform/accounts/{login}/mode", trader, {"account_mode": "netting"}
    )

    assert busy == (
        409,
        {"detail": "Close the account's positions and pending orders before changing its mode"},
    )
    assert bad[0] == 422 and bad[1]["detail"][0]["loc"] == ["body", "account_mode"]
    assert unknown == (404, {"detail": "Account not found"})
    assert by_trader[0] == 403
