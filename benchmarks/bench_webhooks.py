"""Partner webhook deliveries per second, from the outbox to a local receiver (issue 7).

One process runs a kernel (scratch database, wall clock, the ``webhooks`` plugin with
``allow_private_networks``: the receiver listens on loopback) with
``--subscriptions`` subscriptions of one partner tenant to ``account.breached``; a
second process is the partners' receiver: a raw asyncio HTTP/1.1 protocol on a
loopback port answering 204 (about 20 us of CPU a request, against 65 us for an
aiohttp server, so the figures measure the kernel's side), checking every
``--verify-every``-th message with the official ``standardwebhooks`` library. Two
scenarios, each timed until every delivery is ``succeeded``:

* ``end to end``: ``--events`` events committed to the outbox in one transaction, then
  relay -> event bus -> dispatcher (a batch subscriber: one transaction and one
  multi-row insert per relay batch of up to 500 events) -> worker;
* ``backlog``: ``--backlog`` pending deliveries already in the table (a partner
  endpoint back from an outage), i.e. the worker alone: claims of ``--batch`` rows,
  signing, ``--concurrency`` lanes over the worker's keep-alive pool, one transaction
  recording each pass's attempts (one insert) and outcomes (one UPDATE).

The kernel runs as ``brokerkernel serve`` runs it: on ``serve.new_event_loop`` (uvloop;
``--loop asyncio`` for asyncio's own loop) with the server's collector settings
(``serve.tune_started_gc``: its thresholds, the started kernel frozen). ``--senders N``
(PostgreSQL and ``--redis-url`` only, as ``serve --workers``) starts N-1 more kernel
processes whose workers share the due deliveries through the leases (and whose relays
and Redis consumers share the events); completion is then polled in the table every
20 ms.

Each line prints the wall rate and the CPU per delivery of the kernel processes (all
their threads; PostgreSQL's and Redis's server processes are not counted) and of the
receiver: on a shared machine the CPU figures are the steadier ones. Target: 8,000
deliveries/s. The figures depend on the machine's load: run it alone.

Measured 2026-11-21 with the defaults (2,000 events x 4 subscriptions; a 20,000
backlog) on the 2-core box under a load average of 10-14 (other jobs), so the wall
rates are a fraction of a quiet machine's; CPU per delivery (kernel), with the rate
one free core would give:

* SQLite, uvloop: end to end 160 us (6,230/s), backlog 140 us (7,150/s); wall
  1,990/s and 2,090/s. ``--loop asyncio``: 201 us and 166 us.
* PostgreSQL, one sender: end to end 152 us (6,560/s), backlog 133 us (7,490/s);
  wall 1,090/s and 1,750/s.
* PostgreSQL + Redis, ``--senders 2``: backlog 149 us a delivery over both processes;
  end to end 301 us (each process's idle polling and Redis reads are counted); wall
  800/s and 1,590/s at a load of 14, where a second sender has no free core to use.
* PostgreSQL + Redis, one sender (later, load 2, ``--backlog 4000``): end to end 190
  us with one unpipelined ``PUBLISH`` per event for the account-change notices, 150
  us with one per relay batch (as without Redis); backlog 96-137 us.

The same day before this version (asyncio loop, CPython's default collector, load
1.4): SQLite end to end 161 us, backlog 152 us, wall 4,310/s and 3,960/s. Of a
delivery's CPU, aiohttp's client takes 75-100 us (a POST to this receiver alone).

Later the same day on the quiet machine (load average 0.6-1.1; run-to-run spread
about +-10% on this virtual machine), backlog / end to end, wall:

* SQLite: 8,932/s / 7,635/s (defaults; 111 / 129 us); ``--events 6000 --backlog
  50000``: 7,988/s / 7,092/s (121 / 136 us).
* PostgreSQL, one sender: 8,481/s / 6,617/s (89 / 107 us); 50,000 backlog 6,688/s.
* PostgreSQL + Redis, ``--senders 2``: 9,488/s / 6,754/s (103 / 145 us); 50,000
  backlog 7,747/s and 8,512/s (102-111 us).

On a later machine of the same kind (quiet; ~40% slower per CPU second: the code
before this session's order-path changes measured the same there), backlog / end
to end: SQLite 5,675-6,617/s / 4,914-5,796/s (149-177 / 169-201 us); PostgreSQL,
one sender, 5,669/s / 4,551/s (134 / 159 us); PostgreSQL + Redis, ``--senders 2``,
8,227/s / 5,514/s (123 / 183 us).

Run from the repository root::

    .venv/bin/python benchmarks/bench_webhooks.py [--events 2000] [--backlog 20000]
    .venv/bin/python benchmarks/bench_webhooks.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        [--redis-url redis://127.0.0.1:6379/0 --senders 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from common import Scratch, add_database_url_option, drop_scratch, scratch_database
from redis.asyncio import Redis
from sqlalchemy import func, insert, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from brokerkernel.kernel.events import STREAM, event_row
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.serve import new_event_loop, tune_started_gc, workers_refused
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.plugins.webhooks.catalog import render
from brokerkernel.plugins.webhooks.models import WebhookDelivery, WebhookSubscription
from brokerkernel.plugins.webhooks.service import WebhookService, webhook_service

TARGET = 8000.0
TENANT = "bench"


def _plugins_toml(args: argparse.Namespace) -> str:
    return "\n".join(
        [
            "[kernel]",
            'clock = "wall"',
            'jwt_secret = "bench-webhooks-signing-key-not-a-secret-0123456789"',
            "[plugins.bbook]",
            "[plugins.webhooks]",
            "allow_private_networks = true",  # the receiver listens on loopback
            f"concurrency = {args.concurrency}",
            f"batch_size = {args.batch}",
            f"poll_interval_s = {args.poll}",
            "",
        ]
    )


# ---------------------------------------------------------------------- the receiver


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"


class Endpoint(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the receiver: answers every complete
    request (its body has a ``content-length``) 204, or 400 when the sampled
    signature check fails (the delivery is then not ``succeeded`` and the run fails)."""

    def __init__(self, webhooks: dict[str, Webhook], verify_every: int, seen: list[int]) -> None:
        self._webhooks = webhooks
        self._verify_every = verify_every
        self._seen = seen
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            request_line, *lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines)
            headers = {name.lower(): value for name, value in headers.items()}
            total = end + 4 + int(headers.get("content-length", 0))
            if len(buffer) < total:
                return
            body = bytes(buffer[end + 4 : total])
            del buffer[:total]
            self._seen[0] += 1
            answer = NO_CONTENT
            if self._seen[0] % self._verify_every == 0:
                try:
                    self._webhooks[request_line.split(" ")[1]].verify(body, headers)
                except (KeyError, WebhookVerificationError):
                    answer = BAD_REQUEST
            assert self._transport is not None
            self._transport.write(answer)


