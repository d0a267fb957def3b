"""Several kernel processes on one price path: feed leadership and Redis pub/sub.

With ``REDIS_URL`` set, any number of kernel processes serve the API. Exactly one of
them — the *feed leader*, holder of the Redis key :data:`LEADER_KEY` — runs the price
feeds and writes bars and outages; the key expires ``ttl_s`` after its holder stops
renewing it (every ``ttl_s / 3``), and another process then takes the feeds over. The
leader relays every tick it accepts on :data:`TICKS_CHANNEL`; the others publish the
ticks into their own quote book, so every process holds the same prices and the same
market time. Account-change notices (the logins whose state changed, from the domain
events of the change: one message per event batch, logins comma-separated) go to
every process on :data:`ACCOUNTS_CHANNEL`, where the live account streams pick them up.

Without Redis there is one process: it leads, and notices are delivered in-process.
Pub/sub is at most once: a process that reconnects misses what was sent meanwhile
(prices heal with the next tick, account streams with the next change or tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from brokerkernel.kernel.pricing import Quote, QuoteBook
from brokerkernel.kernel.tasks import cancel_and_wait

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

LEADER_KEY: Final = "brokerkernel:feed-leader"
TICKS_CHANNEL: Final = "brokerkernel:{db}:ticks"
ACCOUNTS_CHANNEL: Final = "brokerkernel:{db}:account-changes"
"""Pub/sub channels are shared by all logical databases of a Redis server; ``{db}`` is
the database number, so deployments on different databases do not hear each other."""

_RENEW: Final = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
"""Renew the leader's lock; or take it again when it expired and no other process took
it meanwhile (a renewal late by more than the TTL: an event loop blocked that long),
as ``SET NX`` would. 0 only when another process holds it."""
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
"""Release the lock only while this process holds it."""


def process_identity() -> str:
    """``host-pid-random``: names this process in the lock and in relayed messages."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class FeedLeadership:
    """Whether this process leads the price feeds; ``on_change(leading)`` is awaited on
    every change (the market data service starts or stops the feeds there)."""

    def __init__(
        self,
        redis: Redis | None,
        identity: str,
        ttl_s: float,
        on_change: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._identity = identity
        self._ttl_ms = int(ttl_s * 1000)
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._renewed_at = 0.0
        self.is_leader = False

    async def start(self) -> None:
        """Lead at once without Redis; with Redis try now, then keep trying or renewing."""
        if self._redis is None:
            await self._set(True)
            return
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name="feed-leadership")

    async def stop(self) -> None:
        """Stop renewing and hand the lock back, so another process takes over at once."""
        await cancel_and_wait([self._task])
        self._task = None
        if self._redis is not None and self.is_leader:
            with contextlib.suppress(Exception):
                await self._redis.eval(_RELEASE, 1, LEADER_KEY, self._identity)
        self.is_leader = False

    async def _attempt(self) -> None:
        assert self._redis is not None
        if self.is_leader:
            renewed = await self._redis.eval(_RENEW, 1, LEADER_KEY, self._identity, self._ttl_ms)
            if renewed:
                self._renewed_at = time.monotonic()
            else:
                log.warning("feed leadership lost to another process")
                await self._set(False)
        elif await self._redis.set(LEADER_KEY, self._identity, px=self._ttl_ms, nx=True):
            self._renewed_at = time.monotonic()
            log.info("this process now leads the price feeds (%s)", self._identity)
            await self._set(True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("feed leadership: Redis call failed")
                if self.is_leader and time.monotonic() - self._renewed_at > self._ttl_ms / 1000:
                    # The lock has expired by now: another process may lead.
                    await self._set(False)

    async def _set(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            await self._on_change(leading)


def _encode_ticks(origin: str, quotes: list[Quote]) -> str:
    ticks = [[q.symbol, str(q.bid), str(q.ask), q.time_ms, q.provider] for q in quotes]
    return json.dumps({"origin": origin, "ticks": ticks}, separators=(",", ":"))


class ClusterChannel:
    """Redis pub/sub between the kernel processes (or in-process delivery without Redis).

    Ticks: :meth:`on_tick` (a :class:`QuoteBook` subscriber) queues every tick this
    process accepted from its own sources; a task publishes the queue in one message
    per event-loop pass. Ticks from other processes are published into ``quotes``
    (and are not relayed again). Account notices: :meth:`accounts_changed` reaches
    every process's :meth:`on_account_change` listeners, this one's included.
    """

    def __init__(self, redis: Redis | None, quotes: QuoteBook, identity: str) -> None:
        self._redis = redis
        self._quotes = quotes
        self._identity = identity
        db = redis.connection_pool.connection_kwargs.get("db", 0) if redis is not None else 0
        self._ticks_channel = TICKS_CHANNEL.format(db=db)
        self._accounts_channel = ACCOUNTS_CHANNEL.format(db=db)
        self._outgoing: list[Quote] = []
        self._wake = asyncio.Event()
        self._applying = False
        self._listeners: list[Callable[[int], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.relayed_in = 0

    def on_account_change(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(login)`` for every account-change notice, from any process;
        returns a function that removes the listener."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def accounts_changed(self, logins: Collection[int]) -> None:
        """Tell every process that the state of ``logins`` changed: each listener gets
        each login once, in the given order. With Redis one ``PUBLISH`` carries them
        all (comma-separated), whatever their number."""
        if not logins:
            return
        if self._redis is None:
            for login in logins:
                self._deliver(login)
        else:
            await self._redis.publish(self._accounts_channel, ",".join(map(str, logins)))

    def _deliver(self, login: int) -> None:
        for listener in self._listeners:
            try:
                listener(login)
            except Exception:
                log.exception("account change listener %r failed", listener)

    # --- ticks ------------------------------------------------------------------------

    def on_tick(self, quote: Quote) -> None:
        """Quote book subscriber: queue a tick of this process's own sources to relay."""
        if self._redis is not None and not self._applying:
            self._outgoing.append(quote)
            self._wake.set()

    async def start(self) -> None:
        """Start relaying and listening (with Redis; nothing to do without)."""
        if self._redis is not None:
            self._tasks = [
                asyncio.create_task(self._publish(), name="tick-relay-out"),
                asyncio.create_task(self._listen(), name="cluster-listener"),
            ]

    async def stop(self) -> None:
        """Stop relaying and listening (ticks not yet relayed are dropped)."""
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _publish(self) -> None:
        assert self._redis is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outgoing = self._outgoing, []
            try:
                await self._redis.publish(self._ticks_channel, _encode_ticks(self._identity, batch))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relaying %d ticks to Redis failed; they are dropped", len(batch))

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._ticks_channel, self._accounts_channel)
                    async for message in pubsub.listen():
                        self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster pub/sub listener failed; reconnecting in 1 s")
                await asyncio.sleep(1)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        data = message["data"]
        if message["channel"] == self._accounts_channel:
            for login in data.split(","):
                self._deliver(int(login))
            return
        payload = json.loads(data)
        if payload["origin"] == self._identity:
            return
        self._applying = True
        try:
            for symbol, bid, ask, time_ms, provider in payload["ticks"]:
                latest = self._quotes.get(symbol)
                if latest is not None and latest.time_ms > time_ms:
                    continue  # this process already has a newer quote (another source)
                self._quotes.publish(Quote(symbol, Decimal(bid), Decimal(ask), time_ms, provider))
                self.relayed_in += 1
        finally:
            self._applying = False
