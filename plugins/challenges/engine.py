"""Evaluation of challenge accounts: per-tick levels, the exact path, fills, day resets.

How a prop account is watched (ARCHITECTURE.md, "Risk engine"; issue 6):

* **Per tick** — one account rule named ``prop`` (:class:`PropTickRule`) gives the risk
  engine the levels of every rule of the account's current phase, computed from the
  cached :class:`PropView` (no database): daily and max-loss floors, warning levels,
  target ceilings, and trailing floors (intraday max loss) that the engine raises with
  each account's equity peak itself, vectorised. The engine compares them with live
  equity per tick.
* **Exact path** — the crossings of ``prop`` levels of one drain of the risk engine's
  sink (the crossings of a tick) form one :class:`CrossingBatch`: each crossing
  queues an :class:`EvaluateJob` on the account's order worker at once, and at the
  next event-loop iteration (:meth:`PropEngine.flush_crossings`) a
  :class:`BreachCloseJob` per crossed account is queued behind them, so a worker
  decides every crossed account of the drain before it closes any (17 breaches on
  one tick do not wait for each other's closes; the closes share the decisions'
  group commit or follow in the next one). An evaluation runs
  under the account's lock, with exact Decimal equity
  (:class:`~brokerkernel.kernel.trading.valuation.Valuation`) and the account's
  history read from the database: every rule is evaluated
  (:meth:`PropEngine.evaluate_in`). A ``breach`` (of any rule) fails the phase: the
  account is marked ``failed`` (new orders are refused by :class:`PropPreTrade`),
  ``account.breached`` and ``phase.failed`` are written to the outbox, and every
  position is closed at market (reason ``prop-breach``) — by the batch's close job,
  or at once by an evaluation outside a batch (fill, deadline). Warnings
  (``drawdown.warning``) go out once per warning level and trading day;
  ``peak_equity`` is raised to the risk engine's equity peak (the rules evaluate on
  it); when every
  objective passes, ``phase.passed`` and the next phase starts (auto advance) or the
  account waits in ``passed_pending_approval``.
* **Fills** — ``order.opened`` / ``order.closed`` events queue the same job with the
  fill: the trading day of an opened position is recorded (a day in the plan's
  timezone, :mod:`brokerkernel.kernel.prop.days`; a position held over several days
  counts once), the day's closed profit is recomputed from the deal history
  (profit + commission + swap), then the rules are evaluated.
* **Day reset** — at each plan's reset instant, every account of the plan gets its new
  day snapshot, kept pending until its view is next read (:class:`ViewCache`; start
  balance exact; start equity = balance + credit + the engine's
  float floating P&L quantised to cents: exact to the cent is what a firm reports, and
  reading exact equity of 100,000 accounts would cost a database round trip each),
  ``peak_eod_balance`` is raised and ``peak_equity`` taken from the risk engine, the
  rows are written in one bulk statement. Accounts holding positions get their
  day-dependent levels (the daily floor and its warnings) replaced in bulk: per group of
  accounts sharing a phase's rules, each rule with ``day_levels``
  (:class:`~brokerkernel.kernel.prop.rules.DayLevels`) computes the exact Decimal
  values for all of them and ``RiskEngine.set_level_values`` swaps them in — no rule
  input and no ``levels`` call per account; accounts with a new highest end-of-day
  balance are re-levelled in full. A floating loss already below the new daily floor
  crosses at once and goes down the exact path.
* **Deadlines** — rules' ``deadlines()`` (Friday close, end of the trading period,
  inactivity) are kept in a heap on the market clock and queue an evaluation when due.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeVar, overload
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, delete, func, insert, select, update

from brokerkernel.kernel.descriptors import PreTradeCheck, Rejection
from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.prop.days import day_start, next_reset, trading_day
from brokerkernel.kernel.prop.rules import (
    AccountView,
    DaySnapshot,
    History,
    OrderIntent,
    PositionView,
    PropRule,
    RuleInput,
    RuleResult,
    Status,
)
from brokerkernel.kernel.risk.rules import AccountSnapshot, Crossing, Level, LevelKind
from brokerkernel.kernel.storage.models import TradeHistory, TradingAccount
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.batch import ShardTransaction, utc
from brokerkernel.kernel.trading.deals import notional_usd
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.jobs import Env, FutureJob, Job
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.positions import close_at_market
from brokerkernel.kernel.trading.state import SIDE, AccountState
from brokerkernel.kernel.trading.valuation import Valuation
from brokerkernel.plugins.challenges.models import PropAccount, PropDailyProfit, PropTradingDay
from brokerkernel.plugins.challenges.plans import RuleTypeEntry, configure

log = logging.getLogger(__name__)

ZERO = Decimal(0)
RULE_NAME = "prop"
#: Statuses whose rules are watched and whose orders are let through.
TRADING = frozenset({"active", "funded"})
FUNDED = "funded"
BREACH_REASON = "prop-breach"
PHASE_END_REASON = "prop-phase"
PROP_ACCOUNTS: Table = PropAccount.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """What evaluation needs of a plan (a copy of its row)."""

    id: str
    account_size: Decimal
    currency: str
    phases: tuple[Mapping[str, Any], ...]
    funded_rules: tuple[Mapping[str, Any], ...]
    reset_time: str
    zone: ZoneInfo
    auto_advance: bool
    drawdown_after_payout: str
    reset_fee: Decimal | None = None

    def phase_name(self, index: int) -> str:
        return FUNDED if index >= len(self.phases) else str(self.phases[index]["name"])

    def rules_of(self, index: int) -> Sequence[Mapping[str, Any]]:
        if index >= len(self.phases):
            return self.funded_rules
        rules: Sequence[Mapping[str, Any]] = self.phases[index]["rules"]
        return rules

    def auto_advance_of(self, index: int) -> bool:
        if index >= len(self.phases):
            return False
        return bool(self.phases[index].get("auto_advance", self.auto_advance))


@dataclass(frozen=True, slots=True)
class ConfiguredRule:
    """A configured rule of a phase and the type it was built from."""

    type: str
    rule: PropRule


@dataclass(slots=True)
class CrossingBatch:
    """The ``prop`` crossings of one drain of the risk engine's sink: ``logins`` the
    crossed accounts (in order), ``breached`` those its evaluations failed, for its
    close jobs (:class:`BreachCloseJob`)."""

    logins: dict[int, None] = field(default_factory=dict)
    breached: set[int] = field(default_factory=set)


@dataclass(slots=True)
class PropView:
    """The cached state of one prop account (the hot path reads only this).

    Treated as immutable: a change replaces the cached view, never mutates it (not
    ``frozen``: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, 6x the cost of this one's, and the day reset builds one
    per account; measured, ``benchmarks/bench_prop.py``)."""

    account_id: str
    login: int
    plan: PlanSpec
    tenant_id: str | None
    customer_id: str
    currency: str
    status: str
    phase_index: int
    cycle: int
    initial_balance: Decimal
    phase_started_at: datetime
    day: DaySnapshot
    history: History
    rules: tuple[ConfiguredRule, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        return self.plan.phase_name(self.phase_index)

    def on_day(self, day: DaySnapshot, history: History) -> PropView:
        """This view with a new day snapshot and history (a day reset's pending day
        applied: :class:`ViewCache`)."""
        return PropView(
            self.account_id,
            self.login,
            self.plan,
            self.tenant_id,
            self.customer_id,
            self.currency,
            self.status,
            self.phase_index,
            self.cycle,
            self.initial_balance,
            self.phase_started_at,
            day,
            history,
            self.rules,
            self.overrides,
        )

    def base_payload(self) -> dict[str, Any]:
        """The keys every prop event carries."""
        return {
            "tenant_id": self.tenant_id,
            "account_id": self.account_id,
            "login": self.login,
            "plan_id": self.plan.id,
            "phase": self.phase,
            "customer_id": self.customer_id,
        }

    def input(
        self,
        now: datetime,
        balance: Decimal,
        equity: Decimal,
        margin_used: Decimal = ZERO,
        positions: Sequence[PositionView] = (),
        history: History | None = None,
    ) -> RuleInput:
        """The rules' input for this account at ``now`` with the given money."""
        return RuleInput(
            AccountView(
                login=self.login,
                currency=self.currency,
                initial_balance=self.initial_balance,
                balance=balance,
                equity=equity,
                margin_used=margin_used,
                positions=positions,
                now=now,
                timezone=self.plan.zone,
                phase=self.phase,
                phase_started_at=self.phase_started_at,
            ),
            self.day,
            history or self.history,
        )


