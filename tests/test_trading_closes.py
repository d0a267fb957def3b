"""Closing positions (seed section 11) and the audit log (seed section 31)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from support import DAY_START_MS, deposit, market_order, register_trader, tick
from trading_support import add_instrument, get, ledger, positions, send, state, update_group

from brokerkernel.kernel.runtime import Kernel

Client = Any
T0 = DAY_START_MS + 7135


async def _close(
    client: Client, headers: dict[str, str], login: int, ticket: int, volume: str | None = None
) -> tuple[int, Any]:
    query = f"?login={login}" + (f"&volume={volume}" if volume is not None else "")
    return await send(client, "DELETE", f"/api/crm/orders/{ticket}{query}", headers, {})


async def test_partial_closes_split_margin_and_commission_in_proportion(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await update_group(client, staff, commission_type="per_lot", commission_value=Decimal("5"))
    login, trader = await register_trader(client, "split@test.io")
    await deposit(client, staff, login, "5000")
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "1")
    ticket = order["order"]

    first = await _close(client, trader, login, ticket, "0.333")
    (rest,) = await positions(client, trader, login)
    last = await _close(client, trader, login, ticket)

    # margin 1,392.98 x 0.333 = 463.862 -> 463.86; open fee 5 x 0.333 = 1.665 -> 1.67
    # plus the closing side's 1.67
    assert first[0] == 200
    assert (
        first[1]["volume"],
        first[1]["margin"],
        first[1]["commission"],
        first[1]["parent_order"],
    ) == (Decimal("0.333"), Decimal("463.86"), Decimal("3.34"), ticket)
    assert (rest["volume"], rest["margin"], rest["commission"]) == (
        Decimal("0.667"),
        Decimal("929.12"),
        Decimal("3.33"),
    )
    # the rest keeps exact totals: 929.12 released, 3.33 + 0.667 x 5 = 3.335 -> 3.34
    assert (last[1]["ticket"], last[1]["margin"], last[1]["commission"]) == (
        ticket,
        Decimal("929.12"),
        Decimal("6.67"),
    )
    events = await ledger(client, staff, login)
    assert sum((e["margin_delta"] for e in events), Decimal(0)) == 0
    balance = sum((e["balance_delta"] for e in events), Decimal(0))
    # -12.00 of spread on 1 lot, 5 + 1.67 + 3.34 of commission
    assert balance == (await state(client, trader, login))["balance"] == Decimal("4977.99")


@pytest.mark.parametrize(
    ("volume", "status", "detail"),
    [
        ("0.0005", 422, "volume must be a positive multiple of 0.001 not above the position's"),
        ("0", 422, "volume must be a positive multiple of 0.001 not above the position's"),
        ("-0.1", 422, "volume must be a positive multiple of 0.001 not above the position's"),
        ("0.101", 422, "volume must be a positive multiple of 0.001 not above the position's"),
        ("abc", 422, [{"loc": ["query", "volume"], "msg": "must be a number", "type": "type"}]),
        ("NaN", 422, [{"loc": ["query", "volume"], "msg": "must be a number", "type": "type"}]),
    ],
)
async def test_bad_close_volumes(
    client: Client, kernel: Kernel, staff: dict[str, str], volume: str, status: int, detail: Any
) -> None:
    login, trader = await register_trader(client, f"badvol{volume}@test.io")
    await deposit(client, staff, login, "1000")
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")

    assert await _close(client, trader, login, order["order"], volume) == (
        status,
        {"detail": detail},
    )
    (position,) = await positions(client, trader, login)
    assert position["volume"] == Decimal("0.1")


async def test_close_errors_unknown_foreign_and_no_quote(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "closeerr@test.io")
    other, other_trader = await register_trader(client, "closeother@test.io")
    await deposit(client, staff, login, "1000")
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")

    unknown = await _close(client, trader, login, 999_999)
    foreign = await _close(client, other_trader, other, order["order"])
    not_yours = await _close(client, other_trader, login, order["order"])
    bad_ticket = await send(client, "DELETE", f"/api/crm/orders/x?login={login}", trader, {})
    tick(kernel, "XAUUSD", "1290.10", "1290.50", T0 + 10_001)  # EURUSD is now stale
    stale = await _close(client, trader, login, order["order"])

    assert unknown == (404, {"detail": "Position not found"})
    assert foreign == (404, {"detail": "Position not found"})
    assert not_yours == (403, {"detail": "Not your trading account"})
    assert bad_ticket == (
        422,
        {"detail": [{"loc": ["path", "ticket"], "msg": "must be an integer", "type": "type"}]},
    )
    assert stale == (409, {"detail": "No fresh quote"})


async def test_audit_log_records_every_financial_change_with_before_and_after(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "audit@test.io")
    await deposit(client, staff, login, "1000")
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")
    ticket = order["order"]
    await send(
        client,
        "PATCH",
        f"/api/customer/orders/{ticket}/sltp?login={login}",
        trader,
        {"sl": Decimal("1.38")},
    )
    tick(kernel, "EURUSD", "1.39386", "1.39398", T0 + 1000)
    await _close(client, trader, login, ticket)

    rows = await get(client, f"/api/backoffice/audit-log?login={login}&entity_type=order", staff)
    by_action = {row["action"]: row for row in rows}
    assert [row["action"] for row in rows] == ["close", "modify_sltp", "open"]
    opened = by_action["open"]
    assert {k: v for k, v in opened.items() if k not in ("id", "created_at")} == {
        "entity_type": "order",
        "entity_id": str(ticket),
        "action": "open",
        "login": str(login),
        "details": {
            "symbol": "EURUSD",
            "cmd": 0,
            "volume": "0.1",
            "price": "1.39298",
            "margin": "139.30",
            "commission": "0",
        },
        "balance_before": 1000,
        "balance_after": 1000,
        "credit_before": 0,
        "credit_after": 0,
        "margin_used_before": 0,
        "margin_used_after": Decimal("139.3"),
        "source_service": "order-service",
    }
    closed = by_action["close"]
    assert (
        closed["balance_before"],
        closed["balance_after"],
        closed["margin_used_before"],
        closed["margin_used_after"],
        closed["details"]["profit"],
    ) == (1000, Decimal("1008.8"), Decimal("139.3"), 0, "8.80")
    sltp = by_action["modify_sltp"]
    assert (sltp["balance_before"], sltp["balance_after"], sltp["details"]["sl"]) == (
        1000,
        1000,
        "1.38",
    )
    only_open = await get(
        client, f"/api/backoffice/audit-log?entity_id={ticket}&action=open", staff
    )
    assert [row["id"] for row in only_open] == [opened["id"]]
    paged = await get(client, f"/api/backoffice/audit-log?login={login}&limit=1&offset=1", staff)
    assert len(paged) == 1
    # money moved by other writers through the ledger is audited too
    (deposited,) = await get(
        client, f"/api/backoffice/audit-log?login={login}&action=deposit", staff
    )
    assert (
        deposited["entity_type"],
        deposited["balance_before"],
        deposited["balance_after"],
        deposited["source_service"],
    ) == ("transaction", 0, 1000, "money-service")


async def test_audit_log_is_append_only_and_staff_only(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "immutable@test.io")
    await deposit(client, staff, login, "1000")
    await market_order(client, kernel, trader, login, "EURUSD", 0, "0.1")

    for statement in ("UPDATE audit_log SET balance_after = 0", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="audit_log is append-only"):
            async with kernel.db.transaction() as session:
                await session.execute(text(statement))
    by_trader = await client.get("/api/backoffice/audit-log", headers=trader)
    too_many = await send(client, "GET", "/api/backoffice/audit-log?limit=1001", staff, {})

    assert by_trader.status == 403
    assert too_many[0] == 422
    assert len(await get(client, f"/api/backoffice/audit-log?login={login}", staff)) >= 1


async def test_positions_finer_than_0_001_lots_close_in_full_and_keep_0_001_open(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """Seed section 11: a partial close is a multiple of 0.001 leaving zero or at least
    0.001 lots; a full close takes the whole volume whatever its step (an instrument
    may trade in 0.0001 lots)."""
    await add_instrument(
        client,
        staff,
        symbol="BTCUSD_X",
        category="crypto",
        asset_class="crypto",
        calc_mode="CFD",
        base_currency="BTC",
        digits=2,
        pip_size=Decimal("1"),
        contract_size=Decimal("1"),
        min_lot=Decimal("0.0001"),
        lot_step=Decimal("0.0001"),
        margin_rate=Decimal("0.5"),
    )
    tick(kernel, "BTCUSD_X", "10000.00", "10000.00", T0 + 100)
    login, trader = await register_trader(client, "finelots@test.io")
    await deposit(client, staff, login, "1000")
    order = await market_order(client, kernel, trader, login, "BTCUSD_X", 0, "0.0015")
    small = await market_order(client, kernel, trader, login, "BTCUSD_X", 0, "0.0005")

    leaves_too_little = await _close(client, trader, login, order["order"], "0.001")
    full = await _close(client, trader, login, order["order"])
    full_small = await _close(client, trader, login, small["order"], "0.0005")

    assert leaves_too_little == (
        422,
        {"detail": "volume must leave 0 or at least 0.001 lots open"},
    )
    assert full[0] == 200
    assert (full[1]["volume"], full[1]["margin"], full[1]["parent_order"]) == (
        Decimal("0.0015"),
        Decimal("7.5"),
        None,
    )
    assert full_small[0] == 200
    assert (full_small[1]["volume"], full_small[1]["margin"]) == (Decimal("0.0005"), Decimal("2.5"))
    assert await positions(client, trader, login) == []
