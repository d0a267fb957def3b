"""Market data (seed section 14): OHLC bars, FX rates, feed health, outages, prices.

Reference bars and outages are computed here from the recorded tick files with the
``csv`` and ``zipfile`` modules and ``datetime`` arithmetic, never through the
kernel's own readers or aggregation.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update
from support import DAY_START_MS, create_admin, make_kernel, staff_headers, tick, write_config

from brokerkernel.api.app import create_app
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.config import ConfigError
from brokerkernel.kernel.marketdata import bars as bar_store
from brokerkernel.kernel.marketdata.bars import Bar, BarBuilder
from brokerkernel.kernel.marketdata.models import PriceOutage
from brokerkernel.kernel.plugins import PluginManager
from brokerkernel.kernel.pricing import FxConverter, Quote, QuoteBook
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Instrument
from brokerkernel.plugins.replay.feed import ReplayFeed

Client = TestClient[Any, Any]
DAY = date(2014, 5, 7)
MIDNIGHT = datetime(2014, 5, 7, tzinfo=UTC)
FOLDERS = {"EURUSD": "oanda_eurusd_tick_201405_lean", "XAUUSD": "oanda_xauusd_tick_201405_lean"}
# Bar start of a tick, per timeframe, computed with datetime fields.
BUCKETS = {
    "M1": lambda t: t.replace(second=0, microsecond=0),
    "M5": lambda t: t.replace(minute=t.minute - t.minute % 5, second=0, microsecond=0),
    "M15": lambda t: t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0),
    "H1": lambda t: t.replace(minute=0, second=0, microsecond=0),
    "H4": lambda t: t.replace(hour=t.hour - t.hour % 4, minute=0, second=0, microsecond=0),
    "D1": lambda t: t.replace(hour=0, minute=0, second=0, microsecond=0),
}


def day_ticks(market_data_dir: Path, symbol: str) -> list[tuple[datetime, Decimal, Decimal]]:
    """(UTC time floored to the ms, bid, ask) of every tick of ``symbol`` on 2014-05-07."""
    path = market_data_dir / FOLDERS[symbol] / "20140507_quote.zip"
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        text = archive.read(name).decode("ascii")
    return [
        (MIDNIGHT + timedelta(milliseconds=int(ms.split(".")[0])), Decimal(bid), Decimal(ask))
        for ms, bid, ask in csv.reader(io.StringIO(text))
    ]


def reference_bars(ticks: Iterable[tuple[datetime, Decimal, Decimal]], timeframe: str) -> list[Any]:
    """[time (UNIX s), open, high, low, close, volume] of the bid, per bar, oldest first."""
    bars: dict[datetime, list[Any]] = {}
    for moment, bid, _ask in ticks:
        start = BUCKETS[timeframe](moment)
        bar = bars.get(start)
        if bar is None:
            bars[start] = [int(start.timestamp()), bid, bid, bid, bid, 1]
        else:
            bar[2] = max(bar[2], bid)
            bar[3] = min(bar[3], bid)
            bar[4] = bid
            bar[5] += 1
    return [bars[start] for start in sorted(bars)]


def feed_day(
    kernel: Kernel,
    market_data_dir: Path,
    symbols: list[str],
    after_ms: int = 0,
    until_ms: int = 2**62,
) -> int:
    """Publish the replayed day's ticks with ``after_ms < time_ms <= until_ms``."""
    feed = ReplayFeed(market_data_dir, symbols, DAY, speed="max")
    count = 0

    def publish(quote: Quote) -> None:
        nonlocal count
        if quote.time_ms > after_ms:
            kernel.quotes.publish(quote)
            count += 1

    feed.step_until(until_ms, publish)
    return count


async def read_json(response: Any) -> Any:
    return json.loads(await response.text(), parse_float=Decimal)


async def bars_of(client: Client, query: str) -> list[list[Any]]:
    response = await client.get(f"/api/prices/history?{query}")
    assert response.status == 200, await response.text()
    body = await read_json(response)
    assert body["count"] == len(body["bars"])
    return [
        [b["time"], b["open"], b["high"], b["low"], b["close"], b["volume"]] for b in body["bars"]
    ]


