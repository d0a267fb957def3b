"""Account state in memory stays correct with other writers: the row's version.

Each order worker keeps account state in memory and checks it against
``trading_accounts.version`` under the row lock; a write by anyone else (a deposit,
another kernel process) moves the version and the account is reloaded.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from support import DAY_START_MS, deposit, make_kernel, market_order, register_trader, tick
from trading_support import history, positions, send, state

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.kernel.trading.batch import ShardTransaction
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.jobs import Env, FutureJob
from brokerkernel.kernel.trading.positions import MarketOrderJob, OrderRequest
from brokerkernel.kernel.trading.state import AccountState
from brokerkernel.kernel.trading.workers import InternalError

Client = Any
T0 = DAY_START_MS + 7135


async def test_a_deposit_by_another_writer_is_seen_by_the_next_order(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "version@test.io")
    await deposit(client, staff, login, "150")
    first = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    held = kernel.trading.book.get(login)
    assert held is not None and held.balance == Decimal("150")

    await deposit(client, staff, login, "1000")  # the money service writes the row
    second = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.5")

    assert first["status"] == second["status"] == "executed"
    account = await state(client, trader, login)
    assert (account["balance"], account["margin_used"]) == (Decimal("1150"), Decimal("835.79"))


async def test_two_kernel_processes_on_one_database(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    backends: Any,
) -> None:
    if not backends.is_postgresql:
        pytest.skip("several kernel processes need PostgreSQL (SQLite serves one process)")
    (tmp_path / "other").mkdir()
    other = make_kernel(tmp_path / "other", database_url, redis_url, market_data_dir)
    await other.start()
    try:
        tick(other, "EURUSD", "1.39286", "1.39298", T0)
        login, trader = await register_trader(client, "procs@test.io")
        await deposit(client, staff, login, "1000")
        order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.2")
        await send(
            client,
            "PATCH",
            f"/api/customer/orders/{order['order']}/sltp?login={login}",
            trader,
            {"sl": Decimal("1.39000")},
        )
        tick(kernel, "EURUSD", "1.39386", "1.39398", T0 + 1000)
        tick(other, "EURUSD", "1.39386", "1.39398", T0 + 1000)

        # the other process closes half of it, then this process closes the rest
        half = await other.trading.close(login, order["order"], Decimal("0.1"))
        rest = await kernel.trading.close(login, order["order"])
        with pytest.raises(TradingError) as gone:
            await other.trading.close(login, order["order"])

        assert (half["volume"], half["profit"]) == (Decimal("0.1"), Decimal("8.8"))
        assert (rest["volume"], rest["profit"]) == (Decimal("0.1"), Decimal("8.8"))
        assert (gone.value.status, gone.value.detail) == (404, "Position not found")
        assert await positions(client, trader, login) == []
        assert [d["volume"] for d in await history(client, trader, login)] == [
            Decimal("0.1"),
            Decimal("0.1"),
        ]
        # the stale stop-loss the other process still watched finds nothing to close
        tick(other, "EURUSD", "1.38900", "1.38912", T0 + 2000)
        await other.trading.idle()
        account = await state(client, trader, login)
        assert (account["balance"], account["margin_used"]) == (Decimal("1017.6"), 0)
    finally:
        await other.stop()


class _RefusedLate(FutureJob):
    """A broken job: stages an event, then refuses."""

    async def run(self, env: Env, tx: ShardTransaction, account: AccountState | None) -> Any:
        tx.event("test.half_done", {"login": self.login})
        raise TradingError(409, "refused after staging")


async def test_a_broken_job_fails_alone_and_its_batch_mates_still_commit(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "broken@test.io")
    await deposit(client, staff, login, "1000")
    broken = _RefusedLate(login)
    order = MarketOrderJob(
        OrderRequest("same-batch", login, "EURUSD", 0, Decimal("0.1")), kernel.trading.sink
    )

    kernel.trading.workers.submit(order)
    kernel.trading.workers.submit(broken)  # both run in one batch, which rolls back
    await kernel.trading.idle()

    with pytest.raises(InternalError):
        broken.future.result()
    status = await kernel.trading.request_status("same-batch")
    assert status is not None and status["status"] == "executed"
    assert [p["ticket"] for p in await positions(client, trader, login)] == [status["order"]]
    async with kernel.db.read() as session:
        half_done = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.type == "test.half_done")
        )
    assert half_done == 0
