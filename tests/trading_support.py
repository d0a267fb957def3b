"""HTTP helpers for the trading-core tests (orders, pending orders, SL/TP, swaps, stop-out).

Everything goes through the API as a client would; prices are set with
:func:`support.tick` (the replay provider drives the market clock). Bodies are sent
and read with exact decimals (numbers with a fraction come back as ``Decimal``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiohttp.test_utils import TestClient

from brokerkernel.api.jsonio import dumps, loads
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP_ID

Client = TestClient[Any, Any]


async def send(
    client: Client, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, Any]:
    """``(status, JSON body)`` of a request whose Decimal fields go out exactly."""
    response = await client.request(
        method, path, data=dumps(body), headers={**headers, "Content-Type": "application/json"}
    )
    return response.status, loads(await response.text())


async def get(client: Client, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(path, headers=headers)
    text = await response.text()
    assert response.status == 200, text
    return loads(text)


async def add_instrument(client: Client, staff: dict[str, str], **fields: Any) -> dict[str, Any]:
    """Create a forex-like instrument (overridable fields) through the platform API."""
    symbol = fields.get("symbol", "GBPUSD_X")
    body: dict[str, Any] = {
        "symbol": symbol,
        "display_name": f"{symbol} test",
        "category": "forex",
        "asset_class": "forex_majors",
        "calc_mode": "FOREX",
        "base_currency": "GBP",
        "quote_currency": "USD",
        "profit_currency": "USD",
        "digits": 5,
        "pip_size": Decimal("0.0001"),
        "contract_size": Decimal("100000"),
        "min_lot": Decimal("0.01"),
        "max_lot": Decimal("100"),
        "lot_step": Decimal("0.01"),
        "margin_rate": Decimal("0.01"),
        "spread": Decimal("0"),
        "stale_threshold_ms": 10_000,
        "provider": "test",
        **fields,
    }
    status, result = await send(client, "POST", "/api/platform/instruments", staff, body)
    assert status == 201, result
    return dict(result)


async def override(
    client: Client,
    staff: dict[str, str],
    symbol: str,
    group_id: str = DEFAULT_GROUP_ID,
    **fields: Any,
) -> None:
    """``PUT /api/platform/groups/{id}/instruments/{symbol}`` (null inherits)."""
    status, result = await send(
        client, "PUT", f"/api/platform/groups/{group_id}/instruments/{symbol}", staff, fields
    )
    assert status in (200, 201), result


async def update_group(
    client: Client, staff: dict[str, str], group_id: str = DEFAULT_GROUP_ID, **fields: Any
) -> dict[str, Any]:
    status, result = await send(client, "PATCH", f"/api/platform/groups/{group_id}", staff, fields)
    assert status == 200, result
    return dict(result)


async def create_group(client: Client, staff: dict[str, str], **fields: Any) -> dict[str, Any]:
    status, result = await send(client, "POST", "/api/platform/groups", staff, fields)
    assert status == 201, result
    return dict(result)


async def move_account(
    client: Client, staff: dict[str, str], login: int, group_id: str
) -> dict[str, Any]:
    status, result = await send(
        client, "PATCH", f"/api/platform/accounts/{login}/group", staff, {"group_id": group_id}
    )
    assert status == 200, result
    return dict(result)


async def set_mode(client: Client, staff: dict[str, str], login: int, mode: str) -> tuple[int, Any]:
    return await send(
        client, "PATCH", f"/api/platform/accounts/{login}/mode", staff, {"account_mode": mode}
    )


async def place_pending(
    client: Client, kernel: Kernel, headers: dict[str, str], **body: Any
) -> tuple[int, Any]:
    """``POST /api/customer/orders/pending``; returns ``(status, body)``."""
    result = await send(client, "POST", "/api/customer/orders/pending", headers, body)
    await kernel.trading.idle()
    return result


async def positions(client: Client, headers: dict[str, str], login: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await get(client, f"/api/crm/orders?login={login}", headers)
    return result


async def history(client: Client, headers: dict[str, str], login: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await get(client, f"/api/crm/history?login={login}", headers)
    return result


async def state(client: Client, headers: dict[str, str], login: int) -> dict[str, Any]:
    result: dict[str, Any] = await get(client, f"/api/crm/accounts/{login}/state", headers)
    return result


async def ledger(client: Client, staff: dict[str, str], login: int) -> list[dict[str, Any]]:
    """The account's ledger, oldest first."""
    rows: list[dict[str, Any]] = await get(
        client, f"/api/backoffice/accounts/{login}/ledger?limit=500", staff
    )
    return rows[::-1]
