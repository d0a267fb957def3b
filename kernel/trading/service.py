"""Market orders, closes and live account state (seed sections 6, 11, 13).

Market orders are asynchronous (seed section 11): :meth:`TradingService.submit`
queues a request and returns its id; a worker executes it and stores the result
(``executed`` with the ticket, or ``rejected`` with the reason) in the cache for
``order_request_ttl_s``. Requests are sharded to workers by login, so one account's
orders execute in submission order.

One order = one unit of work: the account row is locked, the venue fills, the
pre-trade rules run, and the position, its ledger row and the ``order.opened``
outbox event commit together. A rejection writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import (
    Adjuster,
    Fill,
    FillRequest,
    PreTradeCheck,
    PreTradeRule,
    Rejection,
    SymbolTerms,
    Venue,
)
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.pricing import ConversionUnavailable, FxConverter, Quote, QuoteBook
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.ids import IdAllocator
from brokerkernel.kernel.storage.models import Group, Position, TradeHistory, TradingAccount
from brokerkernel.kernel.trading import ledger
from brokerkernel.kernel.trading.margin import ToAccount, profit, required_margin
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.terms import load_terms, terms_from_json, terms_to_json

log = logging.getLogger(__name__)

CMD_NAMES = {0: "buy", 1: "sell"}
CLOSE_STEP = Decimal("0.001")
STATE_STALE_AFTER_S = 5.0


class TradingError(Exception):
    """A refused synchronous trading request; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A queued market order: ``cmd`` 0 buy / 1 sell, ``volume`` in lots."""

    request_id: str
    login: int
    symbol: str
    cmd: int
    volume: Decimal


def utc(time_ms: int) -> datetime:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def volume_on_step(volume: Decimal, step: Decimal) -> bool:
    return volume > 0 and volume % step == 0


class TradingService:
    """Executes market deals and computes account state. Money is Decimal throughout."""

    def __init__(
        self,
        *,
        db: Database,
        cache: Cache,
        clock: MarketClock,
        quotes: QuoteBook,
        fx: FxConverter,
        ids: IdAllocator,
        venue: Venue,
        adjusters: Sequence[Adjuster],
        rules: Sequence[tuple[str, PreTradeRule]],
        request_ttl_s: int,
        workers: int,
    ) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
        self.quotes = quotes
        self.fx = fx
        self.ids = ids
        self.venue = venue
        self.adjusters = list(adjusters)
        self.rules = list(rules)
        self.request_ttl_s = request_ttl_s
        self._queues: list[asyncio.Queue[OrderRequest]] = [asyncio.Queue() for _ in range(workers)]
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(queue), name=f"order-worker-{i}")
            for i, queue in enumerate(self._queues)
        ]

    async def stop(self) -> None:
        for queue in self._queues:
            await queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def idle(self) -> None:
        """Wait until every queued order has been executed or rejected."""
        for queue in self._queues:
            await queue.join()

    # --- market orders ---------------------------------------------------------------

    async def submit(self, login: int, symbol: str, cmd: int, volume: Decimal) -> str:
        """Queue a market order; returns the ``request_id`` to poll."""
        request = OrderRequest(str(uuid.uuid4()), login, symbol, cmd, volume)
        await self._store_status(request.request_id, {"status": "queued", "login": login})
        self._queues[login % len(self._queues)].put_nowait(request)
        return request.request_id

    async def request_status(self, request_id: str) -> dict[str, Any] | None:
        """``{"request_id", "status", "login", "order"|"reason"}``; None once expired/unknown."""
        raw = await self.cache.get(f"order:request:{request_id}")
        if raw is None:
            return None
        return {"request_id": request_id, **json.loads(raw)}

    async def _store_status(self, request_id: str, status: dict[str, Any]) -> None:
        await self.cache.set(f"order:request:{request_id}", json.dumps(status), self.request_ttl_s)

    async def _worker(self, queue: asyncio.Queue[OrderRequest]) -> None:
        while True:
            request = await queue.get()
            try:
                outcome = await self.execute(request)
                if isinstance(outcome, Rejection):
                    status: dict[str, Any] = {"status": "rejected", "reason": outcome.reason}
                else:
                    status = {"status": "executed", "order": outcome}
            except Exception:
                log.exception("order request %s failed", request.request_id)
                status = {"status": "rejected", "reason": "Internal error"}
            try:
                await self._store_status(request.request_id, {**status, "login": request.login})
            finally:
                queue.task_done()

    async def execute(self, request: OrderRequest) -> int | Rejection:
        """Execute one market order; returns the new position's ticket or a Rejection."""
        async with self.db.transaction() as session:
            account = await ledger.lock_account(session, request.login)
            if account is None or not account.is_active:
                return Rejection("Account not found or disabled")
            terms = await load_terms(session, account.group_id, request.symbol)
            if terms is None:
                return Rejection("Unknown symbol")
            if terms.tradeability != "tradable":
                return Rejection("Trading is disabled for this symbol")
            if not (terms.min_lot <= request.volume <= terms.max_lot) or not volume_on_step(
                request.volume, terms.lot_step
            ):
                return Rejection("Invalid volume")
            side = 1 if request.cmd == 0 else -1
            now_ms = self.clock.now_ms()
            outcome = await self.venue.execute(
                FillRequest(
                    request.login, side, request.volume, self.quote_for(terms), terms, now_ms
                )
            )
            if isinstance(outcome, Rejection):
                return outcome
            try:
                margin = round_money(
                    required_margin(
                        terms,
                        request.volume,
                        outcome.price,
                        account.leverage,
                        self._converter(terms, outcome.price, account.currency),
                    ),
                    account.currency,
                )
                open_fx_rate = self._profit_rate(terms, outcome.price, account.currency)
            except ConversionUnavailable as exc:
                return Rejection(f"No conversion rate: {exc}")
            positions = await self._positions(session, account.login)
            equity = account.balance + account.credit + self._floating(positions, account.currency)
            group_name = await session.scalar(
                select(Group.name).where(Group.id == account.group_id)
            )
            check = PreTradeCheck(
                login=account.login,
                group=group_name or "",
                currency=account.currency,
                leverage=account.leverage,
                balance=account.balance,
                credit=account.credit,
                equity=equity,
                margin_used=account.margin,
                symbol=terms.symbol,
                side=side,
                volume=request.volume,
                price=outcome.price,
                required_margin=margin,
                open_positions=len(positions),
            )
            for _name, rule in self.rules:
                rejection = rule.check(check)
                if rejection is not None:
                    return rejection
            ticket = await self._open(
                session, account, terms, request, side, outcome, margin, open_fx_rate
            )
        return ticket

    async def _open(
        self,
        session: AsyncSession,
        account: TradingAccount,
        terms: SymbolTerms,
        request: OrderRequest,
        side: int,
        fill: Fill,
        margin: Decimal,
        open_fx_rate: Decimal,
    ) -> int:
        ticket = await self.ids.next_ticket(session)
        opened_at = utc(fill.time_ms)
        session.add(
            Position(
                ticket=ticket,
                login=account.login,
                symbol=terms.symbol,
                cmd=request.cmd,
                volume=request.volume,
                open_price=fill.price,
                open_time=opened_at,
                sl=None,
                tp=None,
                margin=margin,
                open_fx_rate=open_fx_rate,
                comment=None,
                terms=terms_to_json(terms),
            )
        )
        ledger.append(
            session,
            account,
            "order_open",
            reference_type="order",
            reference_id=str(ticket),
            idempotency_key=f"order_open:{ticket}",
            description=f"Open #{ticket} {CMD_NAMES[request.cmd]} {request.volume} "
            f"{terms.symbol} @ {fill.price}",
            at=opened_at,
            margin_delta=margin,
        )
        record_event(
            session,
            "order.opened",
            {
                "login": account.login,
                "ticket": ticket,
                "symbol": terms.symbol,
                "cmd": request.cmd,
                "volume": str(request.volume),
                "price": str(fill.price),
                "margin": str(margin),
                "request_id": request.request_id,
            },
            opened_at,
        )
        return ticket

    # --- closing ----------------------------------------------------------------------

    async def close(
        self, login: int, ticket: int, volume: Decimal | None = None, reason: str = "manual"
    ) -> TradeHistory:
        """Close ``volume`` lots of position ``ticket`` (all of it when None).

        Partial close (seed section 11): ``volume`` a multiple of 0.001, the remainder
        zero or >= 0.001; the closed part becomes its own history row linked by
        ``parent_order`` with a new ticket, and margin, commission and swap are split
        in proportion (the remainder keeps the rest, so totals are exact).
        Raises TradingError 404 (no such position), 422 (bad volume), 409 (no quote).
        """
        async with self.db.transaction() as session:
            account = await ledger.lock_account(session, login)
            if account is None:
                raise TradingError(404, "Account not found")
            position = await session.get(Position, ticket, with_for_update=True)
            if position is None or position.login != login:
                raise TradingError(404, "Position not found")
            volume = position.volume if volume is None else volume
            remainder = position.volume - volume
            if volume <= 0 or volume % CLOSE_STEP != 0 or remainder < 0:
                raise TradingError(
                    422, "volume must be a positive multiple of 0.001 not above the position's"
                )
            terms = terms_from_json(position.terms)
            side = 1 if position.cmd == 0 else -1
            now_ms = self.clock.now_ms()
            outcome = await self.venue.execute(
                FillRequest(login, -side, volume, self.quote_for(terms), terms, now_ms)
            )
            if isinstance(outcome, Rejection):
                raise TradingError(409, outcome.reason)
            try:
                close_fx_rate = self._profit_rate(terms, outcome.price, account.currency)
            except ConversionUnavailable as exc:
                raise TradingError(409, f"No conversion rate: {exc}") from exc
            deal_profit = round_money(
                profit(terms, side, volume, position.open_price, outcome.price) * close_fx_rate,
                account.currency,
            )
            full = remainder == 0
            if full:
                released, commission, swap = position.margin, position.commission, position.swap
                history_ticket, parent = position.ticket, None
                await session.delete(position)
            else:
                share = volume / position.volume
                released = round_money(position.margin * share, account.currency)
                commission = round_money(position.commission * share, account.currency)
                swap = round_money(position.swap * share, account.currency)
                position.margin -= released
                position.commission -= commission
                position.swap -= swap
                position.volume = remainder
                history_ticket, parent = await self.ids.next_ticket(session), position.ticket
            closed_at = utc(outcome.time_ms)
            deal = TradeHistory(
                ticket=history_ticket,
                login=login,
                symbol=position.symbol,
                cmd=position.cmd,
                volume=volume,
                open_price=position.open_price,
                open_time=position.open_time,
                close_price=outcome.price,
                close_time=closed_at,
                profit=deal_profit,
                commission=commission,
                swap=swap,
                margin=released,
                open_fx_rate=position.open_fx_rate,
                close_fx_rate=close_fx_rate,
                reason=reason,
                parent_order=parent,
            )
            session.add(deal)
            label = f"#{position.ticket} {volume} {position.symbol} @ {outcome.price}"
            ledger.append(
                session,
                account,
                "margin_release",
                reference_type="order",
                reference_id=str(history_ticket),
                idempotency_key=f"margin_release:{history_ticket}",
                description=f"Margin released, close {label}",
                at=closed_at,
                margin_delta=-released,
            )
            ledger.append(
                session,
                account,
                "trade_pnl",
                reference_type="order",
                reference_id=str(history_ticket),
                idempotency_key=f"trade_pnl:{history_ticket}",
                description=f"Profit, close {label}",
                at=closed_at,
                balance_delta=deal_profit,
            )
            record_event(
                session,
                "order.closed",
                {
                    "login": login,
                    "ticket": position.ticket,
                    "deal": history_ticket,
                    "symbol": position.symbol,
                    "volume": str(volume),
                    "price": str(outcome.price),
                    "profit": str(deal_profit),
                    "reason": reason,
                    "remaining_volume": str(remainder),
                },
                closed_at,
            )
        return deal

    # --- state --------------------------------------------------------------------------

    async def account_state(self, login: int) -> dict[str, Any] | None:
        """Live state (seed section 6): money in account currency, levels in percent.

        ``margin_level`` = equity / margin x 100 (null without margin);
        ``max_withdrawable`` = min(balance, free_margin) with open positions, else balance;
        exposures are notional in USD (net: per symbol, hedged sides offset);
        ``age_s`` is the age of the oldest quote used, ``stale`` when above 5 s.
        """
        async with self.db.read() as session:
            account = await session.get(TradingAccount, login)
            if account is None:
                return None
            positions = await self._positions(session, login)
        currency = account.currency
        floating = self._floating(positions, currency)
        equity = account.balance + account.credit + floating
        free_margin = equity - account.margin
        gross = Decimal(0)
        net_by_symbol: dict[str, Decimal] = {}
        oldest_ms = self.clock.now_ms()
        for position in positions:
            quote = self.quotes.get(position.symbol)
            price = quote.mid if quote is not None else position.open_price
            if quote is not None:
                oldest_ms = min(oldest_ms, quote.time_ms)
            terms = terms_from_json(position.terms)
            try:
                usd = (
                    position.volume
                    * terms.contract_size
                    * price
                    * self.fx.rate(terms.quote_currency, "USD")
                )
            except ConversionUnavailable:
                continue
            gross += usd
            sign = 1 if position.cmd == 0 else -1
            net_by_symbol[position.symbol] = (
                net_by_symbol.get(position.symbol, Decimal(0)) + sign * usd
            )
        age_s = max(0.0, (self.clock.now_ms() - oldest_ms) / 1000)
        return {
            "login": str(login),
            "balance": account.balance,
            "credit": account.credit,
            "equity": round_money(equity, currency),
            "pnl": round_money(floating, currency),
            "free_margin": round_money(free_margin, currency),
            "margin_level": (
                (equity / account.margin * 100).quantize(Decimal("0.01"))
                if account.margin
                else None
            ),
            "margin_used": account.margin,
            "max_withdrawable": round_money(
                max(Decimal(0), min(account.balance, free_margin))
                if positions
                else account.balance,
                currency,
            ),
            "gross_exposure": round_money(gross, "USD"),
            "net_exposure": round_money(
                sum((abs(v) for v in net_by_symbol.values()), Decimal(0)), "USD"
            ),
            "currency": currency,
            "stale": age_s > STATE_STALE_AFTER_S,
            "age_s": round(age_s, 3),
        }

    # --- helpers ------------------------------------------------------------------------

    def quote_for(self, terms: SymbolTerms) -> Quote | None:
        """The latest quote for the symbol as the group sees it (adjusters applied)."""
        quote = self.quotes.get(terms.symbol)
        if quote is None:
            return None
        for adjuster in self.adjusters:
            quote = adjuster.adjust(quote, terms)
        return quote

    async def _positions(self, session: AsyncSession, login: int) -> list[Position]:
        return list(
            (
                await session.scalars(
                    select(Position).where(Position.login == login).order_by(Position.ticket)
                )
            ).all()
        )

    def mark(self, position: Position, currency: str) -> tuple[Decimal, Decimal] | None:
        """``(close_price, profit)`` of a position at the group's closing side (buy
        closes on bid, sell on ask), profit unrounded in ``currency``; None without a
        quote or conversion rate."""
        terms = terms_from_json(position.terms)
        quote = self.quote_for(terms)
        if quote is None:
            return None
        side = 1 if position.cmd == 0 else -1
        close_price = quote.bid if side == 1 else quote.ask
        try:
            rate = self._profit_rate(terms, close_price, currency)
        except ConversionUnavailable:
            return None
        return close_price, profit(
            terms, side, position.volume, position.open_price, close_price
        ) * rate

    def _floating(self, positions: Sequence[Position], currency: str) -> Decimal:
        """Unrealised profit of ``positions`` in account currency (unrounded)."""
        total = Decimal(0)
        for position in positions:
            marked = self.mark(position, currency)
            if marked is not None:
                total += marked[1]
        return total

    def _profit_rate(self, terms: SymbolTerms, price: Decimal, currency: str) -> Decimal:
        """Units of account currency per unit of the symbol's profit currency."""
        return self._converter(terms, price, currency)(Decimal(1), terms.profit_currency)

    def _converter(self, terms: SymbolTerms, price: Decimal, currency: str) -> ToAccount:
        """Converts to ``currency``; the symbol's own pair converts at the deal price."""

        def to_account(amount: Decimal, source: str) -> Decimal:
            if source == currency:
                return amount
            if source == terms.base_currency and terms.quote_currency == currency:
                return amount * price
            if source == terms.quote_currency and terms.base_currency == currency:
                return amount / price
            return self.fx.convert(amount, source, currency)

        return to_account
