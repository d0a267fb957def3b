"""Pending orders (seed section 12): place, modify, cancel, trigger, expire.

``cmd`` 2 BUY_LIMIT, 3 SELL_LIMIT, 4 BUY_STOP, 5 SELL_STOP, 6 BUY_STOP_LIMIT,
7 SELL_STOP_LIMIT. Rules:

* the trigger price is validated against the group's current quote: BUY_LIMIT < ask,
  SELL_LIMIT > bid, BUY_STOP > ask, SELL_STOP < bid, BUY_STOP_LIMIT > ask,
  SELL_STOP_LIMIT < bid (no fresh quote: 409);
* ``limit_price`` is required for cmd 6/7 and refused for cmd 2-5 (also when
  modifying); prices must lie on the instrument's grid (``digits``);
* SL/TP are checked against the price the order would open at (the trigger price,
  the limit price of a stop-limit): a buy's SL below it and TP above, a sell's the
  other way round; 0 removes one when modifying;
* ``expiry_at`` None is good till cancelled; a set one must be in the future
  (market clock) and the order expires when the market clock passes it;
* volume and tradeability as for market orders; no margin is reserved — margin (and
  every pre-trade check) is checked when the order executes, and an order refused
  then is ``rejected`` with the reason.

Triggers (DOMAIN.md): buy limit when ask <= price, buy stop when ask >= price, sell
limit when bid >= price, sell stop when bid <= price. A stop-limit's stop triggers as
a stop; if the price is then within the limit (buy: ask <= limit, sell: bid >= limit)
it fills at once, otherwise the price gapped past the limit and the order becomes a
regular limit order at the limit price (cmd 2/3) that waits. A triggered order fills
as a market deal at the quote that triggered it.

Modify and cancel work under the account's row lock (``SELECT ... FOR UPDATE``), like
every change to the account, so they cannot race a trigger. Statuses: ``active``,
``filled``, ``cancelled``, ``expired``, ``rejected``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from brokerkernel.kernel.descriptors import Rejection, SymbolTerms
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.batch import ShardTransaction
from brokerkernel.kernel.trading.deals import (
    CLOSE_ONLY,
    NOT_TRADABLE,
    Deal,
    open_deal,
    valid_volume,
)
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.instruments import field_error
from brokerkernel.kernel.trading.jobs import Env, FutureJob, Job
from brokerkernel.kernel.trading.models import PendingOrder
from brokerkernel.kernel.trading.positions import fresh_quote, on_grid, stops_errors
from brokerkernel.kernel.trading.state import AccountState, PendingState

ZERO = Decimal(0)
PENDING_NAMES = {
    2: "BUY_LIMIT",
    3: "SELL_LIMIT",
    4: "BUY_STOP",
    5: "SELL_STOP",
    6: "BUY_STOP_LIMIT",
    7: "SELL_STOP_LIMIT",
}
STOP_LIMITS = (6, 7)
NOT_FOUND = "Pending order not found"
NOT_ACTIVE = "Pending order is not active"
#: cmd -> (side of the quote compared, trigger must be "above" or "below" it)
PLACEMENT = {
    2: ("ask", "below"),
    3: ("bid", "above"),
    4: ("ask", "above"),
    5: ("bid", "below"),
    6: ("ask", "above"),
    7: ("bid", "below"),
}


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A validated body of ``POST /api/customer/orders/pending`` (prices in the quote
    currency, ``volume`` in lots, ``expiry_at`` aware UTC or None)."""

    login: int
    symbol: str
    cmd: int
    volume: Decimal
    trigger_price: Decimal
    limit_price: Decimal | None = None
    sl: Decimal | None = None
    tp: Decimal | None = None
    expiry_at: datetime | None = None
    comment: str | None = None


def triggered(cmd: int, trigger_price: Decimal, quote: Quote) -> bool:
    """True when ``quote`` (the group's) reaches ``trigger_price`` for ``cmd``."""
    side, _ = PLACEMENT[cmd]
    price = quote.ask if side == "ask" else quote.bid
    rises = cmd in (3, 4, 6)  # sell limit, buy stop, buy stop-limit fire on a rise
    return price >= trigger_price if rises else price <= trigger_price


def price_errors(
    cmd: int,
    terms: SymbolTerms,
    quote: Quote,
    trigger_price: Decimal,
    limit_price: Decimal | None,
    sl: Decimal | None,
    tp: Decimal | None,
    check_trigger: bool = True,
) -> list[dict[str, Any]]:
    """Every 422 item of an order's prices (module docstring rules)."""
    errors = []
    for name, price in (("trigger_price", trigger_price), ("limit_price", limit_price)):
        if price is not None and not on_grid(price, terms.digits):
            errors.append(
                field_error(name, f"must be a multiple of 1E-{terms.digits}", "price_grid")
            )
    side, direction = PLACEMENT[cmd]
    market = quote.ask if side == "ask" else quote.bid
    wrong = trigger_price <= market if direction == "above" else trigger_price >= market
    if check_trigger and wrong:
        errors.append(
            field_error(
                "trigger_price",
                f"{PENDING_NAMES[cmd]} trigger_price must be {direction} the {side} {market}",
                "trigger_price",
            )
        )
    opens_at = limit_price if cmd in STOP_LIMITS and limit_price is not None else trigger_price
    errors += stops_errors(
        1 if cmd % 2 == 0 else -1, terms.digits, opens_at, sl, tp, "the order price"
    )
    return errors