def _receiver(port: int, secrets: list[str], verify_every: int, ready: Any) -> None:
    """The partners' endpoint (child process): a raw asyncio protocol answering every
    POST 204 (a few microseconds of CPU per request), verifying every
    ``verify_every``-th message with the official ``standardwebhooks`` library."""
    webhooks = {f"/hooks/{i}": Webhook(secret) for i, secret in enumerate(secrets)}
    seen = [0]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Endpoint(webhooks, verify_every, seen), "127.0.0.1", port
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# ---------------------------------------------------------------------------- bench


async def _counts(kernel: Kernel) -> dict[str, int]:
    async with kernel.db.read() as session:
        rows = await session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
        )
        return {status: count for status, count in rows}


PAYLOAD = {
    "tenant_id": TENANT,
    "account_id": "prop_bench",
    "login": 10001,
    "plan_id": "plan_bench",
    "phase": "phase_1",
    "customer_id": "cus_bench",
    "rule": "max_loss",
    "reason": "equity below the max-loss floor",
    "floor": "90000",
    "equity": "89990.5",
}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Wall time, and CPU time of the kernel processes (this one and the extra
    ``senders``) and of the receiver since ``start``."""

    receiver_pid: int
    senders: list[int]
    wall: float = 0.0
    cpu: float = 0.0
    receiver_cpu: float = 0.0

    def _kernel_cpu(self) -> float:
        return time.process_time() + sum(_cpu_s(pid) for pid in self.senders)

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), self._kernel_cpu()
        self.receiver_cpu = _cpu_s(self.receiver_pid)

    def report(self, label: str, deliveries: int, detail: str = "") -> float:
        wall = time.perf_counter() - self.wall
        ours = (self._kernel_cpu() - self.cpu) / deliveries * 1e6
        theirs = (_cpu_s(self.receiver_pid) - self.receiver_cpu) / deliveries * 1e6
        rate = deliveries / wall
        print(
            f"{label:<10}: {deliveries:>7,} deliveries in {wall:6.2f} s = {rate:>7,.0f}/s; "
            f"CPU per delivery: kernel {ours:4.0f} us (one free core: "
            f"{1e6 / ours:>6,.0f}/s), receiver {theirs:3.0f} us{detail}"
        )
        return rate


async def _until_sent(
    kernel: Kernel, service: WebhookService, expected: int, args: argparse.Namespace
) -> None:
    """Wait until ``expected`` more deliveries succeeded: with one sender, by the
    worker's in-memory counter of attempts (polling costs the database nothing);
    with several, by counting them in the table every 20 ms. Then every one of them
    must be ``succeeded`` in the table."""
    deadline = time.perf_counter() + args.timeout
    goal = (await _counts(kernel)).get("succeeded", 0) + expected
    sent_goal = service.worker.sent + expected
    while time.perf_counter() < deadline:
        if args.senders == 1:
            if service.worker.sent >= sent_goal:
                break
            await asyncio.sleep(0.005)
        else:
            if (await _counts(kernel)).get("succeeded", 0) >= goal:
                break
            await asyncio.sleep(0.02)
    counts = await _counts(kernel)
    if counts.get("succeeded", 0) < goal:
        raise SystemExit(f"deliveries {counts}, expected {goal} succeeded")


async def end_to_end(
    kernel: Kernel, service: WebhookService, meter: Meter, args: argparse.Namespace
) -> float:
    expected = args.events * args.subscriptions
    rows = [event_row("account.breached", PAYLOAD, kernel.clock.now()) for _ in range(args.events)]
    meter.start()
    async with kernel.db.transaction() as session:
        await session.execute(insert(OutboxEvent), rows)
    await _until_sent(kernel, service, expected, args)
    detail = f" ({args.events:,} events x {args.subscriptions} subscriptions)"
    return meter.report("end to end", expected, detail)


async def backlog(
    kernel: Kernel, service: WebhookService, meter: Meter, args: argparse.Namespace
) -> float:
    async with kernel.db.read() as session:
        subscriptions = list(await session.scalars(select(WebhookSubscription.id)))
    now = service.wall.now()
    body = render("standard", "account.breached", "evt", kernel.clock.now(), PAYLOAD)
    rows = [
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "subscription_id": subscriptions[n % len(subscriptions)],
            "event_id": str(uuid.uuid4()),
            "event_type": "account.breached",
            "body": body,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for n in range(args.backlog)
    ]
    async with kernel.db.transaction() as session:
        await session.execute(insert(WebhookDelivery), rows)
    meter.start()
    service.worker.wake()
    await _until_sent(kernel, service, args.backlog, args)
    return meter.report("backlog", args.backlog)


def _loop_factory(args: argparse.Namespace) -> Any:
    """``serve.new_event_loop`` (uvloop, as the server runs), or asyncio's own."""
    return new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop


