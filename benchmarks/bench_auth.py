"""Authentication cost: login (argon2) and per-request token verification + RBAC.

Measured, in one process on a scratch SQLite database (``--redis-url`` puts the
cache port, i.e. the session-revocation check and the rate-limit counters, on Redis):

* argon2id ``verify_password`` alone, in the worker thread logins use (ms, p50/p99):
  the deliberate cost of a login;
* ``POST /api/admin/users/login`` over HTTP (ms, p50/p99; sequential);
* ``TokenIssuer.verify`` alone (µs per token): first sight of a token (HS256
  signature) and a repeated token (memoised claims, expiry checked);
* the gateway's per-request work in-process: ``authenticate`` (verify, revocation
  check and rate count in one cache round trip, RBAC snapshot lookup) +
  ``require_staff`` (µs per request);
* HTTP overhead of authentication: ``GET /api/prices`` with ``--clients`` concurrent
  clients for ``--seconds`` each, without and with a staff bearer token (the same
  handler, so the difference is the gateway's auth, revocation check and rate-limit
  counter), in alternating short rounds so both see the same machine load.

Run from the repository root::

    .venv/bin/python benchmarks/bench_auth.py
    .venv/bin/python benchmarks/bench_auth.py --redis-url redis://127.0.0.1:6379/14

The Redis database given is flushed first. Loopback only; bounded by
``2 x --seconds`` plus a few seconds of setup.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from common import add_data_dir_option, ms_summary
from redis.asyncio import Redis

from brokerkernel.api.app import create_app
from brokerkernel.api.auth import authenticate, require_staff
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.security import verify_password_async
from brokerkernel.kernel.staff import create_staff_user
from brokerkernel.kernel.storage import migrate
from brokerkernel.kernel.storage.models import StaffUser

TARGETS = (
    "targets: login p99 <= 250 ms (argon2 is slow by design), token verification + RBAC "
    "check <= 50 µs in-process, authenticated request overhead <= 1 ms at p50"
)
EMAIL, PASSWORD = "bench@broker.example", "Bench-Pass-123"
ROUNDS = 6


def _config(data_dir: Path) -> str:
    return "\n".join(
        [
            "[kernel]",
            'clock = "wall"',
            'jwt_secret = "bench-auth-signing-key-not-a-secret-0123456789"',
            "[kernel.gateway]",
            "rate_limit_per_user = 1000000",  # count every request, never refuse
            "rate_limit_auth_per_ip = 0",
            "[plugins.bbook]",
            "[plugins.spread_markup]",
            "[plugins.margin]",
            "",
        ]
    )


async def _http_load(
    base: str, path: str, headers: dict[str, str], clients: int, seconds: float
) -> tuple[float, list[float]]:
    """Requests/s and latencies (ms) of ``clients`` loops hitting ``path``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(path, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    if args.redis_url:
        redis = Redis.from_url(args.redis_url)
        await redis.flushdb()
        await redis.aclose()
    config = work / "plugins.toml"
    config.write_text(_config(args.data_dir))
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
    app = create_app(kernel)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        user = await create_staff_user(kernel.db, EMAIL, PASSWORD)
        print(f"cache port: {'Redis ' + args.redis_url if args.redis_url else 'in-process'}")

        stored = user.password_hash
        samples = []
        for _ in range(args.logins):
            started = time.perf_counter()
            assert await verify_password_async(stored, PASSWORD)
            samples.append((time.perf_counter() - started) * 1000)
        print(f"argon2id verify (worker thread)  {ms_summary(samples)}")

        samples = []
        token = ""
        async with aiohttp.ClientSession(base_url=base) as session:
            for _ in range(args.logins):
                started = time.perf_counter()
                async with session.post(
                    "/api/admin/users/login", json={"email": EMAIL, "password": PASSWORD}
                ) as response:
                    body: Any = await response.json()
                    assert response.status == 200, body
                samples.append((time.perf_counter() - started) * 1000)
                token = body["access_token"]
        print(f"HTTP staff login                 {ms_summary(samples)}")

        rounds = args.rounds
        fresh = [kernel.tokens.issue(user.id, {"type": "user"}) for _ in range(2000)]
        started = time.perf_counter()
        for each in fresh:
            kernel.tokens.verify(each)
        first_us = (time.perf_counter() - started) / len(fresh) * 1e6
        print(f"TokenIssuer.verify, new token    {first_us:8.1f} µs per token")
        started = time.perf_counter()
        for _ in range(rounds):
            kernel.tokens.verify(token)
        verify_us = (time.perf_counter() - started) / rounds * 1e6
        print(f"TokenIssuer.verify, same token   {verify_us:8.1f} µs per token")

        headers = {"Authorization": f"Bearer {token}"}
        requests = []
        for _ in range(args.requests):  # building mocked requests is slow: off the clock
            requests.append(
                make_mocked_request("GET", "/api/admin/users", headers=headers, app=app)
            )
            await asyncio.sleep(0)
        started = time.perf_counter()
        for request in requests:
            await authenticate(request, count=True)
            require_staff(request, "view_users")
        gateway_us = (time.perf_counter() - started) / len(requests) * 1e6
        print(f"authenticate + require_staff     {gateway_us:8.1f} µs per request")
        assert kernel.identity.rbac.permission_checks_skipped == 0
        async with kernel.db.read() as session:
            assert await session.get(StaffUser, user.id) is not None

        # the two kinds alternate in short rounds, so both see the same machine load
        anon: list[float] = []
        auth: list[float] = []
        rates: dict[str, list[float]] = {"anon": [], "auth": []}
        for _ in range(ROUNDS):
            for kind, sent, samples in (("anon", {}, anon), ("auth", headers, auth)):
                rate, latencies = await _http_load(
                    base, "/api/prices", sent, args.clients, args.seconds / ROUNDS
                )
                rates[kind].append(rate)
                samples.extend(latencies)
        anon_rate, auth_rate = statistics.mean(rates["anon"]), statistics.mean(rates["auth"])
        print(f"GET /api/prices anonymous        {anon_rate:8.0f} req/s   {ms_summary(anon)}")
        print(f"GET /api/prices with staff token {auth_rate:8.0f} req/s   {ms_summary(auth)}")
        overhead = statistics.median(auth) - statistics.median(anon)
        print(f"authentication overhead at p50   {overhead:8.3f} ms per request")
        print(TARGETS)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    add_data_dir_option(parser)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