def _terms(env: Env, account: AccountState, symbol: str) -> SymbolTerms:
    terms = env.terms.terms(account.group_id, symbol)
    if terms is None:
        raise TradingError(422, [field_error("symbol", f"unknown symbol {symbol}", "symbol")])
    if terms.tradeability == "non_tradable":
        raise TradingError(409, NOT_TRADABLE)
    if terms.tradeability == "close_only":
        raise TradingError(409, CLOSE_ONLY)
    return terms


def _details(order: PendingState) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "cmd": order.cmd,
        "volume": str(order.volume),
        "trigger_price": str(order.trigger_price),
        "limit_price": None if order.limit_price is None else str(order.limit_price),
        "sl": None if order.sl is None else str(order.sl),
        "tp": None if order.tp is None else str(order.tp),
        "expiry_at": None if order.expiry_at is None else order.expiry_at.isoformat(),
        "status": order.status,
    }


def _record(
    tx: ShardTransaction,
    account: AccountState,
    order: PendingState,
    action: str,
    new: bool = False,
    **extra: Any,
) -> None:
    """Stage the order's row, its audit row and its ``pending_order.<action>`` event."""
    before = audit.snapshot(account)
    tx.put_pending(account, order, new)
    details = {**_details(order), **extra}
    tx.audit_row(
        account,
        before,
        entity_type="pending_order",
        entity_id=str(order.id),
        action=action,
        details=details,
    )
    tx.event(f"pending_order.{action}", {"login": account.login, "order_id": order.id, **details})


def _account(account: AccountState | None) -> AccountState:
    if account is None:
        raise TradingError(404, "Account not found")
    if not account.is_active:
        raise TradingError(409, "Account is disabled")
    return account


class PlacePendingJob(FutureJob):
    """Place a pending order; returns the :class:`PendingState`. Raises TradingError
    404 (account), 409 (disabled account or symbol, no fresh quote), 422 (every
    field error at once)."""

    def __init__(self, request: PendingRequest) -> None:
        super().__init__(request.login)
        self.request = request

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        account = _account(account)
        r = self.request
        terms = _terms(env, account, r.symbol)
        errors = []
        if not valid_volume(terms, r.volume):
            errors.append(
                field_error(
                    "volume",
                    f"must be {terms.min_lot}..{terms.max_lot} lots in steps of {terms.lot_step}",
                    "volume",
                )
            )
        if r.cmd in STOP_LIMITS and r.limit_price is None:
            errors.append(field_error("limit_price", "required for cmd 6 and 7", "required"))
        if r.cmd not in STOP_LIMITS and r.limit_price is not None:
            errors.append(field_error("limit_price", "only allowed for cmd 6 and 7", "forbidden"))
        if r.expiry_at is not None and r.expiry_at <= tx.now:
            errors.append(field_error("expiry_at", "must be in the future", "expiry"))
        quote = fresh_quote(env, terms, tx.now_ms)
        errors += price_errors(r.cmd, terms, quote, r.trigger_price, r.limit_price, r.sl, r.tp)
        if errors:
            raise TradingError(422, errors)
        order = PendingState(
            id=await tx.ticket(),
            login=account.login,
            symbol=r.symbol,
            cmd=r.cmd,
            volume=r.volume,
            trigger_price=r.trigger_price,
            limit_price=r.limit_price,
            sl=r.sl,
            tp=r.tp,
            expiry_at=r.expiry_at,
            comment=r.comment,
            status="active",
            created_at=tx.now,
            updated_at=tx.now,
        )
        _record(tx, account, order, "placed", new=True)
        return order


async def _active(
    tx: ShardTransaction, account: AccountState | None, order_id: int
) -> tuple[AccountState, PendingState]:
    """The account's active order ``order_id``; 404 unknown, 409 no longer active."""
    if account is None:
        raise TradingError(404, "Account not found")
    order = account.pending.get(order_id)
    if order is not None:
        return account, order
    status = await tx.session.scalar(
        select(PendingOrder.status).where(
            PendingOrder.id == order_id, PendingOrder.login == account.login
        )
    )
    if status is None:
        raise TradingError(404, NOT_FOUND)
    raise TradingError(409, f"{NOT_ACTIVE} (status {status})")


#: Marks a modify field that was not sent.
UNSET: Any = object()


