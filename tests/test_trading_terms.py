"""Calculation modes CFDINDEX and FUTURES, resolved terms and the terms cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from support import deposit, manual_quote, market_order, register_trader

from brokerkernel.kernel.descriptors import SymbolTerms
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP_ID
from brokerkernel.kernel.trading.margin import notional, profit, required_margin
from brokerkernel.kernel.trading.terms import (
    TermsCache,
    load_terms,
    terms_from_json,
    terms_to_json,
)

Client = TestClient[Any, Any]

INDEX = SymbolTerms(
    symbol="US500",
    calc_mode="CFDINDEX",
    digits=2,
    pip_size=Decimal("0.01"),
    contract_size=Decimal(1),
    min_lot=Decimal("0.1"),
    max_lot=Decimal(50),
    lot_step=Decimal("0.1"),
    margin_rate=Decimal("0.05"),
    spread_markup_pips=Decimal(0),
    stale_threshold_ms=10_000,
    base_currency="USD",
    quote_currency="USD",
    profit_currency="USD",
    tick_size=Decimal("0.25"),
    tick_price=Decimal("12.5"),
)
FUTURES = replace(
    INDEX,
    symbol="ES",
    calc_mode="FUTURES",
    contract_size=Decimal(50),
    margin_rate=Decimal(1),
    initial_margin=Decimal(12000),
)


def same(amount: Decimal, _currency: str) -> Decimal:
    return amount


def test_cfdindex_margin_is_lots_contract_price_tick_value_rate_without_leverage() -> None:
    # 2 lots x 1 x 4,500.25 x 12.5 / 0.25 = 450,025 USD; x 5% = 22,501.25
    assert notional(INDEX, Decimal(2), Decimal("4500.25")) == (Decimal("450025.00"), "USD")
    for leverage in (1, 100, 500):
        assert required_margin(INDEX, Decimal(2), Decimal("4500.25"), leverage, same) == Decimal(
            "22501.2500"
        )
    # profit as CFD: (close - open) x contract x lots
    assert profit(INDEX, -1, Decimal(2), Decimal("4500.25"), Decimal("4510.75")) == Decimal(
        "-21.00"
    )


def test_futures_margin_is_lots_initial_margin_rate_and_profit_in_ticks() -> None:
    # 3 lots x 12,000 x 1 = 36,000; a 0.5 margin rate halves it; leverage is ignored
    assert required_margin(FUTURES, Decimal(3), Decimal("4500.25"), 100, same) == Decimal(36000)
    half = replace(FUTURES, margin_rate=Decimal("0.5"))
    assert required_margin(half, Decimal(3), Decimal("9999"), 1, same) == Decimal(18000)
    # (4,510.75 - 4,500.25) / 0.25 = 42 ticks x 12.5 = 525 per lot; x 3 lots = 1,575
    assert profit(FUTURES, 1, Decimal(3), Decimal("4500.25"), Decimal("4510.75")) == Decimal(1575)
    assert profit(FUTURES, -1, Decimal(3), Decimal("4500.25"), Decimal("4510.75")) == Decimal(-1575)


def test_leverage_caps_margin_only_on_forex_and_cfdleverage_after_conversion() -> None:
    """margin = notional in account currency x max(margin_rate, 1 / leverage) on the
    leveraged modes, x margin_rate on the others (margin.py table)."""
    eurusd = replace(
        INDEX,
        symbol="EURUSD",
        calc_mode="FOREX",
        contract_size=Decimal(100_000),
        margin_rate=Decimal("0.01"),
        base_currency="EUR",
    )
    gold = replace(INDEX, symbol="XAUUSD", calc_mode="CFD", contract_size=Decimal(100))
    gold = replace(gold, margin_rate=Decimal("0.01"), base_currency="XAU")

    def eur_at_1_1(amount: Decimal, currency: str) -> Decimal:
        return amount * Decimal("1.1") if currency == "EUR" else amount

    def margin(terms: SymbolTerms, mode: str, leverage: int) -> Decimal:
        return required_margin(
            replace(terms, calc_mode=mode), Decimal(2), Decimal(2000), leverage, eur_at_1_1
        )

    # 2 lots x 100,000 EUR = 220,000 USD: 1:50 -> 2% (4,400), 1:500 -> the 1% rate (2,200)
    assert notional(eurusd, Decimal(2), Decimal("1.3")) == (Decimal(200_000), "EUR")
    assert (margin(eurusd, "FOREX", 50), margin(eurusd, "FOREX", 500)) == (4400, 2200)
    assert margin(eurusd, "FOREX_NO_LEVERAGE", 50) == 2200
    # 2 lots x 100 x 2,000 = 400,000 USD: 1:50 -> 8,000 on CFDLEVERAGE, 4,000 on CFD
    assert notional(gold, Decimal(2), Decimal(2000)) == (Decimal(400_000), "USD")
    assert (margin(gold, "CFDLEVERAGE", 50), margin(gold, "CFDLEVERAGE", 200)) == (8000, 4000)
    assert margin(gold, "CFD", 50) == 4000


def test_tick_modes_without_their_terms_are_refused() -> None:
    with pytest.raises(ValueError, match="US500: CFDINDEX needs tick_size and tick_price"):
        notional(replace(INDEX, tick_size=None), Decimal(1), Decimal(1))
    with pytest.raises(ValueError, match="ES: FUTURES needs initial_margin"):
        notional(replace(FUTURES, initial_margin=None), Decimal(1), Decimal(1))
    with pytest.raises(ValueError, match="ES: FUTURES needs tick_size and tick_price"):
        profit(replace(FUTURES, tick_price=None), 1, Decimal(1), Decimal(1), Decimal(2))
    with pytest.raises(ValueError, match="calculation mode SPREADBET is not supported"):
        notional(replace(INDEX, calc_mode="SPREADBET"), Decimal(1), Decimal(1))


def test_terms_snapshot_round_trips_and_old_snapshots_take_defaults() -> None:
    terms = replace(
        FUTURES,
        commission_type="per_lot",
        commission_value=Decimal("3.5"),
        swap_long=Decimal("-1.25"),
        swap_triple_day=None,
    )

    snapshot = terms_to_json(terms)
    old = {k: v for k, v in terms_to_json(INDEX).items() if k not in ("tick_size", "swap_type")}

    assert snapshot["initial_margin"] == "12000" and snapshot["commission_value"] == "3.5"
    assert terms_from_json(snapshot) == terms
    assert terms_from_json(old) == replace(INDEX, tick_size=None)


async def test_futures_and_cfdindex_orders_hold_the_mode_margin_and_book_tick_profit(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    base = {
        "base_currency": "USD",
        "quote_currency": "USD",
        "digits": 2,
        "min_lot": 1,
        "max_lot": 10,
        "lot_step": 1,
        "asset_class": "indices",
    }
    futures = {
        **base,
        "symbol": "ES",
        "category": "futures",
        "calc_mode": "FUTURES",
        "pip_size": 0.25,
        "contract_size": 50,
        "tick_size": 0.25,
        "tick_price": 12.5,
        "initial_margin": 12000,
        "margin_rate": 1,
    }
    index = {
        **base,
        "symbol": "GER40",
        "category": "indices",
        "calc_mode": "CFDINDEX",
        "pip_size": 0.01,
        "contract_size": 1,
        "tick_size": 0.5,
        "tick_price": 0.5,
        "margin_rate": 0.005,  # below 1/100: leverage does not cap CFDINDEX
    }
    for body in (futures, index):
        response = await client.post("/api/platform/instruments", json=body, headers=staff)
        assert response.status == 201, await response.text()
    login, trader = await register_trader(client, "futures@test.io")
    await deposit(client, staff, login, "50000")
    await manual_quote(client, staff, "ES", "4500.00", "4500.25")
    await manual_quote(client, staff, "GER40", "18000.00", "18001.00")

    es = await market_order(client, kernel, trader, login, "ES", 0, "2")
    ger = await market_order(client, kernel, trader, login, "GER40", 0, "2")
    await manual_quote(client, staff, "ES", "4510.75", "4511.00")
    closed = await client.delete(f"/api/crm/orders/{es['order']}?login={login}", headers=trader)

    response = await client.get(f"/api/crm/orders/{ger['order']}?login={login}", headers=trader)
    # 2 x 1 x 18,001 x 0.5 / 0.5 = 36,002 x 0.005 = 180.01 (not 360.02 at 1:100)
    assert (await response.json())["margin"] == 180.01
    deal = await closed.json()
    # margin 2 x 12,000 x 1; profit 42 ticks x 12.5 x 2 lots
    assert (deal["margin"], deal["close_price"], deal["profit"]) == (24000, 4510.75, 1050)
    state = await kernel.trading.account_state(login)
    assert state is not None
    assert (state["balance"], state["margin_used"]) == (Decimal(51050), Decimal("180.01"))


async def test_cache_terms_equal_the_database_resolution(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await client.put(
        f"/api/platform/groups/{DEFAULT_GROUP_ID}/instruments/XAUUSD",
        json={"spread": 30, "max_lot": 5, "commission_type": "per_million", "commission_value": 7},
        headers=staff,
    )

    async with kernel.db.read() as session:
        for symbol in ("EURUSD", "XAUUSD", "BTCUSD"):
            assert kernel.terms.terms(DEFAULT_GROUP_ID, symbol) == await load_terms(
                session, DEFAULT_GROUP_ID, symbol
            )
    assert kernel.terms.terms(DEFAULT_GROUP_ID, "NOPE") is None
    assert kernel.terms.terms("no-such-group", "EURUSD") is None
    assert kernel.terms.instrument("NOPE") is None
    group = kernel.terms.group(DEFAULT_GROUP_ID)
    assert group is not None
    assert (group.name, group.stopout_level, group.margin_call_level, group.is_default) == (
        "standard",
        Decimal(50),
        Decimal(100),
        True,
    )


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a change another task makes (bounded, so a bug fails instead of hanging)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (the change is made by another task)
            await asyncio.sleep(0.01)


async def test_another_process_refreshes_its_cache_from_the_config_changed_event(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """A second TermsCache stands for another kernel process: without Redis it hears
    the in-process bus; with Redis the process that handles the event tells it."""
    redis = (
        None
        if kernel.settings.redis_url is None
        else Redis.from_url(kernel.settings.redis_url, decode_responses=True)
    )
    other = TermsCache(kernel.db, redis)
    if redis is None:
        kernel.bus.subscribe(other.on_event)
    await other.start()
    try:
        before = other.version
        response = await client.patch(
            "/api/platform/instruments/EURUSD", json={"margin_rate": 0.02}, headers=staff
        )
        assert response.status == 200
        stale = other.terms(DEFAULT_GROUP_ID, "EURUSD")
        local = kernel.terms.terms(DEFAULT_GROUP_ID, "EURUSD")

        await kernel.relay.drain()
        await _until(lambda: other.version > before)

        assert stale is not None and stale.margin_rate == Decimal("0.01")
        assert local is not None and local.margin_rate == Decimal("0.02")  # refreshed at commit
        refreshed = other.terms(DEFAULT_GROUP_ID, "EURUSD")
        assert refreshed is not None and refreshed.margin_rate == Decimal("0.02")
    finally:
        await other.stop()
        if redis is not None:
            await redis.aclose()
