"""Built-in prop rules through the public path: registry, JSON Schema, configure, verdicts.

Every worked example of DOMAIN.md ("Prop-firm challenge rules") is reproduced exactly,
with the boundary at, 0.01 above and 0.01 below each floor both ways (``inclusive``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator, ValidationError
from test_plugins import on_sys_path, write_dist_info

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import PluginContext
from brokerkernel.kernel.marketdata.calendar import CalendarEvent, CalendarIndex
from brokerkernel.kernel.plugins import PluginManager
from brokerkernel.kernel.prop.days import trading_days_of
from brokerkernel.kernel.prop.rules import (
    AccountView,
    DaySnapshot,
    History,
    Level,
    LevelKind,
    OrderIntent,
    PositionView,
    PropRule,
    RuleInput,
    Status,
)

RULE_TYPES = (
    "consistency",
    "daily_loss",
    "max_loss",
    "news_blackout",
    "order_limits",
    "profit_target",
    "trading_days",
    "weekend_holding",
)
ACME_PROP_SRC = Path(__file__).resolve().parent / "thirdparty" / "acme_prop_rules" / "src"
PRAGUE = ZoneInfo("Europe/Prague")
D = Decimal
CENT = D("0.01")
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday
PHASE_START = datetime(2026, 11, 2, 9, tzinfo=UTC)
US = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> PluginManager:
    """The first-party rule plugins loaded through their installed entry points."""
    path = tmp_path_factory.mktemp("prop-rules") / "plugins.toml"
    path.write_text("".join(f"[plugins.{name}]\n" for name in RULE_TYPES), encoding="utf-8")
    return PluginManager.load(path, env={})


@pytest.fixture(scope="module")
def calendar() -> CalendarIndex:
    def event(id_: int, name: str, currency: str, impact: str, at: datetime) -> CalendarEvent:
        return CalendarEvent(
            id_, name, "United States", currency, None, impact, at, None, None, None
        )

    return CalendarIndex(
        [
            event(1, "Non-Farm Payrolls", "USD", "high", utc(2026, 11, 6, 13, 30)),
            event(2, "ECB Rate Decision", "EUR", "high", utc(2026, 11, 6, 15, 0)),
            event(3, "ISM Services PMI", "USD", "medium", utc(2026, 11, 6, 17, 0)),
        ]
    )


PAIRS = {
    "EURUSD": ("EUR", "USD"),
    "USDJPY": ("USD", "JPY"),
    "GBPJPY": ("GBP", "JPY"),
    "XAUUSD": ("XAU", "USD"),
}


def catalog_terms(symbol: str) -> SimpleNamespace | None:
    """The catalog's base/quote currencies as the kernel's terms cache gives them."""
    pair = PAIRS.get(symbol)
    return None if pair is None else SimpleNamespace(base_currency=pair[0], quote_currency=pair[1])


@pytest.fixture(scope="module")
def configure(manager: PluginManager, calendar: CalendarIndex) -> Any:
    """``configure(type, params, name=type)``: schema-validated params → PropRule."""
    kernel = SimpleNamespace(calendar=calendar, terms=SimpleNamespace(instrument=catalog_terms))

    def build(rule_type: str, params: Mapping[str, Any], name: str | None = None) -> PropRule:
        registered = manager.registries.prop_rules[rule_type]
        schema = registered.descriptor.config_schema
        Draft202012Validator.check_schema(schema)
        Draft202012Validator(schema).validate(params)
        context = PluginContext(registered.plugin, {}, MarketClock(), kernel)
        rule: PropRule = registered.descriptor.factory(context).configure(name or rule_type, params)
        return rule

    return build


def position(
    ticket: int = 1,
    symbol: str = "EURUSD",
    opened_at: datetime = NOW,
    notional_usd: str = "0",
) -> PositionView:
    return PositionView(
        ticket, symbol, 1, D("1"), D("1.1"), None, None, D("0"), opened_at, D(notional_usd)
    )


def state(
    equity: str | Decimal,
    *,
    balance: str | Decimal | None = None,
    initial: str = "100000",
    start_balance: str = "102000",
    start_equity: str = "101500",
    positions: Sequence[PositionView] = (),
    history: History | None = None,
    now: datetime = NOW,
    phase_started_at: datetime = PHASE_START,
) -> RuleInput:
    account = AccountView(
        login=10001,
        currency="USD",
        initial_balance=D(initial),
        balance=D(balance if balance is not None else equity),
        equity=D(equity),
        margin_used=D(0),
        positions=positions,
        now=now,
        timezone=PRAGUE,
        phase="phase_1",
        phase_started_at=phase_started_at,
    )
    day = DaySnapshot(date(2026, 11, 18), utc(2026, 11, 17, 23), D(start_balance), D(start_equity))
    return RuleInput(account, day, history or History(D(initial), D(initial)))


def order(
    volume: str = "1",
    *,
    symbol: str = "EURUSD",
    sl: str | None = "1.0",
    notional: str = "0",
    at: datetime = NOW,
    closing: bool = False,
    origin: str = "trader",
) -> OrderIntent:
    return OrderIntent(
        symbol,
        1,
        D(volume),
        D("1.1"),
        None if sl is None else D(sl),
        None,
        D(notional),
        at,
        closing,
        origin,
    )


# ----------------------------------------------------------------------- registry


def test_every_rule_type_is_its_own_plugin_with_a_valid_schema(manager: PluginManager) -> None:
    registry = manager.registries.prop_rules
    assert registry.names() == sorted(RULE_TYPES)
    for name in RULE_TYPES:
        assert registry[name].plugin == name
        schema = registry[name].descriptor.config_schema
        Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("rule_type", "params", "message"),
    [
        ("daily_loss", {"percent": 5}, "'model' is a required property"),
        ("daily_loss", {"model": "equity_pct"}, "is not valid under any of the given schemas"),
        ("daily_loss", {"model": "equity_pct", "percent": 5, "amount": 10}, "is not valid under"),
        ("daily_loss", {"model": "nope", "percent": 5}, "'nope' is not one of"),
        ("max_loss", {"model": "static", "percent": 0}, "less than or equal to the minimum"),
        ("consistency", {"max_best_day_pct": 101}, "greater than the maximum of 100"),
        ("order_limits", {"max_lots": 5}, "Additional properties are not allowed"),
        ("weekend_holding", {"close_time": "24:00"}, "does not match"),
        ("news_blackout", {"impacts": ["huge"]}, "'huge' is not one of"),
    ],
)
def test_schemas_refuse_bad_params(
    manager: PluginManager, rule_type: str, params: dict[str, Any], message: str
) -> None:
    schema = manager.registries.prop_rules[rule_type].descriptor.config_schema
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(params)]
    assert any(message in e for e in errors), errors


# --------------------------------------------------------------------- daily loss

DAILY_FLOORS = [
    ("balance_minus_initial_pct", "97000"),  # FTMO
    ("max_balance_equity_pct", "96900"),  # The5ers
    ("balance_pct", "96900"),  # Alpha Capital
    ("max_balance_equity_minus_initial_pct", "97000"),  # Blue Guardian
    ("equity_pct", "96425"),  # Fintokei: 101,500 x 0.95
    ("fixed_initial_pct", "95000"),
]


@pytest.mark.parametrize(("model", "floor"), DAILY_FLOORS)
def test_daily_loss_floors_of_the_domain_example(configure: Any, model: str, floor: str) -> None:
    """Initial 100,000; at reset balance 102,000 and equity 101,500; 5%."""
    rule = configure("daily_loss", {"model": model, "percent": 5})
    assert list(rule.levels(state("101000"))) == [
        Level("daily_loss", D(floor), LevelKind.FLOOR, False)
    ]
    result = rule.evaluate(state("101000"))
    assert result.status is Status.PASS
    assert result.numbers["floor"] == D(floor)


@pytest.mark.parametrize(("model", "floor"), DAILY_FLOORS)
@pytest.mark.parametrize("inclusive", [True, False])
def test_daily_loss_boundaries(configure: Any, model: str, floor: str, inclusive: bool) -> None:
    rule = configure("daily_loss", {"model": model, "percent": 5, "inclusive": inclusive})
    at = D(floor)
    expected_at = Status.BREACH if inclusive else Status.PASS
    assert rule.evaluate(state(at)).status is expected_at
    assert rule.evaluate(state(at + CENT)).status is Status.PASS
    below = rule.evaluate(state(at - CENT))
    assert below.status is Status.BREACH
    assert below.numbers["equity"] == at - CENT
    assert below.numbers["headroom"] == -CENT
    (level,) = rule.levels(state(at))
    assert level.inclusive is inclusive
    assert level.passed_by(at) is inclusive


def test_daily_loss_amount_and_reason(configure: Any) -> None:
    rule = configure("daily_loss", {"model": "balance_minus_initial_pct", "amount": 3000})
    result = rule.evaluate(state("98999.99"))
    assert result.status is Status.BREACH
    assert result.reason == "Daily loss limit: equity 98999.99 reached the daily floor 99000"
    assert result.numbers["floor"] == D("99000")
    assert result.numbers["limit"] == D("3000")
    assert result.numbers["used"] == D("3000.01")
    assert result.numbers["start_balance"] == D("102000")


def test_daily_loss_warn_levels_at_50_and_80_percent_of_the_allowance(configure: Any) -> None:
    rule = configure(
        "daily_loss",
        {"model": "balance_minus_initial_pct", "percent": 5, "warn_at_pct": [80, 50]},
    )
    # allowance 5,000 below the start-of-day balance 102,000
    assert list(rule.levels(state("101000"))) == [
        Level("daily_loss", D("97000"), LevelKind.FLOOR, False),
        Level("daily_loss.warn_50", D("99500"), LevelKind.FLOOR, True),
        Level("daily_loss.warn_80", D("98000"), LevelKind.FLOOR, True),
    ]
    assert rule.evaluate(state("99500.01")).status is Status.PASS
    half = rule.evaluate(state("99500"))
    assert (half.status, half.numbers["warn_pct"], half.numbers["used"]) == (
        Status.WARN,
        D("50"),
        D("2500"),
    )
    assert half.numbers["used_pct"] == D("50.00")
    assert half.reason == "Daily loss: 50% of the allowance used (floor 97000)"
    eighty = rule.evaluate(state("98000"))
    assert (eighty.status, eighty.numbers["warn_pct"]) == (Status.WARN, D("80"))
    assert rule.evaluate(state("96999.99")).status is Status.BREACH


# ----------------------------------------------------------------------- max loss


@pytest.mark.parametrize("inclusive", [True, False])
def test_static_max_loss_ftmo_10_percent(configure: Any, inclusive: bool) -> None:
    rule = configure("max_loss", {"model": "static", "percent": 10, "inclusive": inclusive})
    assert rule.evaluate(state("95000")).numbers["floor"] == D("90000")
    assert rule.evaluate(state("90000")).status is (Status.BREACH if inclusive else Status.PASS)
    assert rule.evaluate(state("90000.01")).status is Status.PASS
    assert rule.evaluate(state("89999.99")).status is Status.BREACH


@pytest.mark.parametrize(
    "model",
    [
        "balance_minus_initial_pct",
        "balance_pct",
        "max_balance_equity_pct",
        "max_balance_equity_minus_initial_pct",
        "equity_pct",
        "fixed_initial_pct",
    ],
)
@pytest.mark.parametrize("allowance", [{"percent": 4.5}, {"percent": 5}, {"amount": 2500.5}])
def test_daily_loss_day_levels_equal_the_levels_of_each_account(
    configure: Any, model: str, allowance: dict[str, Any]
) -> None:
    """The bulk day-reset path (``day_levels``) gives, for 500 random accounts
    (cent-exact balances and equities, various sizes), exactly the Decimal levels
    ``levels`` gives account by account."""
    rule = configure("daily_loss", {"model": model, **allowance, "warn_at_pct": [50, 80]})
    rng = random.Random(f"{model}{allowance}")

    def cents(spread: int) -> Decimal:
        return D(rng.randint(-spread, spread)) / 100

    accounts = []
    for _ in range(500):
        initial = D(rng.choice([5000, 10000, 50000, 100000, 200000]))
        start_balance = initial + cents(1_000_000)
        accounts.append((start_balance, start_balance + cents(500_000), initial))
    bulk = rule.day_levels(*([account[i] for account in accounts] for i in range(3)))
    assert list(bulk) == ["daily_loss", "daily_loss.warn_50", "daily_loss.warn_80"]
    for index, (start_balance, start_equity, initial) in enumerate(accounts):
        expected = rule.levels(
            state(
                "0",
                initial=str(initial),
                start_balance=str(start_balance),
                start_equity=str(start_equity),
            )
        )
        assert [bulk[level.name][index] for level in expected] == [lv.value for lv in expected]


def test_topstep_trailing_eod_balance_sequence(configure: Any) -> None:
    """50K with a 2,000 limit: 48,000 → +500 48,500 → -500 stays → 52,500 locks 50,000."""
    rule = configure(
        "max_loss", {"model": "trailing_eod_balance", "amount": 2000, "lock_offset": 0}
    )

    def floor(peak: str, previous: str | None) -> Any:
        history = History(D(peak), D(peak), None if previous is None else D(previous))
        return rule.evaluate(state("49000", initial="50000", history=history)).numbers

    assert floor("50000", None)["floor"] == D("48000")
    assert floor("50500", "48000")["floor"] == D("48500")
    # a losing day: the end-of-day balance falls back to 50,000, the floor stays
    assert floor("50500", "48500")["floor"] == D("48500")
    assert floor("50000", "48500")["floor"] == D("48500")  # never decreasing
    locked = floor("52500", "48500")
    assert (locked["floor"], locked["locked"], locked["lock_level"]) == (D("50000"), 1, D("50000"))
    assert floor("55000", "50000")["floor"] == D("50000")


@pytest.mark.parametrize("inclusive", [True, False])
def test_trailing_floor_boundaries(configure: Any, inclusive: bool) -> None:
    rule = configure(
        "max_loss",
        {"model": "trailing_eod_balance", "amount": 2000, "inclusive": inclusive},
    )
    history = History(D("50500"), D("50500"), D("48000"))

    def status(equity: Decimal) -> Status:
        return rule.evaluate(state(equity, initial="50000", history=history)).status

    assert status(D("48500")) is (Status.BREACH if inclusive else Status.PASS)
    assert status(D("48500.01")) is Status.PASS
    assert status(D("48499.99")) is Status.BREACH


def test_trailing_intraday_equity_follows_the_peak_and_locks(configure: Any) -> None:
    rule = configure(
        "max_loss",
        {"model": "trailing_intraday_equity", "amount": 2500, "lock_offset": 100},
    )
    start = state("50000", initial="50000")
    # one trailing floor for the risk engine: 2,500 below the peak, locked at 50,100
    trailing = [Level("max_loss", D("2500"), LevelKind.TRAILING_FLOOR, False, D("50100"))]
    assert list(rule.levels(start)) == trailing
    # a new intraday peak (unrealised profit included) before the plugin stored it
    higher = state(
        "51000", balance="50000", initial="50000", history=History(D("50000"), D("50800"))
    )
    assert rule.evaluate(higher).numbers["floor"] == D("48500")
    assert list(rule.levels(higher)) == trailing  # the engine's peak moves the floor
    assert trailing[0].floor_at(D("51000")) == D("48500")
    # equity falls back: the floor stays at the stored trailing floor
    fallen = state("49000", initial="50000", history=History(D("50000"), D("51000"), D("48500")))
    assert rule.evaluate(fallen).numbers["floor"] == D("48500")
    # peak 53,000 → 50,500, locked at initial + 100 = 50,100: no peak level any more
    locked = state("52000", initial="50000", history=History(D("50000"), D("53000"), D("48500")))
    assert rule.evaluate(locked).numbers["floor"] == D("50100")
    assert trailing[0].floor_at(D("53000")) == D("50100")


@pytest.mark.parametrize("lock_offset", [None, 0])
def test_trailing_intraday_levels_match_the_exact_floor_and_warnings(
    configure: Any, lock_offset: int | None
) -> None:
    """At every peak, the engine's trailing levels (floor and warnings) sit where the
    rule's exact floor and warning levels do."""
    rule = configure(
        "max_loss",
        {
            "model": "trailing_intraday_equity",
            "percent": 3,
            "warn_at_pct": [50, 80],
            "lock_offset": lock_offset,
            "inclusive": True,
        },
    )
    for peak in ("200000", "200123.45", "203700", "205999.99", "206000", "251234.56"):
        at_peak = state(peak, balance="200000", initial="200000", history=History(D(peak), D(peak)))
        levels = list(rule.levels(at_peak))
        floor = rule.evaluate(at_peak).numbers["floor"]
        assert [lv.kind for lv in levels] == [LevelKind.TRAILING_FLOOR] * 3
        assert [lv.floor_at(D(peak)) for lv in levels] == [
            floor,
            floor + D("6000") - D("3000"),
            floor + D("6000") - D("4800"),
        ]
        assert levels[0].passed_by(floor, D(peak)) and not levels[0].passed_by(
            floor + D("0.01"), D(peak)
        )
    assert rule.evaluate(state("260000", initial="200000")).numbers["floor"] == (
        D("254000") if lock_offset is None else D("200000")
    )


