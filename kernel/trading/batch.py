"""One shard transaction: the writes of a batch of trading jobs, flushed in bulk.

An order worker runs a batch of queued jobs (orders, closes, triggers, swaps, ...)
in one database transaction. The jobs change working copies of the accounts and
stage their rows here; :meth:`ShardTransaction.flush` writes them with one bulk
statement per table (positions inserted, updated and deleted, pending orders,
deal history, ledger, stop-out events, audit log, outbox, and the accounts' new
money and versions), and the unit of work commits once: a group commit. Callbacks
registered with :meth:`after_commit` (trigger index, risk engine, order statuses)
run only once the commit has succeeded.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, Update, bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.events import event_row
from brokerkernel.kernel.storage.ids import IdAllocator
from brokerkernel.kernel.storage.models import (
    LedgerEvent,
    OutboxEvent,
    Position,
    TradeHistory,
    TradingAccount,
)
from brokerkernel.kernel.trading import audit, ledger
from brokerkernel.kernel.trading.jobs import tell
from brokerkernel.kernel.trading.models import AuditLogEntry, PendingOrder, StopoutEvent
from brokerkernel.kernel.trading.state import AccountState, OpenPosition, PendingState

if TYPE_CHECKING:
    from brokerkernel.kernel.trading.jobs import StateWatcher

log = logging.getLogger(__name__)

ZERO = Decimal(0)


def utc(time_ms: int) -> datetime:
    """UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