@pytest.fixture
async def api(kernel: Kernel, aiohttp_client: Any) -> AsyncIterator[Client]:
    """The API of ``kernel`` with an admin user and no quote at all."""
    client: Client = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    yield client


# --- bars --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_bars_of_a_real_eurusd_day_equal_bars_computed_from_the_file(
    api: Client, kernel: Kernel, market_data_dir: Path
) -> None:
    ticks = day_ticks(market_data_dir, "EURUSD")
    assert feed_day(kernel, market_data_dir, ["EURUSD"]) == len(ticks) == 41367
    await kernel.market_data.flush()

    for timeframe in ("M1", "M5", "M15", "H1", "H4", "D1"):
        expected = reference_bars(ticks, timeframe)
        assert await bars_of(api, f"symbol=EURUSD&timeframe={timeframe}&limit=5000") == expected
    # A literal check of the reference itself: the day's D1 bar of the bid.
    assert reference_bars(ticks, "D1") == [
        [
            1399420800,
            Decimal("1.39286"),
            Decimal("1.39383"),
            Decimal("1.39084"),
            Decimal("1.39101"),
            41367,
        ]
    ]


@pytest.mark.slow
async def test_bars_survive_a_restart_in_the_middle_of_a_bar(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    cut_ms = DAY_START_MS + 45_296_789  # 12:34:56.789, inside the 12:34 M1 and 12:00 H4 bars
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = make_kernel(tmp_path / "first", database_url, redis_url, market_data_dir)
    first_api: Client = await aiohttp_client(create_app(first))
    feed_day(first, market_data_dir, ["EURUSD"], until_ms=cut_ms)
    await first_api.close()  # stops the kernel: the pending bars are written

    second = make_kernel(tmp_path / "second", database_url, redis_url, market_data_dir)
    second_api: Client = await aiohttp_client(create_app(second))
    feed_day(second, market_data_dir, ["EURUSD"], after_ms=cut_ms)
    await second.market_data.flush()

    ticks = day_ticks(market_data_dir, "EURUSD")
    for timeframe in ("M1", "M15", "H4", "D1"):
        expected = reference_bars(ticks, timeframe)
        assert await bars_of(second_api, f"symbol=EURUSD&timeframe={timeframe}&limit=5000") == (
            expected
        )


async def test_bars_of_a_flush_cancelled_mid_write_are_written_by_the_next(
    api: Client, kernel: Kernel, market_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping the kernel cancels the periodic writer, maybe in the middle of its
    write; the bars it had taken must go out with the stop's own flush, not be lost."""
    until_ms = DAY_START_MS + 180_000  # the day's first three minutes
    assert feed_day(kernel, market_data_dir, ["EURUSD"], until_ms=until_ms) > 0
    entered = asyncio.Event()

    async def stuck_write(_session: Any, _changes: Any) -> None:
        entered.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(bar_store, "write_bars", stuck_write)
    flushing = asyncio.create_task(kernel.market_data.flush())
    await entered.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    monkeypatch.undo()

    await kernel.market_data.flush()
    ticks = [
        t
        for t in day_ticks(market_data_dir, "EURUSD")
        if t[0] <= MIDNIGHT + timedelta(milliseconds=180_000)
    ]
    expected = reference_bars(ticks, "M1")
    assert len(expected) == 3
    assert await bars_of(api, "symbol=EURUSD&timeframe=M1&limit=10") == expected


async def test_history_pages_backwards_from_to_and_forwards_from_from(
    api: Client, kernel: Kernel
) -> None:
    for minute in range(10):  # one tick per minute, bid 1.1000 + minute/10000
        tick(
            kernel,
            "EURUSD",
            f"1.10{minute:02d}",
            f"1.10{minute:02d}5",
            DAY_START_MS + minute * 60_000 + 5,
        )
    start = DAY_START_MS // 1000

    # Unflushed bars are served too (from memory), the newest `limit` by default.
    assert [b[0] for b in await bars_of(api, "symbol=EURUSD&limit=3")] == [
        start + 420,
        start + 480,
        start + 540,
    ]
    await kernel.market_data.flush()
    assert [b[0] for b in await bars_of(api, f"symbol=EURUSD&to={start + 300}&limit=2")] == [
        start + 240,
        start + 300,
    ]
    from_iso = "2014-05-07T00:02:00Z"
    assert [b[0] for b in await bars_of(api, f"symbol=EURUSD&from={from_iso}&limit=2")] == [
        start + 120,
        start + 180,
    ]
    both = f"symbol=EUR%2FUSD&timeframe=m5&from={start + 60}&to=2014-05-07T00:05:00"
    assert await bars_of(api, both) == [
        [start + 300, Decimal("1.1005"), Decimal("1.1009"), Decimal("1.1005"), Decimal("1.1009"), 5]
    ]


async def test_history_lists_every_bad_query_parameter(api: Client) -> None:
    response = await api.get("/api/prices/history?timeframe=M2&from=yesterday&to=1&limit=0")
    assert response.status == 422
    assert await response.json() == {
        "detail": [
            {"loc": ["query", "symbol"], "msg": "field required", "type": "required"},
            {
                "loc": ["query", "timeframe"],
                "msg": "must be one of M1, M5, M15, H1, H4, D1",
                "type": "enum",
            },
            {
                "loc": ["query", "from"],
                "msg": "must be an ISO 8601 time or UNIX seconds",
                "type": "datetime",
            },
            {"loc": ["query", "limit"], "msg": "must be between 1 and 5000", "type": "range"},
        ]
    }
    response = await api.get("/api/prices/history?symbol=EURUSD&from=100&to=99")
    assert response.status == 422
    assert await response.json() == {
        "detail": [{"loc": ["query", "from"], "msg": "must not be after to", "type": "range"}]
    }
    response = await api.get("/api/prices/history?symbol=NOPE")
    assert response.status == 404
    assert await response.json() == {"detail": "Unknown symbol NOPE"}
    response = await api.get("/prices/history?symbol=EURUSD")
    assert response.status == 200
    assert response.headers["Deprecation"] == "true"
    assert await response.json() == {"symbol": "EURUSD", "timeframe": "M1", "bars": [], "count": 0}


def test_bar_builder_ignores_late_ticks_and_can_build_on_mid() -> None:
    builder = BarBuilder("mid")
    start = DAY_START_MS + 3_600_000
    for offset, bid, ask in ((1_000, "1.2", "1.4"), (61_000, "1.1", "1.2"), (59_000, "9", "9")):
        builder.on_tick(Quote("EURUSD", Decimal(bid), Decimal(ask), start + offset, "t"))
    assert builder.late_ticks == 1
    assert builder.current("EURUSD", "M1") == [
        Bar(start + 60_000, Decimal("1.15"), Decimal("1.15"), Decimal("1.15"), Decimal("1.15"), 1)
    ]
    # The H1 bar merges the finished minute with the running one.
    assert builder.current("EURUSD", "H1") == [
        Bar(start, Decimal("1.3"), Decimal("1.3"), Decimal("1.15"), Decimal("1.15"), 2)
    ]


# --- FX rates ------------------------------------------------------------------------------


def ten_digits(value: Decimal) -> Decimal:
    return Context(prec=10, rounding=ROUND_HALF_EVEN).plus(value)


async def test_fx_rates_are_usd_based_with_inverses_and_crosses(
    api: Client, kernel: Kernel
) -> None:
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 1_000)
    tick(kernel, "USDJPY", "101.820", "101.830", DAY_START_MS + 2_000)
    tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 3_000)
    tick(kernel, "EURGBP", "0.82100", "0.82120", DAY_START_MS + 4_500)  # no GBPUSD: a cross

    response = await api.get("/api/prices/fx-rates")
    assert response.status == 200
    eur_per_usd = 1 / Decimal("1.39292")
    assert await read_json(response) == {
        "base": "USD",
        "rates": {  # BTC is used by an instrument but no quote reaches it
            "EUR": ten_digits(eur_per_usd),
            "GBP": ten_digits(eur_per_usd * Decimal("0.82110")),
            "JPY": Decimal("101.825"),
            "USD": Decimal("1"),
            "XAU": ten_digits(1 / Decimal("1307.549")),
        },
        "last_updated": (DAY_START_MS + 4_500) // 1000,
        "count": 5,
    }
    response = await api.get("/api/prices/fx-rates/gbp")
    assert await read_json(response) == {
        "currency": "GBP",
        "rate": ten_digits(eur_per_usd * Decimal("0.82110")),
        "base": "USD",
    }
    response = await api.get("/fx-rates/BTC")
    assert response.status == 404
    assert response.headers["Deprecation"] == "true"
    assert await response.json() == {"detail": "No FX rate for BTC"}
    response = await api.get("/api/prices/fx-rates/EURO")
    assert response.status == 422
    assert await response.json() == {
        "detail": [
            {
                "loc": ["path", "currency"],
                "msg": "must be a three-letter currency code",
                "type": "pattern",
            }
        ]
    }


