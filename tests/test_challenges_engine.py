"""The challenges engine end to end: provisioning, ticks through the risk engine to the
exact path, breaches at the floor, warnings, day resets (DST), trading days, phases,
resets and payouts.

Prices come from the ``manual`` plugin (its quotes drive the market clock). 1 lot of
EURUSD bought at ask 1.10002 is worth (bid - 1.10002) x 100,000 USD: every price step
of 0.00001 moves equity by exactly 1 USD.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import event, select
from support import create_admin, make_kernel, manual_quote, staff_headers

from brokerkernel.api.app import create_app
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.prop.rules import DaySnapshot, History, RuleResult, Status
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import LedgerEvent, OutboxEvent, TradeHistory
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.pending import PendingRequest
from brokerkernel.plugins.challenges import engine_of, idle
from brokerkernel.plugins.challenges.engine import (
    ConfiguredRule,
    PlanSpec,
    PropEngine,
    PropView,
    day_levels_in_bulk,
)
from brokerkernel.plugins.challenges.models import PropAccount, PropPlan
from brokerkernel.plugins.challenges.service import (
    ChallengeService,
    PropError,
    TraderSpec,
    challenge_service,
)
from brokerkernel.plugins.replay.sources import sources_for

D = Decimal
RULES = """
[plugins.challenges]
auto_advance = true
[plugins.daily_loss]
[plugins.max_loss]
[plugins.profit_target]
[plugins.trading_days]
[plugins.consistency]
[plugins.order_limits]
[plugins.weekend_holding]
[plugins.news_blackout]
"""
MONDAY = "2026-03-02T10:00:00Z"


@dataclass
class Desk:
    kernel: Kernel
    client: TestClient[Any, Any]
    staff: dict[str, str]
    service: ChallengeService

    async def quote(self, bid: str, ask: str, time: str, symbol: str = "EURUSD") -> None:
        await manual_quote(self.client, self.staff, symbol, bid, ask, time)
        await idle(self.kernel)

    async def buy(self, login: int, volume: str, symbol: str = "EURUSD", cmd: int = 0) -> Any:
        request_id = await self.kernel.trading.submit(login, symbol, cmd, Decimal(volume))
        await self.kernel.trading.idle()
        status = await self.kernel.trading.request_status(request_id)
        await idle(self.kernel)
        return status

    async def events(self, *types: str) -> list[dict[str, Any]]:
        async with self.kernel.db.read() as session:
            rows = (
                await session.scalars(
                    select(OutboxEvent).where(OutboxEvent.type.in_(types)).order_by(OutboxEvent.seq)
                )
            ).all()
        return [{"type": row.type, **row.payload} for row in rows]


@pytest.fixture
async def desk(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> AsyncIterator[Desk]:
    kernel = make_kernel(
        tmp_path, database_url, redis_url, market_data_dir, clock="manual", extra=RULES
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    staff = await staff_headers(client)
    desk = Desk(kernel, client, staff, challenge_service(kernel))
    await desk.quote("1.10000", "1.10002", MONDAY)
    yield desk


def plan_body(code: str = "two-step-100k", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "name": "Two-step 100K",
        "account_size": Decimal(100000),
        "price": Decimal("540"),
        "timezone": "Europe/Prague",
        "phases": [
            {
                "name": "phase_1",
                "rules": [
                    {
                        "type": "daily_loss",
                        "params": {
                            "model": "balance_minus_initial_pct",
                            "amount": 3000,
                            "warn_at_pct": [50],
                        },
                    },
                    {"type": "max_loss", "params": {"model": "static", "percent": 10}},
                    {"type": "profit_target", "params": {"amount": 2000}},
                    {"type": "trading_days", "params": {"min_trading_days": 1}},
                ],
            },
            {
                "name": "phase_2",
                "rules": [
                    {"type": "max_loss", "params": {"model": "static", "percent": 10}},
                    {"type": "profit_target", "params": {"percent": 5}},
                ],
            },
        ],
        "funded_rules": [{"type": "max_loss", "params": {"model": "static", "percent": 10}}],
        "profit_split": Decimal(80),
        "payout_first_after_days": 14,
        "payout_every_days": 14,
        "payout_minimum": Decimal(100),
    }
    body.update(changes)
    return body


async def provision(desk: Desk, plan: dict[str, Any], ref: str = "order-1") -> dict[str, Any]:
    return await desk.service.provision(
        plan["id"],
        TraderSpec(email="trader@example.com", first_name="Tess"),
        tenant_id=None,
        source="test",
        external_ref=ref,
    )


async def test_provisioning_is_idempotent_and_funds_the_account_with_one_ledger_row(
    desk: Desk,
) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    first = await provision(desk, plan)
    again = await provision(desk, plan)
    assert again["id"] == first["id"] and again["login"] == first["login"]
    assert first["status"] == "active" and first["phase"] == "phase_1"
    assert first["balance"] == Decimal("100000.00") and first["equity"] == Decimal("100000.00")
    async with desk.kernel.db.read() as session:
        rows = (
            await session.scalars(
                select(LedgerEvent).where(LedgerEvent.account_id == first["login"])
            )
        ).all()
    assert [(r.event_type, r.balance_delta, r.balance_after) for r in rows] == [
        ("deposit", Decimal(100000), Decimal(100000))
    ]
    created = await desk.events("account.created", "trader.created")
    assert [e["type"] for e in created if e.get("account_id") == first["id"]] == [
        "account.created",
        "trader.created",
    ]
    event = created[-2]
    assert event["initial_balance"] == "100000.00" and event["currency"] == "USD"
    assert event["login"] == first["login"] and event["tenant_id"] is None
    # a second account for the same trader creates no second customer
    other = await provision(desk, plan, ref="order-2")
    assert other["customer_id"] == first["customer_id"] and other["login"] != first["login"]
    assert len(await desk.events("trader.created")) == 1


async def test_plan_validation_lists_every_error(desk: Desk) -> None:
    body = plan_body(timezone="Mars/Olympus")
    body["phases"][0]["rules"].append({"type": "no_such_rule", "params": {}})
    body["phases"][0]["rules"][0]["params"] = {"model": "nope", "percent": 5}
    with pytest.raises(PropError) as refused:
        await desk.service.create_plan(body, tenant_id=None)
    assert refused.value.status == 422
    locs = [tuple(item["loc"]) for item in refused.value.detail]
    assert ("body", "phases", 0, "rules", 0, "params", "model") in locs
    assert ("body", "phases", 0, "rules", 4, "type") in locs
    assert ("body", "timezone") in locs
    await desk.service.create_plan(plan_body(), tenant_id=None)
    with pytest.raises(PropError) as duplicate:
        await desk.service.create_plan(plan_body(), tenant_id=None)
    assert duplicate.value.status == 409


@pytest.mark.parametrize(
    ("inclusive", "raw_bid", "breached"),
    [
        (False, "1.07003", False),  # equity 97,001: above the floor
        (False, "1.07002", False),  # equity 97,000: at the floor, "<" does not breach
        (False, "1.07001", True),  # equity 96,999: below
        (True, "1.07003", False),
        (True, "1.07002", True),  # at the floor, "<=" breaches
    ],
)
async def test_daily_loss_breach_at_above_and_below_the_floor(
    desk: Desk, inclusive: bool, raw_bid: str, breached: bool
) -> None:
    body = plan_body()
    body["phases"][0]["rules"][0]["params"]["inclusive"] = inclusive
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    assert (await desk.buy(login, "1"))["status"] == "executed"
    await desk.quote(raw_bid, "1.07010", "2026-03-02T11:00:00Z")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    breaches = await desk.events("account.breached", "phase.failed")
    if not breached:
        assert state["status"] == "active" and breaches == []
        assert desk.kernel.trading.book.get(login).positions  # type: ignore[union-attr]
        return
    equity = f"{Decimal(100000) + (Decimal(raw_bid) - Decimal('1.10002')) * 100000:.2f}"
    assert state["status"] == "failed"
    assert state["breach"]["rule"] == "daily_loss"
    assert state["breach"]["floor"] == Decimal("97000")
    assert [e["type"] for e in breaches] == ["account.breached", "phase.failed"]
    assert breaches[0]["rule"] == "daily_loss"
    assert breaches[0]["floor"] == "97000.00" and breaches[0]["equity"] == equity
    assert breaches[0]["account_id"] == account["id"] and breaches[0]["phase"] == "phase_1"
    # every position closed at market, trading refused from now on
    assert not desk.kernel.trading.book.get(login).positions  # type: ignore[union-attr]
    async with desk.kernel.db.read() as session:
        closes = (
            await session.scalars(select(TradeHistory).where(TradeHistory.login == login))
        ).all()
    assert [(c.reason, c.close_price) for c in closes] == [("prop-breach", Decimal(raw_bid))]
    refused = await desk.buy(login, "1")
    assert refused["status"] == "rejected"
    assert refused["reason"] == "Trading disabled: challenge account is failed"


async def test_accounts_crossing_on_one_tick_are_all_decided_before_any_close(
    desk: Desk,
) -> None:
    """Three accounts holding 1, 2 and 3 lots cross their 97,000 daily floor on one tick
    (bid 1.06500: equity 100,000 - 3,502 x lots). The tick's crossings form one batch:
    every account fails with its exact equity, and on each order worker every
    ``account.breached`` of the batch precedes the first ``prop-breach`` close."""
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    accounts = [await provision(desk, plan, ref=f"order-{lots}") for lots in (1, 2, 3)]
    logins = [account["login"] for account in accounts]
    for lots, login in enumerate(logins, start=1):
        assert (await desk.buy(login, str(lots)))["status"] == "executed"
    await desk.quote("1.06500", "1.06508", "2026-03-02T11:00:00Z")
    states = [await desk.service.get_account(a["id"], tenant_id=None) for a in accounts]
    assert [(s["status"], s["breach"]["rule"], s["breach"]["floor"]) for s in states] == [
        ("failed", "daily_loss", Decimal("97000"))
    ] * 3
    breaches = await desk.events("account.breached")
    assert sorted((e["login"], e["floor"], e["equity"]) for e in breaches) == [
        (logins[0], "97000.00", "96498.00"),
        (logins[1], "97000.00", "92996.00"),
        (logins[2], "97000.00", "89494.00"),
    ]
    async with desk.kernel.db.read() as session:
        closes = (
            await session.scalars(
                select(TradeHistory)
                .where(TradeHistory.login.in_(logins))
                .order_by(TradeHistory.login)
            )
        ).all()
    assert [(c.login, c.reason, c.close_price, c.profit) for c in closes] == [
        (logins[0], "prop-breach", Decimal("1.06500"), Decimal("-3502.00")),
        (logins[1], "prop-breach", Decimal("1.06500"), Decimal("-7004.00")),
        (logins[2], "prop-breach", Decimal("1.06500"), Decimal("-10506.00")),
    ]
    shards = desk.kernel.trading.workers.shards
    events = await desk.events("account.breached", "order.closed")
    for shard in {login % shards for login in logins}:
        order = [e["type"] for e in events if e["login"] % shards == shard]
        last_breach = max(i for i, kind in enumerate(order) if kind == "account.breached")
        assert "order.closed" not in order[:last_breach], order


async def test_drawdown_warning_once_per_threshold_and_day(desk: Desk) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    await desk.buy(account["login"], "1")
    # 50% of the 3,000 allowance used: equity <= 98,500 (bid 1.08502)
    await desk.quote("1.08502", "1.08510", "2026-03-02T11:00:00Z")
    await desk.quote("1.09000", "1.09010", "2026-03-02T11:01:00Z")
    await desk.quote("1.08400", "1.08410", "2026-03-02T11:02:00Z")
    warnings = await desk.events("drawdown.warning")
    assert len(warnings) == 1
    assert warnings[0]["rule"] == "daily_loss" and warnings[0]["threshold_pct"] == "50"
    assert warnings[0]["floor"] == "97000.00" and warnings[0]["equity"] == "98500.00"


async def close_all_positions(desk: Desk, login: int) -> None:
    held = desk.kernel.trading.book.get(login)
    assert held is not None
    for ticket in list(held.positions):
        await desk.kernel.trading.close(login, ticket)
    await idle(desk.kernel)


async def ledger_rows(desk: Desk, login: int) -> list[tuple[str, Decimal, Decimal]]:
    async with desk.kernel.db.read() as session:
        rows = (
            await session.scalars(
                select(LedgerEvent)
                .where(LedgerEvent.account_id == login)
                .order_by(LedgerEvent.sequence_num)
            )
        ).all()
    return [(r.event_type, r.balance_delta, r.balance_after) for r in rows]


async def test_passed_phase_advances_automatically_on_a_fresh_balance(desk: Desk) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")
    # +2,000 floating: the balance target is not met until the position is closed
    await desk.quote("1.12002", "1.12010", "2026-03-02T12:00:00Z")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["phase"] == "phase_1" and state["target_progress_pct"] == Decimal("0.00")
    await close_all_positions(desk, login)
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["phase"] == "phase_2" and state["status"] == "active"
    assert state["balance"] == Decimal("100000.00") and state["trading_days"] == 0
    events = await desk.events("target.reached", "phase.passed")
    assert [(e["type"], e["phase"]) for e in events] == [
        ("target.reached", "phase_1"),
        ("phase.passed", "phase_1"),
    ]
    assert events[0]["target"] == "2000.00" and events[0]["value"] == "2000.00"
    assert events[1]["next_phase"] == "phase_2" and events[1]["profit_pct"] == "2.00"
    assert (await ledger_rows(desk, login))[-2:] == [
        ("trade_pnl", Decimal(2000), Decimal(102000)),
        ("correction_out", Decimal(-2000), Decimal(100000)),
    ]


async def test_passed_phase_waits_for_manual_approval(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["auto_advance"] = False
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.12502", "1.12510", "2026-03-02T12:00:00Z")
    await close_all_positions(desk, login)
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "passed_pending_approval" and state["phase"] == "phase_1"
    assert state["balance"] == Decimal("102500.00")
    refused = await desk.buy(login, "1")
    assert refused["reason"] == "Trading disabled: challenge account is passed_pending_approval"
    approved = await desk.service.advance_phase(account["id"], tenant_id=None, actor="staff-1")
    assert approved["status"] == "active" and approved["phase"] == "phase_2"
    assert approved["balance"] == Decimal("100000.00")
    assert (await desk.buy(login, "1"))["status"] == "executed"
    assert len(await desk.events("phase.passed")) == 1


async def test_day_reset_follows_prague_midnight_across_the_dst_switch(desk: Desk) -> None:
    """2026-03-29: Prague moves from CET (UTC+1) to CEST (UTC+2). Its midnights are
    2026-03-28T23:00Z and 2026-03-29T22:00Z; the day snapshot takes the balance and
    equity at each, and a floating loss below the new daily floor breaches at once."""
    await desk.quote("1.10000", "1.10002", "2026-03-28T12:00:00Z")
    body = plan_body()
    body["phases"][0]["rules"][2]["params"] = {"amount": 10000}
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    assert account["day"].isoformat() == "2026-03-28"
    await desk.buy(login, "1")
    await desk.quote("1.11002", "1.11002", "2026-03-28T13:00:00Z")
    await close_all_positions(desk, login)  # balance 101,000
    await desk.buy(login, "1")  # at 1.11002
    await desk.quote("1.10502", "1.10510", "2026-03-28T22:59:59Z")  # floating -500
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["day"].isoformat() == "2026-03-28"
    await desk.quote("1.10502", "1.10510", "2026-03-28T23:00:00Z")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["day"].isoformat() == "2026-03-29"
    assert state["day_start_balance"] == Decimal("101000")
    assert state["day_start_equity"] == Decimal("100500")
    assert state["daily_drawdown"] == Decimal("500.00")
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    daily = next(r for r in metrics["rules"] if r["rule"] == "daily_loss")
    assert daily["numbers"]["floor"] == "98000.00" and daily["status"] == "pass"
    # CEST from here: the next reset is 22:00Z, not 23:00Z
    await desk.quote("1.13002", "1.13002", "2026-03-29T21:00:00Z")
    await close_all_positions(desk, login)  # +2,000: balance 103,000
    await desk.buy(login, "1")  # at 1.13002
    await desk.quote("1.09502", "1.09510", "2026-03-29T21:59:59Z")  # floating -3,500
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["day"].isoformat() == "2026-03-29" and state["status"] == "active"
    assert state["equity"] == Decimal("99500.00")  # above today's floor 98,000
    # the reset at 22:00Z sets the floor to 103,000 - 3,000: equity is below it at once
    await desk.quote("1.09502", "1.09510", "2026-03-29T22:00:00Z")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "failed" and state["day"].isoformat() == "2026-03-30"
    breach = (await desk.events("account.breached"))[0]
    assert breach["rule"] == "daily_loss" and breach["floor"] == "100000.00"
    assert breach["equity"] == "99500.00"


async def test_a_trade_held_over_several_days_counts_one_trading_day(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["rules"][2]["params"] = {"amount": 10000}
    body["phases"][0]["rules"][3]["params"] = {
        "min_trading_days": 2,
        "max_trading_period_days": 30,
    }
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")  # Monday 2026-03-02 (Prague)
    await desk.quote("1.10100", "1.10102", "2026-03-03T09:00:00Z")
    await desk.quote("1.10200", "1.10202", "2026-03-04T09:00:00Z")
    await close_all_positions(desk, login)  # closed on Wednesday: +198
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    assert metrics["trading_days"] == 1
    days = next(r for r in metrics["rules"] if r["rule"] == "trading_days")
    assert days["status"] == "pending" and days["numbers"]["trading_days"] == 1
    assert metrics["best_day_share_pct"] == Decimal("100.00")
    await desk.buy(login, "1")  # Wednesday: a second trading day
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    assert metrics["trading_days"] == 2
    assert metrics["day"].isoformat() == "2026-03-04"
    days = next(r for r in metrics["rules"] if r["rule"] == "trading_days")
    # 30 calendar days from the phase start (11:00 Prague wall time, CEST by then):
    # exactly 28 days after this Wednesday 09:00Z
    assert days["numbers"]["period_ends_at"] == "2026-04-01T09:00:00Z"
    assert metrics["days_remaining"] == 28


async def funded_account(desk: Desk, **plan_changes: Any) -> dict[str, Any]:
    plan = await desk.service.create_plan(plan_body(**plan_changes), tenant_id=None)
    account = await provision(desk, plan)
    for _ in range(2):
        await desk.service.advance_phase(account["id"], tenant_id=None, actor="staff-1")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "funded" and state["phase"] == "funded"
    return state


async def test_payouts_split_cadence_and_minimum(desk: Desk) -> None:
    account = await funded_account(desk)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.13002", "1.13010", "2026-03-03T10:00:00Z")
    await close_all_positions(desk, login)  # +3,000
    with pytest.raises(PropError) as early:
        await desk.service.request_payout(
            account["id"], tenant_id=None, amount=None, destination=None, execute=True, actor="s"
        )
    assert early.value.status == 409
    assert early.value.detail == "The next payout is possible from 2026-03-16T10:00:00+00:00"
    await desk.quote("1.13002", "1.13010", "2026-03-16T10:00:00Z")
    with pytest.raises(PropError) as small:
        await desk.service.request_payout(
            account["id"],
            tenant_id=None,
            amount=Decimal("99.99"),
            destination=None,
            execute=True,
            actor="s",
        )
    assert small.value.status == 422
    assert small.value.detail == [
        {
            "loc": ["body", "amount"],
            "msg": "is below the plan's payout minimum 100.00",
            "type": "minimum",
        }
    ]
    payout = await desk.service.request_payout(
        account["id"],
        tenant_id=None,
        amount=None,
        destination={"method": "wire"},
        execute=True,
        actor="staff-1",
    )
    assert payout["status"] == "processed"
    assert (payout["amount"], payout["trader_share"], payout["firm_share"]) == (
        Decimal(3000),
        Decimal("2400.00"),
        Decimal("600.00"),
    )
    assert (await ledger_rows(desk, login))[-1] == (
        "withdrawal",
        Decimal(-3000),
        Decimal(100000),
    )
    events = await desk.events("payout.requested", "payout.processed")
    assert [(e["type"], e["amount"], e["trader_share"], e["firm_share"]) for e in events] == [
        ("payout.requested", "3000.00", "2400.00", "600.00"),
        ("payout.processed", "3000.00", "2400.00", "600.00"),
    ]
    with pytest.raises(PropError) as again:
        await desk.service.request_payout(
            account["id"], tenant_id=None, amount=None, destination=None, execute=False, actor="s"
        )
    assert again.value.detail == "The next payout is possible from 2026-03-30T10:00:00+00:00"
    payouts, total = await desk.service.list_payouts(tenant_id=None, account_id=account["id"])
    assert total == 1 and payouts[0]["ledger_ref"] is not None


@pytest.mark.parametrize(
    ("after_payout", "initial", "floor"),
    [("keep", "100000.00", "90000.00"), ("rebase", "102000.00", "91800.00")],
)
async def test_drawdown_floor_after_a_payout_is_kept_or_rebased(
    desk: Desk, after_payout: str, initial: str, floor: str
) -> None:
    """Plan ``drawdown_after_payout``: a 1,000 payout out of 3,000 profit leaves the
    static 10% max-loss floor at 90,000 (``keep``) or re-bases it on the 102,000 left
    (``rebase``: 102,000 - 10%)."""
    account = await funded_account(desk, drawdown_after_payout=after_payout)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.13002", "1.13010", "2026-03-03T10:00:00Z")
    await close_all_positions(desk, login)  # +3,000
    await desk.quote("1.13002", "1.13010", "2026-03-16T10:00:00Z")
    payout = await desk.service.request_payout(
        account["id"],
        tenant_id=None,
        amount=Decimal(1000),
        destination=None,
        execute=True,
        actor="staff-1",
    )
    assert payout["status"] == "processed"
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert (state["balance"], state["initial_balance"]) == (Decimal(102000), Decimal(initial))
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    (max_loss,) = [r for r in metrics["rules"] if r["rule"] == "max_loss"]
    assert (max_loss["status"], max_loss["numbers"]["floor"]) == ("pass", floor)


async def test_reset_restores_a_failed_account_for_its_phase(desk: Desk) -> None:
    plan = await desk.service.create_plan(plan_body(reset_fee=Decimal("89.5")), tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.06002", "1.06010", "2026-03-02T11:00:00Z")  # -4,000: breach
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "failed"
    state = await desk.service.reset(account["id"], tenant_id=None, actor="staff-1")
    assert state["status"] == "active" and state["phase"] == "phase_1"
    assert state["balance"] == Decimal("100000.00") and state["breach"] is None
    assert state["reset_fee"] == Decimal("89.5")
    # the fee is owed outside: the only money move is the correction back to the size
    assert (await ledger_rows(desk, login))[-2:] == [
        ("trade_pnl", Decimal(-4000), Decimal(96000)),
        ("correction_in", Decimal(4000), Decimal(100000)),
    ]
    [reset] = await desk.events("account.reset")
    assert (reset["reset_fee"], reset["currency"], reset["actor"], reset["phase"]) == (
        "89.50",
        "USD",
        "staff-1",
        "phase_1",
    )
    assert (await desk.buy(login, "1"))["status"] == "executed"
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    assert metrics["trading_days"] == 1


async def test_a_position_left_open_at_the_breach_is_closed_once_it_is_quoted(
    desk: Desk,
) -> None:
    """The breach closes every position it can; one without a fresh quote (GBPUSD
    quoted 1 h earlier, stale after 10 s) stays open, and the account is noted (also
    when the service loads after a restart) until the schedule's retry closes it at
    its next fresh quote."""
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.quote("1.30000", "1.30002", MONDAY, symbol="GBPUSD")
    await desk.buy(login, "1")
    await desk.buy(login, "0.1", symbol="GBPUSD")  # at ask 1.30002
    await desk.quote("1.06002", "1.06010", "2026-03-02T11:00:00Z")  # EURUSD -4,000
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "failed" and state["breach"]["equity"] == Decimal("95999.80")
    engine = engine_of(desk.kernel)
    assert engine.unclosed == {login}
    engine.unclosed.clear()
    await desk.service.load()  # as after a restart
    assert engine.unclosed == {login}

    engine.retry_closes()  # still no fresh GBPUSD quote: nothing closes
    await idle(desk.kernel)
    assert engine.unclosed == {login}
    await desk.quote("1.30100", "1.30102", "2026-03-02T11:00:01Z", symbol="GBPUSD")
    engine.retry_closes()
    await idle(desk.kernel)
    engine.retry_closes()  # sees the account flat and forgets it
    await idle(desk.kernel)

    assert engine.unclosed == set()
    async with desk.kernel.db.read() as session:
        closes = (
            await session.scalars(
                select(TradeHistory)
                .where(TradeHistory.login == login)
                .order_by(TradeHistory.close_time)
            )
        ).all()
    assert [(c.symbol, c.close_price, c.profit, c.reason) for c in closes] == [
        ("EURUSD", Decimal("1.06002"), Decimal("-4000.00"), "prop-breach"),
        ("GBPUSD", Decimal("1.30100"), Decimal("9.80"), "prop-breach"),
    ]
    assert (await ledger_rows(desk, login))[-1][2] == Decimal("96009.80")


async def test_balance_operations_are_ledger_rows(desk: Desk) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    result = await desk.service.balance_operation(
        account["id"],
        tenant_id=None,
        operation="adjust",
        amount=Decimal("-250.50"),
        comment="fee",
        actor="staff-1",
    )
    assert result["account"]["balance"] == Decimal("99749.50")
    assert (await ledger_rows(desk, account["login"]))[-1] == (
        "correction_out",
        Decimal("-250.50"),
        Decimal("99749.50"),
    )
    with pytest.raises(PropError) as refused:
        await desk.service.balance_operation(
            account["id"],
            tenant_id=None,
            operation="withdraw",
            amount=Decimal("100000"),
            comment="",
            actor="staff-1",
        )
    assert refused.value.status == 422


async def test_replayed_eurusd_ticks_breach_the_daily_loss_at_the_known_tick(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    """Real EURUSD ticks of 2014-05-07: 10 lots bought at the first ask (1.39298) under
    a 300 USD daily loss (floor 99,700, "<"). Scanning the ticks exactly, the first
    bid below 1.39268 is 1.39267 at 02:05:19.419Z (tick 1930): equity 99,690 — the
    account fails there, closed at that bid, and later ticks change nothing."""
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=RULES)
    await aiohttp_client(create_app(kernel))
    ticks = list(sources_for("EURUSD", market_data_dir)[0].quotes([date(2014, 5, 7)]))[:2500]
    kernel.quotes.publish(ticks[0])
    service = challenge_service(kernel)
    body = plan_body(timezone="UTC")
    body["phases"][0]["rules"] = [
        {"type": "daily_loss", "params": {"model": "balance_minus_initial_pct", "amount": 300}}
    ]
    plan = await service.create_plan(body, tenant_id=None)
    account = await service.provision(
        plan["id"], TraderSpec(email="replay@example.com"), tenant_id=None, source="test"
    )
    login = account["login"]
    await kernel.trading.submit(login, "EURUSD", 0, Decimal(10))
    await idle(kernel)
    expected = next(
        q for q in ticks if Decimal(100000) + (q.bid - ticks[0].ask) * 1_000_000 < 99700
    )
    assert (ticks.index(expected), expected.bid, expected.time_ms) == (
        1930,
        Decimal("1.39267"),
        1_399_428_319_419,
    )
    for quote in ticks[1:]:
        kernel.quotes.publish(quote)
        await kernel.trading.idle()
    await idle(kernel)
    state = await service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "failed" and state["balance"] == Decimal("99690.00")
    assert state["breach"]["at"] == datetime(2014, 5, 7, 2, 5, 19, 419000, tzinfo=UTC)
    async with kernel.db.read() as session:
        closes = (
            await session.scalars(select(TradeHistory).where(TradeHistory.login == login))
        ).all()
        breached = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.type == "account.breached"))
        ).all()
    assert [(c.close_price, c.profit, c.reason) for c in closes] == [
        (Decimal("1.39267"), Decimal("-310.00"), "prop-breach")
    ]
    assert [(e.payload["floor"], e.payload["equity"]) for e in breached] == [
        ("99700.00", "99690.00")
    ]


async def test_weekend_holding_deadline_fails_a_position_held_over_friday_close(
    desk: Desk,
) -> None:
    """Friday 2026-03-06 17:00 America/New_York is 22:00Z (EST): the rule's deadline
    evaluates the account at the first market instant at or after it."""
    body = plan_body()
    body["phases"][0]["rules"].append({"type": "weekend_holding", "params": {}})
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    await desk.buy(account["login"], "1")
    await desk.quote("1.10010", "1.10012", "2026-03-06T21:59:59Z")
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "active"
    await desk.quote("1.10010", "1.10012", "2026-03-06T22:00:00Z")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "failed" and state["breach"]["rule"] == "weekend_holding"
    assert state["balance"] == Decimal("100008.00")


async def test_order_limits_refuse_an_order_and_flag_it(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["rules"].append({"type": "order_limits", "params": {"max_lots_per_order": 2}})
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    assert (await desk.buy(account["login"], "2"))["status"] == "executed"
    refused = await desk.buy(account["login"], "2.01")
    assert refused["status"] == "rejected" and "2.01" in refused["reason"]
    flagged = await desk.events("risk.violation_flagged")
    assert [(e["rule"], e["reason"], e["account_id"]) for e in flagged] == [
        ("order_limits", refused["reason"], account["id"])
    ]
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "active"


async def test_tenants_see_only_their_own_plans_accounts_and_the_catalog(desk: Desk) -> None:
    broker_plan = await desk.service.create_plan(
        plan_body(visibility="private", allowed_tenants=["acme"]), tenant_id=None
    )
    hidden = await desk.service.create_plan(
        plan_body("hidden", visibility="hidden"), tenant_id=None
    )
    own = await desk.service.create_plan(plan_body("acme-own"), tenant_id="acme")
    catalog = await desk.service.list_plans(tenant_id="acme", catalog=True)
    assert {p["id"] for p in catalog} == {broker_plan["id"], own["id"]}
    assert [p["id"] for p in await desk.service.list_plans(tenant_id="acme")] == [own["id"]]
    with pytest.raises(PropError) as foreign:
        await desk.service.provision(
            hidden["id"],
            TraderSpec(email="a@acme.test"),
            tenant_id="acme",
            source="zt4",
            catalog=True,
        )
    assert foreign.value.status == 404
    account = await desk.service.provision(
        broker_plan["id"],
        TraderSpec(email="a@acme.test"),
        tenant_id="acme",
        source="zt4",
        external_ref="acme-1",
        catalog=True,
    )
    assert account["tenant_id"] == "acme"
    with pytest.raises(PropError) as other:
        await desk.service.get_account(account["id"], tenant_id="globex")
    assert other.value.status == 404
    accounts, total = await desk.service.list_accounts(tenant_id="acme")
    assert total == 1 and accounts[0]["id"] == account["id"]
    retired = await desk.service.retire_plan(broker_plan["id"], tenant_id=None)
    assert retired["status"] == "retired"
    deleted = await desk.service.retire_plan(hidden["id"], tenant_id=None)
    assert deleted["status"] == "deleted"
    with pytest.raises(PropError) as closed:
        await desk.service.provision(
            broker_plan["id"],
            TraderSpec(email="b@acme.test"),
            tenant_id="acme",
            source="zt4",
            catalog=True,
        )
    assert closed.value.status == 409


async def test_overrides_suspension_and_archiving(desk: Desk) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    with pytest.raises(PropError) as invalid:
        await desk.service.update_account(
            account["id"],
            {"rule_overrides": {"daily_loss": {"model": "nope"}, "ghost": {}}},
            tenant_id=None,
            actor="staff-1",
        )
    assert [item["loc"] for item in invalid.value.detail] == [
        ["body", "rule_overrides", "daily_loss", "model"],
        ["body", "rule_overrides"],
    ]
    await desk.service.update_account(
        account["id"],
        {"rule_overrides": {"daily_loss": {"amount": 1000}}, "tier": "gold"},
        tenant_id=None,
        actor="staff-1",
    )
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    daily = next(r for r in metrics["rules"] if r["rule"] == "daily_loss")
    assert daily["numbers"]["floor"] == "99000.00"
    await desk.buy(login, "1")
    suspended = await desk.service.update_account(
        account["id"], {"status": "suspended"}, tenant_id=None, actor="staff-1"
    )
    assert suspended["status"] == "suspended" and suspended["tier"] == "gold"
    refused = await desk.buy(login, "1")
    assert refused["reason"] == "Trading disabled: challenge account is suspended"
    active = await desk.service.update_account(
        account["id"], {"status": "active"}, tenant_id=None, actor="staff-1"
    )
    assert active["status"] == "active"
    # the override is live in the engine: 1,001 USD down breaches the 99,000 floor
    await desk.quote("1.09001", "1.09010", "2026-03-02T11:00:00Z")
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "failed"
    archived = await desk.service.archive(account["id"], tenant_id=None, actor="staff-1")
    assert archived["status"] == "archived"
    with pytest.raises(PropError) as again:
        await desk.service.archive(account["id"], tenant_id=None, actor="staff-1")
    assert again.value.status == 409


async def test_news_blackout_refuses_orders_and_fails_on_a_take_profit_in_the_window(
    desk: Desk,
) -> None:
    """A high-impact USD event at 12:30Z blacks EURUSD out from 12:28Z to 12:32Z: a
    market order in the window is refused (flagged), and a TP the market fills in it
    fails the phase with ``on_violation = "breach"``."""
    await desk.kernel.calendar.upsert(
        [
            {
                "event_name": "Non-Farm Payrolls",
                "country": "US",
                "currency": "USD",
                "category": "employment",
                "impact": "high",
                "event_date": datetime(2026, 3, 2, 12, 30, tzinfo=UTC),
                "actual": None,
                "forecast": None,
                "previous": None,
            }
        ]
    )
    body = plan_body()
    body["phases"][0]["rules"].append(
        {"type": "news_blackout", "params": {"on_violation": "breach"}}
    )
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    ticket = (await desk.buy(login, "1"))["order"]
    await desk.kernel.trading.modify_stops(login, ticket, None, Decimal("1.10100"))
    await desk.quote("1.10050", "1.10052", "2026-03-02T12:28:30Z")
    refused = await desk.buy(login, "1")
    assert refused["status"] == "rejected"
    assert [e["rule"] for e in await desk.events("risk.violation_flagged")] == ["news_blackout"]
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "active"
    await desk.quote("1.10100", "1.10102", "2026-03-02T12:29:00Z")  # the TP fills
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "failed" and state["breach"]["rule"] == "news_blackout"
    assert state["balance"] == Decimal("100098.00")
    breach = (await desk.events("account.breached"))[0]
    assert breach["rule"] == "news_blackout" and breach["floor"] is None


async def test_equity_target_crossing_passes_the_phase_with_positions_open(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["rules"][2]["params"] = {"amount": 2000, "basis": "equity"}
    body["phases"][0]["rules"][3]["params"] = {"min_trading_days": 0}
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.12001", "1.12010", "2026-03-02T12:00:00Z")  # equity 101,999
    assert (await desk.events("equity.threshold", "phase.passed")) == []
    await desk.quote("1.12002", "1.12010", "2026-03-02T12:00:01Z")  # equity 102,000
    events = await desk.events("equity.threshold", "target.reached", "phase.passed")
    assert [(e["type"], e.get("level"), e.get("equity")) for e in events] == [
        ("equity.threshold", "profit_target", "102000.00"),
        ("target.reached", None, None),
        ("phase.passed", None, None),
    ]
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["phase"] == "phase_2" and state["balance"] == Decimal("100000.00")
    async with desk.kernel.db.read() as session:
        closes = (
            await session.scalars(select(TradeHistory).where(TradeHistory.login == login))
        ).all()
    assert [(c.reason, c.profit) for c in closes] == [("prop-phase", Decimal("2000.00"))]


NFP = {
    "event_name": "Non-Farm Payrolls",
    "country": "US",
    "currency": "USD",
    "category": "employment",
    "impact": "high",
    "event_date": datetime(2026, 3, 2, 12, 30, tzinfo=UTC),
    "actual": None,
    "forecast": None,
    "previous": None,
}
NFP_CLOSE = (
    "News blackout: no close on EURUSD from 2 min before to 2 min after "
    "Non-Farm Payrolls (USD, 2026-03-02T12:30:00Z)"
)


async def test_a_traders_close_in_a_news_window_is_refused_and_flagged(desk: Desk) -> None:
    await desk.kernel.calendar.upsert([NFP])
    body = plan_body()
    body["phases"][0]["rules"].append({"type": "news_blackout", "params": {}})
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    ticket = (await desk.buy(login, "1"))["order"]
    await desk.quote("1.10050", "1.10052", "2026-03-02T12:29:00Z")
    with pytest.raises(TradingError) as full:
        await desk.kernel.trading.close(login, ticket)
    assert (full.value.status, full.value.detail) == (409, NFP_CLOSE)
    partial = await desk.client.delete(
        f"/api/crm/orders/{ticket}?login={login}&volume=0.5", headers=desk.staff
    )
    assert partial.status == 409
    assert await partial.json() == {"detail": NFP_CLOSE}
    await idle(desk.kernel)
    flagged = await desk.events("risk.violation_flagged")
    assert [(e["rule"], e["reason"]) for e in flagged] == [("news_blackout", NFP_CLOSE)] * 2
    held = desk.kernel.trading.book.get(login)
    assert held is not None and held.positions[ticket].volume == Decimal(1)
    await desk.quote("1.10050", "1.10052", "2026-03-02T12:32:01Z")  # after the window
    closed = await desk.kernel.trading.close(login, ticket, Decimal("0.5"))
    assert closed["profit"] == Decimal("24.00")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "active"


async def test_a_netting_deal_that_closes_in_a_news_window_is_refused(desk: Desk) -> None:
    await desk.kernel.calendar.upsert([NFP])
    body = plan_body()
    body["phases"][0]["rules"].append({"type": "news_blackout", "params": {}})
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    assert await desk.kernel.trading.set_account_mode(login, "netting") == "netting"
    assert (await desk.buy(login, "1"))["status"] == "executed"
    await desk.quote("1.10050", "1.10052", "2026-03-02T12:29:00Z")
    refused = await desk.buy(login, "1", cmd=1)  # a sell closing the netting position
    assert (refused["status"], refused["reason"]) == ("rejected", NFP_CLOSE)
    held = desk.kernel.trading.book.get(login)
    assert held is not None and [p.volume for p in held.positions.values()] == [Decimal(1)]


class Warner:
    """A test rule answering ``warn`` to every order."""

    name = "warner"
    objective = False

    def levels(self, state: Any) -> list[Any]:
        return []

    def evaluate(self, state: Any) -> RuleResult:
        return RuleResult(self.name, Status.PASS)

    def check_order(self, state: Any, order: Any) -> RuleResult:
        return RuleResult(self.name, Status.WARN, f"Large order: {order.volume} lots")

    def deadlines(self, state: Any) -> list[Any]:
        return []


async def test_a_warn_lets_a_traders_order_through_and_flags_it(desk: Desk) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await idle(desk.kernel)  # the account's cached view settled
    engine = engine_of(desk.kernel)
    view = engine.views[login]
    engine.views[login] = replace(view, rules=(*view.rules, ConfiguredRule("warner", Warner())))
    assert (await desk.buy(login, "1.5"))["status"] == "executed"
    flagged = await desk.events("risk.violation_flagged")
    assert [(e["rule"], e["reason"], e["account_id"]) for e in flagged] == [
        ("warner", "Large order: 1.5 lots", account["id"])
    ]
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "active"


async def test_exposure_limit_sums_the_positions_notional_in_usd(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["rules"].append(
        {"type": "order_limits", "params": {"max_exposure_usd": 250000}}
    )
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    # 1 lot at ask 1.10002 = 110,002 USD; an open lot counts at the mid 1.10001
    assert (await desk.buy(login, "1"))["status"] == "executed"
    assert (await desk.buy(login, "1"))["status"] == "executed"  # 110,001 + 110,002
    refused = await desk.buy(login, "1")
    assert refused["status"] == "rejected"
    assert refused["reason"] == ("Exposure 330004.00 USD would exceed the maximum of 250000 USD")
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    limits = next(r for r in metrics["rules"] if r["rule"] == "order_limits")
    assert limits["numbers"]["exposure_usd"] == "220002.00"


async def test_a_pending_order_over_the_limit_fills_and_is_flagged(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["rules"].append({"type": "order_limits", "params": {"max_lots_per_order": 2}})
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.kernel.trading.place_pending(
        PendingRequest(login, "EURUSD", 4, Decimal(3), Decimal("1.10050"))
    )
    await desk.quote("1.10048", "1.10050", "2026-03-02T10:05:00Z")  # the buy stop triggers
    held = desk.kernel.trading.book.get(login)
    assert held is not None
    assert [p.volume for p in held.positions.values()] == [Decimal(3)]
    flagged = await desk.events("risk.violation_flagged")
    assert [(e["rule"], e["reason"]) for e in flagged] == [
        ("order_limits", "Order volume 3 lots exceeds the maximum of 2")
    ]
    assert (await desk.service.get_account(account["id"], tenant_id=None))["status"] == "active"


async def test_a_partner_provisions_only_its_own_plans_without_the_catalog(desk: Desk) -> None:
    broker_plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    own = await desk.service.create_plan(plan_body("acme-own"), tenant_id="acme")
    trader = TraderSpec(email="a@acme.test")
    with pytest.raises(PropError) as foreign:
        await desk.service.provision(broker_plan["id"], trader, tenant_id="acme", source="zt4")
    assert (foreign.value.status, foreign.value.detail) == (404, "Plan not found")
    mine = await desk.service.provision(own["id"], trader, tenant_id="acme", source="zt4")
    sold = await desk.service.provision(
        broker_plan["id"], trader, tenant_id="acme", source="zt4", catalog=True
    )
    assert (mine["plan_id"], sold["plan_id"]) == (own["id"], broker_plan["id"])


async def test_metrics_carry_phase_and_status_and_a_page_costs_the_same_queries(
    desk: Desk,
) -> None:
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    accounts = [await provision(desk, plan, f"order-{n}") for n in range(3)]
    await desk.buy(accounts[0]["login"], "1")
    metrics = await desk.service.metrics(accounts[0]["id"], tenant_id=None)
    assert (metrics["phase"], metrics["status"], metrics["trading_days"]) == (
        "phase_1",
        "active",
        1,
    )
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the listing's reads (other tasks, e.g. the outbox relay, may query meanwhile)
        if any(table in statement for table in ("prop_", "trading_accounts", "positions")):
            statements.append(statement)

    await desk.service.list_accounts(tenant_id=None)  # every trading account cached
    sync_engine = desk.kernel.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        one, total = await desk.service.list_accounts(tenant_id=None, limit=1)
        single = len(statements)
        statements.clear()
        page, _ = await desk.service.list_accounts(tenant_id=None)
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert total == 3 and len(one) == 1 and len(page) == 3
    assert len(statements) == single == 5  # count, page, days, profit, trading accounts
    first = next(a for a in page if a["id"] == accounts[0]["id"])
    assert (first["trading_days"], first["balance"]) == (1, Decimal("100000.00"))


async def test_scaling_grows_a_funded_account_after_a_qualifying_cycle(desk: Desk) -> None:
    """Every month with >= 2% profit and >= 1 payout the size grows 25% (at most
    150,000) and the trader's share becomes 90%."""
    scaling = {
        "every_months": 1,
        "min_profit_pct": 2,
        "min_payouts": 1,
        "increase_pct": 25,
        "max_size": 150000,
        "profit_split": 90,
    }
    account = await funded_account(desk, scaling=scaling)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.13002", "1.13010", "2026-03-03T10:00:00Z")
    await close_all_positions(desk, login)  # +3,000: balance 103,000

    async def payout(amount: str) -> dict[str, Any]:
        return await desk.service.request_payout(
            account["id"],
            tenant_id=None,
            amount=Decimal(amount),
            destination=None,
            execute=True,
            actor="staff-1",
        )

    await desk.quote("1.13002", "1.13010", "2026-03-16T10:00:00Z")
    await payout("1000")  # within the first month: no scaling
    assert await desk.events("account.scaled") == []
    # the day reset of 2026-04-02 (Prague) is still in the cycle: the payout at its end
    # (2026-04-02 10:00 UTC, before the next reset) is what checks the scaling
    await desk.quote("1.13002", "1.13010", "2026-04-01T22:30:00Z")
    assert await desk.events("account.scaled") == []
    await desk.quote("1.13002", "1.13010", "2026-04-02T10:00:00Z")
    second = await payout("500")
    assert (second["trader_share"], second["firm_share"]) == (Decimal("400.00"), Decimal("100.00"))
    [scaled] = await desk.events("account.scaled")
    assert {k: scaled[k] for k in scaled if k not in ("account_id", "customer_id", "login")} == {
        "type": "account.scaled",
        "tenant_id": None,
        "plan_id": account["plan_id"],
        "phase": "funded",
        "previous_size": "100000.00",
        "account_size": "125000.00",
        "increase": "25000.00",
        "cycle_profit": "3000.00",  # payouts 1,500 + balance 101,500 - initial 100,000
        "payouts": 2,
        "profit_split": "90",
    }
    assert (await ledger_rows(desk, login))[-2:] == [
        ("withdrawal", Decimal(-500), Decimal(101500)),
        ("deposit", Decimal(25000), Decimal(126500)),
    ]
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert (state["account_size"], state["initial_balance"], state["profit_split"]) == (
        Decimal(125000),
        Decimal(125000),
        Decimal(90),
    )
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    floor = next(r for r in metrics["rules"] if r["rule"] == "max_loss")["numbers"]["floor"]
    assert floor == "112500.00"  # 10% under the new size
    await desk.quote("1.13002", "1.13010", "2026-04-16T10:00:00Z")
    third = await payout("1000")  # the new split; the next cycle runs to 2026-05-02
    assert (third["trader_share"], third["firm_share"]) == (Decimal("900.00"), Decimal("100.00"))
    assert len(await desk.events("account.scaled")) == 1
    reset = await desk.service.reset(account["id"], tenant_id=None, actor="staff-1")
    assert (reset["account_size"], reset["profit_split"], reset["reset_fee"]) == (
        Decimal(100000),
        None,
        None,
    )