class ModifyPendingJob(FutureJob):
    """Modify an active order's ``sl``, ``tp``, ``trigger_price``, ``limit_price``
    (:data:`UNSET` leaves one alone; sl/tp 0 removes). Returns the new state."""

    def __init__(
        self,
        login: int,
        order_id: int,
        *,
        sl: Any = UNSET,
        tp: Any = UNSET,
        trigger_price: Any = UNSET,
        limit_price: Any = UNSET,
    ) -> None:
        super().__init__(login)
        self.order_id = order_id
        self.fields = {
            "sl": sl,
            "tp": tp,
            "trigger_price": trigger_price,
            "limit_price": limit_price,
        }

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        account, order = await _active(tx, account, self.order_id)
        sent = {k: v for k, v in self.fields.items() if v is not UNSET}
        terms = env.terms.terms(account.group_id, order.symbol)
        if terms is None:
            raise TradingError(409, NOT_TRADABLE)
        errors = []
        if "limit_price" in sent and order.cmd not in STOP_LIMITS:
            errors.append(
                field_error(
                    "limit_price", "can only be set on stop-limit orders (cmd 6/7)", "forbidden"
                )
            )
        for name in ("sl", "tp"):
            if name in sent and sent[name] == ZERO:
                sent[name] = None
        changed = replace(order, **sent, updated_at=tx.now)
        quote = fresh_quote(env, terms, tx.now_ms)
        errors += price_errors(
            order.cmd,
            terms,
            quote,
            changed.trigger_price,
            changed.limit_price,
            changed.sl,
            changed.tp,
            check_trigger="trigger_price" in sent,
        )
        if errors:
            raise TradingError(422, errors)
        _record(tx, account, changed, "modified")
        return changed


class CancelPendingJob(FutureJob):
    """Cancel an active order (seed: only active orders); returns the final state."""

    def __init__(self, login: int, order_id: int) -> None:
        super().__init__(login)
        self.order_id = order_id

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        account, order = await _active(tx, account, self.order_id)
        cancelled = replace(order, status="cancelled", updated_at=tx.now)
        _record(tx, account, cancelled, "cancelled")
        return cancelled


class ExpireJob(Job):
    """The market clock passed the order's ``expiry_at``."""

    def __init__(self, login: int, order_id: int) -> None:
        self.login = login
        self.order_id = order_id

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        order = account.pending.get(self.order_id) if account is not None else None
        if account is None or order is None:
            return None
        if order.expiry_at is None or order.expiry_at > tx.now:
            tx.after_commit(lambda: _rearm(env, account, order))
            return None
        _record(tx, account, replace(order, status="expired", updated_at=tx.now), "expired")
        return None


def _rearm(env: Env, account: AccountState, order: PendingState) -> None:
    for watcher in env.watchers:
        watcher.pending_changed(account, order)


class PendingTriggerJob(Job):
    """The trigger index saw ``quote`` reach the order's trigger price."""

    def __init__(self, login: int, order_id: int, quote: Quote) -> None:
        self.login = login
        self.order_id = order_id
        self.quote = quote

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        order = account.pending.get(self.order_id) if account is not None else None
        if account is None or order is None:
            return None
        if order.expiry_at is not None and order.expiry_at <= tx.now:
            _record(tx, account, replace(order, status="expired", updated_at=tx.now), "expired")
            return None
        terms = env.terms.terms(account.group_id, order.symbol)
        quote = env.valuation.adjust(self.quote, terms) if terms is not None else None
        if quote is None or not triggered(order.cmd, order.trigger_price, quote):
            tx.after_commit(lambda: _rearm(env, account, order))
            return None
        if order.cmd in STOP_LIMITS:
            assert order.limit_price is not None
            within = (
                quote.ask <= order.limit_price if order.cmd == 6 else quote.bid >= order.limit_price
            )
            if not within:
                converted = replace(
                    order,
                    cmd=order.cmd - 4,
                    trigger_price=order.limit_price,
                    limit_price=None,
                    stop_triggered_at=tx.now,
                    updated_at=tx.now,
                )
                _record(tx, account, converted, "converted", stop_price=str(order.trigger_price))
                return None
        outcome = await open_deal(
            env,
            tx,
            account,
            Deal(
                order.symbol,
                order.cmd % 2,
                order.volume,
                sl=order.sl,
                tp=order.tp,
                comment=order.comment,
                origin=f"pending:{order.id}",
            ),
            quote=quote,
        )
        if isinstance(outcome, Rejection):
            rejected = replace(order, status="rejected", reason=outcome.reason, updated_at=tx.now)
            _record(tx, account, rejected, "rejected", reason=outcome.reason)
            return outcome
        filled = replace(order, status="filled", position_ticket=outcome, updated_at=tx.now)
        _record(tx, account, filled, "filled", position_ticket=outcome)
        return outcome
