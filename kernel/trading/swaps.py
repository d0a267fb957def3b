"""Swaps charged at the daily rollover (DOMAIN.md swaps; seed section 16 group settings).

The rollover happens every day at ``[kernel.trading] rollover_time`` in
``rollover_timezone`` (default 00:00 UTC; MT5 brokers often use 00:00 server time,
e.g. ``EET``), by the market clock. Each rollover charges every position that was
open at that instant for the trading day that ended there (the local date just
before the rollover), one ledger row ``swap`` per position, and adds the amount to
the position's ``swap`` (``last_rollover_at`` records the last rollover charged, so a
charge is never repeated and missed rollovers are caught up in order). A rollover
whose amount no quote converts yet (e.g. the catch-up right after a restart, before
the FX quotes arrive) stays due, with the later ones, until the position's next
settlement (the next rollover run, a close, an addition to a netting position).

Amount per position and night, in the symbol's terms as the group resolves them now
(rates x the group's ``swap_multiplier``; zero when the group is swap-free — Islamic
groups are — or has swaps disabled, and during ``swap_free_days`` after the account
was created):

* ``points``: rate x point (10^-digits) x contract size x lots, in the profit currency
  (DOMAIN.md: 2 lots EURUSD at +7 points = 7 x 0.00001 x 100,000 x 2 = 14 USD);
* ``percent``: rate / 100 / 360 x price x contract size x lots, in the quote
  currency, at the position's closing price;
* ``money``: rate x lots, in the account currency.

``swap_long`` applies to buys, ``swap_short`` to sells; a positive amount is paid to
the trader. Nights: with a ``swap_triple_day`` (forex) a day ending on that weekday
counts 3, Saturday and Sunday count 0 (the triple day carries the weekend) and other
days 1; without one (crypto) every day counts 1. Amounts convert to the account
currency like profit and round half-up to its minor unit.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from brokerkernel.kernel.pricing import ConversionUnavailable
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.batch import ShardTransaction
from brokerkernel.kernel.trading.jobs import Env, Job
from brokerkernel.kernel.trading.margin import profit
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.state import AccountState, OpenPosition
from brokerkernel.kernel.trading.terms import effective_swap

ZERO = Decimal(0)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAYS_PER_YEAR = Decimal(360)


class RolloverSchedule:
    """Rollover instants: every day at ``at`` (``"HH:MM"``) in ``timezone``."""

    def __init__(self, at: str, timezone: str) -> None:
        hours, minutes = (int(part) for part in at.split(":"))
        self.at = time(hours, minutes)
        self.zone = ZoneInfo(timezone)

    def last(self, now: datetime) -> datetime:
        """The latest rollover at or before ``now`` (aware UTC in and out)."""
        local = now.astimezone(self.zone)
        candidate = datetime.combine(local.date(), self.at, self.zone)
        if candidate > local:
            candidate = datetime.combine(local.date() - timedelta(days=1), self.at, self.zone)
        return candidate.astimezone(now.tzinfo)

    def next(self, now: datetime) -> datetime:
        """The first rollover after ``now``."""
        local = self.last(now).astimezone(self.zone)
        return datetime.combine(local.date() + timedelta(days=1), self.at, self.zone).astimezone(
            now.tzinfo
        )

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Rollovers in (``start``, ``end``], oldest first."""
        found: list[datetime] = []
        rollover = self.last(end)
        while rollover > start:
            found.append(rollover)
            rollover = self.last(rollover - timedelta(microseconds=1))
        return found[::-1]

    def day_ended(self, rollover: datetime) -> str:
        """Weekday name of the trading day that ends at ``rollover``."""
        return WEEKDAYS[(rollover - timedelta(microseconds=1)).astimezone(self.zone).weekday()]


def nights(day: str, triple_day: str | None) -> int:
    """Nights charged for the trading day ``day`` (module docstring)."""
    if triple_day is None:
        return 1
    if day in ("saturday", "sunday"):
        return 0
    return 3 if day == triple_day else 1


def swap_amount(
    env: Env, account: AccountState, position: OpenPosition, rollover: datetime
) -> tuple[Decimal, int]:
    """``(amount in account currency rounded, nights)`` of one rollover for ``position``.

    Raises ConversionUnavailable when the amount cannot be converted.
    """
    group = env.terms.group(account.group_id)
    terms = env.terms.terms(account.group_id, position.symbol) or position.terms
    if group is None:
        return ZERO, 0
    count = nights(env.rollovers.day_ended(rollover), terms.swap_triple_day)
    if not count or rollover < account.created_at + timedelta(days=group.swap_free_days):
        return ZERO, count
    long_rate, short_rate = effective_swap(terms, group)
    rate = long_rate if position.side > 0 else short_rate
    if not rate:
        return ZERO, count
    volume = position.volume
    if terms.swap_type == "money":
        return round_money(rate * volume * count, account.currency), count
    quote = env.valuation.quote_for(terms)
    price = position.open_price
    if quote is not None:
        price = quote.bid if position.side > 0 else quote.ask
    if terms.swap_type == "points":
        amount = profit(terms, 1, volume, ZERO, rate * Decimal(1).scaleb(-terms.digits)) * count
        to_account = env.valuation.profit_rate(terms, price, account.currency, amount >= 0)
        return round_money(amount * to_account, account.currency), count
    amount = rate / 100 / DAYS_PER_YEAR * price * terms.contract_size * volume * count
    converted = env.valuation.to_account(terms, price, account.currency)(
        amount, terms.quote_currency
    )
    return round_money(converted, account.currency), count


def settle_swaps(
    env: Env, tx: ShardTransaction, account: AccountState, position: OpenPosition
) -> OpenPosition:
    """Charge every rollover the position has been open over and not yet paid, up to
    now; returns the position as it is afterwards (also staged)."""
    unsettled = position
    since = position.last_rollover_at or position.open_time
    for rollover in env.rollovers.between(since, tx.now):
        try:
            amount, count = swap_amount(env, account, position, rollover)
        except ConversionUnavailable:
            break  # stays due (with the later ones) until a rate is quoted
        position = replace(position, swap=position.swap + amount, last_rollover_at=rollover)
        if amount:
            before = audit.snapshot(account)
            key = f"swap:{position.ticket}:{rollover.isoformat()}"
            tx.ledger_entry(
                account,
                "swap",
                reference_type="order",
                reference_id=str(position.ticket),
                idempotency_key=key,
                description=f"Swap #{position.ticket} {position.volume} {position.symbol}, "
                f"{count} night(s) to {rollover.isoformat()}",
                balance_delta=amount,
            )
            details: dict[str, Any] = {
                "symbol": position.symbol,
                "volume": str(position.volume),
                "amount": str(amount),
                "nights": count,
                "rollover_at": rollover.isoformat(),
            }
            tx.audit_row(
                account,
                before,
                entity_type="order",
                entity_id=str(position.ticket),
                action="swap",
                details=details,
                source=audit.SWAP_SERVICE,
            )
            tx.event(
                "position.swap_charged",
                {"login": account.login, "ticket": position.ticket, **details},
            )
    if position is not unsettled:
        tx.put_position(account, position, new=False)
    return position


class SwapJob(Job):
    """Charge the account's positions every rollover due by now."""

    def __init__(self, login: int) -> None:
        self.login = login

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        if account is None:
            return None
        for position in list(account.positions.values()):
            settle_swaps(env, tx, account, position)
        return None
