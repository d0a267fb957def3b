"""OHLC bars built from ticks as they arrive (seed section 14, ``/api/prices/history``).

:class:`BarBuilder` is a :class:`~brokerkernel.kernel.pricing.QuoteBook` subscriber.
Per tick it touches one bar: the symbol's current M1 bar (a comparison, a max/min and
a counter). When a tick starts a new minute, the finished M1 bar is folded into the
current M5, M15, H1, H4 and D1 bars, which are therefore exact aggregates of M1 bars
(OHLC aggregation is associative: first open, highest high, lowest low, last close,
summed volume). Bars align to the UTC epoch: H4 bars open at 00, 04, ... 20 UTC and
D1 bars at 00:00 UTC. Prices are the configured side of the quote (bid by default,
as MT5 charts draw), ``Decimal`` in the quote currency; ``volume`` counts ticks.

Finished bars and the current bars of symbols that ticked are handed out by
:meth:`BarBuilder.take_changes` and persisted in batches (:func:`write_bars`, an
upsert, so writing a bar twice is harmless). At start :meth:`BarBuilder.resume`
continues the latest persisted bars, so a restart in the middle of a bar loses no
more than the ticks since the last write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

from sqlalchemy import and_, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.marketdata.models import PriceBar
from brokerkernel.kernel.pricing import Quote

TIMEFRAMES: Final[dict[str, int]] = {
    "M1": 60_000,
    "M5": 300_000,
    "M15": 900_000,
    "H1": 3_600_000,
    "H4": 14_400_000,
    "D1": 86_400_000,
}
"""Timeframe name -> span in milliseconds (seed section 14)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
HIGHER: Final[tuple[str, ...]] = tuple(name for name in TIMEFRAMES if name != "M1")
_M1_MS: Final = TIMEFRAMES["M1"]


def bar_start_ms(time_ms: int, timeframe: str) -> int:
    """UTC ms of the start of the ``timeframe`` bar holding ``time_ms`` (UTC ms)."""
    span = TIMEFRAMES[timeframe]
    return time_ms - time_ms % span


def utc_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime (exact integer arithmetic)."""
    return (moment - _EPOCH) // _ONE_MS


def to_utc(time_ms: int) -> datetime:
    """The aware UTC datetime of ``time_ms`` (UTC epoch milliseconds), exactly."""
    return _EPOCH + timedelta(milliseconds=time_ms)


@dataclass(slots=True)
class Bar:
    """One OHLC bar: ``open_ms`` its start (UTC ms), prices in quote currency,
    ``volume`` the number of ticks."""

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    def absorb(self, later: Bar) -> None:
        """Extend this bar with a later bar of the same period (or a later part of it)."""
        if later.high > self.high:
            self.high = later.high
        if later.low < self.low:
            self.low = later.low
        self.close = later.close
        self.volume += later.volume


@dataclass(slots=True)
class _SymbolBars:
    """A symbol's live bars: the current M1 bar and, per higher timeframe, the
    aggregate of that bar's finished M1 bars (None before the first)."""

    m1: Bar | None = None
    #: Ticks of ``m1`` already contained in the higher aggregates (a resumed bar).
    folded: int = 0
    higher: dict[str, Bar | None] = field(default_factory=lambda: dict.fromkeys(HIGHER))


BarKey = tuple[str, str, int]
"""(symbol, timeframe, open_ms)."""


