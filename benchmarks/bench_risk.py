"""Throughput and stop-out latency of the vectorised risk engine on a real tick sequence.

Setup (timed as *build*): ``--accounts`` accounts (90% USD, 6% EUR, 4% JPY; 1:100;
stop-out 50%, margin call 100%) holding ``--positions`` open positions over 30 symbols
(FX majors and crosses, metals, indices, oil, bitcoin) by popularity — EURUSD 12.5%,
XAUUSD 10%, ... each thin cross 1% — with random side, volume and open price near the
start price, every one added through :meth:`RiskEngine.add_position`. 40% of the
positions have a non-USD profit currency, so conversion-pair ticks (USDJPY, GBPUSD,
EURUSD, ...) re-mark many rows. Balances are set from the first prices so that most
accounts sit at a margin level of 300-2,000%, 2% just above the margin call and 2%
just above the stop-out, so crossings occur as prices move.

Ticks: the real EURUSD and XAUUSD ticks of ``--day`` (``ReplayFeed``, crossed quotes
dropped) are mapped onto the 30 symbols: each symbol follows one source (FX pairs
EURUSD, the rest XAUUSD), the source's ticks are dealt out round-robin to its
symbols, and a symbol's bid/ask is the real one times a per-symbol scale (reference
price / the source's first mid). The timing and the price path are real.

Measured:

* **sustained ticks/s**: ``--ticks`` ticks through ``on_tick`` back to back, with the
  stop-out consumer (below) run inline — per wall-clock second and per CPU second of
  this process (the machine may be shared; CPU time is what one core would do);
* **tick → stop-out event latency** at a paced ``--rate`` ticks/s for ``--paced-seconds``:
  an asyncio producer publishes each tick on schedule (yielding to the loop between
  ticks, as a network feed does) and stamps it; crossings go through
  ``sink=asyncio.Queue.put_nowait`` to a consumer task, which takes every queued
  event, records stamp → receipt, then runs the stand-in for the exact path (closes the
  account's positions through ``remove_position`` + ``update_money``). Before this
  phase 2,000 accounts are put 0-30% of margin above their stop-out (a 0-0.3% price
  move away), so events occur;
* memory: process RSS before/after the build, and the engine's NumPy bytes;
* the per-book aggregation step three ways (gather/scatter, ``np.add.at``,
  ``np.bincount``) on the largest book, which chose the engine's layout.

Measured 2026-11-21 on a quiet 2-core machine (load average 0.6), defaults: build
7.2 s; RSS 162 -> 607 MB (+446 MB), NumPy arrays 73.5 MB; sustained 14,033 ticks/s
wall, 14,045 per CPU second over 150,000 ticks (target 10,000; 45,041 margin calls,
2,158 stop-outs); paced 1,000 ticks/s: on_tick p50 124 / p99 599 us, tick -> stop-out
event at the consumer p50 0.322 / p99 0.965 ms (target p99 2 ms).

Run from the repository root (well under 2 minutes)::

    .venv/bin/python benchmarks/bench_risk.py [--accounts 100000] [--positions 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
from common import add_data_dir_option, percentile

from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.risk.engine import RiskEngine
from brokerkernel.kernel.risk.rules import Crossing, MarginCallRule, StopOutRule
from brokerkernel.plugins.replay.feed import ReplayFeed

TARGETS = "targets (issue 3): 10,000 ticks/s sustained; tick -> stop-out event p99 <= 2 ms"
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Instrument:
    """A benchmark symbol: reference price, contract size, which real feed drives it and
    its popularity (relative share of open positions)."""

    symbol: str
    price: float
    contract_size: float
    profit_currency: str
    source: str
    weight: int


INSTRUMENTS = [
    Instrument("EURUSD", 1.3930, 100_000, "USD", "EURUSD", 12),
    Instrument("GBPUSD", 1.6950, 100_000, "USD", "EURUSD", 7),
    Instrument("AUDUSD", 0.9350, 100_000, "USD", "EURUSD", 4),
    Instrument("NZDUSD", 0.8650, 100_000, "USD", "EURUSD", 2),
    Instrument("USDJPY", 101.60, 100_000, "JPY", "EURUSD", 7),
    Instrument("USDCHF", 0.8750, 100_000, "CHF", "EURUSD", 3),
    Instrument("USDCAD", 1.0900, 100_000, "CAD", "EURUSD", 3),
    Instrument("EURJPY", 141.50, 100_000, "JPY", "EURUSD", 3),
    Instrument("GBPJPY", 172.20, 100_000, "JPY", "EURUSD", 3),
    Instrument("EURGBP", 0.8220, 100_000, "GBP", "EURUSD", 2),
    Instrument("EURCHF", 1.2180, 100_000, "CHF", "EURUSD", 1),
    Instrument("AUDJPY", 95.000, 100_000, "JPY", "EURUSD", 1),
    Instrument("CHFJPY", 116.10, 100_000, "JPY", "EURUSD", 1),
    Instrument("EURAUD", 1.4900, 100_000, "AUD", "EURUSD", 1),
    Instrument("GBPCHF", 1.4880, 100_000, "CHF", "EURUSD", 1),
    Instrument("XAUUSD", 1290.0, 100, "USD", "XAUUSD", 10),
    Instrument("XAGUSD", 19.400, 5_000, "USD", "XAUUSD", 2),
    Instrument("US30", 16500, 1, "USD", "XAUUSD", 5),
    Instrument("SPX500", 1880.0, 10, "USD", "XAUUSD", 4),
    Instrument("NAS100", 3550.0, 10, "USD", "XAUUSD", 5),
    Instrument("GER30", 9500.0, 10, "EUR", "XAUUSD", 4),
    Instrument("UK100", 6800.0, 10, "GBP", "XAUUSD", 2),
    Instrument("JPN225", 14100, 100, "JPY", "XAUUSD", 1),
    Instrument("USOIL", 100.00, 1_000, "USD", "XAUUSD", 3),
    Instrument("BTCUSD", 440.00, 1, "USD", "XAUUSD", 3),
    Instrument("CADJPY", 93.200, 100_000, "JPY", "XAUUSD", 1),
    Instrument("NZDJPY", 87.900, 100_000, "JPY", "XAUUSD", 1),
    Instrument("EURCAD", 1.5180, 100_000, "CAD", "XAUUSD", 1),
    Instrument("GBPAUD", 1.8130, 100_000, "AUD", "XAUUSD", 1),
    Instrument("AUDCAD", 1.0190, 100_000, "CAD", "XAUUSD", 1),
]
# account currency per unit of profit currency at the reference prices (margin sizing)
TO_USD = {"USD": 1.0, "JPY": 1 / 101.6, "CHF": 1 / 0.875, "CAD": 1 / 1.09, "GBP": 1.695}
TO_USD |= {"AUD": 0.935, "EUR": 1.393}


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def load_ticks(data_dir: Path, day: date, limit: int) -> list[tuple[str, float, float, int]]:
    """The real day mapped onto the 30 symbols: ``(symbol, bid, ask, time_ms)``."""
    feed = ReplayFeed(data_dir, ["EURUSD", "XAUUSD"], day)
    real: list[Quote] = []
    feed.step_until(2**62, real.append)
    first_mid = {}
    for quote in real:
        first_mid.setdefault(quote.symbol, float(quote.mid))
    followers = {
        source: [(i.symbol, i.price / first_mid[source]) for i in INSTRUMENTS if i.source == source]
        for source in first_mid
    }
    dealt = dict.fromkeys(first_mid, 0)
    ticks = []
    for quote in real[:limit]:
        group = followers[quote.symbol]
        symbol, scale = group[dealt[quote.symbol] % len(group)]
        dealt[quote.symbol] += 1
        ticks.append((symbol, float(quote.bid) * scale, float(quote.ask) * scale, quote.time_ms))
    return ticks


class Portfolio:
    """The benchmark's own record of accounts and positions (the trading service's role)."""

    def __init__(self, accounts: int, positions: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.logins = np.arange(10_001, 10_001 + accounts)
        self.currency = rng.choice(["USD", "EUR", "JPY"], accounts, p=[0.90, 0.06, 0.04])
        self.owner = rng.integers(0, accounts, positions)
        weights = np.array([i.weight for i in INSTRUMENTS], dtype=float)
        self.instrument = rng.choice(len(INSTRUMENTS), positions, p=weights / weights.sum())
        self.side = rng.choice([1, -1], positions)
        self.volume = np.round(np.clip(rng.lognormal(-2.0, 1.0, positions), 0.01, 5.0), 2)
        ref = np.array([i.price for i in INSTRUMENTS])[self.instrument]
        self.open_price = ref * (1 + rng.normal(0, 0.001, positions))
        contract = np.array([i.contract_size for i in INSTRUMENTS])[self.instrument]
        to_usd = np.array([TO_USD[i.profit_currency] for i in INSTRUMENTS])[self.instrument]
        notional_usd = self.volume * contract * ref * to_usd
        self.margin_usd = notional_usd / 100
        self.rng = rng

    def account_margin_usd(self) -> np.ndarray:
        return np.bincount(self.owner, self.margin_usd, minlength=len(self.logins))

    def add_positions(self, engine: RiskEngine, tickets: dict[int, list[int]]) -> None:
        """Add every position to ``engine`` (tickets 1, 2, ...), each ticket appended to
        its login's list in ``tickets`` once added."""
        for ticket, (owner, instrument, side, volume, price) in enumerate(
            zip(
                self.owner.tolist(),
                self.instrument.tolist(),
                self.side.tolist(),
                self.volume.tolist(),
                self.open_price.tolist(),
                strict=True,
            ),
            start=1,
        ):
            spec = INSTRUMENTS[instrument]
            login = int(self.logins[owner])
            engine.add_position(
                ticket,
                login,
                spec.symbol,
                side,
                volume,
                price,
                spec.contract_size,
                spec.profit_currency,
            )
            tickets.setdefault(login, []).append(ticket)


