"""SQLite's WAL is checkpointed in the background while the database is started
(``Database.start``), not by the commit that fills 1,000 pages of it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from brokerkernel.kernel.storage import db as storage
from brokerkernel.kernel.storage.db import Database


async def autocheckpoint(db: Database) -> int:
    async with db.engine.connect() as connection:
        return int((await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one())


def rows_in_main_file(path: Path) -> int:
    """Rows of ``t`` in the database file alone: ``immutable=1`` ignores the WAL."""
    connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(connection.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:  # the table itself is still only in the WAL
        return 0
    finally:
        connection.close()


async def test_commits_reach_the_database_file_by_background_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "CHECKPOINT_INTERVAL_S", 0.05)
    path = tmp_path / "wal.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        assert await autocheckpoint(db) == 1000  # SQLite's default until started
        await db.start()
        assert await autocheckpoint(db) == 0
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
            await session.execute(text("INSERT INTO t (k) VALUES (1), (2), (3)"))
        for _ in range(100):
            if rows_in_main_file(path) == 3:
                break
            await asyncio.sleep(0.02)
        assert rows_in_main_file(path) == 3
        # A connection the pool opens later starts without autocheckpoints too.
        await db.engine.dispose()
        assert await autocheckpoint(db) == 0
    finally:
        await db.dispose()
    assert await autocheckpoint(db) == 1000  # stopped: back to SQLite's default
    await db.dispose()
