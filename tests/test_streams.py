"""Live streams: WebSocket prices (seed section 14) and the account SSE stream
(seed section 32), read by real clients (aiohttp's WebSocket client, httpx-sse)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from httpx_sse import ServerSentEvent, aconnect_sse
from support import (
    DAY_START_MS,
    create_admin,
    deposit,
    make_kernel,
    market_order,
    register_trader,
    staff_headers,
    tick,
)

from brokerkernel.api.app import create_app
from brokerkernel.api.live import PriceHub
from brokerkernel.api.routes.streams import PRICE_HUB
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.pricing import QuoteBook
from brokerkernel.kernel.runtime import Kernel

Client = TestClient[Any, Any]
WS = "/api/customer/ws/prices"
FIRST_TICK = {  # the quote the `client` fixture publishes
    "symbol": "EURUSD",
    "bid": Decimal("1.39286"),
    "ask": Decimal("1.39298"),
    "mid": Decimal("1.39292"),
    "timestamp_ms": DAY_START_MS + 7135,
    "provider": "replay",
}
TIMEOUT_S = 10.0
AppFactory = Callable[[str], Coroutine[Any, Any, tuple[Client, Kernel]]]


def price(symbol: str, bid: str, ask: str, time_ms: int) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "bid": Decimal(bid),
        "ask": Decimal(ask),
        "mid": (Decimal(bid) + Decimal(ask)) / 2,
        "timestamp_ms": time_ms,
        "provider": "replay",
    }


async def receive(ws: aiohttp.ClientWebSocketResponse, *, heartbeats: bool = False) -> Any:
    """The next JSON message (heartbeats skipped unless asked for)."""
    while True:
        message = await ws.receive(timeout=TIMEOUT_S)
        assert message.type is WSMsgType.TEXT, message
        body = json.loads(message.data, parse_float=Decimal)
        if heartbeats or body.get("type") != "heartbeat":
            return body


@pytest.fixture
async def app_with(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> AppFactory:
    """Start the API on a kernel with ``[kernel.market_data]`` settings, an admin and
    the `client` fixture's EURUSD quote."""

    async def start(settings: str) -> tuple[Client, Kernel]:
        extra = f"[kernel.market_data]\n{settings}\n"
        kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=extra)
        client: Client = await aiohttp_client(create_app(kernel))
        await create_admin(kernel)
        tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7135)
        return client, kernel

    return start


# --- WebSocket prices ----------------------------------------------------------------------


async def test_subscribe_answers_a_snapshot_then_every_tick_in_order(
    client: Client, kernel: Kernel
) -> None:
    async with client.ws_connect(WS) as ws:
        await ws.send_json({"action": "subscribe", "symbols": ["EUR/USD", "xauusd"]})
        assert await receive(ws) == {
            "type": "subscribed",
            "symbols": ["EURUSD", "XAUUSD"],
            "subscriptions": ["EURUSD", "XAUUSD"],
            "max_rate_hz": 0,
        }
        assert await receive(ws) == {"type": "snapshot", "prices": [FIRST_TICK]}

        tick(kernel, "EURUSD", "1.39286", "1.39297", DAY_START_MS + 16_860)
        tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 16_900)
        tick(kernel, "EURUSD", "1.39284", "1.39297", DAY_START_MS + 16_962)
        assert await receive(ws) == {
            "type": "prices",
            "prices": [
                price("EURUSD", "1.39286", "1.39297", DAY_START_MS + 16_860),
                price("XAUUSD", "1307.391", "1307.707", DAY_START_MS + 16_900),
                price("EURUSD", "1.39284", "1.39297", DAY_START_MS + 16_962),
            ],
        }
        tick(kernel, "GBPUSD", "1.6900", "1.6902", DAY_START_MS + 17_000)  # not subscribed
        tick(kernel, "EURUSD", "1.39280", "1.39293", DAY_START_MS + 17_210)
        assert await receive(ws) == {
            "type": "prices",
            "prices": [price("EURUSD", "1.39280", "1.39293", DAY_START_MS + 17_210)],
        }

        await ws.send_json({"action": "unsubscribe", "symbols": ["XAUUSD", "BTCUSD"]})
        assert await receive(ws) == {
            "type": "unsubscribed",
            "symbols": ["XAUUSD"],
            "subscriptions": ["EURUSD"],
        }
        tick(kernel, "XAUUSD", "1307.392", "1307.707", DAY_START_MS + 17_300)
        tick(kernel, "EURUSD", "1.39282", "1.39293", DAY_START_MS + 17_405)
        assert await receive(ws) == {
            "type": "prices",
            "prices": [price("EURUSD", "1.39282", "1.39293", DAY_START_MS + 17_405)],
        }
        await ws.send_json({"action": "ping"})
        assert await receive(ws) == {"type": "pong", "timestamp_ms": DAY_START_MS + 17_405}


