"""The trading service: what the API and the kernel call to trade (seed sections 6, 11-13).

Every change to an account runs as a job on the account's shard worker
(:mod:`~brokerkernel.kernel.trading.workers`: one writer per account, batched
group commits, state in memory checked against the row's version):

* market orders are asynchronous (seed section 11): :meth:`TradingService.submit`
  queues the order and returns its ``request_id``; the poll status becomes
  ``executed`` (``order``: the ticket) or ``rejected`` (``reason``) and can be read
  for ``order_request_ttl_s`` seconds;
* closes, SL/TP changes, pending orders and account mode changes are awaited by the
  request and answer with the result or a :class:`TradingError`;
* ticks feed the trigger index (SL/TP, pending orders, expiries) and the risk engine
  (stop-out, margin call), whose fired entries become jobs too, and move the daily
  swap rollover.

Reads (:meth:`snapshot`, :meth:`account_state`) use the account state in memory after
checking the row's version, so they see every committed write of any process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import or_, select, union

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import Adjuster, PreTradeRule, Venue
from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.pricing import FxConverter, Quote, QuoteBook
from brokerkernel.kernel.risk.engine import RiskEngine
from brokerkernel.kernel.risk.rules import Crossing
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.ids import IdAllocator
from brokerkernel.kernel.storage.models import Position, TradingAccount, new_id
from brokerkernel.kernel.tasks import cancel_and_wait
from brokerkernel.kernel.trading.batch import ShardTransaction, TicketPool, utc
from brokerkernel.kernel.trading.deals import NETTING
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.jobs import Env, FutureJob, Job, StateWatcher, tell
from brokerkernel.kernel.trading.models import PendingOrder
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.pending import (
    CancelPendingJob,
    ExpireJob,
    ModifyPendingJob,
    PendingRequest,
    PendingTriggerJob,
    PlacePendingJob,
)
from brokerkernel.kernel.trading.positions import (
    CloseJob,
    MarketOrderJob,
    ModifyStopsJob,
    OrderRequest,
    StatusSink,
    StopTriggerJob,
)
from brokerkernel.kernel.trading.riskfeed import RiskFeed
from brokerkernel.kernel.trading.state import AccountBook, AccountState, OpenPosition, PendingState
from brokerkernel.kernel.trading.stopout import (
    LEVEL_PLACES,
    MarginCallJob,
    MarginCallThrottle,
    StopOutJob,
    margin_level,
)
from brokerkernel.kernel.trading.swaps import RolloverSchedule, SwapJob
from brokerkernel.kernel.trading.terms import CONFIG_CHANGED, TermsCache
from brokerkernel.kernel.trading.triggers import Key, TriggerIndex
from brokerkernel.kernel.trading.valuation import Valuation
from brokerkernel.kernel.trading.workers import (
    ACCOUNT_COLUMNS,
    OrderWorkers,
    load_accounts,
    refresh_settings,
)

__all__ = ["OrderRequest", "TradingError", "TradingService", "utc"]

log = logging.getLogger(__name__)

STATE_STALE_AFTER_S = 5.0
LOAD_CHUNK = 1000
TIMER_S = 1.0
ACCOUNT_MODES = ("hedging", NETTING)


def _queued(login: int) -> str:
    """The stored status of a queued market order."""
    return json.dumps({"status": "queued", "login": login})


def _money_changed(watcher: StateWatcher, account: AccountState) -> None:
    watcher.money_changed(account)


class SetModeJob(FutureJob):
    """Switch an account between hedging and netting; refused (409) while it holds
    positions or active pending orders."""

    def __init__(self, login: int, mode: str) -> None:
        super().__init__(login)
        self.mode = mode

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        if account is None:
            raise TradingError(404, "Account not found")
        if account.mode == self.mode:
            return account.mode
        if account.positions or account.pending:
            raise TradingError(
                409, "Close the account's positions and pending orders before changing its mode"
            )
        account.mode = self.mode
        tx.touch(account)
        tx.event("account.mode_changed", {"login": account.login, "account_mode": self.mode})
        return account.mode


class TradingService:
    """Executes deals and computes account state; money is Decimal throughout.

    ``workers`` is the number of shards (order workers), ``batch_size`` the most jobs
    one batch commits together; rollovers are at ``rollover_time`` (``"HH:MM"``) in
    ``rollover_timezone``; ``fx_conversion`` is ``"mid"`` or ``"bid_ask"``; an
    account's margin-call warning repeats at most every ``margin_call_interval_s``
    seconds of market time.
    """

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
        terms: TermsCache,
        request_ttl_s: int,
        workers: int,
        fx_conversion: str = "mid",
        batch_size: int = 256,
        rollover_time: str = "00:00",
        rollover_timezone: str = "UTC",
        margin_call_interval_s: float = 300.0,
    ) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
        self.quotes = quotes
        self.adjusters = list(adjusters)
        self.valuation = Valuation(quotes, fx, adjusters, fx_conversion)
        self.book = AccountBook()
        self.rollovers = RolloverSchedule(rollover_time, rollover_timezone)
        self.sink = StatusSink(cache, request_ttl_s)
        self.margin_calls = MarginCallThrottle(margin_call_interval_s)
        self.env = Env(
            valuation=self.valuation,
            venue=venue,
            rules=list(rules),
            terms=terms,
            clock=clock,
            rollovers=self.rollovers,
            watchers=[],
            submit=self._submit,
        )
        self.workers = OrderWorkers(
            db=db,
            book=self.book,
            tickets=TicketPool(ids, 1 if db.is_sqlite else 64),
            env=self.env,
            shards=workers,
            batch_size=batch_size,
            after_batch=self._after_batch,
        )
        self.triggers = TriggerIndex(
            self.valuation, terms, clock, self._submit, self._trigger_job, ExpireJob
        )
        self.env.watchers.append(self.triggers)
        self.risk: RiskEngine | None = None
        #: Consumers of risk-engine crossings of other rules (prop-firm plugins), by rule.
        self.crossing_handlers: dict[str, Callable[[Crossing], None]] = {}
        self._next_rollover: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Accounts changed by other writers, reloaded by the next :meth:`_refresh`.
        self._to_refresh: set[int] = set()
        self._timer: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # --- wiring ---------------------------------------------------------------------------

    def attach_risk_engine(self, engine: RiskEngine) -> None:
        """Feed ``engine`` every committed change (before :meth:`start`)."""
        self.risk = engine
        self.env.watchers.append(RiskFeed(engine, self.env.terms, self.valuation))

    def exact_equity(self, login: int) -> Decimal | None:
        """The risk engine's exact check: equity of a held account (unrounded), or None."""
        account = self.book.get(login)
        return None if account is None else self.valuation.equity(account)

    def on_crossing(self, crossing: Crossing) -> None:
        """Risk engine sink: stop-out and margin call (throttled) become jobs on the
        account's worker; other rules go to their handler in :attr:`crossing_handlers`."""
        if crossing.rule == "stop_out":
            self._submit(StopOutJob(crossing.login, crossing))
        elif crossing.rule == "margin_call":
            if self.margin_calls.admit(crossing):
                self._submit(MarginCallJob(crossing.login, crossing, self.margin_calls))
        else:
            handler = self.crossing_handlers.get(crossing.rule)
            if handler is not None:
                handler(crossing)

    #: Domain events of other writers that change an account's money or group.
    REFRESH_EVENTS = ("transaction.created", "transaction.updated", "account.group_changed")

    def on_event(self, event: DomainEvent) -> None:
        """Bus handler (subscribed after the terms cache's, so terms are reloaded
        first): an account changed by another writer (a deposit, a withdrawal, a group
        change) is reloaded and the risk engine gets its new money and group levels
        without waiting for its next order; a platform configuration change (a group's
        levels) re-levels every account held here. The accounts named by one burst of
        events (a relay batch) are reloaded together, with one read."""
        login = event.payload.get("login")
        if event.type in self.REFRESH_EVENTS and isinstance(login, int):
            if not self._to_refresh:
                self._spawn(self._refresh())
            self._to_refresh.add(login)
        elif event.type == CONFIG_CHANGED:
            for account in self.book.accounts():
                tell(self.env.watchers, partial(_money_changed, account=account))
            self._settle_risk()

    async def _refresh(self) -> None:
        await asyncio.sleep(0)  # let the rest of the burst's events name their accounts
        logins, self._to_refresh = self._to_refresh, set()
        try:
            accounts = await self.snapshots(logins)
        except Exception:
            log.exception("reloading %d changed accounts failed", len(logins))
            return
        for account in accounts.values():
            tell(self.env.watchers, partial(_money_changed, account=account))
        if accounts:
            self._settle_risk()

    def _settle_risk(self) -> None:
        if self.risk is not None:
            self.risk.settle()

    def _submit(self, job: Job) -> None:
        self.workers.submit(job)

    def _trigger_job(self, login: int, key: Key, quote: Quote) -> Job:
        kind, ticket, _ = key
        if kind == "position":
            return StopTriggerJob(login, ticket, quote)
        return PendingTriggerJob(login, ticket, quote)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the accounts holding positions or pending orders (trigger index, risk
        engine), catch up due swaps, start the workers and follow the ticks."""
        await self._load_open_accounts()
        await self.workers.start()
        now = self.clock.now()
        self._next_rollover = self.rollovers.next(now)
        self._spawn(self._rollover(self.rollovers.last(now)))
        self._unsubscribe = self.quotes.subscribe(self._on_tick)
        self._timer = asyncio.create_task(self._tick_timer(), name="trading-timer")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await cancel_and_wait([self._timer], *self._tasks)
        self._timer = None
        await self.workers.stop()

    async def idle(self) -> None:
        """Wait until every queued job (and every job they queued) has run."""
        while True:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.workers.idle()
            if not self._tasks:
                return

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_open_accounts(self) -> None:
        query = union(
            select(Position.login),
            select(PendingOrder.login).where(PendingOrder.status == "active"),
        )
        async with self.db.read() as session:
            logins = sorted(int(login) for login in (await session.scalars(query)).all())
            for start in range(0, len(logins), LOAD_CHUNK):
                chunk = logins[start : start + LOAD_CHUNK]
                rows = (
                    await session.execute(
                        select(*ACCOUNT_COLUMNS).where(TradingAccount.login.in_(chunk))
                    )
                ).all()
                for state in (await load_accounts(session, rows)).values():
                    self._install(state)

    def _install(self, state: AccountState) -> None:
        if self.book.install(state):
            tell(self.env.watchers, lambda watcher: watcher.account_loaded(state))
            self._settle_risk()

    def _on_tick(self, quote: Quote) -> None:
        self.triggers.on_tick(quote)
        self._check_rollover()

    async def _tick_timer(self) -> None:
        """Expiries and rollovers when no tick moves the clock (wall-clock markets)."""
        while True:
            await asyncio.sleep(TIMER_S)
            try:
                self.triggers.expire_due()
                self._check_rollover()
            except Exception:
                log.exception("trading timer failed")

    def _check_rollover(self) -> None:
        now = self.clock.now()
        if self._next_rollover is not None and now >= self._next_rollover:
            self._next_rollover = self.rollovers.next(now)
            self._spawn(self._rollover(self.rollovers.last(now)))

    async def _rollover(self, at: datetime) -> None:
        """Queue a swap job for every account with a position open over rollover ``at``."""
        async with self.db.read() as session:
            logins = set(
                (
                    await session.scalars(
                        select(Position.login)
                        .where(
                            Position.open_time < at,
                            or_(
                                Position.last_rollover_at.is_(None), Position.last_rollover_at < at
                            ),
                        )
                        .distinct()
                    )
                ).all()
            )
        for login in sorted(logins):
            self._submit(SwapJob(login))

    async def _after_batch(self) -> None:
        await self.sink.flush()
        self._settle_risk()

    # --- market orders ------------------------------------------------------------------

    async def submit(self, login: int, symbol: str, cmd: int, volume: Decimal) -> str:
        """Queue a market order (``cmd`` 0 buy / 1 sell, ``volume`` lots); returns the
        ``request_id`` to poll."""
        request = OrderRequest(new_id(), login, symbol, cmd, volume)
        await self.cache.set(self.sink.key(request.request_id), _queued(login), self.sink.ttl_s)
        self._submit(MarketOrderJob(request, self.sink))
        return request.request_id

    async def execute(
        self, login: int, symbol: str, cmd: int, volume: Decimal, wait_s: float
    ) -> dict[str, Any]:
        """Queue a market order as :meth:`submit` and wait up to ``wait_s`` seconds for
        its outcome: the status as :meth:`request_status` gives it, ``queued`` when the
        wait ran out (poll it then as usual).

        The ``queued`` status is stored only when the wait runs out (and only if the
        outcome is not stored yet), so an order answered within the wait costs no
        cache write of its own: its outcome is stored with its batch's.
        """
        request = OrderRequest(new_id(), login, symbol, cmd, volume)
        key = self.sink.key(request.request_id)
        with self.sink.watch(request.request_id) as stored:
            self._submit(MarketOrderJob(request, self.sink))
            try:
                raw = await asyncio.wait_for(stored, wait_s)
            except TimeoutError:
                raw = _queued(login)
                if not await self.cache.set_nx(key, raw, self.sink.ttl_s):
                    raw = await self.cache.get(key) or raw  # the outcome was stored meanwhile
        return {"request_id": request.request_id, **json.loads(raw)}

    async def request_status(self, request_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """``{"request_id", "status", "login", "order"|"reason"}``; None once expired or
        unknown. With ``wait_s``, a ``queued`` request is awaited up to that long (long
        poll; the order must be executing in this process to end the wait early)."""
        key = self.sink.key(request_id)
        with self.sink.watch(request_id) as stored:
            raw = await self.cache.get(key)
            if raw is not None and wait_s > 0 and json.loads(raw)["status"] == "queued":
                try:
                    raw = await asyncio.wait_for(stored, wait_s)
                except TimeoutError:
                    raw = await self.cache.get(key)
        if raw is None:
            return None
        return {"request_id": request_id, **json.loads(raw)}

    # --- synchronous requests -------------------------------------------------------------

    async def _await(self, job: FutureJob) -> Any:
        self._submit(job)
        return await job.future

    async def close(self, login: int, ticket: int, volume: Decimal | None = None) -> dict[str, Any]:
        """Close ``volume`` lots of position ``ticket`` (all when None); returns the
        history row. Raises TradingError 404, 409, 422 (:class:`CloseJob`)."""
        result: dict[str, Any] = await self._await(CloseJob(login, ticket, volume))
        return result

    async def modify_stops(
        self, login: int, ticket: int, sl: Decimal | None, tp: Decimal | None
    ) -> OpenPosition:
        """Set/remove SL/TP (None: unchanged, 0: remove). Raises TradingError 404/409/422."""
        result: OpenPosition = await self._await(ModifyStopsJob(login, ticket, sl, tp))
        return result

    async def place_pending(self, request: PendingRequest) -> PendingState:
        """Place a pending order. Raises TradingError 404/409/422 (:class:`PlacePendingJob`)."""
        result: PendingState = await self._await(PlacePendingJob(request))
        return result

    async def modify_pending(self, login: int, order_id: int, **fields: Any) -> PendingState:
        """Modify an active pending order (``sl``, ``tp``, ``trigger_price``,
        ``limit_price``). Raises TradingError 404/409/422."""
        result: PendingState = await self._await(ModifyPendingJob(login, order_id, **fields))
        return result

    async def cancel_pending(self, login: int, order_id: int) -> PendingState:
        """Cancel an active pending order. Raises TradingError 404/409."""
        result: PendingState = await self._await(CancelPendingJob(login, order_id))
        return result

    async def set_account_mode(self, login: int, mode: str) -> str:
        """``hedging`` or ``netting``; raises TradingError 404/409 (:class:`SetModeJob`)."""
        result: str = await self._await(SetModeJob(login, mode))
        return result

    # --- state ----------------------------------------------------------------------------

    async def snapshot(self, login: int) -> AccountState | None:
        """The account's committed state (reloaded when its row's version moved), or
        None for an unknown login. Treat it as read-only."""
        return (await self.snapshots([login])).get(login)

    async def snapshots(self, logins: Collection[int]) -> dict[int, AccountState]:
        """:meth:`snapshot` of several accounts with one read of their rows (and one
        load of those whose version moved); unknown logins are absent."""
        found: dict[int, AccountState] = {}
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(*ACCOUNT_COLUMNS).where(TradingAccount.login.in_(list(logins)))
                )
            ).all()
            stale = []
            for row in rows:
                held = self.book.get(row.login)
                if held is not None and held.version == row.version:
                    refresh_settings(held, row)
                    found[row.login] = held
                else:
                    stale.append(row)
            loaded = await load_accounts(session, stale) if stale else {}
        for login, state in loaded.items():
            self._install(state)
            found[login] = self.book.get(login) or state
        return found

    async def account_state(self, login: int) -> dict[str, Any] | None:
        """Live state (seed section 6): money in account currency, levels in percent.

        ``margin_level`` = equity / margin x 100 (null without margin;
        :func:`~brokerkernel.kernel.trading.stopout.margin_level`), ``margin_used`` the
        group's hedged-margin charge of the open positions
        (:mod:`~brokerkernel.kernel.trading.margin`);
        ``max_withdrawable`` = min(balance, free_margin) with open positions, else balance;
        exposures are notional in USD (net: per symbol, hedged sides offset);
        ``age_s`` is the age of the oldest quote used, ``stale`` when above 5 s.
        """
        account = await self.snapshot(login)
        if account is None:
            return None
        currency = account.currency
        floating = self.valuation.floating(account)
        equity = account.balance + account.credit + floating
        free_margin = equity - account.margin
        level = margin_level(equity, account.margin)
        gross, net, oldest_ms = self.valuation.exposure(account)
        now_ms = self.clock.now_ms()
        age_s = max(0.0, (now_ms - (oldest_ms or now_ms)) / 1000)
        return {
            "login": str(login),
            "balance": account.balance,
            "credit": account.credit,
            "equity": round_money(equity, currency),
            "pnl": round_money(floating, currency),
            "free_margin": round_money(free_margin, currency),
            "margin_level": None if level is None else level.quantize(LEVEL_PLACES),
            "margin_used": account.margin,
            "max_withdrawable": round_money(
                max(Decimal(0), min(account.balance, free_margin))
                if account.positions
                else account.balance,
                currency,
            ),
            "gross_exposure": round_money(gross, "USD"),
            "net_exposure": round_money(net, "USD"),
            "currency": currency,
            "account_mode": account.mode,
            "stale": age_s > STATE_STALE_AFTER_S,
            "age_s": round(age_s, 3),
        }

    def mark(self, position: OpenPosition, currency: str) -> tuple[Decimal, Decimal] | None:
        """``(close price, profit)`` of a position at the group's closing side (buy
        closes on bid, sell on ask), profit unrounded in ``currency``; None without a
        quote or conversion rate."""
        return self.valuation.mark(position, currency)
