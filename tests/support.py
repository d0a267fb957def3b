"""Helpers for tests that drive the kernel through its HTTP API.

``make_kernel`` builds a kernel on the test backend with feeds not started, so a
test sets exact prices with :func:`tick` (the replay provider drives the market
clock, as the replay feed does).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook

from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.staff import create_staff_user

# 2014-05-07T00:00:00Z, the replayed day most tests use.
DAY_START_MS = 1_399_420_800_000
JWT_SECRET = "test-secret-with-enough-entropy-0123456789"
ADMIN_EMAIL = "admin@broker.test"
ADMIN_PASSWORD = "Admin-Pass-123"
#: The Standard Webhooks test secret (../shared/data/vendor/vectors.json).
CALLBACK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def write_config(path: Path, market_data_dir: Path, extra: str = "", clock: str = "replay") -> Path:
    path.write_text(
        f"""
[kernel]
execution_venue = "bbook"
clock = "{clock}"
jwt_secret = "{JWT_SECRET}"

[plugins.replay]
data_dir = "{market_data_dir}"
symbols = ["EURUSD", "XAUUSD"]
start = "2014-05-07"
speed = "max"

[plugins.bbook]
[plugins.spread_markup]
[plugins.margin]
[plugins.manual]
{extra}
"""
    )
    return path


def make_kernel(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    clock: str = "replay",
    extra: str = "",
) -> Kernel:
    """A kernel with feeds not started; ``clock`` is the feed driving market time
    (``"replay"``: :func:`tick`; ``"manual"``: :func:`manual_quote` times); ``extra``
    is appended to ``plugins.toml`` (more plugin sections)."""
    config = write_config(tmp_path / "plugins.toml", market_data_dir, extra, clock=clock)
    settings = Settings(
        config_path=config,
        database_url=database_url,
        redis_url=redis_url,
        var_dir=tmp_path / "var",
        start_feeds=False,
        env={},
    )
    return Kernel(settings)


def tick(kernel: Kernel, symbol: str, bid: str, ask: str, time_ms: int) -> None:
    """Publish one quote through the kernel's price path (moves the market clock)."""
    kernel.quotes.publish(Quote(symbol, Decimal(bid), Decimal(ask), time_ms, "replay"))


async def create_admin(kernel: Kernel, email: str = ADMIN_EMAIL, role: str = "admin") -> None:
    await create_staff_user(kernel.db, email, ADMIN_PASSWORD, role=role, first_name="Ada")


async def staff_headers(client: TestClient[Any, Any], email: str = ADMIN_EMAIL) -> dict[str, str]:
    response = await client.post(
        "/api/admin/users/login", json={"email": email, "password": ADMIN_PASSWORD}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def register_trader(
    client: TestClient[Any, Any], email: str, **profile: Any
) -> tuple[int, dict[str, str]]:
    """Register (first name ``T`` unless ``profile`` says otherwise, plus any other
    registration fields in ``profile``) and log in a trader; returns (login, auth headers)."""
    response = await client.post(
        "/api/customer/register",
        json={"email": email, "password": "Trader-Pass-1", "first_name": "T", **profile},
    )
    assert response.status == 201, await response.text()
    login = int((await response.json())["trading_accounts"][0]["login"])
    response = await client.post(
        "/api/customer/login", json={"email": email, "password": "Trader-Pass-1"}
    )
    assert response.status == 200, await response.text()
    return login, {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def deposit(
    client: TestClient[Any, Any], staff: dict[str, str], login: int, amount: str
) -> dict[str, Any]:
    response = await client.post(
        "/api/backoffice/transactions/manual",
        json={
            "login": login,
            "type": "DEPOSIT",
            "amount": amount,
            "currency": "USD",
            "status": "APPROVED",
        },
        headers=staff,
    )
    assert response.status == 201, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def market_order(
    client: TestClient[Any, Any],
    kernel: Kernel,
    headers: dict[str, str],
    login: int,
    symbol: str,
    cmd: int,
    volume: str,
) -> dict[str, Any]:
    """Place a market order and return its final poll body (executed or rejected)."""
    response = await client.post(
        "/api/customer/orders",
        data=f'{{"login": {login}, "symbol": "{symbol}", "cmd": {cmd}, "volume": {volume}}}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    queued = await response.json()
    assert queued["status"] == "queued"
    await kernel.trading.idle()
    response = await client.get(
        f"/api/customer/orders/request/{queued['request_id']}", headers=headers
    )
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def manual_quote(
    client: TestClient[Any, Any],
    staff: dict[str, str],
    symbol: str,
    bid: str,
    ask: str,
    time: str | None = None,
) -> dict[str, Any]:
    """Set a quote over HTTP with the manual pricing plugin (``time``: ISO 8601 UTC,
    only with ``clock="manual"``); returns the price body."""
    body = f'{{"bid": {bid}, "ask": {ask}' + (f', "time": "{time}"}}' if time else "}")
    response = await client.post(
        f"/api/platform/prices/{symbol}",
        data=body,
        headers={**staff, "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


def signed(
    body: dict[str, Any],
    msg_id: str = "msg_1",
    secret: str = CALLBACK_SECRET,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A Standard Webhooks signed request (``data`` and ``headers`` for aiohttp),
    signed at ``at`` (default now; within 5 minutes of now to be accepted)."""
    data = json.dumps(body)
    now = at or datetime.now(UTC)
    return {
        "data": data,
        "headers": {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, now, data),
        },
    }