async def test_a_conflated_client_gets_the_latest_price_at_most_at_its_rate(
    client: Client, kernel: Kernel
) -> None:
    async with client.ws_connect(f"{WS}?symbols=EURUSD,XAUUSD&max_rate_hz=2") as ws:
        assert await receive(ws) == {
            "type": "subscribed",
            "symbols": ["EURUSD", "XAUUSD"],
            "subscriptions": ["EURUSD", "XAUUSD"],
            "max_rate_hz": 2,
        }
        assert await receive(ws) == {"type": "snapshot", "prices": [FIRST_TICK]}
        tick(kernel, "EURUSD", "1.39286", "1.39297", DAY_START_MS + 16_860)
        assert await receive(ws) == {
            "type": "prices",
            "prices": [price("EURUSD", "1.39286", "1.39297", DAY_START_MS + 16_860)],
        }
        # Within the next half second: three ticks, one frame with the latest of each.
        tick(kernel, "EURUSD", "1.39284", "1.39297", DAY_START_MS + 16_962)
        tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 17_000)
        tick(kernel, "EURUSD", "1.39280", "1.39293", DAY_START_MS + 17_210)
        assert await receive(ws) == {
            "type": "prices",
            "prices": [
                price("EURUSD", "1.39280", "1.39293", DAY_START_MS + 17_210),
                price("XAUUSD", "1307.391", "1307.707", DAY_START_MS + 17_000),
            ],
        }


def test_the_server_rate_caps_what_clients_ask_for() -> None:
    def hub(cap: float) -> PriceHub:
        clock = MarketClock(driven=True, start_ms=0)
        return PriceHub(
            QuoteBook(clock),
            clock,
            flush_interval_ms=5,
            max_rate_hz=cap,
            max_buffer_bytes=4096,
            heartbeat_s=15,
            max_symbols=10,
        )

    capped, free = hub(1), hub(0)
    assert [capped.effective_rate(r) for r in (None, 0, 0.5, 5)] == [1, 1, 0.5, 1]
    assert [free.effective_rate(r) for r in (None, 0, 0.5, 5)] == [0, 0, 0.5, 5]


async def test_bad_messages_are_answered_with_errors_and_binary_frames_close(
    client: Client,
) -> None:
    async with client.ws_connect(WS) as ws:
        await ws.send_str("EURUSD please")
        assert await receive(ws) == {"type": "error", "detail": "Messages must be JSON objects"}
        await ws.send_json({"action": "dance", "symbols": [], "colour": "red"})
        assert await receive(ws) == {
            "type": "error",
            "detail": [
                {
                    "loc": ["message"],
                    "msg": "Additional properties are not allowed ('colour' was unexpected)",
                    "type": "additionalProperties",
                },
                {
                    "loc": ["message", "action"],
                    "msg": "'dance' is not one of ['subscribe', 'unsubscribe', 'ping']",
                    "type": "enum",
                },
                {
                    "loc": ["message", "symbols"],
                    "msg": "[] should be non-empty",
                    "type": "minItems",
                },
            ],
        }
        await ws.send_json({"action": "subscribe"})
        assert await receive(ws) == {
            "type": "error",
            "detail": [
                {
                    "loc": ["message", "symbols"],
                    "msg": "'symbols' is a required property",
                    "type": "required",
                }
            ],
        }
        await ws.send_json({"action": "subscribe", "symbols": ["NOPE", "EURUSD"]})
        assert (await receive(ws))["symbols"] == ["EURUSD"]
        assert (await receive(ws))["type"] == "snapshot"
        assert await receive(ws) == {
            "type": "error",
            "detail": "Unknown or inactive symbols",
            "symbols": ["NOPE"],
        }
        await ws.send_bytes(b"\x00")
        closing = await ws.receive(timeout=TIMEOUT_S)
        assert (closing.type, closing.data) == (WSMsgType.CLOSE, 1003)
    async with client.ws_connect(WS) as ws:
        await ws.send_str(" " * (64 * 1024 + 1))
        closing = await ws.receive(timeout=TIMEOUT_S)
        assert (closing.type, closing.data) == (WSMsgType.CLOSE, 1009)


