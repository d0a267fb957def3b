"""The order workers' bulk writes (``kernel/trading/batch.py`` ``write_bulk``): on
SQLite one executemany per write, on PostgreSQL all of a batch's writes as one
statement over arrays. Both must write exactly the same rows and values, inside the
session's transaction, and a failing write must leave nothing behind.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    MetaData,
    String,
    Table,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.types import DecimalType, UTCDateTime
from brokerkernel.kernel.trading.batch import (
    BulkWrite,
    array_write,
    keyed_delete,
    keyed_update,
    write_bulk,
)

METADATA = MetaData()
PARENTS = Table(
    "bk_bulk_parents",
    METADATA,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("balance", DecimalType()),
    Column("note", JSON),
    Column("at", UTCDateTime()),
    Column("type", String(16)),  # a keyword as column name: quoted where needed
)
CHILDREN = Table(
    "bk_bulk_children",
    METADATA,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("parent_id", BigInteger, ForeignKey("bk_bulk_parents.id"), nullable=False),
    Column("amount", DecimalType()),
)
INSERT_PARENTS = BulkWrite(PARENTS)
INSERT_CHILDREN = BulkWrite(CHILDREN)
UPDATE_PARENTS = keyed_update(PARENTS, "id", ("balance", "note"))
DELETE_CHILDREN = keyed_delete(CHILDREN, "id")
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SHARED = {"terms": [1, 2]}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    async with database.transaction() as session:
        await write_bulk(
            await session.connection(),
            [
                (
                    INSERT_PARENTS,
                    [{"id": 1, "balance": Decimal("10"), "note": None, "at": T0, "type": "a"}],
                ),
                (INSERT_CHILDREN, [{"id": 10, "parent_id": 1, "amount": Decimal("1.5")}]),
            ],
        )
    try:
        yield database
    finally:
        await database.dispose()


async def rows(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async with db.read() as session:
        parents = await session.execute(select(PARENTS).order_by(PARENTS.c.id))
        children = await session.execute(select(CHILDREN).order_by(CHILDREN.c.id))
        return [tuple(row) for row in parents], [tuple(row) for row in children]


async def test_writes_rows_and_values_exactly_in_one_transaction(db: Database) -> None:
    statements: list[str] = []
    async with db.transaction() as session:
        connection = await session.connection()
        if not db.is_sqlite:  # the statements asyncpg runs (SQLAlchemy's are bypassed)
            driver = (await connection.get_raw_connection()).driver_connection
            driver.add_query_logger(lambda record: statements.append(record.query))
        await write_bulk(
            connection,
            [
                (
                    UPDATE_PARENTS,
                    # Keys beyond the update's columns are ignored.
                    [{"id": 1, "balance": Decimal("-0.0000000001"), "note": [1], "at": None}],
                ),
                (
                    INSERT_PARENTS,
                    [
                        {"id": 2, "balance": Decimal("12345678.12"), "note": SHARED},
                        {"id": 3, "balance": None, "note": SHARED},
                        # Decimals go to PostgreSQL as text: exponent form, rounding to
                        # the column's scale (10) as an INSERT of the value would.
                        {"id": 4, "balance": Decimal("1E+2"), "note": None},
                        {"id": 5, "balance": Decimal("0.00000000005"), "note": None},
                    ],
                ),
                (DELETE_CHILDREN, [{"id": 10}]),
                # The child of a parent inserted by the same call; an int amount.
                (
                    INSERT_CHILDREN,
                    [
                        {"id": 11, "parent_id": 2, "amount": Decimal("0.01")},
                        {"id": 12, "parent_id": 4, "amount": 7},
                    ],
                ),
            ],
        )
    if not db.is_sqlite:
        # The four writes went as one statement in the session's transaction.
        assert len(statements) == 3
        assert statements[0] == "BEGIN;"
        assert statements[1].startswith("WITH w0 AS (UPDATE bk_bulk_parents SET ")
        assert statements[2] == "COMMIT;"
    parents, children = await rows(db)
    assert parents == [
        (1, Decimal("-0.0000000001"), [1], T0, "a"),
        (2, Decimal("12345678.12"), SHARED, None, None),
        (3, None, SHARED, None, None),
        (4, Decimal(100), None, None, None),
        # SQLite stores the exact digits; PostgreSQL's NUMERIC(28, 10) rounds half up.
        (5, Decimal("0.00000000005" if db.is_sqlite else "0.0000000001"), None, None, None),
    ]
    assert children == [(11, 2, Decimal("0.01")), (12, 4, Decimal(7))]


async def test_a_failing_write_leaves_nothing_behind(db: Database) -> None:
    error, message = (
        (sqlite3.IntegrityError, "FOREIGN KEY constraint failed")
        if db.is_sqlite
        else (
            IntegrityError,
            'insert or update on table "bk_bulk_children" violates foreign key constraint',
        )
    )
    with pytest.raises(error, match=re.escape(message)):
        async with db.transaction() as session:
            await write_bulk(
                await session.connection(),
                [
                    (UPDATE_PARENTS, [{"id": 1, "balance": Decimal("99"), "note": None}]),
                    (INSERT_CHILDREN, [{"id": 12, "parent_id": 404, "amount": Decimal("1")}]),
                ],
            )
    assert await rows(db) == (
        [(1, Decimal("10"), None, T0, "a")],
        [(10, 1, Decimal("1.5"))],
    )


async def test_postgresql_refuses_a_text_too_long_as_a_plain_insert_does(db: Database) -> None:
    """The arrays are of the column types without their modifiers: a cast to
    VARCHAR(16) would cut the text silently; the column's assignment refuses it."""
    if db.is_sqlite:
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    with pytest.raises(
        DBAPIError, match=re.escape("value too long for type character varying(16)")
    ):
        async with db.transaction() as session:
            await write_bulk(
                await session.connection(),
                [(INSERT_PARENTS, [{"id": 2, "balance": None, "type": "x" * 17}])],
            )
    assert [row[0] for row in (await rows(db))[0]] == [1]


