"""Several kernel processes: feed leadership, Redis pub/sub of ticks and account
changes, and ``brokerkernel serve --workers N``.

The multi-process tests need PostgreSQL and Redis (``BROKERKERNEL_TEST_DATABASE_URL``
and ``BROKERKERNEL_TEST_REDIS_URL``); on the embedded SQLite backend the CLI must
refuse to run more than one process, and that is what is tested there.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import unused_port
from conftest import Backends
from httpx_sse import aconnect_sse
from redis.asyncio import Redis
from support import ADMIN_EMAIL, ADMIN_PASSWORD, DAY_START_MS, JWT_SECRET, make_kernel, tick
from support import write_config as write_test_config

from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.marketdata.cluster import LEADER_KEY, FeedLeadership
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.staff import create_staff_user
from brokerkernel.kernel.storage.db import Database

SQLITE_URL = "sqlite+aiosqlite:///unused.db"
POSTGRESQL_URL = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
TIMEOUT_S = 30.0


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "brokerkernel.kernel.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def base_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, "BROKERKERNEL_VAR_DIR": str(tmp_path / "var"), **values}


# --- the CLI refuses several processes without PostgreSQL and Redis ----------------------------


def test_serve_refuses_several_workers_without_postgresql_and_redis(
    tmp_path: Path, market_data_dir: Path
) -> None:
    config = write_test_config(tmp_path / "plugins.toml", market_data_dir)
    sqlite = cli(
        "serve",
        "--workers",
        "2",
        "--config",
        str(config),
        env=base_env(tmp_path, DATABASE_URL=SQLITE_URL),
        cwd=tmp_path,
    )
    assert (sqlite.returncode, sqlite.stdout) == (2, "")
    assert sqlite.stderr.strip().splitlines()[-1] == (
        "--workers 2 needs DATABASE_URL=postgresql+asyncpg://... and REDIS_URL=redis://...: "
        "SQLite and the in-process cache and bus serve exactly one process"
    )
    no_redis = cli(
        "serve",
        "--workers",
        "3",
        "--config",
        str(config),
        env=base_env(tmp_path, DATABASE_URL=POSTGRESQL_URL),
        cwd=tmp_path,
    )
    assert no_redis.returncode == 2
    assert no_redis.stderr.strip().splitlines()[-1] == (
        "--workers 3 needs REDIS_URL=redis://...: SQLite and the in-process cache and bus "
        "serve exactly one process"
    )
    zero = cli("serve", "--workers", "0", env=base_env(tmp_path), cwd=tmp_path)
    assert (zero.returncode, zero.stderr.strip()) == (2, "--workers must be at least 1")


# --- two kernels in one process on Redis --------------------------------------------------------


needs_redis = pytest.mark.skipif(
    Backends.from_environment().redis_url is None, reason="needs Redis (several processes)"
)
needs_postgresql_and_redis = pytest.mark.skipif(
    not Backends.from_environment().is_postgresql or Backends.from_environment().redis_url is None,
    reason="needs PostgreSQL and Redis (several processes)",
)


@pytest.fixture
async def two_kernels(
    tmp_path: Path, database_url: str, redis_url: str | None, market_data_dir: Path
) -> AsyncIterator[tuple[Kernel, Kernel]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    extra = "[kernel.market_data]\nfeed_leader_ttl_s = 1\n"
    first = make_kernel(tmp_path / "a", database_url, redis_url, market_data_dir, extra=extra)
    # The second would run the replay feed (60x real time) if it took the lead.
    config = replay_config(tmp_path / "b", market_data_dir, extra)
    second = Kernel(
        Settings(
            config_path=config,
            database_url=database_url,
            redis_url=redis_url,
            var_dir=tmp_path / "b" / "var",
            env={},
        )
    )
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await second.stop()
        await first.stop()


@needs_redis
async def test_ticks_and_account_changes_reach_the_other_kernel(
    two_kernels: tuple[Kernel, Kernel],
) -> None:
    leader, follower = two_kernels
    assert (leader.market_data.is_leader, follower.market_data.is_leader) == (True, False)
    arrived = asyncio.Event()
    follower.quotes.subscribe(lambda quote: arrived.set())
    logins: list[int] = []
    changed = asyncio.Event()

    def on_change(login: int) -> None:
        logins.append(login)
        changed.set()

    follower.market_data.cluster.on_account_change(on_change)

    tick(leader, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 7135)
    tick(leader, "XAUUSD", "1307.391", "1307.707", DAY_START_MS + 7136)
    await asyncio.wait_for(arrived.wait(), TIMEOUT_S)
    for _ in range(100):  # both ticks travel in one message
        if follower.quotes.get("XAUUSD") is not None:
            break
        await asyncio.sleep(0.01)
    assert list(follower.quotes.all()) == list(leader.quotes.all())
    assert follower.clock.now_ms() == DAY_START_MS + 7136
    assert follower.market_data.cluster.relayed_in == 2

    await leader.market_data.cluster.accounts_changed([10002, 10001])  # one message
    await asyncio.wait_for(changed.wait(), TIMEOUT_S)
    assert logins == [10002, 10001]


async def test_a_batch_of_events_notifies_each_login_once(
    tmp_path: Path, database_url: str, market_data_dir: Path
) -> None:
    """The in-process bus hands the batch over whole: one notice, logins deduplicated
    in first-seen order (numeric strings count; events naming no login do not)."""
    kernel = make_kernel(tmp_path, database_url, None, market_data_dir)
    await kernel.start()
    try:
        logins: list[int] = []
        kernel.market_data.cluster.on_account_change(logins.append)
        at = datetime(2014, 5, 7, tzinfo=UTC)
        payloads: list[dict[str, Any]] = [
            {"login": 10002},
            {"login": "10001"},
            {"login": 10002},
            {"symbol": "EURUSD"},
            {"login": "ten"},
        ]
        await kernel.bus.publish(
            [DomainEvent(f"evt-{n}", "test.changed", p, at) for n, p in enumerate(payloads)]
        )
        assert logins == [10002, 10001]
    finally:
        await kernel.stop()


@needs_redis
async def test_feed_leadership_moves_when_the_leader_stops(
    two_kernels: tuple[Kernel, Kernel],
) -> None:
    """The new leader starts its replay feed where market time is, not from the start."""
    leader, follower = two_kernels
    assert follower.market_data.is_leader is False
    tick(leader, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 43_200_000)  # 12:00 UTC
    own: list[Quote] = []
    started = asyncio.Event()

    def on_tick(quote: Quote) -> None:
        if follower.market_data.is_leader:
            own.append(quote)
            started.set()

    follower.quotes.subscribe(on_tick)
    await leader.market_data.leadership.stop()
    await asyncio.wait_for(started.wait(), TIMEOUT_S)  # taken over within ttl / 3
    assert follower.market_data.is_leader is True
    assert own[0].time_ms > DAY_START_MS + 43_200_000
    assert own[0].time_ms < DAY_START_MS + 43_260_000


@needs_redis
async def test_a_leader_whose_lock_expired_takes_it_again_unless_another_process_did(
    redis_url: str,
) -> None:
    """A renewal later than the TTL (an event loop blocked that long) finds the lock
    gone: with no other leader the process takes it again and stays leader (its
    pending bars are still written); held by another process, it steps down."""
    redis = Redis.from_url(redis_url)
    changes: list[bool] = []
    stepped_down = asyncio.Event()

    async def on_change(leading: bool) -> None:
        changes.append(leading)
        if not leading:
            stepped_down.set()

    leadership = FeedLeadership(redis, "this-process", 1.0, on_change)  # renews every 1/3 s
    try:
        await leadership.start()
        assert (leadership.is_leader, changes) == (True, [True])
        await redis.delete(LEADER_KEY)  # expired before the renewal
        async with asyncio.timeout(TIMEOUT_S):
            while not await redis.exists(LEADER_KEY):  # noqa: ASYNC110 (set by the renewal)
                await asyncio.sleep(0.05)
        assert await redis.get(LEADER_KEY) == b"this-process"
        assert 0 < await redis.pttl(LEADER_KEY) <= 1000
        assert (leadership.is_leader, changes) == (True, [True])

        await redis.set(LEADER_KEY, "another-process", px=60_000)
        await asyncio.wait_for(stepped_down.wait(), TIMEOUT_S)
        assert (leadership.is_leader, changes) == (False, [True, False])
    finally:
        await leadership.stop()  # releases only its own lock
        holder = await redis.get(LEADER_KEY)
        await redis.aclose()
    assert holder == b"another-process"


# --- real server processes ----------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """The process's children (Linux ``/proc``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in children.split()]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def replay_config(tmp_path: Path, market_data_dir: Path, extra: str = "") -> Path:
    """The test configuration with the replay feed at 60x real time, not looping."""
    path = write_test_config(tmp_path / "plugins.toml", market_data_dir, extra)
    path.write_text(path.read_text().replace('speed = "max"', "speed = 60"))
    return path