def test_ftmo_one_step_floor(configure: Any) -> None:
    """max(highest midnight balance, initial) - 10% of initial, never decreasing."""
    rule = configure("max_loss", {"model": "ftmo_one_step", "percent": 10})

    def floor(peak_eod: str, previous: str | None = None) -> Decimal:
        history = History(D(peak_eod), D(peak_eod), None if previous is None else D(previous))
        value = rule.evaluate(state("95000", history=history)).numbers["floor"]
        assert isinstance(value, Decimal)
        return value

    assert floor("100000") == D("90000")
    assert floor("98000") == D("90000")  # never below initial - 10%
    assert floor("104000", "90000") == D("94000")
    assert floor("101000", "94000") == D("94000")


# ------------------------------------------------------------------ profit target


def test_profit_target_on_closed_balance_requires_flat(configure: Any) -> None:
    rule = configure("profit_target", {"percent": 10})
    assert rule.objective is True
    assert list(rule.levels(state("110000"))) == []
    assert rule.evaluate(state("110000")).status is Status.PASS
    assert rule.evaluate(state("109999.99")).status is Status.PENDING
    open_ = rule.evaluate(state("110500", balance="110000", positions=[position()]))
    assert open_.status is Status.PENDING
    assert open_.reason == "Profit target reached on balance; close all positions to complete it"
    assert open_.numbers["progress_pct"] == D("100.00")
    relaxed = configure("profit_target", {"percent": 10, "require_flat": False})
    assert relaxed.evaluate(state("110500", balance="110000", positions=[position()])).status is (
        Status.PASS
    )
    exclusive = configure("profit_target", {"amount": 10000, "inclusive": False})
    assert exclusive.evaluate(state("110000")).status is Status.PENDING
    assert exclusive.evaluate(state("110000.01")).status is Status.PASS


