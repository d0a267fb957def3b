"""Outbox delivery through the configured bus, and the ledger under concurrent writers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, insert, select
from support import deposit, market_order, register_trader

from brokerkernel.kernel.events import (
    CONSUMER_GROUP,
    STREAM,
    DomainEvent,
    InProcessBus,
    RedisStreamBus,
    event_row,
)
from brokerkernel.kernel.money.transactions import TransactionRequest
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import LedgerEvent, OutboxEvent

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


async def test_a_batch_subscriber_gets_the_batch_before_it_counts_as_delivered(
    client: Client, kernel: Kernel
) -> None:
    """``subscribe_batch``: 5 events committed together reach the handler after every
    per-event handler saw each of them, in commit order, and count as delivered (outbox
    rows published; Redis entries acknowledged) only once the handler returned."""
    calls: list[Any] = []

    async def undelivered(ids: Sequence[str]) -> int:
        if isinstance(kernel.bus, RedisStreamBus):
            pending: Any = await kernel.cache.redis.xpending(STREAM, CONSUMER_GROUP)
            return int(pending["pending"])
        async with kernel.db.read() as session:
            query = select(func.count()).where(
                OutboxEvent.id.in_(ids), OutboxEvent.published_at.is_(None)
            )
            return int(await session.scalar(query) or 0)

    async def on_batch(events: Sequence[DomainEvent]) -> None:
        ids = [e.id for e in events if e.type == "test.batch"]
        if ids:
            calls.append((ids, await undelivered(ids)))

    kernel.bus.subscribe(lambda e: calls.append(e.id) if e.type == "test.batch" else None)
    kernel.bus.subscribe_batch(on_batch)
    rows = [event_row("test.batch", {"n": n}, kernel.clock.now()) for n in range(5)]
    async with kernel.db.transaction() as session:
        await session.execute(insert(OutboxEvent), rows)
    ids = [row["id"] for row in rows]

    await kernel.relay.drain()
    for _ in range(100):  # the Redis consumer reads the stream on its own task
        batches = [call for call in calls if isinstance(call, tuple)]
        if sum(len(batch) for batch, _ in batches) == 5 and await undelivered(ids) == 0:
            break
        await asyncio.sleep(0.05)

    assert [batch_id for batch, _ in batches for batch_id in batch] == ids
    for batch, during in batches:  # still pending while the handler ran
        assert during >= len(batch)
        position = calls.index((batch, during))
        assert calls[position - len(batch) : position] == batch  # per-event handlers first
    if isinstance(kernel.bus, InProcessBus):
        assert calls == [*ids, (ids, 5)]  # one relay batch
    assert await undelivered(ids) == 0


async def test_concurrent_drains_publish_each_committed_event_once(
    client: Client, kernel: Kernel
) -> None:
    """A drain() called while another pass runs (the relay's own task, a test, a
    shutdown) publishes no row twice: SQLite has no row locks, so passes take turns."""
    seen: list[str] = []

    async def handler(event: DomainEvent) -> None:  # a handler that awaits (writes, sends)
        await asyncio.sleep(0.01)
        if event.type == "test.drain":
            seen.append(event.id)

    kernel.bus.subscribe(handler)
    rows = [event_row("test.drain", {"n": n}, kernel.clock.now()) for n in range(20)]
    async with kernel.db.sessions() as session:  # no after-commit wake of the relay
        await session.execute(insert(OutboxEvent), rows)
        await session.commit()

    counts = await asyncio.gather(*(kernel.relay.drain() for _ in range(3)))
    for _ in range(100):  # the Redis consumer reads the stream on its own task
        if len(seen) >= 20:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # room for a duplicate to arrive

    assert sorted(counts) == [0, 0, 20]
    assert seen == [row["id"] for row in rows]


async def test_a_failing_batch_handler_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessBus()
    got: list[Any] = []

    def broken(events: Sequence[DomainEvent]) -> None:
        raise RuntimeError("boom")

    bus.subscribe(lambda event: got.append(event.id))
    bus.subscribe_batch(broken)
    bus.subscribe_batch(lambda events: got.append([e.id for e in events]))
    at = datetime(2026, 11, 21, tzinfo=UTC)
    events = [DomainEvent("e1", "test.a", {}, at), DomainEvent("e2", "test.b", {}, at)]

    with caplog.at_level(logging.ERROR, logger="brokerkernel.kernel.events"):
        await bus.publish(events)
        await bus.publish([])

    assert got == ["e1", "e2", ["e1", "e2"]]
    (record,) = caplog.records
    assert record.getMessage().startswith("batch event handler")
    assert record.getMessage().endswith("failed on 2 events from e1")


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
