"""Throughput of the replay price path on one real trading day.

Replays the day at speed ``"max"`` through ``ReplayFeed.run`` → ``QuoteBook.publish``
(a driven ``MarketClock``, ``clock_provider="replay"``) → three subscribers (a tick
counter, the last mid per symbol, a per-minute OHLC of the mid), and separately times
reading + parsing + ``Quote`` creation alone. Run from the repository root::

    .venv/bin/python benchmarks/bench_replay.py [--symbols EURUSD,XAUUSD] [--day 2014-05-07]

``--data-dir`` defaults to ``$BROKERKERNEL_MARKET_DATA`` or ``../shared/data/market``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from common import add_data_dir_option

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.pricing import Quote, QuoteBook
from brokerkernel.plugins.replay.feed import ReplayFeed

MINUTE_MS = 60_000


@dataclass(slots=True)
class TickCounter:
    """Counts the ticks it receives."""

    ticks: int = 0

    def __call__(self, quote: Quote) -> None:
        self.ticks += 1


@dataclass(slots=True)
class LastMid:
    """The latest mid price (quote currency) per symbol."""

    mids: dict[str, Decimal] = field(default_factory=dict)

    def __call__(self, quote: Quote) -> None:
        self.mids[quote.symbol] = quote.mid


@dataclass(slots=True)
class MinuteBars:
    """Per-minute open/high/low/close of the mid, keyed by (symbol, minute start UTC ms)."""

    bars: dict[tuple[str, int], list[Decimal]] = field(default_factory=dict)

    def __call__(self, quote: Quote) -> None:
        mid = quote.mid
        key = (quote.symbol, quote.time_ms - quote.time_ms % MINUTE_MS)
        bar = self.bars.get(key)
        if bar is None:
            self.bars[key] = [mid, mid, mid, mid]
            return
        if mid > bar[1]:
            bar[1] = mid
        elif mid < bar[2]:
            bar[2] = mid
        bar[3] = mid


def _feed(data_dir: Path, symbols: list[str], day: date) -> ReplayFeed:
    return ReplayFeed(data_dir, symbols, day, speed="max")


def bench_parse(data_dir: Path, symbols: list[str], day: date) -> tuple[int, float]:
    """Ticks and wall seconds for reading + parsing + Quote creation + merging only."""
    feed = _feed(data_dir, symbols, day)
    started = time.perf_counter()
    ticks = feed.step_until(2**62, lambda quote: True)
    return ticks, time.perf_counter() - started


async def bench_price_path(
    data_dir: Path, symbols: list[str], day: date
) -> tuple[ReplayFeed, QuoteBook, TickCounter, MinuteBars, float]:
    """Replays the day through the quote book and its subscribers; returns the parts."""
    feed = _feed(data_dir, symbols, day)
    book = QuoteBook(MarketClock(driven=True, start_ms=0), clock_provider="replay")
    counter, mids, bars = TickCounter(), LastMid(), MinuteBars()
    for subscriber in (counter, mids, bars):
        book.subscribe(subscriber)
    started = time.perf_counter()
    await feed.run(book.publish)
    return feed, book, counter, bars, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="EURUSD,XAUUSD", help="comma-separated symbols")
    parser.add_argument("--day", default="2014-05-07", help="UTC day, YYYY-MM-DD")
    add_data_dir_option(parser)
    args = parser.parse_args()
    symbols = [symbol.strip() for symbol in args.symbols.split(",") if symbol.strip()]
    day = date.fromisoformat(args.day)

    try:
        parsed, parse_s = bench_parse(args.data_dir, symbols, day)
    except ValueError as exc:  # no data for that symbol/day, or no data directory
        raise SystemExit(str(exc)) from None
    feed, book, counter, bars, path_s = asyncio.run(bench_price_path(args.data_dir, symbols, day))
    if not counter.ticks == book.stats.ticks == feed.stats.ticks_published == parsed:
        raise SystemExit(f"tick counts disagree: {counter.ticks}, {book.stats}, {feed.stats}")

    print(f"replay {','.join(symbols)} {day} at speed max")
    print(f"ticks replayed:   {feed.stats.ticks_published:,}")
    print(f"crossed dropped:  {feed.stats.crossed_dropped:,} {feed.stats.crossed_by_symbol}")
    print(f"minute bars:      {len(bars.bars):,}")
    print(f"wall seconds:     {path_s:.3f}")
    rate = feed.stats.ticks_published / path_s
    print(f"ticks/s:          {rate:,.0f}  (feed -> QuoteBook -> 3 subscribers)")
    print(f"read+parse only:  {parsed / parse_s:,.0f} ticks/s  ({parse_s:.3f} s)")
    print("target: 10,000 ticks/s through the risk engine (issue 3)")


if __name__ == "__main__":
    main()
