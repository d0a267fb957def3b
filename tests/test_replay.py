"""The replay price feed against the recorded market data in ``shared/data/market``.

Expected values are either literal (copied from the files) or computed here with an
independent reader (``csv`` + ``zipfile``), never through the plugin's own parsers.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import PluginContext, PriceFeed
from brokerkernel.kernel.pricing import Quote, QuoteBook
from brokerkernel.plugins import replay
from brokerkernel.plugins.replay.feed import (
    MAX_BATCH,
    ReplayFeed,
    due_offset_s,
    horizon_ms,
)
from brokerkernel.plugins.replay.sources import DAY_MS

EPOCH_2014_05_07 = int(datetime(2014, 5, 7, tzinfo=UTC).timestamp()) * 1000
EURUSD_DIR = "oanda_eurusd_tick_201405_lean"
XAUUSD_DIR = "oanda_xauusd_tick_201405_lean"


def midnight_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def zip_rows(path: Path) -> list[list[str]]:
    """Rows of the single CSV inside a Lean daily zip, read with the csv module."""
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        text = archive.read(name).decode("ascii")
    return [row for row in csv.reader(io.StringIO(text)) if row]


def fxcm_pairs(data_dir: Path, pair: str, day: str) -> list[tuple[list[str], list[str]]]:
    """(bid row, ask row) pairs of the FXCM bars whose timestamp starts with ``day``."""
    folder = data_dir / "fxcm_m1_bidask_nautilus"
    year = day[:4]
    with (folder / f"{pair}-m1-bid-{year}.csv").open() as bids:
        bid_rows = list(csv.reader(bids))[1:]
    with (folder / f"{pair}-m1-ask-{year}.csv").open() as asks:
        ask_rows = list(csv.reader(asks))[1:]
    return [(b, a) for b, a in zip(bid_rows, ask_rows, strict=True) if b[0].startswith(day)]


def collect(feed: ReplayFeed, until_ms: int = 2**62) -> list[Quote]:
    quotes: list[Quote] = []
    feed.step_until(until_ms, quotes.append)
    return quotes


# --- EURUSD / XAUUSD ticks -----------------------------------------------------------------


def test_eurusd_first_ticks_exact(market_data_dir: Path) -> None:
    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7))
    quotes = collect(feed, EPOCH_2014_05_07 + 16_962)
    assert quotes == [
        Quote("EURUSD", Decimal("1.39286"), Decimal("1.39298"), EPOCH_2014_05_07 + 7135, "replay"),
        Quote("EURUSD", Decimal("1.39286"), Decimal("1.39297"), EPOCH_2014_05_07 + 16860, "replay"),
        Quote("EURUSD", Decimal("1.39284"), Decimal("1.39297"), EPOCH_2014_05_07 + 16962, "replay"),
    ]
    assert all(type(q.bid) is Decimal and type(q.ask) is Decimal for q in quotes)
    assert str(quotes[0].ask) == "1.39298"  # parsed from text, not through float


def test_eurusd_whole_day_matches_file(market_data_dir: Path) -> None:
    rows = zip_rows(market_data_dir / EURUSD_DIR / "20140507_quote.zip")
    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7))
    quotes = collect(feed)
    assert len(quotes) == len(rows) == 41_367
    assert feed.stats.ticks_published == len(rows)
    assert feed.stats.crossed_dropped == 0
    last = rows[-1]
    assert quotes[-1] == Quote(
        "EURUSD", Decimal(last[1]), Decimal(last[2]), EPOCH_2014_05_07 + int(last[0]), "replay"
    )
    assert [q.time_ms - EPOCH_2014_05_07 for q in quotes] == [int(r[0]) for r in rows]
    assert feed.stats.first_time_ms == EPOCH_2014_05_07 + 7135
    assert feed.stats.last_time_ms == EPOCH_2014_05_07 + 86_382_008
    assert feed.next_time_ms() is None
    assert feed.finished


def test_xauusd_fractional_ms_floored_in_file_order(market_data_dir: Path) -> None:
    rows = zip_rows(market_data_dir / XAUUSD_DIR / "20140507_quote.zip")
    feed = ReplayFeed(market_data_dir, ["XAUUSD"], date(2014, 5, 7))
    quotes = collect(feed)
    # The file starts 6.949 / 43.821 / 56.76 / 60.0022 ms after midnight.
    assert [q.time_ms - EPOCH_2014_05_07 for q in quotes[:4]] == [6, 43, 56, 60]
    assert quotes[0].bid == Decimal("1307.391")
    assert quotes[0].ask == Decimal("1307.707")
    assert len(quotes) == len(rows)
    expected_ms = [EPOCH_2014_05_07 + math.floor(Decimal(r[0])) for r in rows]
    assert [q.time_ms for q in quotes] == expected_ms
    assert [(q.bid, q.ask) for q in quotes] == [(Decimal(r[1]), Decimal(r[2])) for r in rows]


def test_merged_stream_is_time_ordered_and_complete(market_data_dir: Path) -> None:
    eur = zip_rows(market_data_dir / EURUSD_DIR / "20140507_quote.zip")
    xau = zip_rows(market_data_dir / XAUUSD_DIR / "20140507_quote.zip")
    feed = ReplayFeed(market_data_dir, ["EURUSD", "XAUUSD"], date(2014, 5, 7))
    quotes = collect(feed)
    assert len(quotes) == len(eur) + len(xau)
    times = [q.time_ms for q in quotes]
    assert all(a <= b for a, b in itertools.pairwise(times))
    # Each symbol keeps its own file order; on equal times EURUSD (listed first) leads.
    assert [q.ask for q in quotes if q.symbol == "EURUSD"] == [Decimal(r[2]) for r in eur]
    assert [q.ask for q in quotes if q.symbol == "XAUUSD"] == [Decimal(r[2]) for r in xau]
    for before, after in itertools.pairwise(quotes):
        if before.time_ms == after.time_ms and before.symbol != after.symbol:
            assert (before.symbol, after.symbol) == ("EURUSD", "XAUUSD")


def test_days_without_files_are_skipped(market_data_dir: Path) -> None:
    # 2014-05-03 (Saturday) has no file; the range 05-02..05-04 has two files.
    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 2), days=3)
    expected = len(zip_rows(market_data_dir / EURUSD_DIR / "20140502_quote.zip")) + len(
        zip_rows(market_data_dir / EURUSD_DIR / "20140504_quote.zip")
    )
    quotes = collect(feed)
    assert len(quotes) == expected
    assert quotes[-1].time_ms >= midnight_ms(date(2014, 5, 4))
    assert feed.dates() == [date(2014, 5, 2), date(2014, 5, 3), date(2014, 5, 4)]
    assert feed.range_ms() == (midnight_ms(date(2014, 5, 2)), midnight_ms(date(2014, 5, 5)))


# --- bars: GBPUSD (crossed), BTCUSD, USDJPY --------------------------------------------------


def test_gbpusd_crossed_quotes_dropped_and_counted(market_data_dir: Path) -> None:
    pairs = fxcm_pairs(market_data_dir, "gbpusd", "2012-02-01")
    expected_crossed = sum(
        (Decimal(a[1]) < Decimal(b[1])) + (Decimal(a[4]) < Decimal(b[4])) for b, a in pairs
    )
    assert expected_crossed > 0
    feed = ReplayFeed(market_data_dir, ["GBPUSD"], date(2012, 2, 1))
    quotes = collect(feed)
    assert feed.stats.crossed_dropped == expected_crossed
    assert feed.stats.crossed_by_symbol == {"GBPUSD": expected_crossed}
    assert len(quotes) == 2 * len(pairs) - expected_crossed
    assert feed.stats.ticks_published == len(quotes)
    assert not any(q.ask < q.bid for q in quotes)
    first_bid, first_ask = pairs[0]
    bar_ms = midnight_ms(date(2012, 2, 1))
    assert first_bid[0] == "2012-02-01 00:00:00+00:00"
    assert quotes[0] == Quote(
        "GBPUSD", Decimal(first_bid[1]), Decimal(first_ask[1]), bar_ms, "replay"
    )
    assert quotes[1] == Quote(
        "GBPUSD", Decimal(first_bid[4]), Decimal(first_ask[4]), bar_ms + 59_999, "replay"
    )
    assert feed.health()["crossed_dropped"] == expected_crossed


def test_usdjpy_month_crossed_count_matches_files(market_data_dir: Path) -> None:
    pairs = fxcm_pairs(market_data_dir, "usdjpy", "2013-02")
    closes_crossed = sum(Decimal(a[4]) < Decimal(b[4]) for b, a in pairs)
    opens_crossed = sum(Decimal(a[1]) < Decimal(b[1]) for b, a in pairs)
    assert closes_crossed == 683  # README: 683 USDJPY minutes with ask close < bid close
    feed = ReplayFeed(market_data_dir, ["USDJPY"], date(2013, 2, 1), days=28, speed="max")
    published = 0

    def publish(quote: Quote) -> bool:
        nonlocal published
        assert quote.ask >= quote.bid
        published += 1
        return True

    assert feed.step_until(2**62, publish) == published
    assert feed.stats.crossed_dropped == closes_crossed + opens_crossed
    assert published == 2 * len(pairs) - closes_crossed - opens_crossed


def test_btcusd_two_quotes_per_minute_row(market_data_dir: Path) -> None:
    rows = zip_rows(market_data_dir / "coinbase_btcusd_m1_quote_lean" / "20170903_quote.zip")
    feed = ReplayFeed(market_data_dir, ["BTCUSD"], date(2017, 9, 3))
    quotes = collect(feed)
    assert len(quotes) == 2 * len(rows) == 2 * 1438
    base = midnight_ms(date(2017, 9, 3))
    assert quotes[0] == Quote("BTCUSD", Decimal("4642.42"), Decimal("4649.95"), base, "replay")
    assert quotes[2] == Quote(
        "BTCUSD", Decimal("4645.1"), Decimal("4652.7"), base + 60_000, "replay"
    )
    for row, (open_q, close_q) in zip(
        rows, zip(quotes[::2], quotes[1::2], strict=True), strict=True
    ):
        assert open_q.time_ms == base + int(row[0])
        assert close_q.time_ms == base + int(row[0]) + 59_999
        assert (open_q.bid, open_q.ask) == (Decimal(row[1]), Decimal(row[6]))
        assert (close_q.bid, close_q.ask) == (Decimal(row[4]), Decimal(row[9]))


def test_usdjpy_truefx_ticks_on_2013_01_01(market_data_dir: Path) -> None:
    with (market_data_dir / "truefx_usdjpy_ticks_nautilus.csv").open() as f:
        rows = list(csv.reader(f))[1:]
    feed = ReplayFeed(market_data_dir, ["USDJPY"], date(2013, 1, 1))
    quotes = collect(feed)
    assert len(quotes) == len(rows) == 1000
    # 2013-01-01 22:00:00.295000+00:00,86.655,86.728
    assert quotes[0] == Quote(
        "USDJPY",
        Decimal("86.655"),
        Decimal("86.728"),
        midnight_ms(date(2013, 1, 1)) + 22 * 3_600_000 + 295,
        "replay",
    )


# --- step mode, loop, run pacing -------------------------------------------------------------


def test_step_until_is_inclusive_counts_and_resumes(market_data_dir: Path) -> None:
    rows = zip_rows(market_data_dir / EURUSD_DIR / "20140507_quote.zip")
    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7))
    got: list[Quote] = []
    first = EPOCH_2014_05_07 + 7135
    assert feed.first_time_ms() == first
    assert feed.next_time_ms() == first
    assert feed.step_until(first - 1, got.append) == 0
    assert feed.step_until(first, got.append) == 1  # boundary inclusive
    assert feed.next_time_ms() == EPOCH_2014_05_07 + 16_860
    assert feed.step_until(first, got.append) == 0  # nothing left at that time
    noon = EPOCH_2014_05_07 + 12 * 3_600_000
    until_noon = sum(1 for r in rows if int(r[0]) <= 12 * 3_600_000)
    assert feed.step_until(noon, got.append) == until_noon - 1
    assert len(got) == until_noon
    next_ms = feed.next_time_ms()
    assert next_ms is not None and next_ms > noon
    rest = feed.step_until(2**62, got.append)
    assert rest == len(rows) - until_noon
    assert feed.next_time_ms() is None
    assert feed.step_until(2**62, got.append) == 0
    assert feed.first_time_ms() == first
    assert feed.stats.ticks_published == len(got) == len(rows)


async def test_run_resumes_after_step_until(market_data_dir: Path) -> None:
    expected = collect(ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7)))
    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7), speed="max")
    got: list[Quote] = []
    stepped = feed.step_until(EPOCH_2014_05_07 + 3_600_000, got.append)
    assert 0 < stepped < len(expected)
    await feed.run(got.append)
    assert got == expected  # one shared cursor: nothing repeated, nothing skipped
    assert feed.health()["finished"] is True
    assert feed.health()["ticks_published"] == len(expected)


def test_loop_shifts_by_whole_days_and_never_goes_back(market_data_dir: Path) -> None:
    rows = zip_rows(market_data_dir / EURUSD_DIR / "20140507_quote.zip")
    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7), loop=True)
    got = collect(feed, EPOCH_2014_05_07 + DAY_MS + 16_860)
    assert len(got) == len(rows) + 2
    assert feed.stats.loops == 1
    assert got[len(rows)].time_ms == got[0].time_ms + DAY_MS
    assert got[len(rows)].ask == got[0].ask
    times = [q.time_ms for q in got]
    assert times == sorted(times)
    assert not feed.finished


async def test_run_max_yields_every_batch(market_data_dir: Path) -> None:
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    feed = ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 5, 7), speed="max", sleep=fake_sleep)
    clock = MarketClock(driven=True, start_ms=0)
    book = QuoteBook(clock, clock_provider="replay")
    await feed.run(book.publish)
    assert book.stats.ticks == feed.stats.ticks_published == 41_367
    assert sleeps == [0] * math.ceil(41_367 / MAX_BATCH)
    assert clock.now_ms() == EPOCH_2014_05_07 + 86_382_008
    latest = book.get("EURUSD")
    assert latest is not None
    assert (latest.bid, latest.ask) == (Decimal("1.39101"), Decimal("1.39113"))


def test_pacing_schedule_is_pure_and_exact() -> None:
    anchor = 1_000_000
    assert due_offset_s(anchor, anchor, 1) == 0
    assert due_offset_s(anchor + 1500, anchor, 1) == 1.5
    assert due_offset_s(anchor + 1500, anchor, 10) == pytest.approx(0.15)
    assert due_offset_s(anchor + 60_000, anchor, 0.5) == 120
    assert horizon_ms(0, anchor, 1) == anchor
    assert horizon_ms(1.5, anchor, 1) == anchor + 1500
    assert horizon_ms(0.15, anchor, 10) == anchor + 1500
    assert horizon_ms(0.0009, anchor, 1) == anchor  # floor: a tick is never early
    # No drift: the horizon after n steps is computed from the start, not accumulated.
    assert horizon_ms(1000 * 0.1, anchor, 3) == anchor + 300_000


class FakeTime:
    """A monotonic clock that only moves when the replay sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


