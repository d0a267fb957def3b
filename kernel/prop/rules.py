"""The prop-firm rule API: what a challenge rule sees, decides and watches per tick.

A **rule type** (daily loss, max loss, profit target, consistency, ...) is a plugin:
it registers a :class:`~brokerkernel.kernel.descriptors.PropRuleSet` through
``broker_register_prop_rules`` with the JSON Schema of its per-plan parameters. A
challenge plan's phase lists rules as ``{"type": "<name>", "params": {...}}``; the
challenges plugin validates ``params`` against that schema and calls
:meth:`RuleType.configure` once per plan phase to get a :class:`PropRule`.

A configured rule is pure: given a :class:`RuleInput` (the account's exact state, the
current trading day's snapshot and the account's history), it

* declares the **per-tick thresholds** the vectorised risk engine watches —
  :meth:`PropRule.levels` returns equity floors, ceilings and trailing floors
  (:class:`~brokerkernel.kernel.risk.rules.Level`, account currency; a trailing
  floor ``min(peak - value, lock)`` follows the account's equity peak, which the
  engine raises itself on every tick and the plugin mirrors into
  ``History.peak_equity``). It is called off the hot path: when the account changes
  (a fill, a balance change), after a payout, and after one of its levels was
  crossed (at the day reset see below). The engine compares every level with live
  equity on every tick and only accounts that cross reach the exact path;
* **evaluates** exactly (:meth:`PropRule.evaluate`, Decimal) — on a crossing of one of
  its levels, after every fill or balance change, at the day reset and when the
  plugin checks whether a phase is passed — and returns a :class:`RuleResult`
  (pass / pending / warn / breach, with the reason and the numbers);
* optionally **vets an order** before it executes (:meth:`PropRule.check_order`:
  max lots, max open positions, required stop-loss, news blackout) — a refusal is a
  rejection of the order, not a breach.

**Day reset.** At a plan's day reset the plugin does not ask every account's rules for
their levels again (100,000 accounts must reset in well under a second): a rule whose
``levels`` read ``state.day`` must also implement :class:`DayLevels` — the new values
of those levels for many accounts at once — and the plugin replaces them in the risk
engine in bulk. A rule whose levels do not read the day says so with a class attribute
``uses_day = False`` and its levels are kept; a rule that implements neither is assumed
to read the day and its accounts are re-levelled one by one (correct, slower). Accounts
whose history changed at the reset (e.g. a new highest end-of-day balance) are
re-levelled in full.

Limits (``objective = False``) fail the phase on ``breach``; objectives
(``objective = True``: profit target, minimum trading days, consistency) must all be
``pass`` for the phase to pass and are ``pending`` until then. A ``breach`` fails the
phase whichever rule returns it (``trading_days`` is an objective that also breaches
when its maximum period or inactivity limit runs out).

Every floor states whether touching it breaches (``inclusive=True``: ``equity <=
floor``) or only crossing it (``equity < floor``), as DOMAIN.md requires of a plan.

A minimal custom rule (a package of its own, registered under the entry-point group
``brokerkernel.plugins`` and enabled in ``plugins.toml``)::

    from decimal import Decimal
    from brokerkernel import hookimpl
    from brokerkernel.kernel.descriptors import PropRuleSet
    from brokerkernel.kernel.prop.rules import (
        Level, LevelKind, RuleInput, RuleResult, Status, floor_result)

    class EquityFloor:
        objective = False

        def __init__(self, name: str, params):
            self.name = name
            self.floor = Decimal(str(params["floor"]))

        def levels(self, state: RuleInput) -> list[Level]:
            return [Level(self.name, self.floor, LevelKind.FLOOR, inclusive=False)]

        def evaluate(self, state: RuleInput) -> RuleResult:
            return floor_result(self.name, state.account.equity, self.floor, False,
                                "Equity below the absolute floor")

        def check_order(self, state, order):
            return None

        def deadlines(self, state):
            return []

    class EquityFloorType:
        def __init__(self, context):
            pass

        def configure(self, name, params):
            return EquityFloor(name, params)

    @hookimpl
    def broker_register_prop_rules():
        return [PropRuleSet(name="equity_floor", factory=EquityFloorType, config_schema={
            "type": "object", "required": ["floor"],
            "properties": {"floor": {"type": "number"}}})]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from brokerkernel.kernel.risk.rules import Level, LevelKind

__all__ = [
    "AUTOMATIC_ORIGINS",
    "AccountView",
    "DayLevels",
    "DaySnapshot",
    "History",
    "Level",
    "LevelKind",
    "OrderIntent",
    "PositionView",
    "PropRule",
    "RuleInput",
    "RuleResult",
    "RuleType",
    "Status",
    "floor_result",
]

ZERO = Decimal(0)


class Status(StrEnum):
    """A rule's verdict: ``pass`` (limit respected / objective met), ``pending``
    (objective not met yet), ``warn`` (limit respected but a warning threshold passed),
    ``breach`` (limit violated: the phase fails)."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    PENDING = "pending"
    WARN = "warn"
    BREACH = "breach"


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule's verdict with its reason and the numbers behind it.

    ``numbers`` holds Decimal money in the account currency (and plain counts or
    percents), e.g. ``{"floor": Decimal("97000.00"), "equity": Decimal("96999.99")}``;
    it is what breach events and metrics snapshots report.
    """

    rule: str
    status: Status
    reason: str = ""
    numbers: Mapping[str, Decimal | int | str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PositionView:
    """An open position: ``side`` +1 long / -1 short, ``volume`` lots, prices in the
    quote currency, ``profit`` the floating profit in the account currency (exact,
    swap and commission excluded), ``opened_at`` UTC."""

    ticket: int
    symbol: str
    side: int
    volume: Decimal
    open_price: Decimal
    sl: Decimal | None
    tp: Decimal | None
    profit: Decimal
    opened_at: datetime
    notional_usd: Decimal = ZERO
    """The position's notional in USD now (volume x contract size x price, converted);
    the ``order_limits`` rule's ``max_exposure_usd`` sums it."""


