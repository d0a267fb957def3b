"""The PostgreSQL connection pool survives connections the server dropped.

``kernel/storage/db.py`` pings a pooled connection on checkout only when it has been
idle for ``PING_IDLE_S``; a connection used more recently goes out unpinged, so if
the server dropped it meanwhile its first statement fails and the pool is renewed.
The server drops them here with ``pg_terminate_backend`` (what a PostgreSQL restart
does to every connection); ``PING_IDLE_S`` is patched instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import Backends
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from support import deposit, register_trader

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage import db as storage
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.trading.positions import MarketOrderJob, OrderRequest

pytestmark = pytest.mark.skipif(
    not Backends.from_environment().is_postgresql, reason="PostgreSQL's connection pool"
)


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """The pool under test and a second one to terminate its connections from."""
    pooled, admin = Database(database_url), Database(database_url)
    try:
        yield pooled, admin
    finally:
        await pooled.dispose()
        await admin.dispose()


async def backend_pid(db: Database) -> int:
    async with db.read() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def two_connections(db: Database) -> set[int]:
    """Check two connections out at once (both stay pooled); their backend pids."""
    entered = asyncio.Barrier(2)

    async def hold() -> int:
        async with db.read() as session:
            pid = int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await entered.wait()
            return pid

    return set(await asyncio.gather(hold(), hold()))


async def terminate(admin: Database, pids: set[int]) -> None:
    async with admin.read() as session:
        for pid in sorted(pids):
            terminated = await session.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
            )
            assert terminated.scalar_one() is True


async def test_an_idle_connection_is_pinged_and_replaced_with_the_whole_pool(
    databases: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled, admin = databases
    dropped = await two_connections(pooled)
    await terminate(admin, dropped)
    monkeypatch.setattr(storage, "PING_IDLE_S", 0.0)  # every pooled connection is idle

    renewed = await two_connections(pooled)

    assert len(renewed) == 2
    assert renewed.isdisjoint(dropped)


async def test_a_recently_used_dropped_connection_fails_one_unit_of_work_only(
    databases: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled, admin = databases
    monkeypatch.setattr(storage, "PING_IDLE_S", 3600.0)  # no pooled connection is pinged
    dropped = await two_connections(pooled)
    await terminate(admin, dropped)

    with pytest.raises(DBAPIError) as failure:
        await backend_pid(pooled)
    assert failure.value.connection_invalidated is True

    # The disconnect invalidated the pool: the other dropped connection is replaced too.
    renewed = await two_connections(pooled)
    assert len(renewed) == 2
    assert renewed.isdisjoint(dropped)


async def test_an_order_worker_batch_survives_its_dropped_connection(
    client: Any, kernel: Kernel, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one order whose connection was dropped (unpinged) runs again on a
    new one instead of failing (``workers.ConnectionLost``)."""
    monkeypatch.setattr(storage, "PING_IDLE_S", 3600.0)
    login, _trader = await register_trader(client, "dropped@test.io")
    await deposit(client, staff, login, "1000")
    await kernel.trading.idle()
    admin = Database(kernel.db.url)
    try:
        async with admin.read() as session:
            others = await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert set(others.scalars()) == {True}
    finally:
        await admin.dispose()

    request = OrderRequest("after-drop", login, "EURUSD", 0, Decimal("0.01"))
    kernel.trading.workers.submit(MarketOrderJob(request, kernel.trading.sink))
    await kernel.trading.idle()

    status = await kernel.trading.request_status("after-drop")
    assert status is not None
    assert (status["status"], status["login"]) == ("executed", login)