def _sender(settings: Settings, args: argparse.Namespace, ready: Any) -> None:
    """One more kernel process (child; as another ``brokerkernel serve`` worker, without
    the API): its delivery worker shares the due deliveries through the leases, its
    relay and Redis consumer the events. Runs until terminated."""

    async def run() -> None:
        kernel = Kernel(settings)
        await kernel.start()
        tune_started_gc()
        ready.set()
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=_loop_factory(args)) as runner:
        runner.run(run())


async def _clear_stream(redis_url: str | None) -> None:
    """Drop the event stream of earlier runs (its events would be dispatched again)."""
    if redis_url is not None:
        redis = Redis.from_url(redis_url)
        await redis.delete(STREAM)
        await redis.aclose()


async def main_async(args: argparse.Namespace) -> int:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bk-bench-webhooks-") as tmp:
        work = Path(tmp)
        scratch: Scratch = await scratch_database(args.database_url, work)
        children: list[BaseProcess] = []
        try:
            await asyncio.to_thread(migrate.upgrade, scratch.url)
            await _clear_stream(args.redis_url)
            config = work / "plugins.toml"
            config.write_text(_plugins_toml(args))
            settings = [
                Settings(
                    config_path=config,
                    database_url=scratch.url,
                    redis_url=args.redis_url,
                    var_dir=work / f"var{n}",
                    start_feeds=False,
                    env={},
                )
                for n in range(args.senders)
            ]
            if refused := workers_refused(settings[0], args.senders):
                raise SystemExit(refused.replace("--workers", "--senders"))
            kernel = Kernel(settings[0])
            await kernel.start()
            try:
                service = webhook_service(kernel)
                await kernel.identity.partners.create_tenant(TENANT, "Bench", True)
                secrets = []
                for n in range(args.subscriptions):
                    _view, secret = await service.subscriptions.create(
                        TENANT,
                        "bench",
                        {
                            "url": f"http://127.0.0.1:{args.port}/hooks/{n}",
                            "events": ["account.breached"],
                        },
                        "standard",
                    )
                    secrets.append(secret)
                ready = context.Event()
                receiver = context.Process(
                    target=_receiver,
                    args=(args.port, secrets, args.verify_every, ready),
                    daemon=True,
                )
                children.append(receiver)
                receiver.start()
                if not ready.wait(30):
                    raise SystemExit("the receiver did not start")
                for extra in settings[1:]:
                    ready = context.Event()
                    sender = context.Process(target=_sender, args=(extra, args, ready), daemon=True)
                    children.append(sender)
                    sender.start()
                    if not ready.wait(60):
                        raise SystemExit("a sender did not start")
                tune_started_gc()
                backend = "SQLite" if kernel.db.is_sqlite else "PostgreSQL"
                bus = "Redis Streams" if args.redis_url else "in-process"
                print(
                    f"{backend}, {bus} bus, {args.loop}: {args.senders} sender process(es), "
                    f"concurrency {args.concurrency}, claims of {args.batch}, receiver "
                    f"verifies every {args.verify_every}th message"
                )
                pids = [child.pid for child in children if child.pid is not None]
                meter = Meter(pids[0], pids[1:])
                rate = await end_to_end(kernel, service, meter, args)
                worker_rate = await backlog(kernel, service, meter, args)
            finally:
                await kernel.stop()
        finally:
            for child in children:
                child.terminate()
                child.join()
            await drop_scratch(scratch)
    print(
        f"target: {TARGET:,.0f} deliveries/s from the outbox; measured {rate:,.0f}/s end to "
        f"end, {worker_rate:,.0f}/s by the delivery worker(s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_url_option(parser)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--verify-every", type=int, default=100)
    parser.add_argument("--port", type=int, default=18731)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument(
        "--redis-url", default=None, help="Redis URL (the bus of several sender processes)"
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=1,
        help="kernel processes sending (more than 1 needs PostgreSQL and Redis)",
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory(args)) as runner:
        return runner.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
