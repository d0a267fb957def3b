"""The order engine's cost per market order: CPU time and, under callgrind, instructions.

``bench_orders.py`` measures throughput and latency through the HTTP API; on a shared
machine its figures move with the host (steal time swung them by 30% and more between
runs). This one measures what a change to the order path costs or saves, in a figure
that does not move: market orders (0.01 lot EURUSD, buy and sell in turn, over
``--accounts`` funded accounts) queued straight on the order workers ``--jobs`` at a
time, each group awaited before the next is queued, on one order worker, so that each
batch (one transaction, one commit, the outbox relay's pass) carries exactly
``--jobs`` orders.
``--jobs 1`` is the low-load case, where the batch's fixed cost (transaction, round
trips, hand-offs) dominates; larger values spread it as a loaded server does.

Measured, after ``--warmup`` orders not counted, over ``--orders`` orders:

* CPU per order: this process's CPU time (all threads) per order, in ms;
* wall time per order (ms);
* with ``--callgrind``: instructions per order. The script runs itself under
  ``valgrind --tool=callgrind``, zeroes the counters when the measured orders start
  and dumps them when they end (``callgrind_control``), and reads the dump's total.
  Instruction counts repeat within ~1% run to run whatever else the machine does, so
  two versions of the code can be compared with a few hundred orders each. Valgrind
  runs the process ~50x slower; the database server (PostgreSQL) is not counted.

Setup, not measured, is ``bench_orders.py``'s: a fresh database (a SQLite file, or a
scratch PostgreSQL database created and dropped), funded accounts, one EURUSD quote.
Each executed order is checked to have its position.

Run from the repository root::

    .venv/bin/python benchmarks/bench_order_cost.py
    .venv/bin/python benchmarks/bench_order_cost.py --callgrind --orders 200 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Figures (2026-11-22, ``--callgrind``, instructions per order). PostgreSQL, one order
per batch (``--orders 200``): 4.245M before decimals were bound as text arrays and
the batch lock and bulk write ran on the asyncpg connection directly, 3.770M / 3.783M
with both, 3.717M with asyncpg's ``execute`` for the one-row array write; 16 orders
per batch (``--orders 320``): 1.423M -> 1.250M (before the last change). SQLite, one
order per batch, code unchanged: 3.680M, 3.501M, 3.414M (its WAL checkpoints and the
outbox relay run on timers, which callgrind's slowdown stretches).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.serve import new_event_loop
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.models import Position

sys.path.insert(0, str(Path(__file__).parent))
from bench_orders import (
    DATA_DIR_HELP,
    TARGETS,
    _accounts,
    _market_order,
    _plugins_toml,
    _serve_api,
    _settings,
)
from common import add_data_dir_option, add_database_url_option, drop_scratch, scratch_database

_CALLGRIND_OUT = "BENCH_ORDER_COST_CALLGRIND_OUT"


def _callgrind(command: str) -> None:
    """Tell the callgrind running this process to zero (``-z``) or dump (``-d``) its
    counters."""
    control = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run(  # noqa: S603 - valgrind's own tool, fixed arguments
        [control, command, str(os.getpid())], check=True, capture_output=True
    )


def _instructions(out: str) -> int:
    """The instruction total of the first dump (``<out>.1``) callgrind wrote."""
    for line in Path(f"{out}.1").read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"{out}.1: no summary line")


async def _measure(args: argparse.Namespace, work: Path) -> int:
    scratch = await scratch_database(args.database_url, work)
    try:
        await asyncio.to_thread(migrate.upgrade, scratch.url)
        config = work / "plugins.toml"
        data_dir = await asyncio.to_thread(args.data_dir.resolve)
        config.write_text(_plugins_toml(data_dir))
        kernel = Kernel(_settings(config, scratch.url, None, work, 1))
        runner = await _serve_api(kernel, 0, reuse_port=False)
        try:
            accounts = await _accounts(kernel, args.accounts)
            workers = kernel.trading.workers
            batches = 0

            async def run(first: int, count: int) -> None:
                nonlocal batches
                for start in range(first, first + count, args.jobs):
                    for index in range(start, min(start + args.jobs, first + count)):
                        workers.submit(_market_order(kernel, accounts, f"cost-{index}", index))
                    before = workers.batches
                    await kernel.trading.idle()
                    batches += workers.batches - before

            await run(0, args.warmup)
            batches = 0
            counted = os.environ.get(_CALLGRIND_OUT)
            if counted:
                _callgrind("-z")
            cpu, wall = time.process_time(), time.perf_counter()
            await run(args.warmup, args.orders)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if counted:
                _callgrind("-d")
            async with kernel.db.read() as session:
                positions = await session.scalar(select(func.count()).select_from(Position))
        finally:
            await runner.cleanup()
    finally:
        await drop_scratch(scratch)
    total = args.warmup + args.orders
    lines = [
        f"bench_order_cost  backend {'postgresql' if scratch.admin_url else 'sqlite'}",
        f"  setup            {args.accounts} accounts; {args.warmup} orders warm-up; "
        f"{args.orders} orders measured, {args.jobs} queued at a time "
        f"({batches} batches: {args.orders / max(batches, 1):.1f} orders each)",
        f"  CPU per order    {cpu * 1000 / args.orders:.3f} ms (this process, all threads)",
        f"  wall per order   {wall * 1000 / args.orders:.3f} ms",
    ]
    if counted:
        instructions = _instructions(counted)
        lines.append(
            f"  instructions     {instructions / args.orders / 1e6:.3f}M per order "
            f"({instructions:,} in all; callgrind)"
        )
    lines += [
        f"  verified         {positions:,}/{total:,} positions",
        f"  {TARGETS}: one core at 5,000 orders/s gives 0.2 ms per order, HTTP included",
    ]
    print("\n".join(lines))
    return 0 if positions == total else 1


def _under_callgrind(argv: list[str], work: Path) -> int:
    """Run this script again under callgrind (counting only the measured orders)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        print("--callgrind needs valgrind and callgrind_control on PATH", file=sys.stderr)
        return 2
    out = str(work / "callgrind.out")
    command = [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        *[arg for arg in argv if arg != "--callgrind"],
    ]
    completed = subprocess.run(  # noqa: S603 - this script again, its own arguments
        command, env={**os.environ, _CALLGRIND_OUT: out}, stderr=subprocess.DEVNULL, check=False
    )
    return completed.returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_database_url_option(parser)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1, help="orders per batch")
    parser.add_argument("--warmup", type=int, default=100, help="orders not measured")
    parser.add_argument("--orders", type=int, default=1000, help="orders measured")
    add_data_dir_option(parser, DATA_DIR_HELP)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions per order under valgrind's callgrind (~50x slower)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.orders < 1:
        parser.error("--jobs and --orders must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-order-cost-") as tmp:
        if args.callgrind:
            return _under_callgrind(argv, Path(tmp))
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_measure(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
