"""Tick to committed stop-out event: the risk engine's crossing plus the exact path.

The risk engine's own benchmark (``bench_risk.py``) measures re-marking; this one
measures what a trader sees: from the tick that takes an account below its group's
stop-out level to the stop-out event committed in the database (the crossing, the job
on the account's order worker, the exact Decimal re-check, the close at market, the
ledger/history/stop-out/audit/outbox rows and the commit).

Two runs on a fresh database (SQLite by default, or a scratch PostgreSQL database):

* **one at a time**: ``--accounts`` accounts, each long 0.7 lot EURUSD with a slightly
  different balance, so that a price falling one point per tick takes exactly one
  account below 50% per tick; each tick's latency is measured to that account's
  committed stop-out (p50/p99), ticks published one after the other;
* **all at once**: the same number of fresh accounts, one tick takes them all below
  the level; reported: the time until every stop-out is committed, and stop-outs/s.

Run from the repository root::

    .venv/bin/python benchmarks/bench_stopout.py [--accounts 500] [--database-url ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy import func, select

from brokerkernel.kernel.money.transactions import TransactionRequest
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.trading.models import StopoutEvent
from brokerkernel.kernel.trading.positions import MarketOrderJob, OrderRequest
from brokerkernel.kernel.trading.stopout import StopOutJob

sys.path.insert(0, str(Path(__file__).parent))
from bench_orders import _plugins_toml
from common import (
    add_data_dir_option,
    add_database_url_option,
    drop_scratch,
    first_login,
    percentile,
    register_customers,
    scratch_database,
)

TARGET = "target (issue 3): tick-to-stop-out-event p99 <= 2 ms (at 1,000 ticks/s)"
START_MS = 1_399_420_807_135
ASK = Decimal("1.39298")
POINT = Decimal("0.00001")
VOLUME = Decimal("0.7")


async def _funded(kernel: Kernel, count: int, first: int, base: Decimal) -> list[int]:
    """``count`` accounts with balances ``base``, ``base + 1``, ...; each long 0.7 lot."""
    logins = [first_login(r) for r in await register_customers(kernel, count, "stop", first)]
    for i, login in enumerate(logins):
        await kernel.transactions.create_manual(
            TransactionRequest("DEPOSIT", login, base + i, "USD", "APPROVED"),
            created_by="bench",
        )
    for login in logins:
        request = OrderRequest(f"open-{login}", login, "EURUSD", 0, VOLUME)
        kernel.trading.workers.submit(MarketOrderJob(request, kernel.trading.sink))
    await kernel.trading.idle()
    return logins


def _publish(kernel: Kernel, bid: Decimal, time_ms: int) -> None:
    kernel.quotes.publish(Quote("EURUSD", bid, bid + 12 * POINT, time_ms, "replay"))


async def _stopouts(kernel: Kernel) -> int:
    async with kernel.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(StopoutEvent)) or 0)


async def measure(args: argparse.Namespace, work: Path, url: str) -> list[str]:
    await asyncio.to_thread(migrate.upgrade, url)
    config = work / "plugins.toml"
    data_dir = await asyncio.to_thread(args.data_dir.resolve)
    config.write_text(_plugins_toml(data_dir))
    kernel = Kernel(Settings(config_path=config, database_url=url, var_dir=work, start_feeds=False))
    await kernel.start()
    settled: dict[int, float] = {}
    original = StopOutJob.settle

    def record(job: StopOutJob, outcome: Any) -> None:
        settled[job.login] = time.perf_counter()
        original(job, outcome)

    try:
        time_ms = START_MS
        _publish(kernel, ASK - 12 * POINT, time_ms)
        # margin 0.7 x 100,000 x 1.39298 x 1% = 975.09; stop-out at 50%: equity < 487.545
        one = await _funded(kernel, args.accounts, 0, Decimal(1000))
        # account i (balance 1000 + i) goes below 50% when the bid is below
        # 1.39298 - (512.455 + i) / 70,000: first tick at 1.38565, then a point a tick
        latencies: list[float] = []
        bid = Decimal("1.38566")
        with mock.patch.object(StopOutJob, "settle", record):
            while len(settled) < len(one):
                time_ms += 1
                before = len(settled)
                started = time.perf_counter()
                _publish(kernel, bid, time_ms)
                await kernel.trading.idle()
                if len(settled) > before:
                    latencies.extend(
                        (at - started) * 1000 for at in list(settled.values())[before:]
                    )
                bid -= POINT
            single = await _stopouts(kernel)
            # all at once: fresh accounts, back at the opening price, then one tick down
            time_ms += 1
            _publish(kernel, ASK - 12 * POINT, time_ms)
            many = await _funded(kernel, args.accounts, args.accounts, Decimal(1000))
            settled.clear()
            time_ms += 1
            started = time.perf_counter()
            _publish(kernel, Decimal("1.37000"), time_ms)
            await kernel.trading.idle()
            burst_s = time.perf_counter() - started
        total = await _stopouts(kernel)
    finally:
        await kernel.stop()
    return [
        f"  one at a time    {single:,} stop-outs, one per tick: tick -> committed stop-out "
        f"event p50 {percentile(latencies, 0.5):.2f} ms  p99 {percentile(latencies, 0.99):.2f} ms"
        f"  mean {statistics.fmean(latencies) if latencies else 0:.2f} ms",
        f"  all at once      {total - single:,} of {len(many):,} accounts stopped out by one tick "
        f"in {burst_s * 1000:.0f} ms ({(total - single) / burst_s if burst_s else 0:,.0f} "
        "stop-outs/s)",
    ]


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-stopout-") as tmp:
        work = Path(tmp)
        scratch = await scratch_database(args.database_url, work)
        try:
            lines = await measure(args, work, scratch.url)
        finally:
            await drop_scratch(scratch)
    backend = "postgresql" if scratch.admin_url is not None else "sqlite"
    print("\n".join([f"bench_stopout  backend {backend}", *lines, f"  {TARGET}"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_url_option(parser)
    parser.add_argument("--accounts", type=int, default=300)
    add_data_dir_option(parser)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