def test_profit_target_on_equity_is_a_ceiling_level(configure: Any) -> None:
    rule = configure("profit_target", {"percent": 8, "basis": "equity"})
    assert list(rule.levels(state("100000"))) == [
        Level("profit_target", D("108000"), LevelKind.CEILING, True)
    ]
    result = rule.evaluate(state("108000", balance="100000", positions=[position()]))
    assert result.status is Status.PASS
    assert result.numbers["value"] == D("8000")
    assert rule.evaluate(state("107999.99")).status is Status.PENDING


# ------------------------------------------------------------------- trading days


def test_a_multi_day_trade_counts_as_one_trading_day(configure: Any) -> None:
    opened = [
        utc(2026, 3, 26, 9),
        utc(2026, 3, 26, 15),  # same Prague day
        utc(2026, 3, 27, 22, 59, 59),  # 23:59:59 CET: still 27 March
        utc(2026, 3, 27, 23),  # 00:00 CET 28 March, held until 31 March: counts once
    ]
    days = trading_days_of(opened, "00:00", PRAGUE)
    assert days == {date(2026, 3, 26), date(2026, 3, 27), date(2026, 3, 28)}
    history = History(D("100000"), D("100000"), trading_days=days)
    four = configure("trading_days", {"min_trading_days": 4})
    result = four.evaluate(state("100000", history=history))
    assert (result.status, result.reason, result.numbers["trading_days"]) == (
        Status.PENDING,
        "3 of 4 minimum trading days",
        3,
    )
    three = configure("trading_days", {"min_trading_days": 3})
    assert three.evaluate(state("100000", history=history)).status is Status.PASS


