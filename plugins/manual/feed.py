"""The manual feed: dealer quotes into the kernel's price path.

:meth:`ManualFeed.push` publishes a quote synchronously into this process's quote
book, exactly as a feed tick (provider ``"manual"``). With Redis (several kernel
processes) the quote is also broadcast on :data:`CHANNEL`, and every other process's
feed task publishes it into its own quote book, so all processes price alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from decimal import Decimal

from brokerkernel.kernel.cache import RedisCache
from brokerkernel.kernel.descriptors import PluginContext
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.trading.service import utc

log = logging.getLogger(__name__)

PROVIDER = "manual"
CHANNEL = "brokerkernel:manual-quotes"


class ClockBackwards(ValueError):
    """A quote time before the market clock, which never moves backwards."""

    def __init__(self, time_ms: int, now_ms: int) -> None:
        super().__init__(
            f"time {utc(time_ms).isoformat()} is before the market clock "
            f"{utc(now_ms).isoformat()}; the clock never moves backwards"
        )


class ManualFeed:
    """A price feed whose ticks are the quotes dealers push over HTTP.

    ``drives_clock`` is true when ``[kernel] clock = "manual"``: quote times then set
    market time (and must not be earlier than it).
    """

    def __init__(self, context: PluginContext) -> None:
        kernel = context.kernel
        self._book = kernel.quotes
        self._clock = context.clock
        self.drives_clock: bool = kernel.kernel_config["clock"] == PROVIDER
        cache = kernel.cache
        self._redis = cache.redis if isinstance(cache, RedisCache) else None
        self._origin = uuid.uuid4().hex
        self._symbols: set[str] = set()

    def symbols(self) -> list[str]:
        """Symbols quoted so far (any catalog symbol can be quoted)."""
        return sorted(self._symbols)

    def push(self, symbol: str, bid: Decimal, ask: Decimal, time_ms: int | None) -> Quote:
        """Publish one quote (prices in quote currency, ``time_ms`` UTC ms; None: the
        market clock's now). Raises :class:`ClockBackwards` when the feed drives the
        clock and ``time_ms`` is before it. The caller validated bid <= ask."""
        now_ms = self._clock.now_ms()
        if time_ms is None:
            time_ms = now_ms
        elif self.drives_clock and time_ms < now_ms:
            raise ClockBackwards(time_ms, now_ms)
        quote = Quote(symbol, bid, ask, time_ms, PROVIDER)
        self._book.publish(quote)
        self._symbols.add(symbol)
        return quote

    async def broadcast(self, quote: Quote) -> None:
        """Hand ``quote`` to the other kernel processes (no-op without Redis)."""
        if self._redis is None:
            return
        message = {
            "origin": self._origin,
            "symbol": quote.symbol,
            "bid": str(quote.bid),
            "ask": str(quote.ask),
            "time_ms": quote.time_ms,
        }
        await self._redis.publish(CHANNEL, json.dumps(message))

    async def run(self, publish: Callable[[Quote], bool]) -> None:
        """Idle until cancelled (quotes arrive through :meth:`push`); with Redis,
        publish the quotes pushed in other processes."""
        if self._redis is None:
            await asyncio.Event().wait()
            return
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        data = json.loads(message["data"])
                        if data["origin"] == self._origin:
                            continue
                        quote = Quote(
                            data["symbol"],
                            Decimal(data["bid"]),
                            Decimal(data["ask"]),
                            int(data["time_ms"]),
                            PROVIDER,
                        )
                        publish(quote)
                        self._symbols.add(quote.symbol)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("manual quote listener failed; reconnecting in 1 s")
                await asyncio.sleep(1)
