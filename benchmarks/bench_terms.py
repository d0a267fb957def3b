"""Instrument terms per (group, symbol): the in-memory TermsCache against a database read.

Builds a migrated SQLite database (or uses ``DATABASE_URL`` when it names PostgreSQL)
with ``--instruments`` instruments, ``--groups`` groups and an override for every
``--override-every``-th (group, symbol) pair, then measures:

* ``TermsCache.load()``: reading the whole platform configuration (kernel start, and
  every process after a ``platform.config_changed`` event);
* ``TermsCache.terms()``: the synchronous lookup every order, tick and swap run does,
  cold (first resolution of each pair) and warm (memoised);
* ``load_terms()``: one database query per lookup, what an order costs without the cache.

Run from the repository root::

    .venv/bin/python benchmarks/bench_terms.py [--instruments 1000] [--groups 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Group, GroupInstrument, Instrument, new_id
from brokerkernel.kernel.storage.seed import SEED_CREATED_AT
from brokerkernel.kernel.trading.terms import TermsCache, load_terms

TARGET_WARM_LOOKUPS_PER_S = 1_000_000  # must never matter next to a 10,000 ticks/s engine
TARGET_RELOAD_S = 1.0  # a config change is visible everywhere within a second


async def populate(db: Database, instruments: int, groups: int, every: int) -> list[str]:
    """Insert the catalog, the groups and the overrides; returns the group ids."""
    group_ids = [new_id() for _ in range(groups)]
    async with db.transaction() as session:
        for index in range(instruments):
            session.add(
                Instrument(
                    id=new_id(),
                    symbol=f"SYM{index:05d}",
                    display_name=f"Symbol {index}",
                    category="cfd",
                    asset_class="indices",
                    calc_mode="CFDLEVERAGE",
                    base_currency="XXX",
                    quote_currency="USD",
                    profit_currency="USD",
                    digits=2,
                    pip_size=Decimal("0.01"),
                    contract_size=Decimal(1),
                    min_lot=Decimal("0.01"),
                    max_lot=Decimal(100),
                    lot_step=Decimal("0.01"),
                    margin_rate=Decimal("0.05"),
                    spread=Decimal(1),
                    stale_threshold_ms=10_000,
                    is_active=True,
                    is_enabled=True,
                    provider="bench",
                    created_at=SEED_CREATED_AT,
                )
            )
        for number, group_id in enumerate(group_ids):
            session.add(
                Group(
                    id=group_id,
                    name=f"bench-{number}",
                    currency="USD",
                    default_leverage=100,
                    margin_call_level=Decimal(100),
                    stopout_level=Decimal(50),
                    swap_multiplier=Decimal(1),
                    is_default=False,
                    created_at=SEED_CREATED_AT,
                )
            )
        await session.flush()
        pair = 0
        for group_id in group_ids:
            for index in range(instruments):
                pair += 1
                if pair % every == 0:
                    session.add(
                        GroupInstrument(
                            id=new_id(),
                            group_id=group_id,
                            symbol=f"SYM{index:05d}",
                            spread=Decimal(2),
                            margin_rate=Decimal("0.1"),
                        )
                    )
    return group_ids


async def run(url: str, instruments: int, groups: int, every: int, db_lookups: int) -> None:
    db = Database(url)
    try:
        group_ids = await populate(db, instruments, groups, every)
        pairs = [(g, f"SYM{i:05d}") for g in group_ids for i in range(instruments)]
        cache = TermsCache(db)

        started = time.perf_counter()
        await cache.load()
        reload_s = time.perf_counter() - started

        started = time.perf_counter()
        for group_id, symbol in pairs:
            cache.terms(group_id, symbol)
        cold_s = time.perf_counter() - started

        rounds = max(1, 2_000_000 // len(pairs))
        started = time.perf_counter()
        for _ in range(rounds):
            for group_id, symbol in pairs:
                cache.terms(group_id, symbol)
        warm_s = time.perf_counter() - started

        started = time.perf_counter()
        async with db.read() as session:
            for group_id, symbol in pairs[:db_lookups]:
                await load_terms(session, group_id, symbol)
        db_s = time.perf_counter() - started
    finally:
        await db.dispose()

    warm_rate = rounds * len(pairs) / warm_s
    print(
        f"backend: {db.dialect}; {instruments} instruments x {groups} groups, "
        f"{len(pairs) // every} overrides"
    )
    print(
        f"TermsCache.load():         {reload_s * 1000:9.1f} ms   (target <= "
        f"{TARGET_RELOAD_S * 1000:.0f} ms: {'met' if reload_s <= TARGET_RELOAD_S else 'MISSED'})"
    )
    print(f"terms() cold (resolve):    {len(pairs) / cold_s:12,.0f} lookups/s")
    print(
        f"terms() warm (memoised):   {warm_rate:12,.0f} lookups/s   (target >= "
        f"{TARGET_WARM_LOOKUPS_PER_S:,}: "
        f"{'met' if warm_rate >= TARGET_WARM_LOOKUPS_PER_S else 'MISSED'})"
    )
    print(
        f"load_terms() per query:    {db_lookups / db_s:12,.0f} lookups/s   "
        f"({db_s / db_lookups * 1e6:.0f} µs each, the cost the cache removes per order)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--override-every", type=int, default=4)
    parser.add_argument("--db-lookups", type=int, default=2000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    with tempfile.TemporaryDirectory() as tmp:
        if not url.startswith("postgresql"):
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        asyncio.run(run(url, args.instruments, args.groups, args.override_every, args.db_lookups))


if __name__ == "__main__":
    main()
