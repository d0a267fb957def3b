"""Engine, sessions and the unit of work.

``DATABASE_URL`` selects the backend: ``sqlite+aiosqlite:///path`` (the embedded
default: one process, WAL journal, one writer connection) or
``postgresql+asyncpg://...`` (many processes). Plain ``sqlite:///`` and
``postgresql://`` URLs are upgraded to their async drivers.

The unit of work owns the commit: repositories and services only add to the session.
The order workers' bulk writes and batch lock go to the driver directly
(:func:`executemany_all`, :func:`fetch_driver`), inside the session's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState
from sqlalchemy.util import greenlet_spawn

from brokerkernel.kernel.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PING_IDLE_S: Final = 1.0
"""PostgreSQL: a pooled connection idle this long (seconds) is pinged on checkout."""
_USED_AT: Final = "brokerkernel.used_at"
CHECKPOINT_INTERVAL_S: Final = 0.5
"""SQLite: how often (seconds) the running kernel checkpoints the WAL into the database."""


def normalise_url(url: str) -> str:
    """Map sync driver URLs to the async drivers the kernel uses."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def default_sqlite_url(var_dir: Path) -> str:
    """The embedded default database: ``<var_dir>/brokerkernel.db``."""
    return f"sqlite+aiosqlite:///{var_dir / 'brokerkernel.db'}"


class Database:
    """Owns the async engine and hands out units of work.

    On SQLite the pool holds a single connection: SQLite allows one writer at a time,
    and serialising in the pool keeps "database is locked" out of the request path.
    Commits use WAL with ``synchronous=NORMAL``: durable across process crashes; a
    power loss may drop the last transactions (state this to operators).

    Between :meth:`start` and :meth:`dispose` (a running kernel) a SQLite file's WAL is
    checkpointed by a background thread every :data:`CHECKPOINT_INTERVAL_S` on its own
    connection (``PRAGMA wal_checkpoint(PASSIVE)``: it never waits for, nor blocks,
    the writer), instead of by the commit that fills 1,000 WAL pages (SQLite's
    ``wal_autocheckpoint``, which then copies the pages and syncs the database file on
    the writer's thread: commits of ~0.5 ms took up to 45-60 ms then, p99 2.5 against
    0.9 ms without). Durability is unchanged: the WAL holds every commit until it is
    checkpointed; ``journal_size_limit`` keeps the WAL file from staying large.
    """

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        self._sqlite_file = (
            parsed.database
            if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:"
            else None
        )
        if self.dialect == "sqlite":
            if self._sqlite_file is not None:
                Path(self._sqlite_file).parent.mkdir(parents=True, exist_ok=True)
            # Reset on return by _sqlite_reset (the pool's own would roll back always).
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60, pool_reset_on_return=None)
        else:
            # Most recently returned connection first: under light load the same few
            # stay warm (and skip the ping), the others idle out.
            kwargs.update(pool_size=10, max_overflow=10, pool_use_lifo=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "reset", _sqlite_reset)
        else:
            event.listen(self.engine.sync_engine, "checkout", _ping_if_idle)
            event.listen(self.engine.sync_engine, "checkin", _mark_used)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._after_commit: list[Callable[[], None]] = []
        self._checkpointer: asyncio.Task[None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every committed unit of work (e.g. wake the outbox relay)."""
        self._after_commit.append(callback)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on normal exit, rolls back on any exception."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
        for callback in self._after_commit:
            callback()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (nothing is committed)."""
        async with self.sessions() as session:
            yield session

    async def start(self) -> None:
        """Start the background WAL checkpoints (a SQLite file; nothing otherwise)."""
        if self._sqlite_file is None or self._checkpointer is not None:
            return
        event.listen(self.engine.sync_engine, "connect", _no_autocheckpoint)
        async with self.engine.connect() as connection:  # a connection already pooled
            await connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = asyncio.create_task(
            _checkpoint_wal(self._sqlite_file), name="sqlite-checkpoint"
        )

    async def dispose(self) -> None:
        """Stop the checkpoints and close every connection (SQLite checkpoints the WAL
        itself when its last connection closes)."""
        if self._checkpointer is not None:
            await cancel_and_wait([self._checkpointer])
            self._checkpointer = None
            event.remove(self.engine.sync_engine, "connect", _no_autocheckpoint)
        await self.engine.dispose()


async def _checkpoint_wal(path: str) -> None:
    """Checkpoint the WAL of the SQLite file ``path`` every :data:`CHECKPOINT_INTERVAL_S`
    until cancelled (see :class:`Database`), on a connection of its own used by one
    thread of its own (so the connection is closed only after a checkpoint under way
    has finished)."""
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
    try:
        connection = await loop.run_in_executor(thread, _checkpoint_connection, path)
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_INTERVAL_S)
                try:
                    await loop.run_in_executor(thread, _passive_checkpoint, connection)
                except sqlite3.Error:
                    log.exception("SQLite WAL checkpoint failed; trying again")
        finally:
            # Queued behind a checkpoint under way, and awaited without blocking the loop.
            await loop.run_in_executor(thread, connection.close)
    finally:
        thread.shutdown(wait=False)


