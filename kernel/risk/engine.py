"""The vectorised risk engine: re-marks open positions on every tick and watches equity.

ARCHITECTURE.md, "Risk engine (the hot path)". One :class:`RiskEngine` is one shard of
accounts with one writer (the event-loop thread that feeds it ticks and changes); the
kernel shards by login and runs one engine per shard. Floats live only in here; the
Decimal money it is given stays authoritative, and a :class:`~.rules.Crossing` sends
the kernel to the exact Decimal path.

Layout
------
* **Accounts** — login → slot; the floating P&L per slot in a float64 array; the
  Decimal money, the watched levels and the account's *band* in a Python object.
* **Books** — open positions in growable NumPy arrays, one book per (profit currency,
  account currency, conversion kind) and in it one contiguous **segment** per symbol,
  with one row per account: the account's slot, its long units and short units (sums
  of volume x contract size, shorts negative), its cost (sum of units x open price),
  the marked profit in the profit currency (``raw``) and in the account currency
  (``pnl``), and a copy of the account's band. A tick of a symbol re-marks only that
  symbol's segments — long positions close on the bid, short ones on the ask::

      raw = long_units x bid + short_units x ask - cost;    pnl = raw x rate

  and writes each row's change into the floating array (a segment holds an account
  once, so a gather/scatter does; measured as fast as ``np.add.at`` and several times
  faster than ``np.bincount`` over the accounts). The rate is one scalar per book:
  1 when the profit currency is the account's; the closing price itself (x price or /
  price) when the symbol's own pair links the two (USDJPY in a USD account), as the
  trading service converts; else an entry of :class:`~.rates.ConversionRates`, and a
  tick of a conversion pair (USDJPY moves JPY → USD) re-marks every book converting
  through it in one pass, ``pnl = raw x rate``. Like the service's valuation, profit
  converts per account, symbol and side, so where the rate depends on the side (the
  own pair's close; the sign of the profit under ``"bid_ask"``) a book holds one side.

  A segment owns a region of its book with room to grow: an account's first position
  in a segment appends a row, removing its last moves the segment's last row into the
  hole (O(1)); a full segment moves to a region twice its size at the end of the book,
  and the book is compacted when abandoned regions exceed half of it. A segment's rows
  are kept nearly in slot order: once the rows appended or moved since its last sort
  exceed a quarter of it, they are sorted again (amortised O(log n) per change), so
  the gather and scatter of a tick walk the floating array in address order (measured
  ~1 ns per row faster than random order on 100,000 accounts, ``bench_prop.py``). Unused rows are
  inert (slot 0, zero units, band ±inf).
* **Levels** — each :class:`~.rules.TickRule` turns an account into equity floors and
  ceilings when the account changes. From the levels and whether each has fired the
  engine derives the band ``(lo, hi)`` of equity in which no level can change state;
  the tick compares the marked rows with their band copies and only accounts out of
  their band are evaluated, level by level, in Python.
* **Trailing floors** — a :attr:`~.rules.LevelKind.TRAILING_FLOOR` (value = offset
  below the peak, optional lock) is ``min(peak - offset, lock)`` with one equity peak
  per account in a float64 array. A new high is not a crossing: after the re-marking
  of a tick, the peaks of the re-marked accounts holding trailing floors are raised
  vectorised (their slots cached per segment; each floating P&L is compared with a
  per-slot band derived from the peak: above it is a new high, whose peak and floor
  are raised vectorised) and their equity is compared with ``min(peak - offset, lock)
  + guard`` (the smallest armed offset and the highest lock of the account: exact for
  one trailing floor and its warnings, conservative otherwise); only accounts at or
  below it are evaluated in Python, as for the band. Changes evaluated in Python
  (fills, balance) raise the peak too.
  :meth:`RiskEngine.peak` / :meth:`RiskEngine.set_peak` read and seed it (the owner
  persists it). The exact peak is the float peak rounded to :data:`PEAK_PLACES`
  decimals (:func:`exact_peak`): the float error of an equity is far below 5e-9, so an
  equity with at most 8 decimals (volume x contract size x price of real instruments)
  peaks exactly; a trailing floor within the guard is decided by ``exact_equity``
  against ``min(exact peak - offset, lock)`` — the same peak the owner's exact path
  reads with :meth:`RiskEngine.peak`, so both decide alike.

Exactness at a level
--------------------
Float equity is within a tiny *guard* of the exact value (1e-9 of the account's
balance + credit + marked position values, + 1e-6). A level closer to equity than
the guard is decided by ``exact_equity(login)`` (Decimal, from the trading service's
state), so an equity exactly on a level is decided exactly, ``<`` or ``<=`` as the
level says; without it, or when it returns None, the float decides. Each tick adds
its change into an account's floating P&L with an error of at most 2**-53 of the
money summed, so the floating array is recomputed from the rows every ``resync_ticks``
ticks (default :data:`RESYNC_TICKS` = 2**20: drift < 1.2e-10 of that money, well
inside the guard; a resync of 300,000 positions takes ~15 ms).

Changes are batched: ``set_account``, ``update_money``, ``add_position``,
``remove_position``, ``resize_position`` and ``refresh`` take effect at once for
:meth:`RiskEngine.equity`, and the changed accounts' levels are recomputed and
evaluated at :meth:`RiskEngine.settle` or at the next tick, whichever comes first — so
a close followed by its balance update is evaluated once, never half-applied.

Crossings are handed to ``sink`` (e.g. ``asyncio.Queue.put_nowait``; it must not
block) as each is found, and returned by :meth:`RiskEngine.on_tick` /
:meth:`RiskEngine.settle`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from brokerkernel.kernel.pricing import currency_pair
from brokerkernel.kernel.risk.rates import UNIT, ConversionRates, FxConversion
from brokerkernel.kernel.risk.rules import AccountSnapshot, Crossing, Level, LevelKind, TickRule

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
ExactEquity = Callable[[int], Decimal | None]
"""``exact_equity(login)``: the account's equity now, exact, or None when unknown."""
Sink = Callable[[Crossing], None]
_Views = tuple[
    IndexArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray
]

PEAK_PLACES: Final = 8
"""Decimals of an equity peak as :func:`exact_peak` reports it."""
RESYNC_TICKS: Final = 1 << 20
"""Default ticks between two recomputations of the floating array from the rows."""
GUARD_RELATIVE: Final = 1e-9
GUARD_ABSOLUTE: Final = 1e-6
_INITIAL_CAPACITY: Final = 16
_SEGMENT_CAPACITY: Final = 4
_INERT: Final = 0
"""The slot of unused rows; never an account's."""
_INF: Final = math.inf
#: Per-slot float arrays and the value of a free slot. ``_trail_lo`` / ``_trail_hi``
#: are a trailing account's band on its *floating* P&L, derived from its ``_trail``
#: row by :meth:`RiskEngine._retrail`: a new equity high when floating > peak - base,
#: at or below the trailing floor when floating <= min(peak - OFF, CAP) - base.
_SLOT_FILL: Final = {
    "_floating": 0.0,
    "_magnitude": 0.0,
    "_trail_lo": -_INF,
    "_trail_hi": -_INF,
}
# columns of the per-slot trailing state and a free slot's row: balance + credit,
# equity peak, and the trailing band — out when equity <= min(peak - OFF, CAP)
_BASE, _PEAK, _OFF, _CAP = 0, 1, 2, 3
_TRAIL_FILL: Final = (0.0, -_INF, _INF, _INF)