POSITIONS: Table = Position.__table__  # type: ignore[assignment]
PENDING: Table = PendingOrder.__table__  # type: ignore[assignment]
HISTORY: Table = TradeHistory.__table__  # type: ignore[assignment]
LEDGER: Table = LedgerEvent.__table__  # type: ignore[assignment]
STOPOUTS: Table = StopoutEvent.__table__  # type: ignore[assignment]
AUDIT: Table = AuditLogEntry.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class KeyedUpdate:
    """``UPDATE table SET columns WHERE key = ...`` for executemany with row dicts."""

    statement: Update
    key: str
    columns: tuple[str, ...]

    @classmethod
    def of(cls, table: Table, key: str, columns: Sequence[str]) -> KeyedUpdate:
        statement = (
            update(table)
            .where(table.c[key] == bindparam(f"k_{key}"))
            .values({name: bindparam(f"v_{name}") for name in columns})
        )
        return cls(statement, key, tuple(columns))

    def params(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        key = self.key
        return [
            {f"k_{key}": row[key], **{f"v_{name}": row[name] for name in self.columns}}
            for row in rows
        ]


ACCOUNT_UPDATE = KeyedUpdate.of(
    TradingAccount.__table__,  # type: ignore[arg-type]
    "login",
    ("balance", "credit", "margin", "ledger_seq", "version", "account_mode"),
)
POSITION_UPDATE = KeyedUpdate.of(
    POSITIONS,
    "ticket",
    ("volume", "open_price", "sl", "tp", "margin", "commission", "swap", "last_rollover_at"),
)
PENDING_UPDATE = KeyedUpdate.of(
    PENDING,
    "id",
    (
        "cmd",
        "trigger_price",
        "limit_price",
        "sl",
        "tp",
        "status",
        "reason",
        "position_ticket",
        "stop_triggered_at",
        "updated_at",
    ),
)


class TicketPool:
    """Deal tickets taken from the shared sequence in blocks (PostgreSQL: one
    ``nextval`` round trip per ``block`` tickets; unused ones are gaps, as in MT5)."""

    def __init__(self, ids: IdAllocator, block: int) -> None:
        self._ids = ids
        self._block = block
        self._free: deque[int] = deque()

    async def take(self, session: AsyncSession) -> int:
        if not self._free:
            self._free.extend(await self._ids.next_tickets(session, self._block))
        return self._free.popleft()


class ShardTransaction:
    """Staged writes of one batch; ``accounts`` holds the working copies by login."""

    def __init__(self, session: AsyncSession, tickets: TicketPool, now_ms: int) -> None:
        self.session = session
        self.now_ms = now_ms
        self.now = utc(now_ms)
        self.accounts: dict[int, AccountState] = {}
        self._tickets = tickets
        # ticket -> (login, position, still open): the batch's final word on it
        self._positions: dict[int, tuple[int, OpenPosition, bool]] = {}
        self._new_positions: set[int] = set()
        self._pending: dict[int, PendingState] = {}
        self._new_pending: set[int] = set()
        self._touched: set[int] = set()
        self.history: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.stopouts: list[dict[str, Any]] = []
        self._after_commit: list[Callable[[], None]] = []

    def staged(self) -> tuple[int, ...]:
        """How much is staged, to tell whether a refused job left anything behind."""
        return (
            len(self._positions),
            len(self._pending),
            len(self._touched),
            len(self.history),
            len(self.ledger),
            len(self.outbox),
            len(self.audit),
            len(self.stopouts),
        )

    async def ticket(self) -> int:
        """A new ticket for a position, deal or pending order."""
        return await self._tickets.take(self.session)

    # --- staging ------------------------------------------------------------------------

    def put_position(self, account: AccountState, position: OpenPosition, new: bool) -> None:
        """Open (``new``) or change a position of ``account``."""
        account.put_position(position)
        self._positions[position.ticket] = (account.login, position, True)
        if new:
            self._new_positions.add(position.ticket)
        self.touch(account)

    def drop_position(self, account: AccountState, ticket: int) -> OpenPosition:
        position = account.drop_position(ticket)
        self._positions[ticket] = (account.login, position, False)
        self.touch(account)
        return position

    def put_pending(self, account: AccountState, order: PendingState, new: bool) -> None:
        """Place (``new``) or change a pending order; orders no longer active leave
        the account's state (their row keeps the final status)."""
        if order.status == "active":
            account.pending[order.id] = order
        else:
            account.pending.pop(order.id, None)
        self._pending[order.id] = order
        if new:
            self._new_pending.add(order.id)
        self.touch(account)

    def touch(self, account: AccountState) -> None:
        """The account changed without money: bump its version (once per batch)."""
        if account.login not in self._touched:
            ledger.bump_version(account)
            self._touched.add(account.login)

    def ledger_entry(
        self,
        account: AccountState,
        event_type: str,
        *,
        reference_type: str,
        reference_id: str,
        description: str,
        balance_delta: Decimal = ZERO,
        credit_delta: Decimal = ZERO,
        margin_delta: Decimal = ZERO,
        idempotency_key: str | None = None,
    ) -> None:
        """One ledger row (deltas rounded to the currency already); updates ``account``."""
        self.ledger.append(
            ledger.entry(
                account,
                event_type,
                reference_type=reference_type,
                reference_id=reference_id,
                idempotency_key=idempotency_key or f"{event_type}:{reference_id}",
                description=description,
                at=self.now,
                balance_delta=balance_delta,
                credit_delta=credit_delta,
                margin_delta=margin_delta,
            )
        )
        self._touched.add(account.login)

    def event(self, type_: str, payload: dict[str, Any]) -> None:
        """A domain event, published through the outbox after the commit."""
        self.outbox.append(event_row(type_, payload, self.now))

    def audit_row(
        self,
        account: AccountState,
        before: audit.Snapshot,
        *,
        entity_type: str,
        entity_id: str,
        action: str,
        details: dict[str, Any],
        source: str = audit.ORDER_SERVICE,
    ) -> None:
        self.audit.append(
            audit.row(
                account,
                before,
                entity_type=entity_type,
                entity_id=entity_id,
                action=action,
                details=details,
                source=source,
                at=self.now,
            )
        )

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after a successful commit (in registration order)."""
        self._after_commit.append(callback)

    # --- writing ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything staged: one bulk (executemany) statement per table and kind
        of change, in an order the foreign keys accept."""
        execute = self.session.execute
        if self._touched:
            rows = [self.accounts[login].account_row() for login in sorted(self._touched)]
            await execute(ACCOUNT_UPDATE.statement, ACCOUNT_UPDATE.params(rows))
        new = self._new_positions
        inserted: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        removed: list[int] = []
        for ticket, (_, position, alive) in self._positions.items():
            if alive:
                (inserted if ticket in new else changed).append(position.row())
            elif ticket not in new:
                removed.append(ticket)
        if inserted:
            await execute(POSITIONS.insert(), inserted)
        if changed:
            await execute(POSITION_UPDATE.statement, POSITION_UPDATE.params(changed))
        if removed:
            await execute(POSITIONS.delete().where(POSITIONS.c.ticket.in_(removed)))
        placed = [o.row() for i, o in self._pending.items() if i in self._new_pending]
        modified = [o.row() for i, o in self._pending.items() if i not in self._new_pending]
        if placed:
            await execute(PENDING.insert(), placed)
        if modified:
            await execute(PENDING_UPDATE.statement, PENDING_UPDATE.params(modified))
        for table, rows in (
            (HISTORY, self.history),
            (LEDGER, self.ledger),
            (STOPOUTS, self.stopouts),
            (AUDIT, self.audit),
            (OUTBOX, self.outbox),
        ):
            if rows:
                await execute(table.insert(), rows)

    def committed(self, watchers: Sequence[StateWatcher]) -> None:
        """Tell ``watchers`` what changed, then run the after-commit callbacks (errors
        are logged: the commit stands)."""
        tell(watchers, self._notify)
        for callback in self._after_commit:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback %r failed", callback)

    def _notify(self, watcher: StateWatcher) -> None:
        for login, position, alive in self._positions.values():
            account = self.accounts[login]
            if alive:
                watcher.position_changed(account, position)
            else:
                watcher.position_removed(account, position)
        for order in self._pending.values():
            watcher.pending_changed(self.accounts[order.login], order)
        for login in self._touched:
            watcher.money_changed(self.accounts[login])
