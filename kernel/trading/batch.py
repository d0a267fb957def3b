"""One shard transaction: the writes of a batch of trading jobs, flushed in bulk.

An order worker runs a batch of queued jobs (orders, closes, triggers, swaps, ...)
in one database transaction. The jobs change working copies of the accounts and
stage their rows here; :meth:`ShardTransaction.flush` writes them with one bulk
write per table and kind of change (positions inserted, updated and deleted, pending
orders, deal history, ledger, stop-out events, audit log, outbox, and the accounts'
new money and versions) — on SQLite one executemany each, on PostgreSQL all of them
as one statement (:func:`write_bulk`) — and the unit of work commits once: a group
commit. Callbacks registered with :meth:`after_commit` (trigger index, risk engine,
order statuses) run only once the commit has succeeded.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import (
    JSON,
    Delete,
    Dialect,
    Insert,
    Numeric,
    Table,
    Update,
    bindparam,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import TypeDecorator, TypeEngine

from brokerkernel.kernel.events import event_row
from brokerkernel.kernel.storage.db import DriverWrite, executemany_all
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


Processor = Callable[[Any], Any]
Getter = Callable[[dict[str, Any]], Any]
#: A bind of a :class:`BulkWrite`: the row value's getter, its type's processor, and
#: whether rows often share the value object (JSON snapshots: see :func:`_per_object`).
Bind = tuple[Getter, Processor | None, bool]
_NOTHING = object()
#: A write of :meth:`BulkWrite.arrays`: its SQL with ``{}`` where its array
#: parameters go, and their PostgreSQL array types in order.
ArrayPart = tuple[str, tuple[str, ...]]
_MODIFIERS = re.compile(r"\(.*?\)")
#: A write staged for :func:`write_bulk`: the statement and its row dicts.
Staged = tuple["BulkWrite", Sequence[dict[str, Any]]]


class BulkWrite:
    """One INSERT, UPDATE or DELETE statement run for many row dicts.

    SQLite (:meth:`bind`): the driver's executemany, i.e. what
    ``session.execute(statement, rows)`` sends (the statement compiled for the
    dialect, each value bound by its bind's type, i.e. the same bind processors),
    without SQLAlchemy's per-row parameter assembly (~2 us a row; a market order
    writes ~5 rows). Compiled once per dialect and row shape.

    PostgreSQL (:meth:`arrays`): the same write as one statement over arrays, each
    column's values bound as one array and read back with ``unnest``, so that a
    batch's writes go as one statement (:func:`array_write`).

    Without ``key`` an INSERT of the rows' keys; with ``key`` a keyed UPDATE setting
    ``columns`` or, without ``columns``, a keyed DELETE (each row gives the key's and
    the columns' values; the binds are renamed so no column name adds to the SET).
    Every row must have the first row's keys. Raises ValueError when a bind of the
    statement takes no row key, e.g. a column with a Python-side default the rows lack
    (which SQLAlchemy would have filled in).
    """

    def __init__(
        self, table: Table, key: str | None = None, columns: Sequence[str] | None = None
    ) -> None:
        self.table = table
        self._key = key
        self._columns = tuple(columns or ())
        self.statement: Insert | Update | Delete
        #: Bind name -> row key (None: the binds are the rows' keys, as an INSERT's).
        self._names: dict[str, str] | None = None
        if key is None:
            self.statement = table.insert()
        else:
            where = table.c[key] == bindparam(f"k_{key}")
            self._names = {f"k_{key}": key, **{f"v_{name}": name for name in self._columns}}
            self.statement = (
                table.delete().where(where)
                if columns is None
                else update(table)
                .where(where)
                .values({name: bindparam(f"v_{name}") for name in self._columns})
            )
        self._plans: WeakKeyDictionary[
            Dialect, dict[tuple[str, ...], tuple[str, tuple[Bind, ...]]]
        ] = WeakKeyDictionary()
        self._array_plans: WeakKeyDictionary[
            Dialect, dict[tuple[str, ...], tuple[ArrayPart, tuple[Bind, ...]]]
        ] = WeakKeyDictionary()

    def bind(self, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> DriverWrite:
        """The statement for ``dialect`` and the rows' parameter tuples, for
        :func:`~brokerkernel.kernel.storage.db.executemany_all`."""
        sql, binds = _planned(self._plans, dialect, tuple(rows[0]), self._plan)
        return sql, list(zip(*_bound_columns(binds, rows), strict=True))

    def arrays(
        self, dialect: Dialect, rows: Sequence[dict[str, Any]]
    ) -> tuple[ArrayPart, list[list[Any]]]:
        """PostgreSQL: this write of ``rows`` as an :data:`ArrayPart` and its array
        parameters (one list of bound values per column). Planned once per dialect
        and row shape."""
        part, binds = _planned(self._array_plans, dialect, tuple(rows[0]), self._array_plan)
        return part, _bound_columns(binds, rows)

    def _plan(self, dialect: Dialect, keys: tuple[str, ...]) -> tuple[str, tuple[Bind, ...]]:
        names = self._names if self._names is not None else {key: key for key in keys}
        compiled = self.statement.compile(dialect=dialect, column_keys=list(names))
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name}: a positional paramstyle is needed")
        binds = []
        for name in compiled.positiontup:
            key = names.get(name)
            if key not in keys:
                raise ValueError(f"{self.table.name}: bind {name!r} takes no row key")
            bind_type = compiled.binds[name].type.dialect_impl(dialect)
            process = bind_type.bind_processor(dialect)
            shared = process is not None and isinstance(bind_type, JSON)
            binds.append((itemgetter(key), process, shared))
        return compiled.string, tuple(binds)

    def _array_plan(
        self, dialect: Dialect, keys: tuple[str, ...]
    ) -> tuple[ArrayPart, tuple[Bind, ...]]:
        """The statement over ``unnest($1::type[], ...) AS v(column, ...)``: an INSERT
        selects its rows from it, a keyed UPDATE or DELETE joins it on the key. JSON
        (serialised by the column's bind processor) and decimals (:func:`_decimal_text`)
        go as text and are cast back per element."""
        table = self.table
        quote = dialect.identifier_preparer.quote
        columns = keys if self._key is None else (self._key, *self._columns)
        binds: list[Bind] = []
        casts: list[str] = []
        values: list[str] = []
        for name in columns:
            if name not in keys:
                raise ValueError(f"{table.name}: column {name!r} takes no row key")
            column = table.c[name]
            impl = column.type.dialect_impl(dialect)
            process = impl.bind_processor(dialect)
            # The type without its modifiers: an explicit cast to VARCHAR(n) would cut
            # a longer text silently, where the assignment to the column refuses it
            # ("value too long"), as a plain INSERT does; NUMERIC(p, s) rounds and
            # overflows alike either way.
            sql_type = _MODIFIERS.sub("", column.type.compile(dialect=dialect))
            is_json = isinstance(impl, JSON)
            if is_json or _holds_decimals(impl):
                if not is_json:
                    process = _decimal_text
                casts.append("text[]")
                values.append(f"v.{quote(name)}::{sql_type}")
            else:
                casts.append(f"{sql_type}[]")
                values.append(f"v.{quote(name)}")
            binds.append((itemgetter(name), process, process is not None and is_json))
        # Only the metadata's identifiers (quoted) go into the text; every value is a
        # bound parameter.
        target = quote(table.name)
        alias = f"unnest({{}}) AS v({', '.join(map(quote, columns))})"
        if self._key is None:
            names, selected = ", ".join(map(quote, columns)), ", ".join(values)
            sql = f"INSERT INTO {target} ({names}) SELECT {selected} FROM {alias}"  # noqa: S608
        else:
            match = f"{target}.{quote(columns[0])} = {values[0]}"
            if isinstance(self.statement, Update):
                sets = ", ".join(
                    f"{quote(c)} = {v}" for c, v in zip(columns[1:], values[1:], strict=True)
                )
                sql = f"UPDATE {target} SET {sets} FROM {alias} WHERE {match}"  # noqa: S608
            else:
                sql = f"DELETE FROM {target} USING {alias} WHERE {match}"  # noqa: S608
        return (sql, tuple(casts)), tuple(binds)


Plan = TypeVar("Plan")


def _planned(
    plans: WeakKeyDictionary[Dialect, dict[tuple[str, ...], Plan]],
    dialect: Dialect,
    keys: tuple[str, ...],
    make: Callable[[Dialect, tuple[str, ...]], Plan],
) -> Plan:
    """The plan for ``dialect`` and row ``keys`` in ``plans``, made once by ``make``."""
    by_keys = plans.setdefault(dialect, {})
    plan = by_keys.get(keys)
    if plan is None:
        plan = by_keys[keys] = make(dialect, keys)
    return plan


def _holds_decimals(impl: TypeEngine[Any]) -> bool:
    """Whether a column type's dialect implementation (``dialect_impl``) is NUMERIC
    holding Decimals, e.g. :class:`~brokerkernel.kernel.storage.types.DecimalType`."""
    column_type = impl.impl_instance if isinstance(impl, TypeDecorator) else impl
    return isinstance(column_type, Numeric) and bool(column_type.asdecimal)


def _decimal_text(value: Any) -> str | None:
    """A decimal array element as text: asyncpg encodes an array's Decimals ~4x slower
    (~1.9 us each) than its texts, which PostgreSQL casts back exactly."""
    if value is None:
        return None
    return str(value if type(value) is Decimal else Decimal(value))


def _bound_columns(binds: tuple[Bind, ...], rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Column by column (C-level map): each bind's values over ``rows``, bound."""
    return [
        list(map(get, rows))
        if process is None
        else list(map(_per_object(process) if shared else process, map(get, rows)))
        for get, process, shared in binds
    ]


def _per_object(process: Processor) -> Processor:
    """``process`` (a JSON bind's serializer) run once for consecutive rows sharing
    one object: the positions a batch opens on one instrument share its terms
    snapshot (~5 us to serialize). For one bind pass only (a new memo per statement:
    nothing changes the objects meanwhile)."""
    last: list[Any] = [_NOTHING, None]

    def once(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, process(value)
        return last[1]

    return once


@lru_cache(maxsize=512)
def _array_statement(parts: tuple[ArrayPart, ...]) -> str:
    """``parts`` as one statement: all but the last as data-modifying ``WITH``
    queries, their parameters numbered ``$1``, ``$2``, ... in order."""
    number = 0
    queries = []
    for template, casts in parts:
        params = ", ".join(f"${number + i}::{cast}" for i, cast in enumerate(casts, 1))
        number += len(casts)
        queries.append(template.format(params))
    *first, last = queries
    if not first:
        return last
    return "WITH " + ", ".join(f"w{i} AS ({query})" for i, query in enumerate(first)) + " " + last


def array_write(dialect: Dialect, writes: Sequence[Staged]) -> DriverWrite:
    """PostgreSQL: ``writes`` (each a :class:`BulkWrite` and its rows) as one
    statement (one round trip instead of one per write), for
    :func:`~brokerkernel.kernel.storage.db.executemany_all`.

    The writes run as data-modifying ``WITH`` queries of that statement. PostgreSQL
    runs each of them to completion on one snapshot, so no write sees another's rows
    and no row may be written twice: a batch writes each row once (the staged final
    state). Foreign keys are checked at the end of the statement, so the order of
    the writes does not matter ("Data-Modifying Statements in WITH", PostgreSQL
    manual 7.8.4). Errors are those of the failing write, and nothing is written."""
    parts = []
    params: list[list[Any]] = []
    for statement, rows in writes:
        part, arrays = statement.arrays(dialect, rows)
        parts.append(part)
        params.extend(arrays)
    return _array_statement(tuple(parts)), [tuple(params)]


async def write_bulk(connection: AsyncConnection, writes: Sequence[Staged]) -> None:
    """Run ``writes`` (each a :class:`BulkWrite` and its rows, in order) in the
    transaction of ``connection``, handed to the driver at once
    (:func:`~brokerkernel.kernel.storage.db.executemany_all`): on SQLite one
    executemany each, all in one call into its thread; on PostgreSQL one statement
    for all of them (:func:`array_write`), one round trip instead of one per write.
    Errors are the driver's (see ``executemany_all``); a failed write leaves the
    transaction to be rolled back."""
    dialect = connection.dialect
    if dialect.name == "sqlite":
        await executemany_all(connection, [write.bind(dialect, rows) for write, rows in writes])
    else:
        await executemany_all(connection, [array_write(dialect, writes)])


def keyed_update(table: Table, key: str, columns: Sequence[str]) -> BulkWrite:
    """``UPDATE table SET columns WHERE key = ...`` of row dicts."""
    return BulkWrite(table, key, columns)


def keyed_delete(table: Table, key: str) -> BulkWrite:
    """``DELETE FROM table WHERE key = ...`` of row dicts."""
    return BulkWrite(table, key)


ACCOUNT_UPDATE = keyed_update(
    TradingAccount.__table__,  # type: ignore[arg-type]
    "login",
    ("balance", "credit", "margin", "ledger_seq", "version", "account_mode"),
)
POSITION_UPDATE = keyed_update(
    POSITIONS,
    "ticket",
    ("volume", "open_price", "sl", "tp", "margin", "commission", "swap", "last_rollover_at"),
)
PENDING_UPDATE = keyed_update(
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
POSITION_DELETE = keyed_delete(POSITIONS, "ticket")

#: The bulk INSERT of each table a batch adds rows to.
INSERT = {
    table: BulkWrite(table)
    for table in (POSITIONS, PENDING, HISTORY, LEDGER, STOPOUTS, AUDIT, OUTBOX)
}


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
        """Write everything staged: one bulk write per table and kind of change, in an
        order the foreign keys accept, all at once (:func:`write_bulk`)."""
        connection = await self.session.connection()
        writes: list[Staged] = []

        def write(statement: BulkWrite, rows: Sequence[dict[str, Any]]) -> None:
            if rows:
                writes.append((statement, rows))

        write(
            ACCOUNT_UPDATE, [self.accounts[login].account_row() for login in sorted(self._touched)]
        )
        new = self._new_positions
        inserted: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        removed: list[dict[str, Any]] = []
        for ticket, (_, position, alive) in self._positions.items():
            if alive:
                (inserted if ticket in new else changed).append(position.row())
            elif ticket not in new:
                removed.append({"ticket": ticket})
        write(INSERT[POSITIONS], inserted)
        write(POSITION_UPDATE, changed)
        write(POSITION_DELETE, removed)
        write(
            INSERT[PENDING], [o.row() for i, o in self._pending.items() if i in self._new_pending]
        )
        write(
            PENDING_UPDATE,
            [o.row() for i, o in self._pending.items() if i not in self._new_pending],
        )
        for table, rows in (
            (HISTORY, self.history),
            (LEDGER, self.ledger),
            (STOPOUTS, self.stopouts),
            (AUDIT, self.audit),
            (OUTBOX, self.outbox),
        ):
            write(INSERT[table], rows)
        if writes:
            await write_bulk(connection, writes)

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
