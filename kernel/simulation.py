"""End-to-end market simulation: a real trading day replayed through the whole kernel.

``brokerkernel simulate --accounts 50 --day 2014-05-07 --symbols EURUSD,XAUUSD``

A fresh database is migrated, a kernel is built with the replay feed as its market
clock (driven step by step, not paced), and the API is served on a loopback TCP port.
Everything after the bootstrap goes over HTTP through one ``aiohttp.ClientSession``,
like real clients: a back-office user funds N registered traders with approved manual
deposits, and each trader runs a simple deterministic strategy (trend follower, mean
reverter or scalper with partial closes) on prices read from ``GET /api/prices``.

Market time advances by ``step_seconds`` of market time per step
(``ReplayFeed.step_until``), from the first tick of the day to the end of the window;
within a step the clock stands still while the traders act. In the last part of the
window (the *flatten phase*) nobody opens and every position is closed.

At the end the run checks invariants over HTTP (ledger sums and running totals,
gap-free sequence numbers, balance = deposits + closed-trade profits, zero margin when
flat, every fill at a price that was quoted) and returns a :class:`SimulationReport`.

Units: times are UTC epoch milliseconds unless a name says otherwise (``*_s`` in
seconds), prices are ``Decimal`` in the symbol's quote currency, volumes ``Decimal``
lots, money ``Decimal`` in the account currency (USD). Nothing here reads the wall
clock except to measure how long the run took, and all randomness is seeded per
account, so two runs on the same data produce the same report (ticket numbers aside).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from brokerkernel.api.app import create_app
from brokerkernel.api.jsonio import dumps, loads
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.staff import create_staff_user
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP_ID
from brokerkernel.kernel.trading.terms import load_terms
from brokerkernel.plugins.replay.feed import ReplayFeed
from brokerkernel.plugins.replay.sources import DAY_MS, day_start_ms

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR: Final = Path("../shared/data/market")
"""Market data sets, relative to the working directory (the CLI's default)."""

ADMIN_EMAIL: Final = "simulation-desk@example.com"
LEDGER_PAGE: Final = 500
"""Ledger rows per ``GET /api/backoffice/accounts/{login}/ledger`` page (the maximum)."""

MAX_POLLS: Final = 100
"""Polls of an order request before giving up on it (each after ``TradingService.idle``)."""

HOUR_MS: Final = 3_600_000
FLATTEN_MAX_MS: Final = 15 * 60_000
"""Longest flatten phase at the end of the window (market ms): no opens, close all."""

ZERO: Final = Decimal(0)
CENT: Final = Decimal("0.01")
LOT_STEP: Final = Decimal("0.01")

# Scalper take-profit / half-close / stop-loss distances in price points (10^-digits).
SCALPER_POINTS: Final[dict[str, tuple[int, int, int]]] = {
    "EURUSD": (40, 15, 30),
    "GBPUSD": (40, 15, 30),
    "USDJPY": (40, 15, 30),
    "XAUUSD": (1000, 400, 800),
    "BTCUSD": (5000, 2000, 4000),
}


class SimulationError(RuntimeError):
    """The simulation could not run (bad arguments, data, or an unexpected API answer)."""


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class InvariantCheck:
    """One invariant: its name, whether it held, and a one-line detail (failures listed)."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class AccountResult:
    """One trader at the end of the run; money in USD (Decimal)."""

    login: int
    strategy: str
    symbol: str
    deposit: Decimal
    balance: Decimal
    equity: Decimal
    margin_used: Decimal
    realised_pnl: Decimal
    open_positions: int
    trades: int
    """Market orders filled (positions opened)."""
    rejected: int
    deals: int
    """Closed deals in the trade history (a partial close is its own deal)."""


@dataclass(slots=True)
class SimulationReport:
    """What a run did and whether the invariants held.

    Times: ``window_start_ms``/``window_end_ms`` UTC ms (end exclusive),
    ``step_seconds`` market seconds, ``wall_seconds`` and the phase timings wall-clock
    seconds. Counts are per run.
    """

    day: date
    symbols: list[str]
    step_seconds: int
    window_start_ms: int
    window_end_ms: int
    database_url: str
    ticks_by_symbol: dict[str, int] = field(default_factory=dict)
    crossed_by_symbol: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    orders_filled: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    closes_full: int = 0
    closes_partial: int = 0
    close_failures: dict[str, int] = field(default_factory=dict)
    http_requests: int = 0
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0
    trading_seconds: float = 0.0
    check_seconds: float = 0.0
    accounts: list[AccountResult] = field(default_factory=list)
    invariants: list[InvariantCheck] = field(default_factory=list)

    @property
    def ticks(self) -> int:
        return sum(self.ticks_by_symbol.values())

    @property
    def orders_rejected(self) -> int:
        return sum(self.rejections.values())

    @property
    def passed(self) -> bool:
        """True when every invariant passed (and there was at least one to check)."""
        return bool(self.invariants) and all(check.passed for check in self.invariants)

    def format(self) -> str:
        """The plain-text report (aligned columns; money as exact decimal text)."""
        lines: list[str] = []
        start, end = _utc_text(self.window_start_ms), _utc_text(self.window_end_ms)
        per_symbol = "  ".join(f"{s} {self.ticks_by_symbol.get(s, 0):,}" for s in self.symbols)
        crossed = "  ".join(f"{s} {self.crossed_by_symbol.get(s, 0):,}" for s in self.symbols)
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(self.rejections.items())) or "none"
        failures = ", ".join(f"{r}: {n:,}" for r, n in sorted(self.close_failures.items()))
        rate = self.http_requests / self.trading_seconds if self.trading_seconds else 0.0
        summary = [
            ("day", f"{self.day.isoformat()} (UTC)"),
            ("symbols", ", ".join(self.symbols)),
            ("window", f"{start} .. {end} UTC (end exclusive)"),
            ("steps", f"{self.steps:,} of {self.step_seconds} s market time"),
            ("ticks replayed", f"{per_symbol}  total {self.ticks:,}"),
            ("crossed dropped", crossed),
            ("orders filled", f"{self.orders_filled:,}"),
            ("orders rejected", f"{self.orders_rejected:,} ({reasons})"),
            (
                "closes",
                f"full {self.closes_full:,}  partial {self.closes_partial:,}"
                + (
                    f"  refused {sum(self.close_failures.values()):,} ({failures})"
                    if failures
                    else ""
                ),
            ),
            ("http requests", f"{self.http_requests:,} ({rate:,.0f}/s while trading)"),
            (
                "wall time",
                f"{self.wall_seconds:.1f} s (setup {self.setup_seconds:.1f} s, replay and "
                f"trading {self.trading_seconds:.1f} s, checks {self.check_seconds:.1f} s)",
            ),
            ("database", self.database_url),
        ]
        width = max(len(label) for label, _ in summary)
        lines.append("brokerkernel simulation")
        lines.extend(f"  {label:<{width}}  {value}" for label, value in summary)
        lines.append("")
        lines.extend(self._account_table())
        lines.append("")
        lines.append("invariants")
        lines.extend(
            f"  {'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}" for c in self.invariants
        )
        lines.append("")
        lines.append(f"result: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)

    def _account_table(self) -> list[str]:
        header: tuple[str, ...] = ("login", "strategy", "symbol", "deposit", "balance", "equity")
        header += ("realised P&L", "open", "trades", "rejected", "deals")

        def cells(
            login: str, strategy: str, symbol: str, items: Sequence[AccountResult]
        ) -> tuple[str, ...]:
            money = (
                _money(sum((getattr(a, name) for a in items), ZERO)) for name in _MONEY_COLUMNS
            )
            counts = (f"{sum(getattr(a, name) for a in items):,}" for name in _COUNT_COLUMNS)
            return (login, strategy, symbol, *money, *counts)

        rows = [cells(str(a.login), a.strategy, a.symbol, [a]) for a in self.accounts]
        rows.append(cells("total", f"{len(self.accounts)} accounts", "", self.accounts))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        left = {0, 1, 2}

        def line(row: Sequence[str]) -> str:
            cells = (
                cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            )
            return "  " + "  ".join(cells).rstrip()

        rule = "  " + "  ".join("-" * w for w in widths)
        return [line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]


_MONEY_COLUMNS: Final = ("deposit", "balance", "equity", "realised_pnl")
_COUNT_COLUMNS: Final = ("open_positions", "trades", "rejected", "deals")


def _money(value: Decimal) -> str:
    """Exact decimal text with thousands separators, to the cent (USD)."""
    return f"{value.quantize(CENT):,}"


def _utc_text(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------ HTTP client


@dataclass(slots=True)
class Credentials:
    """Bearer tokens of one API user; the access token is refreshed when it expires."""

    access_token: str
    refresh_token: str


class ApiClient:
    """JSON over one ``aiohttp.ClientSession``, with exact decimals both ways.

    Bodies are written with the API's own encoder (``Decimal`` as exact JSON numbers)
    and read with ``parse_float=Decimal``. ``requests`` counts every HTTP request made.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.requests = 0

    async def call(
        self,
        method: str,
        path: str,
        *,
        auth: Credentials | None = None,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON body)``; a 401 "Token expired" is refreshed and retried."""
        for attempt in range(2):
            headers: dict[str, str] = {}
            if auth is not None:
                headers["Authorization"] = f"Bearer {auth.access_token}"
            data: str | None = None
            if body is not None:
                data = dumps(body)
                headers["Content-Type"] = "application/json"
            self.requests += 1
            async with self.session.request(
                method, path, data=data, headers=headers, params=params
            ) as response:
                status, text = response.status, await response.text()
            payload = loads(text) if text.strip() else None
            expired = (
                status == 401
                and isinstance(payload, dict)
                and payload.get("detail") == "Token expired"
            )
            if expired and auth is not None and attempt == 0:
                await self._refresh(auth)
                continue
            return status, payload
        raise AssertionError("unreachable")

    async def expect(
        self,
        method: str,
        path: str,
        expected: int | tuple[int, ...] = 200,
        **kwargs: Any,
    ) -> Any:
        """Like :meth:`call` but raises SimulationError unless the status is ``expected``."""
        status, payload = await self.call(method, path, **kwargs)
        allowed = (expected,) if isinstance(expected, int) else expected
        if status not in allowed:
            raise SimulationError(f"{method} {path} answered {status}: {payload!r}")
        return payload

    async def _refresh(self, auth: Credentials) -> None:
        payload = await self.expect(
            "POST", "/api/admin/auth/refresh", body={"refresh_token": auth.refresh_token}
        )
        auth.access_token = payload["access_token"]
        auth.refresh_token = payload["refresh_token"]  # rotated on every use


def _dec(value: Any) -> Decimal:
    """A JSON number (int or Decimal) or decimal string as ``Decimal``, never via float."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SimulationError(f"expected a decimal number, got {value!r}")
    return Decimal(value)


def _time_ms(text: str) -> int:
    """UTC epoch ms of an API timestamp (ISO 8601 with ``Z`` or an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise SimulationError(f"timestamp without UTC offset: {text!r}")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# ------------------------------------------------------------------------- market view


@dataclass(frozen=True, slots=True)
class PriceView:
    """A symbol's latest price as ``GET /api/prices`` shows it (quote currency, UTC ms)."""

    bid: Decimal
    ask: Decimal
    mid: Decimal
    time_ms: int


@dataclass(frozen=True, slots=True)
class InstrumentView:
    """The instrument fields the traders use (from ``GET /api/customer/instruments``)."""

    symbol: str
    digits: int
    stale_threshold_ms: int
    min_lot: Decimal

    @property
    def point(self) -> Decimal:
        """The smallest price increment, 10^-digits (quote currency)."""
        return Decimal(1).scaleb(-self.digits)


@dataclass(frozen=True, slots=True)
class MarketView:
    """One step's prices. ``now_ms`` is the newest quote time, i.e. the market clock."""

    prices: dict[str, PriceView]
    instruments: dict[str, InstrumentView]
    now_ms: int

    @classmethod
    def from_payload(cls, payload: Any, instruments: dict[str, InstrumentView]) -> MarketView:
        prices = {
            item["symbol"]: PriceView(
                _dec(item["bid"]), _dec(item["ask"]), _dec(item["mid"]), int(item["timestamp_ms"])
            )
            for item in payload["prices"]
        }
        now_ms = max((p.time_ms for p in prices.values()), default=0)
        return cls(prices, instruments, now_ms)

    def fresh(self, symbol: str) -> PriceView | None:
        """The symbol's price if the venue would still fill at it (not stale), else None."""
        price = self.prices.get(symbol)
        instrument = self.instruments.get(symbol)
        if price is None or instrument is None:
            return None
        if self.now_ms - price.time_ms > instrument.stale_threshold_ms:
            return None
        return price


# --------------------------------------------------------------------------- traders


@dataclass(slots=True)
class OpenPosition:
    """A position as the trader knows it (from ``GET /api/crm/orders``)."""

    ticket: int
    symbol: str
    cmd: int
    volume: Decimal
    open_price: Decimal


class Trader:
    """A registered customer trading one account over HTTP with its own token."""

    def __init__(
        self,
        *,
        index: int,
        login: int,
        credentials: Credentials,
        deposit: Decimal,
        strategy: Strategy,
        api: ApiClient,
        idle: Callable[[], Awaitable[None]],
    ) -> None:
        self.index = index
        self.login = login
        self.credentials = credentials
        self.deposit = deposit
        self.strategy = strategy
        self.api = api
        self._idle = idle
        self.positions: dict[int, OpenPosition] = {}
        self.filled = 0
        self.rejections: Counter[str] = Counter()
        self.closes_full = 0
        self.closes_partial = 0
        self.close_failures: Counter[str] = Counter()

    def tickets(self, symbol: str) -> list[int]:
        return sorted(t for t, p in self.positions.items() if p.symbol == symbol)

    async def refresh_positions(self) -> None:
        """Reload the open positions from ``GET /api/crm/orders?login=``."""
        rows = await self.api.expect(
            "GET", "/api/crm/orders", auth=self.credentials, params={"login": str(self.login)}
        )
        self.positions = {
            int(row["ticket"]): OpenPosition(
                int(row["ticket"]),
                row["symbol"],
                int(row["cmd"]),
                _dec(row["volume"]),
                _dec(row["open_price"]),
            )
            for row in rows
        }

    async def open(self, symbol: str, cmd: int, volume: Decimal) -> OpenPosition | None:
        """Place a market order (``cmd`` 0 buy, 1 sell; ``volume`` lots) and wait for it.

        Returns the opened position, or None when the order was rejected.
        """
        status, payload = await self.api.call(
            "POST",
            "/api/customer/orders",
            auth=self.credentials,
            body={"login": self.login, "symbol": symbol, "cmd": cmd, "volume": volume},
        )
        if status != 200:
            self.rejections[f"HTTP {status}: {_detail(payload)}"] += 1
            return None
        request_id = payload["request_id"]
        for _ in range(MAX_POLLS):
            await self._idle()
            result = await self.api.expect(
                "GET", f"/api/customer/orders/request/{request_id}", auth=self.credentials
            )
            if result["status"] == "executed":
                self.filled += 1
                await self.refresh_positions()
                return self.positions.get(int(result["order"]))
            if result["status"] == "rejected":
                self.rejections[str(result["reason"])] += 1
                return None
        self.rejections["Not executed in time"] += 1
        return None

    async def close(self, ticket: int, volume: Decimal | None = None) -> bool:
        """Close a position in full, or ``volume`` lots of it; False when refused."""
        params = {"login": str(self.login)}
        if volume is not None:
            params["volume"] = str(volume)
        status, payload = await self.api.call(
            "DELETE", f"/api/crm/orders/{ticket}", auth=self.credentials, params=params
        )
        if status != 200:
            self.close_failures[_detail(payload)] += 1
            return False
        position = self.positions[ticket]
        remaining = position.volume - _dec(payload["volume"])
        if remaining > 0:
            self.closes_partial += 1
            position.volume = remaining
        else:
            self.closes_full += 1
            del self.positions[ticket]
        return True

    async def close_all(self, market: MarketView, *, fresh_only: bool = True) -> None:
        """Close every position (only where the symbol's price is fresh, by default)."""
        for ticket in sorted(self.positions):
            if not fresh_only or market.fresh(self.positions[ticket].symbol) is not None:
                await self.close(ticket)

    async def step(self, market: MarketView, flatten: bool) -> None:
        if flatten:
            await self.close_all(market)
        else:
            await self.strategy.step(self, market)


def _detail(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        return str(payload["detail"])
    return json.dumps(payload, default=str)[:80]


class Strategy(ABC):
    """A deterministic trading rule on one symbol, deciding once per step.

    ``volumes`` (lots) are used in turn, one per order placed.
    """

    name: str = "strategy"

    def __init__(self, symbol: str, volumes: Sequence[Decimal]) -> None:
        self.symbol = symbol
        self._volumes = list(volumes)
        self._orders = 0

    def next_volume(self) -> Decimal:
        volume = self._volumes[self._orders % len(self._volumes)]
        self._orders += 1
        return volume

    @abstractmethod
    async def step(self, trader: Trader, market: MarketView) -> None:
        """Look at this step's prices and act through ``trader``."""


class TrendFollower(Strategy):
    """Fast/slow moving averages of the step mids; a crossover opens or reverses."""

    name = "trend"

    def __init__(self, symbol: str, volumes: Sequence[Decimal], fast: int, slow: int) -> None:
        super().__init__(symbol, volumes)
        self.fast = fast
        self.mids: deque[Decimal] = deque(maxlen=slow)
        self.side = 0

    async def step(self, trader: Trader, market: MarketView) -> None:
        price = market.fresh(self.symbol)
        if price is None:
            return
        self.mids.append(price.mid)
        if len(self.mids) < (self.mids.maxlen or 0):
            return
        recent = list(self.mids)[-self.fast :]
        fast = sum(recent, ZERO) / len(recent)
        slow = sum(self.mids, ZERO) / len(self.mids)
        side = (fast > slow) - (fast < slow)
        if side == 0 or side == self.side:
            return
        self.side = side
        for ticket in trader.tickets(self.symbol):
            await trader.close(ticket)
        await trader.open(self.symbol, 0 if side > 0 else 1, self.next_volume())


class MeanReverter(Strategy):
    """Fades a mid beyond the recent mean +- k x recent range; closes back at the mean
    (or after ``max_hold`` steps)."""

    name = "mean-revert"

    def __init__(
        self, symbol: str, volumes: Sequence[Decimal], window: int, k: Decimal, max_hold: int
    ) -> None:
        super().__init__(symbol, volumes)
        self.history: deque[Decimal] = deque(maxlen=window)
        self.k = k
        self.max_hold = max_hold
        self.held = 0

    async def step(self, trader: Trader, market: MarketView) -> None:
        price = market.fresh(self.symbol)
        if price is None:
            return
        mid = price.mid
        if len(self.history) == self.history.maxlen:
            mean = sum(self.history, ZERO) / len(self.history)
            span = max(self.history) - min(self.history)
            tickets = trader.tickets(self.symbol)
            if tickets:
                self.held += 1
                long = trader.positions[tickets[0]].cmd == 0
                back = mid >= mean if long else mid <= mean
                if back or self.held >= self.max_hold:
                    for ticket in tickets:
                        await trader.close(ticket)
            elif span > 0 and abs(mid - mean) > self.k * span:
                self.held = 0
                await trader.open(self.symbol, 1 if mid > mean else 0, self.next_volume())
        self.history.append(mid)


class Scalper(Strategy):
    """Enters at random (seeded), takes profit / stops out at fixed distances in points
    and closes half of the position once it is ``half`` points in profit."""

    name = "scalper"

    def __init__(
        self,
        symbol: str,
        volumes: Sequence[Decimal],
        rng: random.Random,
        enter_probability: float,
        points: tuple[int, int, int],
    ) -> None:
        super().__init__(symbol, volumes)
        self.rng = rng
        self.enter_probability = enter_probability
        self.take_profit, self.half, self.stop_loss = points
        self.halved = False

    async def step(self, trader: Trader, market: MarketView) -> None:
        price = market.fresh(self.symbol)
        if price is None:
            return
        draw, direction = self.rng.random(), self.rng.random()
        tickets = trader.tickets(self.symbol)
        if not tickets:
            if draw < self.enter_probability:
                self.halved = False
                await trader.open(self.symbol, 0 if direction < 0.5 else 1, self.next_volume())
            return
        position = trader.positions[tickets[0]]
        side = 1 if position.cmd == 0 else -1
        exit_price = price.bid if side > 0 else price.ask
        points = (exit_price - position.open_price) * side / market.instruments[self.symbol].point
        if points >= self.take_profit or points <= -self.stop_loss:
            await trader.close(position.ticket)
        elif not self.halved and points >= self.half:
            part = (position.volume / 2).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
            if part > 0 and await trader.close(position.ticket, part):
                self.halved = True


def _lots(value: Decimal, minimum: Decimal) -> Decimal:
    return max(minimum, value.quantize(LOT_STEP, rounding=ROUND_DOWN))


def deposit_for(index: int) -> Decimal:
    """Deterministic, varied deposits (USD): 1,000 to 50,000, and every tenth account
    (index 3, 13, ...) a small one of a few hundred that cannot afford its big orders."""
    if index % 10 == 3:
        return Decimal(400 + 50 * (index // 10))
    whole = 1000 + (index * 9973) % 49001
    cents = (index * 37) % 100
    return Decimal(f"{whole}.{cents:02d}")


def strategy_for(
    index: int, symbols: Sequence[str], deposit: Decimal, instruments: Mapping[str, InstrumentView]
) -> Strategy:
    """The strategy of trader ``index``: trend, mean-revert and scalper in turn, on the
    symbols in turn, sized to the deposit (small accounts alternate 1 lot and 0.1 lot)."""
    rng = random.Random(20_140_507 + index)
    symbol = symbols[index % len(symbols)]
    minimum = instruments[symbol].min_lot
    if deposit < 1000:
        volumes = [Decimal("1.00"), Decimal("0.10")]
    else:
        unit = deposit / 20_000
        volumes = [_lots(unit * Decimal(f), minimum) for f in ("0.5", "1", "1.5")]
        rng.shuffle(volumes)
    kind = index % 3
    if kind == 0:
        return TrendFollower(
            symbol, volumes, fast=rng.choice((3, 5, 8)), slow=rng.choice((15, 20, 30))
        )
    if kind == 1:
        return MeanReverter(
            symbol,
            volumes,
            window=rng.choice((10, 15, 20)),
            k=Decimal(rng.choice(("0.4", "0.5", "0.6"))),
            max_hold=rng.choice((20, 30, 45)),
        )
    points = SCALPER_POINTS.get(symbol, (40, 15, 30))
    return Scalper(
        symbol, volumes, rng, enter_probability=rng.choice((0.2, 0.3, 0.4)), points=points
    )


# ----------------------------------------------------------------------- quote tape


class QuoteTape:
    """Every published quote per symbol, for the "no fill off the quotes" check.

    Subscribed to the kernel's quote book: keeps each symbol's tick times (UTC ms) and
    bid/ask (the Decimals the feed created), in publication order.
    """

    def __init__(self, symbols: Sequence[str]) -> None:
        self._columns: dict[str, tuple[list[int], list[Decimal], list[Decimal]]] = {
            s: ([], [], []) for s in symbols
        }

    def __call__(self, quote: Quote) -> None:
        columns = self._columns.get(quote.symbol)
        if columns is None:
            columns = self._columns[quote.symbol] = ([], [], [])
        columns[0].append(quote.time_ms)
        columns[1].append(quote.bid)
        columns[2].append(quote.ask)

    def count(self, symbol: str) -> int:
        return len(self._columns[symbol][0]) if symbol in self._columns else 0

    def at(self, symbol: str, time_ms: int) -> tuple[Decimal, Decimal, int] | None:
        """``(bid, ask, tick time)`` of the quote current at ``time_ms`` (the last one
        published with a time at or before it), or None."""
        columns = self._columns.get(symbol)
        if columns is None:
            return None
        index = bisect_right(columns[0], time_ms) - 1
        if index < 0:
            return None
        return columns[1][index], columns[2][index], columns[0][index]


# ----------------------------------------------------------------------- simulation


def _plugins_toml(data_dir: Path, symbols: Sequence[str], day: date) -> str:
    """The run's configuration: replay (stepped by the simulator), B-book, markup, margin."""
    return "\n".join(
        [
            "[kernel]",
            'execution_venue = "bbook"',
            'clock = "replay"',
            f"jwt_secret = {json.dumps(secrets.token_urlsafe(32))}",
            "",
            "[plugins.replay]",
            f"data_dir = {json.dumps(str(data_dir))}",
            f"symbols = {json.dumps(list(symbols))}",
            f'start = "{day.isoformat()}"',
            "days = 1",
            'speed = "max"',
            "loop = false",
            "",
            "[plugins.bbook]",
            "",
            "[plugins.spread_markup]",
            "",
            "[plugins.margin]",
            "",
            "[kernel.gateway]",  # a load generator: no per-user or per-IP login limits
            "rate_limit_per_user = 0",
            "rate_limit_auth_per_ip = 0",
            "",
        ]
    )


def _default_database_url(day: date) -> str:
    path = (Path("var") / f"simulate-{day.isoformat()}-{os.getpid()}.db").resolve()
    return f"sqlite+aiosqlite:///{path}"


async def simulate(
    *,
    accounts: int = 50,
    day: date | str = "2014-05-07",
    symbols: Sequence[str] = ("EURUSD", "XAUUSD"),
    step_seconds: int = 60,
    data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
    database_url: str | None = None,
    duration_s: int | None = None,
    redis_url: str | None = None,
) -> SimulationReport:
    """Run the simulation and return its report (it does not print).

    ``day`` is the UTC day replayed; ``duration_s`` (market seconds from the day's
    00:00 UTC) shortens the window, None replays the whole day. ``step_seconds`` is the
    market time between two trader decisions. ``database_url`` defaults to a new SQLite
    file ``./var/simulate-<day>-<pid>.db``; it is migrated to head and must hold no
    customers yet. ``redis_url`` puts the cache and event bus on Redis (default: in
    process). Raises SimulationError when the run cannot be carried out.
    """
    wall_start = time.perf_counter()
    the_day = day if isinstance(day, date) else date.fromisoformat(day)
    symbol_list = [s.strip().upper() for s in symbols if s.strip()]
    if accounts < 1:
        raise SimulationError("accounts must be at least 1")
    if step_seconds < 1:
        raise SimulationError("step_seconds must be at least 1")
    if not symbol_list:
        raise SimulationError("no symbols given")
    window_start = day_start_ms(the_day)
    window_end = window_start + (DAY_MS if duration_s is None else min(DAY_MS, duration_s * 1000))
    if window_end <= window_start:
        raise SimulationError("duration_s must be positive")
    root = await asyncio.to_thread(Path(data_dir).resolve)
    url = database_url or _default_database_url(the_day)
    await asyncio.to_thread(migrate.upgrade, url)

    report = SimulationReport(
        day=the_day,
        symbols=symbol_list,
        step_seconds=step_seconds,
        window_start_ms=window_start,
        window_end_ms=window_end,
        database_url=url,
    )
    with tempfile.TemporaryDirectory(prefix="brokerkernel-simulate-") as work:
        config_path = Path(work) / "plugins.toml"
        config_path.write_text(_plugins_toml(root, symbol_list, the_day))
        settings = Settings(
            config_path=config_path,
            database_url=url,
            redis_url=redis_url,
            var_dir=Path(work),
            start_feeds=False,
        )
        try:
            kernel = Kernel(settings)
        except ValueError as exc:
            raise SimulationError(str(exc)) from exc
        runner = web.AppRunner(create_app(kernel), access_log=None)
        try:
            await runner.setup()  # starts the kernel, which builds the replay feed
        except ValueError as exc:
            await runner.cleanup()
            raise SimulationError(str(exc)) from exc
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(
                base_url=f"http://{host}:{port}", connector=connector
            ) as session:
                api = ApiClient(session)
                await _run(kernel, api, report, accounts, wall_start)
            report.http_requests = api.requests
        finally:
            await runner.cleanup()
    report.wall_seconds = time.perf_counter() - wall_start
    return report


async def _run(
    kernel: Kernel, api: ApiClient, report: SimulationReport, accounts: int, wall_start: float
) -> None:
    """Onboard the traders, step through the window, then check; fills ``report``."""
    feed = kernel.feeds.get("replay")
    if not isinstance(feed, ReplayFeed):
        raise SimulationError("the replay price feed is not running")
    tape = QuoteTape(report.symbols)
    kernel.quotes.subscribe(tape)

    # --- back office and traders, all over HTTP -------------------------------------
    admin_password = secrets.token_urlsafe(18)
    await create_staff_user(
        kernel.db, ADMIN_EMAIL, admin_password, first_name="Simulation", last_name="Desk"
    )
    login = await api.expect(
        "POST", "/api/admin/users/login", body={"email": ADMIN_EMAIL, "password": admin_password}
    )
    admin = Credentials(login["access_token"], login["refresh_token"])
    catalog = await api.expect("GET", "/api/customer/instruments")
    instruments = {
        item["symbol"]: InstrumentView(
            item["symbol"],
            int(item["digits"]),
            int(item["stale_threshold_ms"]),
            _dec(item["min_lot"]),
        )
        for item in catalog
    }
    missing = [s for s in report.symbols if s not in instruments]
    if missing:
        raise SimulationError(f"symbols not in the instrument catalog: {', '.join(missing)}")
    traders = [
        await _onboard(index, api, admin, instruments, report.symbols, kernel.trading.idle)
        for index in range(accounts)
    ]
    report.setup_seconds = time.perf_counter() - wall_start

    # --- the trading day ---------------------------------------------------------------
    trading_start = time.perf_counter()
    first = feed.first_time_ms()
    if first is None or first >= report.window_end_ms:
        raise SimulationError(f"no ticks of {', '.join(report.symbols)} in the window")
    last_ms = report.window_end_ms - 1
    step_ms = report.step_seconds * 1000
    span = report.window_end_ms - report.window_start_ms
    flatten_from = last_ms - max(step_ms, min(FLATTEN_MAX_MS, span // 8))
    target = first
    market = MarketView({}, instruments, 0)
    next_log_ms = report.window_start_ms + HOUR_MS
    while True:
        limit = min(target, last_ms)
        feed.step_until(limit, kernel.quotes.publish)
        report.steps += 1
        market = MarketView.from_payload(await api.expect("GET", "/api/prices"), instruments)
        flatten = limit >= flatten_from
        await asyncio.gather(*(trader.step(market, flatten) for trader in traders))
        if limit >= next_log_ms:  # progress, once per market hour
            next_log_ms += HOUR_MS * (1 + (limit - next_log_ms) // HOUR_MS)
            filled = sum(t.filled for t in traders)
            log.info("simulate: market %s UTC, %d orders filled", _utc_text(limit), filled)
        if limit >= last_ms:
            break
        target += step_ms
    for trader in traders:  # the last word: whatever is still open, at any price quoted
        await trader.close_all(market, fresh_only=False)
    await kernel.trading.idle()
    report.trading_seconds = time.perf_counter() - trading_start

    report.ticks_by_symbol = {s: tape.count(s) for s in report.symbols}
    report.crossed_by_symbol = dict(feed.stats.crossed_by_symbol)
    for trader in traders:
        report.orders_filled += trader.filled
        report.closes_full += trader.closes_full
        report.closes_partial += trader.closes_partial
        for reason, count in trader.rejections.items():
            report.rejections[reason] = report.rejections.get(reason, 0) + count
        for reason, count in trader.close_failures.items():
            report.close_failures[reason] = report.close_failures.get(reason, 0) + count

    # --- invariants, over HTTP -----------------------------------------------------------
    check_start = time.perf_counter()
    await _check(kernel, api, admin, traders, tape, report)
    report.check_seconds = time.perf_counter() - check_start


async def _onboard(
    index: int,
    api: ApiClient,
    admin: Credentials,
    instruments: Mapping[str, InstrumentView],
    symbols: Sequence[str],
    idle: Callable[[], Awaitable[None]],
) -> Trader:
    """Register, log in and fund trader ``index`` (approved manual deposit in USD)."""
    email = f"trader-{index:03d}@simulation.example.com"
    password = secrets.token_urlsafe(12)
    registered = await api.expect(
        "POST",
        "/api/customer/register",
        expected=(200, 201),
        body={
            "email": email,
            "password": password,
            "first_name": "Trader",
            "last_name": f"{index:03d}",
        },
    )
    if registered.get("duplicate"):
        raise SimulationError(f"{email} is already registered: the database is not fresh")
    session = await api.expect(
        "POST", "/api/customer/login", body={"email": email, "password": password}
    )
    login = int(session["customer"]["trading_accounts"][0]["login"])
    deposit = deposit_for(index)
    await api.expect(
        "POST",
        "/api/backoffice/transactions/manual",
        expected=201,
        auth=admin,
        body={
            "login": login,
            "type": "DEPOSIT",
            "amount": str(deposit),
            "currency": "USD",
            "status": "APPROVED",
            "comment": "simulation funding",
        },
    )
    return Trader(
        index=index,
        login=login,
        credentials=Credentials(session["access_token"], session["refresh_token"]),
        deposit=deposit,
        strategy=strategy_for(index, symbols, deposit, instruments),
        api=api,
        idle=idle,
    )


async def _ledger(api: ApiClient, admin: Credentials, login: int) -> list[dict[str, Any]]:
    """Every ledger row of ``login``, oldest first (paged, newest first on the wire)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await api.expect(
            "GET",
            f"/api/backoffice/accounts/{login}/ledger",
            auth=admin,
            params={"limit": str(LEDGER_PAGE), "offset": str(offset)},
        )
        rows.extend(page)
        if len(page) < LEDGER_PAGE:
            break
        offset += LEDGER_PAGE
    rows.reverse()
    return rows


async def _check(
    kernel: Kernel,
    api: ApiClient,
    admin: Credentials,
    traders: Sequence[Trader],
    tape: QuoteTape,
    report: SimulationReport,
) -> None:
    """Read every account's state, ledger, positions and history over HTTP and check."""
    adjusted = await _adjusted_quote_fn(kernel, tape, report.symbols)
    ledger_bad: list[str] = []
    sequence_bad: list[str] = []
    balance_bad: list[str] = []
    margin_bad: list[str] = []
    price_bad: list[str] = []
    ledger_rows = deals_checked = 0
    for trader in traders:
        login = trader.login
        state = await api.expect("GET", f"/api/crm/accounts/{login}/state", auth=admin)
        positions = await api.expect(
            "GET", "/api/crm/orders", auth=admin, params={"login": str(login)}
        )
        history = await api.expect(
            "GET", "/api/crm/history", auth=admin, params={"login": str(login)}
        )
        rows = await _ledger(api, admin, login)
        ledger_rows += len(rows)
        balance, credit, margin = (
            _dec(state["balance"]),
            _dec(state["credit"]),
            _dec(state["margin_used"]),
        )

        # (1) the account equals the sum of its ledger; the last row's totals equal it
        sums = [
            sum((_dec(r[k]) for r in rows), ZERO)
            for k in ("balance_delta", "credit_delta", "margin_delta")
        ]
        if sums != [balance, credit, margin]:
            ledger_bad.append(f"{login}: ledger sums {sums} vs account {[balance, credit, margin]}")
        if rows:
            last = rows[-1]
            totals = [_dec(last[k]) for k in ("balance_after", "credit_after", "margin_after")]
            if totals != [balance, credit, margin]:
                ledger_bad.append(
                    f"{login}: last row totals {totals} vs account {[balance, credit, margin]}"
                )
        # (2) sequence numbers 1..n without gaps
        sequence = [int(r["sequence_num"]) for r in rows]
        if sequence != list(range(1, len(rows) + 1)):
            sequence_bad.append(f"{login}: sequence {sequence[:5]}... ({len(rows)} rows)")
        # (3) balance = deposits + closed-trade results
        realised = sum(
            (_dec(d["profit"]) + _dec(d["commission"]) + _dec(d["swap"]) for d in history), ZERO
        )
        if balance != trader.deposit + realised:
            balance_bad.append(
                f"{login}: balance {balance} != deposit {trader.deposit} + deals {realised}"
            )
        # (4) no margin held once flat
        if positions or margin != 0:
            margin_bad.append(f"{login}: {len(positions)} open, margin_used {margin}")
        # (5) every fill at the (group-adjusted) price quoted at that moment
        for deal in history:
            deals_checked += 1
            buy = int(deal["cmd"]) == 0
            for when, price_field, is_open in (
                ("open_time", "open_price", True),
                ("close_time", "close_price", False),
            ):
                at = _time_ms(deal[when])
                quoted = adjusted(deal["symbol"], at)
                price = _dec(deal[price_field])
                expected = None if quoted is None else (quoted[1] if buy == is_open else quoted[0])
                if price != expected:
                    where = f"{login} #{deal['ticket']} {price_field} {price} at {deal[when]}"
                    price_bad.append(f"{where}: quoted {quoted}")
        report.accounts.append(
            AccountResult(
                login=login,
                strategy=trader.strategy.name,
                symbol=trader.strategy.symbol,
                deposit=trader.deposit,
                balance=balance,
                equity=_dec(state["equity"]),
                margin_used=margin,
                realised_pnl=realised,
                open_positions=len(positions),
                trades=trader.filled,
                rejected=sum(trader.rejections.values()),
                deals=len(history),
            )
        )

    def verdict(name: str, failures: list[str], ok: str) -> InvariantCheck:
        if not failures:
            return InvariantCheck(name, True, ok)
        shown = "; ".join(failures[:5]) + (
            f"; ... {len(failures) - 5} more" if len(failures) > 5 else ""
        )
        return InvariantCheck(name, False, f"{len(failures)} failure(s): {shown}")

    n = len(traders)
    report.invariants = [
        verdict(
            "(1) ledger sums and running totals equal the account",
            ledger_bad,
            f"{n} accounts, {ledger_rows:,} ledger rows",
        ),
        verdict("(2) ledger sequence_num gap-free 1..n", sequence_bad, f"{n} accounts"),
        verdict(
            "(3) balance = deposits + closed-trade profits",
            balance_bad,
            f"{n} accounts, {deals_checked:,} deals, to the cent",
        ),
        verdict("(4) flat at the end: no positions, margin_used 0", margin_bad, f"{n} accounts"),
        verdict(
            "(5) every fill at a quoted price (buy at ask, sell at bid)",
            price_bad,
            f"{2 * deals_checked:,} fill prices against {report.ticks:,} recorded quotes",
        ),
    ]


async def _adjusted_quote_fn(
    kernel: Kernel, tape: QuoteTape, symbols: Sequence[str]
) -> Callable[[str, int], tuple[Decimal, Decimal, int] | None]:
    """``(symbol, time_ms) -> (bid, ask, tick time)`` as the default group saw the quote
    current at that time (the kernel's quote adjusters applied to the recorded tick)."""
    async with kernel.db.read() as session:
        terms = {s: await load_terms(session, DEFAULT_GROUP_ID, s) for s in symbols}
    adjusters = kernel.trading.adjusters

    def at(symbol: str, time_ms: int) -> tuple[Decimal, Decimal, int] | None:
        raw = tape.at(symbol, time_ms)
        symbol_terms = terms.get(symbol)
        if raw is None or symbol_terms is None:
            return raw
        quote = Quote(symbol, raw[0], raw[1], raw[2], "replay")
        for adjuster in adjusters:
            quote = adjuster.adjust(quote, symbol_terms)
        return quote.bid, quote.ask, quote.time_ms

    return at


def run_simulation(args: argparse.Namespace) -> int:
    """The ``brokerkernel simulate`` command: run, print the report, 0 when all invariants pass."""
    symbols = [s for s in str(args.symbols).split(",") if s.strip()]
    try:
        report = asyncio.run(
            simulate(
                accounts=args.accounts,
                day=args.day,
                symbols=symbols,
                step_seconds=args.step_seconds,
                data_dir=args.data_dir,
                database_url=args.database_url,
            )
        )
    except (SimulationError, ValueError) as exc:
        print(f"simulate: {exc}", flush=True)
        return 2
    print(report.format(), flush=True)
    return 0 if report.passed else 1
