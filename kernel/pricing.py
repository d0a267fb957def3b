"""Quotes, the latest-quote book every consumer reads, and currency conversion.

A price feed (a ``PriceFeed`` plugin) hands each tick to :meth:`QuoteBook.publish`.
That one synchronous call is the whole hot path: it drops crossed quotes, stores the
latest quote per symbol, advances the market clock when the feed drives it, and calls
the subscribers (risk engine, bar builder, streams) directly, with no pluggy in between.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise

from brokerkernel.kernel.clock import MarketClock

log = logging.getLogger(__name__)

TickSubscriber = Callable[["Quote"], None]


@dataclass(frozen=True, slots=True)
class Quote:
    """One bid/ask quote.

    ``bid`` and ``ask`` are prices in the symbol's quote currency; ``time_ms`` is the
    tick's UTC time in milliseconds since the Unix epoch; ``provider`` names the feed.
    """

    symbol: str
    bid: Decimal
    ask: Decimal
    time_ms: int
    provider: str

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def crossed(self) -> bool:
        """True when ask < bid: such a quote is never served or filled at (DOMAIN.md)."""
        return self.ask < self.bid


@dataclass(slots=True)
class FeedStats:
    """Counters of the price path, per kernel process."""

    ticks: int = 0
    crossed_dropped: int = 0


class QuoteBook:
    """Latest quote per symbol plus synchronous fan-out to tick subscribers.

    ``clock_provider`` names the feed whose tick times drive the market clock (the
    replay feed, or the manual dealing-desk feed); ticks from other providers leave
    the clock alone. A subscriber that raises is logged and does not stop the others.
    """

    def __init__(self, clock: MarketClock, clock_provider: str | None = None) -> None:
        self._clock = clock
        self._clock_provider = clock_provider
        self._latest: dict[str, Quote] = {}
        self._subscribers: list[TickSubscriber] = []
        self.stats = FeedStats()

    def subscribe(self, subscriber: TickSubscriber) -> Callable[[], None]:
        """Call ``subscriber(quote)`` on every accepted tick; returns an unsubscribe function."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, quote: Quote) -> bool:
        """Accept one tick. Returns False (and counts it) when the quote is crossed."""
        if quote.ask < quote.bid:
            self.stats.crossed_dropped += 1
            return False
        self.stats.ticks += 1
        self._latest[quote.symbol] = quote
        if quote.provider == self._clock_provider:
            self._clock.advance_to_ms(quote.time_ms)
        for subscriber in self._subscribers:
            try:
                subscriber(quote)
            except Exception:
                log.exception("tick subscriber %r failed on %s", subscriber, quote.symbol)
        return True

    def get(self, symbol: str) -> Quote | None:
        return self._latest.get(symbol)

    def all(self) -> Iterable[Quote]:
        return self._latest.values()

    def fresh(self, symbol: str, max_age_ms: int) -> Quote | None:
        """The latest quote if it is at most ``max_age_ms`` old by the market clock."""
        quote = self._latest.get(symbol)
        if quote is None or self._clock.now_ms() - quote.time_ms > max_age_ms:
            return None
        return quote


class ConversionUnavailable(LookupError):
    """No quote links the two currencies (directly, inverted, or through USD)."""


def currency_pair(symbol: str) -> tuple[str, str] | None:
    """``("EUR", "USD")`` for a six-letter pair symbol such as ``EURUSD`` (metals and
    crypto too: ``XAUUSD``, ``BTCUSD``); None for any other symbol."""
    if len(symbol) == 6 and symbol.isalpha() and symbol.isupper():
        return symbol[:3], symbol[3:]
    return None


def currency_chain(symbols: Iterable[str], source: str, target: str) -> list[str] | None:
    """The shortest chain of currencies from ``source`` to ``target`` in which each
    neighbouring two are a quoted pair among ``symbols`` (breadth-first, neighbours in
    name order); None when no chain exists."""
    links: dict[str, set[str]] = {}
    for symbol in symbols:
        pair = currency_pair(symbol)
        if pair is not None:
            links.setdefault(pair[0], set()).add(pair[1])
            links.setdefault(pair[1], set()).add(pair[0])
    previous: dict[str, str] = {source: source}
    queue = deque([source])
    while queue:
        currency = queue.popleft()
        if currency == target:
            path = [target]
            while path[-1] != source:
                path.append(previous[path[-1]])
            return path[::-1]
        for neighbour in sorted(links.get(currency, ())):
            if neighbour not in previous:
                previous[neighbour] = currency
                queue.append(neighbour)
    return None


def significant(value: Decimal, digits: int) -> Decimal:
    """``value`` rounded half-even to ``digits`` significant digits (zero stays zero)."""
    if not value:
        return value
    return value.quantize(Decimal(1).scaleb(value.adjusted() - digits + 1), ROUND_HALF_EVEN)


class FxConverter:
    """Converts amounts between currencies with the quotes in a :class:`QuoteBook`.

    A pair quoted ``BASEQUOTE`` (e.g. ``EURUSD``) converts BASE→QUOTE by multiplying and
    QUOTE→BASE by dividing; when no direct pair exists the conversion crosses through
    USD, and failing that through the shortest chain of quoted pairs (e.g. GBP→JPY via
    ``EURGBP`` and ``EURJPY``). ``side`` is ``"mid"`` or ``"bid_ask"``; with
    ``"bid_ask"`` the rate that is less favourable to the account is used (bid when
    selling the source currency). The side is a broker choice (DOMAIN.md: bid for
    profit / ask for loss, or mid).
    """

    def __init__(self, book: QuoteBook, side: str = "mid") -> None:
        self._book = book
        self._side = side

    def rate(self, source: str, target: str) -> Decimal:
        """Units of ``target`` per one unit of ``source``; raises ConversionUnavailable."""
        if source == target:
            return Decimal(1)
        direct = self._pair_rate(source, target)
        if direct is not None:
            return direct
        if "USD" not in (source, target):
            to_usd = self._pair_rate(source, "USD")
            from_usd = self._pair_rate("USD", target)
            if to_usd is not None and from_usd is not None:
                return to_usd * from_usd
        path = self._path(source, target)
        if path is None:
            raise ConversionUnavailable(f"no quote converts {source} to {target}")
        result = Decimal(1)
        for step_from, step_to in pairwise(path):
            step = self._pair_rate(step_from, step_to)
            assert step is not None  # every link of the path is a quoted pair
            result *= step
        return result

    def convert(self, amount: Decimal, source: str, target: str) -> Decimal:
        return amount * self.rate(source, target)

    def rates_from(self, base: str, currencies: Iterable[str]) -> dict[str, Decimal]:
        """Units of each currency per one ``base`` (e.g. the USD-based rate table of seed
        section 14); currencies no quote reaches are left out."""
        rates: dict[str, Decimal] = {}
        for currency in currencies:
            try:
                rates[currency] = self.rate(base, currency)
            except ConversionUnavailable:
                continue
        return rates

    def _path(self, source: str, target: str) -> list[str] | None:
        return currency_chain((quote.symbol for quote in self._book.all()), source, target)

    def _pair_rate(self, source: str, target: str) -> Decimal | None:
        quote = self._book.get(source + target)
        if quote is not None:
            return quote.mid if self._side == "mid" else quote.bid
        quote = self._book.get(target + source)
        if quote is not None:
            return 1 / (quote.mid if self._side == "mid" else quote.ask)
        return None