async def test_the_day_reset_scales_an_account_whose_cycle_ended_without_a_payout(
    desk: Desk,
) -> None:
    """Funded 2026-03-02 10:00 UTC with a one-month cycle, >= 2% profit and no payout
    required: the reset of 2026-04-01 (Prague) is inside the cycle, the first reset
    after 2026-04-02 10:00 UTC scales 100,000 by 25% on 3,000 of profit."""
    scaling = {"every_months": 1, "min_profit_pct": 2, "increase_pct": 25}
    account = await funded_account(desk, scaling=scaling)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.13002", "1.13010", "2026-03-03T10:00:00Z")
    await close_all_positions(desk, login)  # +3,000: balance 103,000
    await desk.quote("1.13002", "1.13010", "2026-04-01T10:00:00Z")  # a reset in the cycle
    assert await desk.events("account.scaled") == []
    await desk.quote("1.13002", "1.13010", "2026-04-02T10:00:00Z")  # the next reset
    [scaled] = await desk.events("account.scaled")
    assert {k: scaled[k] for k in scaled if k not in ("account_id", "customer_id", "login")} == {
        "type": "account.scaled",
        "tenant_id": None,
        "plan_id": account["plan_id"],
        "phase": "funded",
        "previous_size": "100000.00",
        "account_size": "125000.00",
        "increase": "25000.00",
        "cycle_profit": "3000.00",  # balance 103,000 - initial 100,000, no payouts
        "payouts": 0,
        "profit_split": "80",
    }
    assert (await ledger_rows(desk, login))[-1] == ("deposit", D(25000), D(128000))
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert (state["account_size"], state["initial_balance"], state["balance"]) == (
        D(125000),
        D(125000),
        D(128000),
    )
    metrics = await desk.service.metrics(account["id"], tenant_id=None)
    floor = next(r for r in metrics["rules"] if r["rule"] == "max_loss")["numbers"]["floor"]
    assert floor == "112500.00"  # 10% under the new size
    # the new cycle runs to 2026-05-02: a second check (another process) does nothing
    at = datetime(2026, 4, 2, 10, 0, tzinfo=UTC)
    assert await desk.service.scale_due(account["plan_id"], at) == 0
    assert len(await desk.events("account.scaled")) == 1