@dataclass(frozen=True, slots=True)
class AccountView:
    """The account now, exact (Decimal, account currency).

    ``equity`` = balance + credit + floating profit + swaps + commissions of the open
    positions (DOMAIN.md: limits are checked on live equity); ``initial_balance`` is
    the phase's starting balance (the plan's account size); ``now`` is market time
    (UTC) and ``timezone`` the plan's trading-day zone.
    """

    login: int
    currency: str
    initial_balance: Decimal
    balance: Decimal
    equity: Decimal
    margin_used: Decimal
    positions: Sequence[PositionView]
    now: datetime
    timezone: ZoneInfo
    phase: str
    phase_started_at: datetime


@dataclass(frozen=True, slots=True)
class DaySnapshot:
    """The current trading day: ``day`` (a date in the plan's timezone), the UTC
    instant it started (``reset_at``) and the account's balance and equity at that
    instant (the inputs of every daily-loss floor model)."""

    day: date
    reset_at: datetime
    start_balance: Decimal
    start_equity: Decimal


@dataclass(frozen=True, slots=True)
class History:
    """What the account did in the phase, kept by the challenges plugin.

    * ``peak_eod_balance`` — highest balance at a day reset (end of day), the phase's
      initial balance included;
    * ``peak_equity`` — highest equity seen (intraday, unrealised profit included);
    * ``max_loss_floor`` — the trailing max-loss floor reached so far (never
      decreasing), None before a trailing rule set one;
    * ``trading_days`` — days (plan timezone) on which a position was opened;
    * ``daily_profit`` — closed profit (realised P&L incl. swap and commission) per
      day of the phase, days with no closed trade absent;
    * ``last_trade_at`` — last open or close (UTC), None without one.
    """

    peak_eod_balance: Decimal
    peak_equity: Decimal
    max_loss_floor: Decimal | None = None
    trading_days: frozenset[date] = frozenset()
    daily_profit: Mapping[date, Decimal] = field(default_factory=dict)
    last_trade_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RuleInput:
    """Everything a rule may look at: the account, the day and the history."""

    account: AccountView
    day: DaySnapshot
    history: History


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order about to execute (market order, pending order triggering, or a close
    when ``closing`` is True, including SL/TP and stop-out fills): ``side`` +1 buy /
    -1 sell, ``volume`` lots, ``price`` the fill price, ``notional_usd`` its notional
    in USD, ``at`` market time (UTC).

    ``origin`` says who sent it: ``"trader"`` (a market order or a close the trader
    sent) or one of :data:`AUTOMATIC_ORIGINS` — ``"pending"`` (a pending order
    triggering), ``"sl"``, ``"tp"``, ``"stop_out"`` — fills the trader did not send at
    that moment (see :meth:`PropRule.check_order`)."""

    symbol: str
    side: int
    volume: Decimal
    price: Decimal
    sl: Decimal | None
    tp: Decimal | None
    notional_usd: Decimal
    at: datetime
    closing: bool = False
    origin: str = "trader"

    @property
    def automatic(self) -> bool:
        """True for a fill the trader did not send now (pending trigger, SL, TP, stop-out)."""
        return self.origin in AUTOMATIC_ORIGINS


#: ``OrderIntent.origin`` values of fills the trader did not send at that moment.
AUTOMATIC_ORIGINS = frozenset({"pending", "sl", "tp", "stop_out"})


class PropRule(Protocol):
    """A configured rule of one plan phase (see the module docstring)."""

    name: str
    """Unique within the phase; prefixes the names of its levels (``"daily_loss"``,
    ``"daily_loss.warn_80"``) so a crossing maps back to the rule."""
    objective: bool
    """True for objectives (must pass to complete the phase), False for limits."""

    def levels(self, state: RuleInput) -> Iterable[Level]:
        """Equity floors/ceilings to watch per tick; names start with ``name``."""
        ...

    def evaluate(self, state: RuleInput) -> RuleResult:
        """The exact verdict now."""
        ...

    def check_order(self, state: RuleInput, order: OrderIntent) -> RuleResult | None:
        """A ``breach`` result refuses the order (its reason is the rejection reason);
        None lets it through.

        A ``warn`` result lets it through and flags it (``risk.violation_flagged``).
        A fill the trader did not send (``order.automatic``: SL, TP, stop-out, pending
        trigger) cannot be refused: for it a ``breach`` result fails the phase
        (``account.breached`` with the reason) after the fill, a ``warn`` flags it."""
        ...

    def deadlines(self, state: RuleInput) -> Iterable[datetime]:
        """UTC instants at which the rule must be evaluated even without a tick or a
        fill (Friday close for a weekend-holding ban, the end of the maximum trading
        period, an inactivity deadline, a news window); empty for most rules."""
        ...


class DayLevels(Protocol):
    """Optional on a :class:`PropRule` whose levels depend on the day snapshot (the
    daily-loss floor): the values of those levels for a new day of many accounts."""

    def day_levels(
        self,
        start_balance: Sequence[Decimal],
        start_equity: Sequence[Decimal],
        initial: Sequence[Decimal],
    ) -> Mapping[str, Sequence[Decimal]]:
        """Level name -> value per account (``[i]`` for the i-th inputs: the day's
        start balance and equity and the initial balance, account currency); exactly
        the values ``levels`` returns for each account on that day."""
        ...


class RuleType(Protocol):
    """What a :class:`~brokerkernel.kernel.descriptors.PropRuleSet` factory builds:
    configures the rule for one plan phase from ``params`` (already validated against
    the descriptor's ``config_schema``, defaults applied)."""

    def configure(self, name: str, params: Mapping[str, Any]) -> PropRule: ...


def floor_result(
    rule: str,
    equity: Decimal,
    floor: Decimal,
    inclusive: bool,
    reason: str,
    warn_at: Decimal | None = None,
) -> RuleResult:
    """The verdict of an equity floor: ``breach`` when equity < floor (<= when
    ``inclusive``), ``warn`` when equity is at or below ``warn_at``, else ``pass``;
    numbers: floor, equity and the headroom (equity - floor)."""
    breached = equity <= floor if inclusive else equity < floor
    numbers: dict[str, Decimal | int | str | None] = {
        "floor": floor,
        "equity": equity,
        "headroom": equity - floor,
    }
    if breached:
        return RuleResult(rule, Status.BREACH, reason, numbers)
    if warn_at is not None and equity <= warn_at:
        return RuleResult(rule, Status.WARN, reason, numbers)
    return RuleResult(rule, Status.PASS, "", numbers)
