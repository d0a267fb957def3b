"""Market-order throughput and latency through the HTTP API, to a filled position.

One process serves the kernel's API on a loopback port (SQLite by default, or a
scratch PostgreSQL database); a second process runs ``--clients`` concurrent HTTP
clients, each posting market orders (``POST /api/customer/orders``, 0.01 lot EURUSD,
buy and sell in turn) and polling ``GET /api/customer/orders/request/{id}`` (a long
poll of ``--wait-ms``, then every ``--poll-ms``) until the order is ``executed`` — or,
with ``--post-wait-ms``, letting the POST itself wait for the outcome (one request
per order; polled only if still queued).
That is a closed loop: each client sends its next order when the previous one is done,
so latency is clients / rate once the server is saturated. ``--rate R`` runs an open
loop instead: the orders are due on a fixed schedule (R per second over all clients,
each client's evenly spaced), and each order's latency counts from when it was due, so
an answer held up delays, and counts against, the orders due behind it.
Client and server run in separate processes so that the clients' own work does not
slow the server down (on one machine they still share its cores). The server runs
as ``brokerkernel serve`` does: on uvloop (``--loop asyncio`` for the default loop)
with the collector tuned by ``kernel/serve.py`` ``tune_gc``. The clients are a lean
load generator, not an HTTP library: one keep-alive HTTP/1.1 connection each, one
request in flight, requests pre-encoded as bytes, responses read as status code,
``Content-Length`` and JSON body — so they take as little of the shared cores as
possible (wrk is not installed here).

With ``--redis-url`` the kernel uses Redis for its cache and event bus, as a
scale-out deployment does; ``--processes N`` (PostgreSQL and Redis only) runs N
server processes on one port with ``SO_REUSEPORT``, as ``brokerkernel serve
--workers N`` does: the operating system spreads the clients' connections over them,
and the server CPU figure adds up all of them. The Redis logical database the URL
names is a scratch one: it is flushed before and after the run.

Measured:

* orders/s: orders executed whose POST was sent inside the ``--seconds`` window,
  divided by the window (after ``--warmup`` seconds not counted);
* client latency: POST sent (``--rate``: due) -> ``executed`` seen by the polling
  client (ms, p50/p99);
* server CPU: the server process's CPU time (all its threads) while the clients ran,
  per order executed — the figure to compare on a shared machine, where wall-clock
  rates move with the other load;
* server batches: how many jobs each order-worker transaction carried (group commit)
  and how long one batch took (ms, p50/p99), timed in the server;
* engine only: afterwards ``--engine-orders`` orders are queued straight on the
  order workers (no HTTP) and timed to their last commit — the order engine's own
  capacity (batches of ``[kernel.trading] batch_size``);
* afterwards, every executed order must have its position and its ``order_open``
  ledger row in the database.

Durability: PostgreSQL commits are durable; SQLite runs WAL with
``synchronous=NORMAL`` (a commit survives a process crash; a power loss may lose the
last batches). Group commit: one commit per worker batch.

Setup, not measured: a fresh database is migrated; ``--accounts`` customers are
registered through the kernel's registration code (password hashing replaced by one
precomputed argon2 hash, since argon2 costs ~60 ms a call by design), funded with an
approved 100,000 USD deposit each, and given access tokens like the login route
issues; one EURUSD quote is published with the replay feed as clock source, so the
market clock stands still and the quote stays fresh for the whole run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_orders.py
    .venv/bin/python benchmarks/bench_orders.py --post-wait-ms 1000
    .venv/bin/python benchmarks/bench_orders.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/bench_orders.py --profile /tmp/orders.prof   # cProfile
    .venv/bin/python benchmarks/bench_orders.py --ceiling   # bare aiohttp, same clients

Figures (quiet host, 2026-11-22, ``--post-wait-ms 1000``, 64 clients): SQLite
2,349 orders/s at 0.433 ms of server CPU per order, p99 46 ms, batches of 32 jobs;
PostgreSQL 2,023-2,128 orders/s at 0.45-0.49 ms, p99 51 ms, batches of 16 jobs;
open loop at 1,000 orders/s on PostgreSQL p99 20-34 ms; engine only ~5,000 orders/s
on either. The README's *Benchmarks* section has the full table, where the CPU
goes, and why the issue's targets (5,000/s SQLite, 2,000/s PostgreSQL, p99 <= 20 ms)
are out of reach on two cores shared with the load generator.

With a PostgreSQL URL, that URL's database is only used to ``CREATE DATABASE
bk_bench_<pid>`` (dropped at the end); nothing else is touched. Loopback only; the
run is bounded by ``--warmup + --seconds`` plus setup (well under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from common import (
    Scratch,
    add_data_dir_option,
    add_database_url_option,
    drop_scratch,
    first_login,
    percentile,
    register_customers,
    scratch_database,
)
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from brokerkernel.api.app import create_app
from brokerkernel.kernel.identity.service import Client
from brokerkernel.kernel.money.transactions import TransactionRequest
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.serve import new_event_loop, tune_gc
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.models import LedgerEvent, Position
from brokerkernel.kernel.trading.jobs import Job
from brokerkernel.kernel.trading.positions import MarketOrderJob, OrderRequest

TARGETS = "targets (issue 3): 5,000 orders/s on SQLite, 2,000/s on PostgreSQL, p99 <= 20 ms"
QUOTE = Quote("EURUSD", Decimal("1.39286"), Decimal("1.39298"), 1_399_420_807_135, "replay")
DEPOSIT = Decimal("100000")
VOLUME = "0.01"
DATA_DIR_HELP = "market data (the replay feed is configured as clock source, never stepped)"


# ------------------------------------------------------------------------ the clients


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight: the lean load
    generator (no HTTP library: a request is pre-encoded bytes, a response is read
    as status code, ``Content-Length`` and body), so the clients cost the shared
    cores as little as possible."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0 or self._waiter is None:
            return
        head = bytes(buffer[:head_end]).lower()
        at = head.index(b"content-length:") + len(b"content-length:")
        length = int(head[at : head.index(b"\r\n", at)])
        if len(buffer) < head_end + 4 + length:
            return
        body = bytes(buffer[head_end + 4 : head_end + 4 + length])
        del buffer[: head_end + 4 + length]
        self._waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("connection closed"))

    async def request(self, raw: bytes) -> tuple[int, Any]:
        """Send one pre-encoded request; ``(status code, parsed JSON body)``."""
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        status, body = await self._waiter
        return status, json.loads(body)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _http(method: str, path: str, token: str, body: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def _client(
    connection: _Connection,
    accounts: list[tuple[int, str]],
    window: tuple[float, float],
    poll_s: float,
    wait_ms: tuple[int, int],
    schedule: tuple[float, float] | None,
    result: dict[str, Any],
) -> None:
    """Post orders round-robin over ``accounts`` until the window ends; poll each one
    still queued. ``wait_ms`` (POST, poll): > 0 lets the server hold a queued answer
    that long (the POST's: one request per order; the poll's: a long poll).

    ``schedule`` (first send time, interval; seconds, ``perf_counter``): open loop,
    the n-th order is due at first + n * interval, sent then or, if the previous one
    is still outstanding, as soon as it is done; its latency counts from when it was
    due (so a slow answer delays and counts against the orders behind it, instead of
    hiding them). None: closed loop, each order sent when the previous one is done."""
    post_path = (
        f"/api/customer/orders?wait_ms={wait_ms[0]}" if wait_ms[0] else "/api/customer/orders"
    )
    posts = [
        [
            _http(
                "POST",
                post_path,
                token,
                f'{{"login":{login},"symbol":"EURUSD","cmd":{cmd},"volume":{VOLUME}}}',
            )
            for cmd in (0, 1)
        ]
        for login, token in accounts
    ]
    start, end = window
    latencies: list[float] = result["latencies_ms"]
    index = 0
    while True:
        sent = time.perf_counter() if schedule is None else schedule[0] + index * schedule[1]
        if sent >= end:
            break
        if schedule is not None and (idle := sent - time.perf_counter()) > 0:
            await asyncio.sleep(idle)
        token = accounts[index % len(accounts)][1]
        code, status = await connection.request(posts[index % len(accounts)][index % 2])
        index += 1
        result["requests"] += 1
        if code != 200:
            result["errors"][f"POST {code}"] += 1
            continue
        poll_path = f"/api/customer/orders/request/{status['request_id']}?wait_ms={wait_ms[1]}"
        poll = _http("GET", poll_path, token)
        while status.get("status") == "queued":
            _, status = await connection.request(poll)
            result["requests"] += 1
            if status.get("status") == "queued":
                await asyncio.sleep(poll_s)
        done = time.perf_counter()
        measured = start <= sent < end
        if status.get("status") == "executed":
            result["tickets"].append(int(status["order"]))
            if measured:
                result["filled"] += 1
                latencies.append((done - sent) * 1000)
        else:
            result["errors"][str(status.get("reason") or status.get("detail"))] += 1


async def client_main(config: dict[str, Any]) -> dict[str, Any]:
    """Run ``clients`` concurrent HTTP clients (one connection each) and summarise."""
    accounts = [(int(login), str(token)) for login, token in config["accounts"]]
    clients = int(config["clients"])
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(_Connection, config["host"], config["port"]))[1]
        for _ in range(clients)
    ]
    warmup_start = time.perf_counter()
    rate = float(config["rate"])
    # Open loop: client i's orders are due every clients / rate s, the clients' phases
    # spread evenly over one interval.
    interval = clients / rate if rate else 0.0
    start = warmup_start + float(config["warmup"])
    end = start + float(config["seconds"])
    result: dict[str, Any] = {
        "latencies_ms": [],
        "tickets": [],
        "filled": 0,
        "requests": 0,
        "errors": Counter(),
    }
    try:
        await asyncio.gather(
            *(
                _client(
                    connections[i],
                    accounts[i::clients] or accounts,
                    (start, end),
                    float(config["poll_ms"]) / 1000,
                    (int(config["post_wait_ms"]), int(config["wait_ms"])),
                    (warmup_start + i * interval / clients, interval) if rate else None,
                    result,
                )
                for i in range(clients)
            )
        )
    finally:
        for connection in connections:
            connection.close()
    finished = time.perf_counter()
    return {
        "window": [start, end],
        "filled": result["filled"],
        "seconds": end - start,
        "drain_seconds": finished - end,
        "requests": result["requests"],
        "p50_ms": percentile(result["latencies_ms"], 0.50),
        "p99_ms": percentile(result["latencies_ms"], 0.99),
        "max_ms": max(result["latencies_ms"], default=0.0),
        "mean_ms": statistics.fmean(result["latencies_ms"]) if result["latencies_ms"] else 0.0,
        "tickets": result["tickets"],
        "errors": dict(result["errors"]),
    }


# ------------------------------------------------------------------------- the server


def _plugins_toml(data_dir: Path) -> str:
    return "\n".join(
        [
            "[kernel]",
            'clock = "replay"',
            'jwt_secret = "bench-orders-signing-key-not-a-secret-0123456789"',
            "[plugins.replay]",
            f"data_dir = {json.dumps(str(data_dir))}",
            'symbols = ["EURUSD"]',
            'start = "2014-05-07"',
            'speed = "max"',
            "[plugins.bbook]",
            "[plugins.spread_markup]",
            "[plugins.margin]",
            "[kernel.gateway]",  # the clients are load generators: no per-user limit
            "rate_limit_per_user = 0",
            "",
        ]
    )


async def _accounts(kernel: Kernel, count: int) -> list[tuple[int, str]]:
    """Register and fund ``count`` customers; returns ``(login, access token)`` pairs."""
    accounts: list[tuple[int, str]] = []
    for result in await register_customers(kernel, count, "bench"):
        login = first_login(result)
        await kernel.transactions.create_manual(
            TransactionRequest("DEPOSIT", login, DEPOSIT, "USD", "APPROVED"),
            created_by="bench",
        )
        session = await kernel.identity.customer_session(result["id"], Client("bench"))
        accounts.append((login, session["access_token"]))
    return accounts


BatchFn = Callable[[list[Job]], Coroutine[Any, Any, None]]


def _timed(run_batch: BatchFn, samples: list[tuple[float, float, int]]) -> BatchFn:
    """Wrap the workers' ``run_batch`` to record ``(start, duration ms, jobs)`` per
    batch (one transaction, one commit); ``perf_counter`` is the system-wide
    monotonic clock, comparable with the client process's window."""

    async def timed(jobs: list[Job]) -> None:
        started = time.perf_counter()
        try:
            await run_batch(jobs)
        finally:
            samples.append((started, (time.perf_counter() - started) * 1000, len(jobs)))

    return timed


