"""Sharded order workers: one writer per account in this process, batches, group commit.

Jobs are queued by login (``login % shards``), so one account's jobs run in order
and by one worker. A worker takes every job waiting in its queue (up to
``batch_size``) and runs them in one database transaction:

1. lock the accounts' rows in login order (``SELECT ... FOR UPDATE`` of the version
   and settings columns; ordered, so workers of several processes cannot deadlock)
   and compare each row's ``version`` with the state held in memory; an account not
   held, or whose version moved (another writer, another process), is reloaded: its
   whole row, its positions and its active pending orders (one query each for the
   whole batch);
2. run the jobs in queue order on working copies of the accounts;
3. write all staged rows in bulk and commit once (group commit);
4. only then install the working copies as the accounts' committed state, tell the
   watchers (trigger index, risk engine), and settle the jobs.

A batch whose pooled connection turns out dead at its first statement (the server
dropped it: nothing was written) runs once more on a new connection. A batch that
fails for an unexpected reason rolls back as a whole; its accounts are dropped from
memory and each job is retried alone, so one broken request cannot fail the others.

Durability is the database's: on PostgreSQL a commit is durable; on SQLite (WAL,
``synchronous=NORMAL``) a committed batch survives a process crash, and a power loss
may lose the last batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import Dialect, bindparam, select
from sqlalchemy.exc import DBAPIError

from brokerkernel.kernel.storage.db import Database, fetch_driver
from brokerkernel.kernel.storage.models import Position, TradingAccount
from brokerkernel.kernel.tasks import cancel_and_wait
from brokerkernel.kernel.trading.batch import ShardTransaction, TicketPool
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.jobs import Env, Job, StateWatcher, tell
from brokerkernel.kernel.trading.models import PendingOrder
from brokerkernel.kernel.trading.state import AccountBook, AccountState, OpenPosition, PendingState

log = logging.getLogger(__name__)

ACCOUNT_COLUMNS = tuple(TradingAccount.__table__.c)
#: What the batch lock reads of each account: its version and the settings
#: :func:`refresh_settings` copies (the whole row only for accounts to reload).
LOCK_COLUMNS = (
    TradingAccount.login,
    TradingAccount.version,
    TradingAccount.group_id,
    TradingAccount.leverage,
    TradingAccount.is_active,
)


class LockRow(NamedTuple):
    """What the batch lock reads of an account (:data:`LOCK_COLUMNS`)."""

    login: int
    version: int
    group_id: str
    leverage: int
    is_active: bool


_LOCK_SQL: WeakKeyDictionary[Dialect, dict[int, str]] = WeakKeyDictionary()


def lock_sql(dialect: Dialect, count: int) -> str:
    """The batch lock for ``count`` logins: ``SELECT`` :data:`LOCK_COLUMNS` ``... WHERE
    login IN (...) ORDER BY login FOR UPDATE`` (SQLite has no ``FOR UPDATE``: its one
    connection is the lock), compiled once per dialect and count (at most the batch
    size) to the driver's paramstyle. Through SQLAlchemy the ``IN`` list is expanded
    and its compiled form looked up on every batch: 180-200 against 45 us of the event
    loop's CPU for a batch of four accounts on SQLite (:func:`fetch_driver`)."""
    compiled = _LOCK_SQL.setdefault(dialect, {})
    sql = compiled.get(count)
    if sql is None:
        statement = (
            select(*LOCK_COLUMNS)
            .where(TradingAccount.login.in_([bindparam(f"l{i}") for i in range(count)]))
            .order_by(TradingAccount.login)
            .with_for_update()
        )
        sql = compiled[count] = str(statement.compile(dialect=dialect))
    return sql


POSITION_COLUMNS = tuple(Position.__table__.c)
PENDING_COLUMNS = tuple(PendingOrder.__table__.c)


class InternalError(Exception):
    """A job failed for an unexpected reason (logged); the API answers 500."""


class ConnectionLost(Exception):
    """A batch's first statement found its pooled connection dropped by the server
    (e.g. a PostgreSQL restart; ``storage/db.py`` pings only idle connections). Nothing
    was written and the pool has been renewed: the batch runs once more as it is."""


def refresh_settings(state: AccountState, row: Any) -> None:
    """Copy the row's account settings (group, leverage, active) onto ``state``:
    they may change without a version bump (e.g. a group reassignment)."""
    state.group_id = row.group_id
    state.leverage = row.leverage
    state.is_active = row.is_active


async def load_accounts(session: Any, rows: Collection[Any]) -> dict[int, AccountState]:
    """Build the state of the accounts of ``rows`` (account rows) from the database."""
    logins = [row.login for row in rows]
    positions: dict[int, list[OpenPosition]] = {login: [] for login in logins}
    pending: dict[int, list[PendingState]] = {login: [] for login in logins}
    if logins:
        for row in await session.execute(
            select(*POSITION_COLUMNS).where(Position.login.in_(logins))
        ):
            positions[row.login].append(OpenPosition.from_model(row))
        for row in await session.execute(
            select(*PENDING_COLUMNS).where(
                PendingOrder.login.in_(logins), PendingOrder.status == "active"
            )
        ):
            pending[row.login].append(PendingState.from_model(row))
    return {
        row.login: AccountState.load(row, positions[row.login], pending[row.login]) for row in rows
    }


