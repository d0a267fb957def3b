"""Domain events with a transactional outbox.

A service calls :func:`record_event` inside its unit of work, so the event row commits
or rolls back with the change that caused it. The :class:`OutboxRelay` then publishes
committed events to the bus (in-process by default, Redis Streams with ``REDIS_URL``)
and marks them published. Delivery is at least once; ``DomainEvent.id`` is stable.

A subscriber takes events one at a time (``bus.subscribe(handler)``) or a whole relay
batch at once (``bus.subscribe_batch(handler)``: one call per batch, e.g. to write
what the batch causes in one transaction). Either way an event counts as delivered
(outbox row published, stream entry acknowledged) only after every handler returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from redis.exceptions import ResponseError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.models import OutboxEvent, new_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from brokerkernel.kernel.clock import MarketClock
    from brokerkernel.kernel.storage.db import Database

log = logging.getLogger(__name__)

EventHandler = Callable[["DomainEvent"], Awaitable[None] | None]
BatchHandler = Callable[[Sequence["DomainEvent"]], Awaitable[None] | None]
_Arg = TypeVar("_Arg")
STREAM = "brokerkernel:events"
CONSUMER_GROUP = "brokerkernel"


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something that happened: ``type`` such as ``order.opened``; JSON ``payload``;
    ``occurred_at`` in market time (UTC)."""

    id: str
    type: str
    payload: dict[str, Any]
    occurred_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "payload": self.payload,
                "occurred_at": self.occurred_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> DomainEvent:
        data = json.loads(raw)
        return cls(
            id=data["id"],
            type=data["type"],
            payload=data["payload"],
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
        )


def event_row(type_: str, payload: dict[str, Any], occurred_at: datetime) -> dict[str, Any]:
    """The ``outbox_events`` values of one event (for writers that insert in bulk)."""
    return {"id": new_id(), "type": type_, "payload": payload, "occurred_at": occurred_at}


def record_event(
    session: AsyncSession, type_: str, payload: dict[str, Any], occurred_at: datetime
) -> None:
    """Stage an event in the caller's unit of work (it commits with the change)."""
    session.add(OutboxEvent(**event_row(type_, payload, occurred_at)))


async def _call(
    handler: Callable[[_Arg], Awaitable[None] | None], arg: _Arg, failure: str, *details: object
) -> None:
    """``handler(arg)``, awaited when it returns an awaitable; an exception is logged
    (``failure`` formatted with the handler and ``details``), never raised."""
    try:
        result = handler(arg)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception(failure, handler, *details)


class Handlers:
    """A bus's subscribers: per-event handlers and batch handlers."""

    def __init__(self) -> None:
        self.each: list[EventHandler] = []
        self.batch: list[BatchHandler] = []

    async def dispatch(self, events: Sequence[DomainEvent]) -> None:
        """Every event to the per-event handlers in order, then the whole batch to each
        batch handler; a handler that raises is logged, the others still run."""
        for event in events:
            for handler in self.each:
                await _call(
                    handler, event, "event handler %r failed on %s %s", event.type, event.id
                )
        if not events:
            return
        for batch_handler in self.batch:
            await _call(
                batch_handler,
                events,
                "batch event handler %r failed on %d events from %s",
                len(events),
                events[0].id,
            )


