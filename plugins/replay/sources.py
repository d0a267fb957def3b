"""Readers of the recorded market data sets, one class per file layout.

A :class:`Source` holds one symbol's quotes in one data set (see
``shared/data/market/README.md``). :meth:`Source.quotes` yields them lazily for a list
of UTC days — zip members and CSV files are streamed line by line, never loaded whole —
in file order (every data set is sorted by time). Prices are parsed to ``Decimal``
straight from the text, in the symbol's quote currency; times are UTC epoch
milliseconds. Crossed quotes (ask < bid) are yielded as recorded: the feed drops them.
"""

from __future__ import annotations

import io
import re
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

from brokerkernel.kernel.pricing import Quote

PROVIDER: Final = "replay"
"""``Quote.provider`` of every replayed tick."""

DAY_MS: Final = 86_400_000
"""One UTC day in milliseconds."""

BAR_CLOSE_OFFSET_MS: Final = 59_999
"""A one-minute bar's close is replayed this many ms after the bar's open time."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL: Final = _EPOCH.date().toordinal()
_ONE_MS: Final = timedelta(milliseconds=1)
_DAILY_ZIP: Final = re.compile(r"^(\d{4})(\d{2})(\d{2})_quote\.zip$")


def day_start_ms(day: date) -> int:
    """UTC epoch milliseconds of ``day`` at 00:00 UTC."""
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY_MS


def _timestamp_ms(text: str) -> int:
    """UTC epoch milliseconds (floored) of an ISO 8601 timestamp with a UTC offset."""
    return (datetime.fromisoformat(text) - _EPOCH) // _ONE_MS


def _malformed(path: Path, line: str) -> ValueError:
    return ValueError(f"replay: malformed row in {path}: {line.rstrip()!r}")


class Source(ABC):
    """One symbol's recorded quotes in one data set, stored at ``paths``."""

    def __init__(self, symbol: str, *paths: Path) -> None:
        self.symbol = symbol
        self.paths = paths
        self._dates: frozenset[date] | None = None

    def available_dates(self) -> frozenset[date]:
        """UTC days this source has quotes for (empty when its files are missing)."""
        if self._dates is None:
            self._dates = self._scan_dates() if all(p.exists() for p in self.paths) else frozenset()
        return self._dates

    @abstractmethod
    def _scan_dates(self) -> frozenset[date]:
        """Read which UTC days the (existing) files cover."""

    @abstractmethod
    def quotes(self, days: Sequence[date], shift_ms: int = 0) -> Iterator[Quote]:
        """Yield the quotes of ``days`` (ascending, all in :meth:`available_dates`).

        Quotes come in file order with ``time_ms`` (UTC ms) moved forward by ``shift_ms``.
        """


class _DailyZipSource(Source):
    """QuantConnect Lean layout: ``YYYYMMDD_quote.zip`` per UTC day, one headerless CSV
    inside whose first column is milliseconds since that day's midnight."""

    def _scan_dates(self) -> frozenset[date]:
        found = (_DAILY_ZIP.match(entry.name) for entry in self.paths[0].iterdir())
        return frozenset(date(int(m[1]), int(m[2]), int(m[3])) for m in found if m)

    def quotes(self, days: Sequence[date], shift_ms: int = 0) -> Iterator[Quote]:
        for day in days:
            path = self.paths[0] / f"{day:%Y%m%d}_quote.zip"
            with zipfile.ZipFile(path) as archive, archive.open(archive.infolist()[0]) as member:
                lines = io.TextIOWrapper(member, encoding="ascii")
                yield from self._parse(lines, day_start_ms(day) + shift_ms, path)

    @abstractmethod
    def _parse(self, lines: Iterable[str], base_ms: int, path: Path) -> Iterator[Quote]:
        """Quotes of one day's CSV lines; ``base_ms`` is the day's (shifted) midnight."""


class LeanTickSource(_DailyZipSource):
    """Lean tick quotes, rows ``ms_since_midnight,bid,ask``.

    The milliseconds may be fractional (XAUUSD: ``6.949``); ``time_ms`` is their floor
    and the file order is kept.
    """

    def _parse(self, lines: Iterable[str], base_ms: int, path: Path) -> Iterator[Quote]:
        symbol = self.symbol
        line = ""
        try:
            for line in lines:
                ms, bid, ask = line.split(",")
                time_ms = base_ms + int(ms.partition(".")[0])
                yield Quote(symbol, Decimal(bid), Decimal(ask), time_ms, PROVIDER)
        except (ValueError, ArithmeticError) as exc:
            raise _malformed(path, line) from exc


class LeanMinuteQuoteSource(_DailyZipSource):
    """Lean one-minute quote bars, rows
    ``ms_since_midnight,bidO,bidH,bidL,bidC,bidSize,askO,askH,askL,askC,askSize``.

    Each bar becomes two quotes: the open pair at the bar time and the close pair
    :data:`BAR_CLOSE_OFFSET_MS` later.
    """

    def _parse(self, lines: Iterable[str], base_ms: int, path: Path) -> Iterator[Quote]:
        symbol = self.symbol
        line = ""
        try:
            for line in lines:
                ms, bid_o, _, _, bid_c, _, ask_o, _, _, ask_c, _ = line.split(",")
                time_ms = base_ms + int(ms)
                yield Quote(symbol, Decimal(bid_o), Decimal(ask_o), time_ms, PROVIDER)
                close_ms = time_ms + BAR_CLOSE_OFFSET_MS
                yield Quote(symbol, Decimal(bid_c), Decimal(ask_c), close_ms, PROVIDER)
        except (ValueError, ArithmeticError) as exc:
            raise _malformed(path, line) from exc


