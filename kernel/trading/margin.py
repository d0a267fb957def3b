"""Margin and profit by MT5 calculation mode (DOMAIN.md; MQL5 ENUM_SYMBOL_CALC_MODE).

The seed's ``margin_rate`` is the margin requirement as a fraction of notional
(EURUSD 0.01 = 1%); on the leveraged modes the account's leverage caps it:

    required margin = notional in account currency x max(margin_rate, 1 / leverage)

with the notional given by the mode:

=================  ===========================================  ==========
mode               notional                                     leverage
=================  ===========================================  ==========
FOREX              lots x contract_size (base currency)          applies
FOREX_NO_LEVERAGE  lots x contract_size (base currency)          ignored
CFD                lots x contract_size x price (quote currency) ignored
CFDLEVERAGE        lots x contract_size x price (quote currency) applies
=================  ===========================================  ==========

Worked example (DOMAIN.md, mql5.com forum 2271): 5 lots GBPUSD at 1.58772, 1:100,
margin_rate 0.01 → 500,000 GBP x 1.58772 = 793,860 USD x 0.01 = 7,938.60 USD.

Profit of every mode here is (close - open) x contract_size x lots x side, in the
profit currency, then converted to the account currency.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from brokerkernel.kernel.descriptors import SymbolTerms

LEVERAGED_MODES = frozenset({"FOREX", "CFDLEVERAGE"})
BASE_NOTIONAL_MODES = frozenset({"FOREX", "FOREX_NO_LEVERAGE"})
SUPPORTED_MODES = frozenset({"FOREX", "FOREX_NO_LEVERAGE", "CFD", "CFDLEVERAGE"})

# convert(amount, currency) -> amount in account currency
ToAccount = Callable[[Decimal, str], Decimal]


def notional(terms: SymbolTerms, volume: Decimal, price: Decimal) -> tuple[Decimal, str]:
    """The position's notional and the currency it is in (lots → base or quote units)."""
    if terms.calc_mode not in SUPPORTED_MODES:
        raise ValueError(f"calculation mode {terms.calc_mode} is not supported")
    if terms.calc_mode in BASE_NOTIONAL_MODES:
        return volume * terms.contract_size, terms.base_currency
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
    """Deal profit in the profit currency (unrounded); ``side`` +1 buy, -1 sell."""
    return (close_price - open_price) * terms.contract_size * volume * side
