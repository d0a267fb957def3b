"""What the order workers run: jobs, and the services jobs use.

A :class:`Job` is one request on one account (a market order, a close, an SL/TP
change, a pending order, a trigger, a stop-out check, a swap charge). The worker of
the account's shard runs it inside a batch (:mod:`~brokerkernel.kernel.trading.
batch`) with the account's working copy and then :meth:`Job.settle`\\ s it with the
result or the refusal, only after the batch committed. A job refuses by raising
:class:`~brokerkernel.kernel.trading.errors.TradingError` or returning a
:class:`~brokerkernel.kernel.descriptors.Rejection` *before* it stages anything, so a
refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import PreTradeRule, Venue
from brokerkernel.kernel.trading.state import AccountState, OpenPosition, PendingState
from brokerkernel.kernel.trading.terms import TermsCache
from brokerkernel.kernel.trading.valuation import Valuation

if TYPE_CHECKING:
    from brokerkernel.kernel.trading.batch import ShardTransaction
    from brokerkernel.kernel.trading.swaps import RolloverSchedule

log = logging.getLogger(__name__)


class StateWatcher(Protocol):
    """Told about committed changes (trigger index, risk engine)."""

    def account_loaded(self, account: AccountState) -> None:
        """``account`` was (re)loaded from the database: replace what is known of it."""

    def position_changed(self, account: AccountState, position: OpenPosition) -> None:
        """A position was opened or changed (volume, price, SL/TP, swap)."""

    def position_removed(self, account: AccountState, position: OpenPosition) -> None:
        """A position was closed in full."""

    def pending_changed(self, account: AccountState, order: PendingState) -> None:
        """A pending order was placed or changed; not ``active`` any more: it is gone."""

    def money_changed(self, account: AccountState) -> None:
        """The account's balance, credit or margin changed."""


def tell(watchers: Sequence[StateWatcher], call: Callable[[StateWatcher], None]) -> None:
    """Call ``call(watcher)`` for each watcher; one that raises is logged and the others
    still hear (watchers run after the commit: nothing may undo it)."""
    for watcher in watchers:
        try:
            call(watcher)
        except Exception:
            log.exception("state watcher %r failed", watcher)


@dataclass(slots=True)
class Env:
    """The services jobs use. ``submit`` queues a follow-up job (e.g. a stop-out check
    after a loss)."""

    valuation: Valuation
    venue: Venue
    rules: Sequence[tuple[str, PreTradeRule]]
    terms: TermsCache
    clock: MarketClock
    rollovers: RolloverSchedule
    watchers: list[StateWatcher]
    submit: Callable[[Job], None]


class Job:
    """A request on account ``login``. Subclasses implement :meth:`run`."""

    login: int

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        """Do the work on the working copy ``account`` (None: no such account)."""
        raise NotImplementedError

    def settle(self, outcome: Any) -> None:
        """Called after the commit with :meth:`run`'s result, or with the exception
        that refused the job (TradingError) or failed the batch."""


class FutureJob(Job):
    """A job an HTTP request waits for: :attr:`future` gets the result or the error."""

    def __init__(self, login: int) -> None:
        self.login = login
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(self, outcome: Any) -> None:
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
