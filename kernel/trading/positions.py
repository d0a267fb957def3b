"""Jobs on open positions: market orders, closes, SL/TP changes and SL/TP triggers.

SL/TP (seed section 11, DOMAIN.md): a long position's stop-loss triggers when the
bid falls to it (bid <= sl) and its take-profit when the bid rises to it
(bid >= tp); a short position's on the ask (ask >= sl, ask <= tp). When set, a long
position's SL must be below the current bid and its TP above it (a short's: SL above
the ask, TP below it), and both must be on the instrument's price grid (``digits``);
0 removes one. The quote checked against must be fresh (``stale_threshold_ms``), as
for pending orders. A triggered SL/TP closes the whole position at the market quote that
triggered it, recorded with reason ``sl`` or ``tp``; it is re-checked under the
account's lock and re-armed if another writer changed the position meanwhile.

Manual closes are refused while the symbol is ``non_tradable`` (``close_only``
allows them); SL/TP and stop-out closes are protective and always run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from brokerkernel.kernel.descriptors import FillRequest, Rejection, SymbolTerms
from brokerkernel.kernel.pricing import ConversionUnavailable, Quote
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.batch import ShardTransaction
from brokerkernel.kernel.trading.deals import (
    NOT_TRADABLE,
    Deal,
    close_volume_error,
    open_deal,
    price_close,
    stage_close,
    vet_close,
)
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.instruments import field_error
from brokerkernel.kernel.trading.jobs import Env, FutureJob, Job
from brokerkernel.kernel.trading.state import AccountState, OpenPosition

if TYPE_CHECKING:
    from brokerkernel.kernel.cache import Cache

ZERO = Decimal(0)
ACCOUNT_NOT_FOUND = "Account not found"
POSITION_NOT_FOUND = "Position not found"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A queued market order: ``cmd`` 0 buy / 1 sell, ``volume`` in lots."""

    request_id: str
    login: int
    symbol: str
    cmd: int
    volume: Decimal


class StatusSink:
    """Order request statuses produced by a batch, stored together afterwards
    (one round trip on Redis) under ``order:request:<id>`` for ``ttl_s`` seconds.

    A request in this process may :meth:`watch` for its status instead of polling
    again (long poll): the watcher's future gets the stored status (JSON).
    """

    def __init__(self, cache: Cache, ttl_s: int) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self._pending: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}

    @staticmethod
    def key(request_id: str) -> str:
        return f"order:request:{request_id}"

    def put(self, request_id: str, status: dict[str, Any]) -> None:
        self._pending[request_id] = json.dumps(status)

    async def flush(self) -> None:
        """Store the statuses of the last batch, then wake their waiting polls."""
        if not self._pending:
            return
        items, self._pending = self._pending, {}
        await self.cache.set_many({self.key(i): v for i, v in items.items()}, self.ttl_s)
        for request_id, raw in items.items():
            for waiter in self._waiters.pop(request_id, ()):
                if not waiter.done():
                    waiter.set_result(raw)

    @contextlib.contextmanager
    def watch(self, request_id: str) -> Iterator[asyncio.Future[str]]:
        """A future this process completes with the request's status (JSON) when it
        stores it (taken before reading the status, so a status stored meanwhile is
        not missed)."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(request_id, [])
        waiters.append(waiter)
        try:
            yield waiter
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(request_id, None)


class MarketOrderJob(Job):
    """A market order from ``POST /api/customer/orders`` (seed section 11); its poll
    status becomes ``executed`` with the ticket or ``rejected`` with the reason."""

    def __init__(self, request: OrderRequest, sink: StatusSink) -> None:
        self.login = request.login
        self.request = request
        self.sink = sink

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        request = self.request
        return await open_deal(
            env,
            tx,
            account,
            Deal(request.symbol, request.cmd, request.volume, origin=request.request_id),
        )

    def settle(self, outcome: Any) -> None:
        if isinstance(outcome, int):
            status: dict[str, Any] = {"status": "executed", "order": outcome}
        elif isinstance(outcome, Rejection):
            status = {"status": "rejected", "reason": outcome.reason}
        else:
            status = {"status": "rejected", "reason": "Internal error"}
        self.sink.put(self.request.request_id, {**status, "login": self.login})


def _position(account: AccountState | None, ticket: int) -> tuple[AccountState, OpenPosition]:
    if account is None:
        raise TradingError(404, ACCOUNT_NOT_FOUND)
    position = account.positions.get(ticket)
    if position is None:
        raise TradingError(404, POSITION_NOT_FOUND)
    return account, position


async def close_at_market(
    env: Env,
    tx: ShardTransaction,
    account: AccountState,
    position: OpenPosition,
    volume: Decimal,
    reason: str,
    *,
    quote: Quote | None = None,
    source: str = audit.ORDER_SERVICE,
    action: str | None = None,
    vet: bool = False,
) -> dict[str, Any]:
    """Fill the closing deal at the venue and stage the close; returns the history row.
    ``vet`` (a close the trader sent): the pre-trade rules that check closes vet it at
    the fill price first (:func:`~brokerkernel.kernel.trading.deals.vet_close`).

    Raises TradingError 409 when the venue refuses (no fresh quote), no rate
    converts the profit, or a rule refuses the close (its reason).
    """
    fill = await env.venue.execute(
        FillRequest(
            account.login,
            -position.side,
            volume,
            quote if quote is not None else env.valuation.quote_for(position.terms),
            position.terms,
            tx.now_ms,
        )
    )
    if isinstance(fill, Rejection):
        raise TradingError(409, fill.reason)
    if vet:
        refused = vet_close(env, account, position, volume, fill.price, tx.now_ms)
        if refused is not None:
            raise TradingError(409, refused.reason)
    try:
        pricing = price_close(env, account, position, volume, fill.price)
    except ConversionUnavailable as exc:
        raise TradingError(409, f"No conversion rate: {exc}") from exc
    return await stage_close(
        env, tx, account, position, volume, pricing, reason, source=source, action=action
    )


class CloseJob(FutureJob):
    """``DELETE /api/crm/orders/{ticket}``: close all (``volume`` None) or part.

    Raises TradingError 404 (no such account/position), 422 (bad volume), 409
    (symbol not tradable, no quote, no conversion rate).
    """

    def __init__(self, login: int, ticket: int, volume: Decimal | None) -> None:
        super().__init__(login)
        self.ticket = ticket
        self.volume = volume

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        account, position = _position(account, self.ticket)
        volume = position.volume if self.volume is None else self.volume
        problem = close_volume_error(position, volume)
        if problem is not None:
            raise TradingError(422, problem)
        terms = env.terms.terms(account.group_id, position.symbol)
        if terms is not None and terms.tradeability == "non_tradable":
            raise TradingError(409, NOT_TRADABLE)
        return await close_at_market(env, tx, account, position, volume, "manual", vet=True)


def on_grid(price: Decimal, digits: int) -> bool:
    """True when ``price`` is a multiple of the instrument's point (10^-``digits``)."""
    return price % Decimal(1).scaleb(-digits) == 0


