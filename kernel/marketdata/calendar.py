"""The economic calendar the kernel holds (seed section 30, news blackout rules).

Events (``economic_events``, migration 0008) are scheduled macro releases: name,
country, ``currency`` (ISO 4217, the currency the release moves), ``category``,
``impact`` (``low``, ``medium``, ``high``), ``event_date`` (UTC) and the ``actual`` /
``forecast`` / ``previous`` figures (exact decimals, null when unknown).

:class:`EconomicCalendar` keeps every event in memory, indexed per currency and sorted
by time, so :meth:`~EconomicCalendar.events_between` (called by the news-blackout
rule before orders execute) is a synchronous binary search. It loads at kernel start
and reloads after a change: at once in the process that made it (after its commit),
on the ``calendar.changed`` domain event that the change records in its transaction,
and — for the other processes of a Redis deployment, where one consumer handles each
event — when its periodic check (every ``refresh_s`` seconds: row count and latest
``updated_at``) sees the table changed. Imports are bulk upserts keyed by
(``event_name``, ``currency``, ``event_date``).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base
from brokerkernel.kernel.tasks import cancel_and_wait

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from brokerkernel.kernel.clock import MarketClock
    from brokerkernel.kernel.events import DomainEvent
    from brokerkernel.kernel.storage.db import Database

log = logging.getLogger(__name__)

#: Domain event recorded with every import (payload: created, updated).
CALENDAR_CHANGED = "calendar.changed"
IMPACTS = ("low", "medium", "high")
FIELDS = (
    "id",
    "event_name",
    "country",
    "currency",
    "category",
    "impact",
    "event_date",
    "actual",
    "forecast",
    "previous",
)


class EconomicEvent(Base):
    """One scheduled release (seed section 30, ``GET /calendar``)."""

    __tablename__ = "economic_events"
    __table_args__ = (UniqueConstraint("event_name", "currency", "event_date"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    event_name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    category: Mapped[str | None] = mapped_column(String(128))
    impact: Mapped[str] = mapped_column(String(8))
    event_date: Mapped[datetime] = mapped_column(index=True)
    actual: Mapped[Decimal | None]
    forecast: Mapped[Decimal | None]
    previous: Mapped[Decimal | None]
    updated_at: Mapped[datetime]
    """When the row was last imported (wall clock, UTC)."""


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """An event as the index holds it (immutable copy of the row)."""

    id: int
    event_name: str
    country: str
    currency: str
    category: str | None
    impact: str
    event_date: datetime
    actual: Decimal | None
    forecast: Decimal | None
    previous: Decimal | None

    def to_json(self) -> dict[str, Any]:
        """The seed's fields, in its order."""
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did: rows ``created`` and ``updated``, and the events."""

    created: int
    updated: int
    events: list[CalendarEvent]


def _event(row: EconomicEvent) -> CalendarEvent:
    return CalendarEvent(**{name: getattr(row, name) for name in FIELDS})


class CalendarIndex:
    """Events per currency sorted by ``event_date`` (binary-searched); immutable."""

    def __init__(self, events: Iterable[CalendarEvent] = ()) -> None:
        by_currency: dict[str, list[CalendarEvent]] = {}
        for event in sorted(events, key=lambda e: (e.event_date, e.id)):
            by_currency.setdefault(event.currency, []).append(event)
        self._events = by_currency
        self._times = {c: [e.event_date for e in rows] for c, rows in by_currency.items()}

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._events.values())

    def events_between(
        self,
        currencies: Collection[str] | None,
        start: datetime,
        end: datetime,
        impacts: Collection[str] | None = None,
    ) -> list[CalendarEvent]:
        """Events with ``start <= event_date <= end`` (UTC, both ends inclusive) of the
        ``currencies`` (None: all) and ``impacts`` (None: all), by time then id."""
        found: list[CalendarEvent] = []
        for currency in self._events if currencies is None else currencies:
            times = self._times.get(currency)
            if not times:
                continue
            low = bisect.bisect_left(times, start)
            high = bisect.bisect_right(times, end)
            found += [
                e
                for e in self._events[currency][low:high]
                if impacts is None or e.impact in impacts
            ]
        found.sort(key=lambda e: (e.event_date, e.id))
        return found


class EconomicCalendar:
    """The kernel's calendar: the table, the in-memory index, imports and refresh."""

    def __init__(self, db: Database, clock: MarketClock, refresh_s: float = 60.0) -> None:
        self._db = db
        self._clock = clock
        self._refresh_s = refresh_s
        self._index = CalendarIndex()
        self._stamp: tuple[int, Any] = (0, None)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def events_between(
        self,
        currencies: Collection[str] | None,
        start: datetime,
        end: datetime,
        impacts: Collection[str] | None = None,
    ) -> list[CalendarEvent]:
        """Events from ``start`` to ``end`` inclusive (aware UTC) of ``currencies``
        (ISO codes; None: every currency) and ``impacts`` (None: every impact),
        ordered by time; synchronous (the in-memory index)."""
        return self._index.events_between(currencies, start, end, impacts)

    @staticmethod
    async def _read_stamp(session: AsyncSession) -> tuple[int, Any]:
        """(row count, latest ``updated_at`` as the driver returns it): changes when
        any process imports."""
        row = (
            await session.execute(
                select(func.count(EconomicEvent.id), func.max(EconomicEvent.updated_at))
            )
        ).one()
        return int(row[0]), row[1]

    async def load(self) -> None:
        """Read every event and swap the index in (loads are serialised)."""
        async with self._lock, self._db.read() as session:
            stamp = await self._read_stamp(session)
            rows = (await session.scalars(select(EconomicEvent))).all()
            self._index, self._stamp = CalendarIndex(_event(r) for r in rows), stamp

    async def upsert(self, events: Sequence[Mapping[str, Any]]) -> ImportResult:
        """Insert or update ``events`` (dicts of the seed's fields except ``id``;
        ``event_date`` aware, figures Decimal or None) by (event_name, currency,
        event_date), in one transaction that records ``calendar.changed``; the index
        is reloaded after the commit. A later duplicate key in ``events`` wins.
        Raises IntegrityError when a concurrent import inserted the same key."""
        # Imported here: events imports the models module, which imports this one.
        from brokerkernel.kernel.events import record_event

        now = datetime.now(UTC)  # wall clock: the refresh stamp must move on every import
        latest = {(e["event_name"], e["currency"], e["event_date"]): e for e in events}
        created = updated = 0
        async with self._db.transaction() as session:
            existing = {
                (r.event_name, r.currency, r.event_date): r
                for r in (
                    await session.scalars(
                        select(EconomicEvent).where(
                            EconomicEvent.event_date.in_({key[2] for key in latest})
                        )
                    )
                ).all()
            }
            rows = []
            for key, data in latest.items():
                row = existing.get(key)
                if row is None:
                    row = EconomicEvent(**data, updated_at=now)
                    session.add(row)
                    created += 1
                else:
                    for name, value in data.items():
                        setattr(row, name, value)
                    row.updated_at = now
                    updated += 1
                rows.append(row)
            await session.flush()
            result = [_event(r) for r in rows]
            payload = {"created": created, "updated": updated}
            record_event(session, CALENDAR_CHANGED, payload, self._clock.now())
        await self.load()
        return ImportResult(created, updated, result)

    async def on_event(self, event: DomainEvent) -> None:
        """Bus handler: reload on ``calendar.changed``."""
        if event.type == CALENDAR_CHANGED:
            await self.load()

    async def start(self) -> None:
        """Load, then check for other processes' changes every ``refresh_s``."""
        await self.load()
        self._task = asyncio.create_task(self._watch(), name="economic-calendar-refresh")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None

    async def refresh(self) -> bool:
        """Reload when the table changed since the last load (another process
        imported); True when it reloaded."""
        async with self._db.read() as session:
            changed = await self._read_stamp(session) != self._stamp
        if changed:
            await self.load()
        return changed

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("economic calendar refresh failed; retrying in %s s", self._refresh_s)
