"""The vectorised risk engine: re-marking, conversion, levels, crossings, index upkeep.

Reference values are computed here in Decimal, the way the trading service values
positions (kernel/trading/valuation.py): profit per (account, symbol, side) in the
profit currency, converted through the symbol's own pair at the close price, else
through the FX quotes (mid, or under "bid_ask" the less favourable side for a gain
and for a loss). The engine computes in float; its results must agree to a millionth
of a currency unit (1e-12 of the money summed in the random portfolios), and levels
within its float guard are decided by the reference's exact equity.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import AccountRule, PluginContext, SymbolTerms
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.plugins import ENTRY_POINT_GROUP, PluginManager
from brokerkernel.kernel.risk.engine import RiskEngine, WatchedLevel
from brokerkernel.kernel.risk.rates import FxConversion
from brokerkernel.kernel.risk.rules import (
    AccountSnapshot,
    Crossing,
    Level,
    LevelKind,
    MarginCallRule,
    StopOutRule,
    TickRule,
)
from brokerkernel.kernel.trading.margin import required_margin

D = Decimal
T0 = 1_399_420_800_000  # 2014-05-07T00:00:00Z
USD = "USD"

# --------------------------------------------------------------------- reference


@dataclass(frozen=True)
class Pos:
    """A position as the reference sees it (Decimal)."""

    ticket: int
    login: int
    symbol: str
    side: int
    volume: Decimal
    open_price: Decimal
    contract_size: Decimal
    profit_currency: str


@dataclass
class Market:
    """Latest quotes in Decimal and the Decimal valuation the engine must match."""

    quotes: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    side: str = "mid"

    def rate(self, source: str, target: str, gain: bool) -> Decimal | None:
        """FxConverter's search (direct, inverse, via USD); a loss under "bid_ask"
        converts at 1 / rate(target -> source)."""
        if source == target:
            return D(1)
        if not gain and self.side == "bid_ask":
            back = self._rate(target, source)
            return None if back is None else 1 / back
        return self._rate(source, target)

    def _rate(self, source: str, target: str) -> Decimal | None:
        direct = self._pair(source, target)
        if direct is not None:
            return direct
        if USD not in (source, target):
            to_usd, from_usd = self._pair(source, USD), self._pair(USD, target)
            if to_usd is not None and from_usd is not None:
                return to_usd * from_usd
        return None

    def _pair(self, source: str, target: str) -> Decimal | None:
        if source + target in self.quotes:
            bid, ask = self.quotes[source + target]
            return (bid + ask) / 2 if self.side == "mid" else bid
        if target + source in self.quotes:
            bid, ask = self.quotes[target + source]
            return 1 / ((bid + ask) / 2 if self.side == "mid" else ask)
        return None

    def floating(self, positions: Iterable[Pos], currency: str) -> Decimal:
        """Unrealised profit in ``currency``: per (symbol, side) net, as the service."""
        nets: dict[tuple[str, int, str], Decimal] = {}
        for p in positions:
            if p.symbol not in self.quotes:
                continue
            bid, ask = self.quotes[p.symbol]
            close = bid if p.side > 0 else ask
            key = (p.symbol, p.side, p.profit_currency)
            amount = (close - p.open_price) * p.contract_size * p.volume * p.side
            nets[key] = nets.get(key, D(0)) + amount
        total = D(0)
        for (symbol, side, profit_currency), amount in nets.items():
            bid, ask = self.quotes[symbol]
            close = bid if side > 0 else ask
            base, quote = symbol[:3], symbol[3:]
            if profit_currency == currency:
                total += amount
            elif (profit_currency, currency) == (base, quote):
                total += amount * close
            elif (profit_currency, currency) == (quote, base):
                total += amount / close
            else:
                rate = self.rate(profit_currency, currency, amount >= 0)
                if rate is not None:
                    total += amount * rate
        return total


MILLIONTH = D("1e-6")


def close_to(actual: float, expected: Decimal, tolerance: Decimal = MILLIONTH) -> bool:
    """Float engine vs Decimal reference: by default within a millionth of a currency
    unit (float error here is ~1e-10; a wrong side or rate is off by cents or more)."""
    return abs(D(actual) - expected) <= tolerance


@dataclass
class Desk:
    """An engine plus the reference book fed the same operations."""

    market: Market
    engine: RiskEngine = field(init=False)
    currencies: dict[int, str] = field(default_factory=dict)
    money: dict[int, tuple[Decimal, Decimal]] = field(default_factory=dict)
    positions: dict[int, Pos] = field(default_factory=dict)
    crossings: list[Crossing] = field(default_factory=list)

    def account(
        self, login: int, currency: str = USD, balance: str = "10000", **kw: Decimal
    ) -> None:
        self.currencies[login] = currency
        self.money[login] = (D(balance), kw.get("credit", D(0)))
        self.engine.set_account(
            login,
            currency=currency,
            balance=D(balance),
            credit=kw.get("credit", D(0)),
            margin_used=kw.get("margin_used", D(0)),
            stopout_level=kw.get("stopout_level"),
            margin_call_level=kw.get("margin_call_level"),
        )

    def open(
        self,
        ticket: int,
        login: int,
        symbol: str,
        side: int,
        volume: str,
        price: str,
        contract: str = "100000",
        profit: str | None = None,
    ) -> None:
        position = Pos(
            ticket, login, symbol, side, D(volume), D(price), D(contract), profit or symbol[3:]
        )
        self.positions[ticket] = position
        self.engine.add_position(
            ticket,
            login,
            symbol,
            side,
            position.volume,
            position.open_price,
            position.contract_size,
            position.profit_currency,
        )

    def tick(self, symbol: str, bid: str, ask: str, time_ms: int = T0) -> list[Crossing]:
        self.market.quotes[symbol] = (D(bid), D(ask))
        return self.engine.on_tick(symbol, float(bid), float(ask), time_ms)

    def exact_equity(self, login: int) -> Decimal:
        balance, credit = self.money[login]
        held = [p for p in self.positions.values() if p.login == login]
        return balance + credit + self.market.floating(held, self.currencies[login])

    def expected_floating(self, login: int) -> Decimal:
        return self.exact_equity(login) - sum(self.money[login])


def make_desk(
    rules: Iterable[TickRule] = (), side: FxConversion = "mid", exact: bool = True
) -> Desk:
    """An engine wired to a reference: ``exact`` gives it the reference's exact equity."""
    desk = Desk(Market(side=side))
    desk.engine = RiskEngine(
        list(rules),
        fx_conversion=side,
        exact_equity=desk.exact_equity if exact else None,
        sink=desk.crossings.append,
    )
    return desk


