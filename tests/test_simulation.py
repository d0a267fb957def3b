"""The end-to-end simulation (``brokerkernel simulate``) on real market data.

The short run replays the first two hours of 2014-05-07 (EURUSD + XAUUSD) with six
traders through the HTTP API and checks the report; the expected tick counts are
computed here from the zip files with an independent reader (``zipfile`` + ``csv``).
"""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from brokerkernel.kernel.simulation import SimulationReport, simulate

DAY = date(2014, 5, 7)
SYMBOLS = ("EURUSD", "XAUUSD")
DATA_SETS = {"EURUSD": "oanda_eurusd_tick_201405_lean", "XAUUSD": "oanda_xauusd_tick_201405_lean"}
WINDOW_S = 2 * 3600


def count_ticks(data_dir: Path, symbol: str, day: date, until_ms: int) -> tuple[int, int]:
    """(servable, crossed) ticks of ``symbol`` on ``day`` before ``until_ms`` after 00:00 UTC."""
    path = data_dir / DATA_SETS[symbol] / f"{day:%Y%m%d}_quote.zip"
    servable = crossed = 0
    with zipfile.ZipFile(path) as archive:
        (member,) = archive.namelist()
        text = io.TextIOWrapper(archive.open(member), encoding="ascii")
        for ms, bid, ask in csv.reader(text):
            if Decimal(ms) >= until_ms:
                continue
            if Decimal(ask) < Decimal(bid):
                crossed += 1
            else:
                servable += 1
    return servable, crossed


def assert_report_sound(report: SimulationReport, accounts: int) -> None:
    failed = [f"{c.name}: {c.detail}" for c in report.invariants if not c.passed]
    assert not failed, report.format()
    assert report.passed
    assert len(report.invariants) == 5
    assert len(report.accounts) == accounts
    assert report.orders_filled > 0
    assert report.orders_filled == sum(a.trades for a in report.accounts)
    assert all(a.open_positions == 0 for a in report.accounts), report.format()
    assert all(a.margin_used == 0 for a in report.accounts)
    assert all(a.equity == a.balance for a in report.accounts)
    assert all(isinstance(a.balance, Decimal) for a in report.accounts)
    assert report.http_requests > 0
    assert "result: PASS" in report.format()


async def test_two_hours_of_real_data_through_the_api(
    database_url: str, redis_url: str | None, market_data_dir: Path
) -> None:
    report = await simulate(
        accounts=6,
        day=DAY,
        symbols=SYMBOLS,
        step_seconds=60,
        data_dir=market_data_dir,
        database_url=database_url,
        redis_url=redis_url,
        duration_s=WINDOW_S,
    )

    assert_report_sound(report, accounts=6)
    for symbol in SYMBOLS:
        servable, crossed = count_ticks(market_data_dir, symbol, DAY, WINDOW_S * 1000)
        assert report.ticks_by_symbol[symbol] == servable
        assert report.crossed_by_symbol[symbol] == crossed
    assert report.ticks_by_symbol == {"EURUSD": 1865, "XAUUSD": 13333}
    # 00:00 .. 02:00 one step per market minute from the first tick, plus the last one
    assert report.steps == 121
    assert report.rejections.get("Insufficient margin", 0) >= 1
    assert report.closes_partial >= 1
    assert report.closes_full >= 1
    assert not report.close_failures
    # deposits: 1,000 to 50,000 USD, and the small account that cannot afford 1 lot
    assert {a.deposit for a in report.accounts} >= {Decimal("400")}
    small = next(a for a in report.accounts if a.deposit == Decimal("400"))
    assert small.rejected >= 1


async def test_same_data_same_report(
    database_url: str, tmp_path: Path, market_data_dir: Path
) -> None:
    """Two runs on the same window agree on every number except wall time and tickets."""
    first = await simulate(
        accounts=3,
        symbols=SYMBOLS,
        data_dir=market_data_dir,
        database_url=database_url,
        duration_s=1800,
    )
    second = await simulate(
        accounts=3,
        symbols=SYMBOLS,
        data_dir=market_data_dir,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'second.db'}",
        duration_s=1800,
    )
    assert first.passed and second.passed
    assert first.ticks_by_symbol == second.ticks_by_symbol
    assert first.orders_filled == second.orders_filled
    assert first.rejections == second.rejections
    assert [(a.strategy, a.deposit, a.balance, a.trades, a.deals) for a in first.accounts] == [
        (a.strategy, a.deposit, a.balance, a.trades, a.deals) for a in second.accounts
    ]


@pytest.mark.slow
async def test_full_day_fifty_accounts(database_url: str, market_data_dir: Path) -> None:
    report = await simulate(
        accounts=50, day=DAY, symbols=SYMBOLS, data_dir=market_data_dir, database_url=database_url
    )
    assert_report_sound(report, accounts=50)
    for symbol in SYMBOLS:
        servable, _ = count_ticks(market_data_dir, symbol, DAY, 86_400_000)
        assert report.ticks_by_symbol[symbol] == servable
    assert report.rejections.get("Insufficient margin", 0) >= 1
    assert report.closes_partial >= 1