class StopReplay(Exception):
    pass


async def test_run_paces_ticks_and_batches_equal_times(market_data_dir: Path) -> None:
    clock = FakeTime()
    feed = ReplayFeed(
        market_data_dir,
        ["EURUSD"],
        date(2014, 5, 7),
        speed=4,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    published: list[tuple[float, Quote]] = []

    def publish(quote: Quote) -> bool:
        published.append((clock.now, quote))
        if len(published) == 3000:
            raise StopReplay
        return True

    with pytest.raises(StopReplay):
        await feed.run(publish)
    anchor = published[0][1].time_ms
    assert anchor == EPOCH_2014_05_07 + 7135
    for wall, quote in published:
        # published exactly when due: t0 + (tick - first tick) / speed
        assert wall == pytest.approx(100.0 + (quote.time_ms - anchor) / 4000, abs=1e-9)
    # Ticks sharing a timestamp go out in one batch: one sleep per distinct time.
    distinct_times = len({q.time_ms for _, q in published})
    assert distinct_times < len(published)
    assert len([s for s in clock.sleeps if s > 0]) == distinct_times - 1
    assert sum(clock.sleeps) == pytest.approx((published[-1][1].time_ms - anchor) / 4000)
    assert feed.stats.ticks_published == 2999  # the tick whose publish raised is not counted
    # ... but it was handed over, so the cursor resumes after it (no duplicate on retry).
    rows = zip_rows(market_data_dir / EURUSD_DIR / "20140507_quote.zip")
    assert feed.next_time_ms() == EPOCH_2014_05_07 + int(rows[3000][0])


# --- errors, schema, plugin registration ---------------------------------------------------


def test_missing_symbol_range_names_symbol_and_dates(market_data_dir: Path) -> None:
    with pytest.raises(ValueError, match="BTCUSD") as excinfo:
        ReplayFeed(market_data_dir, ["EURUSD", "BTCUSD"], date(2014, 5, 7), days=2)
    message = str(excinfo.value)
    assert "2014-05-07..2014-05-08" in message
    assert "2017-09-03..2017-09-04, 2017-12-17, 2018-04-04..2018-04-05" in message


def test_missing_eurusd_dates_lists_available(market_data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"no EURUSD data for 2014-06-01") as excinfo:
        ReplayFeed(market_data_dir, ["EURUSD"], date(2014, 6, 1))
    assert "2014-05-01..2014-05-02, 2014-05-04..2014-05-09, 2014-05-11..2014-05-15" in str(
        excinfo.value
    )


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        ReplayFeed(tmp_path / "nowhere", ["EURUSD"], date(2014, 5, 7))
    with pytest.raises(ValueError, match="no data files found"):
        ReplayFeed(tmp_path, ["EURUSD"], date(2014, 5, 7))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symbols": ["EURUSD", "EURUSD"]}, "unique"),
        ({"symbols": ["DOGEUSD"]}, "unknown symbol 'DOGEUSD'"),
        ({"days": 0}, "days"),
        ({"speed": 0}, "speed"),
        ({"speed": "fast"}, "speed"),
    ],
)
def test_invalid_arguments(market_data_dir: Path, kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"symbols": ["EURUSD"], "start": date(2014, 5, 7), **kwargs}
    with pytest.raises(ValueError, match=match):
        ReplayFeed(market_data_dir, **arguments)


