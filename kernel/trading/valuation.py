"""Marking positions to market: group quotes, FX conversion, floating profit, exposure.

Prices are the quote a position's group sees (the kernel's quote adjusters applied
to the latest tick); a long position closes on the bid, a short one on the ask.
Profit is computed in the symbol's profit currency (:func:`~brokerkernel.kernel.
trading.margin.profit`) and converted to the account currency:

* through the symbol's own pair at the deal price when it links the two currencies
  (USDJPY profit in JPY on a USD account divides by the close price, as MT5 does);
* otherwise through the price feed's FX quotes (:class:`~brokerkernel.kernel.pricing.
  FxConverter`): with ``[kernel] fx_conversion = "mid"`` at the mid, with
  ``"bid_ask"`` at the side less favourable to the account — a profit converts at the
  rate that gives less, a loss at the rate that costs more (DOMAIN.md: "bid for
  profit, ask for loss").

Exposure (seed section 16, ``max_exposure``) is notional in USD: lots x contract
size x mid price, converted from the quote currency; gross sums both sides, net
offsets long against short per symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal

from brokerkernel.kernel.descriptors import Adjuster, SymbolTerms
from brokerkernel.kernel.pricing import ConversionUnavailable, FxConverter, Quote, QuoteBook
from brokerkernel.kernel.trading.margin import ToAccount, profit
from brokerkernel.kernel.trading.state import AccountState, OpenPosition

ZERO = Decimal(0)
ONE = Decimal(1)
#: Decimal places of a stored FX rate (``open_fx_rate``, ``close_fx_rate``).
RATE_PLACES = Decimal("1E-10")


class Valuation:
    """Group-adjusted quotes and conversions; every amount is an unrounded Decimal."""

    def __init__(
        self, quotes: QuoteBook, fx: FxConverter, adjusters: Sequence[Adjuster], side: str
    ) -> None:
        self.quotes = quotes
        self.fx = fx
        self.adjusters = list(adjusters)
        self.bid_ask = side == "bid_ask"

    def quote_for(self, terms: SymbolTerms) -> Quote | None:
        """The latest quote for the symbol as the group sees it (adjusters applied)."""
        quote = self.quotes.get(terms.symbol)
        if quote is None:
            return None
        return self.adjust(quote, terms)

    def adjust(self, quote: Quote, terms: SymbolTerms) -> Quote:
        for adjuster in self.adjusters:
            quote = adjuster.adjust(quote, terms)
        return quote

    # --- currency conversion --------------------------------------------------------

    def to_account(
        self, terms: SymbolTerms, price: Decimal, currency: str, cost: bool = False
    ) -> ToAccount:
        """Converts amounts to ``currency``; the symbol's own pair converts at ``price``.

        Amounts are profits (a positive one is a gain) unless ``cost`` (margin,
        commission: a positive amount is owed by the account). Raises
        ConversionUnavailable when no quote links the currencies.
        """

        def convert(amount: Decimal, source: str) -> Decimal:
            if source == currency:
                return amount
            if source == terms.base_currency and terms.quote_currency == currency:
                return amount * price
            if source == terms.quote_currency and terms.base_currency == currency:
                return amount / price
            return amount * self.rate(source, currency, (amount >= 0) != cost)

        return convert

    def rate(self, source: str, target: str, gain: bool = True) -> Decimal:
        """Units of ``target`` per unit of ``source`` for a gain (or a loss: ``gain``
        False) under the configured side. Raises ConversionUnavailable."""
        if source == target:
            return ONE
        if gain or not self.bid_ask:
            return self.fx.rate(source, target)
        return ONE / self.fx.rate(target, source)

    def profit_rate(
        self, terms: SymbolTerms, price: Decimal, currency: str, gain: bool = True
    ) -> Decimal:
        """Account currency per unit of the profit currency at close ``price``
        (``gain`` False: the rate for a loss), rounded half-up to 10 decimal places as
        the deal history keeps it. Raises ConversionUnavailable."""
        if terms.profit_currency == currency:
            return ONE
        unit = ONE if gain else -ONE
        rate = self.to_account(terms, price, currency)(unit, terms.profit_currency) / unit
        return rate.quantize(RATE_PLACES, rounding=ROUND_HALF_UP)

    # --- marking -----------------------------------------------------------------------

    def mark(self, position: OpenPosition, currency: str) -> tuple[Decimal, Decimal] | None:
        """``(close price, profit)``: the closing side of the group quote and the
        unrounded profit in ``currency``; None without a quote or conversion rate."""
        quote = self.quote_for(position.terms)
        if quote is None:
            return None
        close_price = quote.bid if position.side > 0 else quote.ask
        amount = profit(
            position.terms, position.side, position.volume, position.open_price, close_price
        )
        try:
            return close_price, amount * self.profit_rate(
                position.terms, close_price, currency, amount >= 0
            )
        except ConversionUnavailable:
            return None

    def floating(self, account: AccountState) -> Decimal:
        """Unrealised profit of the account's positions in its currency (unrounded).

        Per instrument terms and side: unit x (close x volume - sum of volume x open),
        where unit is the profit of one lot over a price move of 1. Sides without a
        quote or a conversion rate count zero.
        """
        total = ZERO
        for terms, totals in account.totals.items():
            quote = self.quote_for(terms)
            if quote is None:
                continue
            unit = profit(terms, 1, ONE, ZERO, ONE)
            for close_price, amount in (
                (quote.bid, unit * (quote.bid * totals.long_volume - totals.long_cost)),
                (quote.ask, unit * (totals.short_cost - quote.ask * totals.short_volume)),
            ):
                if amount:
                    try:
                        total += amount * self.profit_rate(
                            terms, close_price, account.currency, amount >= 0
                        )
                    except ConversionUnavailable:
                        continue
        return total

    def equity(self, account: AccountState) -> Decimal:
        """Balance + credit + floating profit (unrounded, account currency)."""
        return account.balance + account.credit + self.floating(account)

    def exposure(
        self, account: AccountState, extra: Iterable[tuple[SymbolTerms, int, Decimal]] = ()
    ) -> tuple[Decimal, Decimal, int]:
        """``(gross, net, oldest quote time ms)`` of the account's positions plus the
        ``extra`` deals ``(terms, side, lots)``, notional in USD (unrounded).

        Positions without a quote or a USD rate are left out; the time is that of
        the oldest quote used (0 when none was).
        """
        gross = ZERO
        net: dict[str, Decimal] = {}
        oldest = 0
        legs = [
            (
                terms,
                totals.long_volume - totals.short_volume,
                totals.long_volume + totals.short_volume,
            )
            for terms, totals in account.totals.items()
        ]
        legs.extend((terms, side * lots, lots) for terms, side, lots in extra)
        for terms, signed, lots in legs:
            quote = self.quotes.get(terms.symbol)
            if quote is None:
                continue
            try:
                usd = terms.contract_size * quote.mid * self.fx.rate(terms.quote_currency, "USD")
            except ConversionUnavailable:
                continue
            oldest = quote.time_ms if not oldest else min(oldest, quote.time_ms)
            gross += lots * usd
            net[terms.symbol] = net.get(terms.symbol, ZERO) + signed * usd
        return gross, sum((abs(v) for v in net.values()), ZERO), oldest