def stop_out_desk(inclusive: bool = False) -> Desk:
    """DOMAIN.md: 5 lots GBPUSD at 1.58772, 1:100, balance 10,000, stop-out 50%."""
    desk = make_desk([StopOutRule(inclusive=inclusive), MarginCallRule()])
    desk.tick("GBPUSD", "1.58772", "1.58790")
    desk.account(
        1,
        balance="10000",
        margin_used=D("7938.60"),
        stopout_level=D(50),
        margin_call_level=D(100),
    )
    desk.open(100, 1, "GBPUSD", 1, "5", "1.58772")
    assert desk.engine.settle() == []
    return desk


def domain_engine(login: int = 1, **options: Any) -> RiskEngine:
    """A ``RiskEngine([StopOutRule()], **options)`` holding the DOMAIN.md account
    ``login`` (10,000 USD; 5 lots GBPUSD long at 1.58772, margin 7,938.60; stop-out at
    50%) as position ticket 1, GBPUSD quoted 1.58772 / 1.5879 at T0."""
    engine = RiskEngine([StopOutRule()], **options)
    engine.on_tick("GBPUSD", 1.58772, 1.5879, T0)
    engine.set_account(
        login,
        currency=USD,
        balance=D(10000),
        credit=D(0),
        margin_used=D("7938.60"),
        stopout_level=D(50),
    )
    engine.add_position(1, login, "GBPUSD", 1, D(5), D("1.58772"), D(100000), USD)
    return engine


def bid_for_equity(equity: str) -> str:
    """The GBPUSD bid at which the DOMAIN.md account has ``equity``."""
    return str(D("1.58772") + (D(equity) - 10000) / 500000)


# ------------------------------------------------------------- DOMAIN.md example


def test_domain_example_margin_and_stop_out_level() -> None:
    terms = SymbolTerms(
        symbol="GBPUSD",
        calc_mode="FOREX",
        digits=5,
        pip_size=D("0.0001"),
        contract_size=D(100000),
        min_lot=D("0.01"),
        max_lot=D(100),
        lot_step=D("0.01"),
        margin_rate=D("0.01"),
        spread_markup_pips=D(0),
        stale_threshold_ms=5000,
        base_currency="GBP",
        quote_currency=USD,
        profit_currency=USD,
    )

    def to_usd(amount: Decimal, currency: str) -> Decimal:
        return amount * D("1.58772") if currency == "GBP" else amount

    margin = required_margin(terms, D(5), D("1.58772"), 100, to_usd)
    assert margin == D("7938.60")
    snapshot = AccountSnapshot(1, USD, D(10000), D(0), margin, D(50), D(100))
    assert StopOutRule().levels(snapshot) == [
        Level("stop_out", D("3969.30"), LevelKind.FLOOR, inclusive=False)
    ]
    assert MarginCallRule().levels(snapshot) == [
        Level("margin_call", D("7938.60"), LevelKind.FLOOR, inclusive=False)
    ]
    assert (D(10000) / margin * 100).quantize(D(1)) == 126  # margin level 126%


def crossing(rule: str, level: str, equity: float, time_ms: int) -> Crossing:
    """The DOMAIN.md account's crossing; equity compared to a millionth."""
    approx: float = pytest.approx(equity, abs=1e-6)
    return Crossing(1, rule, rule, LevelKind.FLOOR, D(level), approx, D("7938.60"), time_ms)


def test_domain_example_stop_out_fires_at_equity_3969_29_not_at_3969_31() -> None:
    desk = stop_out_desk()
    above = desk.tick("GBPUSD", bid_for_equity("3969.31"), "1.58000", T0 + 1)
    assert above == [crossing("margin_call", "7938.60", 3969.31, T0 + 1)]
    assert [w.fired for w in desk.engine.watched(1)] == [False, True]
    below = desk.tick("GBPUSD", bid_for_equity("3969.29"), "1.58000", T0 + 2)
    assert below == [crossing("stop_out", "3969.30", 3969.29, T0 + 2)]
    assert desk.crossings == above + below  # the sink saw the same, in order


@pytest.mark.parametrize(
    ("inclusive", "equity", "fires"),
    [
        (False, "3969.31", False),
        (False, "3969.30", False),  # MT5: strictly below the level
        (False, "3969.29", True),
        (True, "3969.31", False),
        (True, "3969.30", True),  # touching the level counts
        (True, "3969.29", True),
    ],
)
def test_stop_out_at_just_above_and_just_below_the_level(
    inclusive: bool, equity: str, fires: bool
) -> None:
    desk = stop_out_desk(inclusive=inclusive)
    crossed = desk.tick("GBPUSD", bid_for_equity(equity), "1.58000", T0 + 1)
    assert [c.rule for c in crossed if c.rule == "stop_out"] == (["stop_out"] if fires else [])
    assert desk.engine.equity(1) == pytest.approx(float(equity), abs=1e-6)