def test_maximum_trading_period_ends_at_the_same_local_time_across_dst(configure: Any) -> None:
    rule = configure("trading_days", {"max_trading_period_days": 30})
    started = utc(2026, 3, 1, 10)  # 11:00 CET; 30 days later 11:00 CEST = 09:00Z
    end = utc(2026, 3, 31, 9)
    before = state("100000", now=end - US, phase_started_at=started)
    assert rule.evaluate(before).status is Status.PASS
    assert list(rule.deadlines(before)) == [end]
    over = rule.evaluate(state("100000", now=end, phase_started_at=started))
    assert (over.status, over.reason) == (Status.BREACH, "Maximum trading period of 30 days ended")
    assert over.numbers["period_ends_at"] == "2026-03-31T09:00:00Z"


def test_inactivity_counts_from_the_last_trade(configure: Any) -> None:
    rule = configure("trading_days", {"inactivity_days": 30})
    history = History(D("100000"), D("100000"), last_trade_at=utc(2026, 10, 1, 12))
    deadline = utc(2026, 10, 31, 13)  # 14:00 CEST → 14:00 CET
    assert rule.evaluate(state("1", history=history, now=deadline - US)).status is Status.PASS
    breached = rule.evaluate(state("1", history=history, now=deadline))
    assert (breached.status, breached.reason) == (Status.BREACH, "No trade for 30 days")
    assert list(rule.deadlines(state("1", history=history))) == [deadline]


