"""Per-tick account rules: the equity levels a rule asks the risk engine to watch.

A rule (stop-out, margin call, and later the prop-firm daily-loss floor, max-loss
floor, profit target, ...) never runs on a tick. It turns an account's money into
**levels** — equity floors and ceilings in the account currency — whenever the
account changes (a fill, a balance or credit change, a margin change) or when the rule
asks for it (:meth:`RiskEngine.refresh <brokerkernel.kernel.risk.engine.RiskEngine.refresh>`,
e.g. at its day reset). The engine compares every level with live equity
(balance + credit + floating P&L) on each tick, vectorised, and emits one
:class:`Crossing` when equity passes a level; the level re-arms when equity goes back
past it (edge-triggered, no hysteresis).

Whether touching a level counts is explicit per level (DOMAIN.md: a prop plan states
``<`` or ``<=``): a floor is breached when equity < value, or <= value when
``inclusive``; a ceiling is reached when equity > value, or >= value when ``inclusive``.

A **trailing floor** (:attr:`LevelKind.TRAILING_FLOOR`, e.g. an Apex-style max loss
trailing the intraday equity peak) follows the account's equity peak without the rule
being asked again: its ``value`` is the allowance below the peak and its floor is
``min(peak - value, lock)`` (``lock`` None: no lock). The engine keeps one peak per
account (the highest equity it has seen, raised vectorised on every tick; read
and seeded with :meth:`RiskEngine.peak <brokerkernel.kernel.risk.engine.RiskEngine.peak>`
/ :meth:`~brokerkernel.kernel.risk.engine.RiskEngine.set_peak`), so the floor never
decreases until the peak is seeded lower (a new phase).

Writing a rule (a prop-firm plugin, say)::

    from brokerkernel import hookimpl
    from brokerkernel.kernel.descriptors import AccountRule
    from brokerkernel.kernel.risk.rules import AccountSnapshot, Level, LevelKind

    class MaxLoss:
        name = "max_loss"

        def __init__(self, context):
            self.floors = {}                        # login -> Decimal, kept by the plugin

        def levels(self, account: AccountSnapshot) -> list[Level]:
            floor = self.floors.get(account.login)
            if floor is None:
                return []
            return [Level("max_loss", floor, LevelKind.FLOOR, inclusive=True)]

    @hookimpl
    def broker_register_account_rules():
        return [AccountRule(name="max_loss", factory=MaxLoss)]

The kernel builds each registered rule once and hands it to the engine; crossings reach
the kernel's consumer with ``rule`` and ``level_name`` set, and the consumer runs the
exact Decimal path (close positions, fail a challenge, send a warning).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

HUNDRED = Decimal(100)


class LevelKind(StrEnum):
    """A floor is crossed downwards (a breach), a ceiling upwards (a target); a trailing
    floor is a floor that rises with the account's equity peak."""

    FLOOR = "floor"
    CEILING = "ceiling"
    TRAILING_FLOOR = "trailing_floor"

    @property
    def is_floor(self) -> bool:
        """True for floors (crossed downwards), trailing or not."""
        return self is not LevelKind.CEILING