class EventBus(Protocol):
    def subscribe(self, handler: EventHandler) -> None: ...

    def subscribe_batch(self, handler: BatchHandler) -> None: ...

    async def publish(self, events: Sequence[DomainEvent]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessBus:
    """Delivers events to this process's handlers (the single-process default)."""

    def __init__(self) -> None:
        self._handlers = Handlers()

    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.each.append(handler)

    def subscribe_batch(self, handler: BatchHandler) -> None:
        """``handler`` gets each relay batch (up to the relay's ``batch`` events) whole."""
        self._handlers.batch.append(handler)

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        await self._handlers.dispatch(events)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisStreamBus:
    """Events on a Redis Stream, consumed through one consumer group.

    Every event is handled once across all kernel processes (each process is a
    consumer of the group); a process that dies leaves its pending entries to be
    claimed by the others after ``claim_idle_ms``. The entries of one read are handled
    as one batch (batch handlers get them together) and acknowledged together after
    every handler returned.
    """

    def __init__(self, redis: Redis, maxlen: int = 1_000_000, claim_idle_ms: int = 30_000) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._claim_idle_ms = claim_idle_ms
        self._handlers = Handlers()
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._block_ms = 500

    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.each.append(handler)

    def subscribe_batch(self, handler: BatchHandler) -> None:
        """``handler`` gets the entries of each stream read (up to 200) together."""
        self._handlers.batch.append(handler)

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(STREAM, {"event": event.to_json()}, maxlen=self._maxlen, approximate=True)
            await pipe.execute()

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:  # BUSYGROUP: the group exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def start(self) -> None:
        await self._ensure_group()
        self._task = asyncio.create_task(self._consume(), name="redis-event-consumer")

    async def stop(self) -> None:
        """Let the consumer finish its current read (at most ``block_ms``) and exit.

        It is not cancelled mid-command: that could leave a connection half-read.
        """
        if self._task is not None:
            self._stopping = True
            await self._task
            self._task = None

    async def _consume(self) -> None:
        regroup = False
        while not self._stopping:
            try:
                if regroup:
                    await self._ensure_group()
                    regroup = False
                claimed: Any = await self._redis.xautoclaim(
                    STREAM, CONSUMER_GROUP, self._consumer, self._claim_idle_ms, count=100
                )
                await self._handle(claimed[1])
                batches: Any = await self._redis.xreadgroup(
                    CONSUMER_GROUP, self._consumer, {STREAM: ">"}, count=200, block=self._block_ms
                )
                for _stream, entries in batches or []:
                    await self._handle(entries)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or "no longer exists" in str(exc):
                    # The stream was deleted (e.g. FLUSHDB): recreate it and its group.
                    log.warning("event stream or consumer group vanished; recreating it")
                    regroup = True
                else:
                    log.exception("redis event consumer failed; retrying in 1 s")
                    await asyncio.sleep(1)
            except Exception:
                log.exception("redis event consumer failed; retrying in 1 s")
                await asyncio.sleep(1)

    async def _handle(self, entries: Sequence[tuple[Any, dict[Any, Any]]]) -> None:
        if not entries:
            return
        events = []
        for _entry_id, fields in entries:
            raw = fields.get(b"event") or fields.get("event")
            if raw is not None:
                events.append(DomainEvent.from_json(raw))
        await self._handlers.dispatch(events)
        await self._redis.xack(STREAM, CONSUMER_GROUP, *(entry_id for entry_id, _ in entries))


class OutboxRelay:
    """Moves committed outbox rows to the bus and marks them published.

    Woken after each commit (then waiting ``coalesce_s`` so a burst of commits is
    published in one pass: under load, 50 ms turns a relay transaction per order-worker
    commit into one per ~50 ms, for at most that much added delivery delay) and polling
    every ``poll_s`` seconds for rows left by a crash. On PostgreSQL rows are claimed
    with ``FOR UPDATE SKIP LOCKED`` so several processes relay without publishing a row
    twice.
    """

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        clock: MarketClock,
        batch: int = 500,
        poll_s: float = 1.0,
        coalesce_s: float = 0.05,
    ) -> None:
        self._db = db
        self._bus = bus
        self._clock = clock
        self._batch = batch
        self._poll_s = poll_s
        self._coalesce_s = coalesce_s
        self._wake = asyncio.Event()
        # One pass at a time in this process: SQLite has no row locks, so a drain()
        # called while the background pass runs would read and publish the same rows.
        self._passing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Finish the pass under way (never cancelled mid-transaction), then drain."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await self.drain()

    async def drain(self) -> int:
        """Publish everything committed so far; returns how many events were published.
        Concurrent calls in one process take turns (each row is published once)."""
        total = 0
        async with self._passing:
            while True:
                count = await self._relay_once()
                total += count
                if count < self._batch:
                    return total

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            # Let a burst of commits accumulate, so one relay pass publishes them together.
            await asyncio.sleep(self._coalesce_s)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")

    async def _relay_once(self) -> int:
        # Not a Database.transaction(): its after-commit hook would wake this relay again.
        async with self._db.sessions() as session:
            # Core statements on the session's connection: no ORM entities, statement
            # or result handling per pass.
            query = (
                select(
                    OutboxEvent.seq,
                    OutboxEvent.id,
                    OutboxEvent.type,
                    OutboxEvent.payload,
                    OutboxEvent.occurred_at,
                )
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.seq)
                .limit(self._batch)
            )
            if not self._db.is_sqlite:
                # Held while publishing, so two relays never publish one row.
                query = query.with_for_update(skip_locked=True)
            rows = (await (await session.connection()).execute(query)).all()
            if not rows:
                return 0
            events = [DomainEvent(*row[1:]) for row in rows]
            if self._db.is_sqlite:
                # Hand the single SQLite connection back: in-process handlers may write.
                await session.rollback()
            await self._bus.publish(events)
            await (await session.connection()).execute(
                update(OutboxEvent)
                .where(OutboxEvent.seq.in_([row.seq for row in rows]))
                .values(published_at=self._clock.now())
            )
            await session.commit()
        self.published += len(events)
        return len(events)