class FxcmMinuteBarSource(Source):
    """FXCM one-minute bars in two aligned CSV files (bid, ask), header
    ``timestamp,open,high,low,close``, timestamps like ``2012-02-01 00:00:00+00:00``.

    Each bid/ask bar pair becomes two quotes: the open pair at the bar time and the
    close pair :data:`BAR_CLOSE_OFFSET_MS` later. The bars were built independently, so
    some pairs are crossed.
    """

    def __init__(self, symbol: str, bid_path: Path, ask_path: Path) -> None:
        super().__init__(symbol, bid_path, ask_path)

    def _scan_dates(self) -> frozenset[date]:
        with self.paths[0].open(encoding="ascii") as bids:
            next(bids, None)
            return frozenset(date.fromisoformat(day) for day in {line[:10] for line in bids})

    def quotes(self, days: Sequence[date], shift_ms: int = 0) -> Iterator[Quote]:
        symbol = self.symbol
        bid_path, ask_path = self.paths
        wanted = {day.isoformat() for day in days}
        first, last = min(wanted), max(wanted)
        with bid_path.open(encoding="ascii") as bids, ask_path.open(encoding="ascii") as asks:
            next(bids, None)
            next(asks, None)
            for bid_line, ask_line in zip(bids, asks, strict=True):
                day = bid_line[:10]
                if day < first or day not in wanted:
                    if day > last:
                        return
                    continue
                try:
                    stamp, bid_o, _, _, bid_c = bid_line.split(",")
                    ask_stamp, ask_o, _, _, ask_c = ask_line.split(",")
                    time_ms = _timestamp_ms(stamp) + shift_ms
                    bid_open, bid_close = Decimal(bid_o), Decimal(bid_c)
                    ask_open, ask_close = Decimal(ask_o), Decimal(ask_c)
                except (ValueError, ArithmeticError) as exc:
                    raise _malformed(bid_path, bid_line + " / " + ask_line) from exc
                if ask_stamp != stamp:
                    raise ValueError(
                        f"replay: {symbol} bid and ask bars out of step: {stamp} in "
                        f"{bid_path}, {ask_stamp} in {ask_path}"
                    )
                yield Quote(symbol, bid_open, ask_open, time_ms, PROVIDER)
                close_ms = time_ms + BAR_CLOSE_OFFSET_MS
                yield Quote(symbol, bid_close, ask_close, close_ms, PROVIDER)


class TrueFxTickSource(Source):
    """TrueFX ticks in one CSV, header ``timestamp,bid,ask``, timestamps like
    ``2013-01-01 22:00:00.295000+00:00`` (``time_ms`` is floored to the millisecond)."""

    def _rows(self) -> Iterator[tuple[datetime, str, str]]:
        with self.paths[0].open(encoding="ascii") as rows:
            next(rows, None)
            for line in rows:
                try:
                    stamp, bid, ask = line.split(",")
                    yield datetime.fromisoformat(stamp), bid, ask
                except ValueError as exc:
                    raise _malformed(self.paths[0], line) from exc

    def _scan_dates(self) -> frozenset[date]:
        return frozenset(moment.astimezone(UTC).date() for moment, _, _ in self._rows())

    def quotes(self, days: Sequence[date], shift_ms: int = 0) -> Iterator[Quote]:
        symbol = self.symbol
        wanted = set(days)
        for moment, bid, ask in self._rows():
            if moment.astimezone(UTC).date() in wanted:
                time_ms = (moment - _EPOCH) // _ONE_MS + shift_ms
                yield Quote(symbol, Decimal(bid), Decimal(ask), time_ms, PROVIDER)


def _fxcm(root: Path, symbol: str, year: int) -> FxcmMinuteBarSource:
    folder = root / "fxcm_m1_bidask_nautilus"
    stem = f"{symbol.lower()}-m1"
    return FxcmMinuteBarSource(
        symbol, folder / f"{stem}-bid-{year}.csv", folder / f"{stem}-ask-{year}.csv"
    )


_LAYOUT: Final[dict[str, Callable[[Path], list[Source]]]] = {
    "EURUSD": lambda root: [LeanTickSource("EURUSD", root / "oanda_eurusd_tick_201405_lean")],
    "XAUUSD": lambda root: [LeanTickSource("XAUUSD", root / "oanda_xauusd_tick_201405_lean")],
    "GBPUSD": lambda root: [_fxcm(root, "GBPUSD", 2012)],
    "USDJPY": lambda root: [
        TrueFxTickSource("USDJPY", root / "truefx_usdjpy_ticks_nautilus.csv"),
        _fxcm(root, "USDJPY", 2013),
    ],
    "BTCUSD": lambda root: [
        LeanMinuteQuoteSource("BTCUSD", root / "coinbase_btcusd_m1_quote_lean")
    ],
}

SYMBOLS: Final = tuple(_LAYOUT)
"""Symbols the recorded data sets cover."""


def sources_for(symbol: str, data_dir: Path) -> list[Source]:
    """The sources of ``symbol`` under ``data_dir``, in priority order.

    Raises ``ValueError`` for a symbol no data set covers.
    """
    try:
        layout = _LAYOUT[symbol]
    except KeyError:
        raise ValueError(
            f"replay: unknown symbol {symbol!r}; replayable symbols: {', '.join(SYMBOLS)}"
        ) from None
    return layout(data_dir)