def test_fx_converter_crosses_through_any_chain_of_pairs() -> None:
    book = QuoteBook(MarketClock(driven=True, start_ms=0))
    for symbol, bid, ask in (("EURGBP", "0.8", "0.8"), ("EURJPY", "140", "140")):
        book.publish(Quote(symbol, Decimal(bid), Decimal(ask), 1, "t"))
    converter = FxConverter(book)
    assert converter.rate("GBP", "JPY") == Decimal(1) / Decimal("0.8") * Decimal(140)
    assert converter.rates_from("JPY", ["EUR", "GBP", "USD"]) == {
        "EUR": 1 / Decimal(140),
        "GBP": 1 / Decimal(140) * Decimal("0.8"),
    }


# --- health and outages ----------------------------------------------------------------------


async def test_health_reports_each_symbol_against_its_threshold(
    api: Client, kernel: Kernel
) -> None:
    response = await api.get("/api/prices/health")
    body = await response.json()
    assert body["status"] == "degraded"
    assert body["symbols"]["EURUSD"] == {
        "last_tick_ms": None,
        "age_ms": None,
        "stale": True,
        "threshold_ms": 10_000,
    }

    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7_135)
    tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 17_136)
    response = await api.get("/health/prices")
    assert response.headers["Deprecation"] == "true"
    assert await response.json() == {
        "status": "degraded",
        "symbols": {
            "EURUSD": {
                "last_tick_ms": DAY_START_MS + 7_135,
                "age_ms": 10_001,
                "stale": True,
                "threshold_ms": 10_000,
            },
            "XAUUSD": {
                "last_tick_ms": DAY_START_MS + 17_136,
                "age_ms": 0,
                "stale": False,
                "threshold_ms": 10_000,
            },
        },
        "summary": {"total": 2, "stale": 1, "healthy": 1},
        "timestamp": "2014-05-07T00:00:17.136000Z",
    }
    tick(kernel, "EURUSD", "1.39286", "1.39297", DAY_START_MS + 17_136)
    response = await api.get("/api/prices/health")
    body = await response.json()
    assert (body["status"], body["summary"]) == ("ok", {"total": 2, "stale": 0, "healthy": 2})