def test_array_write_is_one_statement_of_unnested_arrays() -> None:
    dialect = create_async_engine("postgresql+asyncpg://bk@127.0.0.1/bk").dialect
    sql, params = array_write(
        dialect,
        [
            (UPDATE_PARENTS, [{"id": 1, "balance": Decimal("2"), "note": {"a": 1}}]),
            (DELETE_CHILDREN, [{"id": 10}, {"id": 11}]),
            (INSERT_CHILDREN, [{"id": 12, "parent_id": 1, "amount": None}]),
        ],
    )
    assert sql == (
        "WITH w0 AS (UPDATE bk_bulk_parents SET balance = v.balance::NUMERIC, "
        "note = v.note::JSON "
        "FROM unnest($1::BIGINT[], $2::text[], $3::text[]) AS v(id, balance, note) "
        "WHERE bk_bulk_parents.id = v.id), "
        "w1 AS (DELETE FROM bk_bulk_children USING unnest($4::BIGINT[]) AS v(id) "
        "WHERE bk_bulk_children.id = v.id) "
        "INSERT INTO bk_bulk_children (id, parent_id, amount) "
        "SELECT v.id, v.parent_id, v.amount::NUMERIC "
        "FROM unnest($5::BIGINT[], $6::BIGINT[], $7::text[]) AS v(id, parent_id, amount)"
    )
    assert params == [([1], ["2"], ['{"a": 1}'], [10, 11], [12], [1], [None])]
    # A lone write is that statement alone.
    sql, _ = array_write(dialect, [(DELETE_CHILDREN, [{"id": 10}])])
    assert sql == (
        "DELETE FROM bk_bulk_children USING unnest($1::BIGINT[]) AS v(id) "
        "WHERE bk_bulk_children.id = v.id"
    )


def test_a_keyed_write_needs_its_columns_in_the_rows() -> None:
    dialect = create_async_engine("postgresql+asyncpg://bk@127.0.0.1/bk").dialect
    with pytest.raises(ValueError, match="bk_bulk_parents: column 'note' takes no row key"):
        UPDATE_PARENTS.arrays(dialect, [{"id": 1, "balance": Decimal("2")}])