# -------------------------------------------------------------------- consistency


def profits(*values: str) -> History:
    return History(
        D("100000"),
        D("100000"),
        daily_profit={date(2026, 11, 2 + i): D(v) for i, v in enumerate(values)},
    )


def test_consistency_ftmo_50_percent_equal_passes(configure: Any) -> None:
    rule = configure("consistency", {"max_best_day_pct": 50, "inclusive": True})
    result = rule.evaluate(state("110000", history=profits("5000", "3000", "2000")))
    assert result.status is Status.PASS
    assert (result.numbers["best_day"], result.numbers["total"], result.numbers["share_pct"]) == (
        D("5000"),
        D("10000"),
        D("50.00"),
    )
    over = rule.evaluate(state("110000", history=profits("5000.01", "3000", "1999.99")))
    assert over.status is Status.PENDING


def test_consistency_topstep_40_percent_equal_fails(configure: Any) -> None:
    rule = configure("consistency", {"max_best_day_pct": 40, "inclusive": False})
    equal = rule.evaluate(state("110000", history=profits("4000", "3000", "3000")))
    assert (equal.status, equal.reason) == (
        Status.PENDING,
        "Best day 4000 is 40.00% of the total profit 10000 (limit 40%)",
    )
    below = rule.evaluate(state("110000", history=profits("3999.99", "3000", "3000.01")))
    assert below.status is Status.PASS


