"""Prop-firm challenge evaluation inside the risk engine, on a real tick sequence.

Setup (timed as *build*): the accounts and positions of ``bench_risk.py`` (its
``Portfolio``, instruments and real-tick mapping, imported, not copied; accounts all in
USD here) become challenge accounts under three plans built from the real rule types
of ``rules/prop`` through the challenges plugin's :class:`PropEngine` and its ``prop``
account rule:

* ``ftmo-100k`` (50%): daily loss ``balance_minus_initial_pct`` 5% with warnings at 50
  and 80%, max loss ``static`` 10%, profit target 10% on balance, 4 trading days;
* ``the5ers-50k`` (30%): daily loss ``max_balance_equity_pct`` 5%, max loss
  ``trailing_eod_balance`` 6%, target 8%, consistency 50%;
* ``apex-200k`` (20%): max loss ``trailing_intraday_equity`` 3% locked at the initial
  balance (a risk-engine trailing floor per account: the engine raises the account's
  equity peak vectorised on every tick), target 6% on equity (a ceiling).

Balances are the plan sizes; 2% of accounts start their day 0-50 USD above their
daily floor so that real price moves cross it, and before the paced phase 2,000 more
are put 0-200 USD above it.

Measured:

* **sustained ticks/s** with every prop level (floors, warnings, peaks, targets) and
  stop-out/margin call evaluated: ticks through ``on_tick`` back to back; each
  ``prop`` crossing goes to the plugin's real handler (:meth:`PropEngine.on_crossing`,
  which queues an ``EvaluateJob`` per crossing and a ``BreachCloseJob`` per crossed
  account of the drain), and the queued jobs are run inline in queue order by the
  *stand-in* for their bodies (:class:`ExactPath`; the kernel runs them on the order
  workers, adding the database round trip measured by ``bench_orders.py``): an
  evaluation decides the account's rules in Decimal on its equity quantised to cents,
  a close job of a failed account removes its positions and books the equity
  (``remove_position`` + ``update_money``);
* **tick -> breach event** at a paced ``--rate`` ticks/s: an asyncio producer publishes
  each tick on schedule and stamps it; the handler's jobs go through an
  ``asyncio.Queue`` (the order workers' queue) to a consumer, which takes every queued
  job, as a worker takes its batch, and records stamp -> receipt of each floor
  crossing (as ``bench_risk.py`` measures stop-outs) and stamp -> breach decided by
  the stand-in's Decimal check; the handler queues a drain's close jobs behind its
  evaluations, so every crossing of a tick is decided before any failed account's
  positions are removed (up to 17 breaches share a tick: closing one must not delay
  the decision on the next);
* **day reset** of every plan for all accounts: :meth:`PropEngine.day_snapshots` (new
  day snapshot from the exact balance and the engine's floating P&L quantised to
  cents, peaks, daily floors replaced in bulk through ``DailyLoss.day_levels`` and
  ``RiskEngine.set_level_values``) plus ``RiskEngine.settle`` (accounts evaluated);
  the one bulk UPDATE of the rows is not included;
* memory: RSS before/after the build, the engine's NumPy bytes.

Measured 2026-11-21 (2-core box shared with other jobs, load average 4-12: CPU-time
figures vary run to run; latencies under that load are not representative):
sustained 10,651-11,617 ticks per CPU second in three runs (3,286 exact evaluations,
910 breaches, 2,371 warnings); the same 100,000 ticks run interleaved in one process
through the previous engine and this one (identical crossings): 10,919 -> 12,040 and
12,637 -> 14,075 per CPU second (segment rows kept in slot order: the floating
gather/scatter walks memory in order; the trailing floors checked on a per-slot band
of the floating P&L taken from the re-marked rows); paced p99 tick -> breach decided
4.9-9.1 ms under that load; day reset of 98,785 accounts 854-926 ms CPU; RSS 754 MB
after the build, NumPy 66 MB.

Later the same day on the quiet machine (load average 0.6), defaults: sustained
16,237 ticks/s wall, 16,310 per CPU second (target 10,000); paced 1,000 ticks/s:
tick -> floor crossing p50 0.307 / p99 0.696 ms, tick -> breach decided p50 0.456 /
p99 1.122 ms, max 1.276 ms (target 2 ms; up to 17 breaches in one batch); day reset
of 98,785 accounts 732 ms wall, 731 ms CPU (target 1 s); RSS 162 -> 763 MB after the
build, 801 MB at the end; NumPy arrays 66.2 MB.

On a later machine of the same kind (quiet, load average ~1; ~40% slower per CPU
second on this bench and on pure-Python ones such as bench_webhooks, the code of the
runs above measuring the same there), defaults, two runs: sustained 9,556 and 9,391
ticks per CPU second (target 10,000); paced tick -> breach decided p99 1.818 and
2.133 ms (target 2 ms); day reset 907 and 1,022 ms CPU (target 1 s); RSS +601 MB.

Run from the repository root::

    .venv/bin/python benchmarks/bench_prop.py [--accounts 100000] [--positions 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from bench_risk import Portfolio, Relay, load_ticks, rss_mb
from common import add_data_dir_option, percentile

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import PluginContext
from brokerkernel.kernel.prop.rules import DaySnapshot, History, Status
from brokerkernel.kernel.risk.engine import RiskEngine
from brokerkernel.kernel.risk.rules import (
    AccountSnapshot,
    Crossing,
    Level,
    LevelKind,
    MarginCallRule,
    StopOutRule,
)
from brokerkernel.kernel.trading.jobs import Job
from brokerkernel.plugins.challenges.engine import (
    RULE_NAME,
    BreachCloseJob,
    EvaluateJob,
    PlanSpec,
    PropEngine,
    PropView,
)
from brokerkernel.plugins.challenges.plans import RuleTypeEntry, validate_plan
from brokerkernel.rules.prop import consistency, daily_loss, max_loss, profit_target, trading_days

TARGETS = (
    "targets (issue 6): 10,000 ticks/s with all rules evaluated; tick -> breach event "
    "p99 <= 2 ms at 1,000 ticks/s; day reset of 100,000 accounts < 1 s"
)
CENT = Decimal("0.01")
PRAGUE = ZoneInfo("Europe/Prague")

PLANS: list[tuple[str, Decimal, float, list[dict[str, Any]]]] = [
    (
        "ftmo-100k",
        Decimal(100_000),
        0.5,
        [
            {
                "type": "daily_loss",
                "params": {
                    "model": "balance_minus_initial_pct",
                    "percent": 5,
                    "warn_at_pct": [50, 80],
                },
            },
            {"type": "max_loss", "params": {"model": "static", "percent": 10}},
            {"type": "profit_target", "params": {"percent": 10}},
            {"type": "trading_days", "params": {"min_trading_days": 4}},
        ],
    ),
    (
        "the5ers-50k",
        Decimal(50_000),
        0.3,
        [
            {"type": "daily_loss", "params": {"model": "max_balance_equity_pct", "percent": 5}},
            {"type": "max_loss", "params": {"model": "trailing_eod_balance", "percent": 6}},
            {"type": "profit_target", "params": {"percent": 8}},
            {"type": "consistency", "params": {"max_best_day_pct": 50}},
        ],
    ),
    (
        "apex-200k",
        Decimal(200_000),
        0.2,
        [
            {
                "type": "max_loss",
                "params": {"model": "trailing_intraday_equity", "percent": 3, "lock_offset": 0},
            },
            {"type": "profit_target", "params": {"percent": 6, "basis": "equity"}},
        ],
    ),
]


def rule_types() -> dict[str, RuleTypeEntry]:
    """The real rule types, built as the kernel builds them (no news rule: no calendar)."""
    context = PluginContext(plugin="bench", config={}, clock=MarketClock(driven=True, start_ms=0))
    types = {}
    for module in (daily_loss, max_loss, profit_target, trading_days, consistency):
        for descriptor in module.broker_register_prop_rules():
            types[descriptor.name] = RuleTypeEntry(
                descriptor.name, descriptor.factory(context), descriptor.config_schema
            )
    return types


class TickRule:
    """The plugin's ``prop`` account rule, bound to the benchmark's engine."""

    name = RULE_NAME

    def __init__(self, engine: PropEngine) -> None:
        self.engine = engine

    def levels(self, account: AccountSnapshot) -> list[Level]:
        return self.engine.levels(account)


class ExactPath:
    """Stand-in for the bodies of the prop jobs the plugin's handler queues (module
    docstring): an ``EvaluateJob`` evaluates the account's rules in Decimal on the
    engine's equity peak (:meth:`decide`) and fails it on a breach; the batch's
    ``BreachCloseJob`` then removes its positions and books its equity (:meth:`close`).
    Jobs go to ``target`` (``queued.append``, or a paced phase's queue)."""

    def __init__(self, risk: RiskEngine, prop: PropEngine, tickets: dict[int, list[int]]) -> None:
        self.risk = risk
        self.prop = prop
        self.tickets = tickets
        self.breaches = 0
        self.warnings = 0
        self.evaluations = 0
        self.queued: deque[Job] = deque()
        self.target: Callable[[Job], None] = self.queued.append
        self.failed: dict[int, Decimal] = {}

    def submit(self, job: Job) -> None:
        self.target(job)

    def route(self, crossing: Crossing) -> None:
        """The kernel's routing of the engine's sink: ``prop`` crossings to the
        plugin's handler (stop-out / margin call jobs are ``bench_risk.py``'s)."""
        if crossing.rule == RULE_NAME:
            self.prop.on_crossing(crossing)

    def decide(self, crossing: Crossing) -> Decimal | None:
        """The exact equity (cents) when the crossing is a breach (the account is marked
        failed; :meth:`close` books it), else None."""
        if crossing.rule != RULE_NAME:
            return None
        login = crossing.login
        view = self.prop.views.get(login)
        if view is None or view.status != "active":
            return None
        self.evaluations += 1
        equity = Decimal(repr(self.risk.equity(login))).quantize(CENT)
        balance = view.day.start_balance
        peak = self.risk.peak(login)
        history = view.history
        if peak is not None and peak > history.peak_equity:
            history = replace(history, peak_equity=peak)
        state = view.input(self.prop.now(), balance, equity, history=history)
        results = [configured.rule.evaluate(state) for configured in view.rules]
        if any(
            r.status is Status.BREACH and not c.rule.objective
            for c, r in zip(view.rules, results, strict=True)
        ):
            self.breaches += 1
            self.prop.views[login] = replace(view, status="failed")
            return equity
        if ".warn_" in crossing.level_name and crossing.kind.is_floor:
            self.warnings += 1
        return None

    def close(self, login: int, equity: Decimal) -> None:
        """Remove a failed account's positions and book its equity."""
        for ticket in self.tickets.pop(login, []):
            self.risk.remove_position(ticket)
        self.risk.update_money(login, equity, Decimal(0), Decimal(0))

    def run(self, job: Job) -> Decimal | None:
        """Run one queued job; the exact equity when it is an evaluation that failed
        the account."""
        if isinstance(job, EvaluateJob):
            equity = None if job.crossing is None else self.decide(job.crossing)
            if equity is not None and job.batch is not None:
                job.batch.breached.add(job.login)
                self.failed[job.login] = equity
            return equity
        if isinstance(job, BreachCloseJob) and job.login in job.batch.breached:
            self.close(job.login, self.failed.pop(job.login))
        return None

    def drain(self) -> None:
        """Run the queued jobs in order."""
        while self.queued:
            self.run(self.queued.popleft())


def build(
    book: Portfolio, ticks: list[tuple[str, float, float, int]], relay: Relay
) -> tuple[RiskEngine, PropEngine, ExactPath, float]:
    """Engines, plans, accounts (views) and positions; returns them and the RSS after.
    ``relay`` (the risk engine's sink) is pointed at :meth:`ExactPath.route`."""
    clock = {"now": datetime.fromtimestamp(ticks[0][3] / 1000, UTC)}
    holder: dict[str, Any] = {}
    tickets: dict[int, list[int]] = {}

    def floating(login: int) -> float | None:
        return holder["risk"].floating(login) if login in tickets else None

    prop = PropEngine(
        types=rule_types(),
        submit=lambda job: holder["exact"].submit(job),
        refresh=lambda login: holder["risk"].refresh(login),
        floating=floating,
        now=lambda: clock["now"],
        peak=lambda login: holder["risk"].peak(login),
        seed_peak=lambda login, peak: holder["risk"].set_peak(login, peak),
        set_levels=lambda logins, values: holder["risk"].set_level_values(
            RULE_NAME, logins, values
        ),
    )
    risk = RiskEngine([StopOutRule(), MarginCallRule(), TickRule(prop)], sink=relay)
    holder["risk"] = risk
    exact = holder["exact"] = ExactPath(risk, prop, tickets)
    relay.target = exact.route
    now = clock["now"]
    plans = []
    for code, size, share, rules in PLANS:
        values, errors = validate_plan(
            {
                "code": code,
                "name": code,
                "account_size": size,
                "phases": [{"name": "phase_1", "rules": rules}],
            },
            prop.types,
        )
        assert not errors, errors
        plan = PlanSpec(
            id=code,
            account_size=size,
            currency="USD",
            phases=tuple(values["phases"]),
            funded_rules=(),
            reset_time="00:00",
            zone=PRAGUE,
            auto_advance=True,
            drawdown_after_payout="keep",
        )
        prop.set_plan(plan)
        plans.append((plan, share))
    first: dict[str, tuple[str, float, float, int]] = {}
    for tick in ticks:
        first.setdefault(tick[0], tick)
    for symbol, bid, ask, time_ms in first.values():
        risk.on_tick(symbol, bid, ask, time_ms)
    book.currency[:] = "USD"
    shares = [share for _, share in plans]
    choice = book.rng.choice(len(plans), len(book.logins), p=[x / sum(shares) for x in shares])
    day = now.astimezone(PRAGUE).date()
    reset_at = datetime.combine(day, datetime.min.time(), PRAGUE).astimezone(UTC)
    for slot, login in enumerate(book.logins.tolist()):
        plan = plans[int(choice[slot])][0]
        size = plan.account_size
        risk.set_account(
            login,
            currency="USD",
            balance=size,
            credit=Decimal(0),
            margin_used=Decimal(0),
            stopout_level=Decimal(50),
            margin_call_level=Decimal(100),
        )
        prop.views[login] = PropView(
            account_id=f"prop_{login}",
            login=login,
            plan=plan,
            tenant_id=None,
            customer_id="bench",
            currency="USD",
            status="active",
            phase_index=0,
            cycle=1,
            initial_balance=size,
            phase_started_at=now - timedelta(days=3),
            day=DaySnapshot(day, reset_at, size, size),
            history=History(size, size, trading_days=frozenset({day})),
            rules=prop.rules_for(plan, 0, {}),
        )
        risk.set_peak(login, size)
    book.add_positions(risk, tickets)
    # 2% of the accounts start their day 0-50 USD above their daily floor
    fragile = book.rng.random(len(book.logins)) < 0.02
    for slot in fragile.nonzero()[0].tolist():
        login = int(book.logins[slot])
        view = prop.views[login]
        if view.plan.id == "apex-200k":
            continue
        equity = Decimal(repr(risk.equity(login))).quantize(CENT)
        allowance = view.initial_balance * Decimal("0.05")
        gap = Decimal(repr(float(book.rng.uniform(0, 50)))).quantize(CENT)
        start = equity + allowance - gap
        prop.views[login] = replace(
            view, day=replace(view.day, start_balance=start, start_equity=start)
        )
        risk.refresh(login)
    risk.settle()
    return risk, prop, exact, rss_mb()


def throughput(
    risk: RiskEngine, exact: ExactPath, ticks: list[tuple[str, float, float, int]]
) -> tuple[float, float]:
    """(ticks per wall second, ticks per CPU second). No event loop runs: the handler
    queues each crossing's close job at once, and the jobs run after the tick."""
    wall, cpu = time.perf_counter(), time.process_time()
    queued = exact.queued
    for symbol, bid, ask, time_ms in ticks:
        risk.on_tick(symbol, bid, ask, time_ms)
        if queued:
            exact.drain()
            risk.settle()
    return len(ticks) / (time.perf_counter() - wall), len(ticks) / (time.process_time() - cpu)


def is_floor(crossing: Crossing | None) -> bool:
    """A crossing of a floor that is not a warning level."""
    if crossing is None or not crossing.kind.is_floor:
        return False
    return ".warn_" not in crossing.level_name


async def paced(
    risk: RiskEngine,
    exact: ExactPath,
    ticks: list[tuple[str, float, float, int]],
    rate: float,
    queue: asyncio.Queue[Job],
) -> dict[str, Any]:
    """Publish ``ticks`` at ``rate``/s; the consumer runs the queued jobs (the handler's,
    through ``queue``) and records tick stamp -> breach decided."""
    stamps: dict[int, float] = {}
    latencies: list[float] = []
    received: list[float] = []
    batches: list[int] = []

    async def consume() -> None:
        while True:
            jobs = [await queue.get()]
            while not queue.empty():
                jobs.append(queue.get_nowait())
            arrived = time.perf_counter()
            failed = 0
            for job in jobs:
                crossing = job.crossing if isinstance(job, EvaluateJob) else None
                stamped = None if crossing is None else stamps.pop(id(crossing), None)
                if stamped is not None and is_floor(crossing):
                    received.append((arrived - stamped) * 1000)
                if exact.run(job) is not None:
                    failed += 1
                    if stamped is not None:
                        latencies.append((time.perf_counter() - stamped) * 1000)
            if failed:
                batches.append(failed)
            risk.settle()

    consumer = asyncio.create_task(consume())
    start = time.perf_counter()
    for index, (symbol, bid, ask, time_ms) in enumerate(ticks):
        await asyncio.sleep(max(start + index / rate - time.perf_counter(), 0))
        stamped = time.perf_counter()
        for crossing in risk.on_tick(symbol, bid, ask, time_ms):
            if crossing.rule == RULE_NAME:
                stamps[id(crossing)] = stamped
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.05)
    consumer.cancel()
    return {
        "achieved_rate": len(ticks) / elapsed,
        "latencies": latencies,
        "received": received,
        "batches": batches,
    }