@dataclass(frozen=True, slots=True)
class Level:
    """One equity level of one account: ``value`` in the account currency.

    ``name`` is unique within its rule (e.g. ``"daily_loss"``); ``inclusive`` says
    whether equity equal to the level is past it. For a ``TRAILING_FLOOR`` ``value`` is
    the offset below the equity peak and ``lock`` the highest the floor goes (None: no
    lock; ignored by other kinds): see :meth:`floor_at`.
    """

    name: str
    value: Decimal
    kind: LevelKind
    inclusive: bool = False
    lock: Decimal | None = None

    def floor_at(self, peak: Decimal) -> Decimal:
        """The level's equity value given the account's equity ``peak``: ``min(peak -
        value, lock)`` for a trailing floor, ``value`` for the other kinds."""
        if self.kind is not LevelKind.TRAILING_FLOOR:
            return self.value
        floor = peak - self.value
        return floor if self.lock is None else min(floor, self.lock)

    def passed_by(self, equity: Decimal, peak: Decimal | None = None) -> bool:
        """True when ``equity`` (exact, account currency) is past this level; a trailing
        floor needs the account's equity ``peak`` (``ValueError`` without it)."""
        value = self.value
        if self.kind is LevelKind.TRAILING_FLOOR:
            if peak is None:
                raise ValueError(f"trailing floor {self.name!r} needs the equity peak")
            value = self.floor_at(peak)
        if self.kind.is_floor:
            return equity <= value if self.inclusive else equity < value
        return equity >= value if self.inclusive else equity > value


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What a rule sees of an account; money in ``currency`` (Decimal, authoritative).

    ``stopout_level`` and ``margin_call_level`` are the group's levels in percent of
    margin level (equity / margin_used x 100), None when the group sets none.
    """

    login: int
    currency: str
    balance: Decimal
    credit: Decimal
    margin_used: Decimal
    stopout_level: Decimal | None = None
    margin_call_level: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Crossing:
    """Equity passed a level (once per crossing, re-armed when equity comes back).

    ``level`` is the exact level (account currency; a trailing floor's floor at the
    crossing, from the engine's peak); ``equity`` the engine's float
    estimate at the crossing — the consumer recomputes it exactly before acting;
    ``margin_used`` the account's margin (Decimal) and ``time_ms`` the market time (UTC
    ms) of the tick or change that crossed.
    """

    login: int
    rule: str
    level_name: str
    kind: LevelKind
    level: Decimal
    equity: float
    margin_used: Decimal
    time_ms: int


class TickRule(Protocol):
    """A per-tick account rule: turns an account into the levels the engine watches.

    ``levels`` is called off the hot path (when the account changes or the rule asks
    for a refresh) and must not block; it returns no level for an account the rule
    does not apply to. An exception is logged and the rule watches nothing for that
    account until its next refresh.
    """

    @property
    def name(self) -> str:
        """The rule's unique name (``Crossing.rule``)."""
        ...

    def levels(self, account: AccountSnapshot) -> Iterable[Level]:
        """The account's levels now; names unique within the rule."""
        ...


@dataclass(frozen=True, slots=True)
class StopOutRule:
    """Stop-out: margin level (equity / margin_used x 100) below the group's
    ``stopout_level`` percent, i.e. equity < stopout_level / 100 x margin_used.

    No level without margin used or without a group level. MT5 triggers strictly below
    (DOMAIN.md: 50% of 7,938.60 → stop-out when equity < 3,969.30); ``inclusive``
    makes touching the level count too. The consumer closes the least profitable
    position first, re-checks and repeats (DOMAIN.md, MT5).
    """

    inclusive: bool = False
    name: str = "stop_out"

    def levels(self, account: AccountSnapshot) -> list[Level]:
        return _margin_level_floor(account.stopout_level, account, self.name, self.inclusive)


@dataclass(frozen=True, slots=True)
class MarginCallRule:
    """Margin call warning: margin level below the group's ``margin_call_level``
    percent (equity < margin_call_level / 100 x margin_used); a warning, nothing closes.

    Groups keep ``stopout_level < margin_call_level`` (seed section 16), so a falling
    equity crosses the margin call first.
    """

    inclusive: bool = False
    name: str = "margin_call"

    def levels(self, account: AccountSnapshot) -> list[Level]:
        return _margin_level_floor(account.margin_call_level, account, self.name, self.inclusive)


def _margin_level_floor(
    percent: Decimal | None, account: AccountSnapshot, name: str, inclusive: bool
) -> list[Level]:
    if percent is None or account.margin_used <= 0:
        return []
    return [Level(name, account.margin_used * percent / HUNDRED, LevelKind.FLOOR, inclusive)]
