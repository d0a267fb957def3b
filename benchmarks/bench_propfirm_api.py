"""Provisioning rate through the ZT4 Orchestration API (issue 7, "Benchmarks").

``POST /api/v1/propfirm/accounts`` over HTTP with a partner bearer token, each call a
new trader (customer created, ``trader.created``), a trading account, its initial
balance as an approved deposit with its ledger row and ``account.created`` in the
outbox, in one unit of work; ``--clients`` concurrent clients, ``--accounts`` in all.
Then ``GET /api/v1/propfirm/accounts/{id}`` (state with metrics) and ``GET
/api/v1/propfirm/accounts?limit=50`` (a page) for ``--seconds`` each.

Measured 2026-11-21 on a quiet 2-core machine, defaults (SQLite): provisioning 56.4
accounts/s, p50 139.6 / p99 215.8 ms (n=1,000); state 206.6 req/s, p99 8.2 ms; a
page of 50 71.6 req/s, p99 18.1 ms. Under cProfile the event loop waits in epoll
most of the time: provisioning is bound by SQLite's single writer, one unit of work
per account (group-committing provisions would lift it).

Run from the repository root (scratch SQLite unless ``--database-url`` names an
empty, migrated PostgreSQL database; ``--redis-url`` is flushed first)::

    .venv/bin/python benchmarks/bench_propfirm_api.py
    .venv/bin/python benchmarks/bench_propfirm_api.py --accounts 2000 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import ms_summary
from redis.asyncio import Redis

from brokerkernel.api.app import create_app
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.storage import migrate

TARGETS = (
    "targets: provisioning >= 100 accounts/s on SQLite with p99 <= 250 ms (a large prop "
    "firm's peak sale hour is a few accounts per second); account state p99 <= 50 ms"
)
SCOPES = ["plans:write", "accounts:write", "accounts:read"]
PLAN = {
    "code": "BENCH-100K",
    "name": "Bench 100K",
    "account_size": 100000,
    "phases": [{"name": "phase_1", "rules": []}, {"name": "phase_2", "rules": []}],
}


def _config() -> str:
    return "\n".join(
        [
            "[kernel]",
            'clock = "wall"',
            'jwt_secret = "bench-propfirm-signing-key-not-a-secret-0123456789"',
            "[kernel.gateway]",
            "rate_limit_per_user = 0",
            "[plugins.bbook]",
            "[plugins.spread_markup]",
            "[plugins.margin]",
            "[plugins.challenges]",
            "[plugins.propfirm_api]",
            "",
        ]
    )


async def _token(kernel: Kernel) -> dict[str, str]:
    partners = kernel.identity.partners
    await partners.create_tenant("bench", "Bench prop", True)
    client, secret = await partners.create_client("Bench firm", "bench", SCOPES, None)
    token = await partners.exchange(client.client_id, secret, None)
    return {"Authorization": f"Bearer {token['access_token']}"}


async def _provision(
    session: aiohttp.ClientSession, headers: dict[str, str], plan_id: str, total: int, clients: int
) -> tuple[float, list[float], list[str]]:
    """Accounts/s, latencies (ms) and the new account ids."""
    latencies: list[float] = []
    ids: list[str] = []
    numbers = iter(range(total))

    async def loop() -> None:
        for n in numbers:
            body = {"planId": plan_id, "trader": {"email": f"trader{n}@bench.example"}}
            started = time.perf_counter()
            async with session.post(
                "/api/v1/propfirm/accounts", json=body, headers=headers
            ) as response:
                answer: Any = await response.json()
                assert response.status == 201, answer
            latencies.append((time.perf_counter() - started) * 1000)
            ids.append(answer["id"])

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return total / (time.perf_counter() - started), latencies, ids


async def _reads(
    session: aiohttp.ClientSession, headers: dict[str, str], paths: list[str], seconds: float
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    n = 0
    while time.perf_counter() < deadline:
        path = paths[n % len(paths)]
        n += 1
        sent = time.perf_counter()
        async with session.get(path, headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        latencies.append((time.perf_counter() - sent) * 1000)
    return len(latencies) / (time.perf_counter() - started), latencies


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-propfirm-"))
    url = args.database_url or f"sqlite+aiosqlite:///{work / 'bench.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    if args.redis_url:
        redis = Redis.from_url(args.redis_url)
        await redis.flushdb()
        await redis.aclose()
    config = work / "plugins.toml"
    config.write_text(_config())
    kernel = Kernel(
        Settings(
            config_path=config,
            database_url=url,
            redis_url=args.redis_url,
            var_dir=work / "var",
            start_feeds=False,
            env={},
        )
    )
    runner = web.AppRunner(create_app(kernel), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        headers = await _token(kernel)
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(
            base_url=f"http://{host}:{port}", connector=connector
        ) as session:
            async with session.post("/api/v1/propfirm/plans", json=PLAN, headers=headers) as r:
                plan: Any = await r.json()
                assert r.status == 201, plan
            print(f"database: {url.split(':')[0]}; cache port: {args.redis_url or 'in-process'}")
            rate, latencies, ids = await _provision(
                session, headers, plan["id"], args.accounts, args.clients
            )
            print(f"POST /accounts (provision)  {rate:8.1f} accounts/s   {ms_summary(latencies)}")
            paths = [f"/api/v1/propfirm/accounts/{i}" for i in ids]
            rate, latencies = await _reads(session, headers, paths, args.seconds)
            print(f"GET /accounts/{{id}} (state)  {rate:8.1f} req/s        {ms_summary(latencies)}")
            rate, latencies = await _reads(
                session, headers, ["/api/v1/propfirm/accounts?limit=50"], args.seconds
            )
            print(f"GET /accounts?limit=50       {rate:8.1f} req/s        {ms_summary(latencies)}")
        print(TARGETS)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