def day_reset(risk: RiskEngine, prop: PropEngine, at: datetime) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and accounts of the day reset of every plan at ``at``."""
    money = {
        login: (view.day.start_balance, Decimal(0))
        for login, view in prop.views.items()
        if view.status == "active"
    }
    started, cpu = time.perf_counter(), time.process_time()
    rows = sum(len(prop.day_snapshots(plan_id, at, money)) for plan_id in list(prop.plans))
    risk.settle()
    return time.perf_counter() - started, time.process_time() - cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=300_000)
    parser.add_argument("--ticks", type=int, default=100_000, help="throughput phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced ticks/s")
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2014, 5, 7))
    add_data_dir_option(parser)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--plans",
        default=",".join(code for code, *_ in PLANS),
        help="plan codes to use (their shares are renormalised)",
    )
    args = parser.parse_args()
    chosen = args.plans.split(",")
    PLANS[:] = [plan for plan in PLANS if plan[0] in chosen]

    paced_count = int(args.rate * args.paced_seconds)
    ticks = load_ticks(args.data_dir, args.day, args.ticks + paced_count)
    print(TARGETS)
    print(
        f"{args.accounts:,} challenge accounts under plans {args.plans}, {args.positions:,} "
        f"positions, {len(ticks):,} real ticks of {args.day} (EURUSD + XAUUSD mapped)"
    )
    relay = Relay(lambda crossing: None)
    rss_before = rss_mb()
    started = time.perf_counter()
    book = Portfolio(args.accounts, args.positions, args.seed)
    risk, prop, exact, rss_after = build(book, ticks, relay)
    snapshot = risk.snapshot()
    levels = sum(len(risk.watched(login)) for login in book.logins[:1000].tolist()) / 1000
    print(
        f"build: {time.perf_counter() - started:.1f} s; {levels:.1f} levels per account; "
        f"memory: RSS {rss_before:.0f} -> {rss_after:.0f} MB (+{rss_after - rss_before:.0f} MB), "
        f"NumPy arrays {snapshot.array_bytes / 1e6:.1f} MB, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB"
    )
    exact.drain()
    risk.settle()
    before = exact.breaches

    trailing = sum(
        any(w.level.kind is LevelKind.TRAILING_FLOOR for w in risk.watched(login))
        for login in book.logins.tolist()
    )
    rate, cpu_rate = throughput(risk, exact, ticks[: args.ticks])
    print(
        f"sustained: {rate:,.0f} ticks/s wall, {cpu_rate:,.0f} per CPU second over "
        f"{args.ticks:,} ticks (target 10,000); exact evaluations {exact.evaluations:,}, "
        f"breaches {exact.breaches - before:,}, warnings {exact.warnings:,}; "
        f"trailing-floor accounts {trailing:,}"
    )

    # 2,000 more accounts 0-200 USD above their daily floor for the paced phase
    candidates = [
        login
        for login, view in prop.views.items()
        if view.status == "active" and view.plan.id != "apex-200k" and login in exact.tickets
    ]
    for login in book.rng.choice(candidates, min(2000, len(candidates)), replace=False).tolist():
        view = prop.views[login]
        equity = Decimal(repr(risk.equity(login))).quantize(CENT)
        start = (
            equity
            + view.initial_balance * Decimal("0.05")
            - Decimal(repr(float(book.rng.uniform(0, 200)))).quantize(CENT)
        )
        prop.views[login] = replace(
            view, day=replace(view.day, start_balance=start, start_equity=start)
        )
        risk.refresh(login)
    risk.settle()
    exact.drain()
    queue: asyncio.Queue[Job] = asyncio.Queue()
    exact.target = queue.put_nowait
    result = asyncio.run(paced(risk, exact, ticks[args.ticks :], args.rate, queue))
    latencies, received = result["latencies"], result["received"]
    if latencies:
        print(
            f"paced {args.rate:,.0f} ticks/s (achieved {result['achieved_rate']:,.0f}): "
            f"tick -> floor crossing at the consumer {len(received):,}, p50 "
            f"{percentile(received, 0.5):.3f} ms, p99 {percentile(received, 0.99):.3f} ms; "
            f"tick -> breach decided (exact path run) {len(latencies):,}, p50 "
            f"{percentile(latencies, 0.5):.3f} ms, p99 {percentile(latencies, 0.99):.3f} ms, "
            f"max {max(latencies):.3f} ms (target p99 <= 2 ms); breaches per batch: max "
            f"{max(result['batches'])}, mean {statistics.fmean(result['batches']):.1f}"
        )
    else:
        print("paced phase: no breach occurred")

    at = prop.now().astimezone(PRAGUE).date() + timedelta(days=1)
    reset_at = datetime.combine(at, datetime.min.time(), PRAGUE).astimezone(UTC)
    seconds, cpu_seconds, rows = day_reset(risk, prop, reset_at)
    print(
        f"day reset: {rows:,} accounts in {seconds * 1000:.0f} ms wall, "
        f"{cpu_seconds * 1000:.0f} ms CPU (target < 1 s; snapshot "
        f"from the exact balance + float floating P&L quantised to cents, re-level and "
        f"evaluate; the bulk UPDATE is separate)"
    )
    print(f"memory at the end: RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
