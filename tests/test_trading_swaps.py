"""Swaps at the daily rollover (DOMAIN.md swaps; seed section 16 group swap settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from support import (
    DAY_START_MS,
    create_admin,
    deposit,
    make_kernel,
    manual_quote,
    market_order,
    register_trader,
    staff_headers,
    tick,
    write_config,
)
from trading_support import create_group, get, history, ledger, move_account, positions, send

from brokerkernel.api.app import create_app
from brokerkernel.kernel.config import ConfigError
from brokerkernel.kernel.pricing import ConversionUnavailable
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP_ID
from brokerkernel.kernel.trading.swaps import RolloverSchedule, nights

Client = Any
DAY_MS = 86_400_000
# 2014-05-07 is a Wednesday; the default rollover is 00:00 UTC.
THU = DAY_START_MS + DAY_MS
FRI = THU + DAY_MS


async def _swapping_trader(
    client: Client,
    staff: dict[str, str],
    email: str,
    swap: tuple[str, str, str],
    group_id: str = DEFAULT_GROUP_ID,
) -> tuple[int, dict[str, str]]:
    """Set the group's EURUSD ``swap`` (swap_type, swap_long, swap_short), then register
    a trader in that group with 10,000 USD: ``(login, trader headers)``."""
    swap_type, swap_long, swap_short = swap
    rates = {
        "swap_type": swap_type,
        "swap_long": Decimal(swap_long),
        "swap_short": Decimal(swap_short),
    }
    status, body = await send(
        client,
        "PUT",
        f"/api/platform/groups/{group_id}/swap-config",
        staff,
        {"instruments": {"EURUSD": rates}},
    )
    assert status == 200, body
    login, trader = await register_trader(client, email)
    if group_id != DEFAULT_GROUP_ID:
        await move_account(client, staff, login, group_id)
    await deposit(client, staff, login, "10000")
    return login, trader


def _day(time_ms: int, bid: str = "1.39286", ask: str = "1.39298") -> tuple[str, str, int]:
    return bid, ask, time_ms + 1000


async def _swaps(client: Client, staff: dict[str, str], login: int) -> list[tuple[Any, ...]]:
    return [
        (e["balance_delta"], e["reference_id"], e["created_at"][:10])
        for e in await ledger(client, staff, login)
        if e["event_type"] == "swap"
    ]


async def test_points_swap_is_14_usd_a_night_and_42_on_the_triple_day(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """DOMAIN.md: 2 lots EURUSD, point 0.00001 -> 2 USD a point; +7 points = 14 USD a
    night, 42 on the triple day (Wednesday here)."""
    login, trader = await _swapping_trader(client, staff, "points@test.io", ("points", "7", "-3"))
    long = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    short = await market_order(client, kernel, trader, login, "EURUSD", 1, "1")

    tick(kernel, "EURUSD", *_day(THU))  # rollover Thu 00:00: Wednesday ended, x3
    await kernel.trading.idle()
    tick(kernel, "EURUSD", *_day(FRI))  # Thursday, x1
    await kernel.trading.idle()

    assert await _swaps(client, staff, login) == [
        (Decimal("42"), str(long["order"]), "2014-05-08"),
        (Decimal("-9"), str(short["order"]), "2014-05-08"),
        (Decimal("14"), str(long["order"]), "2014-05-09"),
        (Decimal("-3"), str(short["order"]), "2014-05-09"),
    ]
    swaps = {p["ticket"]: p["swap"] for p in await positions(client, trader, login)}
    assert swaps == {long["order"]: Decimal("56"), short["order"]: Decimal("-12")}
    # a partial close takes its share of the swap: 0.5 of 2 lots -> 14.00
    response = await client.delete(
        f"/api/crm/orders/{long['order']}?login={login}&volume=0.5", headers=trader
    )
    assert (await response.json())["swap"] == 14


async def test_weekend_nights_are_carried_by_the_triple_day_and_missed_rollovers_caught_up(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _swapping_trader(client, staff, "weekend@test.io", ("money", "2.5", "0"))
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")

    # the next tick comes on Monday 2014-05-12: Thu 00:00 (Wed x3), Fri (Thu), Sat (Fri),
    # Sun (Sat: 0), Mon (Sun: 0)
    tick(kernel, "EURUSD", *_day(DAY_START_MS + 5 * DAY_MS))
    await kernel.trading.idle()

    assert await _swaps(client, staff, login) == [
        (Decimal("7.5"), str(order["order"]), "2014-05-12"),
        (Decimal("2.5"), str(order["order"]), "2014-05-12"),
        (Decimal("2.5"), str(order["order"]), "2014-05-12"),
    ]
    (position,) = await positions(client, trader, login)
    assert position["swap"] == Decimal("12.5")


async def test_percent_swap_and_the_group_multiplier(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    group = await create_group(client, staff, name="double", swap_multiplier=Decimal("2"))
    login, trader = await _swapping_trader(
        client, staff, "percent@test.io", ("percent", "-3.65", "1"), group["id"]
    )
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")

    tick(kernel, "EURUSD", *_day(FRI, "1.40000", "1.40012"))
    await kernel.trading.idle()

    # -3.65 x 2 / 100 / 360 x 1.40000 (the bid) x 100,000 x 1 lot = -28.388... a night
    night = Decimal("-3.65") * 2 / 100 / 360 * Decimal("1.40000") * 100000
    assert await _swaps(client, staff, login) == [
        (round(night * 3, 2), str(order["order"]), "2014-05-09"),
        (round(night, 2), str(order["order"]), "2014-05-09"),
    ]
    assert round(night * 3, 2) == Decimal("-85.17")


@pytest.mark.parametrize(
    ("settings", "charged"),
    [
        ({"is_islamic": True}, []),
        ({"swap_enabled": False}, []),
        ({"swap_free": True}, []),
        # created Wed 00:00:07: Thu and Fri 00:00 are within 2 days, Sat 00:00 is not
        ({"swap_free_days": 2}, [Decimal("14")]),
    ],
)
async def test_swap_free_groups_and_swap_free_days(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    settings: dict[str, Any],
    charged: list[Decimal],
) -> None:
    group = await create_group(client, staff, name="nosw", **settings)
    login, trader = await _swapping_trader(
        client, staff, "free@test.io", ("points", "7", "7"), group["id"]
    )
    await market_order(client, kernel, trader, login, "EURUSD", 0, "2")

    tick(kernel, "EURUSD", *_day(DAY_START_MS + 3 * DAY_MS))  # Saturday 00:00:01
    await kernel.trading.idle()

    assert [amount for amount, _, _ in await _swaps(client, staff, login)] == charged
    assert (await positions(client, trader, login))[0]["swap"] == sum(charged, Decimal(0))


def test_rollover_schedule_in_a_broker_time_zone() -> None:
    """EET (MT5 server time) is UTC+3 in May: 00:00 EET is 21:00 UTC the day before."""
    schedule = RolloverSchedule("00:00", "EET")
    at = datetime(2014, 5, 7, 21, 0, 1, tzinfo=UTC)

    assert schedule.last(at) == datetime(2014, 5, 7, 21, 0, tzinfo=UTC)
    assert schedule.next(at) == datetime(2014, 5, 8, 21, 0, tzinfo=UTC)
    assert schedule.day_ended(schedule.last(at)) == "wednesday"
    assert schedule.between(
        datetime(2014, 5, 6, 21, 0, tzinfo=UTC), datetime(2014, 5, 8, 21, 0, tzinfo=UTC)
    ) == [datetime(2014, 5, 7, 21, 0, tzinfo=UTC), datetime(2014, 5, 8, 21, 0, tzinfo=UTC)]
    assert [nights(day, "wednesday") for day in ("tuesday", "wednesday", "saturday")] == [1, 3, 0]
    assert nights("sunday", None) == 1


def test_unknown_rollover_time_zone_stops_startup(tmp_path: Path, market_data_dir: Path) -> None:
    config = write_config(
        tmp_path / "plugins.toml",
        market_data_dir,
        extra='[kernel.trading]\nrollover_timezone = "Mars/Olympus"\n',
    )

    with pytest.raises(ConfigError) as raised:
        Kernel(Settings(config_path=config, database_url="sqlite+aiosqlite:///x.db", env={}))

    assert raised.value.errors == [
        f"{config}: [kernel.trading] rollover_timezone: unknown time zone 'Mars/Olympus'"
    ]


async def test_closing_after_a_missed_rollover_charges_it_first(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await _swapping_trader(client, staff, "late@test.io", ("points", "7", "0"))
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    # the tick passes Thu 00:00 and the close is queued while the swap run starts
    tick(kernel, "EURUSD", "1.39286", "1.39298", THU + 500)
    response = await client.delete(
        f"/api/crm/orders/{order['order']}?login={login}", headers=trader
    )
    await kernel.trading.idle()

    deal = await response.json()
    assert deal["swap"] == 42
    assert [amount for amount, _, _ in await _swaps(client, staff, login)] == [Decimal("42")]
    assert (await history(client, trader, login))[0]["swap"] == Decimal("42")


async def test_a_rollover_without_a_conversion_rate_stays_due_until_one_is_quoted(
    client: Client, kernel: Kernel, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No FX quote converts the swap at a rollover (e.g. the catch-up right after a
    restart): nothing is charged and the rollover stays due; the next settlement
    charges it with its own night count, then the later ones."""
    login, trader = await _swapping_trader(client, staff, "norate@test.io", ("points", "7", "0"))
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")

    def no_rate(*_args: Any, **_kwargs: Any) -> Decimal:
        raise ConversionUnavailable("no quote converts USD to USD")

    with monkeypatch.context() as patch:
        patch.setattr(kernel.trading.valuation, "profit_rate", no_rate)
        tick(kernel, "EURUSD", *_day(THU))  # rollover Thu 00:00 (Wednesday x3): no rate
        await kernel.trading.idle()
    assert await _swaps(client, staff, login) == []
    tick(kernel, "EURUSD", *_day(FRI))  # rollover Fri 00:00: both are charged now
    await kernel.trading.idle()

    assert await _swaps(client, staff, login) == [
        (Decimal("42"), str(order["order"]), "2014-05-09"),
        (Decimal("14"), str(order["order"]), "2014-05-09"),
    ]
    (position,) = await positions(client, trader, login)
    assert position["swap"] == Decimal("56")