def exact_peak(peak: float) -> Decimal:
    """An equity peak (float) as exact money: rounded to :data:`PEAK_PLACES` decimals."""
    return Decimal(repr(round(peak, PEAK_PLACES)))


@dataclass(frozen=True, slots=True)
class WatchedLevel:
    """A level the engine watches for an account and whether it has fired; ``floor``
    is a trailing floor's ``min(peak - offset, lock)`` at the account's peak now (the
    :func:`exact_peak`), None for the other kinds (their ``level.value``)."""

    rule: str
    level: Level
    fired: bool
    floor: Decimal | None = None


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """Counters and sizes of one engine, for metrics.

    ``array_bytes`` is the NumPy memory held (capacity, not only rows in use);
    ``time_ms`` the market time (UTC ms) of the last tick; ``exact_checks`` how often
    a level within the guard was decided by ``exact_equity``; ``dropped_ticks`` ticks
    refused because bid <= 0 or ask < bid.
    """

    accounts: int
    positions: int
    symbols: int
    books: int
    segments: int
    conversion_rates: int
    ticks: int
    dropped_ticks: int
    crossings: int
    exact_checks: int
    resyncs: int
    array_bytes: int
    time_ms: int


class _Symbol:
    __slots__ = ("ask", "bid", "segments")

    def __init__(self) -> None:
        self.bid = math.nan
        self.ask = math.nan
        self.segments: list[_Segment] = []


class _Kind(IntEnum):
    """How a book's rows convert profit to the account currency."""

    UNIT = 0  # profit currency == account currency
    CONVERTED = 1  # through the rates table (the book's rate_profit / rate_loss entries)
    OWN = 2  # the symbol's own pair, at the closing price (one side, one close offset)


_INDEX_COLUMNS: Final = ("acct",)
_FLOAT_COLUMNS: Final = ("bid_units", "ask_units", "cost", "raw", "pnl", "lo", "hi")
_FILL: Final = {"lo": -_INF, "hi": _INF}


class _Book:
    """Rows of one conversion kind, profit currency and account currency (own-pair
    books: also side and close offset), in one segment per symbol. ``n`` rows are
    allocated to segments (live, spare or abandoned — all but live ones inert)."""

    __slots__ = (
        "abandoned",
        "acct",
        "ask_units",
        "bid_units",
        "bounded",
        "cost",
        "exponent",
        "hi",
        "kind",
        "lo",
        "n",
        "offset",
        "pnl",
        "rate_loss",
        "rate_profit",
        "raw",
        "segments",
        "side",
    )

    def __init__(
        self,
        kind: _Kind,
        rate_profit: int = UNIT,
        rate_loss: int = UNIT,
        side: int = 0,
        exponent: int = 0,
        offset: float = 0.0,
    ) -> None:
        self.kind = kind
        self.rate_profit = rate_profit
        self.rate_loss = rate_loss
        self.side = side
        self.exponent = exponent
        self.offset = offset
        self.n = 0
        self.abandoned = 0
        self.bounded = 0  # rows with a finite upper band (else only ``lo`` is compared)
        self.segments: list[_Segment] = []
        capacity = _INITIAL_CAPACITY
        for name in _INDEX_COLUMNS:
            setattr(self, name, np.zeros(capacity, dtype=np.intp))
        for name in _FLOAT_COLUMNS:
            setattr(self, name, np.full(capacity, _FILL.get(name, 0.0)))
        self.acct: IndexArray
        self.bid_units: FloatArray
        self.ask_units: FloatArray
        self.cost: FloatArray
        self.raw: FloatArray
        self.pnl: FloatArray
        self.lo: FloatArray
        self.hi: FloatArray

    def own_rate(self, close: float) -> float:
        """An own-pair book's rate at its closing price: x price or / price."""
        return close if self.exponent > 0 else 1.0 / close

    def rates(self, values: list[float]) -> tuple[float, float]:
        """A converted book's (profit rate, loss rate)."""
        return values[self.rate_profit], values[self.rate_loss]

    def allocate(self, rows: int) -> int:
        """A new region of ``rows`` inert rows at the end; returns its first row."""
        start = self.n
        if start + rows > len(self.acct):
            self._resize(max(2 * len(self.acct), start + rows))
        self.n = start + rows
        return start

    def make_inert(self, start: int, stop: int) -> None:
        for name in _INDEX_COLUMNS:
            getattr(self, name)[start:stop] = 0
        for name in _FLOAT_COLUMNS:
            getattr(self, name)[start:stop] = _FILL.get(name, 0.0)

    def move(self, source: int, target: int, rows: int = 1) -> None:
        """Copy ``rows`` rows from ``source`` to ``target`` (regions must not overlap)."""
        for name in (*_INDEX_COLUMNS, *_FLOAT_COLUMNS):
            array = getattr(self, name)
            array[target : target + rows] = array[source : source + rows]

    def compact(self) -> None:
        """Drop abandoned regions: segments move to consecutive regions, same order."""
        old = {name: getattr(self, name) for name in (*_INDEX_COLUMNS, *_FLOAT_COLUMNS)}
        self.n = 0
        self.abandoned = 0
        self._resize(len(self.acct), fresh=True)
        for segment in self.segments:
            start = self.allocate(segment.capacity)
            for name, array in old.items():
                getattr(self, name)[start : start + segment.count] = array[
                    segment.start : segment.start + segment.count
                ]
            segment.rebase(start)

    def set_band(self, row: int, lo: float, hi: float) -> None:
        self.bounded += int(hi < _INF) - int(float(self.hi[row]) < _INF)
        self.lo[row] = lo
        self.hi[row] = hi

    def _resize(self, capacity: int, fresh: bool = False) -> None:
        for segment in self.segments:
            segment.views = None
        for name in (*_INDEX_COLUMNS, *_FLOAT_COLUMNS):
            old = getattr(self, name)
            new = np.full(capacity, _FILL.get(name, 0), dtype=old.dtype)
            if not fresh:
                new[: len(old)] = old
            setattr(self, name, new)

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in (*_INDEX_COLUMNS, *_FLOAT_COLUMNS))