def usd_to(currency: str) -> float:
    return 1 / TO_USD[currency] if currency != "JPY" else 101.6


def build(
    book: Portfolio, ticks: list[tuple[str, float, float, int]], sink: Callable[[Crossing], None]
) -> RiskEngine:
    """Fill an engine: first prices, accounts, positions, balances (see module doc)."""
    engine = RiskEngine([StopOutRule(), MarginCallRule()], sink=sink)
    first: dict[str, tuple[str, float, float, int]] = {}
    for tick in ticks:
        first.setdefault(tick[0], tick)
    for symbol, bid, ask, time_ms in first.values():
        engine.on_tick(symbol, bid, ask, time_ms)
    for slot, login in enumerate(book.logins.tolist()):
        engine.set_account(
            login,
            currency=str(book.currency[slot]),
            balance=Decimal(0),
            credit=Decimal(0),
            margin_used=Decimal(0),
            stopout_level=Decimal(50),
            margin_call_level=Decimal(100),
        )
    book.add_positions(engine, {})
    # margin level 300-2,000%; 2% of accounts at 100-105%, 2% at 50-52%
    level = book.rng.uniform(3.0, 20.0, len(book.logins))
    fragile = book.rng.random(len(book.logins))
    level[fragile < 0.02] = book.rng.uniform(1.0, 1.05, int((fragile < 0.02).sum()))
    near_stop = (fragile >= 0.02) & (fragile < 0.04)
    level[near_stop] = book.rng.uniform(0.50, 0.52, int(near_stop.sum()))
    margin_usd = book.account_margin_usd()
    for slot, login in enumerate(book.logins.tolist()):
        currency = str(book.currency[slot])
        margin = Decimal(margin_usd[slot] * usd_to(currency)).quantize(CENT)
        set_margin_level(engine, login, margin, float(level[slot]))
    engine.settle()
    return engine


