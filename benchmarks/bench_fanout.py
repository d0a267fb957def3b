"""WebSocket price fan-out: tick-to-client latency and CPU (issue 8).

One process serves the kernel's API (a scratch SQLite database, market clock on wall
time) and publishes ticks into its quote book at ``--rate`` ticks/s (default 401,
the real XAUUSD peak in ``shared/data/market``), cycling through real quotes of the
five catalog symbols. A second process opens ``--clients`` WebSocket connections to
``/api/customer/ws/prices`` (default 1,000), each subscribed to all five symbols:
``--measured`` of them (default 20) are aiohttp clients that parse every frame and
record latency; the others read and discard their bytes as fast as the kernel hands
them over (a minimal WebSocket handshake on a raw asyncio protocol). Every client
receives every frame; only the sample parses JSON, because parsing clients share the
machine's cores with the server and inflate what they measure. Loopback only.

Latency of a tick = client wall time on receipt - the tick's ``timestamp_ms``, which
the publisher sets to wall time at ``QuoteBook.publish`` (1 ms resolution; same
host, same clock). CPU = user + system seconds of each process over the measured
window, as a share of one core. The run is bounded: ``--warmup`` + ``--seconds``
plus connection setup (well under a minute).

Run from the repository root::

    .venv/bin/python benchmarks/bench_fanout.py [--clients 1000] [--rate 401] [--flush-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import add_data_dir_option, percentile

from brokerkernel.api.app import create_app
from brokerkernel.api.routes.streams import PRICE_HUB
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.storage import migrate
from brokerkernel.plugins.replay.feed import ReplayFeed

TARGET_P99_MS = 50.0
SYMBOLS = ("EURUSD", "XAUUSD", "GBPUSD", "USDJPY", "BTCUSD")
DAYS = {  # a day each symbol's recorded data covers
    "EURUSD": date(2014, 5, 7),
    "XAUUSD": date(2014, 5, 7),
    "GBPUSD": date(2012, 2, 1),
    "USDJPY": date(2013, 2, 4),
    "BTCUSD": date(2017, 9, 3),
}
PATH = "/api/customer/ws/prices?symbols=" + ",".join(SYMBOLS)


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# --- the server process --------------------------------------------------------------------


def real_quotes(data_dir: Path, per_symbol: int = 2000) -> list[Quote]:
    """``per_symbol`` recorded quotes of each symbol, interleaved."""
    series = []
    for symbol in SYMBOLS:
        quotes: list[Quote] = []
        ReplayFeed(data_dir, [symbol], DAYS[symbol], speed="max").step_until(2**62, quotes.append)
        series.append(quotes[:per_symbol])
    return [quote for group in zip(*series, strict=False) for quote in group]


def write_config(directory: Path, data_dir: Path, flush_ms: int) -> Path:
    path = directory / "plugins.toml"
    path.write_text(
        f"""
[kernel]
execution_venue = "bbook"
clock = "wall"
jwt_secret = "benchmark-secret-with-enough-entropy-0123456789"

[kernel.market_data]
ws_flush_interval_ms = {flush_ms}
ws_heartbeat_s = 600
ws_max_buffer_bytes = 4194304

