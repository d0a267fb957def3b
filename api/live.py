"""Live fan-out: prices to WebSocket clients, account state to SSE clients.

:class:`PriceHub` serves ``/api/customer/ws/prices``. It is a quote book subscriber
that only queues ticks of symbols someone watches; a flush task sends what queued up
``flush_interval_ms`` after the end of the previous flush. Each tick is serialised
once, and one frame is built per distinct subscription set and reused for every
client holding that set, so the per-client cost is one socket write. Frames go
straight into each connection's transport buffer; a client whose unsent data passes
``max_buffer_bytes`` is closed (1008) instead of being waited for, so a slow client
never slows the others.
A client may ask for conflation: then at most ``max_rate_hz`` frames a second, each
with the latest quote of every symbol that changed.

:class:`AccountStateHub` serves ``/api/crm/accounts/{login}/stream`` (seed section 32).
Per watched login one task recomputes the state (``kernel.trading.account_state``)
when the account changed (a notice from any process, see
:class:`~brokerkernel.kernel.marketdata.cluster.ClusterChannel`) or, for an account
with exposure, when prices moved; each stream gets at most one event per
``throttle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import WSCloseCode, web
from aiohttp_sse import EventSourceResponse

from brokerkernel.api.jsonio import dumps
from brokerkernel.api.routes.prices import PRICE_TTL_MS, price_json
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.pricing import Quote, QuoteBook
from brokerkernel.kernel.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S: Final = 5.0
_TEXT_FIN: Final = 0x81
#: The close message of a client dropped for its unsent data (code 1008).
SLOW_CONSUMER: Final = "Slow consumer"


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, uncompressed WebSocket text frame (RFC 6455 5.2),
    built once and written to every client that gets it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _TEXT_FIN, size)
    elif size < 65536:
        header = struct.pack("!BBH", _TEXT_FIN, 126, size)
    else:
        header = struct.pack("!BBQ", _TEXT_FIN, 127, size)
    return header + payload


def write_frame(
    ws: web.WebSocketResponse, transport: asyncio.Transport | None, frame: bytes, max_buffer: int
) -> Literal["sent", "gone", "slow"]:
    """Write ``frame`` (bytes on the wire, e.g. :func:`text_frame`) straight into the
    connection's ``transport``: ``"sent"``; ``"gone"`` (nothing written) when the
    connection is closing or closed; ``"slow"`` (nothing written) when its unsent
    data is above ``max_buffer`` bytes — the caller then closes it (1008
    :data:`SLOW_CONSUMER`, :func:`close_socket`) instead of waiting, so a slow client
    never slows the others."""
    if transport is None or transport.is_closing() or ws.closed:
        return "gone"
    if transport.get_write_buffer_size() > max_buffer:
        return "slow"
    transport.write(frame)
    return "sent"


async def close_socket(
    ws: web.WebSocketResponse, transport: asyncio.Transport | None, code: int, message: str
) -> None:
    """Close ``ws`` with ``code`` and ``message``; the connection is aborted when the
    closing handshake fails or takes longer than 5 s (a peer that stopped reading)."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message.encode()), _CLOSE_TIMEOUT_S)
    except Exception:
        if transport is not None:
            transport.abort()


@dataclass(eq=False, slots=True)
class PriceClient:
    """One WebSocket connection: its subscriptions and conflation state.

    ``interval_s`` is 0 for every-tick delivery, else the least seconds between two
    frames; ``sent`` maps symbol -> hub version last sent (conflated clients).
    """

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    symbols: frozenset[str] = frozenset()
    interval_s: float = 0.0
    next_due: float = 0.0
    sent: dict[str, int] = field(default_factory=dict)