def set_margin_level(engine: RiskEngine, login: int, margin: Decimal, level: float) -> None:
    """Set the balance so that equity = level x margin (level as a fraction)."""
    floating = engine.floating(login)
    balance = Decimal(float(margin) * level - floating).quantize(CENT)
    engine.update_money(login, balance, Decimal(0), margin)


class Relay:
    """The engine's sink: forwards crossings to ``target`` (a deque, later a queue)."""

    def __init__(self, target: Callable[[Crossing], None]) -> None:
        self.target = target

    def __call__(self, crossing: Crossing) -> None:
        self.target(crossing)


class StopOuts:
    """The stand-in for the kernel's exact path: a stop-out closes the account's
    positions (``remove_position``) and books their P&L (``update_money``)."""

    def __init__(self, engine: RiskEngine, book: Portfolio) -> None:
        self.engine = engine
        self.tickets: dict[int, list[int]] = {}
        for ticket, owner in enumerate(book.owner.tolist()):
            self.tickets.setdefault(int(book.logins[owner]), []).append(ticket + 1)
        self.stop_outs = 0
        self.margin_calls = 0

    def handle(self, crossing: Crossing) -> None:
        if crossing.rule == "margin_call":
            self.margin_calls += 1
            return
        self.stop_outs += 1
        equity = Decimal(self.engine.equity(crossing.login)).quantize(CENT)
        for ticket in self.tickets.pop(crossing.login, []):
            self.engine.remove_position(ticket)
        self.engine.update_money(crossing.login, equity, Decimal(0), Decimal(0))