async def test_a_payout_that_cannot_be_processed_at_approval_ends_failed(desk: Desk) -> None:
    """A 2,000 payout requested on 3,000 of profit fails at approval after a 1,500
    loss (profit 1,500), and one of 1,000 fails once the account is archived: each
    with its reason, ``payout.failed``, and no ledger row."""
    account = await funded_account(desk)
    login = account["login"]
    await desk.buy(login, "1")
    await desk.quote("1.13002", "1.13010", "2026-03-03T10:00:00Z")
    await close_all_positions(desk, login)  # +3,000: balance 103,000
    await desk.quote("1.13002", "1.13010", "2026-03-16T10:00:00Z")

    async def request(amount: str) -> dict[str, Any]:
        return await desk.service.request_payout(
            account["id"],
            tenant_id=None,
            amount=D(amount),
            destination=None,
            execute=False,
            actor="trader",
        )

    pending = await request("2000")
    await desk.buy(login, "1")  # at ask 1.13010
    await desk.quote("1.11510", "1.11518", "2026-03-16T11:00:00Z")
    await close_all_positions(desk, login)  # -1,500: balance 101,500
    rows = await ledger_rows(desk, login)
    failed = await desk.service.approve_payout(pending["id"], tenant_id=None, actor="staff-1")
    assert {k: failed[k] for k in ("status", "reason", "processed_by", "ledger_ref")} == {
        "status": "failed",
        "reason": "The account's profit 1500.00 no longer covers the payout",
        "processed_by": "staff-1",
        "ledger_ref": None,
    }
    assert failed["processed_at"] == datetime(2026, 3, 16, 11, 0, tzinfo=UTC)
    with pytest.raises(PropError) as again:
        await desk.service.approve_payout(pending["id"], tenant_id=None, actor="staff-1")
    assert (again.value.status, again.value.detail) == (409, "The payout is failed")
    second = await request("1000")  # a failed payout does not count for the cadence
    await desk.service.archive(account["id"], tenant_id=None, actor="staff-1")
    closed = await desk.service.approve_payout(second["id"], tenant_id=None, actor="staff-1")
    assert (closed["status"], closed["reason"]) == ("failed", "The account is archived")
    assert await ledger_rows(desk, login) == rows  # no withdrawal was written
    events = await desk.events("payout.failed", "payout.processed")
    assert [(e["type"], e["payout_id"], e["amount"], e["reason"]) for e in events] == [
        ("payout.failed", pending["id"], "2000.00", failed["reason"]),
        ("payout.failed", second["id"], "1000.00", "The account is archived"),
    ]
    assert (events[0]["trader_share"], events[0]["firm_share"]) == ("1600.00", "400.00")
    listed, total = await desk.service.list_payouts(tenant_id=None, status="failed")
    assert total == 2 and [p["id"] for p in listed] == [second["id"], pending["id"]]


