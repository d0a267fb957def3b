"""Helpers the benchmark scripts share (imported as ``common`` from their folder).

* :func:`add_data_dir_option`: the ``--data-dir`` option (real market data, read in
  place from ``../shared/data/market`` or ``$BROKERKERNEL_MARKET_DATA``);
* :func:`percentile` and :func:`ms_summary`: nearest-rank quantiles of samples;
* :func:`scratch_database`, :func:`drop_scratch` and :func:`add_database_url_option`:
  the benchmark's database, SQLite by default or a scratch PostgreSQL database;
* :func:`precomputed_password_hash` and :func:`register_customers`: customers
  registered through the kernel's registration code without argon2's deliberate
  ~60 ms per call, which is not what any benchmark measures.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from brokerkernel.kernel.customers import Registration, register
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.security import hash_password
from brokerkernel.kernel.storage.db import normalise_url

BENCH_PASSWORD = "bench-password"


def add_data_dir_option(
    parser: argparse.ArgumentParser, description: str = "market data directory"
) -> None:
    """``--data-dir`` (a :class:`~pathlib.Path`): the market data, by default
    ``$BROKERKERNEL_MARKET_DATA`` or ``../shared/data/market``."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BROKERKERNEL_MARKET_DATA", "../shared/data/market")),
        help=description,
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; NaN for no
    values (printed as ``nan``, never mistaken for a measured zero)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def ms_summary(samples: list[float]) -> str:
    """``p50 … ms   p99 … ms   (n=…)`` of latencies in milliseconds."""
    return (
        f"p50 {percentile(samples, 0.5):8.2f} ms   p99 {percentile(samples, 0.99):8.2f} ms"
        f"   (n={len(samples)})"
    )


@contextmanager
def precomputed_password_hash() -> Iterator[None]:
    """Registration inside the block uses one precomputed argon2 hash of
    :data:`BENCH_PASSWORD` (argon2 costs ~60 ms a call by design)."""
    with mock.patch(
        "brokerkernel.kernel.customers.hash_password_async",
        mock.AsyncMock(return_value=hash_password(BENCH_PASSWORD)),
    ):
        yield


async def register_customers(
    kernel: Kernel, count: int, email_prefix: str, first: int = 0
) -> list[dict[str, Any]]:
    """Register ``count`` customers ``<email_prefix>-<first + i>@example.com`` (password
    :data:`BENCH_PASSWORD`) through the kernel's registration code; returns each
    registration's result (``id``, ``trading_accounts`` with their ``login``, ...)."""
    results = []
    with precomputed_password_hash():
        for i in range(first, first + count):
            results.append(
                await register(
                    kernel.db,
                    kernel.ids,
                    kernel.clock,
                    Registration(
                        email=f"{email_prefix}-{i:05d}@example.com", password=BENCH_PASSWORD
                    ),
                )
            )
    return results


def first_login(registration: dict[str, Any]) -> int:
    """The login of a registration's first trading account."""
    return int(registration["trading_accounts"][0]["login"])


@dataclass
class Scratch:
    """Where the benchmark's database lives and how to get rid of it."""

    url: str
    admin_url: str | None = None
    name: str | None = None


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def scratch_database(database_url: str | None, work: Path) -> Scratch:
    """The benchmark's database: a SQLite file in ``work`` when ``database_url`` is
    None, a scratch database ``bk_bench_<pid>`` created (afresh) through a PostgreSQL
    admin URL, any other URL as it is."""
    if database_url is None:
        return Scratch(f"sqlite+aiosqlite:///{work / 'bench.db'}")
    admin_url = normalise_url(database_url)
    parsed = make_url(admin_url)
    if parsed.get_backend_name() != "postgresql":
        return Scratch(admin_url)
    name = f"bk_bench_{os.getpid()}"
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    url = parsed.set(database=name).render_as_string(hide_password=False)
    return Scratch(url, admin_url, name)


async def drop_scratch(scratch: Scratch) -> None:
    """Drop the scratch PostgreSQL database of :func:`scratch_database` (SQLite's file
    goes with its temporary directory)."""
    if scratch.admin_url is not None and scratch.name is not None:
        await _admin(scratch.admin_url, f'DROP DATABASE IF EXISTS "{scratch.name}" WITH (FORCE)')


def add_database_url_option(parser: argparse.ArgumentParser) -> None:
    """``--database-url``: where :func:`scratch_database` puts the benchmark's data."""
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL: an admin URL (a scratch database is created and dropped); "
        "SQLite: a new file to use; default: a SQLite file in a temporary directory",
    )