def test_config_schema_is_valid_and_defaults_validate() -> None:
    schema = replay.CONFIG_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert set(properties) == {"data_dir", "symbols", "start", "days", "speed", "loop"}
    assert all(prop["description"] for prop in properties.values())
    defaults = {key: prop["default"] for key, prop in properties.items()}
    assert defaults == {
        "data_dir": "../shared/data/market",
        "symbols": ["EURUSD", "XAUUSD"],
        "start": "2014-05-07",
        "days": 1,
        "speed": 1,
        "loop": False,
    }
    validator.validate(defaults)
    validator.validate({})
    validator.validate({"speed": "max", "symbols": ["GBPUSD", "USDJPY", "BTCUSD"]})
    invalid: list[dict[str, object]] = [
        {"speed": 0},
        {"speed": -1},
        {"speed": "fast"},
        {"days": 0},
        {"days": 1.5},
        {"loop": "yes"},
        {"symbols": []},
        {"symbols": ["EURUSD", "EURUSD"]},
        {"symbols": ["DOGEUSD"]},
        {"start": "07/05/2014"},
        {"start": "2014-02-30"},
        {"data_dir": ""},
        {"colour": "blue"},
    ]
    for bad in invalid:
        assert not validator.is_valid(bad), bad


def test_plugin_registers_clock_driving_feed(market_data_dir: Path) -> None:
    (entry_point,) = [
        ep for ep in entry_points(group="brokerkernel.plugins") if ep.name == "replay"
    ]
    assert entry_point.load() is replay
    (descriptor,) = list(replay.broker_register_price_feeds())
    assert isinstance(descriptor, PriceFeed)
    assert descriptor.name == "replay"
    assert descriptor.drives_clock is True
    context = PluginContext(
        plugin="replay",
        config={"data_dir": str(market_data_dir), "symbols": ["EURUSD"], "start": "2014-05-07"},
        clock=MarketClock(driven=True),
    )
    feed = descriptor.factory(context)
    assert isinstance(feed, ReplayFeed)
    assert feed.symbols() == ["EURUSD"]
    assert feed.dates() == [date(2014, 5, 7)]
    assert feed.first_time_ms() == EPOCH_2014_05_07 + 7135