class _Segment:
    """One symbol's rows in a book: rows ``start .. start + count`` of a region of
    ``capacity`` rows; ``keys[i]`` is the account slot of row ``start + i`` (an account
    has one row per segment)."""

    __slots__ = (
        "book",
        "capacity",
        "count",
        "keys",
        "row_of",
        "shuffled",
        "start",
        "symbol",
        "trail_rows",
        "trail_version",
        "trail_views",
        "trailers",
        "views",
    )

    def __init__(self, book: _Book, symbol: _Symbol) -> None:
        self.book = book
        self.symbol = symbol
        self.start = 0
        self.count = 0
        self.capacity = 0
        self.keys: list[int] = []
        self.row_of: dict[int, int] = {}
        self.shuffled = 0  # rows appended or moved since the rows were last sorted
        self.views: _Views | None = None
        # the live rows (indices in the views) and slots of the accounts holding
        # trailing floors, as of these views and the engine's trailing version
        self.trail_rows: IndexArray = np.zeros(0, dtype=np.intp)
        self.trailers: IndexArray = np.zeros(0, dtype=np.intp)
        self.trail_views: _Views | None = None
        self.trail_version = -1

    def columns(self) -> _Views:
        """Views of the live rows (acct, bid_units, ask_units, cost, raw, pnl, lo, hi),
        cached until rows are added, removed or moved."""
        views = self.views
        if views is None:
            book = self.book
            rows = slice(self.start, self.start + self.count)
            views = self.views = (
                book.acct[rows],
                book.bid_units[rows],
                book.ask_units[rows],
                book.cost[rows],
                book.raw[rows],
                book.pnl[rows],
                book.lo[rows],
                book.hi[rows],
            )
        return views

    def closes(self) -> tuple[float, float]:
        """(long close, short close): bid and ask (+ an own-pair book's offset); NaN
        before the symbol's first tick."""
        offset = self.book.offset
        return self.symbol.bid + offset, self.symbol.ask + offset

    def add_row(self, slot: int, lo: float, hi: float) -> int:
        if self.count == self.capacity:
            self._relocate()
        book = self.book
        row = self.start + self.count
        book.acct[row] = slot
        book.set_band(row, lo, hi)
        self.keys.append(slot)
        self.row_of[slot] = row
        self.count += 1
        self.views = None
        self._shuffle()
        return self.row_of[slot]

    def remove_row(self, slot: int) -> None:
        """Remove an account's row: the segment's last row moves into its place."""
        book = self.book
        row = self.row_of.pop(slot)
        book.set_band(row, -_INF, _INF)
        last = self.start + self.count - 1
        moved = self.keys.pop()
        if row != last:
            book.move(last, row)
            self.keys[row - self.start] = moved
            self.row_of[moved] = row
        book.make_inert(last, last + 1)
        self.count -= 1
        self.views = None
        self._shuffle()

    def _shuffle(self) -> None:
        """Count a row appended or moved; sort the rows by slot when those exceed a
        quarter of the segment."""
        self.shuffled += 1
        if 4 * self.shuffled > self.count + 32:
            self.sort()

    def sort(self) -> None:
        """Put the live rows in slot order (the row of every account changes)."""
        self.shuffled = 0
        book = self.book
        rows = slice(self.start, self.start + self.count)
        order = np.argsort(book.acct[rows], kind="stable")
        for name in (*_INDEX_COLUMNS, *_FLOAT_COLUMNS):
            array = getattr(book, name)
            array[rows] = array[rows][order]
        self.keys = book.acct[rows].tolist()
        self.rebase(self.start)

    def rebase(self, start: int) -> None:
        self.start = start
        self.row_of = {slot: start + i for i, slot in enumerate(self.keys)}
        self.views = None

    def _relocate(self) -> None:
        book = self.book
        capacity = max(_SEGMENT_CAPACITY, 2 * self.capacity)
        start = book.allocate(capacity)
        book.move(self.start, start, self.count)
        book.make_inert(self.start, self.start + self.capacity)
        book.abandoned += self.capacity
        self.capacity = capacity
        self.rebase(start)
        if 2 * book.abandoned > book.n:
            book.compact()


class _Position:
    __slots__ = ("contract_size", "offset", "open_price", "segment", "side", "slot", "volume")

    def __init__(
        self,
        slot: int,
        segment: _Segment,
        side: int,
        volume: float,
        open_price: float,
        contract_size: float,
        offset: float,
    ) -> None:
        self.slot = slot
        self.segment = segment
        self.side = side
        self.volume = volume
        self.open_price = open_price
        self.contract_size = contract_size
        self.offset = offset

    def units(self) -> float:
        return self.side * self.volume * self.contract_size

    def cost(self) -> float:
        """Signed cost in profit currency; the close offset is folded in unless the book
        carries it in its closing price (own-pair books)."""
        own = self.segment.book.kind is _Kind.OWN
        return self.units() * (self.open_price if own else self.open_price - self.offset)


class _LevelState:
    """A watched level: ``value`` its equity value as of the last evaluation (a
    trailing floor's ``min(peak - offset, lock)``); ``exact`` the level's exact value
    (replaced in bulk by :meth:`RiskEngine.set_level_values`; :attr:`level` is rebuilt
    from it when read)."""

    __slots__ = (
        "_level",
        "exact",
        "fired",
        "floor",
        "inclusive",
        "lock",
        "name",
        "offset",
        "rule",
        "trailing",
        "value",
    )

    def __init__(self, rule: str, level: Level, fired: bool) -> None:
        self.rule = rule
        self._level = level
        self.name = level.name
        self.exact = level.value
        self.inclusive = level.inclusive
        self.floor = level.kind.is_floor
        self.trailing = level.kind is LevelKind.TRAILING_FLOOR
        self.offset = float(level.value) if self.trailing else 0.0
        self.lock = _INF if level.lock is None or not self.trailing else float(level.lock)
        self.value = -_INF if self.trailing else float(level.value)
        self.fired = fired

    @property
    def level(self) -> Level:
        level = self._level
        if level.value is not self.exact:
            level = self._level = Level(
                level.name, self.exact, level.kind, level.inclusive, level.lock
            )
        return level

    def set_exact(self, value: Decimal) -> None:
        self.exact = value
        if self.trailing:
            self.offset = float(value)
        else:
            self.value = float(value)

    def passed_at(self, equity: float) -> bool:
        inclusive = self.inclusive
        if self.floor:
            return equity <= self.value if inclusive else equity < self.value
        return equity >= self.value if inclusive else equity > self.value