[plugins.replay]
data_dir = "{data_dir.resolve()}"
[plugins.bbook]
[plugins.spread_markup]
[plugins.margin]
"""
    )
    return path


async def publish_ticks(kernel: Kernel, quotes: list[Quote], rate: float, seconds: float) -> int:
    """Publish at ``rate`` ticks/s for ``seconds``; each tick stamped with wall time."""
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    started = loop.time()
    publish = kernel.quotes.publish
    for index in range(count):
        delay = started + index / rate - loop.time()
        await asyncio.sleep(max(0.0, delay))
        base = quotes[index % len(quotes)]
        publish(Quote(base.symbol, base.bid, base.ask, int(time.time() * 1000), "bench"))
    return count


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        settings = Settings(
            config_path=write_config(directory, args.data_dir, args.flush_ms),
            database_url=url,
            var_dir=directory / "var",
            start_feeds=False,
            env={},
        )
        kernel = Kernel(settings)
        app = create_app(kernel)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
        await site.start()
        hub = app[PRICE_HUB]
        quotes = real_quotes(args.data_dir)
        for quote in quotes[: len(SYMBOLS)]:  # a snapshot for every subscription
            kernel.quotes.publish(quote)
        clients = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role=clients",
            f"--port={args.port}",
            f"--clients={args.clients}",
            f"--measured={args.measured}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert clients.stdin is not None and clients.stdout is not None
        try:
            ready = (await asyncio.wait_for(clients.stdout.readline(), 120)).decode().strip()
            assert ready == "READY", ready
            assert hub.clients == args.clients, hub.clients
            await publish_ticks(kernel, quotes, args.rate, args.warmup)
            start_ms = int(time.time() * 1000) + 1
            clients.stdin.write(f"START {start_ms}\n".encode())
            await clients.stdin.drain()
            frames_before, cpu_before, wall_before = hub.frames_sent, cpu_seconds(), time.time()
            published = await publish_ticks(kernel, quotes, args.rate, args.seconds)
            wall = time.time() - wall_before
            (user_after, system_after), (user_before, system_before) = cpu_seconds(), cpu_before
            user, system = user_after - user_before, system_after - system_before
            frames = hub.frames_sent - frames_before
            await asyncio.sleep(0.5)  # let the last frames arrive
            clients.stdin.write(b"STOP\n")
            await clients.stdin.drain()
            result = json.loads(await asyncio.wait_for(clients.stdout.readline(), 60))
        finally:
            if clients.returncode is None:
                clients.kill()
            await clients.wait()
            await runner.cleanup()
    return {
        **result,
        "published": published,
        "rate": published / wall,
        "server_user": user / wall,
        "server_system": system / wall,
        "frames_per_s": frames / wall,
        "dropped_slow": hub.dropped_slow,
    }


# --- the client process --------------------------------------------------------------------


class DrainClient(asyncio.Protocol):
    """A WebSocket client that upgrades, then only counts the bytes it reads."""

    def __init__(self, port: int, ready: asyncio.Future[None]) -> None:
        self._port = port
        self._ready = ready
        self._head = b""
        self.bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if not self._ready.done():
            self._head += data
            if b"\r\n\r\n" in self._head:
                status = self._head.split(b"\r\n", 1)[0]
                if b" 101 " in status:
                    self._ready.set_result(None)
                else:
                    self._ready.set_exception(ConnectionError(status.decode()))


@dataclass
class Measured:
    latencies_ms: list[float] = field(default_factory=list)
    start_ms: int = 2**62
    frames: int = 0


async def measure(ws: aiohttp.ClientWebSocketResponse, state: Measured) -> None:
    async for message in ws:
        now_ms = time.time() * 1000
        body = json.loads(message.data)
        if body["type"] != "prices":
            continue
        state.frames += 1
        for price in body["prices"]:
            if price["timestamp_ms"] >= state.start_ms:
                state.latencies_ms.append(now_ms - price["timestamp_ms"])


async def run_clients(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    state = Measured()
    drains: list[DrainClient] = []
    for first in range(0, args.clients - args.measured, 100):
        batch = range(first, min(first + 100, args.clients - args.measured))
        futures = [loop.create_future() for _ in batch]
        connections = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda future=future: DrainClient(args.port, future), "127.0.0.1", args.port
                )
                for future in futures
            )
        )
        await asyncio.gather(*futures)
        drains += [protocol for _transport, protocol in connections]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = [
        await session.ws_connect(f"http://127.0.0.1:{args.port}{PATH}", max_msg_size=0)
        for _ in range(args.measured)
    ]
    tasks = [asyncio.create_task(measure(ws, state)) for ws in sockets]
    print("READY", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    command = (await reader.readline()).decode().split()
    state.start_ms = int(command[1])
    cpu_before, wall_before = sum(cpu_seconds()), time.time()
    await reader.readline()  # STOP
    cpu = sum(cpu_seconds()) - cpu_before
    wall = time.time() - wall_before
    for task in tasks:
        task.cancel()
    latencies = state.latencies_ms
    result = {
        "ticks_received": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "client_cpu": cpu / wall,
        "drain_bytes": sum(d.bytes for d in drains),
    }
    print(json.dumps(result), flush=True)
    await session.close()


# --- entry point -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("server", "clients"), default="server")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--measured", type=int, default=20)
    parser.add_argument("--rate", type=float, default=401.0, help="ticks/s over all symbols")
    parser.add_argument("--flush-ms", type=int, default=10, help="ws_flush_interval_ms")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=18_765)
    add_data_dir_option(parser)
    args = parser.parse_args()
    if args.role == "clients":
        asyncio.run(run_clients(args))
        return
    result = asyncio.run(serve(args))
    expected = result["published"] * args.measured
    print(
        f"WebSocket fan-out: {args.clients:,} clients x {len(SYMBOLS)} symbols, "
        f"{args.rate:g} ticks/s for {args.seconds:g} s (flush window {args.flush_ms} ms)"
    )
    print(f"ticks published:      {result['published']:,} ({result['rate']:,.0f}/s)")
    print(
        f"deliveries:           {result['published'] * args.clients:,} "
        f"({result['published'] * args.clients / args.seconds:,.0f}/s), "
        f"{result['frames_per_s']:,.0f} frames/s"
    )
    print(
        f"measured clients:     {args.measured} received {result['ticks_received']:,} "
        f"of {expected:,} ticks; slow clients dropped: {result['dropped_slow']}"
    )
    print(
        f"tick-to-client:       p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms   (target p99 <= {TARGET_P99_MS:g} ms)"
    )
    server_cpu = result["server_user"] + result["server_system"]
    print(
        f"CPU (share of a core): server {server_cpu:.0%} (user {result['server_user']:.0%}, "
        f"system {result['server_system']:.0%}), clients {result['client_cpu']:.0%}"
    )
    print(f"server CPU per frame:  {server_cpu / result['frames_per_s'] * 1e6:.1f} µs")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