def _market_order(
    kernel: Kernel, accounts: list[tuple[int, str]], request_id: str, index: int
) -> MarketOrderJob:
    """The ``index``-th in-process market order: 0.01 lot EURUSD, buy and sell in turn,
    over ``accounts`` in turn."""
    login = accounts[index % len(accounts)][0]
    request = OrderRequest(request_id, login, "EURUSD", index % 2, Decimal(VOLUME))
    return MarketOrderJob(request, kernel.trading.sink)


async def _engine_only(
    kernel: Kernel, accounts: list[tuple[int, str]], count: int
) -> tuple[int, float, float]:
    """Queue ``count`` market orders straight on the order workers (no HTTP) and time
    them to the last commit: ``(orders executed, seconds, jobs per commit)``."""
    workers = kernel.trading.workers
    batches = workers.batches
    started = time.perf_counter()
    for index in range(count):
        workers.submit(_market_order(kernel, accounts, f"engine-{index}", index))
    await kernel.trading.idle()
    seconds = time.perf_counter() - started
    commits = workers.batches - batches
    executed = 0
    for index in range(count):
        status = await kernel.trading.request_status(f"engine-{index}")
        executed += status is not None and status["status"] == "executed"
    return executed, seconds, count / commits if commits else 0.0


async def _verify(kernel: Kernel, tickets: list[int]) -> tuple[int, int]:
    """How many executed tickets have (a position, an ``order_open`` ledger row)."""
    wanted = {str(t) for t in tickets}
    async with kernel.db.read() as session:
        refs = await session.scalars(
            select(LedgerEvent.reference_id).where(LedgerEvent.event_type == "order_open")
        )
        with_ledger = len(wanted & set(refs.all()))
        open_tickets = await session.scalars(select(Position.ticket))
        with_position = len(set(tickets) & set(open_tickets.all()))
    return with_position, with_ledger


