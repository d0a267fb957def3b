"""Trading days of a prop plan: which day an instant belongs to, when a day starts.

A plan resets its day at a local time (``"HH:MM"``) in an IANA zone (DOMAIN.md: FTMO
midnight ``Europe/Prague``; futures firms 17:00 ``America/New_York``). Everything here
is pure and DST-correct (:mod:`zoneinfo`); instants are aware UTC in and out.

**Naming a day.** Trading day ``D`` is the half-open interval
``[day_start(D), day_start(D + 1))``. A reset before noon starts day ``D`` on date
``D`` (midnight Prague: day 2026-03-30 starts 2026-03-30 00:00 local); a reset at or
after noon starts it the evening before, so the day is named after the date it mostly
covers (CME convention: the session opening Sunday 17:00 New York is Monday's).

**DST.** A reset at a local time that does not exist on a spring-forward day (02:30
in Europe on 2026-03-29) happens at the same distance after the gap's start as it
would without the gap, i.e. the wall clock's 03:30 (PEP 495 ``fold=0``: the offset in
force before the transition). A reset at a local time that occurs twice on a
fall-back day happens at its **first** occurrence (``fold=0``). Days around a
transition therefore last 23 or 25 hours, never zero, and successive day starts
always increase.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["day_start", "next_reset", "parse_reset", "trading_day", "trading_days_of"]

NOON = time(12, 0)


def parse_reset(reset_time: str | time) -> time:
    """``"HH:MM"`` (24 h) as a :class:`~datetime.time`; ValueError when malformed."""
    if isinstance(reset_time, time):
        return reset_time
    hours, minutes = reset_time.split(":")
    return time(int(hours), int(minutes))


def _zone(zone: ZoneInfo | str) -> ZoneInfo:
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)


def day_start(day: date, reset_time: str | time, zone: ZoneInfo | str) -> datetime:
    """The UTC instant trading day ``day`` starts (the reset that opens it).

    Raises ValueError for a malformed ``reset_time``, ``ZoneInfoNotFoundError`` for an
    unknown zone. Gaps and folds: see the module docstring.
    """
    reset = parse_reset(reset_time)
    local_date = day - timedelta(days=1) if reset >= NOON else day
    return datetime.combine(local_date, reset, _zone(zone)).astimezone(UTC)


def trading_day(at_utc: datetime, reset_time: str | time, zone: ZoneInfo | str) -> date:
    """The trading day (a date named in the plan's zone) that contains ``at_utc``.

    ``at_utc`` must be aware (ValueError otherwise). An instant exactly at a reset
    belongs to the day that reset opens.
    """
    if at_utc.tzinfo is None:
        raise ValueError("at_utc must be an aware datetime")
    zone_info = _zone(zone)
    reset = parse_reset(reset_time)
    candidate = at_utc.astimezone(zone_info).date()
    while at_utc < day_start(candidate, reset, zone_info):
        candidate -= timedelta(days=1)
    while at_utc >= day_start(candidate + timedelta(days=1), reset, zone_info):
        candidate += timedelta(days=1)
    return candidate


def next_reset(at_utc: datetime, reset_time: str | time, zone: ZoneInfo | str) -> datetime:
    """The first reset strictly after ``at_utc`` (UTC): the start of the next day."""
    day = trading_day(at_utc, reset_time, zone)
    return day_start(day + timedelta(days=1), reset_time, zone)


def trading_days_of(
    opened_at: list[datetime] | tuple[datetime, ...],
    reset_time: str | time,
    zone: ZoneInfo | str,
) -> frozenset[date]:
    """The distinct trading days of the given position-open instants (UTC).

    DOMAIN.md: a trading day is a day on which a position was **opened**; a trade held
    over several days counts once (only its open instant is passed here).
    """
    return frozenset(trading_day(at, reset_time, zone) for at in opened_at)