class Server:
    """One ``brokerkernel serve`` process (its output goes to a log file)."""

    def __init__(self, tmp_path: Path, name: str, port: int, args: list[str], env: dict[str, str]):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp_path / f"{name}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI
                [
                    sys.executable,
                    "-m",
                    "brokerkernel.kernel.cli",
                    "serve",
                    "--port",
                    str(port),
                    *args,
                ],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, http: httpx.AsyncClient) -> None:
        for _ in range(600):
            assert self.process.poll() is None, self.log.read_text()
            try:
                if (await http.get(f"{self.url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture
def server_env(
    tmp_path: Path, database_url: str, redis_url: str | None
) -> Iterator[dict[str, str]]:
    assert redis_url is not None
    yield base_env(
        tmp_path,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        BROKERKERNEL_JWT_SECRET=JWT_SECRET,
    )


def file_ticks(market_data_dir: Path) -> set[tuple[str, Decimal, Decimal, int]]:
    """Every (symbol, bid, ask, UTC ms) of EURUSD and XAUUSD on 2014-05-07, read here."""
    midnight = datetime(2014, 5, 7, tzinfo=UTC)
    ticks = set()
    for symbol, folder in (
        ("EURUSD", "oanda_eurusd_tick_201405_lean"),
        ("XAUUSD", "oanda_xauusd_tick_201405_lean"),
    ):
        with zipfile.ZipFile(market_data_dir / folder / "20140507_quote.zip") as archive:
            text = archive.read(archive.namelist()[0]).decode("ascii")
        for ms, bid, ask in csv.reader(io.StringIO(text)):
            moment = midnight + timedelta(milliseconds=int(ms.split(".")[0]))
            ticks.add((symbol, Decimal(bid), Decimal(ask), int(moment.timestamp() * 1000)))
    return ticks


async def collect_ticks(url: str, count: int) -> list[tuple[str, Decimal, Decimal, int]]:
    """The first ``count`` ticks a WebSocket client of ``url`` receives."""
    ticks: list[tuple[str, Decimal, Decimal, int]] = []
    async with (
        ClientSession() as session,
        session.ws_connect(f"{url}/api/customer/ws/prices?symbols=EURUSD,XAUUSD") as ws,
    ):
        while len(ticks) < count:
            message = await ws.receive(timeout=TIMEOUT_S)
            assert message.type is WSMsgType.TEXT, message
            body = json.loads(message.data, parse_float=Decimal)
            if body["type"] == "prices":
                ticks += [
                    (p["symbol"], p["bid"], p["ask"], p["timestamp_ms"]) for p in body["prices"]
                ]
    return ticks


async def login_headers(
    http: httpx.AsyncClient, url: str, path: str, email: str, password: str
) -> dict[str, str]:
    response = await http.post(f"{url}{path}", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def next_state(events: AsyncIterator[Any]) -> dict[str, Any]:
    """The stream's next ``state`` event, within TIMEOUT_S however many pings come first."""
    async with asyncio.timeout(TIMEOUT_S):
        event = await anext(events)
        while event.event == "message" and event.data == "":
            # A ": ping" comment after an event with an id: httpx-sse keeps the last id
            # (as the SSE spec says) and so yields the ping as an empty message.
            event = await anext(events)
    assert event.event == "state"
    state: dict[str, Any] = json.loads(event.data, parse_float=Decimal)
    return state


@needs_postgresql_and_redis
@pytest.mark.slow
async def test_two_serve_processes_show_the_same_prices_and_account_updates(
    tmp_path: Path, database_url: str, market_data_dir: Path, server_env: dict[str, str]
) -> None:
    database = Database(database_url)
    try:
        await create_staff_user(database, ADMIN_EMAIL, ADMIN_PASSWORD, role="admin")
    finally:
        await database.dispose()
    config = replay_config(tmp_path, market_data_dir)
    servers = [
        Server(tmp_path, name, unused_port(), ["--config", str(config)], server_env)
        for name in ("first", "second")
    ]
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
            for server in servers:
                await server.wait_ready(http)

            # Exactly one process runs the replay feed; the other gets its ticks via Redis.
            running = []
            for server in servers:
                providers = (await http.get(f"{server.url}/api/prices/providers")).json()
                running += [p["running"] for p in providers["providers"] if p["name"] == "replay"]
            assert sorted(running) == [False, True]

            first_ticks, second_ticks = await asyncio.gather(
                *(collect_ticks(server.url, 150) for server in servers)
            )
            start = max(first_ticks[0][3], second_ticks[0][3])
            end = min(first_ticks[-1][3], second_ticks[-1][3])
            common_first = [t for t in first_ticks if start < t[3] < end]
            common_second = [t for t in second_ticks if start < t[3] < end]
            assert len(common_first) > 50
            assert common_first == common_second
            assert set(common_first) <= file_ticks(market_data_dir)

            # Account changes made through either process reach streams on both.
            first, second = (server.url for server in servers)
            response = await http.post(
                f"{first}/api/customer/register",
                json={"email": "two@test.io", "password": "Trader-Pass-1", "first_name": "T"},
            )
            assert response.status_code == 201, response.text
            login = int(response.json()["trading_accounts"][0]["login"])
            trader = await login_headers(
                http, first, "/api/customer/login", "two@test.io", "Trader-Pass-1"
            )
            staff = await login_headers(
                http, second, "/api/admin/users/login", ADMIN_EMAIL, ADMIN_PASSWORD
            )
            stream = f"/api/crm/accounts/{login}/stream"
            async with (
                aconnect_sse(http, "GET", f"{first}{stream}", headers=trader) as one,
                aconnect_sse(http, "GET", f"{second}{stream}", headers=trader) as two,
            ):
                events = [one.aiter_sse(), two.aiter_sse()]
                for source in events:
                    assert (await next_state(source))["balance"] == 0
                response = await http.post(
                    f"{second}/api/backoffice/transactions/manual",
                    headers=staff,
                    json={
                        "login": login,
                        "type": "DEPOSIT",
                        "amount": "5000.00",
                        "currency": "USD",
                        "status": "APPROVED",
                    },
                )
                assert response.status_code == 201, response.text
                for source in events:
                    assert (await next_state(source))["balance"] == 5000
                for _ in range(40):
                    # The replay runs at 60x: a gap in EURUSD's ticks leaves its quote
                    # stale for a moment of real time, and that order is refused
                    # (changing nothing); the next tick makes it fresh again.
                    response = await http.post(
                        f"{first}/api/customer/orders?wait_ms=10000",
                        headers=trader,
                        json={"login": login, "symbol": "EURUSD", "cmd": 0, "volume": 0.1},
                    )
                    assert response.status_code == 200, response.text
                    if response.json()["status"] != "rejected":
                        break
                    assert response.json()["reason"] == "No fresh quote", response.text
                    await asyncio.sleep(0.25)
                assert response.json()["status"] == "executed", response.text
                opened = []
                for source in events:
                    state = await next_state(source)
                    seen = [state]
                    while state["margin_used"] == 0:
                        assert len(seen) < 50, seen
                        state = await next_state(source)
                        seen.append(state)
                    opened.append(state)
                keys = ("balance", "credit", "margin_used", "currency")
                assert [[s[k] for k in keys] for s in opened] == [
                    [5000, 0, opened[0]["margin_used"], "USD"]
                ] * 2
                assert opened[0]["margin_used"] > 0
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0, 0], [server.log.read_text()[-3000:] for server in servers]


@needs_postgresql_and_redis
@pytest.mark.slow
async def test_serve_with_two_workers_shares_one_port_and_one_feed(
    tmp_path: Path, market_data_dir: Path, server_env: dict[str, str]
) -> None:
    config = replay_config(tmp_path, market_data_dir)
    server = Server(
        tmp_path, "workers", unused_port(), ["--workers", "2", "--config", str(config)], server_env
    )
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
            await server.wait_ready(http)
            workers = child_pids(server.process.pid)
            assert len(workers) == 2
            seen: set[bool] = set()
            for _ in range(300):  # new connections land on either worker (once both listen)
                async with httpx.AsyncClient(timeout=TIMEOUT_S) as fresh:
                    body = (await fresh.get(f"{server.url}/api/prices/providers")).json()
                seen.update(p["running"] for p in body["providers"] if p["name"] == "replay")
                if seen == {False, True}:
                    break
                await asyncio.sleep(0.02)
            assert seen == {False, True}  # two processes answered; one of them runs the feed
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()[-3000:]
    assert not any(alive(pid) for pid in workers)