def _loaded(watcher: StateWatcher, state: AccountState) -> None:
    watcher.account_loaded(state)


class OrderWorkers:
    """The shard queues and their workers. ``after_batch`` runs after each batch
    settled (e.g. to store the order statuses the batch produced)."""

    def __init__(
        self,
        *,
        db: Database,
        book: AccountBook,
        tickets: TicketPool,
        env: Env,
        shards: int,
        batch_size: int,
        after_batch: Callable[[], Awaitable[None]],
    ) -> None:
        self.db = db
        self.book = book
        self.tickets = tickets
        self.env = env
        self.batch_size = batch_size
        self.after_batch = after_batch
        self.shards = shards
        self._queues: list[asyncio.Queue[Job]] = [asyncio.Queue() for _ in range(shards)]
        self._tasks: list[asyncio.Task[None]] = []
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Batches committed (benchmarks: jobs per commit).
        self.batches = 0

    def submit(self, job: Job) -> None:
        """Queue ``job`` on its account's shard."""
        self._outstanding += 1
        self._idle.clear()
        self._queues[job.login % len(self._queues)].put_nowait(job)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(queue), name=f"order-worker-{i}")
            for i, queue in enumerate(self._queues)
        ]

    async def stop(self) -> None:
        await self.idle()
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def idle(self) -> None:
        """Wait until every queued job has run, including jobs queued meanwhile."""
        await self._idle.wait()

    async def _work(self, queue: asyncio.Queue[Job]) -> None:
        while True:
            jobs = [await queue.get()]
            while len(jobs) < self.batch_size and not queue.empty():
                jobs.append(queue.get_nowait())
            try:
                await self._run(jobs)
                await self.after_batch()
            except Exception:
                log.exception("order worker: batch bookkeeping failed")
            finally:
                for _ in jobs:
                    queue.task_done()
                self._outstanding -= len(jobs)
                if not self._outstanding:
                    self._idle.set()

    async def _run(self, jobs: list[Job]) -> None:
        try:
            try:
                await self.run_batch(jobs)
            except ConnectionLost as lost:
                log.warning("order worker: %s; running the batch again", lost)
                await self.run_batch(jobs)
        except Exception as exc:
            for job in jobs:
                self.book.forget(job.login)
            if len(jobs) == 1:
                log.exception("trading job %r failed", jobs[0])
                jobs[0].settle(InternalError(str(exc)))
                return
            log.warning("batch of %d jobs failed (%s); retrying them one by one", len(jobs), exc)
            for job in jobs:
                await self._run([job])

    async def run_batch(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in one transaction (module docstring); raises on failure."""
        outcomes: list[Any] = []
        async with self.db.transaction() as session:
            tx = ShardTransaction(session, self.tickets, self.env.clock.now_ms())
            loaded = await self._lock(tx, {job.login for job in jobs})
            for job in jobs:
                staged = tx.staged()
                try:
                    outcome = await job.run(self.env, tx, tx.accounts.get(job.login))
                except TradingError as exc:
                    if tx.staged() != staged:
                        raise RuntimeError(f"{job!r} was refused after staging changes") from exc
                    outcome = exc
                outcomes.append(outcome)
            await tx.flush()
        # Committed: from here on nothing may fail the batch (it would be retried).
        try:
            self.batches += 1
            for state in tx.accounts.values():
                self.book.install(state)
            for login in loaded:
                tell(self.env.watchers, partial(_loaded, state=tx.accounts[login]))
            tx.committed(self.env.watchers)
        except Exception:
            log.exception("order worker: after-commit bookkeeping failed")
            for job in jobs:
                self.book.forget(job.login)
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.settle(outcome)

    async def _lock(self, tx: ShardTransaction, logins: set[int]) -> set[int]:
        """Lock the accounts, put their working copies in ``tx.accounts``; returns
        the logins that had to be (re)loaded from the database."""
        try:
            # On the session's connection (same transaction), without SQLAlchemy's
            # statement and result handling; on SQLite one call into its thread.
            connection = await tx.session.connection()
            ordered = tuple(sorted(logins))
            sql = lock_sql(connection.dialect, len(ordered))
            rows = [
                LockRow(login, version, group_id, leverage, bool(active))
                for login, version, group_id, leverage, active in await fetch_driver(
                    connection, sql, ordered
                )
            ]
        except DBAPIError as error:
            if error.connection_invalidated:
                raise ConnectionLost("the database dropped the connection") from error
            raise
        stale = []
        for row in rows:
            held = self.book.get(row.login)
            if held is not None and held.version == row.version:
                state = held.clone()
                refresh_settings(state, row)
                tx.accounts[row.login] = state
            else:
                stale.append(row.login)
        if stale:
            # Already locked: the whole rows only of the accounts to (re)load.
            full = await tx.session.execute(
                select(*ACCOUNT_COLUMNS).where(TradingAccount.login.in_(stale))
            )
            tx.accounts.update(await load_accounts(tx.session, full.all()))
        return set(stale)