@pytest.fixture
async def dealer(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> AsyncIterator[tuple[Client, Kernel, dict[str, str]]]:
    """A kernel whose market clock follows the manual (dealing-desk) feed, its API and
    the admin's headers."""
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, clock="manual")
    client = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    yield client, kernel, await staff_headers(client)


async def test_a_dealer_quote_with_a_time_drives_the_rollover_and_expiries(
    dealer: tuple[Client, Kernel, dict[str, str]],
) -> None:
    client, kernel, staff = dealer
    await manual_quote(client, staff, "EURUSD", "1.39286", "1.39298", "2014-05-07T10:00:00Z")
    login, trader = await _swapping_trader(client, staff, "dealer@test.io", ("points", "7", "0"))
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "2")
    status, pending = await send(
        client,
        "POST",
        "/api/customer/orders/pending",
        trader,
        {
            "login": login,
            "symbol": "EURUSD",
            "cmd": 2,
            "volume": Decimal("0.1"),
            "trigger_price": Decimal("1.38"),
            "expiry_at": "2014-05-07T23:00:00Z",
        },
    )
    assert status == 201

    await manual_quote(client, staff, "EURUSD", "1.39286", "1.39298", "2014-05-08T00:00:05Z")
    await kernel.trading.idle()

    assert await _swaps(client, staff, login) == [
        (Decimal("42"), str(order["order"]), "2014-05-08")
    ]
    (expired,) = await get(client, f"/api/customer/orders/pending?login={login}", trader)
    assert (expired["order_id"], expired["status"]) == (pending["order_id"], "expired")