def test_consistency_without_profit_is_pending(configure: Any) -> None:
    rule = configure("consistency", {"max_best_day_pct": 50})
    result = rule.evaluate(state("99000", history=profits("500", "-1500")))
    assert (result.status, result.numbers["share_pct"]) == (Status.PENDING, None)


# ------------------------------------------------------------------- order limits


@pytest.mark.parametrize("inclusive", [True, False])
def test_max_lots_per_order(configure: Any, inclusive: bool) -> None:
    rule = configure("order_limits", {"max_lots_per_order": 5, "inclusive": inclusive})
    at_max = rule.check_order(state("100000"), order("5"))
    assert (at_max is None) is inclusive
    assert rule.check_order(state("100000"), order("4.99")) is None
    refused = rule.check_order(state("100000"), order("5.01"))
    assert refused is not None
    assert (refused.status, refused.reason) == (
        Status.BREACH,
        "Order volume 5.01 lots exceeds the maximum of 5",
    )
    assert refused.numbers == {"value": D("5.01"), "limit": D("5")}


def test_max_open_positions_and_closes(configure: Any) -> None:
    rule = configure("order_limits", {"max_open_positions": 3})
    two = state("100000", positions=[position(1), position(2)])
    three = state("100000", positions=[position(1), position(2), position(3)])
    assert rule.check_order(two, order()) is None
    refused = rule.check_order(three, order())
    assert refused is not None
    assert refused.reason == "4 open positions would exceed the maximum of 3"
    assert rule.check_order(three, order(closing=True)) is None


def test_max_exposure_in_usd(configure: Any) -> None:
    rule = configure("order_limits", {"max_exposure_usd": 200000})
    held = state("100000", positions=[position(1, notional_usd="150000")])
    assert rule.check_order(held, order(notional="50000")) is None
    refused = rule.check_order(held, order(notional="50000.01"))
    assert refused is not None
    assert refused.numbers == {"value": D("200000.01"), "limit": D("200000")}
    assert rule.evaluate(held).numbers == {"open_positions": 1, "exposure_usd": D("150000")}


def test_required_stop_loss(configure: Any) -> None:
    rule = configure("order_limits", {"require_stop_loss": True})
    refused = rule.check_order(state("100000"), order(sl=None))
    assert refused is not None
    assert (refused.status, refused.reason) == (Status.BREACH, "A stop-loss is required")
    assert rule.check_order(state("100000"), order(sl="1.05")) is None
    assert rule.check_order(state("100000"), order(sl=None, closing=True)) is None


