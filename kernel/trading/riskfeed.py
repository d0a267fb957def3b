"""Keeps the vectorised risk engine in step with the trading core's committed state.

A :class:`RiskFeed` is a :class:`~brokerkernel.kernel.trading.jobs.StateWatcher`: after
every commit of an order worker it hands the risk engine
(:class:`~brokerkernel.kernel.risk.engine.RiskEngine`) the accounts' new money and
group levels and every position opened, resized or closed; an account (re)loaded from
the database replaces what the engine knew of it. Positions are given with the
group's closing offset (the spread markup the group's quote adjusters add) and the
profit of one lot per 1.0 of price (contract size, or tick value for FUTURES).
"""

from __future__ import annotations

from decimal import Decimal

from brokerkernel.kernel.pricing import Quote, TickSubscriber
from brokerkernel.kernel.risk.engine import RiskEngine
from brokerkernel.kernel.trading.margin import profit
from brokerkernel.kernel.trading.state import AccountState, OpenPosition, PendingState
from brokerkernel.kernel.trading.terms import TermsCache
from brokerkernel.kernel.trading.valuation import Valuation

ZERO = Decimal(0)
ONE = Decimal(1)


def tick_subscriber(engine: RiskEngine) -> TickSubscriber:
    """A quote-book subscriber that re-marks ``engine`` on every tick (floats only
    inside the engine; its crossings go to the engine's sink)."""

    def on_tick(quote: Quote) -> None:
        engine.on_tick(quote.symbol, float(quote.bid), float(quote.ask), quote.time_ms)

    return on_tick


class RiskFeed:
    """Feeds ``engine`` from committed account state (see the module docstring)."""

    def __init__(self, engine: RiskEngine, terms: TermsCache, valuation: Valuation) -> None:
        self.engine = engine
        self._terms = terms
        self._valuation = valuation
        self._tickets: dict[int, set[int]] = {}

    def account_loaded(self, account: AccountState) -> None:
        for ticket in self._tickets.pop(account.login, set()):
            self.engine.remove_position(ticket)
        self.money_changed(account)
        for position in account.positions.values():
            self.position_changed(account, position)

    def money_changed(self, account: AccountState) -> None:
        group = self._terms.group(account.group_id)
        self.engine.set_account(
            account.login,
            currency=account.currency,
            balance=account.balance,
            credit=account.credit,
            margin_used=account.margin,
            stopout_level=None if group is None else group.stopout_level,
            margin_call_level=None if group is None else group.margin_call_level,
        )
        self._tickets.setdefault(account.login, set())

    def position_changed(self, account: AccountState, position: OpenPosition) -> None:
        watched = self._tickets.get(account.login)
        if watched is None:
            self.money_changed(account)
            watched = self._tickets[account.login]
        if position.ticket in watched:
            self.engine.resize_position(position.ticket, position.volume, position.open_price)
            return
        terms = position.terms
        self.engine.add_position(
            position.ticket,
            account.login,
            position.symbol,
            position.side,
            position.volume,
            position.open_price,
            profit(terms, 1, ONE, ZERO, ONE),
            terms.profit_currency,
            close_offset=self._close_offset(position),
            base_currency=terms.base_currency,
            quote_currency=terms.quote_currency,
        )
        watched.add(position.ticket)

    def position_removed(self, account: AccountState, position: OpenPosition) -> None:
        watched = self._tickets.get(account.login)
        if watched is not None and position.ticket in watched:
            watched.discard(position.ticket)
            self.engine.remove_position(position.ticket)

    def pending_changed(self, account: AccountState, order: PendingState) -> None:
        return None

    def _close_offset(self, position: OpenPosition) -> Decimal:
        """Group closing price minus raw closing price at the latest quote (0 without one)."""
        raw = self._valuation.quotes.get(position.symbol)
        if raw is None:
            return ZERO
        seen = self._valuation.adjust(raw, position.terms)
        return seen.bid - raw.bid if position.side > 0 else seen.ask - raw.ask