class _Account:
    __slots__ = (
        "balance",
        "base",
        "credit",
        "currency",
        "hi",
        "levels",
        "levels_stale",
        "lo",
        "login",
        "margin_call_level",
        "margin_used",
        "positions",
        "slot",
        "steps",
        "stopout_level",
        "trailing",
    )

    def __init__(self, login: int, slot: int, currency: str) -> None:
        self.login = login
        self.slot = slot
        self.currency = currency
        self.balance = Decimal(0)
        self.credit = Decimal(0)
        self.margin_used = Decimal(0)
        self.stopout_level: Decimal | None = None
        self.margin_call_level: Decimal | None = None
        self.base = 0.0
        self.levels: list[_LevelState] = []
        self.levels_stale = True
        self.trailing = False  # holds a trailing floor: its peak is tracked per tick
        self.lo = -_INF
        self.hi = _INF
        # open positions by segment, then by ticket
        self.positions: dict[_Segment, dict[int, _Position]] = {}
        # incremental updates of each row since it was last summed (see _shift_row)
        self.steps: dict[_Segment, int] = {}

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot(
            login=self.login,
            currency=self.currency,
            balance=self.balance,
            credit=self.credit,
            margin_used=self.margin_used,
            stopout_level=self.stopout_level,
            margin_call_level=self.margin_call_level,
        )