async def outages_of(client: Client, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/prices/outages?{query}", headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["count"] == len(body["outages"])
    return [{k: v for k, v in row.items() if k != "id"} for row in body["outages"]]


def outage_row(
    symbol: str, last_ms: int, next_ms: int | None, threshold: int = 10_000
) -> dict[str, Any]:
    started = last_ms + threshold
    return {
        "symbol": symbol,
        "started_at": _iso(started),
        "ended_at": None if next_ms is None else _iso(next_ms),
        "duration_ms": None if next_ms is None else next_ms - started,
        "threshold_ms": threshold,
        "last_tick_at": _iso(last_ms),
    }


def _iso(time_ms: int) -> str:
    """ISO 8601 as the API writes datetimes (``jsonio``): microseconds when not zero."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=time_ms)
    return moment.isoformat().replace("+00:00", "Z")


async def test_outage_opens_when_a_symbol_goes_silent_and_closes_when_it_ticks(
    api: Client, kernel: Kernel
) -> None:
    staff = await staff_headers(api)
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7_135)
    tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 8_000)
    tick(kernel, "XAUUSD", "1307.392", "1307.707", DAY_START_MS + 17_135)  # age 10,000: ok
    await kernel.market_data.flush()
    assert await outages_of(api, staff, "") == []

    tick(kernel, "XAUUSD", "1307.393", "1307.707", DAY_START_MS + 19_000)  # EURUSD stale
    await kernel.market_data.flush()
    assert await outages_of(api, staff, "symbol=EURUSD") == [
        outage_row("EURUSD", DAY_START_MS + 7_135, None)
    ]

    tick(kernel, "EURUSD", "1.39280", "1.39290", DAY_START_MS + 25_000)
    await kernel.market_data.flush()
    assert await outages_of(api, staff, "symbol=eurusd&limit=1") == [
        outage_row("EURUSD", DAY_START_MS + 7_135, DAY_START_MS + 25_000)
    ]
    response = await api.get("/price-outages", headers=staff)
    assert response.headers["Deprecation"] == "true"
    assert (await response.json())["count"] == 1


async def test_outages_need_view_audit_and_a_limit_up_to_500(api: Client, kernel: Kernel) -> None:
    response = await api.get("/api/prices/outages")
    assert response.status == 401
    assert await response.json() == {"detail": "Missing or invalid Authorization header"}
    await create_admin(kernel, "support@broker.test", role="support")
    support = await staff_headers(api, "support@broker.test")
    response = await api.get("/api/prices/outages", headers=support)
    assert response.status == 403
    assert await response.json() == {"detail": "Missing permission: view_audit"}
    admin = await staff_headers(api)
    response = await api.get("/api/prices/outages?limit=501", headers=admin)
    assert response.status == 422
    assert await response.json() == {
        "detail": [{"loc": ["query", "limit"], "msg": "must be between 1 and 500", "type": "range"}]
    }


@pytest.mark.slow
async def test_outages_of_a_real_day_are_the_gaps_in_the_files(
    api: Client, kernel: Kernel, market_data_dir: Path
) -> None:
    """Replaying EURUSD and XAUUSD of 2014-05-07 logs one outage per gap of more than
    10 s between two ticks of a symbol, plus EURUSD's open one at the end."""
    expected: list[dict[str, Any]] = []
    for symbol in ("EURUSD", "XAUUSD"):
        times = [int(t.timestamp() * 1000) for t, _, _ in day_ticks(market_data_dir, symbol)]
        expected += [
            outage_row(symbol, last, following)
            for last, following in pairwise(times)
            if following - last > 10_000
        ]
    eurusd_last = DAY_START_MS + 86_382_008
    xauusd_last = DAY_START_MS + 86_399_205
    expected.append(outage_row("EURUSD", eurusd_last, None))  # 17.2 s before the end

    feed_day(kernel, market_data_dir, ["EURUSD", "XAUUSD"])
    assert kernel.clock.now_ms() == xauusd_last
    kernel.market_data.outages.scan()
    await kernel.market_data.flush()

    async with kernel.db.read() as session:
        rows = (await session.scalars(select(PriceOutage))).all()
    stored = sorted(
        (
            row.symbol,
            row.last_tick_at,
            row.started_at,
            row.ended_at,
            row.duration_ms,
            row.threshold_ms,
        )
        for row in rows
    )
    assert len(stored) == len(expected) == 2097 + 1203 + 1
    by_key = sorted(
        (
            e["symbol"],
            datetime.fromisoformat(e["last_tick_at"]),
            datetime.fromisoformat(e["started_at"]),
            None if e["ended_at"] is None else datetime.fromisoformat(e["ended_at"]),
            e["duration_ms"],
            e["threshold_ms"],
        )
        for e in expected
    )
    assert stored == by_key

    staff = await staff_headers(api)
    newest_first = sorted(expected, key=lambda e: (e["started_at"], e["symbol"]), reverse=True)
    xau = [e for e in newest_first if e["symbol"] == "XAUUSD"]
    assert await outages_of(api, staff, "symbol=XAUUSD&limit=500") == xau[:500]
    assert (await outages_of(api, staff, "limit=3"))[0] == outage_row("EURUSD", eurusd_last, None)


async def test_open_outage_left_by_a_restart_is_closed_by_the_next_tick(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = make_kernel(tmp_path / "first", database_url, redis_url, market_data_dir)
    first_api: Client = await aiohttp_client(create_app(first))
    tick(first, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 1_000)
    tick(first, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 12_000)
    await first_api.close()

    second = make_kernel(tmp_path / "second", database_url, redis_url, market_data_dir)
    second_api: Client = await aiohttp_client(create_app(second))
    await create_admin(second)
    tick(second, "EURUSD", "1.39280", "1.39290", DAY_START_MS + 30_000)
    await second.market_data.flush()
    staff = await staff_headers(second_api)
    assert await outages_of(second_api, staff, "") == [
        outage_row("EURUSD", DAY_START_MS + 1_000, DAY_START_MS + 30_000)
    ]


# --- latest prices, providers, symbols ------------------------------------------------------


async def test_expired_and_inactive_prices_are_not_served(api: Client, kernel: Kernel) -> None:
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7_135)
    tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 8_000)
    response = await api.get("/api/prices/EUR%2FUSD")
    assert await read_json(response) == {
        "symbol": "EURUSD",
        "bid": Decimal("1.39286"),
        "ask": Decimal("1.39298"),
        "mid": Decimal("1.39292"),
        "timestamp_ms": DAY_START_MS + 7_135,
        "provider": "replay",
    }

    async with kernel.db.transaction() as session:
        await session.execute(
            update(Instrument).where(Instrument.symbol == "XAUUSD").values(is_active=False)
        )
    async with kernel.db.read() as session:
        await kernel.market_data.instruments.load(session)
    tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 67_135)  # EURUSD: 60 s old
    response = await api.get("/api/prices")
    assert [p["symbol"] for p in (await response.json())["prices"]] == ["EURUSD"]
    response = await api.get("/api/prices/XAUUSD")
    assert response.status == 404
    assert await response.json() == {"detail": "Symbol XAUUSD not active or price expired"}

    tick(kernel, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 67_136)  # 60,001 ms
    response = await api.get("/api/prices")
    assert await response.json() == {"prices": [], "count": 0}
    response = await api.get("/prices/EURUSD")
    assert response.status == 404
    assert await response.json() == {"detail": "Symbol EURUSD not active or price expired"}


