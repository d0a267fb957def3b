"""Feed health and the price outage log (seed section 14), on the market clock.

A symbol is *stale* when its last tick is more than its instrument's
``stale_threshold_ms`` old (default 10,000 ms, seed section 14). The
:class:`OutageDetector` turns staleness into rows: an outage starts at
``last tick + threshold`` and ends at the next tick; its duration is the difference.
It is driven by the market clock, so replayed data with its natural gaps produces the
outages those gaps would have produced live. Detection runs on every tick (a gap
closes when the symbol ticks again) and on :meth:`OutageDetector.scan`, which opens
an outage for a symbol that stays silent while market time moves on (called at most
once per ``scan_every_ms`` of market time from the tick path, and by a wall-clock
timer for feeds that do not drive the clock).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.marketdata.bars import to_utc, utc_ms
from brokerkernel.kernel.marketdata.models import PriceOutage
from brokerkernel.kernel.pricing import Quote, QuoteBook
from brokerkernel.kernel.storage.models import Instrument

DEFAULT_STALE_THRESHOLD_MS: Final = 10_000
"""``stale_threshold_ms`` of a symbol without an instrument row (seed section 14)."""

_OUTAGE_NAMESPACE: Final = uuid.UUID("6f0c8a53-3b0e-4d1a-9a57-2f4d0b8e6c11")


@dataclass(frozen=True, slots=True)
class InstrumentState:
    """What the price path needs of an instrument: whether it is active (inactive
    symbols are not served) and its ``stale_threshold_ms``."""

    is_active: bool
    stale_threshold_ms: int


class InstrumentIndex:
    """Symbol -> :class:`InstrumentState`, read from the instrument catalog.

    Lookups are synchronous; :meth:`load` swaps in a fresh copy (the market data
    service reloads it periodically and on ``platform.config_changed`` events).
    """

    def __init__(self) -> None:
        self._states: dict[str, InstrumentState] = {}

    async def load(self, session: AsyncSession) -> None:
        """Read every instrument's activity and threshold and swap them in."""
        rows = await session.execute(
            select(Instrument.symbol, Instrument.is_active, Instrument.stale_threshold_ms)
        )
        self._states = {
            symbol: InstrumentState(bool(active), int(threshold))
            for symbol, active, threshold in rows
        }

    def is_active(self, symbol: str) -> bool:
        """False only for a catalog instrument marked inactive (feed-only symbols,
        e.g. conversion pairs, are served)."""
        state = self._states.get(symbol)
        return state is None or state.is_active

    def threshold_ms(self, symbol: str) -> int:
        """``stale_threshold_ms`` of ``symbol`` (10,000 when not in the catalog)."""
        state = self._states.get(symbol)
        return DEFAULT_STALE_THRESHOLD_MS if state is None else state.stale_threshold_ms

    def known(self, symbol: str) -> bool:
        """Whether the instrument catalog lists ``symbol``."""
        return symbol in self._states


@dataclass(slots=True)
class Outage:
    """A staleness window of ``symbol``; times in UTC ms, ``ended_ms`` None while open."""

    symbol: str
    last_tick_ms: int
    threshold_ms: int
    ended_ms: int | None = None

    @property
    def id(self) -> str:
        """Stable per symbol and last tick, so a second writer updates the same row."""
        return str(uuid.uuid5(_OUTAGE_NAMESPACE, f"{self.symbol}:{self.last_tick_ms}"))

    @property
    def started_ms(self) -> int:
        """When the symbol went stale: last tick + threshold (UTC ms)."""
        return self.last_tick_ms + self.threshold_ms

    @property
    def duration_ms(self) -> int | None:
        """``ended_ms`` - ``started_ms``; None while open."""
        return None if self.ended_ms is None else self.ended_ms - self.started_ms