def fresh_quote(env: Env, terms: SymbolTerms, now_ms: int) -> Quote:
    """The group's quote for ``terms`` to validate prices against; TradingError 409
    ``No fresh quote`` when there is none or it is older than ``stale_threshold_ms``."""
    quote = env.valuation.quote_for(terms)
    if quote is None or now_ms - quote.time_ms > terms.stale_threshold_ms:
        raise TradingError(409, "No fresh quote")
    return quote


def stops_errors(
    side: int, digits: int, reference: Decimal, sl: Decimal | None, tp: Decimal | None, what: str
) -> list[dict[str, Any]]:
    """422 items for SL/TP of a ``side`` (+1 long / -1 short) position opening or held
    at ``reference`` (``what`` names it in the message); None means unset."""
    errors = []
    for name, price, below in (("sl", sl, side > 0), ("tp", tp, side < 0)):
        if price is None:
            continue
        if not on_grid(price, digits):
            errors.append(field_error(name, f"must be a multiple of 1E-{digits}", "price_grid"))
        elif below and price >= reference:
            errors.append(field_error(name, f"must be below {what} {reference}", "stops"))
        elif not below and price <= reference:
            errors.append(field_error(name, f"must be above {what} {reference}", "stops"))
    return errors


class ModifyStopsJob(FutureJob):
    """``PATCH /api/customer/orders/{ticket}/sltp``: set, change or remove (0) SL/TP.

    ``sl``/``tp`` None leaves that one as it is. Raises TradingError 404, 409 (no
    fresh quote to validate against), 422 (module docstring rules). Returns the position.
    """

    def __init__(self, login: int, ticket: int, sl: Decimal | None, tp: Decimal | None) -> None:
        super().__init__(login)
        self.ticket = ticket
        self.sl = sl
        self.tp = tp

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        account, position = _position(account, self.ticket)
        quote = fresh_quote(env, position.terms, tx.now_ms)
        side = position.side
        reference, what = (quote.bid, "the bid") if side > 0 else (quote.ask, "the ask")
        sl = None if self.sl is None or self.sl == ZERO else self.sl
        tp = None if self.tp is None or self.tp == ZERO else self.tp
        errors = stops_errors(side, position.terms.digits, reference, sl, tp, what)
        if errors:
            raise TradingError(422, errors)
        changed = replace(
            position,
            sl=position.sl if self.sl is None else sl,
            tp=position.tp if self.tp is None else tp,
        )
        before = audit.snapshot(account)
        tx.put_position(account, changed, new=False)
        details = {
            "symbol": position.symbol,
            "sl": _text(changed.sl),
            "tp": _text(changed.tp),
            "previous_sl": _text(position.sl),
            "previous_tp": _text(position.tp),
        }
        tx.audit_row(
            account,
            before,
            entity_type="order",
            entity_id=str(position.ticket),
            action="modify_sltp",
            details=details,
        )
        tx.event(
            "position.modified", {"login": account.login, "ticket": position.ticket, **details}
        )
        return changed


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def stop_hit(position: OpenPosition, quote: Quote) -> str | None:
    """``"sl"`` or ``"tp"`` when ``quote`` (the group's) triggers one, else None."""
    if position.side > 0:
        if position.sl is not None and quote.bid <= position.sl:
            return "sl"
        if position.tp is not None and quote.bid >= position.tp:
            return "tp"
    else:
        if position.sl is not None and quote.ask >= position.sl:
            return "sl"
        if position.tp is not None and quote.ask <= position.tp:
            return "tp"
    return None


class StopTriggerJob(Job):
    """An SL or TP the trigger index saw hit by ``quote``: close at that quote."""

    def __init__(self, login: int, ticket: int, quote: Quote) -> None:
        self.login = login
        self.ticket = ticket
        self.quote = quote

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        position = account.positions.get(self.ticket) if account is not None else None
        if account is None or position is None:
            return None
        quote = env.valuation.adjust(self.quote, position.terms)
        reason = stop_hit(position, quote)
        if reason is None:
            # changed by another writer since the index saw it: watch it again
            tx.after_commit(lambda: _rearm(env, account, position))
            return None
        try:
            return await close_at_market(
                env, tx, account, position, position.volume, reason, quote=quote
            )
        except TradingError:
            tx.after_commit(lambda: _rearm(env, account, position))
            return None


def _rearm(env: Env, account: AccountState, position: OpenPosition) -> None:
    for watcher in env.watchers:
        watcher.position_changed(account, position)