async def test_providers_and_symbols_describe_the_feeds(api: Client, kernel: Kernel) -> None:
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7_135)
    response = await api.get("/api/prices/providers")
    body = await response.json()
    replay = next(p for p in body["providers"] if p["name"] == "replay")
    assert replay == {
        "name": "replay",
        "plugin": "replay",
        "drives_clock": True,
        "symbols": ["EURUSD", "XAUUSD"],
        "last_tick_ms": DAY_START_MS + 7_135,
        "running": False,  # the test kernel does not start its feeds
    }
    response = await api.get("/api/prices/symbols")
    assert await response.json() == {
        "symbols": [
            {
                "symbol": "EURUSD",
                "provider": "replay",
                "stale_threshold_ms": 10_000,
                "has_price": True,
            },
            {
                "symbol": "XAUUSD",
                "provider": "replay",
                "stale_threshold_ms": 10_000,
                "has_price": False,
            },
        ],
        "count": 2,
    }


# --- configuration ---------------------------------------------------------------------------


def test_market_data_settings_are_validated_with_every_error(
    tmp_path: Path, market_data_dir: Path
) -> None:
    path = write_config(
        tmp_path / "plugins.toml",
        market_data_dir,
        extra='[kernel.market_data]\nbar_price = "last"\nws_max_rate_hz = -1\nws_colour = 1\n',
    )
    with pytest.raises(ConfigError) as raised:
        PluginManager.load(path, env={})
    assert [e for e in raised.value.errors if "market_data" in e] == [
        f"{path}: [kernel] market_data.bar_price: 'last' is not one of ['bid', 'mid', 'ask']",
        f"{path}: [kernel] market_data.ws_colour: Additional properties are not allowed "
        "('ws_colour' was unexpected)",
        f"{path}: [kernel] market_data.ws_max_rate_hz: -1 is less than the minimum of 0",
    ]