@pytest.mark.parametrize("inclusive", [False, True])
async def test_trailing_intraday_max_loss_follows_the_peak_locks_and_breaches_exactly(
    desk: Desk, inclusive: bool
) -> None:
    """Apex style: 2,500 below the intraday equity peak, locked at initial + 100. The
    risk engine trails the floor itself (no evaluation per new high); the warning, the
    lock and the boundary (``<`` / ``<=``) are exact."""
    body = plan_body()
    body["phases"][0]["rules"] = [
        {
            "type": "max_loss",
            "params": {
                "model": "trailing_intraday_equity",
                "amount": 2500,
                "lock_offset": 100,
                "warn_at_pct": [50],
                "inclusive": inclusive,
            },
        },
        {"type": "profit_target", "params": {"amount": 10000}},
    ]
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")  # at ask 1.10002
    risk = desk.kernel.risk

    def trail() -> tuple[Decimal | None, list[Decimal | None]]:
        return risk.peak(login), [w.floor for w in risk.watched(login) if w.rule == "prop"]

    await desk.quote("1.11002", "1.11010", "2026-03-02T11:00:00Z")  # equity 101,000
    assert trail() == (D("101000"), [D("98500"), D("99750")])
    await desk.quote("1.10502", "1.10510", "2026-03-02T11:01:00Z")  # 100,500: floor stays
    assert trail() == (D("101000"), [D("98500"), D("99750")])
    await desk.quote("1.13002", "1.13010", "2026-03-02T11:02:00Z")  # 103,000: locked
    assert trail() == (D("103000"), [D("100100"), D("101350")])
    assert await desk.events("drawdown.warning", "account.breached") == []
    await desk.quote("1.11302", "1.11310", "2026-03-02T11:03:00Z")  # 101,300: warning
    warning = await desk.events("drawdown.warning")
    assert [(w["rule"], w["threshold_pct"], w["floor"], w["equity"]) for w in warning] == [
        ("max_loss", "50", "100100.00", "101300.00")
    ]
    await desk.quote("1.10102", "1.10110", "2026-03-02T11:04:00Z")  # 100,100: the lock
    breaches = await desk.events("account.breached")
    if not inclusive:
        assert breaches == []
        await desk.quote("1.10101", "1.10110", "2026-03-02T11:05:00Z")  # 100,099
        breaches = await desk.events("account.breached")
    assert [(b["rule"], b["floor"]) for b in breaches] == [("max_loss", "100100.00")]
    assert breaches[0]["equity"] == ("100100.00" if inclusive else "100099.00")
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["status"] == "failed" and state["breach"]["floor"] == D("100100")
    async with desk.kernel.db.read() as session:
        row = await session.scalar(select(PropAccount).where(PropAccount.login == login))
    assert row is not None and row.peak_equity == D("103000")


