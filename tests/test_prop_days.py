"""Trading-day helpers of prop plans: DST-correct day starts, day names and resets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from brokerkernel.kernel.prop.days import day_start, next_reset, parse_reset, trading_day

PRAGUE = "Europe/Prague"
NEW_YORK = "America/New_York"
US = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "start"),
    [
        (date(2026, 3, 28), utc(2026, 3, 27, 23)),  # CET
        (date(2026, 3, 29), utc(2026, 3, 28, 23)),  # spring forward at 02:00 that day
        (date(2026, 3, 30), utc(2026, 3, 29, 22)),  # CEST
        (date(2026, 10, 25), utc(2026, 10, 24, 22)),  # fall back at 03:00 that day
        (date(2026, 10, 26), utc(2026, 10, 25, 23)),  # CET again
    ],
)
def test_prague_midnight_day_starts_across_both_2026_switches(day: date, start: datetime) -> None:
    assert day_start(day, "00:00", PRAGUE) == start


def test_prague_days_around_the_switches_last_23_and_25_hours() -> None:
    spring = day_start(date(2026, 3, 30), "00:00", PRAGUE) - day_start(
        date(2026, 3, 29), "00:00", PRAGUE
    )
    autumn = day_start(date(2026, 10, 26), "00:00", PRAGUE) - day_start(
        date(2026, 10, 25), "00:00", PRAGUE
    )
    assert (spring, autumn) == (timedelta(hours=23), timedelta(hours=25))


@pytest.mark.parametrize(
    ("at", "day"),
    [
        (utc(2026, 3, 28, 22, 59, 59, 999999), date(2026, 3, 28)),
        (utc(2026, 3, 28, 23), date(2026, 3, 29)),
        (utc(2026, 3, 29, 21, 59, 59, 999999), date(2026, 3, 29)),
        (utc(2026, 3, 29, 22), date(2026, 3, 30)),
        (utc(2026, 10, 25, 22, 59, 59, 999999), date(2026, 10, 25)),
        (utc(2026, 10, 25, 23), date(2026, 10, 26)),
    ],
)
def test_prague_trading_day_of_an_instant_at_the_edges(at: datetime, day: date) -> None:
    assert trading_day(at, "00:00", PRAGUE) == day


def test_prague_next_reset_is_strictly_after_the_instant() -> None:
    assert next_reset(utc(2026, 3, 29, 12), "00:00", PRAGUE) == utc(2026, 3, 29, 22)
    assert next_reset(utc(2026, 3, 29, 22), "00:00", PRAGUE) == utc(2026, 3, 30, 22)
    assert next_reset(utc(2026, 10, 25, 22, 30), "00:00", PRAGUE) == utc(2026, 10, 25, 23)


@pytest.mark.parametrize(
    ("day", "start"),
    [
        (date(2026, 3, 8), utc(2026, 3, 7, 22)),  # opens Saturday 17:00 EST
        (date(2026, 3, 9), utc(2026, 3, 8, 21)),  # opens Sunday 17:00 EDT (DST from 02:00)
        (date(2026, 11, 1), utc(2026, 10, 31, 21)),  # opens Saturday 17:00 EDT
        (date(2026, 11, 2), utc(2026, 11, 1, 22)),  # opens Sunday 17:00 EST (from 02:00)
    ],
)
def test_new_york_17h_day_is_named_after_the_date_it_ends(day: date, start: datetime) -> None:
    assert day_start(day, "17:00", NEW_YORK) == start


def test_new_york_17h_trading_day_and_next_reset_across_the_switches() -> None:
    assert trading_day(utc(2026, 3, 8, 21) - US, "17:00", NEW_YORK) == date(2026, 3, 8)
    assert trading_day(utc(2026, 3, 8, 21), "17:00", NEW_YORK) == date(2026, 3, 9)
    assert trading_day(utc(2026, 11, 1, 22) - US, "17:00", NEW_YORK) == date(2026, 11, 1)
    assert trading_day(utc(2026, 11, 1, 22), "17:00", NEW_YORK) == date(2026, 11, 2)
    # Monday morning in New York belongs to the day that opened Sunday 17:00
    assert trading_day(utc(2026, 3, 9, 13), "17:00", NEW_YORK) == date(2026, 3, 9)
    assert next_reset(utc(2026, 3, 8, 12), "17:00", NEW_YORK) == utc(2026, 3, 8, 21)
    assert next_reset(utc(2026, 11, 1, 12), "17:00", NEW_YORK) == utc(2026, 11, 1, 22)


def test_a_reset_in_the_spring_gap_happens_at_the_wall_clock_after_the_gap() -> None:
    # 02:30 does not exist in Prague on 2026-03-29: the reset is at 03:30 CEST = 01:30Z
    start = day_start(date(2026, 3, 29), "02:30", PRAGUE)
    assert start == utc(2026, 3, 29, 1, 30)
    assert trading_day(start - US, "02:30", PRAGUE) == date(2026, 3, 28)
    assert trading_day(start, "02:30", PRAGUE) == date(2026, 3, 29)
    assert next_reset(utc(2026, 3, 29, 0), "02:30", PRAGUE) == start


def test_a_reset_in_the_autumn_fold_happens_at_its_first_occurrence() -> None:
    # 02:30 happens twice in Prague on 2026-10-25: first at 02:30 CEST = 00:30Z
    start = day_start(date(2026, 10, 25), "02:30", PRAGUE)
    assert start == utc(2026, 10, 25, 0, 30)
    assert day_start(date(2026, 10, 26), "02:30", PRAGUE) == utc(2026, 10, 26, 1, 30)
    # the second 02:30 (01:30Z) is inside the day, not a new one
    assert trading_day(utc(2026, 10, 25, 1, 30), "02:30", PRAGUE) == date(2026, 10, 25)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_reset("24:00")
    with pytest.raises(ValueError):
        trading_day(datetime(2026, 3, 29, 12), "00:00", PRAGUE)  # naive
