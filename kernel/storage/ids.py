"""Allocation of account logins and deal tickets.

PostgreSQL: sequences (``trading_account_login_seq`` from 10001,
``position_ticket_seq`` from 100001, shared by positions, deals and pending orders),
safe across processes and lock-free.
SQLite (one process by design): counters in memory seeded from the tables' maxima.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.models import Position, TradeHistory, TradingAccount
from brokerkernel.kernel.trading.models import PendingOrder

FIRST_LOGIN = 10001
FIRST_TICKET = 100001


class IdAllocator:
    def __init__(self, is_sqlite: bool) -> None:
        self._is_sqlite = is_sqlite
        self._login: int | None = None
        self._ticket: int | None = None

    async def next_login(self, session: AsyncSession) -> int:
        if not self._is_sqlite:
            return int(
                (
                    await session.execute(text("SELECT nextval('trading_account_login_seq')"))
                ).scalar_one()
            )
        if self._login is None:
            current = await session.scalar(select(func.max(TradingAccount.login)))
            self._login = max(FIRST_LOGIN - 1, current or 0)
        self._login += 1
        return self._login

    async def next_tickets(self, session: AsyncSession, count: int) -> list[int]:
        """``count`` new tickets (positions, deals and pending orders share them)."""
        if not self._is_sqlite:
            result = await session.execute(
                text("SELECT nextval('position_ticket_seq') FROM generate_series(1, :n)"),
                {"n": count},
            )
            return [int(value) for value in result.scalars()]
        if self._ticket is None:
            maxima = [
                await session.scalar(select(func.max(column)))
                for column in (Position.ticket, TradeHistory.ticket, PendingOrder.id)
            ]
            self._ticket = max(FIRST_TICKET - 1, *(value or 0 for value in maxima))
        first = self._ticket + 1
        self._ticket += count
        return list(range(first, first + count))