async def test_connections_above_the_symbol_limit_are_refused_symbols(
    app_with: AppFactory,
) -> None:
    client, _kernel = await app_with("ws_max_symbols = 2")
    async with client.ws_connect(f"{WS}?symbols=EURUSD") as ws:
        await receive(ws)
        await receive(ws)
        await ws.send_json({"action": "subscribe", "symbols": ["XAUUSD", "GBPUSD", "BTCUSD"]})
        assert (await receive(ws))["subscriptions"] == ["BTCUSD", "EURUSD"]
        assert await receive(ws) == {
            "type": "error",
            "detail": "At most 2 symbols per connection",
            "symbols": ["GBPUSD", "XAUUSD"],
        }
    response = await client.get(f"{WS}?symbols=A,B,C&max_rate_hz=fast")
    assert response.status == 426
    assert await response.json() == {"detail": "WebSocket upgrade required"}


async def test_heartbeats_arrive_on_schedule(app_with: AppFactory) -> None:
    client, _kernel = await app_with("ws_heartbeat_s = 0.2")
    async with client.ws_connect(WS) as ws:
        assert await receive(ws, heartbeats=True) == {
            "type": "heartbeat",
            "timestamp_ms": DAY_START_MS + 7135,
        }


async def test_a_slow_client_is_dropped_without_slowing_the_others(
    app_with: AppFactory,
) -> None:
    client, kernel = await app_with("ws_max_buffer_bytes = 65536")
    hub = client.server.app[PRICE_HUB]
    async with (
        client.ws_connect(f"{WS}?symbols=EURUSD") as fast,
        client.ws_connect(f"{WS}?symbols=EURUSD") as slow,
    ):
        for ws in (fast, slow):
            await receive(ws)
            await receive(ws)
        received: list[int] = []
        sent: list[int] = []
        wanted = [-1]  # how many ticks the fast client must end up with
        done = asyncio.Event()

        async def read_fast() -> None:
            while True:
                body = await receive(fast)
                received.extend(p["timestamp_ms"] for p in body["prices"])
                if len(received) == wanted[0]:
                    done.set()

        reader = asyncio.create_task(read_fast())
        while hub.dropped_slow == 0 and len(sent) < 200_000:  # ~25 MB: far above the buffers
            for _ in range(250):
                time_ms = DAY_START_MS + 10_000 + len(sent)
                tick(kernel, "EURUSD", "1.39286", "1.39298", time_ms)
                sent.append(time_ms)
            await asyncio.sleep(0.005)
        assert hub.dropped_slow == 1
        assert hub.clients == 1
        sent += [sent[-1] + 1 + offset for offset in range(100)]
        wanted[0] = len(sent)
        for time_ms in sent[-100:]:  # the fast one still gets everything
            tick(kernel, "EURUSD", "1.39286", "1.39298", time_ms)
        await asyncio.wait_for(done.wait(), TIMEOUT_S * 3)
        reader.cancel()
        assert received == sent

        while True:  # the slow one reads what it was sent, then the close frame
            message = await slow.receive(timeout=TIMEOUT_S)
            if message.type is not WSMsgType.TEXT:
                break
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1008, "Slow consumer")


async def test_shutdown_closes_price_sockets_with_going_away(client: Client) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(client.make_url(WS)) as ws:
        await client.close()
        message = await ws.receive(timeout=TIMEOUT_S)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1001, "Server shutting down")


# --- account SSE stream ----------------------------------------------------------------------


