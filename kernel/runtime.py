"""The running kernel: settings, storage, cache, bus, clock, prices, plugins, services.

``Kernel.start()`` opens everything in dependency order and ``stop()`` closes it in
reverse. The API (``api/app.py``) and the CLI build one Kernel per process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from brokerkernel.kernel.cache import Cache, MemoryCache, RedisCache
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.config import ConfigError
from brokerkernel.kernel.descriptors import Adjuster, Feed, PluginContext, PreTradeRule, Venue
from brokerkernel.kernel.events import EventBus, InProcessBus, OutboxRelay, RedisStreamBus
from brokerkernel.kernel.identity.service import Identity
from brokerkernel.kernel.marketdata.calendar import EconomicCalendar
from brokerkernel.kernel.marketdata.service import MarketData
from brokerkernel.kernel.money.payments import EnabledGateway, PaymentService
from brokerkernel.kernel.money.transactions import TransactionService
from brokerkernel.kernel.plugins import PluginManager
from brokerkernel.kernel.pricing import FxConverter, QuoteBook
from brokerkernel.kernel.risk.engine import RiskEngine
from brokerkernel.kernel.risk.rules import MarginCallRule, StopOutRule
from brokerkernel.kernel.security import TokenIssuer, load_or_create_secret
from brokerkernel.kernel.storage.db import Database, default_sqlite_url
from brokerkernel.kernel.storage.ids import IdAllocator
from brokerkernel.kernel.tasks import awaiting, cancel_and_wait
from brokerkernel.kernel.trading.config import zone_error
from brokerkernel.kernel.trading.riskfeed import tick_subscriber
from brokerkernel.kernel.trading.service import TradingService
from brokerkernel.kernel.trading.terms import TermsCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    """Process settings: ``config_path`` (plugins.toml), ``database_url``
    (``DATABASE_URL``; default a SQLite file under ``./var/``), ``redis_url``
    (``REDIS_URL``; None = in-process cache and bus), ``var_dir`` for local state,
    ``start_feeds`` False to drive prices by hand (tests, the simulator)."""

    config_path: Path = Path("plugins.toml")
    database_url: str = ""
    redis_url: str | None = None
    var_dir: Path = Path("var")
    start_feeds: bool = True
    order_workers: int = 0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_env(cls, config_path: Path, **overrides: Any) -> Settings:
        env = dict(os.environ)
        var_dir = Path(env.get("BROKERKERNEL_VAR_DIR", "var"))
        return cls(
            config_path=config_path,
            database_url=env.get("DATABASE_URL") or default_sqlite_url(var_dir.resolve()),
            redis_url=env.get("REDIS_URL") or None,
            var_dir=var_dir,
            env=env,
            **overrides,
        )


class Kernel:
    """One kernel process. Attributes are ready after :meth:`start`."""

    def __init__(self, settings: Settings, plugins: PluginManager | None = None) -> None:
        self.settings = settings
        self.plugins = plugins or PluginManager.load(settings.config_path, settings.env)
        kernel_config = self.plugins.config.kernel
        self.kernel_config = kernel_config
        clock_source = kernel_config["clock"]
        clock_feeds = [
            r.descriptor.name
            for r in self.plugins.registries.price_feeds
            if r.descriptor.drives_clock
        ]
        if clock_source != "wall" and clock_source not in clock_feeds:
            raise ConfigError(
                [
                    f"{settings.config_path}: [kernel] clock: '{clock_source}' is not an enabled "
                    f"price feed that drives the clock (those enabled: {sorted(clock_feeds)})"
                ]
            )
        venue_name = kernel_config["execution_venue"]
        if venue_name not in self.plugins.registries.execution_venues:
            raise ConfigError(
                [
                    f"{settings.config_path}: [kernel] execution_venue: '{venue_name}' is not "
                    f"registered (enabled: {self.plugins.registries.execution_venues.names()})"
                ]
            )
        self.clock = MarketClock(
            driven=clock_source != "wall", start_ms=0 if clock_source != "wall" else None
        )
        self.quotes = QuoteBook(
            self.clock, clock_provider=None if clock_source == "wall" else clock_source
        )
        self.fx = FxConverter(self.quotes, kernel_config["fx_conversion"])
        self.db = Database(settings.database_url)
        self.ids = IdAllocator(self.db.is_sqlite)
        #: The economic calendar (GET /calendar, news-blackout prop rules).
        self.calendar = EconomicCalendar(self.db, self.clock)
        self.cache: Cache = (
            MemoryCache() if settings.redis_url is None else RedisCache.from_url(settings.redis_url)
        )
        if settings.redis_url is not None:
            assert isinstance(self.cache, RedisCache)
            self.bus: EventBus = RedisStreamBus(self.cache.redis)
        else:
            self.bus = InProcessBus()
        self.terms = TermsCache(
            self.db, self.cache.redis if isinstance(self.cache, RedisCache) else None
        )
        self.relay = OutboxRelay(self.db, self.bus, self.clock)
        self.db.after_commit(self.relay.wake)
        self.tokens = TokenIssuer(
            load_or_create_secret(kernel_config["jwt_secret"], settings.var_dir)
        )
        self.identity = Identity(
            self.db,
            self.cache,
            self.clock,
            self.tokens,
            kernel_config["auth"],
            kernel_config["gateway"],
        )
        self.feeds: dict[str, Feed] = {}
        self._feed_tasks: list[asyncio.Task[None]] = []
        venue: Venue = self._build(self.plugins.registries.execution_venues[venue_name])
        adjusters: list[Adjuster] = [
            self._build(item)
            for item in sorted(
                self.plugins.registries.quote_adjusters,
                key=lambda r: (r.descriptor.order, r.descriptor.name),
            )
        ]
        rules: list[tuple[str, PreTradeRule]] = [
            (item.descriptor.name, self._build(item))
            for item in sorted(self.plugins.registries.risk_rules, key=lambda r: r.descriptor.name)
        ]
        # Order workers share this process's event loop: more shards only overlap
        # database round trips, and smaller batches cost more (bench_orders.py).
        workers = settings.order_workers or (1 if self.db.is_sqlite else 2)
        trading_config = kernel_config["trading"]
        zone_problem = zone_error(trading_config)
        if zone_problem is not None:
            raise ConfigError([f"{settings.config_path}: [kernel.trading] {zone_problem}"])
        self.trading = TradingService(
            db=self.db,
            cache=self.cache,
            clock=self.clock,
            quotes=self.quotes,
            fx=self.fx,
            ids=self.ids,
            venue=venue,
            adjusters=adjusters,
            rules=rules,
            terms=self.terms,
            request_ttl_s=kernel_config["order_request_ttl_s"],
            workers=workers,
            fx_conversion=kernel_config["fx_conversion"],
            batch_size=trading_config["batch_size"],
            rollover_time=trading_config["rollover_time"],
            rollover_timezone=trading_config["rollover_timezone"],
            margin_call_interval_s=trading_config["margin_call_interval_s"],
        )
        # The risk engine marks every position on each tick; its stop-out and margin
        # call crossings (and those of plugins' account rules) go to the trading service.
        self.risk = RiskEngine(
            [
                StopOutRule(),
                MarginCallRule(),
                *(self._build(item) for item in self.plugins.registries.account_rules),
            ],
            fx_conversion=kernel_config["fx_conversion"],
            exact_equity=self.trading.exact_equity,
            sink=self.trading.on_crossing,
        )
        self.trading.attach_risk_engine(self.risk)
        self.quotes.subscribe(tick_subscriber(self.risk))
        self.transactions = TransactionService(self.db, self.clock, self.fx, self.trading)
        self.market_data = MarketData(self)
        self.payments = PaymentService(
            self.db,
            self.clock,
            self.transactions,
            {
                item.descriptor.name: EnabledGateway(item.descriptor, self._build(item))
                for item in self.plugins.registries.payment_gateways
            },
            kernel_config["payments"]["default_gateway"],
            self.plugins.enabled,
        )
        self._http: aiohttp.ClientSession | None = None
        #: Services plugins publish for other plugins, by plugin name (e.g. the
        #: challenges plugin's ChallengeService under "challenges"); set in their
        #: factories or at ``broker_on_startup``.
        self.extensions: dict[str, Any] = {}
        self.started = False

    @property
    def http(self) -> aiohttp.ClientSession:
        """The process's shared HTTP client for connectors (open from start to stop)."""
        if self._http is None:
            raise RuntimeError("the kernel is not started")
        return self._http

    def context(self, plugin: str) -> PluginContext:
        """The factory context of ``plugin`` (its validated config and the kernel)."""
        return PluginContext(
            plugin=plugin, config=self.plugins.plugin_config(plugin), clock=self.clock, kernel=self
        )

    def _build(self, registered: Any) -> Any:
        return registered.descriptor.factory(self.context(registered.plugin))

    async def start(self) -> None:
        """Open storage and the bus, start the relay, order workers and price feeds."""
        if self.settings.redis_url is not None and not await self.cache.ping():
            raise ConnectionError(f"Redis at {self.settings.redis_url} is not reachable")
        await self.db.start()
        self.bus.subscribe(self._fan_out_event)
        self.bus.subscribe(self.terms.on_event)
        self.bus.subscribe(self.trading.on_event)
        self.bus.subscribe(self.calendar.on_event)
        await self.bus.start()
        await self.relay.start()
        await self.identity.start()
        await self.terms.start()
        await self.calendar.start()
        await self.trading.start()
        for item in self.plugins.registries.price_feeds:
            self.feeds[item.descriptor.name] = self._build(item)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self.plugins.notify("broker_on_startup", kernel=self)
        # Bars, outages, cluster; the process that leads the feeds starts them here.
        await self.market_data.start()
        self.started = True

    def start_feeds(self) -> None:
        """Run every price feed as a task (in the process that leads the feeds)."""
        for name, feed in self.feeds.items():
            self._feed_tasks.append(
                asyncio.create_task(self._run_feed(name, feed), name=f"feed-{name}")
            )

    async def stop_feeds(self) -> None:
        """Cancel the feed tasks (shutdown, or feed leadership lost)."""
        await cancel_and_wait(self._feed_tasks)
        self._feed_tasks = []

    async def _run_feed(self, name: str, feed: Feed) -> None:
        try:
            await feed.run(self.quotes.publish)
            log.info("price feed %s finished", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("price feed %s failed", name)

    async def _fan_out_event(self, event: Any) -> None:
        await self.plugins.notify("broker_on_event", event=event)

    async def stop(self) -> None:
        """Stop feeds, drain orders and events, close storage (reverse of start)."""
        await self.stop_feeds()
        if self.started:
            await self._stop_step("market data", self.market_data.stop())
            await self._stop_step("order workers", self.trading.stop())
            await self._stop_step("terms cache", self.terms.stop())
            await self._stop_step("economic calendar", self.calendar.stop())
            await self._stop_step("plugins", self.plugins.notify("broker_on_shutdown", kernel=self))
            await self._stop_step("identity", self.identity.stop())
            await self._stop_step("outbox relay", self.relay.stop())
            await self._stop_step("event bus", self.bus.stop())
        if self._http is not None:
            await self._stop_step("http client", self._http.close())
            self._http = None
        await self._stop_step("cache", self.cache.close())
        await self._stop_step("database", self.db.dispose())
        self.started = False

    @staticmethod
    async def _stop_step(name: str, step: Awaitable[None], timeout_s: float = 15.0) -> None:
        """Await one shutdown step. One that fails is logged and the shutdown goes on;
        one that hangs is logged with where it waits, cancelled and abandoned, not
        awaited forever (``asyncio.wait_for`` would await the cancelled step, which can
        hang again)."""
        task = asyncio.ensure_future(step)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            log.error(
                "shutdown: %s did not stop within %.0f s; abandoning it. It waits in: %s",
                name,
                timeout_s,
                awaiting(task),
            )
            task.cancel()
        elif not task.cancelled() and (error := task.exception()) is not None:
            log.error("shutdown: %s failed", name, exc_info=error)
