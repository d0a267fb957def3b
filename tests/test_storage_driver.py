"""Statements handed to the driver directly (``kernel/storage/db.py``): the order
workers' bulk writes (:func:`executemany_all`) and batch lock (:func:`fetch_driver`,
``lock_sql``). On SQLite each call is one trip to aiosqlite's thread; the writes must
still belong to the session's transaction: committed with it, or rolled back whole.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Dialect, Integer, MetaData, String, Table, bindparam, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from brokerkernel.kernel.storage.db import Database, executemany_all, fetch_driver
from brokerkernel.kernel.trading.workers import lock_sql

PAIRS = Table(
    "bk_driver_pairs",
    MetaData(),
    Column("k", Integer, primary_key=True, autoincrement=False),
    Column("v", String(16)),
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE bk_driver_pairs (k INTEGER PRIMARY KEY, v TEXT)"))
    try:
        yield database
    finally:
        await database.dispose()


def insert_sql(dialect: Dialect) -> str:
    return str(PAIRS.insert().compile(dialect=dialect))


async def pairs(db: Database) -> list[tuple[int, str]]:
    async with db.read() as session:
        rows = await session.execute(text("SELECT k, v FROM bk_driver_pairs ORDER BY k"))
        return [(row.k, row.v) for row in rows]


async def test_writes_and_reads_belong_to_the_session_transaction(db: Database) -> None:
    async with db.transaction() as session:
        connection = await session.connection()
        insert = insert_sql(connection.dialect)
        await executemany_all(
            connection, [(insert, [(1, "one"), (2, "two")]), (insert, [(3, "three")])]
        )
        # The same transaction: the driver's read sees the rows not yet committed.
        above = select(PAIRS).where(PAIRS.c.k > bindparam("low")).order_by(PAIRS.c.k)
        sql = str(above.compile(dialect=connection.dialect))
        assert await fetch_driver(connection, sql, (1,)) == [(2, "two"), (3, "three")]
    assert await pairs(db) == [(1, "one"), (2, "two"), (3, "three")]


async def test_a_failing_write_leaves_nothing_behind(db: Database) -> None:
    # SQLite's errors come from the driver as they are; PostgreSQL's through SQLAlchemy.
    error, message = (
        (sqlite3.IntegrityError, "UNIQUE constraint failed: bk_driver_pairs.k")
        if db.is_sqlite
        else (
            IntegrityError,
            'duplicate key value violates unique constraint "bk_driver_pairs_pkey"',
        )
    )
    with pytest.raises(error, match=re.escape(message)):
        async with db.transaction() as session:
            connection = await session.connection()
            insert = insert_sql(connection.dialect)
            # The second statement repeats key 2: the first one's rows go too.
            await executemany_all(
                connection, [(insert, [(1, "one"), (2, "two")]), (insert, [(2, "again")])]
            )
    assert await pairs(db) == []
    async with db.transaction() as session:  # the connection is usable afterwards
        connection = await session.connection()
        await executemany_all(connection, [(insert_sql(connection.dialect), [(4, "four")])])
    assert await pairs(db) == [(4, "four")]


def test_lock_sql_is_compiled_per_dialect_and_count() -> None:
    sqlite = create_async_engine("sqlite+aiosqlite://").dialect
    postgresql = create_async_engine("postgresql+asyncpg://bk@127.0.0.1/bk").dialect
    columns = (
        "SELECT trading_accounts.login, trading_accounts.version, trading_accounts.group_id, "
        "trading_accounts.leverage, trading_accounts.is_active \n"
        "FROM trading_accounts \nWHERE trading_accounts.login IN "
    )
    assert lock_sql(sqlite, 2) == columns + "(?, ?) ORDER BY trading_accounts.login"
    assert (
        lock_sql(postgresql, 3)
        == columns + "($1, $2, $3) ORDER BY trading_accounts.login FOR UPDATE"
    )
    assert lock_sql(sqlite, 2) is lock_sql(sqlite, 2)


async def test_sqlite_pool_rolls_back_only_connections_returned_in_a_transaction(
    db: Database,
) -> None:
    """``_sqlite_reset``: a unit of work that committed goes back to the pool without
    another call into aiosqlite's thread; one left inside a transaction (written to
    behind SQLAlchemy's back here) is rolled back, so the next user starts clean."""
    if not db.is_sqlite:
        pytest.skip("the SQLite pool's reset hook")
    calls: list[str] = []
    async with db.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        original = driver._execute

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(fn.__name__)
            return await original(fn, *args, **kwargs)

        driver._execute = counted
    try:
        async with db.transaction() as session:
            connection = await session.connection()
            await executemany_all(connection, [(insert_sql(connection.dialect), [(1, "one")])])
        assert calls == ["_sqlite_executemany_all", "commit"]

        async with db.engine.connect() as connection:
            await driver.execute("INSERT INTO bk_driver_pairs (k, v) VALUES (2, 'two')")
            assert driver.in_transaction
        assert not driver.in_transaction
        assert calls[-1] == "rollback"
    finally:
        del driver._execute
    assert await pairs(db) == [(1, "one")]


async def test_postgresql_driver_errors_are_raised_as_sqlalchemy_raises_them(
    db: Database,
) -> None:
    """On PostgreSQL the statements run on the asyncpg connection, outside SQLAlchemy's
    execution: a dropped connection must still come out as ``DBAPIError`` with
    ``connection_invalidated`` (what the order workers retry on), and the pool must
    hand out a working connection next."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's asyncpg path")
    with pytest.raises(DBAPIError) as failure:
        async with db.transaction() as session:
            connection = await session.connection()
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            pid = driver.get_server_pid()
            async with db.engine.connect() as other:
                await other.exec_driver_sql("SELECT pg_terminate_backend($1)", (pid,))
            await fetch_driver(connection, "SELECT $1::int", (1,))
    assert failure.value.connection_invalidated is True
    async with db.transaction() as session:
        connection = await session.connection()
        assert await fetch_driver(connection, "SELECT $1::int", (7,)) == [(7,)]
