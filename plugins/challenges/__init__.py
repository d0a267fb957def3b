"""The ``challenges`` plugin: prop-firm challenge plans, accounts, evaluation, payouts.

Enable it with ``[plugins.challenges]`` in ``plugins.toml`` next to the prop rule
plugins its plans use (``rules/prop``). It registers:

* the per-tick account rule ``prop`` (every rule of each account's current phase as
  risk-engine levels) and the crossing handler behind it
  (:mod:`~brokerkernel.plugins.challenges.engine`);
* the pre-trade rule ``prop``: orders of failed, passed, suspended or archived prop
  accounts are refused (``Trading disabled: challenge account is failed``), and each
  rule's ``check_order`` may refuse an order or a trader's close (max lots, required
  stop-loss, news blackout ...) — a refusal, and a ``warn`` on an order let through,
  emit ``risk.violation_flagged``; SL, TP, stop-out and pending-trigger fills are
  judged after the fill (``breach`` fails the phase, ``warn`` flags);
* at startup, the :class:`~brokerkernel.plugins.challenges.service.ChallengeService`
  in ``kernel.extensions["challenges"]`` (what the partner APIs call), the day-reset
  (each followed by the plan's scaling check,
  :meth:`~brokerkernel.plugins.challenges.service.ChallengeService.scale_due`) and
  deadline schedule on the market clock and the fill listener.

Config: ``default_group`` (group name for plans without ``group_id``; null: the
kernel's default group), ``auto_advance`` (default of new plans: a passed phase
starts the next one at once, else it waits for approval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import (
    AccountRule,
    PluginContext,
    PreTradeCheck,
    Rejection,
    RiskRule,
)
from brokerkernel.kernel.events import DomainEvent, record_event
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.risk.rules import AccountSnapshot, Level
from brokerkernel.kernel.tasks import cancel_and_wait
from brokerkernel.plugins.challenges.engine import RULE_NAME, PropEngine, positions_of
from brokerkernel.plugins.challenges.plans import RuleTypeEntry
from brokerkernel.plugins.challenges.service import (
    PLAN_UPDATED,
    PLUGIN_NAME,
    ChallengeService,
    challenge_service,
)

log = logging.getLogger(__name__)

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "default_group": {
            "type": ["string", "null"],
            "default": None,
            "description": "Group (by name) of accounts of plans without group_id; "
            "null: the kernel's default group.",
        },
        "auto_advance": {
            "type": "boolean",
            "default": True,
            "description": "Default of new plans: a passed phase starts the next one at "
            "once (false: it waits for staff approval).",
        },
        "timer_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1.0,
            "description": "Seconds between checks of day resets and rule deadlines "
            "when no tick moves the market clock.",
        },
    },
}

_engines: weakref.WeakKeyDictionary[Any, PropEngine] = weakref.WeakKeyDictionary()


def engine_of(kernel: Any) -> PropEngine:
    """The kernel's prop engine (built once, on first use by a factory)."""
    engine = _engines.get(kernel)
    if engine is None:
        types = {}
        for item in kernel.plugins.registries.prop_rules:
            descriptor = item.descriptor
            types[descriptor.name] = RuleTypeEntry(
                descriptor.name,
                descriptor.factory(kernel.context(item.plugin)),
                descriptor.config_schema,
            )

        def refresh(login: int) -> None:
            risk = getattr(kernel, "risk", None)
            if risk is not None:
                with contextlib.suppress(KeyError):
                    risk.refresh(login)

        def floating(login: int) -> float | None:
            held = kernel.trading.book.get(login)
            if held is None or not held.positions:
                return None
            try:
                return float(kernel.risk.floating(login))
            except KeyError:
                return None

        def peak(login: int) -> Decimal | None:
            try:
                return kernel.risk.peak(login)  # type: ignore[no-any-return]
            except KeyError:
                return None

        def seed_peak(login: int, value: Decimal) -> None:
            with contextlib.suppress(KeyError):
                kernel.risk.set_peak(login, value)

        engine = PropEngine(
            types=types,
            submit=lambda job: kernel.trading.workers.submit(job),
            refresh=refresh,
            floating=floating,
            now=kernel.clock.now,
            peak=peak,
            seed_peak=seed_peak,
            set_levels=lambda logins, values: kernel.risk.set_level_values(
                RULE_NAME, logins, values
            ),
        )
        _engines[kernel] = engine
    return engine


class PropTickRule:
    """The ``prop`` account rule: the levels of the account's phase rules."""

    name = RULE_NAME

    def __init__(self, context: PluginContext) -> None:
        self.engine = engine_of(context.kernel)

    def levels(self, account: AccountSnapshot) -> list[Level]:
        return self.engine.levels(account)


