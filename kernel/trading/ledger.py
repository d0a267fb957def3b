"""The append-only ledger (seed section 7).

Every monetary change of an account is one :class:`LedgerEvent` row written by
:func:`append` in the same unit of work as the change: deltas, running
``*_after`` totals and a gap-free per-account ``sequence_num``. The account row must
be locked by the caller (``lock_account``: ``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite has a single writer), so concurrent writers cannot break the sequence.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.models import LedgerEvent, TradingAccount, new_id

ZERO = Decimal(0)


async def lock_account(session: AsyncSession, login: int) -> TradingAccount | None:
    """Load the account for update (row lock on PostgreSQL), or None if unknown."""
    result = await session.execute(
        select(TradingAccount).where(TradingAccount.login == login).with_for_update()
    )
    return result.scalar_one_or_none()


def append(
    session: AsyncSession,
    account: TradingAccount,
    event_type: str,
    *,
    reference_type: str,
    reference_id: str,
    idempotency_key: str,
    description: str,
    at: datetime,
    balance_delta: Decimal = ZERO,
    credit_delta: Decimal = ZERO,
    margin_delta: Decimal = ZERO,
) -> LedgerEvent:
    """Apply the deltas to the (locked) account and stage the ledger row.

    Deltas are in the account currency and must already be rounded to its minor
    unit. ``event_type`` is one of the seed's ledger types (deposit, withdrawal,
    order_open, margin_release, trade_pnl, ...).
    """
    account.balance += balance_delta
    account.credit += credit_delta
    account.margin += margin_delta
    account.ledger_seq += 1
    event = LedgerEvent(
        id=new_id(),
        account_id=account.login,
        event_type=event_type,
        reference_type=reference_type,
        reference_id=reference_id,
        balance_delta=balance_delta,
        credit_delta=credit_delta,
        margin_delta=margin_delta,
        balance_after=account.balance,
        credit_after=account.credit,
        margin_after=account.margin,
        sequence_num=account.ledger_seq,
        description=description,
        idempotency_key=idempotency_key,
        created_at=at,
    )
    session.add(event)
    return event