def _settings(
    config: Path, database_url: str, redis_url: str | None, work: Path, workers: int
) -> Settings:
    return Settings(
        config_path=config,
        database_url=database_url,
        redis_url=redis_url,
        var_dir=work,
        start_feeds=False,
        order_workers=workers,
    )


async def _serve(app: web.Application, port: int, reuse_port: bool) -> web.AppRunner:
    """Serve ``app`` on loopback ``port`` (0: any) as ``brokerkernel serve`` does
    (collector tuned; no access log in the bench)."""
    runner = web.AppRunner(tune_gc(app), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _serve_api(kernel: Kernel, port: int, reuse_port: bool) -> web.AppRunner:
    """Serve ``kernel``'s API (:func:`_serve`), with :data:`QUOTE` published."""
    runner = await _serve(create_app(kernel), port, reuse_port)
    kernel.quotes.publish(QUOTE)
    return runner


async def _drive_clients(args: argparse.Namespace, config: dict[str, Any]) -> tuple[Any, float]:
    """Run the client process (:func:`client_main`) with ``config``: its result (None
    if it failed, which is reported) and this process's CPU seconds meanwhile."""
    cpu_before = time.process_time()
    process = await _this_script("--client", args.loop)
    out, _ = await process.communicate(json.dumps(config).encode())
    cpu_s = time.process_time() - cpu_before
    if process.returncode != 0:
        print(f"client process failed with exit code {process.returncode}", file=sys.stderr)
        return None, cpu_s
    return json.loads(out), cpu_s


def _time_batches(kernel: Kernel) -> list[tuple[float, float, int]]:
    """From now on, record each order-worker batch of ``kernel`` (:func:`_timed`)."""
    samples: list[tuple[float, float, int]] = []
    workers = kernel.trading.workers
    workers.run_batch = _timed(workers.run_batch, samples)  # type: ignore[method-assign,assignment]
    return samples


def _client_config(
    args: argparse.Namespace,
    host: str,
    port: int,
    accounts: list[tuple[int, str]],
    post_wait_ms: int,
) -> dict[str, Any]:
    """What the client process (:func:`client_main`) is told on its stdin."""
    return {
        "host": host,
        "port": port,
        "accounts": accounts,
        "clients": args.clients,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "poll_ms": args.poll_ms,
        "wait_ms": args.wait_ms,
        "post_wait_ms": post_wait_ms,
        "rate": args.rate,
    }


async def _this_script(role: str, loop: str) -> asyncio.subprocess.Process:
    """This benchmark in another process in ``role`` (``--client`` or ``--serve``), on
    ``loop``, its stdin and stdout piped to this one."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        role,
        "--loop",
        loop,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _start_server_process(
    args: argparse.Namespace, settings: Settings, port: int
) -> asyncio.subprocess.Process:
    """Start one more server process (``--serve``) on ``port`` (``SO_REUSEPORT``: the
    operating system spreads the clients' connections over the processes, as with
    ``brokerkernel serve --workers N``); returns once it serves."""
    process = await _this_script("--serve", args.loop)
    assert process.stdin is not None and process.stdout is not None
    config = {
        "config": str(settings.config_path),
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
        "work": str(settings.var_dir),
        "workers": settings.order_workers,
        "port": port,
    }
    process.stdin.write(json.dumps(config).encode() + b"\n")
    await process.stdin.drain()
    ready = await asyncio.wait_for(process.stdout.readline(), 60)
    if ready != b"ready\n":
        raise RuntimeError(f"server process did not start: {ready!r}")
    return process


async def _stop_server_process(process: asyncio.subprocess.Process) -> dict[str, Any]:
    """Stop a server process; its report ``{"cpu_s", "samples"}`` (CPU seconds while it
    served, its batches as :func:`_timed` records them)."""
    out, _ = await process.communicate(b"stop\n")
    if process.returncode != 0:
        raise RuntimeError(f"server process failed with exit code {process.returncode}")
    return cast(dict[str, Any], json.loads(out))


async def serve_main() -> dict[str, Any]:
    """One more server process (``--processes``): its kernel and API on the given port
    until told to stop on stdin; returns its report (:func:`_stop_server_process`)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    kernel = Kernel(
        _settings(
            Path(config["config"]),
            config["database_url"],
            config["redis_url"],
            Path(config["work"]),
            int(config["workers"]),
        )
    )
    runner = await _serve_api(kernel, int(config["port"]), reuse_port=True)
    try:
        samples = _time_batches(kernel)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        cpu_before = time.process_time()
        await reader.readline()
        cpu_s = time.process_time() - cpu_before
        await kernel.trading.idle()
    finally:
        await runner.cleanup()
    return {"cpu_s": cpu_s, "samples": samples}


async def _flush_redis(url: str | None) -> None:
    if url is not None:
        client = Redis.from_url(url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()


async def server_main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        work = Path(tmp)
        scratch = await scratch_database(args.database_url, work)
        await _flush_redis(args.redis_url)
        try:
            return await _serve_and_measure(args, work, scratch)
        finally:
            await _flush_redis(args.redis_url)
            await drop_scratch(scratch)


async def _serve_and_measure(args: argparse.Namespace, work: Path, scratch: Scratch) -> int:
    backend = make_url(scratch.url).get_backend_name()
    await asyncio.to_thread(migrate.upgrade, scratch.url)
    config = work / "plugins.toml"
    data_dir = await asyncio.to_thread(args.data_dir.resolve)
    config.write_text(_plugins_toml(data_dir))
    settings = _settings(config, scratch.url, args.redis_url, work, args.workers)
    kernel = Kernel(settings)
    shards = kernel.trading.workers.shards
    runner = await _serve_api(kernel, 0, reuse_port=args.processes > 1)
    others: list[asyncio.subprocess.Process] = []
    try:
        host, port = runner.addresses[0][:2]
        setup_started = time.perf_counter()
        accounts = await _accounts(kernel, args.accounts)
        setup_s = time.perf_counter() - setup_started
        samples = _time_batches(kernel)
        for _ in range(args.processes - 1):
            others.append(await _start_server_process(args, settings, port))
        client_config = _client_config(args, host, port, accounts, args.post_wait_ms)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        result, server_cpu_s = await _drive_clients(args, client_config)
        for other in others:
            report = await _stop_server_process(other)
            server_cpu_s += report["cpu_s"]
            samples.extend((started, ms, jobs) for started, ms, jobs in report["samples"])
        others.clear()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if result is None:
            return 1
        await kernel.trading.idle()
        tickets: list[int] = result["tickets"]
        with_position, with_ledger = await _verify(kernel, tickets)
        start, end = result["window"]
        measured = [(ms, jobs) for started, ms, jobs in samples if start <= started < end]
        server = [ms for ms, _ in measured]
        batch_jobs = [jobs for _, jobs in measured]
        engine = await _engine_only(kernel, accounts, args.engine_orders)
    finally:
        for other in others:
            other.kill()
            await other.wait()
        await runner.cleanup()

    rate = result["filled"] / result["seconds"] if result["seconds"] else 0.0
    shown_url = make_url(scratch.url).render_as_string(hide_password=True)
    lines = [
        f"bench_orders  backend {backend}  ({shown_url})",
        f"  setup            {args.accounts} accounts funded in {setup_s:.1f} s; "
        f"{args.processes} server process(es) of {shards} order workers, "
        f"{args.clients} concurrent HTTP clients "
        f"({f'open loop, {args.rate:,.0f} orders/s offered' if args.rate else 'closed loop'}), "
        "poll every "
        f"{args.poll_ms} ms "
        f"(long poll {args.wait_ms} ms); POST wait_ms {args.post_wait_ms}",
        f"  orders           {result['filled']:,} executed in the {result['seconds']:.1f} s window "
        f"(+{args.warmup:.0f} s warm-up, {len(tickets):,} executed in all)",
        f"  wall seconds     {result['seconds']:.2f}",
        f"  server CPU       {server_cpu_s:.2f} s for {len(tickets):,} orders (warm-up included): "
        f"{server_cpu_s * 1000 / max(1, len(tickets)):.3f} ms per order, all threads "
        f"of the {args.processes} server process(es) "
        f"(= {len(tickets) / server_cpu_s if server_cpu_s else 0:,.0f} orders per CPU second)",
        f"  orders/s         {rate:,.0f}",
        f"  client latency   p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
        f"max {result['max_ms']:.2f} ms  "
        f"({'due' if args.rate else 'POST'} -> executed seen by polling)",
        f"  server batches   {len(server):,} commits, "
        f"{statistics.fmean(batch_jobs) if batch_jobs else 0:.1f} jobs each on average "
        f"(max {max(batch_jobs, default=0)}); one batch p50 {percentile(server, 0.5):.2f} ms  "
        f"p99 {percentile(server, 0.99):.2f} ms",
        f"  http requests    {result['requests']:,} (posts and polls, warm-up included)",
        f"  engine only      {engine[0]:,} orders queued in-process (no HTTP) executed in "
        f"{engine[1]:.2f} s: {engine[0] / engine[1] if engine[1] else 0:,.0f} orders/s, "
        f"{engine[2]:.1f} jobs per commit",
        f"  errors           {result['errors'] or 'none'}",
        f"  verified         {with_position:,}/{len(tickets):,} positions, "
        f"{with_ledger:,}/{len(tickets):,} order_open ledger rows",
        f"  {TARGETS}",
    ]
    print("\n".join(lines))
    ok = with_ledger == len(tickets) and with_position == len(tickets) and not result["errors"]
    return 0 if ok else 1


async def ceiling_main(args: argparse.Namespace) -> int:
    """``--ceiling``: the same clients against a bare aiohttp application (no kernel,
    no middlewares) whose order route reads the JSON body and answers a constant
    ``executed`` status: what one event loop of this machine serves at all, the
    bound on the kernel's HTTP order rate in one process."""
    tickets = count(1)

    async def order(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {"request_id": "ceiling", "status": "executed", "order": next(tickets), **body}
        )

    app = web.Application()
    app.router.add_post("/api/customer/orders", order)
    runner = await _serve(app, 0, reuse_port=False)
    try:
        host, port = runner.addresses[0][:2]
        accounts = [(login, "ceiling") for login in range(1, args.accounts + 1)]
        config = _client_config(args, host, port, accounts, post_wait_ms=0)
        result, server_cpu_s = await _drive_clients(args, config)
    finally:
        await runner.cleanup()
    if result is None:
        return 1
    answered = len(result["tickets"])
    lines = [
        "bench_orders --ceiling  a bare aiohttp order route (no kernel, no middlewares)",
        f"  setup            {args.clients} concurrent HTTP clients "
        f"({f'open loop, {args.rate:,.0f}/s offered' if args.rate else 'closed loop'})",
        f"  requests/s       {result['filled'] / result['seconds']:,.0f}",
        f"  server CPU       {server_cpu_s:.2f} s for {answered:,} requests (warm-up "
        f"included): {server_cpu_s * 1000 / max(1, answered):.3f} ms per request",
        f"  client latency   p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
        f"max {result['max_ms']:.2f} ms",
        f"  errors           {result['errors'] or 'none'}",
        f"  {TARGETS}",
    ]
    print("\n".join(lines))
    return 0 if not result["errors"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_url_option(parser)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="order workers (shards); 0: the kernel's default (SQLite 1, PostgreSQL 2)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: orders/s offered over all clients, each order due on a fixed "
        "schedule and its latency counted from then (0: closed loop, each client posts "
        "as soon as its previous order is done)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="client poll interval")
    parser.add_argument(
        "--wait-ms", type=int, default=1000, help="long poll: wait_ms of each poll (0: plain)"
    )
    parser.add_argument(
        "--post-wait-ms",
        type=int,
        default=0,
        help="wait_ms of each POST: the answer waits that long for the outcome "
        "(one request per order; 0: the seed's queued answer, then polls)",
    )
    parser.add_argument(
        "--engine-orders",
        type=int,
        default=10_000,
        help="orders queued in-process after the HTTP run, to time the order engine alone",
    )
    add_data_dir_option(parser, DATA_DIR_HELP)
    parser.add_argument(
        "--profile",
        default=None,
        help="write a cProfile of the server's event-loop thread while the clients run "
        "to this file (slows the server down)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of server and clients (uvloop: what brokerkernel serve runs)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port, as brokerkernel serve --workers N "
        "(N > 1: PostgreSQL and --redis-url only)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis for the kernel's cache and bus (required by --processes > 1), e.g. "
        "redis://127.0.0.1:6379/14: a scratch logical database, flushed before and after",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="measure the same clients against a bare aiohttp order route instead (no "
        "kernel; the database, Redis, process and profile options do not apply): what "
        "one event loop serves at all on this machine",
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    loop_factory = new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    if args.client or args.serve:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            if args.client:
                result = runner.run(client_main(json.load(sys.stdin)))
            else:
                result = runner.run(serve_main())
        json.dump(result, sys.stdout)
        return 0
    if args.warmup + args.seconds > 40:
        parser.error("--warmup + --seconds must stay within 40 s (bounded run time)")
    if args.processes > 1 and (
        args.redis_url is None
        or args.database_url is None
        or make_url(args.database_url).get_backend_name() != "postgresql"
    ):
        parser.error("--processes > 1 needs a PostgreSQL --database-url and --redis-url")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(ceiling_main(args) if args.ceiling else server_main(args))


if __name__ == "__main__":
    sys.exit(main())
