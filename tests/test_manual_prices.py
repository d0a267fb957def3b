"""The ``manual`` pricing plugin: dealer quotes over HTTP, and the market clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support import (
    DAY_START_MS,
    create_admin,
    deposit,
    make_kernel,
    manual_quote,
    market_order,
    register_trader,
    staff_headers,
)

from brokerkernel.api.app import create_app
from brokerkernel.kernel.cache import RedisCache
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.plugins.manual.feed import CHANNEL, ManualFeed

Client = TestClient[Any, Any]


@pytest.fixture
async def manual_kernel(
    tmp_path: Path, database_url: str, redis_url: str | None, market_data_dir: Path
) -> Kernel:
    """A kernel whose market clock follows the manual feed (``[kernel] clock = "manual"``)."""
    return make_kernel(tmp_path, database_url, redis_url, market_data_dir, clock="manual")


@pytest.fixture
async def manual_client(manual_kernel: Kernel, aiohttp_client: Any) -> AsyncIterator[Client]:
    test_client: Client = await aiohttp_client(create_app(manual_kernel))
    await create_admin(manual_kernel)
    yield test_client


async def test_a_dealer_quote_goes_through_the_price_path_and_fills_orders(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "manual-fill@test.io")
    await deposit(client, staff, login, "1000")

    quoted = await manual_quote(client, staff, "EURUSD", "1.39300", "1.39310")
    price = await client.get("/api/prices/EURUSD")
    buy = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.01")

    expected = {
        "symbol": "EURUSD",
        "bid": 1.393,
        "ask": 1.3931,
        "mid": 1.39305,
        "timestamp_ms": DAY_START_MS + 7135,  # no time: the market clock's now
        "provider": "manual",
    }
    assert quoted == expected
    assert await price.json() == expected
    response = await client.get(f"/api/crm/orders/{buy['order']}?login={login}", headers=trader)
    assert (await response.json())["open_price"] == 1.3931
    assert kernel.feeds["manual"].symbols() == ["EURUSD"]


async def test_quote_validation_reports_every_error(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    crossed = await client.post(
        "/api/platform/prices/EURUSD", json={"bid": 1.39310, "ask": 1.393}, headers=staff
    )
    digits = await client.post(
        "/api/platform/prices/EURUSD",
        data='{"bid": 1.393001, "ask": 1.3930015}',
        headers={**staff, "Content-Type": "application/json"},
    )
    schema = await client.post(
        "/api/platform/prices/EURUSD", json={"bid": 0, "x": 1}, headers=staff
    )
    timed = await client.post(
        "/api/platform/prices/EURUSD",
        json={"bid": 1.393, "ask": 1.3931, "time": "2014-05-07T10:00:00Z"},
        headers=staff,
    )
    unknown = await client.post(
        "/api/platform/prices/NOPE", json={"bid": 1, "ask": 2}, headers=staff
    )

    assert (crossed.status, await crossed.json()) == (
        422,
        {"detail": [{"loc": ["body", "ask"], "msg": "must not be below bid", "type": "crossed"}]},
    )
    assert (digits.status, await digits.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "bid"],
                    "msg": "has more than 5 decimals (the instrument's digits)",
                    "type": "digits",
                },
                {
                    "loc": ["body", "ask"],
                    "msg": "has more than 5 decimals (the instrument's digits)",
                    "type": "digits",
                },
            ]
        },
    )
    assert sorted((tuple(e["loc"]), e["type"]) for e in (await schema.json())["detail"]) == [
        (("body",), "additionalProperties"),
        (("body", "ask"), "required"),
        (("body", "bid"), "exclusiveMinimum"),
    ]
    # the replay feed drives this kernel's clock: a dealer may not set market time
    assert (timed.status, await timed.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "time"],
                    "msg": "time can only be given when the manual feed drives the market "
                    'clock ([kernel] clock = "manual")',
                    "type": "clock_source",
                }
            ]
        },
    )
    assert (unknown.status, await unknown.json()) == (404, {"detail": "Instrument NOPE not found"})
    quote = kernel.quotes.get("EURUSD")
    assert quote is not None and quote.provider == "replay"  # nothing was published


async def test_only_staff_with_manage_prices_may_quote(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await create_admin(kernel, "support@broker.test", role="support")
    await create_admin(kernel, "dealer@broker.test", role="dealer")
    support = await staff_headers(client, "support@broker.test")
    dealer = await staff_headers(client, "dealer@broker.test")
    _, trader = await register_trader(client, "quoter@test.io")
    body = {"bid": 1.2, "ask": 1.3}

    anonymous = await client.post("/api/platform/prices/EURUSD", json=body)
    as_trader = await client.post("/api/platform/prices/EURUSD", json=body, headers=trader)
    as_support = await client.post("/api/platform/prices/EURUSD", json=body, headers=support)
    as_dealer = await client.post("/api/platform/prices/EURUSD", json=body, headers=dealer)

    assert (anonymous.status, await anonymous.json()) == (
        401,
        {"detail": "Missing or invalid Authorization header"},
    )
    assert (as_trader.status, await as_trader.json()) == (403, {"detail": "Staff access required"})
    assert (as_support.status, await as_support.json()) == (
        403,
        {"detail": "Missing permission: manage_prices"},
    )
    assert as_dealer.status == 200


async def test_quote_time_drives_the_manual_clock_and_never_moves_it_back(
    manual_client: Client, manual_kernel: Kernel
) -> None:
    staff = await staff_headers(manual_client)

    first = await manual_quote(
        manual_client, staff, "EURUSD", "1.39286", "1.39298", "2014-05-07T10:00:00.250Z"
    )
    offset = await manual_quote(
        manual_client, staff, "XAUUSD", "1290.100", "1290.500", "2014-05-07T12:00:05+02:00"
    )
    back = await manual_client.post(
        "/api/platform/prices/EURUSD",
        json={"bid": 1.3929, "ask": 1.393, "time": "2014-05-07T10:00:04.999Z"},
        headers=staff,
    )
    same = await manual_quote(
        manual_client, staff, "EURUSD", "1.39290", "1.39300", "2014-05-07T10:00:05Z"
    )
    untimed = await manual_quote(manual_client, staff, "GBPUSD", "1.68900", "1.68920")
    naive = await manual_client.post(
        "/api/platform/prices/EURUSD",
        json={"bid": 1.3929, "ask": 1.393, "time": "2014-05-07T11:00:00"},
        headers=staff,
    )
    garbage = await manual_client.post(
        "/api/platform/prices/EURUSD",
        json={"bid": 1.3929, "ask": 1.393, "time": "tomorrow"},
        headers=staff,
    )

    ten = DAY_START_MS + 10 * 3_600_000
    assert first["timestamp_ms"] == ten + 250
    assert offset["timestamp_ms"] == ten + 5_000  # 12:00:05+02:00 is 10:00:05 UTC
    assert (back.status, await back.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "time"],
                    "msg": "time 2014-05-07T10:00:04.999000+00:00 is before the market clock "
                    "2014-05-07T10:00:05+00:00; the clock never moves backwards",
                    "type": "clock_backwards",
                }
            ]
        },
    )
    assert same["timestamp_ms"] == ten + 5_000  # equal to the clock is allowed
    assert untimed["timestamp_ms"] == ten + 5_000  # no time: the clock's now
    assert manual_kernel.clock.now_ms() == ten + 5_000
    assert (naive.status, (await naive.json())["detail"]) == (
        422,
        [{"loc": ["body", "time"], "msg": "must carry a UTC offset (e.g. Z)", "type": "timezone"}],
    )
    assert (garbage.status, (await garbage.json())["detail"]) == (
        422,
        [{"loc": ["body", "time"], "msg": "must be an ISO 8601 date-time", "type": "datetime"}],
    )
    eurusd = manual_kernel.quotes.get("EURUSD")
    assert eurusd is not None and (eurusd.bid, eurusd.time_ms) == (
        Decimal("1.39290"),
        ten + 5_000,
    )


async def test_manual_clock_makes_staleness_deterministic(
    manual_client: Client, manual_kernel: Kernel
) -> None:
    staff = await staff_headers(manual_client)
    login, trader = await register_trader(manual_client, "stale-manual@test.io")
    await deposit(manual_client, staff, login, "1000")
    await manual_quote(manual_client, staff, "EURUSD", "1.39286", "1.39298", "2014-05-07T10:00:00Z")

    # XAUUSD moves market time 10.001 s past EURUSD's last quote (threshold 10 s)
    await manual_quote(
        manual_client, staff, "XAUUSD", "1290.100", "1290.500", "2014-05-07T10:00:10.001Z"
    )
    stale = await market_order(manual_client, manual_kernel, trader, login, "EURUSD", 0, "0.01")
    await manual_quote(manual_client, staff, "EURUSD", "1.39300", "1.39312")
    fresh = await market_order(manual_client, manual_kernel, trader, login, "EURUSD", 0, "0.01")

    assert (stale["status"], stale["reason"]) == ("rejected", "No fresh quote")
    assert fresh["status"] == "executed"
    response = await manual_client.get(
        f"/api/crm/orders/{fresh['order']}?login={login}", headers=trader
    )
    position = await response.json()
    assert (position["open_price"], position["open_time"]) == (
        1.39312,
        "2014-05-07T10:00:10.001000Z",
    )


async def test_quotes_reach_the_other_kernel_processes(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """A second ManualFeed stands for another process's feed task: with Redis it
    publishes the quotes pushed elsewhere; without Redis (one process) it idles."""
    other = ManualFeed(kernel.context("manual"))
    received: list[Quote] = []

    def publish(quote: Quote) -> bool:
        received.append(quote)
        return True

    task = asyncio.create_task(other.run(publish))
    try:
        if kernel.settings.redis_url is None:
            await asyncio.sleep(0)
            await manual_quote(client, staff, "EURUSD", "1.39300", "1.39310")
            assert not task.done() and received == []
            return
        assert isinstance(kernel.cache, RedisCache)
        async with asyncio.timeout(10):  # until the other feed has subscribed
            while (await kernel.cache.redis.pubsub_numsub(CHANNEL))[0][1] < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await manual_quote(client, staff, "EURUSD", "1.39300", "1.39310")
        async with asyncio.timeout(10):
            while not received:  # noqa: ASYNC110 (delivered by the listener task)
                await asyncio.sleep(0.01)

        assert received == [
            Quote("EURUSD", Decimal("1.39300"), Decimal("1.39310"), DAY_START_MS + 7135, "manual")
        ]
        assert other.symbols() == ["EURUSD"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
