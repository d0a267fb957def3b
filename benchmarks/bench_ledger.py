"""Ledger append throughput with concurrent writers, and payment-callback processing rate.

Scenarios (each runs ``--seconds`` after setup; setup is not measured):

* ``single``: ``--writers`` concurrent tasks, each appending one ledger event per unit
  of work (row lock on the account, ``ledger.append``, commit), on ``--accounts``
  accounts picked round-robin, so writers contend for the same rows.
* ``batched``: the same writers hand their events to one
  :class:`~brokerkernel.kernel.money.batching.LedgerBatcher` in bursts of ``--burst``
  (``post_many``); concurrent bursts are written together, one commit per batch, in
  ``--shards`` parallel writers over disjoint accounts.
* ``callbacks (service)``: ``--callbacks`` PENDING cashier deposits are approved by
  ``--writers`` concurrent tasks through ``PaymentService.apply`` (the code every
  webhook and the internal callback end in: transaction row lock, account lock,
  ledger and audit rows, outbox event, callback log), which group-commits
  concurrent updates through the service's ``LedgerBatcher``; the line gives the
  commits and callbacks per commit.
* ``callbacks (http)``: as above, but as signed Praxis notifications posted to
  ``POST /webhooks/praxis`` of the API served on a loopback port (verification,
  JSON, the signed reply included; the HTTP clients share the process).

The callback lines give the process's CPU seconds per callback (clients, server and
driver; not the PostgreSQL server's). After every scenario ``brokerkernel ledger
check``'s code must find no drift, and the callbacks must have moved each deposit's
money exactly once.

Measured 2026-11-21 on the shared 2-core machine (load average 3-4.5, so wall rates
are depressed and noisy; compare the CPU), ``--seconds 2``, 32 writers, two runs each,
callbacks before -> after group commit of provider updates (32 callbacks per commit):

* SQLite: service 131-142 -> 198-223 callbacks/s, 5.9-6.3 -> 3.4-3.7 ms CPU per
  callback; HTTP 77-96 -> 171-291/s, 8.3-9.0 -> 3.0-4.3 ms.
* PostgreSQL: service 142-168 -> 198-211/s, 4.9-5.7 -> 3.2-3.3 ms CPU; HTTP
  107-144 -> 170-189/s, 6.0-7.6 -> 3.5-3.8 ms.

Part of the remaining CPU is outside the money path: for every ``transaction.updated``
event the trading service reloads the account (``TradingService._refresh``: its row,
then, its version having moved, its state), one reload per callback.

Run from the repository root::

    .venv/bin/python benchmarks/bench_ledger.py
    .venv/bin/python benchmarks/bench_ledger.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

With a PostgreSQL URL, that URL's database is only used to ``CREATE DATABASE
bk_bench_<pid>`` (dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import (
    Scratch,
    add_database_url_option,
    drop_scratch,
    first_login,
    register_customers,
    scratch_database,
)
from sqlalchemy import select

from brokerkernel.api.app import create_app
from brokerkernel.kernel.descriptors import PaymentUpdate
from brokerkernel.kernel.money.batching import LedgerBatcher, Posting
from brokerkernel.kernel.money.reports import check_ledger
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.models import TradingAccount, Transaction, new_id
from brokerkernel.kernel.trading import ledger

TARGETS = (
    "targets (issue 5): 5,000 ledger events/s on PostgreSQL with batching; "
    "callbacks: no target set, the rate is reported"
)
SECRET = "bench-praxis-secret"
AMOUNT = Decimal("10.00")


def _plugins_toml() -> str:
    return "\n".join(
        [
            "[kernel]",
            'clock = "wall"',
            'jwt_secret = "bench-ledger-signing-key-not-a-secret-0123456789"',
            "[plugins.bbook]",
            "[plugins.praxis]",
            'merchant_id = "bench"',
            'application_key = "bench"',
            f'merchant_secret = "{SECRET}"',
            'base_url = "http://127.0.0.1:9"',
            'notification_url = "http://127.0.0.1/webhooks/praxis"',
            'return_url = "http://127.0.0.1/"',
            "",
        ]
    )


async def _accounts(kernel: Kernel, count: int) -> list[int]:
    return [first_login(r) for r in await register_customers(kernel, count, "ledger")]


async def _run(
    writers: int, seconds: float, work: Callable[[int, int], Awaitable[int]]
) -> tuple[int, float]:
    """Call ``work(writer, round)`` in ``writers`` tasks until ``seconds`` pass; returns
    (events written, elapsed s)."""
    deadline = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(index: int) -> None:
        round_ = 0
        while time.perf_counter() < deadline:
            counts[index] += await work(index, round_)
            round_ += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    return sum(counts), time.perf_counter() - start


async def bench_single(kernel: Kernel, logins: list[int], args: argparse.Namespace) -> float:
    now = datetime.now(UTC)

    async def work(writer: int, round_: int) -> int:
        login = logins[(writer + round_ * args.writers) % len(logins)]
        async with kernel.db.transaction() as session:
            account = await ledger.lock_account(session, login)
            assert account is not None
            ledger.append(
                session,
                account,
                "correction_in",
                reference_type="bench",
                reference_id=str(round_),
                idempotency_key=f"single:{writer}:{round_}",
                description="bench single",
                at=now,
                balance_delta=Decimal("0.01"),
            )
        return 1

    events, elapsed = await _run(args.writers, args.seconds, work)
    rate = events / elapsed
    print(f"single   : {events:>8,} events in {elapsed:5.2f} s = {rate:>9,.0f} events/s")
    return rate


async def bench_batched(kernel: Kernel, logins: list[int], args: argparse.Namespace) -> float:
    now = datetime.now(UTC)
    shards = args.shards or (1 if kernel.db.is_sqlite else 4)
    batcher = LedgerBatcher(kernel.db, max_batch=args.max_batch, shards=shards)

    async def work(writer: int, round_: int) -> int:
        postings = [
            Posting(
                login=logins[(writer * args.burst + i + round_) % len(logins)],
                event_type="correction_in",
                reference_type="bench",
                reference_id=str(round_),
                idempotency_key=f"batched:{writer}:{round_}:{i}",
                description="bench batched",
                at=now,
                balance_delta=Decimal("0.01"),
            )
            for i in range(args.burst)
        ]
        await batcher.post_many(postings)
        return len(postings)

    events, elapsed = await _run(args.writers, args.seconds, work)
    rate = events / elapsed
    mean = events / max(batcher.batches, 1)
    print(
        f"batched  : {events:>8,} events in {elapsed:5.2f} s = {rate:>9,.0f} events/s "
        f"({batcher.batches:,} commits of {mean:,.0f} events, {shards} shards)"
    )
    return rate


async def _pending(kernel: Kernel, logins: list[int], count: int, prefix: str) -> list[str]:
    """``count`` PENDING praxis deposits of AMOUNT USD; returns their cashier ids."""
    now = kernel.clock.now()
    async with kernel.db.read() as session:
        rows = await session.execute(
            select(TradingAccount.login, TradingAccount.id).where(TradingAccount.login.in_(logins))
        )
        ids = {login: account_id for login, account_id in rows}
    cashier_ids = [f"{prefix}-{i}" for i in range(count)]
    async with kernel.db.transaction() as session:
        session.add_all(
            Transaction(
                id=new_id(),
                account_id=ids[logins[i % len(logins)]],
                login=logins[i % len(logins)],
                type="DEPOSIT",
                status="PENDING",
                source="cashier",
                amount=AMOUNT,
                currency="USD",
                account_amount=AMOUNT,
                usd_amount=AMOUNT,
                exchange_rate_usd=Decimal(1),
                gate_name="praxis",
                cashier_id=cashier_id,
                created_by="bench",
                created_at=now,
                updated_at=now,
            )
            for i, cashier_id in enumerate(cashier_ids)
        )
    return cashier_ids


async def bench_callbacks_service(
    kernel: Kernel, logins: list[int], args: argparse.Namespace
) -> tuple[float, int]:
    cashier_ids = await _pending(kernel, logins, args.callbacks, "svc")
    queue = list(reversed(cashier_ids))
    batches = kernel.payments.batcher.batches

    async def work(_writer: int, _round: int) -> int:
        if not queue:
            await asyncio.sleep(0)
            return 0
        cashier_id = queue.pop()
        outcome = await kernel.payments.apply(
            PaymentUpdate(cashier_id, "APPROVED", {"bench": True}, cashier_id, AMOUNT, "USD"),
            "praxis",
        )
        assert outcome.outcome == "applied", outcome
        return 1

    done, elapsed, cpu = await _until_empty(args, work, queue)
    rate = done / elapsed
    print(
        f"callbacks: {done:>8,} via service in {elapsed:5.2f} s = {rate:>9,.0f} callbacks/s, "
        f"{cpu / done * 1e6:,.0f} us CPU per callback"
        f"{_commits(kernel, batches, done)}"
    )
    return rate, done


def _commits(kernel: Kernel, batches_before: int, done: int) -> str:
    """`` (N commits of M callbacks)``: the payment service's group commits since
    ``batches_before``."""
    commits = kernel.payments.batcher.batches - batches_before
    return f" ({commits:,} commits of {done / max(commits, 1):,.1f} callbacks)"


def _praxis_notification(cashier_id: str, tid: int) -> tuple[str, str]:
    document = {
        "merchant_id": "bench",
        "application_key": "bench",
        "conversion_rate": "1.000000",
        "customer": {"customer_token": "bench"},
        "session": {"order_id": cashier_id, "intent": "payment"},
        "transaction": {
            "transaction_status": "approved",
            "tid": tid,
            "currency": "USD",
            "amount": int(AMOUNT * 100),
            "conversion_rate": "1.000000",
            "processed_currency": "USD",
            "processed_amount": int(AMOUNT * 100),
        },
        "version": "1.3",
        "timestamp": int(time.time()),
    }
    fields = [
        "bench",
        "bench",
        str(document["timestamp"]),
        "bench",
        cashier_id,
        str(tid),
        "USD",
        str(int(AMOUNT * 100)),
        "1.000000",
        "USD",
        str(int(AMOUNT * 100)),
    ]
    signature = hashlib.sha384(("".join(fields) + SECRET).encode()).hexdigest()
    return json.dumps(document), signature


async def bench_callbacks_http(
    kernel: Kernel, runner: web.AppRunner, logins: list[int], args: argparse.Namespace
) -> tuple[float, int]:
    cashier_ids = await _pending(kernel, logins, args.callbacks, "http")
    queue = list(reversed(list(enumerate(cashier_ids))))
    batches = kernel.payments.batcher.batches
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}")

    async def work(_writer: int, _round: int) -> int:
        if not queue:
            await asyncio.sleep(0)
            return 0
        tid, cashier_id = queue.pop()
        body, signature = _praxis_notification(cashier_id, tid)
        async with session.post(
            "/webhooks/praxis",
            data=body,
            headers={"Content-Type": "application/json", "GT-Authentication": signature},
        ) as response:
            assert response.status == 200, await response.text()
        return 1

    try:
        done, elapsed, cpu = await _until_empty(args, work, queue)
    finally:
        await session.close()
        await site.stop()
    rate = done / elapsed
    print(
        f"callbacks: {done:>8,} via HTTP    in {elapsed:5.2f} s = {rate:>9,.0f} callbacks/s, "
        f"{cpu / done * 1e6:,.0f} us CPU per callback"
        f"{_commits(kernel, batches, done)}"
    )
    return rate, done


async def _until_empty(
    args: argparse.Namespace, work: Callable[[int, int], Awaitable[int]], queue: list[Any]
) -> tuple[int, float, float]:
    """Run ``work`` until ``queue`` is empty (or ``--seconds`` x 4 pass); returns the
    work done, the wall-clock seconds and the CPU seconds of this process (clients,
    server and database driver; a PostgreSQL server's own CPU is not included)."""
    start = time.perf_counter()
    cpu = time.process_time()
    deadline = start + args.seconds * 4
    counts = [0] * args.writers

    async def writer(index: int) -> None:
        round_ = 0
        while queue and time.perf_counter() < deadline:
            counts[index] += await work(index, round_)
            round_ += 1

    await asyncio.gather(*(writer(i) for i in range(args.writers)))
    return sum(counts), time.perf_counter() - start, time.process_time() - cpu


async def _verify(kernel: Kernel, deposits: int) -> None:
    report = await check_ledger(kernel.db)
    if report.drift:
        raise SystemExit("ledger drift:\n" + "\n".join(report.drift[:20]))
    async with kernel.db.read() as session:
        approved = await session.scalars(
            select(Transaction.amount).where(Transaction.status == "APPROVED")
        )
        total = sum(approved, Decimal(0))
    if total != deposits * AMOUNT:
        raise SystemExit(f"callbacks moved {total}, expected {deposits * AMOUNT}")
    print(
        f"check    : {report.accounts} accounts, {report.events:,} ledger rows, "
        f"{report.transactions:,} transactions: no drift; every callback applied once"
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bk-bench-ledger-") as tmp:
        work = Path(tmp)
        scratch: Scratch = await scratch_database(args.database_url, work)
        try:
            await asyncio.to_thread(migrate.upgrade, scratch.url)
            config = work / "plugins.toml"
            config.write_text(_plugins_toml())
            kernel = Kernel(
                Settings(
                    config_path=config,
                    database_url=scratch.url,
                    var_dir=work / "var",
                    start_feeds=False,
                    env={},
                )
            )
            runner = web.AppRunner(create_app(kernel), access_log=None)
            await runner.setup()  # starts the kernel
            try:
                logins = await _accounts(kernel, args.accounts)
                backend = "SQLite" if kernel.db.is_sqlite else "PostgreSQL"
                print(
                    f"{backend}: {args.writers} writers, {args.accounts} accounts, "
                    f"{args.seconds:g} s per scenario, bursts of {args.burst}, "
                    f"batches of at most {args.max_batch}"
                )
                await bench_single(kernel, logins, args)
                await bench_batched(kernel, logins, args)
                _rate, by_service = await bench_callbacks_service(kernel, logins, args)
                _rate, by_http = await bench_callbacks_http(kernel, runner, logins, args)
                await _verify(kernel, by_service + by_http)
            finally:
                await runner.cleanup()  # stops the kernel
        finally:
            await drop_scratch(scratch)
    print(TARGETS)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_url_option(parser)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=50, help="postings per post_many call")
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument(
        "--shards", type=int, default=0, help="batcher shards (default: 1 SQLite, 4 PostgreSQL)"
    )
    parser.add_argument("--callbacks", type=int, default=2000, help="deposits per callback run")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
