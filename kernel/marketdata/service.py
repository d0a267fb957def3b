"""The market data service of one kernel process (``kernel.market_data``).

Subscribes the bar builder, the outage detector and the cluster tick relay to the
kernel's quote book, decides with :class:`~.cluster.FeedLeadership` whether this
process runs the price feeds, and — while it leads — writes changed bars and outages
every ``bar_flush_interval_s`` in one transaction. Account-change notices are derived
from domain events that name a ``login``, one notice per event batch, and go to every
process (:class:`~.cluster.ClusterChannel`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from brokerkernel.kernel.cache import RedisCache
from brokerkernel.kernel.marketdata import bars as bar_store
from brokerkernel.kernel.marketdata import health
from brokerkernel.kernel.marketdata.bars import Bar, BarBuilder
from brokerkernel.kernel.marketdata.cluster import ClusterChannel, FeedLeadership, process_identity
from brokerkernel.kernel.marketdata.health import InstrumentIndex, OutageDetector
from brokerkernel.kernel.pricing import FxConverter
from brokerkernel.kernel.tasks import cancel_and_wait

if TYPE_CHECKING:
    from brokerkernel.kernel.events import DomainEvent
    from brokerkernel.kernel.runtime import Kernel

log = logging.getLogger(__name__)

INSTRUMENT_RELOAD_S: Final = 30.0
"""Seconds between reloads of instrument activity and staleness thresholds."""
CONFIG_CHANGED: Final = "platform.config_changed"
"""Domain event of a catalog change; the instrument index reloads on it."""


class MarketData:
    """Bars, outages, FX rates and feed leadership for ``kernel``.

    ``config`` is the validated ``[kernel.market_data]`` section. :meth:`start` runs in
    :meth:`Kernel.start` after storage and the bus are up; :meth:`stop` after the
    feeds stopped, before storage closes.
    """

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self.config: Mapping[str, Any] = kernel.kernel_config["market_data"]
        self.identity = process_identity()
        redis = kernel.cache.redis if isinstance(kernel.cache, RedisCache) else None
        self.instruments = InstrumentIndex()
        self.bars = BarBuilder(self.config["bar_price"])
        self.outages = OutageDetector(kernel.clock, self.instruments)
        self.fx = FxConverter(kernel.quotes, "mid")
        self.cluster = ClusterChannel(redis, kernel.quotes, self.identity)
        self.leadership = FeedLeadership(
            redis, self.identity, self.config["feed_leader_ttl_s"], self._on_leadership
        )
        for subscriber in (self.bars.on_tick, self.outages.on_tick, self.cluster.on_tick):
            kernel.quotes.subscribe(subscriber)
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()

    @property
    def is_leader(self) -> bool:
        """Whether this process runs the feeds and writes bars and outages."""
        return self.leadership.is_leader

    async def start(self) -> None:
        """Load instruments, resume bars and open outages, join the cluster, then lead
        (starting the feeds) or follow."""
        db = self._kernel.db
        async with db.read() as session:
            await self.instruments.load(session)
            self.bars.resume(await bar_store.latest_bars(session))
            self.outages.resume(await health.open_outages(session))
        self._kernel.bus.subscribe(self._on_event)
        self._kernel.bus.subscribe_batch(self._on_events)
        await self.cluster.start()
        await self.leadership.start()
        self._tasks = [
            asyncio.create_task(self._flusher(), name="market-data-writer"),
            asyncio.create_task(self._maintenance(), name="market-data-maintenance"),
        ]

    async def stop(self) -> None:
        """Write what is pending (when leading), leave the cluster."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self.is_leader:
            await self.flush()
        await self.leadership.stop()
        await self.cluster.stop()

    async def flush(self) -> None:
        """Write changed bars and outages now (leader only; a follower's are dropped,
        the leader writes the same ones). A failed write is retried with the next, and
        so is one cancelled mid-write (the periodic writer stopped by :meth:`stop`,
        whose own flush then writes them): the writes are upserts, so a change given
        back after its commit is only written again."""
        async with self._flush_lock:
            changed_bars = self.bars.take_changes()
            changed_outages = self.outages.take_changes()
            if not self.is_leader or not (changed_bars or changed_outages):
                return
            try:
                async with self._kernel.db.transaction() as session:
                    await bar_store.write_bars(session, changed_bars)
                    await health.write_outages(session, changed_outages)
            except BaseException:
                self.bars.give_back(changed_bars)
                self.outages.give_back(changed_outages)
                raise

    def pending_bars(self, symbol: str, timeframe: str) -> list[Bar]:
        """Bars not yet written (only the leader's count; followers read the database)."""
        return self.bars.pending(symbol, timeframe) if self.is_leader else []

    async def _on_leadership(self, leading: bool) -> None:
        """Start the feeds on taking the lead, stop them on losing it.

        A process taking over from another leader finds market time already advanced;
        a feed that can skip ahead (the replay feed's ``step_until``) continues from
        there instead of replaying from its start.
        """
        kernel = self._kernel
        if leading and kernel.settings.start_feeds:
            now_ms = kernel.clock.now_ms()
            if kernel.clock.driven and now_ms > 0:
                for feed in kernel.feeds.values():
                    skip = getattr(feed, "step_until", None)
                    if skip is not None:
                        skip(now_ms, lambda _quote: None)
            kernel.start_feeds()
        elif not leading:
            await kernel.stop_feeds()

    async def _on_events(self, events: Sequence[DomainEvent]) -> None:
        """Batch bus handler: every domain event naming a ``login`` changed that
        account; the batch's logins (each once, first-seen order) go out in one notice
        (with Redis one ``PUBLISH`` per batch instead of one per event)."""
        logins = dict.fromkeys(
            int(login)
            for event in events
            if isinstance(login := event.payload.get("login"), int)
            or (isinstance(login, str) and login.isdigit())
        )
        await self.cluster.accounts_changed(list(logins))

    async def _on_event(self, event: DomainEvent) -> None:
        """Bus handler: a catalog change reloads the instrument index."""
        if event.type == CONFIG_CHANGED:
            async with self._kernel.db.read() as session:
                await self.instruments.load(session)

    async def _flusher(self) -> None:
        interval = float(self.config["bar_flush_interval_s"])
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing bars and outages failed; retrying")

    async def _maintenance(self) -> None:
        """Every second: scan for outages (feeds that do not drive the market clock);
        every :data:`INSTRUMENT_RELOAD_S`: reload the instrument index."""
        reload_every = int(INSTRUMENT_RELOAD_S)
        tick = 0
        while True:
            await asyncio.sleep(1)
            tick += 1
            self.outages.scan()
            if tick % reload_every == 0:
                try:
                    async with self._kernel.db.read() as session:
                        await self.instruments.load(session)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reloading the instrument index failed")
