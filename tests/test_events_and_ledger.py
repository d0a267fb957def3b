"""Outbox delivery through the configured bus, and the ledger under concurrent writers."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support import deposit, market_order, register_trader

from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.money.transactions import TransactionRequest
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import LedgerEvent

Client = TestClient[Any, Any]


async def test_committed_events_reach_bus_subscribers_once_in_commit_order(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """In-process bus or Redis Streams, whichever the backend run configures."""
    seen: list[DomainEvent] = []
    kernel.bus.subscribe(seen.append)
    login, trader = await register_trader(client, "bus@test.io")
    await deposit(client, staff, login, "1000")
    order = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.05")
    await client.delete(f"/api/crm/orders/{order['order']}?login={login}", headers=trader)

    await kernel.relay.drain()
    for _ in range(100):  # the Redis consumer reads the stream on its own task
        if len(seen) >= 4:
            break
        await asyncio.sleep(0.05)

    assert [e.type for e in seen] == [
        "account.created",
        "transaction.created",
        "order.opened",
        "order.closed",
    ]
    assert len({e.id for e in seen}) == 4
    opened = seen[2].payload
    assert (
        opened["login"],
        opened["ticket"],
        opened["cmd"],
        opened["volume"],
        opened["price"],
    ) == (
        login,
        order["order"],
        1,
        "0.05",
        "1.39286",
    )


async def test_concurrent_deposits_keep_the_sequence_and_running_totals(
    client: Client, kernel: Kernel
) -> None:
    """20 writers on one account at once: row lock (PostgreSQL) / single writer (SQLite)."""
    login, _ = await register_trader(client, "concurrent@test.io")
    amounts = [Decimal(f"{i}.{i:02d}") for i in range(1, 21)]

    await asyncio.gather(
        *(
            kernel.transactions.create_manual(
                TransactionRequest("DEPOSIT", login, amount, "USD", "APPROVED"), created_by="test"
            )
            for amount in amounts
        )
    )

    async with kernel.db.read() as session:
        events = (
            await session.scalars(
                select(LedgerEvent)
                .where(LedgerEvent.account_id == login)
                .order_by(LedgerEvent.sequence_num)
            )
        ).all()
    state = await kernel.trading.account_state(login)
    assert state is not None
    assert [e.sequence_num for e in events] == list(range(1, 21))
    running = Decimal(0)
    for event in events:
        running += event.balance_delta
        assert event.balance_after == running
    assert running == sum(amounts) == state["balance"] == Decimal("212.10")