def test_default_config_resolves_against_working_directory(
    market_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    workdir = tmp_path / "main"
    workdir.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "market").symlink_to(market_data_dir)
    monkeypatch.chdir(workdir)
    feed = ReplayFeed.from_context(
        PluginContext(plugin="replay", config={}, clock=MarketClock(driven=True))
    )
    assert feed.symbols() == ["EURUSD", "XAUUSD"]
    assert feed.next_time_ms() == EPOCH_2014_05_07 + 6  # XAUUSD's 6.949 ms comes first


def test_reading_is_lazy(market_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_zipfile = zipfile.ZipFile

    def recording_zipfile(path: Path) -> zipfile.ZipFile:
        opened.append(Path(path).name)
        return real_zipfile(path)

    monkeypatch.setattr(zipfile, "ZipFile", recording_zipfile)  # as sources.py looks it up
    feed = ReplayFeed(market_data_dir, ["XAUUSD"], date(2014, 5, 1), days=15)
    assert opened == []  # construction only lists the directory
    first_minute = midnight_ms(date(2014, 5, 1)) + 60_000
    assert feed.step_until(first_minute, lambda q: True) > 0
    assert opened == ["20140501_quote.zip"]  # one day of fifteen opened so far
    assert feed.stats.last_time_ms is not None
    assert feed.stats.last_time_ms <= first_minute