def test_a_level_within_the_float_guard_is_decided_by_the_exact_equity() -> None:
    desk = stop_out_desk(inclusive=False)
    desk.tick("GBPUSD", bid_for_equity("3969.30"), "1.58000", T0 + 1)
    exact_checks = desk.engine.snapshot().exact_checks
    assert exact_checks >= 1
    assert desk.exact_equity(1) == D("3969.30")
    assert [w.fired for w in desk.engine.watched(1)] == [False, True]
    desk.tick("GBPUSD", bid_for_equity("3969.29"), "1.58000", T0 + 2)
    assert desk.engine.watched(1)[0].fired is True


def test_without_an_exact_resolver_the_float_decides_within_the_guard() -> None:
    desk = make_desk([StopOutRule()], exact=False)
    desk.tick("GBPUSD", "1.58772", "1.58790")
    desk.account(1, margin_used=D("7938.60"), stopout_level=D(50))
    desk.open(100, 1, "GBPUSD", 1, "5", "1.58772")
    desk.tick("GBPUSD", bid_for_equity("3969.30"), "1.58000", T0 + 1)
    fired = desk.engine.watched(1)[0].fired
    assert fired is (desk.engine.equity(1) < 3969.30)
    assert desk.engine.snapshot().exact_checks == 0


def test_an_exact_resolver_that_fails_is_logged_and_the_float_decides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(login: int) -> Decimal:
        raise RuntimeError("state unavailable")

    engine = domain_engine(exact_equity=broken)
    with caplog.at_level(logging.ERROR):
        engine.on_tick("GBPUSD", float(bid_for_equity("3969.30")), 1.58, T0 + 1)
    assert "exact_equity failed for login 1" in caplog.text
    assert engine.watched(1)[0].fired is (engine.equity(1) < 3969.30)


# ------------------------------------------------------------------ marking


def test_long_closes_on_the_bid_and_short_on_the_ask() -> None:
    desk = make_desk()
    desk.account(1)
    desk.account(2)
    desk.open(1, 1, "EURUSD", 1, "1", "1.10000")
    desk.open(2, 2, "EURUSD", -1, "1", "1.10000")
    desk.tick("EURUSD", "1.10100", "1.10120")
    assert desk.engine.floating(1) == pytest.approx(100.0, abs=1e-9)
    assert desk.engine.floating(2) == pytest.approx(-120.0, abs=1e-9)
    assert desk.engine.equity(2) == pytest.approx(9880.0, abs=1e-9)


def test_a_position_added_after_the_tick_is_marked_at_once_at_the_last_prices() -> None:
    desk = make_desk()
    desk.tick("XAUUSD", "1290.10", "1290.40")
    desk.account(1)
    desk.open(1, 1, "XAUUSD", -1, "0.5", "1291.00", contract="100")
    assert desk.engine.floating(1) == pytest.approx(30.0, abs=1e-9)  # (1291.00-1290.40) x 50


def test_the_group_close_offset_moves_the_closing_price() -> None:
    engine = RiskEngine([])
    engine.set_account(1, currency=USD, balance=D(0), credit=D(0), margin_used=D(0))
    for ticket, side, offset in ((1, 1, "-0.0001"), (2, -1, "0.0001")):
        engine.add_position(
            ticket, 1, "EURUSD", side, D(1), D("1.1"), D(100000), USD, close_offset=D(offset)
        )
    engine.on_tick("EURUSD", 1.1010, 1.1012, T0)
    # long closes at 1.1009 (+90), short at 1.1013 (-130)
    assert engine.floating(1) == pytest.approx(-40.0, abs=1e-9)


def test_jpy_profit_converts_through_the_own_pair_and_through_usdjpy() -> None:
    desk = make_desk()
    desk.tick("USDJPY", "101.600", "101.620")
    desk.account(1)
    desk.open(1, 1, "USDJPY", -1, "1", "101.500")  # own pair: / close (ask)
    desk.open(2, 1, "EURJPY", 1, "2", "141.000")  # JPY -> USD through USDJPY (mid)
    # EURJPY has not quoted yet: it counts zero
    assert close_to(desk.engine.floating(1), D(-12000) / D("101.620"))
    desk.tick("EURJPY", "141.250", "141.270")
    expected = D(-12000) / D("101.620") + D(50000) / D("101.610")
    assert close_to(desk.engine.floating(1), expected)
    assert close_to(desk.engine.floating(1), desk.expected_floating(1))
    # a USDJPY tick alone moves the EURJPY position's USD value
    desk.tick("USDJPY", "102.000", "102.020")
    expected = D(-52000) / D("102.020") + D(50000) / D("102.010")
    assert close_to(desk.engine.floating(1), expected)


def test_bid_ask_conversion_takes_the_less_favourable_side_for_gains_and_losses() -> None:
    desk = make_desk(side="bid_ask")
    desk.tick("USDJPY", "100.00", "100.10")
    desk.tick("EURJPY", "140.00", "140.02")
    desk.account(1)
    desk.account(2)
    desk.open(1, 1, "EURJPY", 1, "1", "139.00")  # +100,000 JPY: a gain converts at 1 / ask
    desk.open(2, 2, "EURJPY", 1, "1", "141.00")  # -100,000 JPY: a loss converts at 1 / bid
    assert close_to(desk.engine.floating(1), D(100000) / D("100.10"))
    assert close_to(desk.engine.floating(2), D(-100000) / D("100.00"))
    desk.tick("EURJPY", "140.50", "140.52")  # re-marked on the tick
    assert close_to(desk.engine.floating(1), D(150000) / D("100.10"))
    assert close_to(desk.engine.floating(2), D(-50000) / D("100.00"))
    desk.tick("USDJPY", "101.00", "101.20")  # re-converted on the rate change
    assert close_to(desk.engine.floating(1), D(150000) / D("101.20"))
    assert close_to(desk.engine.floating(2), D(-50000) / D("101.00"))
    assert close_to(desk.engine.floating(2), desk.expected_floating(2))