class BarBuilder:
    """Builds M1..D1 bars of every symbol from the ticks it is given.

    ``price`` is ``"bid"``, ``"mid"`` or ``"ask"``. A tick older than the symbol's
    current M1 bar is counted in ``late_ticks`` and ignored.
    """

    def __init__(self, price: str = "bid") -> None:
        self._price: Callable[[Quote], Decimal] = attrgetter(price)
        self._live: dict[str, _SymbolBars] = {}
        self._finished: dict[BarKey, Bar] = {}
        self._touched: set[str] = set()
        self.late_ticks = 0

    # --- the hot path ---------------------------------------------------------------

    def on_tick(self, quote: Quote) -> None:
        """Add one tick (a :class:`QuoteBook` subscriber)."""
        price = self._price(quote)
        time_ms = quote.time_ms
        symbol = quote.symbol
        live = self._live.get(symbol)
        m1 = live.m1 if live is not None else None
        if m1 is not None and m1.open_ms <= time_ms < m1.open_ms + _M1_MS:
            if price > m1.high:
                m1.high = price
            elif price < m1.low:
                m1.low = price
            m1.close = price
            m1.volume += 1
        else:
            if live is None:
                live = self._live[symbol] = _SymbolBars()
            if m1 is not None and time_ms < m1.open_ms:
                self.late_ticks += 1
                return
            self._roll(symbol, live, time_ms, price)
        self._touched.add(symbol)

    def _roll(self, symbol: str, live: _SymbolBars, time_ms: int, price: Decimal) -> None:
        """Finish the current M1 bar (folding it into the higher bars) and open the
        bar of ``time_ms``."""
        m1 = live.m1
        if m1 is not None:
            self._finished[(symbol, "M1", m1.open_ms)] = m1
            self._fold(symbol, live, m1, time_ms)
        live.m1 = Bar(time_ms - time_ms % _M1_MS, price, price, price, price, 1)
        live.folded = 0

    def _fold(self, symbol: str, live: _SymbolBars, m1: Bar, next_ms: int) -> None:
        """Add the finished ``m1`` to each higher aggregate; an aggregate whose period
        ends before ``next_ms`` is finished too."""
        part = replace(m1, volume=m1.volume - live.folded)
        for timeframe in HIGHER:
            span = TIMEFRAMES[timeframe]
            bar = live.higher[timeframe]
            if bar is None or m1.open_ms >= bar.open_ms + span:
                bar = replace(part, open_ms=m1.open_ms - m1.open_ms % span)
                live.higher[timeframe] = bar
            else:
                bar.absorb(part)
            if next_ms >= bar.open_ms + span:
                self._finished[(symbol, timeframe, bar.open_ms)] = bar

    # --- views ----------------------------------------------------------------------

    def current(self, symbol: str, timeframe: str) -> list[Bar]:
        """The symbol's in-progress bars of ``timeframe`` (copies, oldest first): the
        aggregate of its finished M1 bars merged with the current M1 bar, or two bars
        when the current minute already belongs to the next period."""
        live = self._live.get(symbol)
        if live is None or live.m1 is None:
            return []
        m1 = live.m1
        if timeframe == "M1":
            return [replace(m1)]
        span = TIMEFRAMES[timeframe]
        bar = live.higher[timeframe]
        part = replace(m1, volume=m1.volume - live.folded)
        if bar is not None and m1.open_ms < bar.open_ms + span:
            merged = replace(bar)
            merged.absorb(part)
            return [merged]
        started = replace(part, open_ms=m1.open_ms - m1.open_ms % span)
        return [started] if bar is None else [replace(bar), started]

    def pending(self, symbol: str, timeframe: str) -> list[Bar]:
        """Bars of ``symbol``/``timeframe`` not yet handed out by :meth:`take_changes`,
        plus the in-progress ones (oldest first; at most one per ``open_ms``)."""
        bars = {
            key[2]: replace(bar)
            for key, bar in self._finished.items()
            if key[0] == symbol and key[1] == timeframe
        }
        for bar in self.current(symbol, timeframe):
            bars[bar.open_ms] = bar
        return [bars[open_ms] for open_ms in sorted(bars)]

    def take_changes(self) -> list[tuple[str, str, Bar]]:
        """Every bar finished or changed since the last call, as (symbol, timeframe,
        bar) copies to persist; in-progress bars are included each time they changed."""
        changes: dict[BarKey, Bar] = {key: replace(bar) for key, bar in self._finished.items()}
        self._finished = {}
        for symbol in self._touched:
            for timeframe in TIMEFRAMES:
                for bar in self.current(symbol, timeframe):
                    changes[(symbol, timeframe, bar.open_ms)] = bar
        self._touched = set()
        return [(symbol, timeframe, bar) for (symbol, timeframe, _), bar in changes.items()]

    def give_back(self, changes: Iterable[tuple[str, str, Bar]]) -> None:
        """Return changes whose write failed; they go out with the next batch (newer
        values of the same bars win)."""
        for symbol, timeframe, bar in changes:
            self._finished.setdefault((symbol, timeframe, bar.open_ms), bar)

    # --- restart --------------------------------------------------------------------

    def resume(self, latest: Sequence[tuple[str, str, Bar]]) -> None:
        """Continue from the latest persisted bar of each symbol and timeframe.

        The persisted higher bars already contain the persisted M1 bar, so its ticks
        are marked as folded and are not added again when it finishes.
        """
        for symbol, timeframe, bar in latest:
            live = self._live.setdefault(symbol, _SymbolBars())
            if timeframe == "M1":
                live.m1 = replace(bar)
                live.folded = bar.volume
            else:
                live.higher[timeframe] = replace(bar)


