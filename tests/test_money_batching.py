"""Batched ledger appends write each ledger row's audit-log row (seed section 31) in the
same unit of work, as every other ledger writer does."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from money_support import ledger_rows
from sqlalchemy import select
from support import register_trader

from brokerkernel.kernel.money.batching import LedgerBatcher, Posting
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.trading.models import AuditLogEntry

Client = Any
AT = datetime(2014, 5, 7, 0, 5, tzinfo=UTC)


async def test_batched_postings_write_one_audit_row_each_and_duplicates_none(
    client: Client, kernel: Kernel
) -> None:
    login, _ = await register_trader(client, "audited@test.io")
    batcher = LedgerBatcher(kernel.db)
    bonus = Posting(
        login, "bonus", "adjustment", "b1", "bonus:b1", "Welcome bonus", AT,
        credit_delta=Decimal("50.00"), source="bonus-service",
    )  # fmt: skip
    swap = Posting(
        login, "swap", "position", "77", "swap:77", "Swap", AT, balance_delta=Decimal("-1.25")
    )
    first, second, again = await batcher.post_many([bonus, swap, bonus])

    async with kernel.db.read() as session:
        audits = (
            await session.scalars(
                select(AuditLogEntry).where(AuditLogEntry.login == login).order_by(AuditLogEntry.id)
            )
        ).all()
    assert (first.duplicate, second.duplicate, again.duplicate) == (False, False, True)
    assert [row.id for row in await ledger_rows(kernel, login)] == [
        first.row["id"],
        second.row["id"],
    ]
    assert [
        (
            a.entity_type,
            a.entity_id,
            a.action,
            a.details,
            (a.balance_before, a.balance_after),
            (a.credit_before, a.credit_after),
            (a.margin_used_before, a.margin_used_after),
            a.source_service,
            a.created_at,
        )
        for a in audits
    ] == [
        (
            "adjustment",
            "b1",
            "bonus",
            {"ledger_event_id": first.row["id"], "description": "Welcome bonus"},
            (0, 0),
            (0, Decimal("50")),
            (0, 0),
            "bonus-service",
            AT,
        ),
        (
            "position",
            "77",
            "swap",
            {"ledger_event_id": second.row["id"], "description": "Swap"},
            (0, Decimal("-1.25")),
            (Decimal("50"), Decimal("50")),
            (0, 0),
            "money-service",
            AT,
        ),
    ]
