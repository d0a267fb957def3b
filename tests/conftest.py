"""Shared pytest fixtures.

Test backends are chosen by environment variables:

* ``BROKERKERNEL_TEST_DATABASE_URL`` -- unset: SQLite files under ``tmp_path``; set
  (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``): PostgreSQL, where the
  URL's database is the *admin* database used to create and drop per-test databases.
* ``BROKERKERNEL_TEST_REDIS_URL`` -- unset: no Redis (the in-process cache/bus);
  set (e.g. ``redis://127.0.0.1:6379/15``): Redis on the logical database the URL names
  (15 when it names none), flushed before each test.

A configured server that cannot be reached stops the run with an error: tests never
silently skip a backend they were asked to use.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from aiohttp.test_utils import TestClient
from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from support import DAY_START_MS, create_admin, make_kernel, staff_headers, tick

from brokerkernel.api.app import create_app
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.db import normalise_url

DATABASE_URL_ENV = "BROKERKERNEL_TEST_DATABASE_URL"
REDIS_URL_ENV = "BROKERKERNEL_TEST_REDIS_URL"
REDIS_TEST_DB = 15
SQLITE_FILE_NAME = "brokerkernel.db"

_T = TypeVar("_T")


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Backends:
    """The backends this run uses (from the environment)."""

    database_url: str | None
    """Normalised admin URL of the PostgreSQL server, or ``None`` for SQLite."""
    redis_url: str | None
    """Redis URL (database 15 unless the URL names one), or ``None`` for in-process."""

    @classmethod
    def from_environment(cls) -> Backends:
        database = os.environ.get(DATABASE_URL_ENV, "").strip()
        redis_url = os.environ.get(REDIS_URL_ENV, "").strip()
        return cls(
            database_url=normalise_url(database) if database else None,
            redis_url=_redis_url_on_test_db(redis_url) if redis_url else None,
        )

    @property
    def is_postgresql(self) -> bool:
        return self.database_url is not None

    def describe(self) -> str:
        if self.database_url is None:
            database = "SQLite (a migrated template file copied per test)"
        else:
            shown = make_url(self.database_url).render_as_string(hide_password=True)
            database = f"PostgreSQL {shown} (template database cloned per test)"
        cache = (
            "in-process" if self.redis_url is None else f"Redis {_hide_password(self.redis_url)}"
        )
        return f"brokerkernel test backends: database={database}; cache/bus={cache}"


def _redis_url_on_test_db(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise pytest.UsageError(f"{REDIS_URL_ENV} must be a redis:// or rediss:// URL: {url!r}")
    if parts.path.strip("/").isdigit():
        return url  # an explicit logical database: parallel sessions can use their own
    return urlunsplit(parts._replace(path=f"/{REDIS_TEST_DB}"))


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


BACKENDS = Backends.from_environment()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which database and cache/bus backends this run uses."""
    return [BACKENDS.describe()]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat the backend line at the end, where CI logs are read."""
    terminalreporter.write_line(BACKENDS.describe())


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the run at once when a configured server cannot be reached."""
    problems: list[str] = []
    if BACKENDS.database_url is not None:
        try:
            _in_thread(lambda: asyncio.run(_ping_database(_require(BACKENDS.database_url))))
        except Exception as exc:
            problems.append(
                f"{DATABASE_URL_ENV} is set but PostgreSQL cannot be reached at "
                f"{make_url(BACKENDS.database_url).render_as_string(hide_password=True)}: "
                f"{type(exc).__name__}: {exc}"
            )
    if BACKENDS.redis_url is not None:
        try:
            client = redis.Redis.from_url(BACKENDS.redis_url, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:
            problems.append(
                f"{REDIS_URL_ENV} is set but Redis cannot be reached at "
                f"{_hide_password(BACKENDS.redis_url)}: {type(exc).__name__}: {exc}"
            )
    if problems:
        pytest.exit(
            "test backend unavailable (refusing to skip):\n  " + "\n  ".join(problems),
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def _require(value: str | None) -> str:
    assert value is not None
    return value


# ---------------------------------------------------------------- PostgreSQL helpers


def _in_thread(function: Callable[[], _T]) -> _T:
    """Run ``function`` in a fresh thread, so ``asyncio.run`` never meets the test's loop."""
    result: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(function())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="brokerkernel-test-admin")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _run(coroutine_factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return _in_thread(lambda: asyncio.run(coroutine_factory()))


async def _ping_database(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args={"timeout": 10})
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def _admin(url: str, *statements: str) -> None:
    """Execute ``statements`` outside a transaction (CREATE/DROP DATABASE) on ``url``.

    CREATE DATABASE ... TEMPLATE fails while a backend of the template's last client is
    still exiting; that is retried for a few seconds.
    """
    engine = create_async_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        for statement in statements:
            deadline = time.monotonic() + 10
            while True:
                try:
                    async with engine.connect() as connection:
                        await connection.execute(text(statement))
                    break
                except DBAPIError as exc:
                    busy = "is being accessed by other users" in str(exc)
                    if not busy or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _create_database(name: str, template: str | None = None) -> str:
    admin_url = _require(BACKENDS.database_url)
    statement = f'CREATE DATABASE "{name}"'
    if template is not None:
        statement += f' TEMPLATE "{template}"'
    _run(lambda: _admin(admin_url, statement))
    return _with_database(admin_url, name)


def _drop_database(name: str) -> None:
    admin_url = _require(BACKENDS.database_url)
    _run(lambda: _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_OUR_DATABASE = re.compile(r"bk_(?:template|test)_(\d+)(?:_[0-9a-f]+)?")


def _test_database_name() -> str:
    """``bk_test_<pid>_<random>``: the pid lets a later run drop it if this run dies."""
    return f"bk_test_{os.getpid()}_{uuid.uuid4().hex[:16]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _database_names(url: str) -> list[str]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text("SELECT datname FROM pg_database"))
            return [str(name) for name in result.scalars()]
    finally:
        await engine.dispose()


def _drop_orphaned_databases() -> None:
    """Drop test databases left behind by runs on this machine whose process is gone."""
    admin_url = _require(BACKENDS.database_url)
    for name in _run(lambda: _database_names(admin_url)):
        match = _OUR_DATABASE.fullmatch(name)
        if match is not None and not _pid_alive(int(match.group(1))):
            _drop_database(name)


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# ------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class _Template:
    """The database migrated once per session that every test database copies."""

    sqlite_file: Path | None = None
    postgresql_name: str | None = None


@pytest.fixture(scope="session")
def _database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Template]:
    if not BACKENDS.is_postgresql:
        path = tmp_path_factory.mktemp("bk-template") / SQLITE_FILE_NAME
        migrate.upgrade(_sqlite_url(path))
        yield _Template(sqlite_file=path)
        return
    _drop_orphaned_databases()  # left over by killed runs
    name = f"bk_template_{os.getpid()}"
    _drop_database(name)  # left over by a killed run with the same pid
    url = _create_database(name)
    try:
        migrate.upgrade(url)
        yield _Template(postgresql_name=name)
    finally:
        _drop_database(name)


@pytest.fixture
def database_url(tmp_path: Path, _database_template: _Template) -> Iterator[str]:
    """An async SQLAlchemy URL of a freshly migrated database for this test only.

    It holds the schema at head and the seed rows (roles, default group, instrument
    catalog) and no trading data. SQLite: a copy of the session's template file in
    ``tmp_path``; PostgreSQL: ``CREATE DATABASE bk_test_<pid>_<random> TEMPLATE
    bk_template_<pid>``, dropped after the test (open connections are terminated).
    """
    if _database_template.sqlite_file is not None:
        path = tmp_path / SQLITE_FILE_NAME
        shutil.copyfile(_database_template.sqlite_file, path)
        yield _sqlite_url(path)
        return
    name = _test_database_name()
    url = _create_database(name, template=_database_template.postgresql_name)
    try:
        yield url
    finally:
        _drop_database(name)


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """An async SQLAlchemy URL of an empty, unmigrated database for this test only.

    SQLite: a file path in ``tmp_path`` that does not exist yet; PostgreSQL: a new
    empty ``bk_test_<pid>_<random>`` database, dropped after the test.
    """
    if not BACKENDS.is_postgresql:
        yield _sqlite_url(tmp_path / "empty.db")
        return
    name = _test_database_name()
    url = _create_database(name)
    try:
        yield url
    finally:
        _drop_database(name)


@pytest.fixture
def redis_url() -> str | None:
    """``None`` (use the in-process cache/bus) or the test Redis URL, just flushed."""
    if BACKENDS.redis_url is None:
        return None
    client = redis.Redis.from_url(BACKENDS.redis_url, socket_connect_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()
    return BACKENDS.redis_url


@pytest.fixture(scope="session")
def backends() -> Backends:
    """Which backends this run uses (``is_postgresql``, ``redis_url``, ...)."""
    return BACKENDS


# ------------------------------------------------------------------- market data


@pytest.fixture(scope="session")
def market_data_dir() -> Path:
    """The recorded market data sets (``shared/data/market``), never copied into the repo.

    Defaults to ``<workspace>/shared/data/market`` next to the repository; the
    ``BROKERKERNEL_MARKET_DATA`` environment variable overrides it.
    """
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
    path = Path(os.environ.get("BROKERKERNEL_MARKET_DATA", default))
    if not path.is_dir():
        pytest.fail(f"market data not found at {path}; set BROKERKERNEL_MARKET_DATA")
    return path


# ------------------------------------------------------------------ kernel + API


@pytest.fixture
async def kernel(
    tmp_path: Path, database_url: str, redis_url: str | None, market_data_dir: Path
) -> Kernel:
    """A kernel on the test backend with feeds not started (tests publish quotes)."""
    return make_kernel(tmp_path, database_url, redis_url, market_data_dir)


@pytest.fixture
async def client(kernel: Kernel, aiohttp_client: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """The API of ``kernel`` (started with it), an admin user, and one EURUSD quote
    (bid 1.39286 / ask 1.39298 at 2014-05-07T00:00:07.135Z)."""
    test_client: TestClient[Any, Any] = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7135)
    yield test_client


@pytest.fixture
async def staff(client: TestClient[Any, Any]) -> dict[str, str]:
    """Authorization headers of the admin staff user."""
    return await staff_headers(client)
