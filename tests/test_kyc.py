"""The provider-agnostic KYC webhook (seed section 25): signed with Standard Webhooks,
the customer's status stored once per change, ``customer.kyc_status_changed`` and,
on ``approved``, ``trader.kyc_passed`` per prop account (the challenges plugin)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from support import (
    CALLBACK_SECRET,
    create_admin,
    make_kernel,
    manual_quote,
    signed,
    staff_headers,
)

from brokerkernel.api.app import create_app
from brokerkernel.kernel.kyc import CustomerKyc
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.plugins.challenges import idle
from brokerkernel.plugins.challenges.service import TraderSpec, challenge_service

EXTRA = f"""
[kernel.kyc]
webhook_secret = "{CALLBACK_SECRET}"

[plugins.challenges]
[plugins.max_loss]
"""
URL = "/webhooks/kyc"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MAX_LOSS = {"type": "max_loss", "params": {"model": "static", "percent": 10}}
Client = TestClient[Any, Any]


@pytest.fixture
async def app(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, Kernel]:
    kernel = make_kernel(
        tmp_path, database_url, redis_url, market_data_dir, clock="manual", extra=EXTRA
    )
    client: Client = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    staff = await staff_headers(client)
    await manual_quote(client, staff, "EURUSD", "1.10000", "1.10002", "2026-03-02T10:00:00Z")
    return client, kernel


async def post(client: Client, request: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(URL, **request)
    return response.status, await response.json()


async def events(kernel: Kernel, *types: str) -> list[dict[str, Any]]:
    await idle(kernel)
    async with kernel.db.read() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type.in_(types)).order_by(OutboxEvent.seq)
        )
        return [{"type": row.type, **row.payload} for row in rows]


async def stored(kernel: Kernel) -> list[CustomerKyc]:
    async with kernel.db.read() as session:
        return list((await session.scalars(select(CustomerKyc))).all())


def result(customer_id: str, status: str, **more: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "provider": "sumsub",
        "provider_id": "ext-ref-123",
        "status": status,
        "doc_type": "passport",
        "doc_country": "US",
        **more,
    }


async def test_each_status_change_is_stored_and_emitted_once(app: tuple[Client, Kernel]) -> None:
    """``pending`` then ``approved`` (twice: a re-delivery): two status changes, and
    ``trader.kyc_passed`` once per prop account of the trader, to its tenant."""
    client, kernel = app
    service = challenge_service(kernel)
    plan = await service.create_plan(
        {
            "code": "acme-10k",
            "name": "Acme 10K",
            "account_size": Decimal(10000),
            "phases": [{"name": "phase_1", "rules": [MAX_LOSS]}],
        },
        tenant_id="acme",
    )
    trader = TraderSpec(email="kyc@acme.test")
    first = await service.provision(plan["id"], trader, tenant_id="acme", source="zt4")
    second = await service.provision(plan["id"], trader, tenant_id="acme", source="zt4")
    customer_id = first["customer_id"]
    assert second["customer_id"] == customer_id

    pending = await post(client, signed(result(customer_id, "pending"), "msg_1"))
    assert pending == (
        200,
        {
            "customer_id": customer_id,
            "kyc_status": "pending",
            "previous_status": "not_started",
            "changed": True,
        },
    )
    raw = {"reviewAnswer": "GREEN", "checks": [{"score": 0.98, "threshold": 1e-3}]}
    approved = signed(result(customer_id, "approved", raw_result=raw))
    assert await post(client, approved) == (
        200,
        {
            "customer_id": customer_id,
            "kyc_status": "approved",
            "previous_status": "pending",
            "changed": True,
        },
    )
    assert await post(client, approved) == (
        200,
        {
            "customer_id": customer_id,
            "kyc_status": "approved",
            "previous_status": None,
            "changed": False,
        },
    )
    document = {
        "provider": "sumsub",
        "provider_id": "ext-ref-123",
        "doc_type": "passport",
        "doc_country": "US",
    }
    assert await events(kernel, "customer.kyc_status_changed") == [
        {
            "type": "customer.kyc_status_changed",
            "customer_id": customer_id,
            "status": status,
            "previous_status": previous,
            **document,
        }
        for previous, status in (("not_started", "pending"), ("pending", "approved"))
    ]
    passed = await events(kernel, "trader.kyc_passed")
    assert passed == [
        {
            "type": "trader.kyc_passed",
            "tenant_id": "acme",
            "account_id": account["id"],
            "login": account["login"],
            "plan_id": plan["id"],
            "phase": "phase_1",
            "customer_id": customer_id,
            **document,
        }
        for account in (first, second)
    ]
    [row] = await stored(kernel)
    assert (row.customer_id, row.status, row.provider, row.raw_result) == (
        customer_id,
        "approved",
        "sumsub",
        {"reviewAnswer": "GREEN", "checks": [{"score": 0.98, "threshold": 0.001}]},
    )
    assert row.updated_at.replace(tzinfo=UTC) == NOW
    # a later rejection is a change again, with no trader.kyc_passed
    later = datetime.now(UTC) + timedelta(seconds=2)
    rejected = await post(client, signed(result(customer_id, "rejected"), "msg_3", at=later))
    assert rejected[1]["previous_status"] == "approved"
    assert len(await events(kernel, "trader.kyc_passed")) == 2
    # the captured approval replayed (signed before the rejection): nothing changes
    assert await post(client, approved) == (
        200,
        {
            "customer_id": customer_id,
            "kyc_status": "rejected",
            "previous_status": None,
            "changed": False,
        },
    )
    [row] = await stored(kernel)
    assert (row.status, row.signed_at.replace(tzinfo=UTC)) == (
        "rejected",
        later.replace(microsecond=0),
    )
    assert len(await events(kernel, "customer.kyc_status_changed")) == 3
    assert len(await events(kernel, "trader.kyc_passed")) == 2


async def test_without_a_webhook_secret_the_endpoint_does_not_exist(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, clock="manual")
    client: Client = await aiohttp_client(create_app(kernel))
    assert await post(client, signed(result("cus-1", "approved"))) == (
        404,
        {"detail": "Not Found"},
    )


async def test_bad_signatures_bodies_and_customers_are_refused(
    app: tuple[Client, Kernel],
) -> None:
    client, kernel = app
    body = result("cus-1", "approved")
    tampered = signed(body)
    tampered["data"] = tampered["data"].replace("approved", "rejected")
    stale = signed(body)
    stale["headers"]["webhook-timestamp"] = str(int(time.time()) - 301)
    wrong_key = signed(body, secret="whsec_" + "A" * 32)
    for request in (tampered, stale, wrong_key, {"json": body}):
        assert await post(client, request) == (401, {"detail": "Invalid signature"})
    assert await post(client, signed(body)) == (404, {"detail": "Customer not found"})
    status, refused = await post(client, signed({**body, "status": "GREEN"}))
    assert status == 422
    assert [item["loc"] for item in refused["detail"]] == [["body", "status"]]
    assert await stored(kernel) == []
    assert await events(kernel, "customer.kyc_status_changed", "trader.kyc_passed") == []
    async with kernel.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(CustomerKyc)) == 0
