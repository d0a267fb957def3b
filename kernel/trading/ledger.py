"""The append-only ledger (seed section 7) and the account version.

Every monetary change of an account is one ``ledger_events`` row written in the same
unit of work as the change: deltas, running ``*_after`` totals and a gap-free
per-account ``sequence_num``. The account row must be locked by the caller
(:func:`lock_account`: ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has a single
writer), so concurrent writers cannot break the sequence.

Writers that use an ORM unit of work call :func:`append`, which also stages the
account's audit-log row; bulk writers call :func:`entry` and stage its audit row
from :func:`entry_audit` (or :func:`brokerkernel.kernel.trading.audit.row`).

This module is also the single place that bumps ``trading_accounts.version``: every
ledger row does (:func:`entry`), and so does every change to an account's positions
or pending orders that moves no money (:func:`bump_version`). Processes that keep
account state in memory compare it with the row's version under the row lock and
reload on a mismatch, so a write by any writer in any process invalidates them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.models import LedgerEvent, TradingAccount, new_id
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.models import AuditLogEntry

ZERO = Decimal(0)


class AccountMoney(Protocol):
    """What the ledger updates: the ORM row or the trading core's in-memory state."""

    login: int
    balance: Decimal
    credit: Decimal
    margin: Decimal
    ledger_seq: int
    version: int


async def lock_account(session: AsyncSession, login: int) -> TradingAccount | None:
    """Load the account for update (row lock on PostgreSQL), or None if unknown."""
    result = await session.execute(
        select(TradingAccount).where(TradingAccount.login == login).with_for_update()
    )
    return result.scalar_one_or_none()


def bump_version(account: AccountMoney) -> None:
    """Mark the account changed (positions, pending orders, settings) without money."""
    account.version += 1


def entry(
    account: AccountMoney,
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
) -> dict[str, Any]:
    """Apply the deltas to the (locked) account and return the ledger row's values.

    Deltas are in the account currency and must already be rounded to its minor
    unit. ``event_type`` is one of the seed's ledger types (deposit, withdrawal,
    order_open, margin_release, trade_pnl, commission, swap, ...). Bumps the
    account's ``version``. The caller inserts the row in its unit of work (bulk
    writers collect many); :func:`append` does it for ORM sessions.
    """
    account.balance += balance_delta
    account.credit += credit_delta
    account.margin += margin_delta
    account.ledger_seq += 1
    bump_version(account)
    return {
        "id": new_id(),
        "account_id": account.login,
        "event_type": event_type,
        "reference_type": reference_type,
        "reference_id": reference_id,
        "balance_delta": balance_delta,
        "credit_delta": credit_delta,
        "margin_delta": margin_delta,
        "balance_after": account.balance,
        "credit_after": account.credit,
        "margin_after": account.margin,
        "sequence_num": account.ledger_seq,
        "description": description[:256],
        "idempotency_key": idempotency_key,
        "created_at": at,
    }


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
    source: str = "money-service",
) -> LedgerEvent:
    """Apply the deltas to the locked ORM ``account``, stage the ledger row and its
    audit-log row (seed section 31: entity ``reference_type``/``reference_id``, action
    ``event_type``, balance/credit/margin before and after, ``source`` the writer).

    As :func:`entry` (deltas rounded to the currency's minor unit; bumps ``version``).
    """
    before = audit.snapshot(account)
    values = entry(
        account,
        event_type,
        reference_type=reference_type,
        reference_id=reference_id,
        idempotency_key=idempotency_key,
        description=description,
        at=at,
        balance_delta=balance_delta,
        credit_delta=credit_delta,
        margin_delta=margin_delta,
    )
    event = LedgerEvent(**values)
    session.add(event)
    session.add(AuditLogEntry(**entry_audit(account, before, values, source)))
    return event


def entry_audit(
    account: AccountMoney, before: audit.Snapshot, values: dict[str, Any], source: str
) -> dict[str, Any]:
    """The audit-log row of the ledger row ``values`` (what :func:`entry` returned;
    ``before`` taken just before it): seed section 31, entity ``reference_type`` /
    ``reference_id``, action ``event_type``, balance/credit/margin before and after,
    details the ledger row's id and description, ``source`` the writer."""
    return audit.row(
        account,
        before,
        entity_type=values["reference_type"],
        entity_id=values["reference_id"],
        action=values["event_type"],
        details={"ledger_event_id": values["id"], "description": values["description"]},
        source=source,
        at=values["created_at"],
    )