def test_conversion_goes_through_usd_until_a_direct_pair_quotes() -> None:
    desk = make_desk()
    desk.tick("USDJPY", "100.00", "100.00")
    desk.tick("EURUSD", "1.25000", "1.25000")
    desk.account(1, currency="EUR")
    desk.open(1, 1, "GBPJPY", 1, "1", "170.00")
    desk.tick("GBPJPY", "171.00", "171.00")
    # JPY -> EUR = JPY -> USD (1/100) x USD -> EUR (1/1.25)
    assert close_to(desk.engine.floating(1), D(100000) / D(100) / D("1.25"))
    desk.tick("EURJPY", "124.00", "124.00")  # now the inverse pair converts
    assert close_to(desk.engine.floating(1), D(100000) / D(124))
    assert close_to(desk.engine.floating(1), desk.expected_floating(1))


def test_a_position_without_a_conversion_path_counts_zero_until_one_quotes() -> None:
    desk = make_desk()
    desk.account(1, currency="CHF")
    desk.open(1, 1, "XAUUSD", 1, "1", "1290.00", contract="100")
    desk.tick("XAUUSD", "1300.00", "1300.00")
    assert desk.engine.floating(1) == 0.0
    desk.tick("USDCHF", "0.90000", "0.90000")
    assert close_to(desk.engine.floating(1), D(1000) * D("0.9"))


# --------------------------------------------------- crossings: edges and ordering


def test_crossings_are_edge_triggered_and_re_armed_when_equity_comes_back() -> None:
    desk = stop_out_desk()
    below, above = bid_for_equity("3900"), bid_for_equity("4000")
    lower = bid_for_equity("3800")
    assert [c.rule for c in desk.tick("GBPUSD", below, "1.6", T0 + 1)] == [
        "margin_call",
        "stop_out",
    ]
    assert desk.tick("GBPUSD", lower, "1.6", T0 + 2) == []  # still below: no repeat
    assert desk.tick("GBPUSD", above, "1.6", T0 + 3) == []  # re-armed, nothing emitted
    assert desk.engine.watched(1) == [
        WatchedLevel("stop_out", Level("stop_out", D("3969.30"), LevelKind.FLOOR), False),
        WatchedLevel("margin_call", Level("margin_call", D("7938.60"), LevelKind.FLOOR), True),
    ]
    assert [c.time_ms for c in desk.tick("GBPUSD", below, "1.6", T0 + 4)] == [T0 + 4]
    assert [c.rule for c in desk.crossings] == ["margin_call", "stop_out", "stop_out"]


def test_margin_call_comes_before_stop_out_when_one_tick_crosses_both() -> None:
    desk = stop_out_desk()
    crossed = desk.tick("GBPUSD", bid_for_equity("1000"), "1.6", T0 + 1)
    assert [(c.rule, c.level) for c in crossed] == [
        ("margin_call", D("7938.60")),
        ("stop_out", D("3969.30")),
    ]


class Targets:
    """A test rule: two ceilings (inclusive) and a floor from the balance."""

    name = "targets"

    def levels(self, account: AccountSnapshot) -> list[Level]:
        return [
            Level("second", account.balance + 200, LevelKind.CEILING, inclusive=True),
            Level("first", account.balance + 100, LevelKind.CEILING, inclusive=True),
            Level("floor", account.balance - 100, LevelKind.FLOOR),
        ]


def test_ceilings_fire_upwards_in_the_order_equity_reaches_them() -> None:
    desk = make_desk([Targets()])
    desk.tick("EURUSD", "1.10000", "1.10000")
    desk.account(1, balance="1000")
    desk.open(1, 1, "EURUSD", 1, "1", "1.10000")
    crossed = desk.tick("EURUSD", "1.10200", "1.10200", T0 + 1)  # equity 1,200.00: both
    assert [(c.level_name, c.kind) for c in crossed] == [
        ("first", LevelKind.CEILING),
        ("second", LevelKind.CEILING),
    ]
    assert desk.tick("EURUSD", "1.10150", "1.10150") == []  # 1,150: "second" re-arms
    assert [c.level_name for c in desk.tick("EURUSD", "1.10200", "1.10200")] == ["second"]
    assert [c.level_name for c in desk.tick("EURUSD", "1.09850", "1.09850")] == ["floor"]


def test_a_margin_change_that_moves_the_level_past_equity_crosses_at_settle() -> None:
    desk = stop_out_desk()
    desk.tick("GBPUSD", bid_for_equity("5000"), "1.6", T0 + 7)
    assert [c.rule for c in desk.crossings] == ["margin_call"]
    # a new deal doubles the margin: stop-out level 7,938.60 > equity 5,000
    desk.engine.update_money(1, D(10000), D(0), D("15877.20"))
    assert desk.engine.equity(1) == pytest.approx(5000.0, abs=1e-6)
    crossed = desk.engine.settle()
    assert [(c.rule, c.level, c.time_ms) for c in crossed] == [("stop_out", D("7938.60"), T0 + 7)]
    # the level moves again but equity stays below: no second crossing
    desk.engine.update_money(1, D(10000), D(0), D("15000.00"))
    assert desk.engine.settle() == []
    # no margin, no stop-out level
    desk.engine.update_money(1, D(10000), D(0), D(0))
    desk.engine.settle()
    assert desk.engine.watched(1) == []


def test_closing_a_losing_position_and_booking_its_loss_is_evaluated_once() -> None:
    desk = stop_out_desk()
    desk.open(101, 1, "GBPUSD", 1, "1", "1.58772")
    desk.engine.update_money(1, D(10000), D(0), D("9526.32"))
    desk.tick("GBPUSD", "1.57000", "1.6", T0 + 1)  # equity 10,000 - 10,632 < 0
    assert [c.rule for c in desk.crossings] == ["margin_call", "stop_out"]
    # the exact path closes ticket 101 (-1,772.00) and books it with the new margin
    desk.engine.remove_position(101)
    desk.engine.update_money(1, D("8228.00"), D(0), D("7938.60"))
    assert desk.engine.settle() == []  # still below both levels: nothing re-armed or re-fired
    assert desk.engine.equity(1) == pytest.approx(8228.0 - 8860.0, abs=1e-6)
    assert [w.fired for w in desk.engine.watched(1)] == [True, True]