async def test_day_reset_replaces_the_daily_floor_of_open_accounts_in_bulk(desk: Desk) -> None:
    """The5ers-style floor max(SB, SE) - 3,000: a floating profit at the reset raises it
    through the bulk path (no new end-of-day balance high, so no full re-level), and
    the next fall crosses the new floor, not yesterday's."""
    body = plan_body()
    body["phases"][0]["rules"][0]["params"] = {
        "model": "max_balance_equity_pct",
        "amount": 3000,
        "warn_at_pct": [50],
    }
    body["phases"][0]["rules"][2]["params"] = {"amount": 10000}
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")  # at ask 1.10002
    await desk.quote("1.12002", "1.12010", "2026-03-02T22:59:00Z")  # floating +2,000

    def daily() -> list[tuple[str, Decimal]]:
        return [
            (w.level.name, w.level.value)
            for w in desk.kernel.risk.watched(login)
            if w.level.name.startswith("daily_loss")
        ]

    assert daily() == [("daily_loss", D(97000)), ("daily_loss.warn_50", D(98500))]
    await desk.quote("1.12002", "1.12010", "2026-03-02T23:00:00Z")  # Prague midnight
    state = await desk.service.get_account(account["id"], tenant_id=None)
    assert state["day"].isoformat() == "2026-03-03"
    assert (state["day_start_balance"], state["day_start_equity"]) == (D(100000), D(102000))
    assert daily() == [("daily_loss", D(99000)), ("daily_loss.warn_50", D(100500))]
    await desk.quote("1.09003", "1.09010", "2026-03-03T08:00:00Z")  # 99,001: above
    assert await desk.events("account.breached") == []
    await desk.quote("1.09001", "1.09010", "2026-03-03T08:01:00Z")  # 98,999
    breach = (await desk.events("account.breached"))[0]
    assert (breach["rule"], breach["floor"], breach["equity"]) == (
        "daily_loss",
        "99000.00",
        "98999.00",
    )


