"""The gateway (seed section 1): request ids in logs, idempotency, rate limits, health."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from identity_helpers import kernel_with, second_kernel
from sqlalchemy import func, select
from support import create_admin, staff_headers

from brokerkernel.api.app import create_app
from brokerkernel.kernel.cache import RedisCache
from brokerkernel.kernel.identity.models import Team
from brokerkernel.kernel.runtime import Kernel

Client = TestClient[Any, Any]
Factory = Any


async def team_count(kernel: Kernel) -> int:
    async with kernel.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Team)) or 0)


# ----------------------------------------------------------------- request id, logs


async def test_request_id_is_echoed_or_assigned_and_carried_by_log_records(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await client.get("/health", headers={"X-Request-ID": "trace-42"})
    assert response.headers["X-Request-ID"] == "trace-42"

    response = await client.get("/prices", headers={"X-Request-ID": "bad id with spaces"})
    assigned = response.headers["X-Request-ID"]
    assert str(uuid.UUID(assigned)) == assigned
    assert uuid.UUID(assigned).version == 7 and uuid.UUID(assigned).variant == uuid.RFC_4122

    access = [r for r in caplog.records if r.name == "brokerkernel.access"]
    assert [(r.getMessage().split()[:3], r.request_id) for r in access[-2:]] == [
        (["GET", "/health", "200"], "trace-42"),
        (["GET", "/prices", "200"], assigned),
    ]
    # a record logged inside the handler (the legacy-path warning) carries it too
    deprecated = [r for r in caplog.records if r.getMessage().startswith("deprecated path")]
    assert deprecated[-1].request_id == assigned
    assert access[-1].status == 200 and access[-1].principal is None


async def test_access_log_never_shows_query_strings(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await client.get("/api/customer/password-reset/verify?token=secret-reset-token")
    ours = [r for r in caplog.records if r.name.startswith("brokerkernel")]
    assert ours and all("secret-reset-token" not in r.getMessage() for r in ours)


# ---------------------------------------------------------------------- idempotency


async def test_same_key_and_user_replays_the_saved_response(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    headers = {**staff, "Idempotency-Key": "create-team-1"}
    first = await client.post("/api/admin/teams", json={"name": "Europe"}, headers=headers)
    second = await client.post("/api/admin/teams", json={"name": "Europe"}, headers=headers)

    assert (first.status, second.status) == (201, 201)
    assert await first.json() == await second.json()
    assert "X-Idempotent-Replay" not in first.headers
    assert second.headers["X-Idempotent-Replay"] == "true"
    assert second.headers["Content-Type"].startswith("application/json")
    assert await team_count(kernel) == 1

    health = await (await client.get("/health")).json()
    assert health["checks"]["idempotency"] == {"hits": 1, "misses": 1, "hit_rate": 0.5}


async def test_key_length_reuse_and_scope_per_user(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    response = await client.post(
        "/api/admin/teams", json={"name": "A"}, headers={**staff, "Idempotency-Key": "k" * 129}
    )
    assert (response.status, await response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["header", "Idempotency-Key"],
                    "msg": "must be 1 to 128 characters",
                    "type": "maxLength",
                }
            ]
        },
    )
    key = {"Idempotency-Key": "k" * 128}
    response = await client.post("/api/admin/teams", json={"name": "A"}, headers={**staff, **key})
    assert response.status == 201

    reuse = {
        "detail": "Idempotency-Key was already used with a different request",
        "code": "idempotency_key_reuse",
    }
    response = await client.post("/api/admin/teams", json={"name": "B"}, headers={**staff, **key})
    assert (response.status, await response.json()) == (422, reuse)
    response = await client.post("/teams", json={"name": "A"}, headers={**staff, **key})
    assert (response.status, await response.json()) == (422, reuse)

    await create_admin(kernel, "second@broker.test")
    other = await staff_headers(client, "second@broker.test")
    response = await client.post("/api/admin/teams", json={"name": "A"}, headers={**other, **key})
    assert response.status == 201 and "X-Idempotent-Replay" not in response.headers
    assert await team_count(kernel) == 2


async def test_refusals_are_not_saved_so_a_corrected_retry_runs(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    headers = {**staff, "Idempotency-Key": "fix-me"}
    response = await client.post("/api/admin/teams", json={"name": ""}, headers=headers)
    assert response.status == 422
    response = await client.post("/api/admin/teams", json={"name": "Fixed"}, headers=headers)
    assert response.status == 201 and "X-Idempotent-Replay" not in response.headers
    assert (await response.json())["name"] == "Fixed"


def _test_routes(app: web.Application) -> dict[str, Any]:
    """Routes only these tests add: a flaky handler and one held open on an event."""
    state: dict[str, Any] = {"calls": 0, "entered": asyncio.Event(), "release": asyncio.Event()}

    async def flaky(_request: web.Request) -> web.Response:
        state["calls"] += 1
        if state["calls"] == 1:
            raise RuntimeError("first call fails")
        return web.json_response({"call": state["calls"]})

    async def held(_request: web.Request) -> web.Response:
        state["entered"].set()
        await state["release"].wait()
        return web.json_response({"done": True}, status=201)

    app.router.add_post("/test/flaky", flaky)
    app.router.add_post("/test/held", held)
    return state


async def test_5xx_is_never_saved_and_a_retry_executes(
    kernel: Kernel, aiohttp_client: Factory
) -> None:
    app = create_app(kernel)
    state = _test_routes(app)
    client = await aiohttp_client(app)
    headers = {"Idempotency-Key": "retry-me"}

    first = await client.post("/test/flaky", json={}, headers=headers)
    second = await client.post("/test/flaky", json={}, headers=headers)
    third = await client.post("/test/flaky", json={}, headers=headers)

    assert first.status == 500
    assert await first.json() == {"detail": "Internal server error"}
    assert (second.status, await second.json()) == (200, {"call": 2})
    assert (third.status, await third.json()) == (200, {"call": 2})
    assert third.headers["X-Idempotent-Replay"] == "true"
    assert state["calls"] == 2


async def test_two_concurrent_requests_with_one_key_one_runs_the_other_gets_409(
    kernel: Kernel, aiohttp_client: Factory
) -> None:
    app = create_app(kernel)
    state = _test_routes(app)
    client = await aiohttp_client(app)
    headers = {"Idempotency-Key": "once"}

    first = asyncio.create_task(client.post("/test/held", json={}, headers=headers))
    await state["entered"].wait()
    second = await client.post("/test/held", json={}, headers=headers)
    state["release"].set()
    first_response = await first

    assert (second.status, await second.json()) == (
        409,
        {"detail": "A request with this Idempotency-Key is already in progress"},
    )
    assert (first_response.status, await first_response.json()) == (201, {"done": True})
    replay = await client.post("/test/held", json={}, headers=headers)
    assert replay.status == 201 and replay.headers["X-Idempotent-Replay"] == "true"


async def test_saved_responses_expire_after_24_hours_and_are_sealed(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    response = await client.post(
        "/api/admin/teams",
        json={"name": "Sealed"},
        headers={**staff, "Idempotency-Key": "ttl"},
    )
    assert response.status == 201
    cache = kernel.identity.cache
    if isinstance(cache, RedisCache):
        keys = [k async for k in cache.redis.scan_iter("idem:*")]
        assert len(keys) == 1
        ttl_ms = await cache.redis.pttl(keys[0])
        assert 86_390_000 < ttl_ms <= 86_400_000
        stored = await cache.redis.get(keys[0])
    else:
        (key,) = [k for k in cache._data if k.startswith("idem:")]
        stored, expires = cache._data[key]
        import time

        assert expires is not None and 86_390 < expires - time.monotonic() <= 86_400
    assert "Sealed" not in str(stored)


# ---------------------------------------------------------------------- rate limits


GATEWAY = """
[kernel.gateway]
rate_limit_per_user = 3
rate_limit_registration_per_ip = 2
rate_limit_auth_per_ip = 4
"""


@pytest.fixture
async def limited(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Factory,
) -> tuple[Kernel, Client]:
    kernel = kernel_with(tmp_path, database_url, redis_url, market_data_dir, GATEWAY)
    client = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    return kernel, client


async def test_per_user_limit_answers_429_with_retry_after_to_the_window_end(
    limited: tuple[Kernel, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, client = limited
    wall = kernel.tokens.wall
    now = [(time.time() // 60 + 1) * 60 + 15]  # 15 s into a window, held still
    monkeypatch.setattr(wall, "time", lambda: now[0])
    headers = await staff_headers(client)  # the login counts on the IP, not the user
    statuses = [(await client.get("/api/admin/users/me", headers=headers)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await client.get("/api/admin/users/me", headers=headers)
    assert (response.status, await response.json()) == (429, {"detail": "Rate limit exceeded"})
    assert response.headers["Retry-After"] == "45"
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"

    now[0] += 45  # the next window
    response = await client.get("/api/admin/users/me", headers=headers)
    assert response.status == 200 and response.headers["X-RateLimit-Remaining"] == "2"


async def test_replays_do_not_consume_quota_and_429_is_not_saved(
    limited: tuple[Kernel, Client],
) -> None:
    kernel, client = limited
    wall = kernel.tokens.wall
    wall.offset_s = 60 - wall.time() % 60 + 1
    headers = await staff_headers(client)
    key = {**headers, "Idempotency-Key": "one-team"}
    assert (await client.post("/api/admin/teams", json={"name": "T"}, headers=key)).status == 201
    for _ in range(5):
        replay = await client.post("/api/admin/teams", json={"name": "T"}, headers=key)
        assert replay.headers["X-Idempotent-Replay"] == "true"
    assert (await client.get("/api/admin/teams", headers=headers)).status == 200
    assert (await client.get("/api/admin/teams", headers=headers)).status == 200
    other = {**headers, "Idempotency-Key": "second-team"}
    response = await client.post("/api/admin/teams", json={"name": "U"}, headers=other)
    assert response.status == 429
    wall.offset_s += 60
    response = await client.post("/api/admin/teams", json={"name": "U"}, headers=other)
    assert response.status == 201 and "X-Idempotent-Replay" not in response.headers


async def test_registration_and_credential_endpoints_are_limited_per_ip(
    limited: tuple[Kernel, Client],
) -> None:
    kernel, client = limited
    wall = kernel.tokens.wall
    wall.offset_s = 60 - wall.time() % 60 + 1
    statuses = []
    for index in range(3):
        response = await client.post(
            "/api/customer/register",
            json={"email": f"r{index}@test.io", "password": "Trader-Pass-1"},
        )
        statuses.append(response.status)
    assert statuses == [201, 201, 429]

    bad = {"email": "admin@broker.test", "password": "wrong-password"}
    statuses = [(await client.post("/users/login", json=bad)).status for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]


async def test_rate_limits_are_shared_by_every_process(
    limited: tuple[Kernel, Client],
    tmp_path: Path,
    market_data_dir: Path,
    aiohttp_client: Factory,
) -> None:
    kernel, client = limited
    other_kernel = second_kernel(kernel, tmp_path, market_data_dir)
    other_kernel.identity.gateway = kernel.identity.gateway
    other = await aiohttp_client(create_app(other_kernel))
    other_kernel.tokens.wall.offset_s = kernel.tokens.wall.offset_s = (
        60 - kernel.tokens.wall.time() % 60 + 1
    )
    headers = await staff_headers(client)
    statuses = [
        (await (client if i % 2 else other).get("/api/admin/users/me", headers=headers)).status
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


# --------------------------------------------------------------------------- health


async def test_health_reports_components_rbac_and_skipped_checks(client: Client) -> None:
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok" and body["service"] == "api-gateway"
    assert body["permission_checks_skipped"] == 0
    assert body["checks"]["rbac_cache"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["idempotency"] == {"hits": 0, "misses": 0, "hit_rate": 0}
    response = await client.get("/health/all")
    assert (await response.json())["services"]["api-gateway"]["details"][
        "permission_checks_skipped"
    ] == 0