@pytest.fixture
async def http(client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the test server (a real HTTP connection)."""
    async with httpx.AsyncClient(base_url=str(client.make_url("")), timeout=TIMEOUT_S) as session:
        yield session


def state_of(event: ServerSentEvent) -> dict[str, Any]:
    assert event.event == "state"
    body: dict[str, Any] = json.loads(event.data, parse_float=Decimal)
    return body


def account(balance: str, **overrides: Any) -> dict[str, Any]:
    """A flat account's section 32 state."""
    state: dict[str, Any] = {
        "balance": Decimal(balance),
        "credit": 0,
        "equity": Decimal(balance),
        "pnl": 0,
        "margin_used": 0,
        "free_margin": Decimal(balance),
        "margin_level": None,
        "gross_exposure": 0,
        "net_exposure": 0,
        "currency": "USD",
    }
    return {**state, **overrides}


async def test_account_stream_starts_with_a_snapshot_and_follows_changes_throttled(
    client: Client, http: httpx.AsyncClient, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "stream@test.io")
    await deposit(client, staff, login, "1000.00")
    url = f"/api/crm/accounts/{login}/stream"
    async with aconnect_sse(http, "GET", url, headers=trader) as source:
        headers = source.response.headers
        assert headers["content-type"] == "text/event-stream"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert len(headers["x-request-id"]) == 36
        events = source.aiter_sse()
        first = await anext(events)
        assert (first.id, first.retry) == ("1", 3000)
        assert state_of(first) == account("1000")

        await deposit(client, staff, login, "250.00")
        second = await anext(events)
        assert second.id == "2"
        assert state_of(second) == account("1250")

        loop = asyncio.get_running_loop()
        arrivals = [loop.time()]
        for _ in range(3):
            await deposit(client, staff, login, "10.00")
        states = []
        while not states or states[-1]["balance"] != Decimal("1280"):
            states.append(state_of(await anext(events)))
            arrivals.append(loop.time())
    assert states[-1] == account("1280")
    gaps = [later - earlier for earlier, later in pairwise(arrivals)]
    assert all(gap >= 0.45 for gap in gaps), gaps  # at most one event per 500 ms


async def test_account_stream_follows_prices_while_positions_are_open(
    client: Client, kernel: Kernel, http: httpx.AsyncClient, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "marked@test.io")
    await deposit(client, staff, login, "10000.00")
    url = f"/api/crm/accounts/{login}/stream"
    async with aconnect_sse(http, "GET", url, headers=trader) as source:
        events = source.aiter_sse()
        assert state_of(await anext(events)) == account("10000")
        order = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
        assert order["status"] == "executed"
        opened = state_of(await anext(events))
        assert opened["margin_used"] > 0 and opened["balance"] == Decimal("10000")

        tick(kernel, "EURUSD", "1.39386", "1.39398", DAY_START_MS + 60_000)  # +100 pips bid
        moved = state_of(await anext(events))
        expected = await kernel.trading.account_state(login)
        assert expected is not None
        assert moved["equity"] == expected["equity"]
        assert moved["pnl"] == expected["pnl"] == moved["equity"] - Decimal("10000")
        assert moved["pnl"] > opened["pnl"]


async def test_account_stream_sends_ping_comments(app_with: AppFactory) -> None:
    client, _kernel = await app_with("sse_ping_s = 0.2")
    login, trader = await register_trader(client, "ping@test.io")
    response = await client.get(f"/api/crm/accounts/{login}/stream", headers=trader)
    assert response.status == 200
    seen = b""
    async with asyncio.timeout(TIMEOUT_S):
        while b"\n: ping\n\n" not in seen:
            seen += await response.content.readany()
    assert seen.startswith(b"id: 1\nevent: state\ndata: {")
    response.close()


async def test_account_stream_checks_access(
    client: Client, http: httpx.AsyncClient, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "owner@test.io")
    _other_login, other = await register_trader(client, "other@test.io")
    url = f"/api/crm/accounts/{login}/stream"

    response = await client.get(url)
    assert response.status == 401
    assert await response.json() == {"detail": "Missing or invalid Authorization header"}
    response = await client.get(url, headers=other)
    assert response.status == 403
    assert await response.json() == {"detail": "Not your trading account"}
    response = await client.get("/api/crm/accounts/999999/stream", headers=staff)
    assert response.status == 404
    assert await response.json() == {"detail": "Account not found"}
    response = await client.get("/api/crm/accounts/ten/stream", headers=staff)
    assert response.status == 422
    response = await client.get(f"{url}?access_token=forged")
    assert response.status == 401
    assert await response.json() == {"detail": "Invalid token"}

    # EventSource cannot send headers: the token may come in the query string.
    token = trader["Authorization"].removeprefix("Bearer ")
    async with aconnect_sse(http, "GET", f"{url}?access_token={token}") as source:
        assert state_of(await anext(source.aiter_sse())) == account("0")
    async with aconnect_sse(http, "GET", f"/accounts/{login}/stream", headers=staff) as source:
        assert source.response.headers["deprecation"] == "true"
        assert source.response.headers["link"] == (
            '</api/crm/accounts/{login}/stream>; rel="successor-version"'
        )
        assert state_of(await anext(source.aiter_sse())) == account("0")


async def test_every_answer_carries_the_cors_headers_streams_included(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    origin = "https://app.example"
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir)
    kernel.kernel_config["cors_origins"] = [origin]
    client: Client = await aiohttp_client(create_app(kernel))
    login, trader = await register_trader(client, "cors@test.io")
    allowed = {"Origin": origin}
    url = f"/api/crm/accounts/{login}/stream"

    stream = await client.get(url, headers={**trader, **allowed})
    first = await stream.content.readuntil(b"\n\n")
    stream.close()
    plain = await client.get("/api/prices", headers=allowed)
    refused = await client.get(url, headers=allowed)
    preflight = await client.options(
        url, headers={**allowed, "Access-Control-Request-Method": "GET"}
    )
    foreign = await client.get("/api/prices", headers={"Origin": "https://other.example"})

    cors = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "X-Request-ID, Retry-After, Deprecation, "
        "X-Idempotent-Replay, X-RateLimit-Limit, X-RateLimit-Remaining",
        "Vary": "Origin",
    }

    def cors_of(response: aiohttp.ClientResponse) -> dict[str, str | None]:
        return {name: response.headers.get(name) for name in cors}

    assert (stream.status, stream.content_type) == (200, "text/event-stream")
    assert first.startswith(b"id: 1\nevent: state\ndata: {")
    assert [r.status for r in (plain, refused, preflight, foreign)] == [200, 401, 204, 200]
    assert [cors_of(r) for r in (stream, plain, refused, preflight)] == [cors] * 4
    assert cors_of(foreign) == dict.fromkeys(cors)
    assert (
        preflight.headers["Access-Control-Allow-Methods"],
        preflight.headers["Access-Control-Allow-Headers"],
        preflight.headers["Access-Control-Max-Age"],
    ) == (
        "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "Authorization, Content-Type, Idempotency-Key, X-Request-ID",
        "600",
    )


