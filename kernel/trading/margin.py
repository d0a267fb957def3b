"""Margin and profit by MT5 calculation mode (DOMAIN.md; MQL5 ENUM_SYMBOL_CALC_MODE).

The seed's ``margin_rate`` (section 15; a group override may replace it, section 16)
is the margin requirement as a fraction of notional (EURUSD 0.01 = 1%); on the
leveraged modes the account's leverage caps it:

    required margin = notional in account currency x max(margin_rate, 1 / leverage)

with the notional given by the mode (``lots`` in lots, ``price`` the deal price):

=================  =======================================================  ==========
mode               notional (currency)                                      leverage
=================  =======================================================  ==========
FOREX              lots x contract_size (base)                              applies
FOREX_NO_LEVERAGE  lots x contract_size (base)                              ignored
CFD                lots x contract_size x price (quote)                     ignored
CFDLEVERAGE        lots x contract_size x price (quote)                     applies
CFDINDEX           lots x contract_size x price x tick_price / tick_size    ignored
                   (profit)
FUTURES            lots x initial_margin (profit)                           ignored
=================  =======================================================  ==========

so CFDINDEX margin is lots x contract x price x tick_price / tick_size x margin_rate
and FUTURES margin is lots x initial_margin x margin_rate, as MT5 computes them
(``margin_rate`` is then MT5's margin-rate multiplier, normally 1).

Worked example (DOMAIN.md, mql5.com forum 2271): 5 lots GBPUSD at 1.58772, 1:100,
margin_rate 0.01 → 500,000 GBP x 1.58772 = 793,860 USD x 0.01 = 7,938.60 USD.

Profit is (close - open) x contract_size x lots x side in the profit currency, except
FUTURES: (close - open) x tick_price / tick_size x lots x side; the caller converts
it to the account currency.

Hedged margin (DOMAIN.md: "the larger side is charged (cTrader) or a configurable
hedged-margin rate"). Every position keeps the margin snapshotted at its open (split in
proportion on partial closes); a hedging account's ``margin_used`` is, per symbol, the
charge of the group's :class:`HedgedMargin` policy on that symbol's buy and sell legs
(:class:`SymbolMargins`), rounded half-up to the account currency, summed over symbols:

* ``larger_side`` (cTrader): max(sum of buy margins, sum of sell margins);
* ``rate`` (MT5's hedged margin, ``margin_hedged`` / contract size as a fraction):
  the hedged volume h = min(buy lots, sell lots) of each side is charged at
  ``rate`` x that side's margin per lot, the unhedged excess in full, i.e.
  buy_margin + sell_margin - (1 - rate) x h x (buy_margin / buy_lots +
  sell_margin / sell_lots); rate 1 charges both sides in full, 0.5 charges a fully
  hedged pair of equal legs one leg, 0 nothing;
* ``none``: every position in full (sum of both sides).

A netting account holds one position per symbol, so every policy charges its margin.
Worked example (1:100, EURUSD 1 lot buy and 1 lot sell, 1,000.00 USD margin each):
``none`` 2,000.00, ``larger_side`` 1,000.00, ``rate`` 0.5 1,000.00, ``rate`` 0.25
500.00.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from brokerkernel.kernel.descriptors import SymbolTerms
from brokerkernel.kernel.trading.money import round_money

LEVERAGED_MODES = frozenset({"FOREX", "CFDLEVERAGE"})
BASE_NOTIONAL_MODES = frozenset({"FOREX", "FOREX_NO_LEVERAGE"})
TICK_MODES = frozenset({"CFDINDEX", "FUTURES"})
SUPPORTED_MODES = frozenset(
    {"FOREX", "FOREX_NO_LEVERAGE", "CFD", "CFDLEVERAGE", "CFDINDEX", "FUTURES"}
)

HEDGED_MARGIN_MODES = ("larger_side", "rate", "none")
ZERO = Decimal(0)
ONE = Decimal(1)

# convert(amount, currency) -> amount in account currency
ToAccount = Callable[[Decimal, str], Decimal]


def _tick_value(terms: SymbolTerms) -> Decimal:
    """``tick_price / tick_size`` (profit currency per unit of price per lot)."""
    if not terms.tick_size or terms.tick_price is None:
        raise ValueError(f"{terms.symbol}: {terms.calc_mode} needs tick_size and tick_price")
    return terms.tick_price / terms.tick_size


def notional(terms: SymbolTerms, volume: Decimal, price: Decimal) -> tuple[Decimal, str]:
    """The amount ``margin_rate`` applies to and its currency, by calculation mode
    (module table; ``volume`` in lots, ``price`` in quote currency).

    Raises ValueError for an unknown mode, or a CFDINDEX/FUTURES instrument without
    ``tick_size``/``tick_price`` (FUTURES also ``initial_margin``).
    """
    mode = terms.calc_mode
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"calculation mode {mode} is not supported")
    if mode in BASE_NOTIONAL_MODES:
        return volume * terms.contract_size, terms.base_currency
    if mode == "CFDINDEX":
        return volume * terms.contract_size * price * _tick_value(terms), terms.profit_currency
    if mode == "FUTURES":
        if terms.initial_margin is None:
            raise ValueError(f"{terms.symbol}: FUTURES needs initial_margin")
        return volume * terms.initial_margin, terms.profit_currency
    return volume * terms.contract_size * price, terms.quote_currency


def margin_fraction(terms: SymbolTerms, leverage: int) -> Decimal:
    """The fraction of notional held as margin: max(margin_rate, 1/leverage) when leveraged."""
    if terms.calc_mode in LEVERAGED_MODES:
        return max(terms.margin_rate, Decimal(1) / Decimal(leverage))
    return terms.margin_rate


def required_margin(
    terms: SymbolTerms, volume: Decimal, price: Decimal, leverage: int, to_account: ToAccount
) -> Decimal:
    """Margin in account currency (unrounded) for ``volume`` lots opened at ``price``."""
    amount, currency = notional(terms, volume, price)
    return to_account(amount, currency) * margin_fraction(terms, leverage)


def profit(
    terms: SymbolTerms, side: int, volume: Decimal, open_price: Decimal, close_price: Decimal
) -> Decimal:
    """Deal profit in the profit currency (unrounded); ``side`` +1 buy, -1 sell.

    FUTURES: price move x tick_price / tick_size x lots; every other mode: price move
    x contract_size x lots (DOMAIN.md). Raises ValueError as :func:`notional` does.
    """
    if terms.calc_mode == "FUTURES":
        return (close_price - open_price) * _tick_value(terms) * volume * side
    return (close_price - open_price) * terms.contract_size * volume * side


@dataclass(frozen=True, slots=True)
class SymbolMargins:
    """One symbol's open positions by side: lots and the sum of their snapshotted
    margins (account currency)."""

    buy_volume: Decimal = ZERO
    buy_margin: Decimal = ZERO
    sell_volume: Decimal = ZERO
    sell_margin: Decimal = ZERO

    def add(self, side: int, volume: Decimal, margin: Decimal) -> SymbolMargins:
        """These legs with a position of ``volume`` lots and ``margin`` added to side
        ``side`` (+1 buy, -1 sell); negative amounts remove it."""
        if side > 0:
            return SymbolMargins(
                self.buy_volume + volume,
                self.buy_margin + margin,
                self.sell_volume,
                self.sell_margin,
            )
        return SymbolMargins(
            self.buy_volume, self.buy_margin, self.sell_volume + volume, self.sell_margin + margin
        )

    @property
    def empty(self) -> bool:
        return not self.buy_volume and not self.sell_volume


@dataclass(frozen=True, slots=True)
class HedgedMargin:
    """A group's hedged-margin policy (module docstring): ``mode`` one of
    :data:`HEDGED_MARGIN_MODES`, ``rate`` (0..1) the fraction of margin charged on the
    hedged volume in ``rate`` mode."""

    mode: str = "none"
    rate: Decimal = ONE

    def charge(self, legs: SymbolMargins) -> Decimal:
        """The margin one symbol's legs are charged (account currency, unrounded)."""
        full = legs.buy_margin + legs.sell_margin
        if self.mode == "larger_side":
            return max(legs.buy_margin, legs.sell_margin)
        hedged = min(legs.buy_volume, legs.sell_volume)
        if self.mode != "rate" or not hedged or self.rate == ONE:
            return full
        per_lot_pair = (legs.buy_margin * legs.sell_volume + legs.sell_margin * legs.buy_volume) / (
            legs.buy_volume * legs.sell_volume
        )
        return full - (ONE - self.rate) * hedged * per_lot_pair

    def total(self, symbols: Iterable[SymbolMargins], currency: str) -> Decimal:
        """An account's margin used: the sum over symbols of :meth:`charge`, each
        rounded half-up to ``currency``'s minor unit."""
        return sum((round_money(self.charge(legs), currency) for legs in symbols), ZERO)


#: Every position in full: netting accounts, and hedging accounts of a group without policy.
FULL_MARGIN = HedgedMargin()