class PriceHub:
    """Fan-out of ticks to WebSocket clients (see the module docstring).

    Frames are written straight to each connection's transport (the sockets are
    prepared without compression, so a frame is its header and payload); aiohttp
    still owns the handshake, pings and the closing handshake. ``max_rate_hz`` is the
    server's cap per client (0: none); ``heartbeat_s`` the interval of
    ``{"type": "heartbeat"}`` messages.
    """

    def __init__(
        self,
        quotes: QuoteBook,
        clock: MarketClock,
        *,
        flush_interval_ms: int,
        max_rate_hz: float,
        max_buffer_bytes: int,
        heartbeat_s: float,
        max_symbols: int,
    ) -> None:
        self._quotes = quotes
        self._clock = clock
        self._flush_interval_s = flush_interval_ms / 1000
        self.max_rate_hz = max_rate_hz
        self._max_buffer = max_buffer_bytes
        self.heartbeat_s = heartbeat_s
        self.max_symbols = max_symbols
        self._clients: set[PriceClient] = set()
        self._watched: dict[str, int] = {}
        self._pending: list[Quote] = []
        self._latest: dict[str, bytes] = {}
        self._versions: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._conflated_due: float | None = None
        self.frames_sent = 0
        self.dropped_slow = 0

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the quote book; start the flush and heartbeat tasks."""
        self._unsubscribe = self._quotes.subscribe(self.on_tick)
        self._tasks = [
            asyncio.create_task(self._flusher(), name="ws-price-flusher"),
            asyncio.create_task(self._heartbeats(), name="ws-price-heartbeats"),
        ]

    async def stop(self) -> None:
        """Unsubscribe and stop the tasks (connections are closed by :meth:`close_all`)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await cancel_and_wait(self._tasks, *self._closing)
        self._tasks = []

    async def close_all(self, code: int, message: str) -> None:
        """Close every connection with ``code`` (server shutdown: 1001)."""
        clients = list(self._clients)
        for client in clients:
            self.disconnect(client)
        await asyncio.gather(
            *(close_socket(c.ws, c.transport, code, message) for c in clients),
            return_exceptions=True,
        )

    # --- connections ----------------------------------------------------------------

    @property
    def clients(self) -> int:
        """Connections currently served."""
        return len(self._clients)

    def connect(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> PriceClient:
        """Register a prepared connection (nothing subscribed yet)."""
        client = PriceClient(ws, transport)
        self._clients.add(client)
        return client

    def disconnect(self, client: PriceClient) -> None:
        """Forget ``client`` (idempotent); its symbols are no longer watched for it."""
        if client in self._clients:
            self._clients.discard(client)
            self._unwatch(client.symbols)

    def effective_rate(self, requested_hz: float | None) -> float:
        """Frames per second a client gets: the lower non-zero of the server cap and its
        request (0: every tick)."""
        rates = [rate for rate in (self.max_rate_hz, requested_hz or 0) if rate > 0]
        return min(rates) if rates else 0.0

    def subscribe(
        self, client: PriceClient, symbols: Iterable[str], rate_hz: float | None = None
    ) -> tuple[list[str], list[bytes]]:
        """Add ``symbols`` (validated by the caller); returns the symbols added and the
        snapshot: the encoded fresh quote (TTL 60 s) of each one that has one.

        Pending ticks are flushed first, so nothing older than the snapshot follows it.
        """
        self.flush()
        added = sorted(set(symbols) - client.symbols)
        client.symbols = client.symbols | frozenset(added)
        self._watch(added)
        if rate_hz is not None:
            rate = self.effective_rate(rate_hz)
            client.interval_s = 1 / rate if rate else 0.0
        snapshot: list[bytes] = []
        for symbol in added:
            client.sent[symbol] = self._versions.get(symbol, 0)
            quote = self._quotes.fresh(symbol, PRICE_TTL_MS)
            if quote is not None:
                snapshot.append(dumps(price_json(quote)).encode())
        return added, snapshot

    def unsubscribe(self, client: PriceClient, symbols: Iterable[str]) -> list[str]:
        """Remove ``symbols``; returns those that were subscribed."""
        removed = sorted(client.symbols & set(symbols))
        client.symbols = client.symbols - frozenset(removed)
        for symbol in removed:
            client.sent.pop(symbol, None)
        self._unwatch(removed)
        return removed

    def _watch(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self._watched[symbol] = self._watched.get(symbol, 0) + 1

    def _unwatch(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            left = self._watched.get(symbol, 0) - 1
            if left > 0:
                self._watched[symbol] = left
            else:
                self._watched.pop(symbol, None)

    # --- the tick path ------------------------------------------------------------------

    def on_tick(self, quote: Quote) -> None:
        """Quote book subscriber: queue the tick when a client watches its symbol."""
        if quote.symbol in self._watched:
            self._pending.append(quote)
            self._wake.set()

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            timeout = None if self._conflated_due is None else self._conflated_due - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            # The window counts from the end of the last flush: under load, ticks keep
            # arriving while a flush runs, and the next flush carries all of them.
            delay = last + self._flush_interval_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                self.flush()
            except Exception:
                log.exception("price fan-out failed")
            last = loop.time()

    def flush(self) -> None:
        """Send the queued ticks to every client subscribed to them (synchronous: the
        frames go into the transports' buffers)."""
        batch, self._pending = self._pending, []
        encoded: list[tuple[str, bytes]] = []
        for quote in batch:
            data = dumps(price_json(quote)).encode()
            self._latest[quote.symbol] = data
            self._versions[quote.symbol] = self._versions.get(quote.symbol, 0) + 1
            encoded.append((quote.symbol, data))
        now = asyncio.get_running_loop().time()
        self._conflated_due = None
        frames: dict[frozenset[str], bytes | None] = {}
        for client in list(self._clients):
            if client.interval_s:
                frame = self._conflated_frame(client, now)
            else:
                key = client.symbols
                if key in frames:
                    frame = frames[key]
                else:
                    parts = [data for symbol, data in encoded if symbol in key]
                    frame = frames[key] = (
                        text_frame(_prices_payload(b"prices", parts)) if parts else None
                    )
            if frame is not None:
                self.write(client, frame)

    def _conflated_frame(self, client: PriceClient, now: float) -> bytes | None:
        """The latest quote of each changed symbol, when the client is due; otherwise
        note when it will be."""
        versions = self._versions
        changed = [s for s in client.symbols if versions.get(s, 0) > client.sent.get(s, 0)]
        if not changed:
            return None
        if now < client.next_due:
            due = client.next_due
            if self._conflated_due is None or due < self._conflated_due:
                self._conflated_due = due
            return None
        for symbol in changed:
            client.sent[symbol] = versions[symbol]
        client.next_due = now + client.interval_s
        return text_frame(_prices_payload(b"prices", [self._latest[s] for s in sorted(changed)]))

    def send(self, client: PriceClient, message: dict[str, Any]) -> None:
        """Send one control message (subscribed, error, pong, ...) to ``client``."""
        self.write(client, text_frame(dumps(message).encode()))

    def write(self, client: PriceClient, frame: bytes) -> None:
        """Write one frame (:func:`write_frame`), or drop the client when its unsent
        data is too much."""
        outcome = write_frame(client.ws, client.transport, frame, self._max_buffer)
        if outcome == "gone":
            self.disconnect(client)
        elif outcome == "slow":
            self._drop(client, WSCloseCode.POLICY_VIOLATION, SLOW_CONSUMER)
        else:
            self.frames_sent += 1

    def _drop(self, client: PriceClient, code: int, message: str) -> None:
        """Stop sending to ``client`` now and close it in the background."""
        self.disconnect(client)
        self.dropped_slow += 1
        log.info("closing slow WebSocket price client (%s)", message)
        task = asyncio.create_task(close_socket(client.ws, client.transport, code, message))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            frame = text_frame(
                dumps({"type": "heartbeat", "timestamp_ms": self._clock.now_ms()}).encode()
            )
            for client in list(self._clients):
                self.write(client, frame)


def _prices_payload(kind: bytes, parts: list[bytes]) -> bytes:
    """``{"type": kind, "prices": [...]}`` from already-encoded quotes."""
    return b'{"type":"' + kind + b'","prices":[' + b",".join(parts) + b"]}"


def snapshot_frame(parts: list[bytes]) -> bytes:
    """The ``{"type": "snapshot", "prices": [...]}`` frame sent after a subscription."""
    return text_frame(_prices_payload(b"snapshot", parts))


# --- account state (SSE) -------------------------------------------------------------------

STATE_FIELDS: Final = (
    "balance",
    "credit",
    "equity",
    "pnl",
    "margin_used",
    "free_margin",
    "margin_level",
    "gross_exposure",
    "net_exposure",
    "currency",
)
"""The fields of a ``state`` event (seed section 32)."""


def state_event(state: dict[str, Any]) -> dict[str, Any]:
    """The seed's section 32 event body from a section 6 account state."""
    return {name: state.get(name) for name in STATE_FIELDS}


def _exposed(state: dict[str, Any]) -> bool:
    """Whether prices move the account's state (it holds positions)."""
    return any(state.get(name) for name in ("margin_used", "gross_exposure", "pnl"))


class AccountWatch:
    """The live state of one login, shared by this process's streams of it.

    ``version`` increases whenever ``state`` (a section 32 event body) changes.
    """

    def __init__(self, login: int, state: dict[str, Any]) -> None:
        self.login = login
        self.state = state
        self.version = 0
        self.listeners = 0
        self.dirty = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def update(self, state: dict[str, Any]) -> None:
        """Take a newly computed event body; a different one wakes the streams."""
        if state != self.state:
            self.state = state
            self.version += 1
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def newer_than(self, version: int) -> None:
        """Return once ``version`` is no longer the latest."""
        while self.version <= version:
            await self._changed.wait()


class AccountStateHub:
    """Account state streams of this process (see the module docstring).

    ``compute(login)`` returns the section 6 state or None (account gone).
    """

    def __init__(
        self,
        quotes: QuoteBook,
        compute: Callable[[int], Awaitable[dict[str, Any] | None]],
        listen_changes: Callable[[Callable[[int], None]], Callable[[], None]],
        *,
        throttle_ms: int,
        ping_s: float,
    ) -> None:
        self._quotes = quotes
        self._compute = compute
        self._listen_changes = listen_changes
        self.throttle_s = throttle_ms / 1000
        self.ping_s = ping_s
        self._watches: dict[int, AccountWatch] = {}
        self._responses: set[EventSourceResponse] = set()
        self._ticked = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribers: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Listen to ticks and account-change notices."""
        self._unsubscribers = [
            self._quotes.subscribe(self._on_tick),
            self._listen_changes(self.on_account_change),
        ]
        self._task = asyncio.create_task(self._prices_moved(), name="sse-price-moves")

    async def stop(self) -> None:
        """Stop listening and cancel the refresh tasks."""
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []
        await cancel_and_wait([self._task, *(w.task for w in self._watches.values())])
        self._task = None

    def close_all(self) -> None:
        """End every stream (server shutdown)."""
        for response in list(self._responses):
            response.stop_streaming()

    def _on_tick(self, quote: Quote) -> None:
        self._ticked = True

    def on_account_change(self, login: int) -> None:
        """An account-change notice: recompute ``login``'s state if it is watched."""
        watch = self._watches.get(login)
        if watch is not None:
            watch.dirty.set()

    async def _prices_moved(self) -> None:
        """Once per throttle period: if prices ticked, exposed accounts are re-marked."""
        while True:
            await asyncio.sleep(self.throttle_s or 0.05)
            if self._ticked:
                self._ticked = False
                for watch in self._watches.values():
                    if _exposed(watch.state):
                        watch.dirty.set()

    @contextlib.asynccontextmanager
    async def watch(self, login: int, snapshot: dict[str, Any]) -> AsyncIterator[AccountWatch]:
        """Watch ``login`` for the duration of a stream; ``snapshot`` is the event body
        the stream starts with."""
        watch = self._watches.get(login)
        if watch is None:
            watch = self._watches[login] = AccountWatch(login, snapshot)
            watch.task = asyncio.create_task(self._refresh(watch), name=f"sse-account-{login}")
        watch.listeners += 1
        try:
            yield watch
        finally:
            watch.listeners -= 1
            if watch.listeners == 0 and self._watches.get(login) is watch:
                del self._watches[login]
                if watch.task is not None:
                    watch.task.cancel()

    async def _refresh(self, watch: AccountWatch) -> None:
        while True:
            await watch.dirty.wait()
            watch.dirty.clear()
            try:
                state = await self._compute(watch.login)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("account state of %s failed", watch.login)
                state = None
            if state is not None:
                watch.update(state_event(state))
            await asyncio.sleep(self.throttle_s)

    async def stream(
        self, response: EventSourceResponse, watch: AccountWatch, sent_version: int
    ) -> None:
        """Send ``watch``'s newer states to ``response`` (at most one per throttle
        period) until the stream ends."""
        self._responses.add(response)
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        event_id = 1
        try:
            while True:
                await watch.newer_than(sent_version)
                delay = sent_at + self.throttle_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_version = watch.version
                event_id += 1
                await response.send(dumps(watch.state), id=str(event_id), event="state")
                sent_at = loop.time()
        except (ConnectionError, TimeoutError, RuntimeError):
            response.stop_streaming()
        finally:
            self._responses.discard(response)