# ---------------------------------------------------------------- weekend holding


def test_weekend_holding_breaches_at_the_friday_close_exactly(configure: Any) -> None:
    rule = configure("weekend_holding", {})  # Friday 17:00 to Sunday 17:00 New York
    close = utc(2026, 11, 20, 22)  # EST
    held = [position()]
    assert rule.evaluate(state("1", positions=held, now=close - US)).status is Status.PASS
    breach = rule.evaluate(state("1", positions=held, now=close))
    assert breach.status is Status.BREACH
    assert breach.numbers["friday_close"] == "2026-11-20T22:00:00Z"
    assert breach.numbers["sunday_open"] == "2026-11-22T22:00:00Z"
    assert rule.evaluate(state("1", now=close)).status is Status.PASS  # flat
    reopen = utc(2026, 11, 22, 22)
    assert rule.evaluate(state("1", positions=held, now=reopen - US)).status is Status.BREACH
    assert rule.evaluate(state("1", positions=held, now=reopen)).status is Status.PASS


def test_weekend_holding_refuses_an_unknown_zone(configure: Any) -> None:
    with pytest.raises(ValueError, match="timezone: unknown time zone 'Mars/Olympus'"):
        configure("weekend_holding", {"timezone": "Mars/Olympus"})


def test_weekend_holding_deadline_is_the_next_friday_close(configure: Any) -> None:
    rule = configure("weekend_holding", {"close_time": "16:00", "timezone": "Europe/Prague"})
    assert list(rule.deadlines(state("1", now=NOW))) == [utc(2026, 11, 20, 15)]
    assert list(rule.deadlines(state("1", now=utc(2026, 11, 20, 15)))) == [utc(2026, 11, 20, 15)]
    after = state("1", now=utc(2026, 11, 20, 15) + US)
    assert list(rule.deadlines(after)) == [utc(2026, 11, 27, 15)]
    summer = rule.deadlines(state("1", now=utc(2026, 7, 14, 12)))
    assert list(summer) == [utc(2026, 7, 17, 14)]  # 16:00 CEST


# ------------------------------------------------------------------ news blackout

NFP = utc(2026, 11, 6, 13, 30)


@pytest.mark.parametrize(
    ("at", "refused"),
    [
        (NFP - timedelta(minutes=2) - US, False),
        (NFP - timedelta(minutes=2), True),
        (NFP, True),
        (NFP + timedelta(minutes=2), True),
        (NFP + timedelta(minutes=2) + US, False),
    ],
)
def test_news_window_edges_inclusive(configure: Any, at: datetime, refused: bool) -> None:
    rule = configure("news_blackout", {"minutes_before": 2, "minutes_after": 2})
    result = rule.check_order(state("1"), order(at=at))
    assert (result is not None) is refused
    if result is not None:
        assert result.status is Status.BREACH
        assert result.reason == (
            "News blackout: no open on EURUSD from 2 min before to 2 min after "
            "Non-Farm Payrolls (USD, 2026-11-06T13:30:00Z)"
        )
        assert result.numbers["window_start"] == "2026-11-06T13:28:00Z"
        assert result.numbers["window_end"] == "2026-11-06T13:32:00Z"


def test_news_window_edges_exclusive(configure: Any) -> None:
    rule = configure("news_blackout", {"inclusive": False})
    assert rule.check_order(state("1"), order(at=NFP - timedelta(minutes=2))) is None
    inside = rule.check_order(state("1"), order(at=NFP - timedelta(minutes=2) + US))
    assert inside is not None and inside.status is Status.BREACH
    assert inside.numbers["window_start"] == "2026-11-06T13:28:00Z"
    assert rule.check_order(state("1"), order(at=NFP + timedelta(minutes=2))) is None


def test_news_affects_symbols_by_currency_and_configured_lists(configure: Any) -> None:
    rule = configure("news_blackout", {"currency_symbols": {"USD": ["US30"]}})
    for symbol, refused in [
        ("USDJPY", True),
        ("XAUUSD", True),
        ("US30", True),
        ("GBPJPY", False),
        ("DE40", False),
    ]:
        result = rule.check_order(state("1"), order(symbol=symbol, at=NFP))
        assert (result is not None) is refused, symbol
    # medium impact counts only when configured
    ism = utc(2026, 11, 6, 17)
    assert rule.check_order(state("1"), order(at=ism)) is None
    both = configure("news_blackout", {"impacts": ["high", "medium"]})
    medium = both.check_order(state("1"), order(at=ism))
    assert medium is not None and medium.status is Status.BREACH