class OutageDetector:
    """Opens and closes :class:`Outage` records from ticks and the market clock.

    ``threshold_ms(symbol)`` gives each symbol's staleness threshold. Changed records
    wait in :meth:`take_changes` for the writer. A symbol's first tick opens nothing:
    staleness is measured from a known last tick.
    """

    def __init__(
        self,
        clock: MarketClock,
        index: InstrumentIndex,
        scan_every_ms: int = 1000,
    ) -> None:
        self._clock = clock
        self._index = index
        self._scan_every_ms = scan_every_ms
        self._last: dict[str, int] = {}
        self._open: dict[str, Outage] = {}
        self._changes: dict[str, Outage] = {}
        self._next_scan_ms = 0

    def on_tick(self, quote: Quote) -> None:
        """A :class:`QuoteBook` subscriber: close the symbol's outage, or record the gap
        it just ended, then scan when market time has moved on enough."""
        symbol, time_ms = quote.symbol, quote.time_ms
        last = self._last.get(symbol)
        if last is None or time_ms > last:
            self._last[symbol] = time_ms
            if last is not None:
                outage = self._open.pop(symbol, None)
                if outage is None:
                    threshold = self._index.threshold_ms(symbol)
                    if time_ms - last > threshold:
                        outage = Outage(symbol, last, threshold)
                if outage is not None:
                    outage.ended_ms = max(time_ms, outage.started_ms)
                    self._changes[outage.id] = outage
        now_ms = self._clock.now_ms()
        if now_ms >= self._next_scan_ms:
            self.scan(now_ms)

    def scan(self, now_ms: int | None = None) -> None:
        """Open an outage for every symbol silent for longer than its threshold."""
        now_ms = self._clock.now_ms() if now_ms is None else now_ms
        self._next_scan_ms = now_ms + self._scan_every_ms
        for symbol, last in self._last.items():
            if symbol not in self._open:
                threshold = self._index.threshold_ms(symbol)
                if now_ms - last > threshold:
                    outage = Outage(symbol, last, threshold)
                    self._open[symbol] = outage
                    self._changes[outage.id] = outage

    def take_changes(self) -> list[Outage]:
        """Outages opened or closed since the last call (to persist)."""
        changes = list(self._changes.values())
        self._changes = {}
        return changes

    def give_back(self, changes: Iterable[Outage]) -> None:
        """Return outages whose write failed, for the next batch."""
        for outage in changes:
            self._changes.setdefault(outage.id, outage)

    def resume(self, open_outages: Sequence[Outage]) -> None:
        """Continue outages left open by a previous run: the symbol's next tick closes them."""
        for outage in open_outages:
            self._open[outage.symbol] = outage
            self._last[outage.symbol] = outage.last_tick_ms


# --- persistence and queries ----------------------------------------------------------------


def _outage_row(outage: Outage) -> dict[str, Any]:
    return {
        "id": outage.id,
        "symbol": outage.symbol,
        "started_at": to_utc(outage.started_ms),
        "ended_at": None if outage.ended_ms is None else to_utc(outage.ended_ms),
        "duration_ms": outage.duration_ms,
        "threshold_ms": outage.threshold_ms,
        "last_tick_at": to_utc(outage.last_tick_ms),
    }


async def write_outages(session: AsyncSession, outages: Sequence[Outage]) -> None:
    """Insert or update ``outages`` by id (closing an open row sets its end)."""
    if not outages:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(PriceOutage)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={name: statement.excluded[name] for name in ("ended_at", "duration_ms")},
    )
    await session.execute(statement, [_outage_row(outage) for outage in outages])


async def open_outages(session: AsyncSession) -> list[Outage]:
    """Outages without an end, as left by a previous run."""
    rows = await session.scalars(select(PriceOutage).where(PriceOutage.ended_at.is_(None)))
    return [Outage(row.symbol, utc_ms(row.last_tick_at), row.threshold_ms) for row in rows]


async def list_outages(session: AsyncSession, symbol: str | None, limit: int) -> list[PriceOutage]:
    """The outage log, newest first, optionally of one ``symbol`` (exact match)."""
    query = select(PriceOutage)
    if symbol is not None:
        query = query.where(PriceOutage.symbol == symbol)
    query = query.order_by(PriceOutage.started_at.desc(), PriceOutage.symbol).limit(limit)
    return list((await session.scalars(query)).all())


def freshness(
    quotes: QuoteBook, clock: MarketClock, index: InstrumentIndex, symbols: Iterable[str]
) -> dict[str, Any]:
    """The seed's ``GET /api/prices/health`` body for ``symbols`` plus every symbol
    that has a quote (inactive instruments left out): per symbol ``last_tick_ms``
    (UTC ms, null before the first tick), ``age_ms`` by the market clock, ``stale``
    (older than ``threshold_ms``, or never ticked); ``status`` ``ok`` when none is
    stale, else ``degraded``."""
    now_ms = clock.now_ms()
    report: dict[str, dict[str, Any]] = {}
    listed = {*symbols, *(quote.symbol for quote in quotes.all())}
    for symbol in sorted(symbol for symbol in listed if index.is_active(symbol)):
        quote = quotes.get(symbol)
        threshold = index.threshold_ms(symbol)
        age = None if quote is None else max(0, now_ms - quote.time_ms)
        report[symbol] = {
            "last_tick_ms": None if quote is None else quote.time_ms,
            "age_ms": age,
            "stale": age is None or age > threshold,
            "threshold_ms": threshold,
        }
    stale = sum(1 for item in report.values() if item["stale"])
    return {
        "status": "degraded" if stale else "ok",
        "symbols": report,
        "summary": {"total": len(report), "stale": stale, "healthy": len(report) - stale},
        "timestamp": clock.now(),
    }
