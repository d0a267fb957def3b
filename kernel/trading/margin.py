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
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from brokerkernel.kernel.descriptors import SymbolTerms

LEVERAGED_MODES = frozenset({"FOREX", "CFDLEVERAGE"})
BASE_NOTIONAL_MODES = frozenset({"FOREX", "FOREX_NO_LEVERAGE"})
TICK_MODES = frozenset({"CFDINDEX", "FUTURES"})
SUPPORTED_MODES = frozenset(
    {"FOREX", "FOREX_NO_LEVERAGE", "CFD", "CFDLEVERAGE", "CFDINDEX", "FUTURES"}
)

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
