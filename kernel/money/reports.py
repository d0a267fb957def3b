"""Ledger reports: the summary endpoint's totals, derived balances and the drift check.

Sums over Decimal columns run in SQL on PostgreSQL (NUMERIC) and in Python on SQLite,
where the columns hold exact decimal text (see
:class:`~brokerkernel.kernel.storage.types.DecimalType`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from brokerkernel.kernel.money.transactions import MOVEMENTS
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import LedgerEvent, TradingAccount, Transaction

ZERO = Decimal(0)


def _fmt(*amounts: Decimal) -> str:
    """Amounts as plain decimals, the same on every backend (``5000.00`` -> ``5000``)."""
    return "/".join(format(a.normalize(), "f") for a in amounts)


#: Ledger event type -> summary total (seed section 7, ledger summary).
SUMMARY_TOTALS: Final = {
    "deposit": "total_deposits",
    "withdrawal": "total_withdrawals",
    "trade_pnl": "net_trading_pnl",
    "commission": "total_commissions",
    "swap": "total_swaps",
    "chargeback": "total_chargebacks",
    "nbp": "total_nbp",
}
CREDIT_TYPES: Final = frozenset(t for t, m in MOVEMENTS.items() if m.on_credit)


async def grouped_sums(
    session: AsyncSession,
    is_sqlite: bool,
    key: InstrumentedAttribute[Any],
    values: Sequence[InstrumentedAttribute[Decimal]],
    *criteria: ColumnElement[bool],
) -> dict[Any, tuple[int, list[Decimal]]]:
    """``{key: (row count, [sum of each value column])}`` over the rows matching
    ``criteria`` (exact: NUMERIC sums in SQL, Decimal sums in Python on SQLite)."""
    out: dict[Any, tuple[int, list[Decimal]]] = {}
    if not is_sqlite:
        rows = await session.execute(
            select(key, func.count(), *(func.coalesce(func.sum(v), 0) for v in values))
            .where(*criteria)
            .group_by(key)
        )
        for group, count, *sums in rows:
            out[group] = (int(count), [Decimal(s) for s in sums])
        return out
    result = await session.stream(select(key, *values).where(*criteria))
    async for group, *amounts in result:
        count, sums = out.get(group, (0, [ZERO] * len(values)))
        out[group] = (count + 1, [s + a for s, a in zip(sums, amounts, strict=True)])
    return out


async def ledger_summary(
    session: AsyncSession,
    is_sqlite: bool,
    login: int,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
) -> dict[str, Any]:
    """The seed's summary: totals of balance deltas per kind (negative for money out),
    ``net_credit`` (credit deltas), ``net_balance_change`` (all balance deltas) and
    ``total_events`` over ``[from_date, to_date]`` (account currency)."""
    criteria = [LedgerEvent.account_id == login]
    if from_date is not None:
        criteria.append(LedgerEvent.created_at >= from_date)
    if to_date is not None:
        criteria.append(LedgerEvent.created_at <= to_date)
    groups = await grouped_sums(
        session,
        is_sqlite,
        LedgerEvent.event_type,
        [LedgerEvent.balance_delta, LedgerEvent.credit_delta],
        *criteria,
    )
    summary: dict[str, Any] = {"account_id": login}
    summary.update({total: ZERO for total in SUMMARY_TOTALS.values()})
    summary.update(net_credit=ZERO, net_balance_change=ZERO, total_events=0)
    for event_type, (count, (balance, credit)) in groups.items():
        if event_type in SUMMARY_TOTALS:
            summary[SUMMARY_TOTALS[event_type]] += balance
        summary["net_credit"] += credit
        summary["net_balance_change"] += balance
        summary["total_events"] += count
    return summary


async def derived_balance(
    session: AsyncSession, is_sqlite: bool, login: int
) -> tuple[Decimal, Decimal]:
    """``(balance, credit)`` derived from the account's APPROVED transactions: the sum
    of their signed ``account_amount`` (seed section 6), credit types apart."""
    groups = await grouped_sums(
        session,
        is_sqlite,
        Transaction.type,
        [Transaction.account_amount],
        Transaction.login == login,
        Transaction.status == "APPROVED",
    )
    balance = sum((s[0] for t, (_, s) in groups.items() if t not in CREDIT_TYPES), ZERO)
    credit = sum((s[0] for t, (_, s) in groups.items() if t in CREDIT_TYPES), ZERO)
    return balance, credit


@dataclass(slots=True)
class LedgerCheck:
    """What ``brokerkernel ledger check`` found: counts and one line per drift."""

    accounts: int = 0
    events: int = 0
    transactions: int = 0
    drift: list[str] = field(default_factory=list)


async def check_ledger(db: Database, login: int | None = None) -> LedgerCheck:
    """Compare every account (or ``login``) with its ledger and its transactions.

    Drift is: a ``sequence_num`` gap or a count different from the account's
    ``ledger_seq``; a running total (``*_after``) that is not the previous one plus
    the row's delta; last totals different from the account's balance, credit or
    margin; a transaction whose ledger rows do not sum to its ``account_amount`` when
    APPROVED, or to zero otherwise (DELETED: approved and reversed, or never
    approved); a ledger row for a transaction that does not exist.
    """
    report = LedgerCheck()
    account_filter = [] if login is None else [TradingAccount.login == login]
    event_filter = [] if login is None else [LedgerEvent.account_id == login]
    tx_filter = [] if login is None else [Transaction.login == login]
    async with db.read() as session:
        accounts = {
            a.login: a
            for a in (await session.scalars(select(TradingAccount).where(*account_filter))).all()
        }
        report.accounts = len(accounts)
        walked: dict[int, tuple[int, Decimal, Decimal, Decimal]] = {}
        stream = await session.stream(
            select(
                LedgerEvent.account_id,
                LedgerEvent.sequence_num,
                LedgerEvent.balance_delta,
                LedgerEvent.credit_delta,
                LedgerEvent.margin_delta,
                LedgerEvent.balance_after,
                LedgerEvent.credit_after,
                LedgerEvent.margin_after,
            )
            .where(*event_filter)
            .order_by(LedgerEvent.account_id, LedgerEvent.sequence_num)
            .execution_options(yield_per=5000)
        )
        async for account_id, seq, db_, dc, dm, ba, ca, ma in stream:
            report.events += 1
            last_seq, balance, credit, margin = walked.get(account_id, (0, ZERO, ZERO, ZERO))
            if seq != last_seq + 1:
                report.drift.append(f"{account_id}: sequence_num {seq} follows {last_seq}")
            balance, credit, margin = balance + db_, credit + dc, margin + dm
            if (ba, ca, ma) != (balance, credit, margin):
                report.drift.append(
                    f"{account_id}: #{seq} totals {_fmt(ba, ca, ma)} (balance/credit/margin) "
                    f"but the deltas give {_fmt(balance, credit, margin)}"
                )
                balance, credit, margin = ba, ca, ma
            walked[account_id] = (seq, balance, credit, margin)
        for number, account in sorted(accounts.items()):
            seq, balance, credit, margin = walked.get(number, (0, ZERO, ZERO, ZERO))
            if seq != account.ledger_seq:
                report.drift.append(
                    f"{number}: {seq} ledger rows, account ledger_seq {account.ledger_seq}"
                )
            if (balance, credit, margin) != (account.balance, account.credit, account.margin):
                report.drift.append(
                    f"{number}: account {_fmt(account.balance, account.credit, account.margin)} "
                    f"(balance/credit/margin) != ledger {_fmt(balance, credit, margin)}"
                )
        report.drift += [
            f"{n}: ledger rows of an unknown account" for n in walked if n not in accounts
        ]
        posted = await grouped_sums(
            session,
            db.is_sqlite,
            LedgerEvent.reference_id,
            [LedgerEvent.balance_delta, LedgerEvent.credit_delta],
            LedgerEvent.reference_type == "transaction",
            *event_filter,
        )
        transactions = await session.execute(
            select(
                Transaction.id,
                Transaction.login,
                Transaction.status,
                Transaction.account_amount,
            ).where(*tx_filter)
        )
        for tx_id, tx_login, status, account_amount in transactions:
            report.transactions += 1
            _, (balance_sum, credit_sum) = posted.pop(tx_id, (0, [ZERO, ZERO]))
            expected = account_amount if status == "APPROVED" else ZERO
            if balance_sum + credit_sum != expected:
                report.drift.append(
                    f"{tx_login}: transaction {tx_id} ({status}, {_fmt(account_amount)}) "
                    f"has ledger rows summing to {_fmt(balance_sum + credit_sum)}"
                )
        report.drift += [f"ledger rows reference unknown transaction {tx_id}" for tx_id in posted]
    return report
