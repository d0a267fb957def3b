"""Run the Alembic migrations programmatically (``brokerkernel db upgrade``).

There is no ``alembic.ini``: :func:`alembic_config` builds the configuration with
``script_location`` pointing at the ``alembic`` folder shipped inside the installed
``brokerkernel`` package, and the database URL (normalised to its async driver by
:func:`~brokerkernel.kernel.storage.db.normalise_url`) as ``sqlalchemy.url``.

The functions are synchronous. Each runs Alembic in a private worker thread, because
``alembic/env.py`` drives the async engine with :func:`asyncio.run`, which cannot run
in a thread whose event loop is running and would reset the current thread's event
loop otherwise. They therefore work from plain code, from inside a running event
loop (they block it while they run) and from ``asyncio.to_thread`` (preferred in
async code)::

    await asyncio.to_thread(migrate.upgrade, settings.database_url)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

import brokerkernel
from brokerkernel.kernel.storage.db import normalise_url

__all__ = [
    "alembic_config",
    "current",
    "downgrade",
    "head_revisions",
    "script_location",
    "upgrade",
]

_T = TypeVar("_T")

#: Migration file names start with their date: ``20261121_0001_baseline.py``.
FILE_TEMPLATE = "%(year)d%(month).2d%(day).2d_%(rev)s_%(slug)s"


def script_location() -> Path:
    """The ``alembic`` folder shipped next to the installed ``brokerkernel`` package."""
    return Path(brokerkernel.__file__).parent / "alembic"


def alembic_config(url: str) -> Config:
    """An Alembic :class:`~alembic.config.Config` for the database at ``url``.

    ``url`` may use a sync driver name (``sqlite:///``, ``postgresql://``); it is
    mapped to the async driver the kernel uses.
    """
    location = script_location()
    if not (location / "env.py").is_file():
        raise FileNotFoundError(f"brokerkernel migrations not found at {location}")
    config = Config()
    # Config values go through configparser interpolation: escape '%' (e.g. in
    # URL-encoded passwords and in the file template).
    config.set_main_option("script_location", str(location))
    config.set_main_option("file_template", FILE_TEMPLATE.replace("%", "%%"))
    config.set_main_option("timezone", "UTC")
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: every head).

    ``"heads"`` equals ``"head"`` while the kernel chain is the only branch and also
    upgrades plugin migration branches once there are some. A SQLite file's parent
    directory is created if missing.
    """
    _ensure_sqlite_directory(url)
    config = alembic_config(url)
    _run_isolated(lambda: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"``: drop everything)."""
    config = alembic_config(url)
    _run_isolated(lambda: command.downgrade(config, revision))


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` if it is unmigrated.

    With several migration branches applied, their revisions are returned sorted and
    joined by ``","``. A SQLite file that does not exist is unmigrated (and is not
    created).
    """
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None and not sqlite_path.exists():
        return None
    heads = _run_isolated(lambda: asyncio.run(_current_heads(normalise_url(url))))
    if not heads:
        return None
    return ",".join(sorted(heads))


def head_revisions() -> tuple[str, ...]:
    """The head revisions of the shipped migration scripts (no database needed)."""
    script = ScriptDirectory(str(script_location()))
    return tuple(sorted(script.get_heads()))


async def _current_heads(url: str) -> tuple[str, ...]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_heads_of)
    finally:
        await engine.dispose()


def _heads_of(connection: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(connection).get_current_heads()


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; ``None`` for other backends and in-memory databases."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _ensure_sqlite_directory(url: str) -> None:
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _run_isolated(function: Callable[[], _T]) -> _T:
    """Run ``function`` in a new thread and return its result (or raise its error)."""
    result: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(function())
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="brokerkernel-migrate")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
