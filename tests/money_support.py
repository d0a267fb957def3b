"""Helpers for the money, payment-routing and connector tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support import DAY_START_MS, create_admin, make_kernel, staff_headers, tick

from brokerkernel.api.app import create_app
from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.money.models import BrokerSetting
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Customer, LedgerEvent, TradingAccount, Transaction

Client = TestClient[Any, Any]


async def json_body(response: ClientResponse, expect: int) -> dict[str, Any]:
    """The JSON object answered (exact decimals), once the status is ``expect``."""
    assert response.status == expect, await response.text()
    body: dict[str, Any] = await response.json(loads=loads)
    return body


async def payment_app(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
    extra: str,
) -> tuple[Client, Kernel]:
    """The API with ``extra`` plugin sections (connectors), an admin user and the
    EURUSD quote of the ``client`` fixture (bid 1.39286 / ask 1.39298)."""
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=extra)
    client: Client = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7135)
    return client, kernel


async def staff_as(client: Client, kernel: Kernel, email: str, role: str) -> dict[str, str]:
    """A new staff user with ``role``, logged in: its auth headers."""
    await create_admin(kernel, email, role=role)
    return await staff_headers(client, email)


async def transaction(
    client: Client,
    staff: dict[str, str],
    login: int,
    type_: str,
    amount: str,
    status: str = "PENDING",
    currency: str = "USD",
    expect: int = 201,
) -> dict[str, Any]:
    """``POST /api/backoffice/transactions/manual``; asserts the status, returns the body."""
    response = await client.post(
        "/api/backoffice/transactions/manual",
        json={
            "login": login,
            "type": type_,
            "amount": amount,
            "currency": currency,
            "status": status,
        },
        headers=staff,
    )
    return await json_body(response, expect)


async def act(
    client: Client, staff: dict[str, str], tx_id: str, action: str, expect: int = 200
) -> dict[str, Any]:
    """``PATCH /api/backoffice/transactions/{id}/{action}`` (approve, decline, delete)."""
    response = await client.patch(f"/api/backoffice/transactions/{tx_id}/{action}", headers=staff)
    return await json_body(response, expect)


async def ledger_rows(kernel: Kernel, login: int) -> list[LedgerEvent]:
    async with kernel.db.read() as session:
        return list(
            (
                await session.scalars(
                    select(LedgerEvent)
                    .where(LedgerEvent.account_id == login)
                    .order_by(LedgerEvent.sequence_num)
                )
            ).all()
        )


async def balance(kernel: Kernel, login: int) -> tuple[Decimal, Decimal]:
    """``(balance, credit)`` of the account row."""
    async with kernel.db.read() as session:
        account = await session.get_one(TradingAccount, login)
        return account.balance, account.credit


async def transactions_of(kernel: Kernel, login: int) -> list[Transaction]:
    async with kernel.db.read() as session:
        return list(
            (
                await session.scalars(
                    select(Transaction)
                    .where(Transaction.login == login)
                    .order_by(Transaction.created_at, Transaction.id)
                )
            ).all()
        )


async def compliance_status(kernel: Kernel, login: int) -> str:
    async with kernel.db.read() as session:
        account = await session.get_one(TradingAccount, login)
        customer = await session.get_one(Customer, account.customer_id)
        return customer.compliance_status


async def set_maker_checker(kernel: Kernel, enabled: bool) -> None:
    async with kernel.db.transaction() as session:
        setting = await session.get_one(BrokerSetting, "maker_checker_enabled")
        setting.value = "true" if enabled else "false"