def test_a_deposit_re_arms_a_fired_level_without_emitting() -> None:
    desk = stop_out_desk()
    desk.tick("GBPUSD", bid_for_equity("3000"), "1.6", T0 + 1)
    desk.engine.update_money(1, D(20000), D(0), D("7938.60"))
    assert desk.engine.settle() == []
    assert [w.fired for w in desk.engine.watched(1)] == [False, False]


async def test_crossings_reach_an_asyncio_consumer_through_the_sink() -> None:
    queue: asyncio.Queue[Crossing] = asyncio.Queue()
    engine = domain_engine(7, sink=queue.put_nowait)
    engine.on_tick("GBPUSD", 1.5, 1.6, T0 + 5)
    crossing = await asyncio.wait_for(queue.get(), 1)
    assert (crossing.login, crossing.rule, crossing.time_ms) == (7, "stop_out", T0 + 5)
    assert queue.empty()


def test_a_sink_that_raises_is_logged_and_the_tick_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(crossing: Crossing) -> None:
        raise RuntimeError("queue closed")

    engine = domain_engine(sink=broken)
    with caplog.at_level(logging.ERROR):
        crossed = engine.on_tick("GBPUSD", 1.5, 1.6, T0 + 1)
    assert [c.rule for c in crossed] == ["stop_out"]
    assert "risk engine sink failed" in caplog.text


# ------------------------------------------------------------------- rules API


class MaxLoss:
    """A prop-style rule with its own per-login state and refreshes."""

    name = "max_loss"

    def __init__(self, context: PluginContext | None = None) -> None:
        self.floors: dict[int, Decimal] = {}

    def levels(self, account: AccountSnapshot) -> list[Level]:
        floor = self.floors.get(account.login)
        return [] if floor is None else [Level("max_loss", floor, LevelKind.FLOOR, True)]


def test_a_rule_refresh_recomputes_its_levels() -> None:
    rule = MaxLoss()
    desk = make_desk([rule])
    desk.tick("EURUSD", "1.10000", "1.10000")
    desk.account(1, balance="100000")
    desk.open(1, 1, "EURUSD", 1, "10", "1.10000")
    desk.engine.settle()
    assert desk.engine.watched(1) == []
    rule.floors[1] = D("99000")
    desk.engine.refresh(1)
    assert desk.engine.settle() == []
    assert [w.level.value for w in desk.engine.watched(1)] == [D("99000")]
    crossed = desk.tick("EURUSD", "1.09900", "1.09900", T0 + 3)  # equity 99,000: touches
    assert [(c.rule, c.level, c.kind) for c in crossed] == [
        ("max_loss", D("99000"), LevelKind.FLOOR)
    ]
    rule.floors[1] = D("98000")
    desk.engine.refresh_all()
    desk.engine.settle()
    assert desk.engine.watched(1)[0].fired is False  # re-armed at the lower floor


# ------------------------------------------------------------------ trailing floors


@dataclass
class Trailing:
    """A test rule: one trailing floor ``offset`` below the equity peak, optional lock."""

    offset: Decimal = Decimal(3000)
    lock: Decimal | None = None
    inclusive: bool = False
    name: str = "trail"

    def levels(self, account: AccountSnapshot) -> list[Level]:
        level = Level("trail", self.offset, LevelKind.TRAILING_FLOOR, self.inclusive, self.lock)
        return [level] if account.login != 3 else []


def trailing_desk(rule: Trailing, logins: Iterable[int] = (1,)) -> Desk:
    """10 lots EURUSD long at 1.10000 on 100,000: every 0.00001 moves equity by 10 USD."""
    desk = make_desk([rule])
    desk.tick("EURUSD", "1.10000", "1.10000")
    for login in logins:
        desk.account(login, balance="100000")
        desk.open(login, login, "EURUSD", 1, "10", "1.10000")
    desk.engine.settle()
    return desk


def floor_of(desk: Desk, login: int = 1) -> Decimal | None:
    return desk.engine.watched(login)[0].floor


def test_a_trailing_floor_follows_the_equity_peak_and_never_decreases() -> None:
    desk = trailing_desk(Trailing(), logins=(1, 2, 3))  # 3 holds no trailing floor
    assert (floor_of(desk), desk.engine.peak(1)) == (D(97000), D(100000))
    steps = [  # bid, equity peak, floor: new highs raise it, falls leave it
        ("1.10500", D(105000), D(102000)),
        ("1.10200", D(105000), D(102000)),  # equity 102,000: on the floor, "<" holds
        ("1.10800", D(108000), D(105000)),
        ("1.10600", D(108000), D(105000)),
        ("1.10812", D(108120), D(105120)),
    ]
    for bid, peak, floor in steps:
        assert desk.tick("EURUSD", bid, bid, T0 + 1) == []  # a new high is no crossing
        assert (desk.engine.peak(1), floor_of(desk)) == (peak, floor)
        assert (desk.engine.peak(2), floor_of(desk, 2)) == (peak, floor)
    assert desk.engine.peak(3) is None and desk.engine.watched(3) == []
    crossed = desk.tick("EURUSD", "1.10511", "1.10511", T0 + 2)  # equity 105,110
    assert [(c.login, c.level_name, c.kind, c.level, c.time_ms) for c in crossed] == [
        (1, "trail", LevelKind.TRAILING_FLOOR, D(105120), T0 + 2),
        (2, "trail", LevelKind.TRAILING_FLOOR, D(105120), T0 + 2),
    ]
    assert desk.tick("EURUSD", "1.10400", "1.10400") == []  # fired: no repeat
    assert [w.fired for w in desk.engine.watched(1)] == [True]
    # back above the floor: re-armed, and the next high trails again
    assert desk.tick("EURUSD", "1.10900", "1.10900") == []
    assert (desk.engine.peak(1), floor_of(desk)) == (D(109000), D(106000))
    assert [w.fired for w in desk.engine.watched(1)] == [False]