@pytest.mark.parametrize(
    ("on_violation", "automatic"),
    [("refuse", None), ("breach", Status.BREACH), ("flag", Status.WARN)],
)
def test_news_on_violation_for_fills_the_trader_did_not_send(
    configure: Any, on_violation: str, automatic: Status | None
) -> None:
    rule = configure("news_blackout", {"on_violation": on_violation})
    trader_close = rule.check_order(state("1"), order(at=NFP, closing=True))
    assert trader_close is not None
    assert trader_close.status is Status.BREACH  # the trader's own close is refused
    assert "no close on EURUSD" in trader_close.reason
    for origin in ("sl", "tp", "stop_out", "pending"):
        fill = rule.check_order(
            state("1"), order(at=NFP, closing=origin != "pending", origin=origin)
        )
        assert (None if fill is None else fill.status) is automatic, origin
    assert rule.evaluate(state("1")).status is Status.PASS


def test_configure_names_levels_after_the_rule_name(configure: Any) -> None:
    rule = configure(
        "daily_loss",
        {"model": "fixed_initial_pct", "percent": 4, "warn_at_pct": [12.5]},
        name="daily_loss_phase2",
    )
    assert [lv.name for lv in rule.levels(state("100000"))] == [
        "daily_loss_phase2",
        "daily_loss_phase2.warn_12.5",
    ]
    assert rule.evaluate(state("95999.99")).rule == "daily_loss_phase2"


def test_plugins_toml_enables_every_rule_type() -> None:
    text = (Path(__file__).resolve().parents[1] / "plugins.toml").read_text(encoding="utf-8")
    for name in RULE_TYPES:
        assert f"\n[plugins.{name}]\n" in text, name


# ------------------------------------------------------- a custom rule, third party


def test_a_custom_rule_from_a_separate_package_comes_in_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "acme-prop-rules", "0.1.0", {"acme_prop_rules": "acme_prop_rules"})
    on_sys_path(monkeypatch, site, ACME_PROP_SRC, modules=("acme_prop_rules",))
    path = tmp_path / "plugins.toml"
    path.write_text("[plugins.acme_prop_rules]\n[plugins.daily_loss]\n", encoding="utf-8")

    manager = PluginManager.load(path, env={})  # real importlib.metadata discovery

    registry = manager.registries.prop_rules
    assert registry.names() == ["acme_equity_floor", "daily_loss"]
    registered = registry["acme_equity_floor"]
    assert registered.plugin == "acme_prop_rules"
    plugin = manager.pm.get_plugin("acme_prop_rules")
    assert plugin.__file__ == str(ACME_PROP_SRC / "acme_prop_rules" / "__init__.py")

    validator = Draft202012Validator(registered.descriptor.config_schema)
    with pytest.raises(ValidationError, match="'floor' is a required property"):
        validator.validate({"warn_at": 95000})
    with pytest.raises(ValidationError, match="Additional properties are not allowed"):
        validator.validate({"floor": 94000, "model": "static"})
    params = {"floor": 94000, "warn_at": 96000, "inclusive": True}
    validator.validate(params)

    context = PluginContext(
        "acme_prop_rules", manager.plugin_config("acme_prop_rules"), MarketClock()
    )
    rule: PropRule = registered.descriptor.factory(context).configure("acme_floor", params)
    assert list(rule.levels(state("100000"))) == [
        Level("acme_floor", D("94000"), LevelKind.FLOOR, True),
        Level("acme_floor.warn", D("96000"), LevelKind.FLOOR, True),
    ]
    assert rule.evaluate(state("96000.01")).status is Status.PASS
    assert rule.evaluate(state("96000")).status is Status.WARN
    breach = rule.evaluate(state("94000"))
    assert (breach.status, breach.reason, breach.numbers["floor"]) == (
        Status.BREACH,
        "Equity below ACME's absolute floor",
        D("94000"),
    )
    assert rule.check_order(state("100000"), order()) is None
    assert list(rule.deadlines(state("100000"))) == []
