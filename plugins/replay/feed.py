"""The replay price feed: recorded market data served as live ticks.

:class:`ReplayFeed` merges the ticks of every configured symbol in time order
(``heapq.merge`` over lazy per-source generators, ties in configuration order), drops
crossed quotes (ask < bid) and hands the rest to ``publish`` — paced against the wall
clock by :meth:`ReplayFeed.run`, or step by step for a simulator by
:meth:`ReplayFeed.step_until`. Both share one cursor. Times are UTC epoch milliseconds,
prices ``Decimal`` in the symbol's quote currency.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Final, Literal

from brokerkernel.kernel.descriptors import PluginContext
from brokerkernel.kernel.pricing import Quote
from brokerkernel.plugins.replay.config import config_defaults
from brokerkernel.plugins.replay.sources import DAY_MS, Source, day_start_ms, sources_for

Speed = float | Literal["max"]
"""A multiple of real time (> 0), or ``"max"`` for as fast as possible."""

Publish = Callable[[Quote], object]
"""Where ticks go (e.g. ``QuoteBook.publish``); its return value is ignored."""

MAX_BATCH: Final = 1000
"""Most ticks published between two yields to the event loop."""

_UNLIMITED: Final = sys.maxsize
_time_of: Final = attrgetter("time_ms")


def due_offset_s(tick_ms: int, anchor_ms: int, speed: float) -> float:
    """Wall-clock seconds after the replay started at which a tick is due.

    ``tick_ms`` and ``anchor_ms`` (the first replayed tick) are UTC ms; ``speed`` is a
    multiple of real time.
    """
    return (tick_ms - anchor_ms) / (1000.0 * speed)


def horizon_ms(elapsed_s: float, anchor_ms: int, speed: float) -> int:
    """Latest tick time (UTC ms) that is due ``elapsed_s`` wall seconds after the start.

    The inverse of :func:`due_offset_s`, computed from the start every time so that
    rounding never accumulates.
    """
    return anchor_ms + math.floor(elapsed_s * speed * 1000.0)


@dataclass(slots=True)
class ReplayStats:
    """Counters of one replay. Times are UTC ms of published ticks.

    ``loops`` counts how many times the range was started again (``loop = true``).
    """

    ticks_published: int = 0
    crossed_dropped: int = 0
    crossed_by_symbol: dict[str, int] = field(default_factory=dict)
    first_time_ms: int | None = None
    last_time_ms: int | None = None
    loops: int = 0


class ReplayFeed:
    """Replays ``days`` UTC calendar days from ``start`` of ``symbols`` from ``data_dir``.

    ``speed`` is a multiple of real time or ``"max"``; with ``loop`` the range starts
    again when it ends, its tick times shifted forward by the range's length in whole
    days so that market time never goes back. ``sleep`` and ``monotonic`` (seconds) pace
    :meth:`run`; tests replace them.

    Raises ``ValueError`` when ``data_dir`` does not exist, a symbol is unknown, or a
    symbol has no data in the requested days (the message lists the days available).
    Nothing is read until the first tick is asked for, and then only lazily.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        symbols: Sequence[str],
        start: date,
        days: int = 1,
        speed: Speed = 1,
        loop: bool = False,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"replay: symbols must be non-empty and unique, got {symbols!r}")
        if days < 1:
            raise ValueError(f"replay: days must be at least 1, got {days}")
        if speed != "max" and (
            isinstance(speed, bool)
            or not isinstance(speed, int | float)
            or not math.isfinite(speed)
            or speed <= 0
        ):
            raise ValueError(f"replay: speed must be a number > 0 or 'max', got {speed!r}")
        root = Path(data_dir).resolve()
        if not root.is_dir():
            raise ValueError(
                f"replay: data_dir {os.fspath(data_dir)!r} does not exist (resolved to {root})"
            )
        self._symbols = list(symbols)
        self._days = [start + timedelta(days=offset) for offset in range(days)]
        self._plan = [entry for symbol in symbols for entry in self._plan_symbol(symbol, root)]
        self._speed = speed
        self._loop = loop
        self._sleep = sleep
        self._monotonic = monotonic
        self.stats = ReplayStats(crossed_by_symbol=dict.fromkeys(self._symbols, 0))
        self._ticks = self._accepted()
        self._pending: Quote | None = None
        self._finished = False
        self._first_time_ms: int | None = None

    @classmethod
    def from_context(cls, context: PluginContext) -> ReplayFeed:
        """Build the feed from the plugin's validated ``[plugins.replay]`` section."""
        config = {**config_defaults(), **context.config}
        return cls(
            data_dir=config["data_dir"],
            symbols=config["symbols"],
            start=date.fromisoformat(config["start"]),
            days=config["days"],
            speed=config["speed"],
            loop=config["loop"],
        )

    def _plan_symbol(self, symbol: str, root: Path) -> list[tuple[Source, list[date]]]:
        """Which source serves which requested day of ``symbol`` (first source wins)."""
        sources = sources_for(symbol, root)
        plan: list[tuple[Source, list[date]]] = []
        claimed: set[date] = set()
        for source in sources:
            available = source.available_dates()
            days = [day for day in self._days if day in available and day not in claimed]
            if days:
                plan.append((source, days))
                claimed.update(days)
        if not claimed:
            available_days = set().union(*(source.available_dates() for source in sources))
            if available_days:
                where = f"available: {_describe_days(sorted(available_days))}"
            else:
                missing = ", ".join(str(path) for src in sources for path in src.paths)
                where = f"no data files found (looked for {missing})"
            raise ValueError(f"replay: no {symbol} data for {_describe_days(self._days)}; {where}")
        return plan

    # --- the tick stream ---------------------------------------------------------------

    def _passes(self) -> Iterator[Quote]:
        """All ticks in time order, crossed ones included; endless when looping."""
        span_ms = len(self._days) * DAY_MS
        shift_ms = 0
        while True:
            streams = [source.quotes(days, shift_ms) for source, days in self._plan]
            yield from streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_time_of)
            if not self._loop:
                return
            shift_ms += span_ms
            self.stats.loops += 1

    def _accepted(self) -> Iterator[Quote]:
        """The ticks that may be served: crossed quotes are counted and dropped here."""
        stats = self.stats
        crossed_by_symbol = stats.crossed_by_symbol
        for quote in self._passes():
            if quote.ask < quote.bid:
                stats.crossed_dropped += 1
                crossed_by_symbol[quote.symbol] += 1
                continue
            yield quote

    def _peek(self) -> Quote | None:
        if self._pending is None and not self._finished:
            self._pending = next(self._ticks, None)
            self._finished = self._pending is None
            if self._pending is not None and self._first_time_ms is None:
                self._first_time_ms = self._pending.time_ms
        return self._pending

    def _publish_until(self, limit_ms: int, max_count: int, publish: Publish) -> int:
        """Publish up to ``max_count`` pending ticks with ``time_ms <= limit_ms``."""
        start = pending = self._peek()
        ticks = self._ticks
        count = 0
        last: Quote | None = None
        try:
            while pending is not None and count < max_count and pending.time_ms <= limit_ms:
                last = pending
                pending = next(ticks, None)
                publish(last)
                count += 1
        finally:
            if count:
                stats = self.stats
                stats.ticks_published += count
                if stats.first_time_ms is None and start is not None:
                    stats.first_time_ms = start.time_ms
                if last is not None:
                    stats.last_time_ms = last.time_ms
            self._pending = pending
            self._finished = pending is None
        return count

    # --- public API --------------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Symbols this feed quotes, in configuration order."""
        return list(self._symbols)

    def dates(self) -> list[date]:
        """The requested UTC calendar days (days without data included)."""
        return list(self._days)

    def range_ms(self) -> tuple[int, int]:
        """UTC ms of the first requested day's midnight and of the midnight after the last
        (half-open; the first pass only when looping)."""
        return day_start_ms(self._days[0]), day_start_ms(self._days[-1]) + DAY_MS

    def first_time_ms(self) -> int | None:
        """UTC ms of the range's first servable tick (None when there is none)."""
        if self._first_time_ms is None:
            self._peek()
        return self._first_time_ms

    def next_time_ms(self) -> int | None:
        """UTC ms of the next tick to be published, or None at the end of the replay."""
        quote = self._peek()
        return None if quote is None else quote.time_ms

    @property
    def finished(self) -> bool:
        """True once every tick has been published (never when looping)."""
        return self._peek() is None

    def step_until(self, time_ms: int, publish: Publish) -> int:
        """Publish every remaining tick with ``time_ms`` (UTC ms) at or before ``time_ms``.

        Synchronous, for simulators that drive market time themselves. Returns how many
        ticks were published; a later call (or :meth:`run`) resumes where this one ended.
        """
        return self._publish_until(time_ms, _UNLIMITED, publish)

    async def run(self, publish: Publish) -> None:
        """Publish the remaining ticks paced by ``speed`` until the replay ends.

        With a numeric speed, a tick is published at wall time
        ``t0 + (tick_time - first_tick_time) / speed``, where ``t0`` is when ``run``
        starts and ``first_tick_time`` the first tick it publishes; ticks that are due
        together are published in one batch (at most :data:`MAX_BATCH` at a time). With
        ``"max"`` ticks go out as fast as possible, yielding to the event loop every
        :data:`MAX_BATCH` ticks. Returns at the end of the range (never when looping).
        """
        speed = self._speed
        if speed == "max":
            while self._publish_until(_UNLIMITED, MAX_BATCH, publish):
                await self._sleep(0)
            return
        first = self._peek()
        if first is None:
            return
        anchor_ms = first.time_ms
        started = self._monotonic()
        while (quote := self._peek()) is not None:
            delay = started + due_offset_s(quote.time_ms, anchor_ms, speed) - self._monotonic()
            if delay > 0:
                await self._sleep(delay)
            limit_ms = horizon_ms(self._monotonic() - started, anchor_ms, speed)
            self._publish_until(max(quote.time_ms, limit_ms), MAX_BATCH, publish)
            if delay <= 0:
                await self._sleep(0)

    def health(self) -> dict[str, object]:
        """A small status summary for health endpoints (times in UTC ms)."""
        stats = self.stats
        return {
            "feed": "replay",
            "symbols": self.symbols(),
            "speed": self._speed,
            "loop": self._loop,
            "finished": self._finished,
            "ticks_published": stats.ticks_published,
            "crossed_dropped": stats.crossed_dropped,
            "crossed_by_symbol": dict(stats.crossed_by_symbol),
            "first_time_ms": stats.first_time_ms,
            "last_time_ms": stats.last_time_ms,
            "loops": stats.loops,
        }


def _describe_days(days: Iterable[date]) -> str:
    """Sorted days as runs of consecutive days: ``2014-05-01..2014-05-02, 2014-05-04``."""
    runs: list[list[date]] = []
    for day in days:
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs)