async def test_equity_peaks_reached_between_evaluations_are_persisted(desk: Desk) -> None:
    body = plan_body()
    body["phases"][0]["rules"] = [
        {"type": "max_loss", "params": {"model": "trailing_intraday_equity", "amount": 2500}}
    ]
    plan = await desk.service.create_plan(body, tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]
    await desk.buy(login, "1")  # at ask 1.10002

    async def stored() -> Decimal:
        async with desk.kernel.db.read() as session:
            return D(
                await session.scalar(
                    select(PropAccount.peak_equity).where(PropAccount.login == login)
                )
            )

    await desk.quote("1.11502", "1.11510", "2026-03-02T11:00:00Z")  # a new high: no job
    assert (await stored(), desk.kernel.risk.peak(login)) == (D(100000), D(101500))
    engine = engine_of(desk.kernel)
    assert await engine.persist_peaks(desk.kernel.db) == 1  # what shutdown does
    assert await stored() == D(101500)
    # a restart: a fresh engine knows no peak; loading seeds it from the stored one
    await desk.quote("1.11002", "1.11010", "2026-03-02T11:01:00Z")  # equity 101,000
    view = engine.views.pop(login)
    desk.kernel.risk.set_peak(login, None)
    engine.install(replace(view, history=replace(view.history, peak_equity=await stored())))
    desk.kernel.risk.settle()
    assert desk.kernel.risk.peak(login) == D(101500)
    assert [w.floor for w in desk.kernel.risk.watched(login) if w.floor] == [D(99000)]