async def test_shutdown_ends_account_streams(client: Client) -> None:
    login, trader = await register_trader(client, "bye@test.io")
    async with aiohttp.ClientSession() as session:
        url = client.make_url(f"/api/crm/accounts/{login}/stream")
        async with session.get(url, headers=trader) as response:
            assert response.status == 200
            await response.content.readuntil(b"\n\n")
            await client.close()
            async with asyncio.timeout(TIMEOUT_S):
                assert await response.content.read() == b""  # the server ended the stream


# --- a browser's EventSource ------------------------------------------------------------------

PAGE = """<!doctype html>
<html><body><script>
const source = new EventSource("/api/crm/accounts/LOGIN/stream?access_token=TOKEN");
source.addEventListener("state", (event) => {
  fetch("/test/state", {method: "POST", body: event.data});
});
</script></body></html>
"""


async def test_a_browser_eventsource_receives_the_account_stream(
    kernel: Kernel, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Headless Chromium opens the stream with ``EventSource`` (token in the query) and
    posts every ``state`` event back to the test."""
    browser = shutil.which("chromium")
    if browser is None:
        missing = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("BROKERKERNEL_TEST_BROWSER") == "required":  # set by .ci/run
            pytest.fail(missing)
        pytest.skip(missing)
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    page: dict[str, str] = {}

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(text=page["html"], content_type="text/html")

    async def collect_state(request: web.Request) -> web.Response:
        received.put_nowait(json.loads(await request.text(), parse_float=Decimal))
        return web.Response(status=204)

    app = create_app(kernel)
    app.router.add_get("/test/page", serve_page)
    app.router.add_post("/test/state", collect_state)
    client: Client = await aiohttp_client(app)
    await create_admin(kernel)
    staff = await staff_headers(client)
    login, trader = await register_trader(client, "browser@test.io")
    await deposit(client, staff, login, "100.00")
    token = trader["Authorization"].removeprefix("Bearer ")
    page["html"] = PAGE.replace("LOGIN", str(login)).replace("TOKEN", token)

    process = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        str(client.make_url("/test/page")),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        first = await asyncio.wait_for(received.get(), 60)
        assert first == account("100")
        await deposit(client, staff, login, "50.00")
        second = await asyncio.wait_for(received.get(), TIMEOUT_S)
        assert second == account("150")
    finally:
        process.terminate()
        await process.wait()
