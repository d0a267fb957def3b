"""Allocation of account logins and deal tickets.

PostgreSQL: sequences (``trading_account_login_seq`` from 10001,
``position_ticket_seq`` from 100001), safe across processes and lock-free.
SQLite (one process by design): counters in memory seeded from the tables' maxima.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.models import Position, TradeHistory, TradingAccount

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

    async def next_ticket(self, session: AsyncSession) -> int:
        if not self._is_sqlite:
            return int(
                (await session.execute(text("SELECT nextval('position_ticket_seq')"))).scalar_one()
            )
        if self._ticket is None:
            open_max = await session.scalar(select(func.max(Position.ticket)))
            closed_max = await session.scalar(select(func.max(TradeHistory.ticket)))
            self._ticket = max(FIRST_TICKET - 1, open_max or 0, closed_max or 0)
        self._ticket += 1
        return self._ticket