@pytest.mark.parametrize("inclusive", [False, True])
def test_a_locked_trailing_floor_stops_at_the_lock_and_decides_the_boundary_exactly(
    inclusive: bool,
) -> None:
    desk = trailing_desk(Trailing(lock=D("100500"), inclusive=inclusive))
    desk.tick("EURUSD", "1.10200", "1.10200")  # peak 102,000: floor 99,000
    assert floor_of(desk) == D(99000)
    desk.tick("EURUSD", "1.10900", "1.10900")  # peak 109,000: 106,000 capped at the lock
    assert (desk.engine.peak(1), floor_of(desk)) == (D(109000), D(100500))
    checks = desk.engine.snapshot().exact_checks
    crossed = desk.tick("EURUSD", "1.10050", "1.10050", T0 + 3)  # equity 100,500 exactly
    assert desk.exact_equity(1) == D(100500)
    assert desk.engine.snapshot().exact_checks > checks  # within the guard: exact decides
    assert [c.level for c in crossed] == ([D(100500)] if inclusive else [])
    crossed = desk.tick("EURUSD", "1.10049", "1.10049", T0 + 4)  # 100,490
    assert [c.level for c in crossed] == ([] if inclusive else [D(100500)])


def test_the_peak_is_seeded_and_reset_and_a_seed_above_equity_crosses_at_once() -> None:
    desk = trailing_desk(Trailing())
    desk.engine.set_peak(1, D("102500"))  # e.g. loaded from History.peak_equity
    assert desk.engine.settle() == []
    assert (desk.engine.peak(1), floor_of(desk)) == (D(102500), D(99500))
    desk.engine.set_peak(1, D("103000.25"))  # seeded higher: 100,000.25 > equity
    crossed = desk.engine.settle()  # equity 100,000 is below 100,000.25: crosses now
    assert floor_of(desk) == D("100000.25")
    assert [(c.level, c.time_ms) for c in crossed] == [(D("100000.25"), T0)]
    desk.engine.set_peak(1, None)  # reset (a new phase): starts again at the equity
    assert desk.engine.settle() == []
    assert (desk.engine.peak(1), floor_of(desk)) == (D(100000), D(97000))
    assert [w.fired for w in desk.engine.watched(1)] == [False]


def test_level_values_are_replaced_in_bulk_and_only_changed_accounts_evaluated() -> None:
    rule = MaxLoss()
    desk = make_desk([rule])
    desk.tick("EURUSD", "1.10000", "1.10000")
    for login in (1, 2, 3):
        rule.floors[login] = D("99000")
        desk.account(login, balance="100000")
        desk.open(login, login, "EURUSD", 1, "10", "1.10000")
    desk.engine.settle()
    replaced = desk.engine.set_level_values(
        "max_loss", [1, 2, 3, 99], {"max_loss": [D("99500"), D("99000"), D("100000"), D(1)]}
    )
    assert replaced == 2  # 2 keeps its value; 99 is unknown
    crossed = desk.engine.settle()  # equity 100,000 on 3's new inclusive floor
    assert [(c.login, c.level) for c in crossed] == [(3, D("100000"))]
    assert [desk.engine.watched(n)[0].level.value for n in (1, 2, 3)] == [
        D("99500"),
        D("99000"),
        D("100000"),
    ]
    crossed = desk.tick("EURUSD", "1.09950", "1.09950", T0 + 8)  # 99,500: touches 1's
    assert [(c.login, c.level) for c in crossed] == [(1, D("99500"))]


def test_a_failing_rule_is_logged_and_the_other_rules_still_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        name = "broken"

        def levels(self, account: AccountSnapshot) -> list[Level]:
            raise ValueError("plan not found")

    desk = make_desk([Broken(), StopOutRule()])
    desk.tick("GBPUSD", "1.58772", "1.58790")
    desk.account(1, margin_used=D("7938.60"), stopout_level=D(50))
    with caplog.at_level(logging.ERROR):
        desk.engine.settle()
    assert "account rule 'broken' failed for login 1" in caplog.text
    assert [w.rule for w in desk.engine.watched(1)] == ["stop_out"]


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"duplicate account rule names: \['stop_out'\]"):
        RiskEngine([StopOutRule(), StopOutRule(inclusive=True)])