class RiskEngine:
    """Marks open positions per tick and emits :class:`~.rules.Crossing` events.

    ``rules`` are the per-tick account rules (names unique; the kernel passes the
    built-in :class:`~.rules.StopOutRule` and :class:`~.rules.MarginCallRule` plus every
    registered ``AccountRule``); ``fx_conversion`` is the kernel's conversion side
    (``"mid"`` or ``"bid_ask"``, see :mod:`~.rates`); ``exact_equity`` decides levels
    within the float guard; ``sink`` receives every crossing and must not block;
    ``resync_ticks`` is how often the floating array is recomputed from the rows.

    Units: prices in the symbol's quote currency, volumes in lots, money in the
    account's currency, times in UTC ms. Floats in and out, except the Decimal money
    of accounts and levels. Raises ``ValueError`` on duplicate rule names.
    """

    def __init__(
        self,
        rules: Sequence[TickRule],
        *,
        fx_conversion: FxConversion = "mid",
        exact_equity: ExactEquity | None = None,
        sink: Sink | None = None,
        resync_ticks: int = RESYNC_TICKS,
    ) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate account rule names: {duplicates}")
        self._rules = list(rules)
        self._rates = ConversionRates(fx_conversion)
        self._sided = fx_conversion == "bid_ask"
        self._exact_equity = exact_equity
        self._sink = sink
        self._resync_ticks = resync_ticks
        self._symbols: dict[str, _Symbol] = {}
        self._books: dict[tuple[object, ...], _Book] = {}
        self._segments: dict[tuple[str, _Book], _Segment] = {}
        self._rate_books: dict[int, list[_Book]] = {}
        self._accounts: dict[int, _Account] = {}
        self._by_slot: list[_Account | None] = [None]  # slot 0: inert rows
        self._free_slots: list[int] = []
        self._floating: FloatArray = np.zeros(_INITIAL_CAPACITY)
        self._magnitude: FloatArray = np.zeros(_INITIAL_CAPACITY)
        self._trail_lo: FloatArray = np.full(_INITIAL_CAPACITY, -_INF)
        self._trail_hi: FloatArray = np.full(_INITIAL_CAPACITY, -_INF)
        self._trail: FloatArray = np.tile(np.array(_TRAIL_FILL), (_INITIAL_CAPACITY, 1))
        self._trailing: npt.NDArray[np.bool_] = np.zeros(_INITIAL_CAPACITY, dtype=bool)
        self._trailing_accounts = 0
        self._trail_version = 0  # bumped when an account starts or stops trailing
        # (slots, floating P&L) of the trailing accounts re-marked by this tick
        self._trail_batch: list[tuple[IndexArray, FloatArray]] = []
        self._positions: dict[int, _Position] = {}
        self._dirty: set[int] = set()
        self._relevel: set[int] = set()  # level values replaced: evaluate, money unchanged
        self._time_ms = 0
        self._ticks = 0
        self._dropped = 0
        self._crossings = 0
        self._exact_checks = 0
        self._resyncs = 0

    # --- accounts ---------------------------------------------------------------------

    def set_account(
        self,
        login: int,
        *,
        currency: str,
        balance: Decimal,
        credit: Decimal,
        margin_used: Decimal,
        stopout_level: Decimal | None = None,
        margin_call_level: Decimal | None = None,
    ) -> None:
        """Add an account or replace its settings (group levels in percent).

        Raises ``ValueError`` when the currency of an account with open positions
        would change.
        """
        account = self._accounts.get(login)
        if account is None:
            account = _Account(login, self._allocate_slot(), currency)
            self._accounts[login] = account
            self._by_slot[account.slot] = account
        elif account.currency != currency:
            if account.positions:
                raise ValueError(
                    f"account {login} has open positions; its currency cannot change "
                    f"from {account.currency} to {currency}"
                )
            account.currency = currency
        account.stopout_level = stopout_level
        account.margin_call_level = margin_call_level
        self.update_money(login, balance, credit, margin_used)

    def update_money(
        self, login: int, balance: Decimal, credit: Decimal, margin_used: Decimal
    ) -> None:
        """New balance, credit and margin used (account currency) after a deal, close,
        swap, deposit or credit change; the account's levels are recomputed.

        Raises ``KeyError`` for an unknown login.
        """
        account = self._account(login)
        account.balance = balance
        account.credit = credit
        account.margin_used = margin_used
        base = float(balance + credit)
        if base != account.base:
            account.base = base
            self._trail[account.slot, _BASE] = base
            self._retrail(account.slot)
            if account.lo > -_INF or account.hi < _INF:  # rows hold it relative to base
                self._write_band(account)
        account.levels_stale = True
        self._dirty.add(account.slot)

    def remove_account(self, login: int) -> None:
        """Stop watching an account. Raises ``ValueError`` while it has open positions."""
        account = self._account(login)
        if account.positions:
            raise ValueError(f"account {login} has open positions")
        del self._accounts[login]
        self._set_trailing(account, False)
        self._by_slot[account.slot] = None
        for name, fill in _SLOT_FILL.items():
            getattr(self, name)[account.slot] = fill
        self._trail[account.slot] = _TRAIL_FILL
        self._free_slots.append(account.slot)
        self._dirty.discard(account.slot)
        self._relevel.discard(account.slot)

    def refresh(self, login: int) -> None:
        """Recompute the account's levels from the rules (e.g. at a rule's day reset)."""
        account = self._account(login)
        account.levels_stale = True
        self._dirty.add(account.slot)

    def peak(self, login: int) -> Decimal | None:
        """The equity peak (account currency, :func:`exact_peak`) of an account holding
        a trailing floor: the highest equity seen since :meth:`set_peak` seeded it (and
        at least the seed); None for other accounts. Raises ``KeyError`` for an unknown
        login."""
        account = self._account(login)
        if not account.trailing:
            return None
        peak = float(self._trail[account.slot, _PEAK])
        return None if peak == -_INF else exact_peak(peak)

    def set_peak(self, login: int, peak: Decimal | float | None) -> None:
        """Seed (or reset, e.g. at a new phase) the account's equity peak; None
        forgets it (the next evaluation starts it at the equity then). Its trailing
        floors are re-evaluated. Raises ``KeyError`` for an unknown login."""
        account = self._account(login)
        self._trail[account.slot, _PEAK] = -_INF if peak is None else float(peak)
        self._retrail(account.slot)
        self._dirty.add(account.slot)

    def set_level_values(
        self, rule: str, logins: Sequence[int], values: Mapping[str, Sequence[Decimal]]
    ) -> int:
        """Replace the values of named levels of ``rule`` for many accounts at once (a
        daily floor and its warnings at a day reset), keeping each level's kind,
        ``inclusive``, lock and fired state, without asking the rule for the account's
        levels: ``values[name][i]`` (account currency; a trailing floor's offset) is
        for ``logins[i]``. Unknown logins, accounts whose levels are due to be
        recomputed anyway and levels the account does not have are skipped. Accounts
        with a changed value are evaluated at the next :meth:`settle` or tick. Returns
        the levels whose value changed. The rule's ``levels`` must give the same
        values when next asked."""
        replaced = 0
        accounts = self._accounts
        relevel = self._relevel
        columns = {name: list(column) for name, column in values.items()}
        for i, login in enumerate(logins):
            account = accounts.get(login)
            if account is None or account.levels_stale:
                continue
            changed = False
            for state in account.levels:
                column = columns.get(state.name)
                if column is not None and state.rule == rule and state.exact != column[i]:
                    state.set_exact(column[i])
                    changed = True
                    replaced += 1
            if changed:
                relevel.add(account.slot)
        return replaced

    def refresh_all(self) -> None:
        """Recompute every account's levels (a rule's configuration changed)."""
        for account in self._accounts.values():
            account.levels_stale = True
            self._dirty.add(account.slot)

    # --- positions ----------------------------------------------------------------------

    def add_position(
        self,
        ticket: int,
        login: int,
        symbol: str,
        side: int,
        volume: float | Decimal,
        open_price: float | Decimal,
        contract_size: float | Decimal,
        profit_currency: str,
        *,
        close_offset: float | Decimal = 0.0,
        base_currency: str | None = None,
        quote_currency: str | None = None,
    ) -> None:
        """Watch an open position: ``side`` +1 long / -1 short, ``volume`` in lots,
        ``open_price`` in quote currency, profit in ``profit_currency``.

        ``contract_size`` is profit-currency units per lot per 1.0 of price (the
        contract size; FUTURES: tick_price / tick_size). ``close_offset`` is what the
        account's group adds to the raw closing price (group bid - raw bid for a long,
        group ask - raw ask for a short: minus / plus half the group's spread markup).
        ``base_currency`` / ``quote_currency`` (default: from a six-letter symbol) tell
        whether the symbol's own pair converts the profit at the closing price.
        Marked at once at the last prices. Raises ``KeyError`` for an unknown login,
        ``ValueError`` for a ticket already watched or a side, volume, price or contract
        size out of range.
        """
        if ticket in self._positions:
            raise ValueError(f"position {ticket} is already watched")
        if side not in (1, -1):
            raise ValueError(f"side must be +1 or -1, got {side!r}")
        volume_f, price_f, contract_f = float(volume), float(open_price), float(contract_size)
        if not (volume_f > 0 and price_f > 0 and contract_f > 0):
            raise ValueError(
                f"volume, open_price and contract_size must be > 0, got "
                f"{volume}, {open_price}, {contract_size}"
            )
        account = self._account(login)
        if base_currency is None or quote_currency is None:
            base_currency, quote_currency = currency_pair(symbol) or ("", "")
        offset = float(close_offset)
        segment = self._segment(
            symbol, side, account.currency, profit_currency, base_currency, quote_currency, offset
        )
        position = _Position(account.slot, segment, side, volume_f, price_f, contract_f, offset)
        held = account.positions.get(segment)
        if held is None:
            held = account.positions[segment] = {}
            segment.add_row(account.slot, account.lo - account.base, account.hi - account.base)
        held[ticket] = position
        self._positions[ticket] = position
        self._shift_row(segment, account, side, position.units(), position.cost())

    def resize_position(
        self, ticket: int, volume: float | Decimal, open_price: float | Decimal | None = None
    ) -> None:
        """New volume (lots) after a partial close or a netting deal, and optionally a new
        (average) open price. The margin change comes with :meth:`update_money`.

        Raises ``KeyError`` for an unknown ticket, ``ValueError`` for volume <= 0.
        """
        position = self._positions[ticket]
        volume_f = float(volume)
        if not volume_f > 0:
            raise ValueError(f"volume must be > 0, got {volume}")
        units, cost = position.units(), position.cost()
        position.volume = volume_f
        if open_price is not None:
            position.open_price = float(open_price)
        account = self._by_slot[position.slot]
        assert account is not None
        self._shift_row(
            position.segment,
            account,
            position.side,
            position.units() - units,
            position.cost() - cost,
        )

    def remove_position(self, ticket: int) -> None:
        """Stop watching a closed position. Raises ``KeyError`` for an unknown ticket."""
        position = self._positions.pop(ticket)
        segment = position.segment
        account = self._by_slot[position.slot]
        assert account is not None
        held = account.positions[segment]
        del held[ticket]
        if held:
            self._shift_row(segment, account, position.side, -position.units(), -position.cost())
            return
        del account.positions[segment]
        account.steps.pop(segment, None)
        slot = account.slot
        if account.positions:
            self._floating[slot] -= segment.book.pnl[segment.row_of[slot]]
        else:
            self._floating[slot] = 0.0
        segment.remove_row(slot)
        self._dirty.add(slot)

    # --- ticks --------------------------------------------------------------------------

    def on_tick(self, symbol: str, bid: float, ask: float, time_ms: int) -> list[Crossing]:
        """Re-mark ``symbol``'s positions (and those converted through it) at ``bid`` /
        ``ask`` (quote currency), then evaluate changed and out-of-band accounts.

        ``time_ms`` is the tick's market time (UTC ms). A tick with bid <= 0 or ask <
        bid is dropped. Returns the crossings (already handed to ``sink``) in the order
        equity passed them.
        """
        if not (0.0 < bid <= ask):
            self._dropped += 1
            return []
        quoted = self._symbols.get(symbol)
        if quoted is None:
            quoted = self._symbols[symbol] = _Symbol()
        quoted.bid = bid
        quoted.ask = ask
        self._time_ms = time_ms
        self._ticks += 1
        changed = self._rates.on_quote(symbol, bid, ask)
        touched: list[int] = []
        for segment in quoted.segments:
            if segment.count:
                self._mark_segment(segment, touched)
        if changed:
            for book in self._books_converting(changed):
                self._mark_rates(book, touched)
        if self._trail_batch:
            self._raise_peaks(touched)
        crossings: list[Crossing] = []
        if touched or self._dirty or self._relevel:
            self._settle(touched, crossings)
        if self._ticks % self._resync_ticks == 0:
            self.resync()
        return crossings

    def settle(self) -> list[Crossing]:
        """Recompute the levels of changed accounts and evaluate them now; returns the
        crossings (already handed to ``sink``)."""
        crossings: list[Crossing] = []
        if self._dirty or self._relevel:
            self._settle([], crossings)
        return crossings

    def resync(self) -> None:
        """Recompute the floating P&L and guard magnitude of every account from the
        marked rows (bounds float drift; ~15 ms for 300,000 positions)."""
        floating = np.zeros_like(self._floating)
        magnitude = np.zeros_like(self._magnitude)
        for book in self._books.values():
            n = book.n
            if not n:
                continue
            acct = book.acct[:n]
            pnl = book.pnl[:n]
            np.add.at(floating, acct, pnl)
            if book.kind is _Kind.OWN:
                for segment in book.segments:
                    close = segment.closes()[0 if book.side > 0 else 1]
                    if segment.count and close == close:
                        rows = slice(segment.start, segment.start + segment.count)
                        scaled = np.abs(book.cost[rows]) * book.own_rate(close)
                        np.add.at(magnitude, book.acct[rows], scaled + np.abs(book.pnl[rows]))
                continue
            scaled = np.abs(book.cost[:n])
            if book.kind is _Kind.CONVERTED:
                scaled *= max(book.rates(self._rates.values))
            np.add.at(magnitude, acct, scaled + np.abs(pnl))
        floating[_INERT] = magnitude[_INERT] = 0.0
        self._floating = floating
        self._magnitude = magnitude
        self._resyncs += 1

    # --- queries ------------------------------------------------------------------------

    def equity(self, login: int) -> float:
        """Balance + credit + floating P&L (account currency, float estimate)."""
        account = self._account(login)
        return account.base + float(self._floating[account.slot])

    def floating(self, login: int) -> float:
        """Floating P&L of the account's open positions (account currency, float)."""
        return float(self._floating[self._account(login).slot])

    def watched(self, login: int) -> list[WatchedLevel]:
        """The levels watched for ``login`` as of its last evaluation."""
        account = self._account(login)
        peak = self.peak(login)
        return [
            WatchedLevel(
                state.rule,
                state.level,
                state.fired,
                state.level.floor_at(peak) if state.trailing and peak is not None else None,
            )
            for state in account.levels
        ]

    def snapshot(self) -> EngineSnapshot:
        """Counters and sizes for metrics."""
        return EngineSnapshot(
            accounts=len(self._accounts),
            positions=len(self._positions),
            symbols=len(self._symbols),
            books=len(self._books),
            segments=len(self._segments),
            conversion_rates=len(self._rates.values),
            ticks=self._ticks,
            dropped_ticks=self._dropped,
            crossings=self._crossings,
            exact_checks=self._exact_checks,
            resyncs=self._resyncs,
            array_bytes=sum(getattr(self, name).nbytes for name in _SLOT_FILL)
            + self._trail.nbytes
            + self._trailing.nbytes
            + sum(book.nbytes() for book in self._books.values()),
            time_ms=self._time_ms,
        )

    # --- internals: structure -------------------------------------------------------------

    def _account(self, login: int) -> _Account:
        account = self._accounts.get(login)
        if account is None:
            raise KeyError(f"account {login} is not watched by the risk engine")
        return account

    def _allocate_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        slot = len(self._by_slot)
        self._by_slot.append(None)
        if slot == len(self._floating):
            for name, fill in _SLOT_FILL.items():
                grown = np.full(2 * slot, fill)
                grown[:slot] = getattr(self, name)
                setattr(self, name, grown)
            trail = np.tile(np.array(_TRAIL_FILL), (2 * slot, 1))
            trail[:slot] = self._trail
            self._trail = trail
            trailing = np.zeros(2 * slot, dtype=bool)
            trailing[:slot] = self._trailing
            self._trailing = trailing
        return slot

    def _segment(
        self,
        symbol: str,
        side: int,
        currency: str,
        profit_currency: str,
        base_currency: str,
        quote_currency: str,
        offset: float,
    ) -> _Segment:
        # the symbol's own pair converts at the closing price (trading valuation)
        kind, exponent = _Kind.CONVERTED, 0
        if profit_currency == currency:
            kind = _Kind.UNIT
        elif (profit_currency, currency) in (
            (base_currency, quote_currency),
            (quote_currency, base_currency),
        ):
            kind, exponent = _Kind.OWN, 1 if profit_currency == base_currency else -1
        # one side per book where the rate depends on it: the own pair's close, and the
        # sign of each side's profit under "bid_ask" (the valuation nets per side)
        sided = kind is _Kind.OWN or (kind is _Kind.CONVERTED and self._sided)
        key: tuple[object, ...] = (kind, profit_currency, currency, side if sided else 0)
        if kind is _Kind.OWN:
            key = (*key, exponent, offset)
        book = self._books.get(key)
        if book is None:
            if kind is _Kind.OWN:
                book = _Book(kind, side=side, exponent=exponent, offset=offset)
            elif kind is _Kind.UNIT:
                book = _Book(kind)
            else:
                rate_profit = self._rates.index(profit_currency, currency, for_loss=False)
                rate_loss = self._rates.index(profit_currency, currency, for_loss=True)
                book = _Book(kind, rate_profit, rate_loss, side=side if sided else 0)
                for entry in {rate_profit, rate_loss}:
                    self._rate_books.setdefault(entry, []).append(book)
            self._books[key] = book
        segment = self._segments.get((symbol, book))
        if segment is None:
            quoted = self._symbols.get(symbol)
            if quoted is None:
                quoted = self._symbols[symbol] = _Symbol()
            segment = self._segments[(symbol, book)] = _Segment(book, quoted)
            book.segments.append(segment)
            quoted.segments.append(segment)
        return segment

    def _books_converting(self, changed: Sequence[int]) -> list[_Book]:
        books: dict[_Book, None] = {}
        for entry in changed:
            books.update(dict.fromkeys(self._rate_books.get(entry, ())))
        return list(books)

    def _shift_row(
        self, segment: _Segment, account: _Account, side: int, units: float, cost: float
    ) -> None:
        """Add one position's change of ``units`` and ``cost`` (profit currency) to the
        account's row in ``segment`` and re-mark it: O(1) per position opened, resized
        or closed, however many the account holds.

        Each update rounds once, so once the updates since the row was last summed
        outnumber its positions the row is re-summed exactly (:meth:`_sum_row`):
        amortised O(1), and the row's error stays within that of a plain float sum of
        its positions (n x 2**-53 of their magnitude), far inside the level guard.
        """
        held = account.positions[segment]
        steps = account.steps.get(segment, 0) + 1
        if steps > len(held):
            self._sum_row(segment, account)
            return
        account.steps[segment] = steps
        book = segment.book
        row = segment.row_of[account.slot]
        (book.bid_units if side > 0 else book.ask_units)[row] += units
        book.cost[row] += cost
        self._mark_row(segment, row)
        self._dirty.add(account.slot)

    def _sum_row(self, segment: _Segment, account: _Account) -> None:
        """Re-sum an account's row in ``segment`` from its positions and re-mark it."""
        account.steps[segment] = 0
        held = account.positions[segment].values()
        book = segment.book
        row = segment.row_of[account.slot]
        if len(held) == 1:
            (position,) = held
            units = position.units()
            book.bid_units[row] = units if units > 0 else 0.0
            book.ask_units[row] = units if units < 0 else 0.0
            book.cost[row] = position.cost()
        else:
            book.bid_units[row] = math.fsum(p.units() for p in held if p.side > 0)
            book.ask_units[row] = math.fsum(p.units() for p in held if p.side < 0)
            book.cost[row] = math.fsum(p.cost() for p in held)
        self._mark_row(segment, row)
        self._dirty.add(account.slot)

    # --- internals: marking ----------------------------------------------------------------

    def _mark_segment(self, segment: _Segment, touched: list[int]) -> None:
        """Re-mark a symbol's rows at its new bid/ask; out-of-band slots go to ``touched``.

        Longs close on the bid, shorts on the ask: raw = long_units x bid + short_units x
        ask - cost, in the profit currency, then converted by the book's kind.
        """
        bid, ask = segment.closes()
        if bid != bid:  # the symbol has not ticked yet
            return
        book = segment.book
        acct, bid_units, ask_units, cost, raw, pnl, lo, hi = segment.views or segment.columns()
        floating = self._floating
        marked = floating.take(acct)
        marked -= pnl
        kind = book.kind
        if kind is _Kind.UNIT:
            np.multiply(bid_units, bid, out=pnl)
            pnl += ask_units * ask
            pnl -= cost
        elif kind is _Kind.CONVERTED:
            if book.side == 0:
                np.multiply(bid_units, bid, out=raw)
                raw += ask_units * ask
            elif book.side > 0:
                np.multiply(bid_units, bid, out=raw)
            else:
                np.multiply(ask_units, ask, out=raw)
            raw -= cost
            self._convert(book, raw, pnl)
        else:  # own pair: one side, converted at its close
            close = bid if book.side > 0 else ask
            np.multiply(bid_units if book.side > 0 else ask_units, close, out=pnl)
            pnl -= cost
            own = book.own_rate(close)
            if own != 1.0:
                pnl *= own
        self._post(book, acct, marked, pnl, lo, hi, touched)
        if self._trailing_accounts:
            self._collect_trailers(segment, marked)

    def _mark_rates(self, book: _Book, touched: list[int]) -> None:
        """Re-convert a book's rows after its rate changed (closes unchanged)."""
        floating = self._floating
        for segment in book.segments:
            if segment.count:
                acct, _, _, _, raw, pnl, lo, hi = segment.views or segment.columns()
                marked = floating.take(acct)
                marked -= pnl
                self._convert(book, raw, pnl)
                self._post(book, acct, marked, pnl, lo, hi, touched)
                if self._trailing_accounts:
                    self._collect_trailers(segment, marked)

    def _convert(self, book: _Book, raw: FloatArray, pnl: FloatArray) -> None:
        """pnl = raw x the book's rate (the loss rate where raw < 0, under "bid_ask")."""
        rate_profit, rate_loss = book.rates(self._rates.values)
        if rate_profit == rate_loss:
            np.multiply(raw, rate_profit, out=pnl)
        else:
            np.multiply(raw, np.where(raw >= 0.0, rate_profit, rate_loss), out=pnl)

    def _post(
        self,
        book: _Book,
        acct: IndexArray,
        marked: FloatArray,
        pnl: FloatArray,
        lo: FloatArray,
        hi: FloatArray,
        touched: list[int],
    ) -> None:
        """Add the new P&L to ``marked`` (floating minus the old P&L), store it, and
        append the slots now out of their band to ``touched``."""
        marked += pnl
        self._floating[acct] = marked
        out = marked <= lo
        if book.bounded:
            out |= marked >= hi
        if np.count_nonzero(out):
            touched.extend(acct[out].tolist())

    def _collect_trailers(self, segment: _Segment, marked: FloatArray) -> None:
        """Queue the slots of the segment's accounts holding trailing floors and their
        floating P&L (from ``marked``, the segment's rows) for :meth:`_raise_peaks`
        (rows and slots cached until its rows change or an account starts or stops
        trailing)."""
        views = segment.views or segment.columns()
        if segment.trail_views is not views or segment.trail_version != self._trail_version:
            acct = views[0]
            segment.trail_rows = np.flatnonzero(self._trailing[acct])
            segment.trailers = acct[segment.trail_rows]
            segment.trail_views = views
            segment.trail_version = self._trail_version
        if len(segment.trailers):
            self._trail_batch.append((segment.trailers, marked.take(segment.trail_rows)))

    def _raise_peaks(self, touched: list[int]) -> None:
        """Raise the peaks of the re-marked trailing accounts to their equity now and
        append those at or below ``min(peak - offset, lock) + guard`` to ``touched``.

        Per tick: each account's floating P&L against its band (``_trail_hi``: a new
        high; ``_trail_lo``: the floor), two gathers and two compares; only the
        accounts with a new high are worked on (peak, then their floor, vectorised)
        before the floors are compared."""
        batch = self._trail_batch
        if len(batch) == 1:
            slots, floating = batch[0]
        else:  # an account may be in several of the segments: its floating P&L now
            slots = np.concatenate([entry[0] for entry in batch])
            floating = self._floating.take(slots)
        batch.clear()
        high = floating > self._trail_hi.take(slots)
        if np.count_nonzero(high):
            up = slots[high]
            rows = self._trail.take(up, axis=0)
            base = rows[:, _BASE]
            peak = floating[high]
            self._trail_hi[up] = peak
            peak += base
            np.maximum(peak, rows[:, _PEAK], out=peak)
            self._trail[up, _PEAK] = peak
            peak -= rows[:, _OFF]
            np.minimum(peak, rows[:, _CAP], out=peak)
            peak -= base
            self._trail_lo[up] = peak
        low = floating <= self._trail_lo.take(slots)
        if np.count_nonzero(low):
            touched.extend(slots[low].tolist())

    def _retrail(self, slot: int) -> None:
        """Derive the slot's per-tick trailing band on its floating P&L from its
        ``_trail`` row (see :data:`_SLOT_FILL`)."""
        base, peak, off, cap = self._trail[slot].tolist()
        self._trail_hi[slot] = peak - base
        self._trail_lo[slot] = min(peak - off, cap) - base

    def _set_trailing(self, account: _Account, trailing: bool) -> None:
        if trailing == account.trailing:
            return
        account.trailing = trailing
        slot = account.slot
        self._trailing[slot] = trailing
        self._trailing_accounts += 1 if trailing else -1
        self._trail_version += 1
        if not trailing:
            self._trail[slot, _OFF] = self._trail[slot, _CAP] = _INF
            self._retrail(slot)

    def _mark_row(self, segment: _Segment, row: int) -> None:
        """Re-mark one row at the last prices (the arithmetic of :meth:`_mark_segment`)."""
        book = segment.book
        bid, ask = segment.closes()
        raw = new = 0.0
        if bid == bid:
            units = float(book.bid_units[row]) * bid + float(book.ask_units[row]) * ask
            raw = units - float(book.cost[row])
            if book.kind is _Kind.UNIT:
                new = raw
            elif book.kind is _Kind.CONVERTED:
                rate_profit, rate_loss = book.rates(self._rates.values)
                new = raw * (rate_profit if raw >= 0.0 else rate_loss)
            else:
                own = book.own_rate(bid if book.side > 0 else ask)
                new = raw * own if own != 1.0 else raw
        self._floating[book.acct[row]] += new - float(book.pnl[row])
        book.raw[row] = raw
        book.pnl[row] = new

    # --- internals: levels -------------------------------------------------------------------

    def _settle(self, touched: list[int], crossings: list[Crossing]) -> None:
        dirty = self._dirty
        self._dirty = set()
        evaluate = dirty.union(touched, self._relevel)
        self._relevel = set()
        by_slot = self._by_slot
        for slot in sorted(evaluate):
            account = by_slot[slot]
            if account is None:
                continue
            if slot in dirty:
                self._magnitude[slot] = self._measure(account)
                if account.levels_stale:
                    self._recompute_levels(account)
            self._evaluate(account, crossings)

    def _recompute_levels(self, account: _Account) -> None:
        fired = {(state.rule, state.name): state.fired for state in account.levels}
        snapshot = account.snapshot()
        states = []
        for rule in self._rules:
            try:
                levels = list(rule.levels(snapshot))
            except Exception:
                log.exception("account rule %r failed for login %s", rule.name, account.login)
                continue
            for level in levels:
                key = (rule.name, level.name)
                states.append(_LevelState(rule.name, level, fired.get(key, False)))
        account.levels = states
        account.levels_stale = False
        self._set_trailing(account, any(state.trailing for state in states))

    def _evaluate(self, account: _Account, crossings: list[Crossing]) -> None:
        """Decide every level of ``account``, fire or re-arm, and rewrite its band."""
        slot = account.slot
        equity = account.base + float(self._floating[slot])
        guard = GUARD_RELATIVE * (abs(account.base) + float(self._magnitude[slot]))
        guard += GUARD_ABSOLUTE
        exact: Decimal | None = None
        exact_known = False
        lo, hi = -_INF, _INF
        peak = -_INF
        trail_off, trail_cap = _INF, -_INF
        if account.trailing:
            peak = float(self._trail[slot, _PEAK])
            if equity > peak:
                peak = equity
                self._trail[slot, _PEAK] = peak
        fired: list[_LevelState] = []
        for state in account.levels:
            if state.trailing:
                state.value = min(peak - state.offset, state.lock)
            value = state.value
            if abs(equity - value) <= guard:
                if not exact_known:
                    exact = self._exact(account.login)
                    exact_known = True
                passed = (
                    state.level.passed_by(exact, exact_peak(peak))
                    if exact is not None
                    else state.passed_at(equity)
                )
            else:
                passed = (equity < value) == state.floor
            if passed != state.fired:
                state.fired = passed
                if passed:
                    fired.append(state)
            if state.floor == state.fired:
                hi = min(hi, value - guard)  # fired floor / armed ceiling: stay below
            elif state.trailing:  # armed trailing floor: the trailing band follows it
                trail_off = min(trail_off, state.offset)
                trail_cap = max(trail_cap, state.lock)
            else:
                lo = max(lo, value + guard)  # armed floor / fired ceiling: stay above
        if account.trailing:
            self._trail[slot, _OFF] = trail_off - guard
            self._trail[slot, _CAP] = trail_cap + guard
            self._retrail(slot)
        if lo != account.lo or hi != account.hi:
            account.lo, account.hi = lo, hi
            self._write_band(account)
        if fired:
            # the order equity passed them: floors downwards, then ceilings upwards
            fired.sort(key=_travel_order)
            for state in fired:
                level = state.level
                crossing = Crossing(
                    login=account.login,
                    rule=state.rule,
                    level_name=level.name,
                    kind=level.kind,
                    level=level.floor_at(exact_peak(peak)) if state.trailing else level.value,
                    equity=equity,
                    margin_used=account.margin_used,
                    time_ms=self._time_ms,
                )
                crossings.append(crossing)
                self._crossings += 1
                if self._sink is not None:
                    try:
                        self._sink(crossing)
                    except Exception:
                        log.exception("risk engine sink failed on %r", crossing)

    def _write_band(self, account: _Account) -> None:
        lo, hi = account.lo - account.base, account.hi - account.base
        slot = account.slot
        for segment in account.positions:
            segment.book.set_band(segment.row_of[slot], lo, hi)

    def _measure(self, account: _Account) -> float:
        """The money the account's floating P&L sums (scale of the float guard)."""
        magnitude = 0.0
        values = self._rates.values
        slot = account.slot
        for segment in account.positions:
            bid, ask = segment.closes()
            if bid != bid:
                continue
            book = segment.book
            row = segment.row_of[slot]
            if book.kind is _Kind.UNIT:
                scale = 1.0
            elif book.kind is _Kind.CONVERTED:
                scale = max(book.rates(values))
            else:
                scale = book.own_rate(bid if book.side > 0 else ask)
            magnitude += abs(float(book.cost[row])) * scale + abs(float(book.pnl[row]))
        return magnitude

    def _exact(self, login: int) -> Decimal | None:
        if self._exact_equity is None:
            return None
        self._exact_checks += 1
        try:
            return self._exact_equity(login)
        except Exception:
            log.exception("exact_equity failed for login %s; the float estimate decides", login)
            return None


def _travel_order(state: _LevelState) -> tuple[bool, float]:
    """Floors from the highest down, then ceilings from the lowest up."""
    if state.floor:
        return False, -state.value
    return True, state.value