def throughput(
    engine: RiskEngine, handler: StopOuts, ticks, pending: deque[Crossing]
) -> tuple[float, float]:
    """(ticks per wall second, ticks per CPU second of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for symbol, bid, ask, time_ms in ticks:
        engine.on_tick(symbol, bid, ask, time_ms)
        if pending:
            while pending:
                handler.handle(pending.popleft())
            engine.settle()
    return len(ticks) / (time.perf_counter() - wall), len(ticks) / (time.process_time() - cpu)


async def paced(engine: RiskEngine, handler: StopOuts, ticks, rate: float, queue) -> dict:
    """Publish ``ticks`` at ``rate``/s, yielding to the loop after each; the consumer
    measures tick stamp → receipt of each stop-out."""
    stamps: dict[int, tuple[float, float]] = {}
    latencies: list[float] = []
    emitted: list[float] = []
    tick_us: list[float] = []

    async def consume() -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            received = time.perf_counter()
            for crossing in batch:
                stamped, done = stamps.pop(id(crossing))
                if crossing.rule == "stop_out":
                    latencies.append((received - stamped) * 1000)
                    emitted.append((done - stamped) * 1000)
                handler.handle(crossing)
            engine.settle()

    consumer = asyncio.create_task(consume())
    cpu_us: list[float] = []
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    start = time.perf_counter()
    for index, (symbol, bid, ask, time_ms) in enumerate(ticks):
        delay = start + index / rate - time.perf_counter()
        await asyncio.sleep(max(delay, 0))
        stamped, cpu = time.perf_counter(), time.process_time()
        crossings = engine.on_tick(symbol, bid, ask, time_ms)
        done = time.perf_counter()
        cpu_us.append((time.process_time() - cpu) * 1e6)
        tick_us.append((done - stamped) * 1e6)
        for crossing in crossings:
            stamps[id(crossing)] = (stamped, done)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.01)
    consumer.cancel()
    return {
        "achieved_rate": len(ticks) / elapsed,
        "latencies": latencies,
        "engine": emitted,
        "tick_us": tick_us,
        "cpu_us": cpu_us,
        "preempted": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches,
    }


def compare_aggregation(portfolio: Portfolio) -> dict[str, float]:
    """CPU µs per call of the per-segment aggregation step — add each row's P&L change
    into the per-account array and read the new floating P&L back for the band check —
    three ways, for the largest segment's size (unique account slots, as in a segment)."""
    usd = portfolio.currency[portfolio.owner] == "USD"
    largest = max(
        int(np.count_nonzero(usd & (portfolio.instrument == i))) for i in range(len(INSTRUMENTS))
    )
    accounts = len(portfolio.logins)
    acct = portfolio.rng.choice(accounts, largest, replace=False).astype(np.intp)
    old, new = np.zeros(largest), np.full(largest, 0.01)
    floating = np.zeros(accounts)

    def scatter() -> None:  # what the engine does
        marked = floating.take(acct)
        marked -= old
        marked += new
        floating[acct] = marked

    def add_at() -> None:
        np.add.at(floating, acct, new - old)
        floating.take(acct)

    def bincount() -> None:
        floating[:] += np.bincount(acct, new - old, minlength=accounts)
        floating.take(acct)

    results = {"rows": float(largest)}
    for name, step in (("gather/scatter", scatter), ("np.add.at", add_at), ("bincount", bincount)):
        step()
        started = time.process_time()
        for _ in range(1000):
            step()
        results[name] = (time.process_time() - started) / 1000 * 1e6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=300_000)
    parser.add_argument("--ticks", type=int, default=150_000, help="throughput phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced ticks/s")
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2014, 5, 7))
    add_data_dir_option(parser)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    paced_count = int(args.rate * args.paced_seconds)
    ticks = load_ticks(args.data_dir, args.day, args.ticks + paced_count)
    print(f"{TARGETS}")
    print(
        f"{args.accounts:,} accounts, {args.positions:,} positions, {len(INSTRUMENTS)} symbols; "
        f"{len(ticks):,} real ticks of {args.day} (EURUSD + XAUUSD) mapped onto them"
    )
    pending: deque[Crossing] = deque()
    relay = Relay(pending.append)
    rss_before = rss_mb()
    started, started_cpu = time.perf_counter(), time.process_time()
    book = Portfolio(args.accounts, args.positions, args.seed)
    engine = build(book, ticks, relay)
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    rss_after = rss_mb()
    snapshot = engine.snapshot()
    print(
        f"build: {build_s:.1f} s wall, {build_cpu_s:.1f} s CPU ({snapshot.books} books, "
        f"{snapshot.segments} segments); memory: RSS {rss_before:.0f} -> "
        f"{rss_after:.0f} MB (+{rss_after - rss_before:.0f} MB), NumPy arrays "
        f"{snapshot.array_bytes / 1e6:.1f} MB, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB"
    )
    handler = StopOuts(engine, book)
    while pending:
        handler.handle(pending.popleft())
    engine.settle()
    margin_calls, stop_outs = handler.margin_calls, handler.stop_outs

    rate, cpu_rate = throughput(engine, handler, ticks[: args.ticks], pending)
    print(
        f"sustained: {rate:,.0f} ticks/s wall, {cpu_rate:,.0f} ticks per CPU second, over "
        f"{args.ticks:,} ticks (target 10,000); crossings: margin calls "
        f"{handler.margin_calls - margin_calls:,}, stop-outs {handler.stop_outs - stop_outs:,}"
    )

    # put 2,000 accounts 0-30% of margin above their stop-out level for the paced phase
    candidates = [login for login in handler.tickets if engine.watched(login)]
    chosen = book.rng.choice(candidates, min(2000, len(candidates)), replace=False)
    for login in chosen.tolist():
        stop_out = next(w.level.value for w in engine.watched(login) if w.rule == "stop_out")
        set_margin_level(engine, login, stop_out * 2, 0.5 + float(book.rng.uniform(0, 0.3)))
    engine.settle()
    queue: asyncio.Queue[Crossing] = asyncio.Queue()
    relay.target = queue.put_nowait
    result = asyncio.run(paced(engine, handler, ticks[args.ticks :], args.rate, queue))
    latencies = result["latencies"]
    tick_us, cpu_us = result["tick_us"], result["cpu_us"]
    print(
        f"paced {args.rate:,.0f} ticks/s (achieved {result['achieved_rate']:,.0f}) for "
        f"{len(tick_us):,} ticks: on_tick wall p50 {percentile(tick_us, 0.5):.0f} µs, "
        f"p99 {percentile(tick_us, 0.99):.0f} µs; CPU p50 {percentile(cpu_us, 0.5):.0f} µs, "
        f"p99 {percentile(cpu_us, 0.99):.0f} µs; the process was preempted "
        f"{result['preempted']:,} times (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    if latencies:
        print(
            f"tick -> stop-out event at the consumer: {len(latencies):,} events, "
            f"p50 {percentile(latencies, 0.5):.3f} ms, p99 {percentile(latencies, 0.99):.3f} ms, "
            f"max {max(latencies):.3f} ms (target p99 <= 2 ms); tick -> crossing emitted "
            f"p50 {percentile(result['engine'], 0.5):.3f} ms, "
            f"p99 {percentile(result['engine'], 0.99):.3f} ms"
        )
    else:
        print("tick -> stop-out event: no stop-out occurred in the paced phase")
    aggregation = compare_aggregation(book)
    rows = int(aggregation.pop("rows"))
    print(
        f"aggregation step for the largest segment ({rows:,} rows), CPU µs per tick: "
        + ", ".join(f"{name} {us:.1f}" for name, us in aggregation.items())
    )
    final = engine.snapshot()
    print(
        f"engine: {final.ticks:,} ticks, {final.crossings:,} crossings, "
        f"{final.exact_checks} exact checks, {final.resyncs} resyncs; paced on_tick mean "
        f"{statistics.fmean(tick_us):.0f} µs"
    )


if __name__ == "__main__":
    main()
