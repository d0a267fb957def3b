"""Stop-out and margin call: the exact Decimal path behind the risk engine's crossings.

The risk engine (:mod:`brokerkernel.kernel.risk.engine`) watches every account's
equity against its group's levels on every tick and hands a
:class:`~brokerkernel.kernel.risk.rules.Crossing` to the trading service, which
queues a job on the account's shard worker. Under the account's lock, with exact
Decimal state and the group's current quotes:

* **stop-out** (DOMAIN.md, MT5): while the margin level (equity / margin x 100; the
  margin is the group's hedged-margin charge of the positions, updated by every
  close: :mod:`~brokerkernel.kernel.trading.margin`) is below the group's
  ``stopout_level``, close the least profitable position first (the lowest floating
  profit in the account currency; ties: the oldest ticket) at market, in full, with
  reason ``stop-out``, and re-check. Every close writes a stop-out event
  (seed section 31: margin level at trigger and after the close, equity at trigger,
  realised profit, close price, the level, positions remaining), an ``order.closed``
  and an ``account.stop_out`` domain event, and an audit row from ``risk-service``.
  A position without a fresh quote is skipped (it cannot be filled).
* **margin call**: a warning only — when the margin level is below the group's
  ``margin_call_level`` the domain event ``account.margin_call`` is recorded, at most
  once per account per ``margin_call_interval_s`` of market time
  (:class:`MarginCallThrottle`: the engine's levels re-arm on every way back up, so
  an account hovering at the level would otherwise warn on every oscillation).

The crossing is only a hint: when exact equity is not below the level (the price
moved back, a deposit arrived) nothing happens.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brokerkernel.kernel.risk.rules import Crossing
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.batch import ShardTransaction
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.jobs import Env, Job
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.positions import close_at_market
from brokerkernel.kernel.trading.state import AccountState, OpenPosition

HUNDRED = Decimal(100)
LEVEL_PLACES = Decimal("0.01")


def margin_level(equity: Decimal, margin: Decimal) -> Decimal | None:
    """equity / margin x 100 (percent, unrounded); None without margin."""
    return equity / margin * HUNDRED if margin > 0 else None


def _least_profitable(
    env: Env, account: AccountState, skip: set[int]
) -> tuple[OpenPosition, Decimal] | None:
    marked = []
    for position in account.positions.values():
        if position.ticket in skip:
            continue
        mark = env.valuation.mark(position, account.currency)
        if mark is not None:
            marked.append((mark[1], position.ticket, position))
    if not marked:
        return None
    profit, _, position = min(marked, key=lambda item: (item[0], item[1]))
    return position, profit


class StopOutJob(Job):
    """Close positions until the margin level is back at or above ``stopout_level``."""

    def __init__(self, login: int, crossing: Crossing | None = None) -> None:
        self.login = login
        self.crossing = crossing

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        group = env.terms.group(account.group_id) if account is not None else None
        if account is None or group is None:
            return 0
        level = group.stopout_level
        skip: set[int] = set()
        closed = 0
        while True:
            equity = env.valuation.equity(account)
            before = margin_level(equity, account.margin)
            if before is None or not before < level:
                return closed
            worst = _least_profitable(env, account, skip)
            if worst is None:
                return closed
            position = worst[0]
            try:
                deal = await close_at_market(
                    env,
                    tx,
                    account,
                    position,
                    position.volume,
                    "stop-out",
                    source=audit.RISK_SERVICE,
                    action="stop_out",
                )
            except TradingError:
                skip.add(position.ticket)
                continue
            closed += 1
            after = margin_level(env.valuation.equity(account), account.margin)
            event = {
                "login": account.login,
                "order_ticket": position.ticket,
                "symbol": position.symbol,
                "margin_level_at_trigger": before.quantize(LEVEL_PLACES),
                "margin_level_after_close": None if after is None else after.quantize(LEVEL_PLACES),
                "equity_at_trigger": round_money(equity, account.currency),
                "profit_realized": deal["profit"],
                "close_price": deal["close_price"],
                "stopout_level": level,
                "positions_remaining": len(account.positions),
                "created_at": tx.now,
            }
            tx.stopouts.append(event)
            tx.event(
                "account.stop_out",
                {
                    key: str(value) if isinstance(value, Decimal) else value
                    for key, value in event.items()
                    if key != "created_at"
                },
            )


class MarginCallThrottle:
    """At most one margin-call check in flight and one ``account.margin_call`` event per
    account per ``interval_s`` seconds of market time (the crossings' ``time_ms``);
    0 warns on every crossing.

    :meth:`admit` filters the risk engine's crossings before they become jobs: refused
    while the account's check is queued or within ``interval_s`` after its last
    warning. The job reports back after its batch committed (:meth:`settled`), so a
    warning rolled back never silences the next one.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_ms = interval_s * 1000
        self._warned_ms: dict[int, int] = {}
        self._in_flight: set[int] = set()

    def admit(self, crossing: Crossing) -> bool:
        """Whether ``crossing`` (a margin-call crossing) should queue a check."""
        login = crossing.login
        last = self._warned_ms.get(login)
        if login in self._in_flight or (
            last is not None and crossing.time_ms - last < self._interval_ms
        ):
            return False
        self._in_flight.add(login)
        return True

    def settled(self, login: int, time_ms: int, warned: bool) -> None:
        """The account's check committed; ``warned``: it recorded a warning at ``time_ms``."""
        self._in_flight.discard(login)
        if warned:
            self._warned_ms[login] = time_ms


class MarginCallJob(Job):
    """Record ``account.margin_call`` when the margin level is below the group's
    ``margin_call_level`` (a warning; nothing is closed); reports to ``throttle``."""

    def __init__(
        self,
        login: int,
        crossing: Crossing | None = None,
        throttle: MarginCallThrottle | None = None,
    ) -> None:
        self.login = login
        self.crossing = crossing
        self.throttle = throttle

    def settle(self, outcome: Any) -> None:
        if self.throttle is not None and self.crossing is not None:
            self.throttle.settled(self.login, self.crossing.time_ms, outcome is True)

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        group = env.terms.group(account.group_id) if account is not None else None
        if account is None or group is None:
            return False
        equity = env.valuation.equity(account)
        level = margin_level(equity, account.margin)
        if level is None or not level < group.margin_call_level:
            return False
        tx.event(
            "account.margin_call",
            {
                "login": account.login,
                "margin_level": str(level.quantize(LEVEL_PLACES)),
                "equity": str(round_money(equity, account.currency)),
                "margin_used": str(account.margin),
                "margin_call_level": str(group.margin_call_level),
                "stopout_level": str(group.stopout_level),
            },
        )
        return True
