"""Live streams: WebSocket prices (seed section 14) and the account SSE stream
(seed section 32).

``GET /api/customer/ws/prices`` (public) upgrades to a WebSocket speaking JSON text
messages. Client to server::

    {"action": "subscribe", "symbols": ["EURUSD", "XAU/USD"], "max_rate_hz": 4}
    {"action": "unsubscribe", "symbols": ["EURUSD"]}
    {"action": "ping"}

(``?symbols=EURUSD,XAUUSD&max_rate_hz=4`` subscribes at connect.) Server to client:
``{"type": "subscribed", "symbols": [added], "subscriptions": [all], "max_rate_hz": r}``
then ``{"type": "snapshot", "prices": [...]}`` (the current price of each added
symbol that has one), then ``{"type": "prices", "prices": [...]}`` with every tick in
order — or, at a rate ``r`` > 0 (the lower of the client's ``max_rate_hz`` and the
server's ``ws_max_rate_hz``), the latest price of each changed symbol at most ``r``
times a second; ``{"type": "unsubscribed", ...}``, ``{"type": "pong", "timestamp_ms"}``,
``{"type": "heartbeat", "timestamp_ms"}`` every ``ws_heartbeat_s`` and
``{"type": "error", "detail": ...}`` (the connection stays open). A price is the REST
shape (``symbol``, ``bid``, ``ask``, ``mid``, ``timestamp_ms``, ``provider``).
Close codes: 1000 normal, 1001 server shutting down, 1003 binary frame, 1008 slow
consumer (unsent data above ``ws_max_buffer_bytes``), 1009 message too big (64 KiB),
1011 internal error.

``GET /api/crm/accounts/{login}/stream`` (``view_customers``, or the trader owning
``login``) is a ``text/event-stream``: ``event: state`` with the seed's section 32
fields at once, then on every change at most one per ``sse_throttle_ms`` (500), a
``: ping`` comment every ``sse_ping_s`` (25); headers ``Cache-Control: no-cache``
and ``X-Accel-Buffering: no``. Browsers' ``EventSource`` cannot send headers, so the
token may also come as ``?access_token=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_sse import sse_response
from multidict import CIMultiDict

from brokerkernel.api import validation
from brokerkernel.api.auth import AUTH_ERROR, PRINCIPAL, authenticate, require_account_access
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import dumps, loads
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.live import (
    AccountStateHub,
    PriceClient,
    PriceHub,
    snapshot_frame,
    state_event,
)
from brokerkernel.api.middlewares import REQUEST_ID, REQUEST_ID_KEY
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.prices import is_servable, normalise_symbol

if TYPE_CHECKING:
    from brokerkernel.api.app import Router
    from brokerkernel.kernel.runtime import Kernel

log = logging.getLogger(__name__)

PRICE_HUB = web.AppKey("price_hub", PriceHub)
ACCOUNT_HUB = web.AppKey("account_hub", AccountStateHub)
WS_PATH: Final = "/api/customer/ws/prices"
SSE_PATH: Final = "/api/crm/accounts/{login}/stream"
SSE_LEGACY_PATH: Final = "/accounts/{login}/stream"
MAX_MESSAGE_BYTES: Final = 64 * 1024
RECONNECT_MS: Final = 3000
"""``retry:`` sent with the first event: EventSource reconnects after 3 s."""

MESSAGE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"enum": ["subscribe", "unsubscribe", "ping"]},
        "symbols": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 32},
            "minItems": 1,
        },
        "max_rate_hz": {"type": "number", "minimum": 0},
    },
    "additionalProperties": False,
    "if": {"properties": {"action": {"enum": ["subscribe", "unsubscribe"]}}},
    "then": {"required": ["symbols"]},
}


# --- WebSocket prices ----------------------------------------------------------------------


def _connect_query(request: web.Request) -> tuple[list[str], float | None]:
    """``symbols`` (comma-separated) and ``max_rate_hz`` of the upgrade request; 422
    listing both when malformed."""
    symbols = [s for s in request.query.get("symbols", "").split(",") if s.strip()]
    raw_rate = request.query.get("max_rate_hz")
    errors: validation.FieldErrors = []
    rate: float | None = None
    if raw_rate is not None:
        try:
            rate = float(raw_rate)
        except ValueError:
            rate = -1.0
        if not rate >= 0:  # also NaN
            errors.append(validation.query_error("max_rate_hz", "must be a number >= 0", "minimum"))
    if len(symbols) > request.app[PRICE_HUB].max_symbols:
        errors.append(validation.query_error("symbols", "too many symbols", "maxItems"))
    if errors:
        raise ApiError(422, errors)
    return symbols, rate


@operation(
    "WebSocket price streaming",
    tags=["Prices"],
    query={
        "type": "object",
        "properties": {
            "symbols": {"type": "string", "description": "Comma-separated symbols"},
            "max_rate_hz": {"type": "number", "exclusiveMinimum": 0},
        },
    },
    responses={101: "Switching Protocols: the WebSocket price stream"},
    security="public",
)
async def price_socket(request: web.Request) -> web.StreamResponse:
    """The WebSocket price stream (protocol in the module docstring)."""
    hub = request.app[PRICE_HUB]
    ws = web.WebSocketResponse(
        heartbeat=hub.heartbeat_s, compress=False, max_msg_size=MAX_MESSAGE_BYTES
    )
    if not ws.can_prepare(request).ok:
        error = ApiError(426, "WebSocket upgrade required")
        error.headers["Upgrade"] = "websocket"
        raise error
    symbols, rate = _connect_query(request)
    await ws.prepare(request)
    client = hub.connect(ws, request.transport)
    kernel = request.app[KERNEL]
    try:
        if symbols or rate is not None:
            _subscribe(kernel, hub, client, symbols, rate)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                _on_message(kernel, hub, client, message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"JSON text only")
    except Exception:
        log.exception("WebSocket price stream failed")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"Internal error")
    finally:
        hub.disconnect(client)
    return ws


def _on_message(kernel: Kernel, hub: PriceHub, client: PriceClient, text: str) -> None:
    try:
        message = loads(text)
        validation.check(MESSAGE_SCHEMA, message, "message")
    except ValueError:
        hub.send(client, {"type": "error", "detail": "Messages must be JSON objects"})
        return
    except ApiError as exc:
        assert exc.text is not None
        hub.send(client, {"type": "error", "detail": loads(exc.text)["detail"]})
        return
    action = message["action"]
    if action == "ping":
        hub.send(client, {"type": "pong", "timestamp_ms": kernel.clock.now_ms()})
    elif action == "subscribe":
        rate = message.get("max_rate_hz")
        _subscribe(kernel, hub, client, message["symbols"], rate)
    else:
        removed = hub.unsubscribe(client, {normalise_symbol(s) for s in message["symbols"]})
        hub.send(
            client,
            {
                "type": "unsubscribed",
                "symbols": removed,
                "subscriptions": sorted(client.symbols),
            },
        )


def _subscribe(
    kernel: Kernel,
    hub: PriceHub,
    client: PriceClient,
    raw_symbols: list[str],
    rate: Any,
) -> None:
    """Subscribe the servable symbols; unknown or inactive ones, and any beyond the
    per-connection maximum, are reported in one error message."""
    wanted = sorted({normalise_symbol(s) for s in raw_symbols})
    unknown = [symbol for symbol in wanted if not is_servable(kernel, symbol)]
    valid = [symbol for symbol in wanted if symbol not in unknown]
    room = hub.max_symbols - len(client.symbols)
    new = [symbol for symbol in valid if symbol not in client.symbols]
    refused = new[max(room, 0) :]
    accepted = [symbol for symbol in valid if symbol not in refused]
    added, snapshot = hub.subscribe(client, accepted, None if rate is None else float(rate))
    hub.send(
        client,
        {
            "type": "subscribed",
            "symbols": added,
            "subscriptions": sorted(client.symbols),
            "max_rate_hz": 1 / client.interval_s if client.interval_s else 0,
        },
    )
    if snapshot:
        hub.write(client, snapshot_frame(snapshot))
    if unknown:
        hub.send(
            client,
            {"type": "error", "detail": "Unknown or inactive symbols", "symbols": unknown},
        )
    if refused:
        hub.send(
            client,
            {
                "type": "error",
                "detail": f"At most {hub.max_symbols} symbols per connection",
                "symbols": refused,
            },
        )


# --- account SSE stream ------------------------------------------------------------------


async def _authenticate_query_token(request: web.Request) -> None:
    """Authenticate ``?access_token=`` like an ``Authorization: Bearer`` header
    (EventSource cannot send headers); a header, when present, wins."""
    token = request.query.get("access_token")
    if not token or "Authorization" in request.headers:
        return
    headers = CIMultiDict(request.headers)
    headers["Authorization"] = f"Bearer {token}"
    probe = request.clone(headers=headers)
    await authenticate(probe)
    if PRINCIPAL in probe:
        request[PRINCIPAL] = probe[PRINCIPAL]
    if AUTH_ERROR in probe:
        request[AUTH_ERROR] = probe[AUTH_ERROR]


def _stream_headers(request: web.Request) -> dict[str, str]:
    """``X-Request-ID``, set before the stream starts: the gateway sets it on the
    handler's answer, too late for a stream (``Deprecation`` on the legacy path and
    the CORS headers are set by ``on_response_prepare`` handlers, streams included)."""
    return {REQUEST_ID: request[REQUEST_ID_KEY]} if REQUEST_ID_KEY in request else {}


@operation(
    "Live account state via Server-Sent Events",
    tags=["Account SSE Stream"],
    query={
        "type": "object",
        "properties": {
            "access_token": {
                "type": "string",
                "description": "The bearer token, for EventSource clients without headers",
            }
        },
    },
    path={"login": {"type": "integer"}},
    responses={200: "text/event-stream of account state events", 404: "Account not found"},
    security=("customer", "staff:view_customers"),
)
async def account_stream(request: web.Request) -> web.StreamResponse:
    """Live account state as Server-Sent Events (seed section 32)."""
    login = validation.path_int(request, "login")
    await _authenticate_query_token(request)
    require_account_access(request, login, "view_customers")
    kernel = request.app[KERNEL]
    hub = request.app[ACCOUNT_HUB]
    state = await kernel.trading.account_state(login)
    if state is None:
        raise not_found("Account not found")
    snapshot = state_event(state)
    async with (
        hub.watch(login, snapshot) as watch,
        sse_response(
            request, headers=_stream_headers(request), sep="\n", ping_interval=hub.ping_s
        ) as response,
    ):
        version = watch.version
        await response.send(dumps(snapshot), id="1", event="state", retry=RECONNECT_MS)
        pump = asyncio.create_task(hub.stream(response, watch, version))
        try:
            await response.wait()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    return response


# --- wiring --------------------------------------------------------------------------------


def setup(router: Router) -> None:
    """Create the hubs (started before and stopped after the kernel), close every
    stream on shutdown, and add the two routes."""
    app = router.app
    kernel = app[KERNEL]
    config = kernel.market_data.config
    app[PRICE_HUB] = PriceHub(
        kernel.quotes,
        kernel.clock,
        flush_interval_ms=config["ws_flush_interval_ms"],
        max_rate_hz=config["ws_max_rate_hz"],
        max_buffer_bytes=config["ws_max_buffer_bytes"],
        heartbeat_s=config["ws_heartbeat_s"],
        max_symbols=config["ws_max_symbols"],
    )
    app[ACCOUNT_HUB] = AccountStateHub(
        kernel.quotes,
        kernel.trading.account_state,
        kernel.market_data.cluster.on_account_change,
        throttle_ms=config["sse_throttle_ms"],
        ping_s=config["sse_ping_s"],
    )

    async def hubs(app: web.Application) -> AsyncIterator[None]:
        """Run the hubs around the kernel's lifetime."""
        await app[PRICE_HUB].start()
        await app[ACCOUNT_HUB].start()
        yield
        await app[ACCOUNT_HUB].stop()
        await app[PRICE_HUB].stop()

    async def close_streams(app: web.Application) -> None:
        """On shutdown: end the SSE streams, close the sockets with 1001."""
        app[ACCOUNT_HUB].close_all()
        await app[PRICE_HUB].close_all(WSCloseCode.GOING_AWAY, "Server shutting down")

    app.cleanup_ctx.append(hubs)
    app.on_shutdown.append(close_streams)
    router.add("GET", WS_PATH, price_socket)
    router.add("GET", SSE_PATH, account_stream, legacy=SSE_LEGACY_PATH)