# --- persistence ----------------------------------------------------------------------


def _row(symbol: str, timeframe: str, bar: Bar) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "open_time": to_utc(bar.open_ms),
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
    }


def _bar(row: PriceBar) -> Bar:
    return Bar(utc_ms(row.open_time), row.open, row.high, row.low, row.close, row.volume)


async def write_bars(session: AsyncSession, changes: Sequence[tuple[str, str, Bar]]) -> None:
    """Insert or update ``changes`` (PostgreSQL and SQLite ``ON CONFLICT DO UPDATE``)."""
    if not changes:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(PriceBar)
    statement = statement.on_conflict_do_update(
        index_elements=["symbol", "timeframe", "open_time"],
        set_={
            name: statement.excluded[name] for name in ("open", "high", "low", "close", "volume")
        },
    )
    await session.execute(statement, [_row(*change) for change in changes])


async def latest_bars(session: AsyncSession) -> list[tuple[str, str, Bar]]:
    """The newest persisted bar of every symbol and timeframe."""
    newest = (
        select(PriceBar.symbol, PriceBar.timeframe, func.max(PriceBar.open_time).label("at"))
        .group_by(PriceBar.symbol, PriceBar.timeframe)
        .subquery()
    )
    rows = await session.scalars(
        select(PriceBar).join(
            newest,
            and_(
                PriceBar.symbol == newest.c.symbol,
                PriceBar.timeframe == newest.c.timeframe,
                PriceBar.open_time == newest.c.at,
            ),
        )
    )
    return [(row.symbol, row.timeframe, _bar(row)) for row in rows]


async def history(
    session: AsyncSession,
    symbol: str,
    timeframe: str,
    *,
    from_ms: int | None,
    to_ms: int | None,
    limit: int,
    pending: Sequence[Bar] = (),
) -> list[Bar]:
    """Bars of ``symbol``/``timeframe`` with ``from_ms <= open_ms <= to_ms`` (UTC ms,
    either bound optional), oldest first, at most ``limit``.

    With only ``from_ms`` the first ``limit`` bars from it are returned (paging
    forward); otherwise the last ``limit`` bars up to ``to_ms`` (or now), as a chart
    loads. ``pending`` (bars not yet persisted) replace stored bars of the same time.
    """
    query = select(PriceBar).where(PriceBar.symbol == symbol, PriceBar.timeframe == timeframe)
    if from_ms is not None:
        query = query.where(PriceBar.open_time >= to_utc(from_ms))
    if to_ms is not None:
        query = query.where(PriceBar.open_time <= to_utc(to_ms))
    forward = from_ms is not None and to_ms is None
    order = PriceBar.open_time.asc() if forward else PriceBar.open_time.desc()
    rows = await session.scalars(query.order_by(order).limit(limit))
    bars = {bar.open_ms: bar for bar in map(_bar, rows)}
    for bar in pending:
        if (from_ms is None or bar.open_ms >= from_ms) and (to_ms is None or bar.open_ms <= to_ms):
            bars[bar.open_ms] = bar
    ordered = [bars[open_ms] for open_ms in sorted(bars)]
    return ordered[:limit] if forward else ordered[-limit:]
