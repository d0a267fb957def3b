"""The ledger (seed section 7): filters and pages, the summary, the drift check command
and batched appends under concurrent writers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from money_support import ledger_rows, transaction
from sqlalchemy import select
from support import DAY_START_MS, deposit, market_order, register_trader, tick

from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.cli import main
from brokerkernel.kernel.money.batching import LedgerBatcher, Posting
from brokerkernel.kernel.money.reports import check_ledger
from brokerkernel.kernel.money.transactions import TransactionRequest
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import TradingAccount, Transaction

Client = Any
T1 = DAY_START_MS + 60_000  # 2014-05-07T00:01:00Z
T2 = DAY_START_MS + 120_000  # 2014-05-07T00:02:00Z


async def get(client: Client, url: str, staff: dict[str, str]) -> tuple[int, Any, Any]:
    response = await client.get(url, headers=staff)
    return response.status, await response.json(loads=loads), response.headers


async def test_ledger_filters_pages_and_errors(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "ledger@test.io")
    await deposit(client, staff, login, "1000")
    tick(kernel, "EURUSD", "1.39286", "1.39298", T1)
    await transaction(client, staff, login, "WITHDRAWAL", "100", status="APPROVED")
    tick(kernel, "EURUSD", "1.39286", "1.39298", T2)
    await transaction(client, staff, login, "CREDIT_IN", "50", status="APPROVED")
    url = f"/api/backoffice/accounts/{login}/ledger"

    _, rows, headers = await get(client, url, staff)
    assert [(r["event_type"], r["sequence_num"], r["balance_after"]) for r in rows] == [
        ("credit_in", 3, 900),
        ("withdrawal", 2, 900),
        ("deposit", 1, 1000),
    ]
    assert headers["X-Total-Count"] == "3"
    assert rows[0]["created_at"] == "2014-05-07T00:02:00Z"
    _, rows, _ = await get(client, f"{url}?event_type=withdrawal", staff)
    assert [r["balance_delta"] for r in rows] == [-100]
    _, rows, _ = await get(client, f"{url}?from_date=2014-05-07T00:01:00Z", staff)
    assert [r["sequence_num"] for r in rows] == [3, 2]
    _, rows, _ = await get(client, f"{url}?to_date=2014-05-07T00:01:00%2B00:00", staff)
    assert [r["sequence_num"] for r in rows] == [2, 1]
    _, rows, headers = await get(client, f"{url}?limit=1&offset=1", staff)
    assert [r["sequence_num"] for r in rows] == [2] and headers["X-Total-Count"] == "3"

    status, body, _ = await get(client, f"{url}?event_type=bonus", staff)
    assert (status, body) == (
        422,
        {
            "detail": [
                {
                    "loc": ["query", "event_type"],
                    "msg": "must be one of deposit, withdrawal, chargeback, credit_in, "
                    "credit_out, order_open, margin_release, trade_pnl, commission, swap, "
                    "nbp, correction_in, correction_out",
                    "type": "enum",
                }
            ]
        },
    )
    status, body, _ = await get(client, f"{url}?from_date=2014-05-07T00:00:00", staff)
    assert (status, body) == (
        422,
        {
            "detail": [
                {"loc": ["query", "from_date"], "msg": "must carry a UTC offset", "type": "format"}
            ]
        },
    )
    status, body, _ = await get(client, f"{url}?limit=501", staff)
    assert (status, body["detail"][0]["loc"]) == (422, ["query", "limit"])
    status, body, _ = await get(client, "/api/backoffice/accounts/99999/ledger", staff)
    assert (status, body) == (404, {"detail": "Account not found"})
    status, body, _ = await get(client, "/api/backoffice/accounts/abc/ledger", staff)
    assert (status, body) == (
        422,
        {"detail": [{"loc": ["path", "login"], "msg": "must be an integer", "type": "type"}]},
    )


async def test_summary_totals_per_kind_and_time_window(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "summary@test.io")
    await deposit(client, staff, login, "5000")
    await transaction(client, staff, login, "WITHDRAWAL", "1000", status="APPROVED")
    await transaction(client, staff, login, "CREDIT_IN", "200", status="APPROVED")
    await transaction(client, staff, login, "CREDIT_OUT", "50", status="APPROVED")
    disputed = await deposit(client, staff, login, "100")
    response = await client.post(
        f"/api/backoffice/transactions/{disputed['id']}/chargeback",
        json={"reason": "dispute"},
        headers=staff,
    )
    assert response.status == 201
    tick(kernel, "EURUSD", "1.39286", "1.39298", T1)
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    tick(kernel, "EURUSD", "1.39398", "1.39410", T2)
    response = await client.delete(
        f"/api/crm/orders/{order['order']}?login={login}", headers=trader
    )
    assert response.status == 200, await response.text()
    url = f"/api/backoffice/accounts/{login}/ledger/summary"

    _, everything, _ = await get(client, url, staff)
    _, trading, _ = await get(client, f"{url}?from_date=2014-05-07T00:01:00Z", staff)
    _, money, _ = await get(client, f"{url}?to_date=2014-05-07T00:00:59Z", staff)

    assert everything == {
        "account_id": login,
        "total_deposits": 5100,
        "total_withdrawals": -1000,
        # 0.1 lot bought at 1.39298, sold at 1.39398: 0.001 x 100,000 x 0.1 = 10.00
        "net_trading_pnl": 10,
        "total_commissions": 0,
        "total_swaps": 0,
        "total_chargebacks": -100,
        "total_nbp": 0,
        "net_credit": 150,
        "net_balance_change": 4010,
        "total_events": 9,
    }
    assert (trading["net_trading_pnl"], trading["net_balance_change"]) == (10, 10)
    assert (trading["total_deposits"], trading["total_events"]) == (0, 3)
    assert (money["net_balance_change"], money["total_events"]) == (4000, 6)
    status, body, _ = await get(client, "/api/backoffice/accounts/99999/ledger/summary", staff)
    assert (status, body) == (404, {"detail": "Account not found"})


async def test_ledger_check_reports_no_drift_then_each_drift(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    login, _ = await register_trader(client, "drift@test.io")
    first = await deposit(client, staff, login, "1000")
    await transaction(client, staff, login, "CREDIT_IN", "25", status="APPROVED")
    await transaction(client, staff, login, "DEPOSIT", "5")  # PENDING: no ledger row
    monkeypatch.setenv("DATABASE_URL", database_url)

    clean = await asyncio.to_thread(main, ["ledger", "check"])
    clean_out = capsys.readouterr().out
    async with kernel.db.transaction() as session:
        account = await session.get_one(TradingAccount, login)
        account.balance += Decimal("1")
        tx = await session.get_one(Transaction, first["id"])
        tx.account_amount = Decimal("999")
    drift = await asyncio.to_thread(main, ["ledger", "check", "--login", str(login)])
    drift_out = capsys.readouterr().out

    assert clean == 0
    assert clean_out.splitlines() == ["1 accounts, 2 ledger rows, 3 transactions: no drift"]
    assert drift == 1
    assert drift_out.splitlines() == [
        f"drift: {login}: account 1001/25/0 (balance/credit/margin) != ledger 1000/25/0",
        f"drift: {login}: transaction {first['id']} (APPROVED, 999) "
        "has ledger rows summing to 1000",
        "1 accounts, 2 ledger rows, 3 transactions: 2 drift findings",
    ]


async def test_batched_and_single_writers_keep_sequences_and_totals(
    client: Client, kernel: Kernel, database_url: str, backends: Any
) -> None:
    """Two batchers (on PostgreSQL with two engines, as two processes would) and single
    writers at once: the account row locks (PostgreSQL) / the single writer (SQLite)
    keep every sequence gap-free and every running total exact."""
    logins = [(await register_trader(client, f"batch{i}@test.io"))[0] for i in range(4)]
    other_process = Database(database_url) if backends.is_postgresql else kernel.db
    batchers = [
        LedgerBatcher(kernel.db, max_batch=64, shards=3),
        LedgerBatcher(other_process, max_batch=64),
    ]
    at = datetime(2014, 5, 7, tzinfo=UTC)
    postings = [
        Posting(
            login=logins[i % 4],
            event_type="correction_in",
            reference_type="adjustment",
            reference_id=str(i),
            idempotency_key=f"adjust:{i}",
            description=f"Adjustment {i}",
            at=at,
            balance_delta=Decimal(i % 7) + Decimal("0.01"),
        )
        for i in range(400)
    ]
    singles = [
        kernel.transactions.create_manual(
            TransactionRequest("DEPOSIT", login, Decimal("10.10"), "USD", "APPROVED"), "test"
        )
        for login in logins
        for _ in range(5)
    ]
    try:
        posted, _ = await asyncio.gather(
            asyncio.gather(*(batchers[i % 2].post(p) for i, p in enumerate(postings))),
            asyncio.gather(*singles),
        )
        again = await batchers[1].post(postings[7])
        with pytest.raises(LookupError, match="Account 99999 not found"):
            await batchers[0].post(
                Posting(99999, "correction_in", "adjustment", "x", "adjust:x", "x", at)
            )
    finally:
        if other_process is not kernel.db:
            await other_process.dispose()

    assert not any(p.duplicate for p in posted)
    assert again.duplicate and again.row["sequence_num"] == posted[7].row["sequence_num"]
    assert sum(b.batches for b in batchers) < len(postings)
    for login in logins:
        rows = await ledger_rows(kernel, login)
        assert [r.sequence_num for r in rows] == list(range(1, 106))
        running = Decimal(0)
        for row in rows:
            running += row.balance_delta
            assert row.balance_after == running
        expected = sum((p.balance_delta for p in postings if p.login == login), Decimal("50.50"))
        async with kernel.db.read() as session:
            account = await session.get_one(TradingAccount, login)
        assert account.balance == running == expected
    report = await check_ledger(kernel.db)
    assert (report.events, report.drift) == (420, [])
    async with kernel.db.read() as session:
        keys = (
            await session.scalars(select(Transaction.id).where(Transaction.login.in_(logins)))
        ).all()
    assert len(keys) == 20