class PropPreTrade:
    """The ``prop`` pre-trade rule (module docstring); it also vets the trader's
    closes (``checks_closes``: a news blackout refuses a close in its window)."""

    checks_closes = True

    def __init__(self, context: PluginContext) -> None:
        self.kernel = context.kernel
        self.engine = engine_of(context.kernel)

    def check(self, order: PreTradeCheck) -> Rejection | None:
        view = self.engine.views.get(order.login)
        if view is None:
            return None
        held = self.kernel.trading.book.get(order.login)
        positions = [] if held is None else positions_of(held, self.kernel.trading.valuation)[0]
        rejection, flags = self.engine.check_order(order, positions)
        if flags:
            payloads = [
                {**view.base_payload(), "rule": rule, "reason": reason} for rule, reason in flags
            ]
            task = asyncio.get_running_loop().create_task(self._flag(payloads))
            self.engine.tasks.add(task)
            task.add_done_callback(self.engine.tasks.discard)
        return rejection

    async def _flag(self, payloads: list[dict[str, Any]]) -> None:
        async with self.kernel.db.transaction() as session:
            for payload in payloads:
                record_event(session, "risk.violation_flagged", payload, self.kernel.clock.now())


@hookimpl
def broker_register_account_rules() -> Iterator[AccountRule]:
    """``prop``: every challenge rule's levels, watched on every tick."""
    yield AccountRule(name=RULE_NAME, factory=PropTickRule)


@hookimpl
def broker_register_risk_rules() -> Iterator[RiskRule]:
    """``prop``: refuses orders of accounts not trading and orders a rule refuses."""
    yield RiskRule(name=RULE_NAME, factory=PropPreTrade)


class _Schedule:
    """Day resets and rule deadlines on the market clock (ticks and a timer)."""

    def __init__(self, kernel: Any, engine: PropEngine, timer_s: float) -> None:
        self.kernel = kernel
        self.engine = engine
        self.timer_s = timer_s
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self.kernel.quotes.subscribe(self._on_tick)
        self._timer = asyncio.create_task(self._loop(), name="challenges-timer")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await cancel_and_wait([self._timer], *self._tasks)

    async def idle(self) -> None:
        """Wait for running day resets (tests)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_tick(self, quote: Quote) -> None:
        self.check()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.timer_s)
            try:
                self.check()
                self.engine.retry_closes()
            except Exception:
                log.exception("challenges schedule failed")

    def check(self) -> None:
        now = self.kernel.clock.now()
        for plan_id in self.engine.due(now):
            if plan_id in self._running:
                continue
            self._running.add(plan_id)
            task = asyncio.create_task(self._reset(plan_id, now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reset(self, plan_id: str, now: Any) -> None:
        try:
            await self.engine.reset_day(self.kernel.db, plan_id, now)
            self.kernel.risk.settle()
            await challenge_service(self.kernel).scale_due(plan_id, now)
        except Exception:
            log.exception("day reset of plan %s failed", plan_id)
        finally:
            self._running.discard(plan_id)


_schedules: weakref.WeakKeyDictionary[Any, _Schedule] = weakref.WeakKeyDictionary()


@hookimpl
async def broker_on_startup(kernel: Any) -> None:
    """Publish the service, load plans and accounts, follow fills, crossings, clock."""
    engine = engine_of(kernel)
    config = kernel.plugins.plugin_config(PLUGIN_NAME)
    service = ChallengeService(kernel, engine, config)
    kernel.extensions[PLUGIN_NAME] = service
    kernel.trading.crossing_handlers[RULE_NAME] = engine.on_crossing
    kernel.bus.subscribe(_on_event(service, engine))
    await service.load()
    kernel.risk.settle()
    schedule = _Schedule(kernel, engine, float(config["timer_s"]))
    _schedules[kernel] = schedule
    schedule.start()


def _on_event(service: ChallengeService, engine: PropEngine) -> Any:
    async def handle(event: DomainEvent) -> None:
        if event.type == PLAN_UPDATED:
            await service.reload_plan(str(event.payload["plan_id"]))
        else:
            engine.on_event(event)

    return handle


@hookimpl
async def broker_on_shutdown(kernel: Any) -> None:
    """Stop the schedule; persist the risk engine's equity peaks (trailing floors)."""
    schedule = _schedules.pop(kernel, None)
    if schedule is not None:
        await schedule.stop()
        await engine_of(kernel).persist_peaks(kernel.db)


async def idle(kernel: Any) -> None:
    """Wait until committed events are relayed, prop jobs and day resets have run
    (tests and tools driving the kernel by hand)."""
    engine = engine_of(kernel)
    for _ in range(3):
        engine.flush_crossings()
        await kernel.relay.drain()
        schedule = _schedules.get(kernel)
        if schedule is not None:
            await schedule.idle()
        await kernel.trading.idle()
        await asyncio.gather(*engine.tasks, return_exceptions=True)


__all__ = [
    "CONFIG_SCHEMA",
    "broker_on_shutdown",
    "broker_on_startup",
    "broker_register_account_rules",
    "broker_register_risk_rules",
    "engine_of",
    "idle",
]