def money_text(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else str(round_money(value, currency))


def _numbers_text(numbers: Mapping[str, Any], currency: str) -> dict[str, Any]:
    return {
        key: money_text(value, currency) if isinstance(value, Decimal) else value
        for key, value in numbers.items()
    }


def positions_of(account: AccountState, valuation: Valuation) -> tuple[list[PositionView], Decimal]:
    """Exact views of the account's positions (profit in the account currency, notional
    in USD at the mid; 0 without a quote or USD rate) and its exact equity (unrounded)."""
    views = []
    for position in account.positions.values():
        mark = valuation.mark(position, account.currency)
        terms = position.terms
        quote = valuation.quotes.get(position.symbol)
        notional = (
            None if quote is None else notional_usd(valuation, terms, position.volume, quote.mid)
        )
        views.append(
            PositionView(
                ticket=position.ticket,
                symbol=position.symbol,
                side=position.side,
                volume=position.volume,
                open_price=position.open_price,
                sl=position.sl,
                tp=position.tp,
                profit=ZERO if mark is None else mark[1],
                opened_at=position.open_time,
                notional_usd=ZERO if notional is None else notional,
            )
        )
    return views, valuation.equity(account)


async def close_all(env: Env, tx: ShardTransaction, account: AccountState, reason: str) -> int:
    """Close every position at market (a position without a fresh quote stays open);
    cancel every active pending order. Returns the positions closed."""
    closed = 0
    for position in sorted(account.positions.values(), key=lambda p: p.ticket):
        try:
            await close_at_market(
                env,
                tx,
                account,
                position,
                position.volume,
                reason,
                source=audit.RISK_SERVICE,
                action=reason,
            )
            closed += 1
        except TradingError:
            log.warning(
                "prop: position %s of %s has no quote to close", position.ticket, account.login
            )
    for order in list(account.pending.values()):
        tx.put_pending(
            account, replace(order, status="cancelled", reason=reason, updated_at=tx.now), new=False
        )
    return closed


PEAK_PLACES = Decimal("1E-10")


def peak_of(equity: Decimal) -> Decimal:
    """A peak as stored (10 places, the column's scale), rounded up (never below the
    equity seen; the risk engine's peaks carry at most 8 and are stored as they are)."""
    return equity.quantize(PEAK_PLACES, ROUND_CEILING)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (restored after): a day reset allocates a
    few acyclic objects per account, and a full collection over a cache of millions of
    objects in the middle of it costs as much as the reset itself (measured,
    ``benchmarks/bench_prop.py``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def profit_pct(account: AccountState, row: PropAccount) -> str:
    """The phase's closed profit in percent of its initial balance, 2 places
    (FXPropTech's ``profit_pct`` on ``evaluation.passed``)."""
    if not row.initial_balance:
        return "0.00"
    share = (account.balance - row.initial_balance) / row.initial_balance * 100
    return str(share.quantize(Decimal("0.01")))


def day_levels_in_bulk(rules: Sequence[ConfiguredRule]) -> bool:
    """True when a day reset can replace every day-dependent level of ``rules`` in
    bulk: each rule either implements ``day_levels`` or declares ``uses_day = False``.
    A rule that declares neither (a third party's written before
    :class:`~brokerkernel.kernel.prop.rules.DayLevels`) is assumed to read the day, and
    its accounts are re-levelled one by one — slower, never stale."""
    return all(
        getattr(c.rule, "day_levels", None) is not None or not getattr(c.rule, "uses_day", True)
        for c in rules
    )


_T = TypeVar("_T")

#: A day snapshot not yet applied: the view it is for, the new ``DaySnapshot`` fields
#: (day, reset_at, start_balance, start_equity) and the new history.
PendingDay = tuple[PropView, date, datetime, Decimal, Decimal, History]


class ViewCache(dict[int, PropView]):
    """The cached views by login, with day snapshots not yet applied.

    A day reset records each account's new day in :attr:`pending` (one tuple) instead
    of building a new view per account (:meth:`PropEngine.day_snapshots`); the view is
    rebuilt once, when it is next read (``[]``, ``get``, ``pop``; ``items`` and
    ``values`` apply every pending day first). A view replaced in the meantime (any
    write) drops its pending day: a pending day applies only to the view it was taken
    from."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, PendingDay] = {}

    def _apply(self, login: int) -> None:
        base, day, reset_at, balance, equity, history = self.pending.pop(login)
        if dict.get(self, login) is base:
            view = base.on_day(DaySnapshot(day, reset_at, balance, equity), history)
            dict.__setitem__(self, login, view)

    def __getitem__(self, login: int) -> PropView:
        if login in self.pending:
            self._apply(login)
        return dict.__getitem__(self, login)

    @overload
    def get(self, login: int, default: None = None, /) -> PropView | None: ...
    @overload
    def get(self, login: int, default: PropView, /) -> PropView: ...
    @overload
    def get(self, login: int, default: _T, /) -> PropView | _T: ...
    def get(self, login: int, default: Any = None, /) -> Any:
        if login in self.pending:
            self._apply(login)
        return dict.get(self, login, default)

    def pop(self, login: int, *default: Any) -> Any:
        if login in self.pending:
            self._apply(login)
        return dict.pop(self, login, *default)

    def __setitem__(self, login: int, view: PropView) -> None:
        self.pending.pop(login, None)
        dict.__setitem__(self, login, view)

    def __delitem__(self, login: int) -> None:
        self.pending.pop(login, None)
        dict.__delitem__(self, login)

    def apply_pending(self) -> None:
        """Apply every pending day snapshot."""
        for login in list(self.pending):
            self._apply(login)

    def items(self) -> Any:
        self.apply_pending()
        return dict.items(self)

    def values(self) -> Any:
        self.apply_pending()
        return dict.values(self)


def _warn_pct(level_name: str) -> str:
    return level_name.rsplit("warn_", 1)[-1]


class PropEngine:
    """Cached prop accounts, the exact path and the day-reset / deadline schedule.

    ``types`` are the registered rule types; ``submit`` queues a job on the account's
    order worker; ``refresh`` re-levels an account in the risk engine; ``floating``
    returns the risk engine's float floating P&L of an account holding positions
    (None when it holds none); ``now`` is market time (UTC); ``peak`` the risk
    engine's equity peak of an account (None when unknown) and ``seed_peak`` sets it
    (trailing floors follow it; :meth:`install`); ``set_levels(logins, values)``
    replaces named ``prop`` levels of many accounts at once (``values``: level name ->
    value per login; None: each account is re-levelled with ``refresh``).
    """

    def __init__(
        self,
        *,
        types: Mapping[str, RuleTypeEntry],
        submit: Callable[[Job], None],
        refresh: Callable[[int], None],
        floating: Callable[[int], float | None],
        now: Callable[[], datetime],
        peak: Callable[[int], Decimal | None] = lambda login: None,
        seed_peak: Callable[[int, Decimal], None] = lambda login, peak: None,
        set_levels: Callable[[Sequence[int], Mapping[str, Sequence[Decimal]]], object]
        | None = None,
    ) -> None:
        self.types = types
        self.submit = submit
        self.refresh = refresh
        self.floating = floating
        self.now = now
        self.peak = peak
        self.seed_peak = seed_peak
        self.set_levels = set_levels
        self.views = ViewCache()
        self.plans: dict[str, PlanSpec] = {}
        self._rules_cache: dict[tuple[str, int, str], tuple[ConfiguredRule, ...]] = {}
        self._deadlines: list[tuple[datetime, int]] = []
        self._scheduled: set[tuple[datetime, int]] = set()
        #: Background writes (e.g. ``risk.violation_flagged`` of a refused order).
        self.tasks: set[asyncio.Task[None]] = set()
        self._next_resets: dict[str, datetime] = {}
        #: ``min(self._next_resets.values())``: ticks check one instant, not every plan.
        self._earliest_reset: datetime | None = None
        #: The crossings of the current drain (:meth:`flush_crossings`).
        self._batch: CrossingBatch | None = None
        #: Failed accounts that still hold positions (no fresh quote at the breach, or a
        #: crash between a batch's decision and its close): :meth:`retry_closes`.
        self.unclosed: set[int] = set()

    def _set_next_reset(self, plan: PlanSpec, after: datetime) -> None:
        self._next_resets[plan.id] = next_reset(after, plan.reset_time, plan.zone)
        self._earliest_reset = min(self._next_resets.values())

    # --- cache ------------------------------------------------------------------------

    def set_plan(self, plan: PlanSpec) -> None:
        """Install or replace a plan; its accounts' rules are rebuilt."""
        self.plans[plan.id] = plan
        self._rules_cache = {k: v for k, v in self._rules_cache.items() if k[0] != plan.id}
        self._set_next_reset(plan, self.now())
        for login, view in list(self.views.items()):
            if view.plan.id == plan.id:
                self.views[login] = replace(
                    view, plan=plan, rules=self.rules_for(plan, view.phase_index, view.overrides)
                )
                self.refresh(login)

    def rules_for(
        self, plan: PlanSpec, phase_index: int, overrides: Mapping[str, Any]
    ) -> tuple[ConfiguredRule, ...]:
        key = (plan.id, phase_index, repr(sorted(overrides.items())) if overrides else "")
        cached = self._rules_cache.get(key)
        if cached is None:
            items = plan.rules_of(phase_index)
            built = configure(items, self.types, overrides)
            types = [item["type"] for item in items if item["type"] in self.types]
            cached = tuple(ConfiguredRule(t, r) for t, r in zip(types, built, strict=True))
            self._rules_cache[key] = cached
        return cached

    def view_of(
        self,
        row: PropAccount,
        plan: PlanSpec,
        trading_days: Iterable[date] = (),
        daily_profit: Mapping[date, Decimal] | None = None,
    ) -> PropView:
        overrides = dict(row.rule_overrides or {})
        return PropView(
            account_id=row.id,
            login=row.login,
            plan=plan,
            tenant_id=row.tenant_id,
            customer_id=row.customer_id,
            currency=plan.currency,
            status=row.status,
            phase_index=row.phase_index,
            cycle=row.cycle,
            initial_balance=row.initial_balance,
            phase_started_at=row.phase_started_at,
            day=DaySnapshot(row.day, row.day_reset_at, row.day_start_balance, row.day_start_equity),
            history=History(
                peak_eod_balance=row.peak_eod_balance,
                peak_equity=row.peak_equity,
                max_loss_floor=row.max_loss_floor,
                trading_days=frozenset(trading_days),
                daily_profit=dict(daily_profit or {}),
                last_trade_at=row.last_trade_at,
            ),
            rules=self.rules_for(plan, row.phase_index, overrides),
            overrides=overrides,
        )

    def install(self, view: PropView) -> None:
        """Cache ``view``, seed the risk engine's equity peak, re-level it and schedule
        its rules' deadlines.

        The peak is seeded with ``max(History.peak_equity, initial balance)``, raised
        to the engine's peak unless the account starts over (another cycle, or a
        stored peak lower than the cached one: a payout re-base), so a peak the engine
        reached after the row was read is kept. A view equal to the cached one (an
        exact evaluation that changed nothing the rules read) keeps the engine's peak
        and levels as they are: no re-levelling."""
        login = view.login
        current = self.views.get(login)
        seed = max(view.history.peak_equity, view.initial_balance)
        if (
            current is not None
            and current.cycle == view.cycle
            and view.history.peak_equity >= current.history.peak_equity
        ):
            seed = max(seed, self.peak(login) or seed)
        self.views[login] = view
        if view != current:
            self.seed_peak(login, seed)
            self.refresh(login)
        if view.status in TRADING:
            state = view.input(self.now(), view.day.start_balance, view.day.start_equity)
            for configured in view.rules:
                try:
                    for at in configured.rule.deadlines(state):
                        if (at, view.login) not in self._scheduled:
                            self._scheduled.add((at, view.login))
                            heapq.heappush(self._deadlines, (at, view.login))
                except Exception:
                    log.exception("prop rule %s deadlines failed", configured.rule.name)

    # --- hot path -----------------------------------------------------------------------

    def levels(self, account: AccountSnapshot) -> list[Level]:
        """Levels of every rule of the account's phase (none for other accounts)."""
        view = self.views.get(account.login)
        if view is None or view.status not in TRADING:
            return []
        state = view.input(
            self.now(), account.balance, account.balance + account.credit, account.margin_used
        )
        levels: list[Level] = []
        for configured in view.rules:
            try:
                levels.extend(configured.rule.levels(state))
            except Exception:
                log.exception("prop rule %s levels failed for %s", configured.rule.name, view.login)
        return levels

    def on_crossing(self, crossing: Crossing) -> None:
        """Risk-engine crossing of a ``prop`` level: evaluated exactly on the account's
        worker, in this drain's :class:`CrossingBatch`, whose close jobs
        :meth:`flush_crossings` queues at the next event-loop iteration (at once
        without a running loop)."""
        if crossing.login not in self.views:
            return
        batch = self._batch
        looped = True
        if batch is None:
            batch = self._batch = CrossingBatch()
            try:
                asyncio.get_running_loop().call_soon(self.flush_crossings)
            except RuntimeError:
                looped = False
        batch.logins[crossing.login] = None
        self.submit(EvaluateJob(self, crossing.login, crossing=crossing, batch=batch))
        if not looped:
            self.flush_crossings()

    def flush_crossings(self) -> None:
        """Queue a close job per account of the current :class:`CrossingBatch`, behind
        its evaluations (module docstring, "Exact path"); the next crossing starts a
        new batch."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        for login in batch.logins:
            self.submit(BreachCloseJob(self, login, batch))

    def retry_closes(self) -> None:
        """Queue a close job for every failed account still holding positions
        (:attr:`unclosed`; the schedule's timer calls this every ``timer_s``)."""
        for login in sorted(self.unclosed):
            self.submit(BreachCloseJob(self, login, None))

    async def close_failed(self, env: Env, tx: ShardTransaction, account: AccountState) -> int:
        """Close every position of a failed account (:func:`close_all`, reason
        ``prop-breach``); one left open (no fresh quote) puts the account in
        :attr:`unclosed` until a later :meth:`retry_closes` closes it."""
        closed = await close_all(env, tx, account, BREACH_REASON)
        if account.positions:
            self.unclosed.add(account.login)
        return closed

    def on_event(self, event: DomainEvent) -> None:
        """Fills update trading days and daily profit; other writers' prop changes
        reload the cached view (multi-process)."""
        login = event.payload.get("login")
        if not isinstance(login, int) or login not in self.views:
            return
        if event.type in ("order.opened", "order.closed"):
            self.submit(EvaluateJob(self, login, fill=event))
        elif event.type in ("transaction.created", "transaction.updated"):
            self.submit(EvaluateJob(self, login))

    def due(self, now: datetime) -> list[str]:
        """Queue evaluations whose deadline passed; returns the plans whose day reset
        is due (the caller runs :meth:`reset_day` for each)."""
        while self._deadlines and self._deadlines[0][0] <= now:
            entry = heapq.heappop(self._deadlines)
            self._scheduled.discard(entry)
            login = entry[1]
            if login in self.views:
                self.submit(EvaluateJob(self, login))
        if self._earliest_reset is None or self._earliest_reset > now:
            return []
        return [plan_id for plan_id, at in self._next_resets.items() if at <= now]

    # --- exact path ---------------------------------------------------------------------

    async def load_history(
        self, session: Any, login: int, cycle: int
    ) -> tuple[frozenset[date], dict[date, Decimal]]:
        days = frozenset(
            (
                await session.scalars(
                    select(PropTradingDay.day).where(
                        PropTradingDay.login == login, PropTradingDay.cycle == cycle
                    )
                )
            ).all()
        )
        profit = {
            row.day: row.profit
            for row in await session.execute(
                select(PropDailyProfit.day, PropDailyProfit.profit).where(
                    PropDailyProfit.login == login, PropDailyProfit.cycle == cycle
                )
            )
        }
        return days, profit

    async def _record_fill(
        self, session: Any, row: PropAccount, plan: PlanSpec, fill: DomainEvent
    ) -> None:
        at = fill.occurred_at
        if at < row.phase_started_at:
            return
        day = trading_day(at, plan.reset_time, plan.zone)
        row.last_trade_at = at if row.last_trade_at is None else max(row.last_trade_at, at)
        key = {"login": row.login, "cycle": row.cycle, "day": day}
        if fill.type == "order.opened":
            exists = await session.scalar(
                select(func.count()).select_from(PropTradingDay).filter_by(**key)
            )
            if not exists:
                await session.execute(insert(PropTradingDay).values(**key))
            return
        start = max(day_start(day, plan.reset_time, plan.zone), row.phase_started_at)
        end = day_start(day + timedelta(days=1), plan.reset_time, plan.zone)
        total = await session.scalar(
            select(
                func.coalesce(
                    func.sum(TradeHistory.profit + TradeHistory.commission + TradeHistory.swap), 0
                )
            ).where(
                TradeHistory.login == row.login,
                TradeHistory.close_time >= start,
                TradeHistory.close_time < end,
            )
        )
        await session.execute(delete(PropDailyProfit).filter_by(**key))
        await session.execute(insert(PropDailyProfit).values(**key, profit=Decimal(str(total))))

    async def evaluate_in(
        self,
        env: Env,
        tx: ShardTransaction,
        account: AccountState | None,
        login: int,
        *,
        crossing: Crossing | None = None,
        fill: DomainEvent | None = None,
        batch: CrossingBatch | None = None,
    ) -> list[RuleResult]:
        """The exact path on the locked account (module docstring); returns the results.
        A breach closes every position at once, or, in a ``batch``, records the login
        for the batch's :class:`BreachCloseJob`."""
        if account is None:
            return []
        session = tx.session
        row = await session.scalar(
            select(PropAccount).where(PropAccount.login == login).with_for_update()
        )
        cached = self.views.get(login)
        if row is None or cached is None:
            return []
        plan = self.plans.get(row.plan_id, cached.plan)
        if fill is not None:
            await self._record_fill(session, row, plan, fill)
        if row.status not in TRADING:
            self.finish(tx, row, plan)
            return []
        if cached.cycle == row.cycle and cached.day.day > row.day:
            # a day reset's bulk write may still be on its way: take its snapshot
            row.day, row.day_reset_at = cached.day.day, cached.day.reset_at
            row.day_start_balance = cached.day.start_balance
            row.day_start_equity = cached.day.start_equity
            row.peak_eod_balance = max(row.peak_eod_balance, cached.history.peak_eod_balance)
        days, profit = await self.load_history(session, login, row.cycle)
        view = self.view_of(row, plan, days, profit)
        positions, equity = positions_of(account, env.valuation)
        now = tx.now
        currency = view.currency
        peak = equity
        if cached.cycle == row.cycle:  # the engine's peak: trailing floors stand on it
            peak = max(peak, cached.history.peak_equity, self.peak(login) or ZERO)
        if peak > row.peak_equity:
            row.peak_equity = peak_of(peak)
            view = self.view_of(row, plan, days, profit)
        state = view.input(now, account.balance, equity, account.margin, positions)
        results = [(c, c.rule.evaluate(state)) for c in view.rules]
        intent = None if fill is None else await automatic_intent(env, session, account, fill)
        if intent is not None:
            # an opening fill is judged against the positions before it
            ticket = None if intent.closing or fill is None else fill.payload.get("ticket")
            before = [p for p in positions if p.ticket != ticket]
            vetted = replace(state, account=replace(state.account, positions=before))
            for configured in view.rules:
                verdict = configured.rule.check_order(vetted, intent)
                if verdict is not None and verdict.status in (Status.BREACH, Status.WARN):
                    results.append((configured, verdict))
        for configured, result in results:
            floor = _decimal(result.numbers.get("floor"))
            if configured.type != "max_loss" or floor is None:
                continue
            if row.max_loss_floor is None or floor > row.max_loss_floor:
                row.max_loss_floor = floor
        payload = view.base_payload()
        equity_text = money_text(equity, currency)
        breach = next(
            ((c, r) for c, r in results if r.status is Status.BREACH),
            None,
        )
        if breach is not None:
            configured, result = breach
            floor_value = result.numbers.get("floor")
            row.status = "failed"
            row.breach_rule = configured.rule.name
            row.breach_reason = result.reason
            row.breach_floor = floor_value if isinstance(floor_value, Decimal) else None
            row.breach_equity = round_money(equity, currency)
            row.breached_at = now
            if batch is None:
                await self.close_failed(env, tx, account)
            else:
                batch.breached.add(login)
            tx.event(
                "account.breached",
                {
                    **payload,
                    "rule": configured.rule.name,
                    "reason": result.reason,
                    "floor": money_text(row.breach_floor, currency),
                    "equity": equity_text,
                },
            )
            tx.event(
                "phase.failed",
                {**payload, "rule": configured.rule.name, "reason": result.reason},
            )
        else:
            for configured, result in results[len(view.rules) :]:
                if result.status is Status.WARN:
                    tx.event(
                        "risk.violation_flagged",
                        {**payload, "rule": configured.rule.name, "reason": result.reason},
                    )
            self._warnings(tx, row, view, state, results, payload, equity)
            if crossing is not None and crossing.kind is LevelKind.CEILING:
                tx.event(
                    "equity.threshold",
                    {**payload, "level": crossing.level_name, "equity": equity_text},
                )
            evaluated = results[: len(view.rules)]
            await self._objectives(env, tx, account, row, view, plan, evaluated, payload)
        self.finish(tx, row, plan)
        return [result for _, result in results]

    def _warnings(
        self,
        tx: ShardTransaction,
        row: PropAccount,
        view: PropView,
        state: RuleInput,
        results: Sequence[tuple[ConfiguredRule, RuleResult]],
        payload: Mapping[str, Any],
        equity: Decimal,
    ) -> None:
        """``drawdown.warning`` once per warning level and trading day."""
        today = view.day.day.isoformat()
        warned = dict(row.warnings or {})
        for configured, result in results:
            if configured.rule.objective:
                continue
            for level in configured.rule.levels(state):
                peak = state.history.peak_equity
                if ".warn_" not in level.name or not level.passed_by(equity, peak):
                    continue
                if warned.get(level.name) == today:
                    continue
                warned[level.name] = today
                tx.event(
                    "drawdown.warning",
                    {
                        **payload,
                        "rule": configured.rule.name,
                        "threshold_pct": _warn_pct(level.name),
                        "floor": money_text(_decimal(result.numbers.get("floor")), view.currency),
                        "equity": money_text(equity, view.currency),
                    },
                )
        if warned != (row.warnings or {}):
            row.warnings = warned

    async def _objectives(
        self,
        env: Env,
        tx: ShardTransaction,
        account: AccountState,
        row: PropAccount,
        view: PropView,
        plan: PlanSpec,
        results: Sequence[tuple[ConfiguredRule, RuleResult]],
        payload: Mapping[str, Any],
    ) -> None:
        """``target.reached`` once per phase; the pass check (every objective passes)."""
        if row.status != "active" or row.phase_index >= len(plan.phases):
            return
        objectives = [(c, r) for c, r in results if c.rule.objective]
        for configured, result in objectives:
            reached = configured.type == "profit_target" and result.status is Status.PASS
            if reached and row.target_reached_at is None:
                row.target_reached_at = tx.now
                numbers = _numbers_text(result.numbers, view.currency)
                tx.event(
                    "target.reached",
                    {
                        **payload,
                        "target": numbers.get("target"),
                        "value": numbers.get("value", numbers.get("equity")),
                    },
                )
        if not objectives or any(r.status is not Status.PASS for _, r in objectives):
            return
        next_phase = plan.phase_name(row.phase_index + 1)
        tx.event(
            "phase.passed",
            {**payload, "next_phase": next_phase, "profit_pct": profit_pct(account, row)},
        )
        if plan.auto_advance_of(row.phase_index):
            await self.start_phase(env, tx, account, row, plan, row.phase_index + 1)
        else:
            row.status = "passed_pending_approval"

    async def start_phase(
        self,
        env: Env,
        tx: ShardTransaction,
        account: AccountState,
        row: PropAccount,
        plan: PlanSpec,
        phase_index: int,
    ) -> None:
        """A fresh account for ``phase_index`` (the next phase, or the same on a reset):
        positions closed, balance set back to the plan size with one ledger row, a new
        cycle (trading days and daily profit start over), day snapshot and peaks at the
        plan size, scaling undone. The funded stage is ``phase_index == len(plan.phases)``."""
        await close_all(env, tx, account, PHASE_END_REASON)
        size = plan.account_size
        cycle = row.cycle + 1
        delta = size - account.balance
        if delta:
            tx.ledger_entry(
                account,
                "correction_in" if delta > 0 else "correction_out",
                reference_type="prop_account",
                reference_id=f"{row.id}:{cycle}",
                description=f"Prop account set to {size} {plan.currency} "
                f"for {plan.phase_name(phase_index)}",
                balance_delta=delta,
            )
        now = tx.now
        funded = phase_index >= len(plan.phases)
        row.phase_index = phase_index
        row.phase = plan.phase_name(phase_index)
        row.cycle = cycle
        row.status = FUNDED if funded else "active"
        row.funded_at = now if funded else row.funded_at
        row.initial_balance = row.account_size = size
        row.profit_split = row.scaled_at = None
        row.phase_started_at = now
        day = trading_day(now, plan.reset_time, plan.zone)
        row.day = day
        row.day_reset_at = day_start(day, plan.reset_time, plan.zone)
        row.day_start_balance = row.day_start_equity = size
        row.peak_eod_balance = row.peak_equity = size
        row.max_loss_floor = None
        row.breach_rule = row.breach_reason = None
        row.breach_floor = row.breach_equity = None
        row.breached_at = row.target_reached_at = row.last_trade_at = None
        row.warnings = {}

    def finish(self, tx: ShardTransaction, row: PropAccount, plan: PlanSpec) -> None:
        """Bump the row's version; after the commit, cache its new state."""
        row.version += 1
        row.updated_at = tx.now
        login, cycle = row.login, row.cycle
        tx.after_commit(lambda: self._reload_soon(row, plan, login, cycle))

    def _reload_soon(self, row: PropAccount, plan: PlanSpec, login: int, cycle: int) -> None:
        """After commit: the row's new state, with the history it had (trading days and
        daily profit only feed objectives, re-read on the next exact evaluation)."""
        current = self.views.get(login)
        history = current.history if current is not None and current.cycle == cycle else None
        view = self.view_of(row, plan)
        if history is not None:
            view = replace(
                view,
                history=replace(
                    view.history,
                    trading_days=history.trading_days,
                    daily_profit=history.daily_profit,
                ),
            )
        self.install(view)

    # --- day reset ------------------------------------------------------------------------

    def day_snapshots(
        self, plan_id: str, at: datetime, money: Mapping[int, tuple[Decimal, Decimal]]
    ) -> list[dict[str, Any]]:
        """New day snapshots of the plan's watched accounts at reset ``at``: ``money``
        maps login to (balance, credit); start equity adds the engine's float floating
        P&L rounded to cents. Records each new day on the cached view as a pending
        tuple (:class:`ViewCache`: the view is rebuilt when next read, not here),
        re-levels the accounts holding positions (module docstring, "Day reset");
        returns the rows to write.

        Flat accounts are not re-levelled now: a flat account's equity is its balance,
        which no new daily floor reaches (every model's floor is a reference minus an
        allowance, and the reference is at least the balance of a flat account), and
        its next fill or balance change re-levels it from the new snapshot anyway."""
        with gc_paused():
            return self._day_snapshots(plan_id, at, money)

    def _day_snapshots(
        self, plan_id: str, at: datetime, money: Mapping[int, tuple[Decimal, Decimal]]
    ) -> list[dict[str, Any]]:
        plan = self.plans[plan_id]
        day = trading_day(at, plan.reset_time, plan.zone)
        reset_at = day_start(day, plan.reset_time, plan.zone)
        rows = []
        views = self.views
        pending = views.pending
        floating_of = self.floating
        peak_of_login = self.peak
        # accounts to re-level, by their phase's rules: logins, SB, SE, initial
        groups: dict[int, tuple[PropView, list[int], list[Decimal], list[Decimal], list[Decimal]]]
        groups = {}
        relevel = []
        bulkable: dict[int, bool] = {}  # by the phase's rules: every day level has a bulk path
        for login, (balance, credit) in money.items():
            view = dict.get(views, login)  # as cached, a pending day not applied
            if view is None or view.plan.id != plan_id or view.status not in TRADING:
                continue
            last = pending.get(login)
            if last is not None and last[0] is view:  # the last reset's, not read since
                current, history = last[1], last[5]
            else:
                current, history = view.day.day, view.history
            if current >= day:
                continue  # already snapshotted (e.g. a restart after the reset)
            floating = floating_of(login)
            equity = balance + credit
            if floating is not None:
                equity += Decimal(f"{floating:.2f}")
            peak_eod = history.peak_eod_balance
            peak = peak_of_login(login)
            peak_equity = history.peak_equity if peak is None else max(history.peak_equity, peak)
            if balance > peak_eod or peak_equity != history.peak_equity:
                history = History(
                    max(balance, peak_eod),
                    peak_equity,
                    history.max_loss_floor,
                    history.trading_days,
                    history.daily_profit,
                    history.last_trade_at,
                )
            pending[login] = (view, day, reset_at, balance, equity, history)
            if floating is not None:
                bulk = bulkable.get(id(view.rules))
                if bulk is None:
                    bulk = bulkable[id(view.rules)] = day_levels_in_bulk(view.rules)
                if balance > peak_eod or self.set_levels is None or not bulk:
                    relevel.append(login)  # history-dependent levels change too
                else:
                    group = groups.get(id(view.rules))
                    if group is None:
                        group = groups[id(view.rules)] = (view, [], [], [], [])
                    group[1].append(login)
                    group[2].append(balance)
                    group[3].append(equity)
                    group[4].append(view.initial_balance)
            rows.append(
                {
                    "k_login": login,
                    "v_day": day,
                    "v_day_reset_at": reset_at,
                    "v_day_start_balance": balance,
                    "v_day_start_equity": equity,
                    "v_peak_eod_balance": history.peak_eod_balance,
                    "v_peak_equity": history.peak_equity,  # engine peaks: 8 places
                }
            )
        for view, logins, balances, equities, initials in groups.values():
            for configured in view.rules:
                bulk = getattr(configured.rule, "day_levels", None)
                if bulk is not None and self.set_levels is not None:
                    self.set_levels(logins, bulk(balances, equities, initials))
        for login in relevel:
            self.refresh(login)
        self._set_next_reset(plan, at)
        return rows

    async def reset_day(self, db: Any, plan_id: str, at: datetime) -> int:
        """Run the day reset of ``plan_id`` at ``at`` (see :meth:`day_snapshots`);
        returns the accounts reset."""
        self._set_next_reset(self.plans[plan_id], at)
        async with db.read() as session:
            money = {
                row.login: (row.balance, row.credit)
                for row in await session.execute(
                    select(TradingAccount.login, TradingAccount.balance, TradingAccount.credit)
                    .join(PropAccount, PropAccount.login == TradingAccount.login)
                    .where(PropAccount.plan_id == plan_id, PropAccount.status.in_(TRADING))
                )
            }
        rows = self.day_snapshots(plan_id, at, money)
        if rows:
            async with db.transaction() as session:
                await session.execute(SNAPSHOT_UPDATE, rows)
        return len(rows)

    async def persist_peaks(self, db: Any) -> int:
        """Write the risk engine's equity peaks above the stored ones (shutdown; the day
        reset and every exact evaluation write them too). Returns the rows written."""
        rows = []
        for login, view in self.views.items():
            peak = self.peak(login)
            if view.status in TRADING and peak is not None and peak > view.history.peak_equity:
                rows.append({"k_login": login, "v_peak_equity": peak_of(peak)})
        if rows:
            async with db.transaction() as session:
                await session.execute(PEAK_UPDATE, rows)
        return len(rows)

    # --- pre-trade ------------------------------------------------------------------------

    def check_order(
        self, order: PreTradeCheck, positions: Sequence[PositionView]
    ) -> tuple[Rejection | None, list[tuple[str, str]]]:
        """``(rejection, flags)`` for an order or a close (``order.closing``) the trader
        sends: the rejection when the account is not trading (opens only) or a rule's
        ``check_order`` answers ``breach``; ``flags`` the ``(rule, reason)`` pairs to
        flag (``risk.violation_flagged``): the refusing rule's, or every ``warn`` of an
        order let through. A pending order triggering (origin ``pending:<id>``) is a
        fill the trader did not send: only the status refuses it, the rules judge it
        after the fill (:func:`automatic_intent`)."""
        view = self.views.get(order.login)
        if view is None:
            return None, []
        if view.status not in TRADING and not order.closing:
            return Rejection(f"Trading disabled: challenge account is {view.status}"), []
        if (order.origin or "").startswith("pending:"):
            return None, []
        now = utc(order.time_ms) if order.time_ms else self.now()
        state = view.input(now, order.balance, order.equity, order.margin_used, positions)
        intent = OrderIntent(
            symbol=order.symbol,
            side=order.side,
            volume=order.volume,
            price=order.price,
            sl=order.sl,
            tp=order.tp,
            notional_usd=order.notional_usd if order.notional_usd is not None else ZERO,
            at=now,
            closing=order.closing,
        )
        flags = []
        for configured in view.rules:
            result = configured.rule.check_order(state, intent)
            if result is None:
                continue
            if result.status is Status.BREACH:
                return Rejection(result.reason), [(configured.rule.name, result.reason)]
            if result.status is Status.WARN:
                flags.append((configured.rule.name, result.reason))
        return None, flags


SNAPSHOT_UPDATE = (
    update(PROP_ACCOUNTS)
    .where(PROP_ACCOUNTS.c.login == bindparam("k_login"))
    .values(
        day=bindparam("v_day"),
        day_reset_at=bindparam("v_day_reset_at"),
        day_start_balance=bindparam("v_day_start_balance"),
        day_start_equity=bindparam("v_day_start_equity"),
        peak_eod_balance=bindparam("v_peak_eod_balance"),
        peak_equity=bindparam("v_peak_equity"),
    )
)


PEAK_UPDATE = (
    update(PROP_ACCOUNTS)
    .where(
        PROP_ACCOUNTS.c.login == bindparam("k_login"),
        PROP_ACCOUNTS.c.peak_equity < bindparam("v_peak_equity"),
    )
    .values(peak_equity=bindparam("v_peak_equity"))
)


#: ``order.closed`` reasons of fills the trader did not send -> ``OrderIntent.origin``.
AUTOMATIC_CLOSES = {"sl": "sl", "tp": "tp", "stop-out": "stop_out"}


async def automatic_intent(
    env: Env, session: Any, account: AccountState, fill: DomainEvent
) -> OrderIntent | None:
    """The :class:`OrderIntent` of a fill the trader did not send now (a pending order
    triggering, an SL, TP or stop-out close), for the rules' ``check_order`` after the
    fact (it cannot be refused: a ``breach`` fails the phase, a ``warn`` is flagged);
    ``notional_usd`` at the fill price (0 without a USD rate). None for the trader's
    own orders, which were vetted before they executed."""
    data = fill.payload
    if fill.type == "order.opened":
        if not str(data.get("request_id") or "").startswith("pending:"):
            return None
        side, origin, closing = SIDE[int(data["cmd"])], "pending", False
    else:
        origin = AUTOMATIC_CLOSES.get(str(data.get("reason")), "")
        deal = await session.get(TradeHistory, data.get("deal")) if origin else None
        if deal is None:
            return None
        side, closing = -SIDE[deal.cmd], True
    symbol = str(data["symbol"])
    volume, price = Decimal(str(data["volume"])), Decimal(str(data["price"]))
    terms = env.terms.terms(account.group_id, symbol)
    notional = None if terms is None else notional_usd(env.valuation, terms, volume, price)
    return OrderIntent(
        symbol=symbol,
        side=side,
        volume=volume,
        price=price,
        sl=None,
        tp=None,
        notional_usd=ZERO if notional is None else notional,
        at=fill.occurred_at,
        closing=closing,
        origin=origin,
    )


def _decimal(value: Any) -> Decimal | None:
    return value if isinstance(value, Decimal) else None


class EvaluateJob(Job):
    """Evaluate a prop account exactly on its worker (crossing, fill or deadline); in a
    :class:`CrossingBatch`, a breach leaves the closes to the batch's close job."""

    def __init__(
        self,
        engine: PropEngine,
        login: int,
        *,
        crossing: Crossing | None = None,
        fill: DomainEvent | None = None,
        batch: CrossingBatch | None = None,
    ) -> None:
        self.login = login
        self.engine = engine
        self.crossing = crossing
        self.fill = fill
        self.batch = batch

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        return await self.engine.evaluate_in(
            env, tx, account, self.login, crossing=self.crossing, fill=self.fill, batch=self.batch
        )


class BreachCloseJob(Job):
    """Close every position of an account its :class:`CrossingBatch` failed (queued
    after every evaluation of the batch), or, with no batch, of a failed account that
    still holds positions (:meth:`PropEngine.retry_closes`). Does nothing unless the
    batch (if any) failed it and the locked row is ``failed`` (an evaluation rolled
    back fails nothing). Returns the positions closed."""

    def __init__(self, engine: PropEngine, login: int, batch: CrossingBatch | None) -> None:
        self.login = login
        self.engine = engine
        self.batch = batch

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        if account is None or (self.batch is not None and self.login not in self.batch.breached):
            return 0
        if self.batch is None and not account.positions:  # closed (seen committed)
            self.engine.unclosed.discard(self.login)
            return 0
        status = await tx.session.scalar(
            select(PropAccount.status).where(PropAccount.login == self.login).with_for_update()
        )
        if status != "failed":
            self.engine.unclosed.discard(self.login)
            return 0
        return await self.engine.close_failed(env, tx, account)


class PhaseJob(FutureJob):
    """Start a phase on the worker: ``advance`` (next phase, from active or
    passed_pending_approval) or ``reset`` (the same phase afresh; emits
    ``account.reset`` with the plan's ``reset_fee``, null without one). Raises
    TradingError 404 / 409. Returns the account row after the change."""

    def __init__(self, engine: PropEngine, login: int, kind: str, actor: str) -> None:
        super().__init__(login)
        self.engine = engine
        self.kind = kind
        self.actor = actor

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        engine = self.engine
        row = await tx.session.scalar(
            select(PropAccount).where(PropAccount.login == self.login).with_for_update()
        )
        if account is None or row is None:
            raise TradingError(404, "Prop account not found")
        plan = engine.plans[row.plan_id]
        view = engine.views.get(self.login) or engine.view_of(row, plan)
        payload = view.base_payload()
        if self.kind == "advance":
            if row.status not in ("active", "passed_pending_approval"):
                raise TradingError(409, f"Cannot advance an account that is {row.status}")
            if row.phase_index >= len(plan.phases):
                raise TradingError(409, "The account is already funded")
            if row.status == "active":
                tx.event(
                    "phase.passed",
                    {
                        **payload,
                        "next_phase": plan.phase_name(row.phase_index + 1),
                        "profit_pct": profit_pct(account, row),
                        "actor": self.actor,
                    },
                )
            await engine.start_phase(env, tx, account, row, plan, row.phase_index + 1)
        else:
            if row.status == "archived":
                raise TradingError(409, "Cannot reset an archived account")
            await engine.start_phase(env, tx, account, row, plan, row.phase_index)
            tx.event(
                "account.reset",
                {
                    **payload,
                    "reset_fee": money_text(plan.reset_fee, plan.currency),
                    "currency": plan.currency,
                    "actor": self.actor,
                },
            )
        engine.finish(tx, row, plan)
        return row


class StatusJob(FutureJob):
    """Set a prop account's status on its worker (suspend / re-activate / archive);
    archiving closes every position. Raises TradingError 404 / 409."""

    def __init__(self, engine: PropEngine, login: int, status: str, allowed: Iterable[str]) -> None:
        super().__init__(login)
        self.engine = engine
        self.status = status
        self.allowed = frozenset(allowed)

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        row = await tx.session.scalar(
            select(PropAccount).where(PropAccount.login == self.login).with_for_update()
        )
        if account is None or row is None:
            raise TradingError(404, "Prop account not found")
        if row.status not in self.allowed:
            raise TradingError(409, f"Cannot set an account that is {row.status} to {self.status}")
        if self.status == "archived":
            await close_all(env, tx, account, "prop-archive")
        row.status = self.status
        self.engine.finish(tx, row, self.engine.plans[row.plan_id])
        return row