def test_a_rule_that_may_read_the_day_is_relevelled_one_by_one_at_the_reset() -> None:
    """Bulk day reset only when every rule has a bulk path or says it ignores the day:
    a third party's rule declaring neither keeps the per-account (never stale) path."""

    class Bulk:
        def day_levels(self, *_: Any) -> dict[str, list[Decimal]]:
            return {}

    class Dayless:
        uses_day = False

    class Unknown:
        pass

    def rules(*kinds: type) -> tuple[ConfiguredRule, ...]:
        return tuple(ConfiguredRule(kind.__name__, kind()) for kind in kinds)  # type: ignore[arg-type]

    assert day_levels_in_bulk(rules(Bulk, Dayless)) is True
    assert day_levels_in_bulk(rules(Bulk, Dayless, Unknown)) is False
    assert day_levels_in_bulk(()) is True


def test_a_day_reset_applies_each_new_day_when_the_view_is_next_read() -> None:
    """The reset keeps each new day pending instead of rebuilding every view; the first
    read applies it, two resets without a read chain, a replaced view drops it."""
    prague = ZoneInfo("Europe/Prague")
    phases = ({"name": "phase_1", "rules": []},)
    plan = PlanSpec("p", D(100000), "USD", phases, (), "00:00", prague, True, "keep")
    refreshed: list[int] = []
    engine = PropEngine(
        types={},
        submit=lambda job: None,
        refresh=refreshed.append,
        floating=lambda login: -12.5 if login == 1 else None,
        now=lambda: datetime(2026, 3, 2, 12, tzinfo=UTC),
    )
    engine.set_plan(plan)
    started = datetime(2026, 3, 1, 23, tzinfo=UTC)
    for login in (1, 2):
        engine.views[login] = PropView(
            f"prop_{login}", login, plan, None, "cus", "USD", "active", 0, 1, D(100000),
            started, DaySnapshot(date(2026, 3, 2), started, D(100000), D(100000)),
            History(D(100000), D(100000)), (),
        )  # fmt: skip
    cached = dict.get(engine.views, 1)

    def reset(at: datetime, money: dict[int, Decimal]) -> list[tuple[Any, ...]]:
        rows = engine.day_snapshots("p", at, {k: (v, D(0)) for k, v in money.items()})
        return [
            (r["k_login"], r["v_day"], r["v_day_start_equity"], r["v_peak_eod_balance"])
            for r in rows
        ]

    midnight = datetime(2026, 3, 2, 23, tzinfo=UTC)  # Prague midnight of 3 March
    assert reset(midnight, {1: D(101000), 2: D(99000)}) == [
        (1, date(2026, 3, 3), D("100987.50"), D(101000)),
        (2, date(2026, 3, 3), D(99000), D(100000)),
    ]
    assert dict.get(engine.views, 1) is cached  # no view rebuilt by the reset
    assert refreshed == [1]  # positions open: re-levelled; flat: not
    after = midnight + timedelta(days=1)
    assert reset(after, {1: D(100500), 2: D(99000)}) == [
        (1, date(2026, 3, 4), D("100487.50"), D(101000)),  # the pending day's peak kept
        (2, date(2026, 3, 4), D(99000), D(100000)),
    ]
    assert reset(after, {1: D(100500), 2: D(99000)}) == []  # already snapshotted
    view = engine.views[1]
    assert (view.day, view.history.peak_eod_balance) == (
        DaySnapshot(date(2026, 3, 4), after, D(100500), D("100487.50")),
        D(101000),
    )
    assert list(engine.views.pending) == [2]
    engine.views[2] = replace(dict.get(engine.views, 2), customer_id="other")
    assert (engine.views.pending, engine.views[2].day.day) == ({}, date(2026, 3, 2))
    reset(after + timedelta(days=1), {1: D(100500), 2: D(99000)})
    assert [v.day.day for v in engine.views.values()] == [date(2026, 3, 5)] * 2
    assert engine.views.pending == {}


async def test_a_plan_changed_by_another_process_is_reloaded_from_its_event(desk: Desk) -> None:
    """Another process writes the plan and records ``plan.updated``; this process's
    engine rebuilds the accounts' rules from the database (max-loss 10% → 12%)."""
    plan = await desk.service.create_plan(plan_body(), tenant_id=None)
    account = await provision(desk, plan)
    login = account["login"]

    def max_loss() -> list[tuple[str, Decimal]]:
        return [
            (w.level.name, w.level.value)
            for w in desk.kernel.risk.watched(login)
            if w.level.name.startswith("max_loss")
        ]

    await desk.buy(login, "1")
    assert max_loss() == [("max_loss", D(90000))]
    phases = plan_body()["phases"]
    phases[0]["rules"][1]["params"]["percent"] = 12
    async with desk.kernel.db.transaction() as session:  # as another process would
        row = await session.get(PropPlan, plan["id"])
        assert row is not None
        row.phases = phases
        record_event(
            session, "plan.updated", {"plan_id": plan["id"], "tenant_id": None}, row.updated_at
        )
    await idle(desk.kernel)
    desk.kernel.risk.settle()
    assert max_loss() == [("max_loss", D(88000))]