def _checkpoint_connection(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


def _passive_checkpoint(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    """Pool ``connect`` hook while the checkpoints run: commits leave the WAL alone."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


#: One statement of :func:`executemany_all`: its SQL in the driver's paramstyle and
#: its parameter tuples (one per row, already bound: see ``trading/batch.py``).
DriverWrite = tuple[str, Sequence[tuple[Any, ...]]]


async def executemany_all(connection: AsyncConnection, writes: Sequence[DriverWrite]) -> None:
    """Run ``writes`` in order, each with the driver's ``executemany``, in the
    transaction of ``connection`` (which commits or rolls them back as usual).

    PostgreSQL (asyncpg): one round trip each on the asyncpg connection
    (:func:`_on_asyncpg`; asyncpg's ``execute`` for one row, ``executemany`` for
    more). SQLite (aiosqlite): all of them in one call into the driver's thread.
    aiosqlite runs every DB-API call in its own thread, so a statement through
    SQLAlchemy's adapter takes three or four hand-offs (cursor, execute, fetch,
    close), each a wake-up of the event loop (~25 us of its CPU) and a wait for its
    next turn, which under load is the longer part: a bulk write of seven statements
    took ~20 of them.
    The call goes through ``aiosqlite.Connection._execute``, a private method: the one
    aiosqlite's own calls queue their function with (aiosqlite is pinned in
    pyproject.toml; tests/test_storage_driver.py counts the calls). The statements'
    implicit ``BEGIN`` is sqlite3's, as for SQLAlchemy's own statements on this
    dialect. Errors are the driver's (``sqlite3.Error``), not wrapped by SQLAlchemy.
    """
    if connection.dialect.name != "sqlite":
        for sql, rows in writes:
            await _on_asyncpg(connection, sql, rows, _executemany)
        return
    driver = (await connection.get_raw_connection()).driver_connection
    await driver._execute(_sqlite_executemany_all, driver, writes)  # type: ignore[union-attr]


async def fetch_driver(
    connection: AsyncConnection, sql: str, parameters: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """Run one query given in the driver's paramstyle (e.g. compiled once for the
    dialect) in the transaction of ``connection``; its rows as plain tuples, values as
    the driver returns them (no SQLAlchemy result processing: SQLite answers booleans
    as 0/1). SQLite: one call into aiosqlite's thread (its ``execute_fetchall``);
    PostgreSQL: asyncpg's ``fetch`` (:func:`_on_asyncpg`).
    Errors: PostgreSQL's wrapped by SQLAlchemy (``DBAPIError``), SQLite's the driver's.
    """
    if connection.dialect.name != "sqlite":
        return [tuple(row) for row in await _on_asyncpg(connection, sql, parameters, _fetch)]
    driver = (await connection.get_raw_connection()).driver_connection
    return list(await driver.execute_fetchall(sql, parameters))  # type: ignore[union-attr]


Result = TypeVar("Result")


async def _on_asyncpg(
    connection: AsyncConnection,
    sql: str,
    parameters: Any,
    call: Callable[[Any, str, Any], Awaitable[Result]],
) -> Result:
    """PostgreSQL: ``call(asyncpg connection, sql, parameters)`` in the transaction of
    ``connection``, as SQLAlchemy's asyncpg adapter runs a statement but without its
    statement machinery: ~100 us less CPU per statement (a greenlet, the execution
    context, the cursor and the result). Like the adapter's cursor, it holds the
    adapter's statement lock and begins the adapter's transaction if this is the
    unit of work's first statement, so the session commits or rolls it back as usual.
    A failure is raised as SQLAlchemy raises it (``DBAPIError``; a dropped connection
    invalidates the pool and sets ``connection_invalidated``).

    Uses the adapter's private ``_execute_mutex``, ``_transaction``,
    ``_start_transaction`` and ``_handle_exception`` (SQLAlchemy is pinned in
    pyproject.toml; tests/test_storage_driver.py and tests/test_storage_pool.py run
    this path).
    """
    adapted = (await connection.get_raw_connection()).dbapi_connection
    try:
        async with adapted._execute_mutex:  # type: ignore[union-attr]
            if adapted._transaction is None:  # type: ignore[union-attr]
                await adapted._start_transaction()  # type: ignore[union-attr]
            return await call(adapted.driver_connection, sql, parameters)  # type: ignore[union-attr]
    except Exception as error:
        await greenlet_spawn(_raise_as_sqlalchemy, connection.sync_connection, adapted, error, sql)
        raise  # not reached: _raise_as_sqlalchemy raises


def _raise_as_sqlalchemy(
    connection: Connection | None, adapted: Any, error: Exception, sql: str
) -> None:
    """In a greenlet: raise ``error`` as SQLAlchemy's execution would have: translated
    by the ``adapted`` connection into its DB-API error, then wrapped (and the
    connection invalidated on a disconnect) by ``connection``."""
    assert connection is not None
    try:
        adapted._handle_exception(error)
    except Exception as dbapi_error:
        connection._handle_dbapi_exception(dbapi_error, sql, None, None, None)
    raise error


async def _fetch(driver: Any, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
    return await driver.fetch(sql, *parameters)  # type: ignore[no-any-return]


async def _executemany(driver: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if len(rows) == 1:  # e.g. a batch's array write: asyncpg's execute is the leaner path
        await driver.execute(sql, *rows[0])
    else:
        await driver.executemany(sql, rows)


def _sqlite_executemany_all(driver: Any, writes: Sequence[DriverWrite]) -> None:
    """In aiosqlite's thread: every write on the connection's sqlite3 connection."""
    sqlite = driver._conn
    for sql, rows in writes:
        sqlite.executemany(sql, rows)


def _mark_used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """Pool ``checkin`` hook: note when the connection was last used."""
    record.info[_USED_AT] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """Pool ``checkout`` hook: ping a connection idle for :data:`PING_IDLE_S` or more.

    ``pool_pre_ping`` pings on every checkout, and asyncpg's ping is three round trips
    (BEGIN, an empty query, ROLLBACK): a third of an order-worker batch's. A fresh
    connection (no use noted: ``info`` is cleared when a connection is replaced) or
    one returned less than :data:`PING_IDLE_S` ago is not pinged. A failed ping raises
    :class:`~sqlalchemy.exc.InvalidatePoolError`, as a failed pre-ping does: the pool
    replaces this connection (checkout retries) and every connection older than it,
    e.g. after a PostgreSQL restart. A connection that died unpinged fails its first
    statement instead; that disconnect also invalidates the pool, so only that unit
    of work fails (SQLAlchemy "Dealing with Disconnects", pessimistic and
    optimistic handling).
    """
    used_at = record.info.get(_USED_AT)
    if used_at is None or time.monotonic() - used_at < PING_IDLE_S:
        return
    try:
        dbapi_connection.ping()
    except Exception as error:
        raise exc.InvalidatePoolError(f"ping failed: {error!r}") from error


def _sqlite_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """Pool ``reset`` hook (SQLite): roll back a connection returned inside a
    transaction, and only then. The pool's default rolls back every connection
    returned, also after a commit; on aiosqlite that is one more trip to its thread
    per unit of work (SQLAlchemy "Using the reset event", which this follows)."""
    if state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # After a checkpoint, a WAL file larger than this is truncated when it restarts.
    cursor.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
    cursor.close()
