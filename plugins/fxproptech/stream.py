"""``GET /v1/trades/stream``: a partner's live trade events over a WebSocket.

Auth: a partner bearer token with scope ``accounts:read``, in the ``Authorization``
header or (browsers cannot set headers on a WebSocket) as ``?access_token=``; the
header wins. A refused token is answered before the upgrade, exactly like the REST
routes (401 ``{"detail": "Missing or invalid Authorization header"}`` / ``"Token
expired"`` / ``"Invalid token"``, 403 ``prop_firm_not_enabled`` / ``insufficient_scope``);
a plain GET answers 426.

Server to client, one JSON text frame per message::

    {"event": "stream.ready", "id": null, "ts": "...Z", "data": {"tenant_id": "acme"}}
    {"event": "trade.opened",   "id": "<event id>", "ts": "...Z", "data": {...}}
    {"event": "trade.closed",   ...}
    {"event": "trade.modified", ...}
    {"event": "heartbeat", "id": null, "ts": "...Z", "data": {}}

``trade.*`` come from the kernel's ``order.opened`` / ``order.closed`` /
``position.modified`` domain events of the partner's own prop accounts only;
``data`` is the event's payload (``login``, ``ticket``, ``symbol``, ``volume`` and
prices as strings, ...) plus ``trader_id`` (the prop account id, see the plugin
docstring); ``id`` is the domain event id (stable: delivery is at least once, so a
client de-duplicates on it); ``ts`` the event's market time (UTC). ``stream.ready`` is
the first frame: nothing that happened before it is sent. A ``heartbeat`` comes every
``stream_heartbeat_s`` seconds (and aiohttp pings at the same interval, at least
:data:`PING_MIN_S`); with each one the token is checked again. Client to server:
``{"action": "ping"}`` answers ``{"event": "pong", ...}``; other text answers
``{"event": "error", ...}``.

Close codes: 1000 normal, 1001 server shutting down, 1003 binary frame, 1008 slow
consumer (unsent data above ``stream_max_buffer_bytes``), 1011 internal error, 4401
token expired or revoked, 4403 access withdrawn (tenant no longer prop-firm enabled,
scope removed); the close reason is the REST error's detail.

Which login belongs to which tenant is learnt from the challenges plugin's
``prop_accounts`` (a tenant's accounts when its first stream opens here) and from
every ``account.created`` event. Without Redis the hub is a bus handler. With Redis
the bus hands each event to one process of its consumer group, so instead every
process tails the bus's Redis Stream itself (``XREAD`` from the entry it last read):
each process sees every event, in the stream's order, and one that reconnects to
Redis continues where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from sqlalchemy import select

from brokerkernel.api.auth import (
    AUTH_ERROR,
    PRINCIPAL,
    Principal,
    authenticate,
    require_partner,
)
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import dumps, loads
from brokerkernel.api.live import SLOW_CONSUMER, close_socket, text_frame, write_frame
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.cache import RedisCache
from brokerkernel.kernel.events import STREAM, DomainEvent
from brokerkernel.kernel.tasks import cancel_and_wait
from brokerkernel.plugins.challenges.models import PropAccount

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from brokerkernel.kernel.runtime import Kernel

log = logging.getLogger(__name__)

PATH: Final = "/v1/trades/stream"
SCOPE: Final = "accounts:read"
TRADE_EVENTS: Final = {
    "order.opened": "trade.opened",
    "order.closed": "trade.closed",
    "position.modified": "trade.modified",
}
ACCOUNT_CREATED: Final = "account.created"
TAIL_BATCH: Final = 500
TAIL_BLOCK_MS: Final = 500
MAX_MESSAGE_BYTES: Final = 4096
PING_MIN_S: Final = 5.0
"""Least seconds between protocol pings (aiohttp closes a peer that does not answer one
within half the interval, so a short heartbeat must not shorten that deadline)."""
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403


@dataclass(eq=False, slots=True)
class TradeClient:
    """One stream: its socket, the tenant it serves and the token it was opened with
    (checked again with every heartbeat)."""

    ws: web.WebSocketResponse
    request: web.Request
    transport: asyncio.Transport | None
    tenant_id: str | None
    token: str


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer``, else of ``?access_token=``."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return request.query.get("access_token") or None


async def authorize(request: web.Request, token: str | None) -> Principal:
    """The partner ``token`` names, holding ``accounts:read``; raises the REST
    routes' 401/403 :class:`ApiError` otherwise (the gateway's checks, reused)."""
    headers = CIMultiDict(request.headers)
    headers.pop("Authorization", None)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    probe = request.clone(headers=headers)
    for key in (PRINCIPAL, AUTH_ERROR):  # a clone copies the gateway's earlier verdict
        probe.pop(key, None)
    await authenticate(probe)
    return require_partner(probe, SCOPE)


class TradeStreamHub:
    """The trade streams of this process (see the module docstring).

    ``on_event`` is a bus handler; ``heartbeat_s`` the heartbeat interval;
    ``max_buffer_bytes`` the unsent data after which a client is dropped (1008).
    """

    def __init__(self, kernel: Kernel, *, heartbeat_s: float, max_buffer_bytes: int) -> None:
        self._kernel = kernel
        self.heartbeat_s = heartbeat_s
        self._max_buffer = max_buffer_bytes
        cache = kernel.cache
        self._redis: Redis | None = cache.redis if isinstance(cache, RedisCache) else None
        #: login -> (tenant id, prop account id) of the accounts known here.
        self._owners: dict[int, tuple[str | None, str]] = {}
        self._loaded: dict[str | None, asyncio.Task[None]] = {}
        self._clients: dict[str | None, set[TradeClient]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._tail_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closing: set[asyncio.Task[None]] = set()
        self.frames_sent = 0
        self.dropped_slow = 0

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the heartbeats and, with Redis, tailing the event stream from its
        current end."""
        self._tasks = [asyncio.create_task(self._heartbeats(), name="fxpt-heartbeats")]
        if self._redis is not None:
            newest = await self._redis.xrevrange(STREAM, count=1)
            last = newest[0][0] if newest else "0-0"
            self._tail_task = asyncio.create_task(self._tail(last), name="fxpt-event-tail")

    async def stop(self) -> None:
        """Close every stream (1001) and stop the tasks (the tail finishes its current
        read: a Redis command is never cancelled half-read)."""
        clients = [c for group in self._clients.values() for c in group]
        self._clients.clear()
        await asyncio.gather(
            *(
                close_socket(c.ws, c.transport, WSCloseCode.GOING_AWAY, "Server shutting down")
                for c in clients
            ),
            return_exceptions=True,
        )
        if self._tail_task is not None:
            self._stopping = True
            await self._tail_task
            self._tail_task = None
        await cancel_and_wait(self._tasks, *self._closing)
        self._tasks = []

    # --- events -----------------------------------------------------------------------

    def on_event(self, event: DomainEvent) -> None:
        """Bus handler (without Redis; with it the tail sees every event)."""
        if self._redis is None:
            self.deliver(event)

    def deliver(self, event: DomainEvent) -> None:
        """Learn an account's owner, or send a trade event to its tenant's streams."""
        if event.type not in TRADE_EVENTS and event.type != ACCOUNT_CREATED:
            return
        payload = event.payload
        login = payload.get("login")
        if not isinstance(login, int):
            return
        if event.type == ACCOUNT_CREATED:
            self._owners[login] = (payload.get("tenant_id"), str(payload.get("account_id")))
            return
        owner = self._owners.get(login)
        clients = self._clients.get(owner[0]) if owner is not None else None
        if not clients or owner is None:
            return
        frame = text_frame(
            dumps(
                {
                    "event": TRADE_EVENTS[event.type],
                    "id": event.id,
                    "ts": event.occurred_at,
                    "data": {**payload, "trader_id": owner[1]},
                }
            ).encode()
        )
        for client in list(clients):
            self.write(client, frame)

    async def _tail(self, last: Any) -> None:
        """Read the bus's Redis Stream after entry ``last`` until stopped."""
        assert self._redis is not None
        while not self._stopping:
            try:
                batches: Any = await self._redis.xread(
                    {STREAM: last}, count=TAIL_BATCH, block=TAIL_BLOCK_MS
                )
                for _stream, entries in batches or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        raw = fields.get(b"event") or fields.get("event")
                        if raw is not None:
                            self.deliver(DomainEvent.from_json(raw))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trade stream: reading the event stream failed; retrying in 1 s")
                await asyncio.sleep(1)

    # --- connections ------------------------------------------------------------------

    async def connect(
        self, ws: web.WebSocketResponse, request: web.Request, who: Principal, token: str
    ) -> TradeClient:
        """Register a prepared stream once its tenant's accounts are known here, and
        send ``stream.ready`` (the first frame)."""
        tenant = who.tenant_id
        if tenant not in self._loaded:
            self._loaded[tenant] = asyncio.create_task(self._load(tenant))
        try:
            await asyncio.shield(self._loaded[tenant])
        except Exception:
            self._loaded.pop(tenant, None)  # the next stream tries again
            raise
        client = TradeClient(ws, request, request.transport, tenant, token)
        self._clients.setdefault(tenant, set()).add(client)
        self.send(client, "stream.ready", {"tenant_id": tenant})
        return client

    async def _load(self, tenant: str | None) -> None:
        """Learn the logins of every prop account of ``tenant`` (one indexed query on
        the challenges plugin's ``prop_accounts``)."""
        query = select(PropAccount.login, PropAccount.id).where(PropAccount.tenant_id == tenant)
        async with self._kernel.db.read() as session:
            for login, account_id in await session.execute(query):
                self._owners[login] = (tenant, account_id)

    def disconnect(self, client: TradeClient) -> None:
        """Forget ``client`` (idempotent)."""
        clients = self._clients.get(client.tenant_id)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._clients[client.tenant_id]

    @property
    def clients(self) -> int:
        """Streams currently served by this process."""
        return sum(len(group) for group in self._clients.values())

    def send(self, client: TradeClient, event: str, data: Mapping[str, Any]) -> None:
        """Send one control frame (``stream.ready``, ``heartbeat``, ``pong``, ``error``)."""
        message = {"event": event, "id": None, "ts": self._kernel.clock.now(), "data": data}
        self.write(client, text_frame(dumps(message).encode()))

    def write(self, client: TradeClient, frame: bytes) -> None:
        """Write one frame into the client's transport, or drop a client whose unsent
        data passed the limit (1008) so it never slows the others (:func:`write_frame`)."""
        outcome = write_frame(client.ws, client.transport, frame, self._max_buffer)
        if outcome == "gone":
            self.disconnect(client)
        elif outcome == "slow":
            self.dropped_slow += 1
            self.drop(client, WSCloseCode.POLICY_VIOLATION, SLOW_CONSUMER)
        else:
            self.frames_sent += 1

    def drop(self, client: TradeClient, code: int, reason: str) -> None:
        """Stop sending to ``client`` now and close it with ``code`` in the background."""
        self.disconnect(client)
        task = asyncio.create_task(close_socket(client.ws, client.transport, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for client in [c for group in self._clients.values() for c in group]:
                try:
                    await authorize(client.request, client.token)
                except ApiError as exc:
                    code = CLOSE_UNAUTHORIZED if exc.status == 401 else CLOSE_FORBIDDEN
                    self.drop(client, code, str(loads(exc.text or "{}").get("detail")))
                    continue
                except Exception:  # e.g. the RBAC cache unreachable: keep the stream
                    log.exception("trade stream: re-checking a token failed")
                self.send(client, "heartbeat", {})


TRADE_HUB = web.AppKey("fxproptech_trade_hub", TradeStreamHub)


@operation(
    "Stream the partner's trade events (WebSocket)",
    tags=["fxproptech"],
    query={
        "type": "object",
        "properties": {
            "access_token": {
                "type": "string",
                "description": "The partner token, for clients that cannot send headers",
            }
        },
    },
    responses={
        101: "Switching to the WebSocket protocol (frames in the plugin's README section)",
        401: "Missing, expired or invalid token",
        403: "prop_firm_not_enabled or insufficient_scope",
        426: "WebSocket upgrade required",
    },
    security=f"partner:{SCOPE}",
)
async def trade_stream(request: web.Request) -> web.StreamResponse:
    """The trade stream (protocol in the module docstring)."""
    hub = request.app[TRADE_HUB]
    ws = web.WebSocketResponse(
        heartbeat=max(hub.heartbeat_s, PING_MIN_S), compress=False, max_msg_size=MAX_MESSAGE_BYTES
    )
    if not ws.can_prepare(request).ok:
        error = ApiError(426, "WebSocket upgrade required")
        error.headers["Upgrade"] = "websocket"
        raise error
    token = bearer_token(request)
    who = await authorize(request, token)
    assert token is not None
    await ws.prepare(request)
    client: TradeClient | None = None
    try:
        client = await hub.connect(ws, request, who, token)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                _on_message(hub, client, message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"JSON text only")
    except Exception:
        log.exception("trade stream failed")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"Internal error")
    finally:
        if client is not None:
            hub.disconnect(client)
    return ws


def _on_message(hub: TradeStreamHub, client: TradeClient, text: str) -> None:
    try:
        message = loads(text)
    except ValueError:
        message = None
    if isinstance(message, dict) and message.get("action") == "ping":
        hub.send(client, "pong", {})
    else:
        hub.send(client, "error", {"detail": 'The only message is {"action": "ping"}'})
