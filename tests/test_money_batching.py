"""Batched ledger appends write each ledger row's audit-log row (seed section 31) in the
same unit of work, as every other ledger writer does; concurrent payment callbacks are
group-committed through the batcher, each all or nothing and booked once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from money_support import balance, ledger_rows
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from support import register_trader

from brokerkernel.kernel.descriptors import PaymentUpdate
from brokerkernel.kernel.money.batching import LedgerBatcher, Posting
from brokerkernel.kernel.money.models import PaymentCallback
from brokerkernel.kernel.money.payments import CallbackOutcome
from brokerkernel.kernel.money.transactions import Actor, TransactionRequest
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
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


async def _pending_deposits(kernel: Kernel, login: int, *cashier_ids: str) -> None:
    for cashier_id in cashier_ids:
        await kernel.transactions.create(
            TransactionRequest(
                type="DEPOSIT",
                login=login,
                amount=Decimal("100.00"),
                currency="USD",
                source="cashier",
                gate_name="internal",
                cashier_id=cashier_id,
            ),
            Actor("customer"),
        )


def _approved(cashier_id: str) -> PaymentUpdate:
    return PaymentUpdate(cashier_id, "APPROVED", {"id": cashier_id})


async def test_concurrent_callbacks_are_group_committed_and_book_once(
    client: Client, kernel: Kernel
) -> None:
    login, _ = await register_trader(client, "storm@test.io")
    await _pending_deposits(kernel, login, "c1", "c2", "c3")
    batches = kernel.payments.batcher.batches

    outcomes = await asyncio.gather(
        *(kernel.payments.apply(_approved(c), "internal") for c in ("c1", "c2", "c1", "c3"))
    )

    assert kernel.payments.batcher.batches == batches + 1
    assert [(o.outcome, o.transaction and o.transaction.status) for o in outcomes] == [
        ("applied", "APPROVED"),
        ("applied", "APPROVED"),
        ("duplicate", "APPROVED"),
        ("applied", "APPROVED"),
    ]
    ids = [o.transaction.id for o in outcomes if o.transaction is not None]
    assert [
        (row.event_type, row.reference_id, row.balance_delta, row.balance_after, row.sequence_num)
        for row in await ledger_rows(kernel, login)
    ] == [
        ("deposit", ids[0], Decimal("100.00"), Decimal("100.00"), 1),
        ("deposit", ids[1], Decimal("100.00"), Decimal("200.00"), 2),
        ("deposit", ids[3], Decimal("100.00"), Decimal("300.00"), 3),
    ]
    assert await balance(kernel, login) == (Decimal("300.00"), Decimal(0))
    async with kernel.db.read() as session:
        logged = (
            await session.execute(
                select(PaymentCallback.cashier_id, PaymentCallback.outcome).order_by(
                    PaymentCallback.id
                )
            )
        ).all()
        events = (
            await session.scalars(
                select(OutboxEvent.payload).where(OutboxEvent.type == "transaction.updated")
            )
        ).all()
    assert sorted(logged) == [
        ("c1", "applied"),
        ("c1", "duplicate"),
        ("c2", "applied"),
        ("c3", "applied"),
    ]
    assert sorted((e["cashier_id"], e["status"]) for e in events) == [
        ("c1", "APPROVED"),
        ("c2", "APPROVED"),
        ("c3", "APPROVED"),
    ]


async def test_a_failing_claim_rolls_back_alone(client: Client, kernel: Kernel) -> None:
    login, _ = await register_trader(client, "failing@test.io")
    await _pending_deposits(kernel, login, "ok")
    batcher = kernel.payments.batcher
    batches = batcher.batches

    def logged(cashier_id: str) -> PaymentCallback:
        return PaymentCallback(
            gateway="test",
            cashier_id=cashier_id,
            status="APPROVED",
            outcome="applied",
            payload={},
            received_at=AT,
        )

    async def raising(session: AsyncSession) -> Posting | None:
        session.add(logged("raising"))
        raise RuntimeError("claim failed")

    async def unknown_account(session: AsyncSession) -> Posting | None:
        session.add(logged("unknown-account"))
        return Posting(999_999_999, "deposit", "transaction", "x", "deposit:x", "Deposit", AT)

    failed, missing, applied = await asyncio.gather(
        batcher.claim(raising),
        batcher.claim(unknown_account),
        kernel.payments.apply(_approved("ok"), "internal"),
        return_exceptions=True,
    )

    assert batcher.batches == batches + 1  # one batch, retried claim by claim
    assert repr(failed) == "RuntimeError('claim failed')"
    assert repr(missing) == "LookupError('Account 999999999 not found')"
    assert isinstance(applied, CallbackOutcome)
    assert applied.outcome == "applied"
    assert await balance(kernel, login) == (Decimal("100.00"), Decimal(0))
    async with kernel.db.read() as session:
        logged_ids = (await session.scalars(select(PaymentCallback.cashier_id))).all()
    assert logged_ids == ["ok"]