def test_account_rules_register_through_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("_bk_test_account_rules")
    module.broker_register_account_rules = hookimpl(  # type: ignore[attr-defined]
        lambda: [AccountRule(name="max_loss", factory=MaxLoss)]
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    entry_point = metadata.EntryPoint("prop", module.__name__, ENTRY_POINT_GROUP)
    config = tmp_path / "plugins.toml"
    config.write_text('[kernel]\njwt_secret = "x"\n[plugins.prop]\n', encoding="utf-8")
    manager = PluginManager.load(config, env={}, entry_points={"prop": entry_point})
    registered = manager.registries.account_rules["max_loss"]
    assert registered.plugin == "prop"
    context = PluginContext(plugin="prop", config={}, clock=MarketClock(driven=True, start_ms=0))
    rule = registered.descriptor.factory(context)
    engine = RiskEngine([StopOutRule(), rule])
    assert isinstance(rule, MaxLoss)
    rule.floors[5] = D(900)
    engine.set_account(5, currency=USD, balance=D(1000), credit=D(0), margin_used=D(0))
    engine.add_position(1, 5, "EURUSD", 1, D("0.1"), D("1.1"), D(100000), USD)
    assert [c.rule for c in engine.on_tick("EURUSD", 1.08, 1.08, T0)] == ["max_loss"]


# ------------------------------------------------------------- input and state


def test_bad_ticks_are_dropped_and_counted() -> None:
    engine = RiskEngine([])
    assert engine.on_tick("EURUSD", 1.1002, 1.1001, T0) == []  # crossed
    assert engine.on_tick("EURUSD", 0.0, 1.1, T0) == []
    assert engine.on_tick("EURUSD", float("nan"), 1.1, T0) == []
    snapshot = engine.snapshot()
    assert (snapshot.ticks, snapshot.dropped_ticks, snapshot.symbols) == (0, 3, 0)


def test_bad_calls_raise_precise_errors() -> None:
    engine = RiskEngine([])
    with pytest.raises(KeyError, match="account 9 is not watched"):
        engine.add_position(1, 9, "EURUSD", 1, D(1), D("1.1"), D(100000), USD)
    engine.set_account(9, currency=USD, balance=D(0), credit=D(0), margin_used=D(0))
    with pytest.raises(ValueError, match="side must be \\+1 or -1, got 0"):
        engine.add_position(1, 9, "EURUSD", 0, D(1), D("1.1"), D(100000), USD)
    with pytest.raises(ValueError, match=r"must be > 0, got 0, 1\.1, 100000"):
        engine.add_position(1, 9, "EURUSD", 1, D(0), D("1.1"), D(100000), USD)
    engine.add_position(1, 9, "EURUSD", 1, D(1), D("1.1"), D(100000), USD)
    with pytest.raises(ValueError, match="position 1 is already watched"):
        engine.add_position(1, 9, "EURUSD", 1, D(1), D("1.1"), D(100000), USD)
    with pytest.raises(ValueError, match="volume must be > 0, got -1"):
        engine.resize_position(1, D(-1))
    with pytest.raises(KeyError):
        engine.remove_position(2)
    with pytest.raises(ValueError, match="account 9 has open positions; its currency cannot"):
        engine.set_account(9, currency="EUR", balance=D(0), credit=D(0), margin_used=D(0))
    with pytest.raises(ValueError, match="account 9 has open positions"):
        engine.remove_account(9)
    engine.remove_position(1)
    engine.remove_account(9)
    with pytest.raises(KeyError):
        engine.equity(9)


def test_snapshot_counts_and_a_removed_account_slot_is_reused() -> None:
    desk = stop_out_desk()
    desk.account(2, currency="EUR")
    desk.open(2, 2, "EURUSD", -1, "1", "1.3")
    desk.tick("EURUSD", "1.29", "1.29", T0 + 9)
    snapshot = desk.engine.snapshot()
    assert (snapshot.accounts, snapshot.positions, snapshot.symbols) == (2, 2, 2)
    assert (snapshot.books, snapshot.segments, snapshot.ticks) == (2, 2, 2)
    assert (snapshot.crossings, snapshot.time_ms, snapshot.array_bytes > 0) == (0, T0 + 9, True)
    desk.engine.remove_position(2)
    desk.engine.remove_account(2)
    desk.account(3)
    assert desk.engine.equity(3) == 10000.0 and desk.engine.snapshot().accounts == 2


def test_floating_is_exactly_zero_once_the_last_position_is_removed() -> None:
    desk = make_desk()
    desk.account(1)
    desk.tick("EURUSD", "1.10001", "1.10003")
    for ticket in range(1, 8):
        desk.open(ticket, 1, "EURUSD", 1 if ticket % 2 else -1, "0.07", f"1.0{ticket}317")
    for ticket in range(1, 8):
        desk.engine.remove_position(ticket)
    assert desk.engine.floating(1) == 0.0


def test_a_row_of_many_positions_is_updated_incrementally_and_stays_exact() -> None:
    """Opens, resizes and closes add their change to the account's row (O(1) each,
    re-summed once the updates outnumber its positions): after 300 opens, 100 resizes
    and 250 closes in one row the floating P&L still matches the Decimal reference."""
    desk = make_desk()
    desk.account(1)
    desk.tick("EURUSD", "1.10001", "1.10003")
    for ticket in range(1, 301):
        side = 1 if ticket % 3 else -1
        desk.open(ticket, 1, "EURUSD", side, f"0.{ticket % 97 + 1:02d}", f"1.0{ticket:04d}")
        assert close_to(desk.engine.floating(1), desk.expected_floating(1))
    for ticket in range(1, 101):
        volume, price = D(f"0.{ticket % 89 + 3:02d}"), D(f"1.1{ticket:04d}")
        old = desk.positions[ticket]
        desk.positions[ticket] = Pos(
            ticket, 1, "EURUSD", old.side, volume, price, old.contract_size, USD
        )
        desk.engine.resize_position(ticket, volume, price)
    desk.tick("EURUSD", "1.09871", "1.09884")
    assert close_to(desk.engine.floating(1), desk.expected_floating(1))
    for ticket in range(1, 251):
        del desk.positions[ticket]
        desk.engine.remove_position(ticket)
    assert desk.expected_floating(1) == D("106303.33")
    assert close_to(desk.engine.floating(1), D("106303.33"))


def test_floating_is_recomputed_from_the_rows_every_resync_ticks() -> None:
    desk = make_desk()
    desk.engine = RiskEngine([], resync_ticks=64)
    for login in range(1, 4):
        desk.account(login)
        desk.open(login, login, "EURUSD", 1, "0.3", "1.1")
    for i in range(130):
        desk.tick("EURUSD", f"1.1{i % 97:03d}", f"1.1{i % 97 + 1:03d}")
    assert desk.engine.snapshot().resyncs == 2
    for login in range(1, 4):
        assert close_to(desk.engine.floating(login), desk.expected_floating(login))
    desk.engine.resync()
    assert desk.engine.snapshot().resyncs == 3
    assert close_to(desk.engine.floating(1), desk.expected_floating(1))


def test_repeated_open_close_cycles_reuse_the_arrays() -> None:
    engine = RiskEngine([])
    engine.on_tick("EURUSD", 1.1, 1.1, T0)
    for login in range(1, 201):
        engine.set_account(login, currency=USD, balance=D(0), credit=D(0), margin_used=D(0))
    sizes = []
    for _ in range(6):
        for login in range(1, 201):
            engine.add_position(login, login, "EURUSD", 1, D(1), D("1.0"), D(100000), USD)
        assert engine.floating(200) == pytest.approx(10000.0, abs=1e-9)
        for login in range(1, 201):
            engine.remove_position(login)
        sizes.append(engine.snapshot().array_bytes)
    assert sizes[1:] == sizes[:-1]  # steady state after the first cycle


# ------------------------------------------- properties: portfolios and upkeep

SYMBOLS = {  # symbol: (mid, contract size, profit currency)
    "EURUSD": (D("1.10000"), D(100000), USD),
    "GBPUSD": (D("1.30000"), D(100000), USD),
    "USDJPY": (D("110.000"), D(100000), "JPY"),
    "EURJPY": (D("121.000"), D(100000), "JPY"),
    "EURGBP": (D("0.85000"), D(100000), "GBP"),
    "XAUUSD": (D("1300.00"), D(100), USD),
}
CURRENCIES = [USD, "EUR", "JPY"]

prices = st.decimals(min_value=D("0.990"), max_value=D("1.010"), places=3)
operation = st.one_of(
    st.tuples(
        st.just("open"),
        st.integers(0, 7),
        st.sampled_from(sorted(SYMBOLS)),
        st.sampled_from([1, -1]),
        st.integers(1, 300),
        prices,
    ),
    st.tuples(st.just("close"), st.integers(0, 60)),
    st.tuples(st.just("resize"), st.integers(0, 60), st.integers(1, 300), prices),
    st.tuples(st.just("tick"), st.sampled_from(sorted(SYMBOLS)), prices, st.integers(0, 30)),
    st.tuples(st.just("money"), st.integers(0, 7), st.integers(-5000, 50000)),
)


def price_of(symbol: str, factor: Decimal) -> Decimal:
    return (SYMBOLS[symbol][0] * factor).quantize(D("0.00001"))


Operation = tuple[object, ...]


def apply_operations(desk: Desk, operations: list[Operation], logins: Mapping[int, int]) -> None:
    """Apply random operations to engine and reference; check every account after each."""
    next_ticket = 1
    for op in operations:
        kind = op[0]
        if kind == "open":
            _, account, symbol, side, lots, factor = op
            price = price_of(symbol, factor)
            desk.open(
                next_ticket,
                logins[account],
                symbol,
                side,
                str(D(lots) / 100),
                str(price),
                str(SYMBOLS[symbol][1]),
                SYMBOLS[symbol][2],
            )
            next_ticket += 1
        elif kind == "close" and desk.positions:
            ticket = sorted(desk.positions)[op[1] % len(desk.positions)]
            desk.engine.remove_position(ticket)
            del desk.positions[ticket]
        elif kind == "resize" and desk.positions:
            ticket = sorted(desk.positions)[op[1] % len(desk.positions)]
            old = desk.positions[ticket]
            volume, price = D(op[2]) / 100, price_of(old.symbol, op[3])
            desk.positions[ticket] = Pos(
                old.ticket,
                old.login,
                old.symbol,
                old.side,
                volume,
                price,
                old.contract_size,
                old.profit_currency,
            )
            desk.engine.resize_position(ticket, volume, price)
        elif kind == "tick":
            _, symbol, factor, spread = op
            bid = price_of(symbol, factor)
            ask = bid + D(spread) * D("0.00001") * (100 if "JPY" in symbol else 1)
            desk.tick(symbol, str(bid), str(ask))
        elif kind == "money":
            login = logins[op[1]]
            desk.money[login] = (D(op[2]), D(0))
            desk.engine.update_money(login, D(op[2]), D(0), D(0))
        for login in desk.currencies:
            held = [p for p in desk.positions.values() if p.login == login]
            # float error scales with the money summed (JPY amounts are ~110x USD ones)
            notional = sum((p.volume * p.contract_size * p.open_price for p in held), D(0))
            tolerance = D("1e-12") * notional * 200 + MILLIONTH
            expected = desk.expected_floating(login)
            assert close_to(desk.engine.floating(login), expected, tolerance), (op, login)
            assert close_to(desk.engine.equity(login), desk.exact_equity(login), tolerance)
    assert desk.engine.snapshot().positions == len(desk.positions)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    currencies=st.lists(st.sampled_from(CURRENCIES), min_size=8, max_size=8),
    operations=st.lists(operation, min_size=1, max_size=60),
    side=st.sampled_from(["mid", "bid_ask"]),
)
def test_random_portfolios_mark_like_the_decimal_reference(
    currencies: list[str], operations: list[Operation], side: FxConversion
) -> None:
    desk = make_desk(side=side)
    for symbol, (mid, _, _) in SYMBOLS.items():
        desk.tick(symbol, str(mid), str(mid))
    logins = {i: 1000 + i for i in range(8)}
    for i, currency in enumerate(currencies):
        desk.account(logins[i], currency, balance="10000")
    apply_operations(desk, operations, logins)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(operation, min_size=20, max_size=150))
def test_rows_stay_consistent_under_random_opens_closes_and_resizes(
    operations: list[Operation],
) -> None:
    """Many opens and closes on few symbols force segment moves and book compaction."""
    desk = make_desk()
    for symbol, (mid, _, _) in SYMBOLS.items():
        desk.tick(symbol, str(mid), str(mid))
    logins = {i: 1000 + i for i in range(8)}
    for i in range(8):
        desk.account(logins[i], USD if i % 3 else "EUR")
    apply_operations(desk, operations, logins)
    for ticket in sorted(desk.positions):
        desk.engine.remove_position(ticket)
    for login in desk.currencies:
        assert desk.engine.floating(login) == 0.0
