"""Partner webhook deliveries per second, from the outbox to a local receiver (issue 7).

One process runs a kernel (scratch database, wall clock, the ``webhooks`` plugin) with
``--subscriptions`` subscriptions of one partner tenant to ``account.breached``; a
second process is the partners' receiver (aiohttp on a loopback port, answers 204,
checks every ``--verify-every``-th message with the official ``standardwebhooks``
library). Two scenarios, each timed until every delivery is ``succeeded``:

* ``end to end``: ``--events`` events committed to the outbox in one transaction, then
  relay -> event bus -> dispatcher (one ``webhook_deliveries`` row per subscription,
  one transaction per event: the bus hands events over one at a time) -> worker;
* ``backlog``: ``--backlog`` pending deliveries already in the table (a partner
  endpoint back from an outage), i.e. the worker alone: claims of ``--batch`` rows,
  signing, at most ``--concurrency`` requests in flight over the kernel's shared
  keep-alive session, one transaction recording each pass's outcomes and attempts.

Target: 8,000 deliveries/s. The figures depend on the machine's load: run it alone.

Run from the repository root::

    .venv/bin/python benchmarks/bench_webhooks.py [--events 2000] [--backlog 20000]
    .venv/bin/python benchmarks/bench_webhooks.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from bench_orders import Scratch, _admin, _scratch_database
from sqlalchemy import func, insert, select
from standardwebhooks import Webhook

from brokerkernel.kernel.events import event_row
from brokerkernel.kernel.runtime import Kernel, Settings
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
            f"concurrency = {args.concurrency}",
            f"batch_size = {args.batch}",
            f"poll_interval_s = {args.poll}",
            "",
        ]
    )


# ---------------------------------------------------------------------- the receiver


def _receiver(port: int, secrets: list[str], verify_every: int, ready: Any) -> None:
    """The partners' endpoint (child process): 204 to every POST; verifies a sample."""
    webhooks = {f"/hooks/{i}": Webhook(secret) for i, secret in enumerate(secrets)}
    seen = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal seen
        body = await request.read()
        seen += 1
        if seen % verify_every == 0:
            webhooks[request.path].verify(body, dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{n}", handle)
    ready.set()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


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


async def _until_sent(
    kernel: Kernel, service: WebhookService, expected: int, start: float, limit_s: float
) -> float:
    """Seconds from ``start`` until the worker made ``expected`` more attempts (its
    in-memory counter, so polling costs the database nothing); then every one of
    them must be ``succeeded`` in the table."""
    deadline = start + limit_s
    goal = service.worker.sent + expected
    while time.perf_counter() < deadline:
        if service.worker.sent >= goal:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    counts = await _counts(kernel)
    if counts.get("succeeded", 0) < goal:
        raise SystemExit(f"deliveries {counts}, expected {goal} succeeded after {elapsed:.1f} s")
    return elapsed


async def end_to_end(kernel: Kernel, service: WebhookService, args: argparse.Namespace) -> float:
    expected = args.events * args.subscriptions
    rows = [event_row("account.breached", PAYLOAD, kernel.clock.now()) for _ in range(args.events)]
    start = time.perf_counter()
    async with kernel.db.transaction() as session:
        await session.execute(insert(OutboxEvent), rows)
    elapsed = await _until_sent(kernel, service, expected, start, args.timeout)
    rate = expected / elapsed
    print(
        f"end to end: {expected:>7,} deliveries in {elapsed:6.2f} s = {rate:>8,.0f}/s "
        f"({args.events:,} events x {args.subscriptions} subscriptions)"
    )
    return rate


async def backlog(kernel: Kernel, service: WebhookService, args: argparse.Namespace) -> float:
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
    start = time.perf_counter()
    service.worker.wake()
    elapsed = await _until_sent(kernel, service, args.backlog, start, args.timeout)
    rate = args.backlog / elapsed
    print(f"backlog   : {args.backlog:>7,} deliveries in {elapsed:6.2f} s = {rate:>8,.0f}/s")
    return rate


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bk-bench-webhooks-") as tmp:
        work = Path(tmp)
        scratch: Scratch = await _scratch_database(args.database_url, work)
        receiver: multiprocessing.Process | None = None
        try:
            await asyncio.to_thread(migrate.upgrade, scratch.url)
            config = work / "plugins.toml"
            config.write_text(_plugins_toml(args))
            kernel = Kernel(
                Settings(
                    config_path=config,
                    database_url=scratch.url,
                    var_dir=work / "var",
                    start_feeds=False,
                    env={},
                )
            )
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
                context = multiprocessing.get_context("spawn")
                ready = context.Event()
                receiver = context.Process(
                    target=_receiver,
                    args=(args.port, secrets, args.verify_every, ready),
                    daemon=True,
                )
                receiver.start()
                ready.wait(10)
                await asyncio.sleep(0.5)  # the child binds its port after setting ready
                backend = "SQLite" if kernel.db.is_sqlite else "PostgreSQL"
                print(
                    f"{backend}: concurrency {args.concurrency}, claims of {args.batch}, "
                    f"receiver verifies every {args.verify_every}th message"
                )
                rate = await end_to_end(kernel, service, args)
                worker_rate = await backlog(kernel, service, args)
            finally:
                await kernel.stop()
        finally:
            if receiver is not None:
                receiver.terminate()
                receiver.join()
            if scratch.name is not None and scratch.admin_url is not None:
                await _admin(
                    scratch.admin_url, f'DROP DATABASE IF EXISTS "{scratch.name}" WITH (FORCE)'
                )
    print(
        f"target: {TARGET:,.0f} deliveries/s from the outbox; measured {rate:,.0f}/s end to "
        f"end, {worker_rate:,.0f}/s by the delivery worker"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL admin URL (default SQLite)"
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--verify-every", type=int, default=100)
    parser.add_argument("--port", type=int, default=18731)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--poll", type=float, default=0.05)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
