"""Partner webhooks: subscriptions over the partner API, signed durable deliveries.

A local aiohttp receiver stands in for the partner's endpoint and verifies every
message with the official ``standardwebhooks`` library. Events are written to the
outbox the way kernel services write them; retry times run on the plugin's wall
clock, which the tests move (``service.wall.offset_s``) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator
from sqlalchemy import event, func, select, update
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from support import DAY_START_MS, create_admin, make_kernel, staff_headers, tick

from brokerkernel.api.app import create_app
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.events import DomainEvent, event_row
from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.plugins.challenges import idle
from brokerkernel.plugins.webhooks import RETRY_SCHEDULE_S
from brokerkernel.plugins.webhooks.catalog import BROKER_EVENTS, EVENT_NAMES, subscribed_names
from brokerkernel.plugins.webhooks.models import WebhookDelivery
from brokerkernel.plugins.webhooks.service import WebhookService, webhook_service

Client = TestClient[Any, Any]
#: The receivers listen on loopback: the SSRF guard's switch lets them through
#: (the ``guarded`` fixture runs with the default, the guard on).
PLUGIN = "[plugins.webhooks]\nallow_private_networks = true\n"
ZT4 = "/api/v1/propfirm/webhooks"
STOREFRONT = "/api/v1/storefront/webhooks"
FXPT = "/v1/webhooks"
#: How long ``dispatched`` waits for deliveries to appear (a deadline, not a pause).
DISPATCH_DEADLINE_S = 60.0


# --------------------------------------------------------------------------- receiver


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    def verify(self, secret: str) -> Any:
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """A partner endpoint: records every request, answers from ``script`` (status,
    headers) in order, then 204."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(await request.read(), dict(request.headers)))
        status, headers = self.script.pop(0) if self.script else (204, {})
        return web.Response(status=status, headers=headers, text="" if status == 204 else "no")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{name}", found.handle)
    server = TestServer(app)
    await server.start_server()
    found.url = str(server.make_url("/hooks"))
    yield found
    await server.close()


# ----------------------------------------------------------------------------- helpers


async def _api(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
    plugins: str,
) -> tuple[Client, dict[str, str]]:
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=plugins)
    client: Client = await aiohttp_client(create_app(kernel))
    await create_admin(kernel)
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS)
    return client, await staff_headers(client)


@pytest.fixture
async def api(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, dict[str, str]]:
    """The API of a kernel with the webhooks plugin, and admin staff headers; market
    time 2014-05-07T00:00:00Z (the events' time)."""
    return await _api(tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, PLUGIN)


@pytest.fixture
async def prop_api(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, dict[str, str]]:
    """As ``api``, with the challenges engine and the ZT4 partner API."""
    plugins = PLUGIN + "[plugins.challenges]\n[plugins.propfirm_api]\n"
    return await _api(tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, plugins)


@pytest.fixture
async def guarded(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, dict[str, str]]:
    """As ``api``, with the plugin's default configuration: the SSRF guard on."""
    plugins = "[plugins.webhooks]\n"
    return await _api(tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, plugins)


class FakeDns(AbstractResolver):
    """A resolver answering from ``names`` (host -> addresses), which tests change to
    play DNS rebinding; other names do not resolve."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.names[host]
        ]

    async def close(self) -> None:
        return None


def kernel_of(client: Client) -> Kernel:
    return client.app[KERNEL]


def service_of(client: Client) -> WebhookService:
    return webhook_service(kernel_of(client))


async def partner(
    client: Client,
    staff: dict[str, str],
    tenant: str,
    scopes: tuple[str, ...] = ("events:subscribe",),
    enabled: bool = True,
) -> dict[str, str]:
    """Authorization headers of a new partner client of ``tenant`` (created, and
    prop-firm enabled or not, as asked)."""
    if tenant == "default":
        response = await client.patch(
            "/api/admin/tenants/default", json={"prop_firm_enabled": enabled}, headers=staff
        )
        assert response.status == 200, await response.text()
    else:
        response = await client.post(
            "/api/admin/tenants",
            json={"id": tenant, "name": tenant.title(), "prop_firm_enabled": enabled},
            headers=staff,
        )
        assert response.status in (201, 409), await response.text()
    response = await client.post(
        "/api/admin/partner-clients",
        json={"name": f"{tenant} firm", "tenant_id": tenant, "scopes": list(scopes)},
        headers=staff,
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    response = await client.post(
        "/api/v1/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": created["client_id"],
            "client_secret": created["client_secret"],
        },
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def subscribe(
    client: Client, headers: dict[str, str], url: str, events: list[str], path: str = ZT4
) -> dict[str, Any]:
    response = await client.post(path, json={"url": url, "events": events}, headers=headers)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def emit(kernel: Kernel, type_: str, payload: dict[str, Any]) -> str:
    """Write an outbox event in its own unit of work, as kernel services do."""
    row = event_row(type_, payload, kernel.clock.now())
    async with kernel.db.transaction() as session:
        session.add(OutboxEvent(**row))
    return str(row["id"])


async def deliveries_count(kernel: Kernel) -> int:
    async with kernel.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0)


async def dispatched(kernel: Kernel, expected: int) -> None:
    """Relay the outbox until ``expected`` deliveries exist (the Redis consumer reads
    the stream on its own task), giving up after a generous deadline on a slow host."""
    deadline = asyncio.get_running_loop().time() + DISPATCH_DEADLINE_S
    while True:
        await kernel.relay.drain()
        count = await deliveries_count(kernel)
        if count >= expected or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    assert count == expected


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def account_payload(tenant: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "account_id": "prop_1",
        "login": 10001,
        "plan_id": "plan_1",
        "phase": "phase_1",
        "customer_id": "cus_1",
        **extra,
    }


async def log_of(client: Client, headers: dict[str, str], subscription: dict[str, Any]) -> Any:
    response = await client.get(f"{ZT4}/{subscription['id']}/deliveries", headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


# ------------------------------------------------------------------------------- tests


async def test_subscriptions_are_managed_with_a_secret_shown_once(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    acme = await partner(client, staff, "default")
    created = await subscribe(client, acme, f"{receiver.url}/a", ["account.breached"])
    secret = created.pop("secret")
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["events"] == ["account.breached"] and created["format"] == "standard"
    assert created["enabled"] is True and created["id"].startswith("wh_")

    listed = await (await client.get(ZT4, headers=acme)).json()
    assert listed == [created]
    fetched = await (await client.get(f"{STOREFRONT}/{created['id']}", headers=acme)).json()
    assert "secret" not in fetched and fetched == created

    response = await client.patch(
        f"{ZT4}/{created['id']}",
        json={"events": ["account.breached", "evaluation.failed"], "description": "risk desk"},
        headers=acme,
    )
    changed = await response.json()
    assert response.status == 200
    assert (changed["events"], changed["description"]) == (
        ["account.breached", "evaluation.failed"],
        "risk desk",
    )

    response = await client.post(
        ZT4,
        json={"url": "ftp://nope", "events": ["account.breached", "account.exploded"]},
        headers=acme,
    )
    assert response.status == 422
    errors = (await response.json())["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "events", 1], "enum"),
        (["body", "url"], "pattern"),
    ]
    response = await client.patch(f"{ZT4}/{created['id']}", json={}, headers=acme)
    assert response.status == 422

    assert (await client.delete(f"{ZT4}/{created['id']}", headers=acme)).status == 204
    response = await client.get(f"{ZT4}/{created['id']}", headers=acme)
    assert (response.status, await response.json()) == (
        404,
        {"detail": "Webhook subscription not found"},
    )
    assert await (await client.get(ZT4, headers=acme)).json() == []


async def test_scope_and_entitlement_are_enforced_as_the_seed_says(
    api: tuple[Client, dict[str, str]],
) -> None:
    client, staff = api
    reader = await partner(client, staff, "default", scopes=("plans:read",))
    response = await client.get(ZT4, headers=reader)
    assert (response.status, await response.json()) == (403, {"detail": "insufficient_scope"})
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="events:subscribe"'
    )
    gated = await partner(client, staff, "gated", enabled=False)
    for path in (ZT4, STOREFRONT, FXPT):
        response = await client.post(
            path, json={"url": "http://x.test/", "events": ["account.created"]}, headers=gated
        )
        assert (response.status, await response.json()) == (
            403,
            {"detail": "prop_firm_not_enabled"},
        )
    response = await client.get(ZT4)
    assert (response.status, await response.json()) == (
        401,
        {"detail": "Missing or invalid Authorization header"},
    )
    response = await client.get(FXPT, headers=staff)
    assert (response.status, await response.json()) == (
        403,
        {"detail": "Partner access token required"},
    )


async def test_each_tenant_receives_only_its_own_events_signed(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    acme = await partner(client, staff, "default")
    zeta = await partner(client, staff, "zeta")
    mine = await subscribe(client, acme, f"{receiver.url}/acme", ["account.breached"])
    theirs = await subscribe(client, zeta, f"{receiver.url}/zeta", ["account.breached"])

    breach = {"rule": "daily_loss", "reason": "equity 94,900 below 95,000", "floor": "95000"}
    event_id = await emit(kernel, "account.breached", account_payload("zeta", **breach))
    await emit(kernel, "account.breached", account_payload(None, **breach))  # the broker's own
    await dispatched(kernel, 1)
    await service_of(client).drain()

    (message,) = receiver.received
    assert message.headers["webhook-id"].startswith("msg_")
    assert message.verify(theirs["secret"]) == {
        "type": "account.breached",
        "timestamp": "2014-05-07T00:00:00Z",
        "data": account_payload("zeta", **breach),
    }
    with pytest.raises(WebhookVerificationError):
        message.verify(mine["secret"])
    assert [d["event_id"] for d in await log_of(client, zeta, theirs)] == [event_id]
    assert await log_of(client, acme, mine) == []
    response = await client.get(f"{ZT4}/{theirs['id']}", headers=acme)
    assert (response.status, await response.json()) == (
        404,
        {"detail": "Webhook subscription not found"},
    )
    assert [s["id"] for s in await (await client.get(FXPT, headers=acme)).json()] == [mine["id"]]


async def test_fxproptech_subscriptions_get_its_names_and_payload_shape(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    acme = await partner(client, staff, "default")
    fx = await subscribe(
        client, acme, f"{receiver.url}/fx", ["evaluation.started", "evaluation.failed"], FXPT
    )
    assert fx["format"] == "fxproptech"
    zt4 = await subscribe(client, acme, f"{receiver.url}/zt4", ["account.created"])

    created = account_payload("default", source="api", initial_balance="100000", currency="USD")
    event_id = await emit(kernel, "account.created", created)
    # a breach emits account.breached and phase.failed: one evaluation.failed message
    await emit(kernel, "account.breached", account_payload("default", rule="max_loss"))
    await emit(kernel, "phase.failed", account_payload("default", rule="max_loss", reason="x"))
    await emit(kernel, "payout.processed", account_payload("default", payout_id="po_1"))
    await dispatched(kernel, 3)
    await service_of(client).drain()

    assert len({r.headers["webhook-id"] for r in receiver.received}) == 3  # payout: nobody
    bodies = sorted(
        (json.loads(r.body) for r in receiver.received), key=lambda b: b.get("event", "")
    )
    assert bodies[0] == {
        "type": "account.created",
        "timestamp": "2014-05-07T00:00:00Z",
        "data": created,
    }
    assert bodies[1]["event"] == "evaluation.failed"
    assert bodies[1]["data"]["reason"] == "x"  # from phase.failed, not account.breached
    assert bodies[2] == {
        "event": "evaluation.started",
        "id": event_id,
        "ts": "2014-05-07T00:00:00Z",
        "data": {"trader_id": "prop_1", **created},  # the seed's key: the account's id
    }
    for message in receiver.received:
        secret = fx["secret"] if b'"event"' in message.body else zt4["secret"]
        message.verify(secret)


def test_a_breach_maps_to_evaluation_failed_once() -> None:
    assert subscribed_names("account.breached") == ("account.breached",)
    assert subscribed_names("phase.failed") == ("phase.failed", "evaluation.failed")


async def test_a_repeated_event_is_delivered_once(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/a", ["target.reached"])
    event_id = await emit(kernel, "target.reached", account_payload("default", target="10000"))
    await dispatched(kernel, 1)

    async with kernel.db.read() as session:
        row = await session.scalar(select(OutboxEvent).where(OutboxEvent.id == event_id))
    assert row is not None
    again = DomainEvent(row.id, row.type, row.payload, row.occurred_at)
    await service_of(client).dispatcher.on_events([again])  # the bus delivers at least once
    await service_of(client).dispatcher.on_events([again, again])
    await service_of(client).drain()

    assert await deliveries_count(kernel) == 1
    (message,) = receiver.received
    assert message.verify(hook["secret"])["type"] == "target.reached"


async def test_a_batch_of_events_is_one_insert_and_its_outcomes_one_update(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    """The dispatcher's batch handler: tenants' events, the broker's own, unroutable
    ones and one event twice become their deliveries in one INSERT; sending them all
    successfully records their outcomes in one UPDATE; a request carries the Standard
    Webhooks headers, its content type and length, ``Host`` and ``User-Agent``, nothing
    else."""
    client, staff = api
    kernel = kernel_of(client)
    acme = await partner(client, staff, "default")
    zeta = await partner(client, staff, "zeta")
    mine = await subscribe(
        client, acme, f"{receiver.url}/acme", ["payout.requested", "target.reached"]
    )
    theirs = await subscribe(client, zeta, f"{receiver.url}/zeta", ["payout.requested"])
    at = kernel.clock.now()
    events = [
        DomainEvent("e1", "payout.requested", account_payload("default", payout_id="po_1"), at),
        DomainEvent("e2", "payout.requested", account_payload("zeta", payout_id="po_2"), at),
        DomainEvent("e3", "target.reached", account_payload("default", target="10000"), at),
        DomainEvent("e4", "payout.requested", account_payload(None, payout_id="po_3"), at),
        DomainEvent("e5", "order.opened", {"login": 424242, "ticket": 1}, at),  # no prop account
        DomainEvent("e6", "order.closed", {"login": "not-a-login"}, at),  # sinks nothing
    ]
    statements: list[str] = []

    def record(*args: Any) -> None:
        statement = " ".join(args[2].split())
        if statement.startswith(("INSERT INTO webhook_deliveries", "UPDATE webhook_deliveries")):
            statements.append(statement)

    engine = kernel.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await service_of(client).dispatcher.on_events([*events, events[0]])
        inserts = len(statements)
        await service_of(client).drain()
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert inserts == 1
    outcomes = [s for s in statements[inserts:] if " SET status=" in s]
    assert len(outcomes) == 1
    assert sorted(
        (d["event_id"], d["status"], d["attempts"]) for d in await log_of(client, acme, mine)
    ) == [("e1", "succeeded", 1), ("e3", "succeeded", 1)]
    response = await client.get(f"{ZT4}/{theirs['id']}/deliveries", headers=zeta)
    (delivery,) = await response.json()
    assert (delivery["event_id"], delivery["status"], delivery["attempts"]) == (
        "e2",
        "succeeded",
        1,
    )
    assert len(receiver.received) == 3
    for message in receiver.received:
        secret = theirs["secret"] if message.headers["webhook-id"] == delivery["id"] else None
        message.verify(secret or mine["secret"])
        assert sorted(name.lower() for name in message.headers) == [
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "webhook-id",
            "webhook-signature",
            "webhook-timestamp",
        ]
        assert message.headers["User-Agent"] == "brokerkernel-webhooks/1"


async def test_failures_follow_the_retry_schedule_exactly_then_fail(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    service = service_of(client)
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/down", ["drawdown.warning"])
    receiver.script = [(500, {})] * 10
    await emit(kernel, "drawdown.warning", account_payload("default", threshold_pct="80"))
    await dispatched(kernel, 1)

    await service.drain()
    assert len(receiver.received) == 1  # immediately
    gaps = []
    for attempt in range(2, 11):
        (delivery,) = await log_of(client, acme, hook)
        last = delivery["attempt_log"][-1]
        due = _time(delivery["next_attempt_at"])
        gaps.append(int((due - _time(last["attempted_at"])).total_seconds()))
        ahead = (due - service.wall.now()).total_seconds()
        service.wall.offset_s += ahead - 1
        await service.drain()
        assert len(receiver.received) == attempt - 1  # one second early: nothing is sent
        service.wall.offset_s += 1
        await service.drain()
        assert len(receiver.received) == attempt

    assert gaps == RETRY_SCHEDULE_S[1:]
    (delivery,) = await log_of(client, acme, hook)
    assert (delivery["status"], delivery["attempts"], delivery["next_attempt_at"]) == (
        "failed",
        10,
        None,
    )
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500] * 10
    assert delivery["attempt_log"][0]["response_excerpt"] == "no"
    assert delivery["attempt_log"][0]["error"] == "HTTP 500"
    assert len(receiver.received) == 10
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    for message in receiver.received:
        message.verify(hook["secret"])


async def test_429_waits_for_retry_after_and_410_disables_the_endpoint(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    service = service_of(client)
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/busy", ["equity.threshold"])
    receiver.script = [(429, {"Retry-After": "120"}), (410, {})]
    await emit(kernel, "equity.threshold", account_payload("default", level="90000"))
    await dispatched(kernel, 1)
    await service.drain()

    (delivery,) = await log_of(client, acme, hook)
    assert delivery["status"] == "pending" and delivery["last_status_code"] == 429
    waited = _time(delivery["next_attempt_at"]) - _time(delivery["attempt_log"][0]["attempted_at"])
    assert waited == timedelta(seconds=120)  # not the schedule's 5 s
    service.wall.offset_s += 60
    await service.drain()
    assert len(receiver.received) == 1
    service.wall.offset_s += 61
    await service.drain()
    assert len(receiver.received) == 2  # answered 410 Gone

    (delivery,) = await log_of(client, acme, hook)
    assert (delivery["status"], delivery["last_status_code"]) == ("failed", 410)
    fetched = await (await client.get(f"{ZT4}/{hook['id']}", headers=acme)).json()
    assert (fetched["enabled"], fetched["disabled_reason"]) == (
        False,
        "The endpoint answered 410 Gone",
    )
    await emit(kernel, "equity.threshold", account_payload("default", level="80000"))
    await kernel.relay.drain()
    assert await deliveries_count(kernel) == 1  # a disabled endpoint gets nothing new

    response = await client.patch(f"{ZT4}/{hook['id']}", json={"enabled": True}, headers=acme)
    assert (await response.json())["disabled_reason"] is None
    await emit(kernel, "equity.threshold", account_payload("default", level="70000"))
    await dispatched(kernel, 2)
    await service.drain()
    assert len(receiver.received) == 3
    for message in receiver.received:
        message.verify(hook["secret"])


async def test_a_rotated_secret_signs_next_to_the_old_one_for_the_grace_period(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    service = service_of(client)
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/r", ["payout.requested"])
    response = await client.post(f"{ZT4}/{hook['id']}/rotate-secret", headers=acme)
    rotated = await response.json()
    assert response.status == 200 and rotated["secret"] != hook["secret"]
    grace_end = _time(rotated["previous_secret_expires_at"]) - _time(rotated["updated_at"])
    assert grace_end == timedelta(hours=24)

    await emit(kernel, "payout.requested", account_payload("default", payout_id="po_1"))
    await dispatched(kernel, 1)
    await service.drain()
    during = receiver.received[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    during.verify(hook["secret"])
    during.verify(rotated["secret"])

    service.wall.offset_s += 24 * 3600 + 1
    await emit(kernel, "payout.requested", account_payload("default", payout_id="po_2"))
    await dispatched(kernel, 2)
    await service.drain()
    after = receiver.received[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    after.verify(rotated["secret"])
    with pytest.raises(WebhookVerificationError):
        after.verify(hook["secret"])


async def test_a_restart_mid_retry_loses_nothing(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
    receiver: Receiver,
) -> None:
    first = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=PLUGIN)
    client: Client = await aiohttp_client(create_app(first))
    await create_admin(first)
    acme = await partner(client, await staff_headers(client), "default")
    hook = await subscribe(client, acme, f"{receiver.url}/r", ["phase.passed"])
    receiver.script = [(503, {})]
    await emit(first, "phase.passed", account_payload("default", next_phase="phase_2"))
    await dispatched(first, 1)
    await service_of(client).drain()
    assert len(receiver.received) == 1
    await client.close()  # the kernel stops with a retry due in 5 s

    second = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=PLUGIN)
    client = await aiohttp_client(create_app(second))
    service = service_of(client)
    service.wall.offset_s += 5
    await service.drain()

    (delivery,) = await log_of(client, acme, hook)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 2)
    assert len(receiver.received) == 2
    for message in receiver.received:
        assert message.verify(hook["secret"])["data"]["next_phase"] == "phase_2"


async def test_a_delivery_leased_by_a_process_that_died_is_sent_when_the_lease_expires(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    service = service_of(client)
    await service.worker.stop()  # only the drains below send
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/l", ["payout.requested"])
    await emit(kernel, "payout.requested", account_payload("default", payout_id="po_1"))
    await dispatched(kernel, 1)
    async with kernel.db.transaction() as session:  # what a process dying mid-send leaves
        await session.execute(
            update(WebhookDelivery).values(
                lease_token="dead-process",
                lease_expires_at=service.wall.now() + timedelta(seconds=300),  # lease_s
            )
        )

    await service.drain()
    assert receiver.received == []
    service.wall.offset_s += 301
    await service.drain()
    (message,) = receiver.received
    message.verify(hook["secret"])
    (delivery,) = await log_of(client, acme, hook)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)


async def test_two_processes_draining_together_send_each_message_once(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
    receiver: Receiver,
) -> None:
    """Leased claims of 5 rows: this kernel's drain and a second kernel on the same
    database (another process: its background worker and its drain) send 40
    deliveries together, each exactly once."""
    small = PLUGIN + "batch_size = 5\n"
    client, staff = await _api(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, small
    )
    kernel = kernel_of(client)
    await service_of(client).worker.stop()  # only the drain below sends from here
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/both", ["payout.processed"])
    for number in range(40):
        await emit(kernel, "payout.processed", account_payload("default", payout_id=f"po_{number}"))
    await dispatched(kernel, 40)
    (tmp_path / "other").mkdir()
    other = make_kernel(tmp_path / "other", database_url, redis_url, market_data_dir, extra=small)
    await other.start()
    try:
        await asyncio.gather(service_of(client).drain(), webhook_service(other).drain())
    finally:
        await other.stop()

    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 40
    assert service_of(client).worker.sent + webhook_service(other).worker.sent == 40
    for message in receiver.received:
        message.verify(hook["secret"])


async def test_delivery_log_filters_and_stats(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    service = service_of(client)
    acme = await partner(client, staff, "default")
    hook = await subscribe(client, acme, f"{receiver.url}/s", ["payout.requested"])
    receiver.script = [(500, {}), (200, {}), (200, {})]
    for number in range(3):
        await emit(kernel, "payout.requested", account_payload("default", payout_id=f"po_{number}"))
    await dispatched(kernel, 3)
    await service.drain()

    path = f"{ZT4}/{hook['id']}/deliveries"
    pending = await (await client.get(f"{path}?status=pending", headers=acme)).json()
    assert [d["attempts"] for d in pending] == [1]
    newest = await (await client.get(f"{path}?limit=1", headers=acme)).json()
    assert len(newest) == 1
    response = await client.get(f"{path}?limit=101&status=lost", headers=acme)
    assert response.status == 422
    errors = [(e["loc"], e["type"]) for e in (await response.json())["detail"]]
    assert errors == [(["query", "limit"], "maximum"), (["query", "status"], "enum")]
    response = await client.get(f"{path}?limit=ten", headers=acme)
    assert [e["loc"] for e in (await response.json())["detail"]] == [["query", "limit"]]

    stats = await (await client.get(f"{path}/stats", headers=acme)).json()
    assert stats["counts"] == {"pending": 1, "succeeded": 2, "failed": 0, "cancelled": 0}
    assert (stats["total"], stats["success_rate"]) == (3, 1)
    attempts = [
        a for d in await (await client.get(path, headers=acme)).json() for a in d["attempt_log"]
    ]
    assert sorted(a["status_code"] for a in attempts) == [200, 200, 500]
    latencies = sorted(a["latency_ms"] for a in attempts)  # nearest rank of 3 answers
    assert stats["latency_ms"] == {"p50": latencies[1], "p95": latencies[2]}
    assert stats["last_success_at"] == max(
        a["attempted_at"] for a in attempts if a["status_code"] == 200
    )
    assert stats["last_failure_at"] == next(
        a["attempted_at"] for a in attempts if a["status_code"] == 500
    )

    assert (await client.delete(f"{ZT4}/{hook['id']}", headers=acme)).status == 204
    service.wall.offset_s += 5
    await service.drain()
    assert len(receiver.received) == 3  # the pending retry was cancelled


async def test_a_provisioned_account_and_its_trades_reach_only_its_partner(
    prop_api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    """End to end through the challenges engine: ``account.created`` (and its
    FXPropTech alias) from provisioning, ``order.opened`` routed by the account's login."""
    client, staff = prop_api
    kernel = kernel_of(client)
    scopes = ("plans:write", "accounts:write", "events:subscribe")
    acme = await partner(client, staff, "default", scopes=scopes)
    zeta = await partner(client, staff, "zeta", scopes=scopes)
    zt4 = await subscribe(client, acme, f"{receiver.url}/zt4", ["account.created", "order.opened"])
    fx = await subscribe(client, acme, f"{receiver.url}/fx", ["evaluation.started"], FXPT)
    await subscribe(client, zeta, f"{receiver.url}/zeta", ["account.created", "order.opened"])

    plan = {
        "code": "100K",
        "name": "100K challenge",
        "account_size": 100000,
        "currency": "USD",
        "price": 99,
        "phases": [{"name": "phase_1", "rules": []}],
    }
    response = await client.post("/api/v1/propfirm/plans", json=plan, headers=acme)
    assert response.status == 201, await response.text()
    response = await client.post(
        "/api/v1/propfirm/accounts",
        json={"planId": (await response.json())["id"], "trader": {"email": "tess@acme.test"}},
        headers=acme,
    )
    assert response.status == 201, await response.text()
    account = await response.json()
    request_id = await kernel.trading.submit(account["login"], "EURUSD", 0, Decimal("0.10"))
    await kernel.trading.idle()
    status = await kernel.trading.request_status(request_id)
    assert status is not None and status["status"] == "executed", status
    await dispatched(kernel, 3)
    await service_of(client).drain()

    assert len({r.headers["webhook-id"] for r in receiver.received}) == 3  # nothing for zeta
    bodies = [json.loads(r.body) for r in receiver.received]
    assert sorted(b.get("type") or b["event"] for b in bodies) == [
        "account.created",
        "evaluation.started",
        "order.opened",
    ]
    for message in receiver.received:
        data = message.verify(fx["secret"] if b'"event"' in message.body else zt4["secret"])
        assert data["data"]["login"] == account["login"]
    (opened,) = [b for b in bodies if b.get("type") == "order.opened"]
    assert (opened["data"]["ticket"], opened["data"]["volume"]) == (status["order"], "0.10")


async def test_the_readme_quick_start_receives_a_signed_breach(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
    receiver: Receiver,
) -> None:
    """README "Partner API (ZT4-style)": every step with its exact request, then the
    breach the README promises, verified with ``standardwebhooks``; a reset after it
    reaches a subscriber of the broker extension ``account.reset``."""
    rules = "[plugins.daily_loss]\n[plugins.max_loss]\n[plugins.profit_target]\n"
    plugins = PLUGIN + rules + "[plugins.challenges]\n[plugins.propfirm_api]\n"
    client, staff = await _api(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, plugins
    )
    kernel = kernel_of(client)
    # 1. broker admin
    response = await client.patch(
        "/api/admin/tenants/default", json={"prop_firm_enabled": True}, headers=staff
    )
    assert response.status == 200, await response.text()
    scopes = ["plans:write", "accounts:write", "accounts:read", "events:subscribe"]
    response = await client.post(
        "/api/admin/partner-clients", json={"name": "Acme Prop", "scopes": scopes}, headers=staff
    )
    assert response.status == 201, await response.text()
    credentials = await response.json()
    # 2. partner: token, plan, account, SSO
    response = await client.post(
        "/api/v1/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    assert response.status == 200, await response.text()
    acme = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
    plan = {
        "code": "100K",
        "name": "100K 1-step",
        "account_size": 100000,
        "price": 499,
        "timezone": "Europe/Prague",
        "phases": [
            {
                "name": "phase_1",
                "rules": [
                    {
                        "type": "daily_loss",
                        "params": {"model": "balance_minus_initial_pct", "percent": 5},
                    },
                    {"type": "max_loss", "params": {"model": "static", "percent": 10}},
                    {"type": "profit_target", "params": {"percent": 10}},
                ],
            }
        ],
    }
    response = await client.post("/api/v1/propfirm/plans", json=plan, headers=acme)
    assert response.status == 201, await response.text()
    plan_id = (await response.json())["id"]
    response = await client.post(
        "/api/v1/propfirm/accounts",
        json={
            "planId": plan_id,
            "trader": {"email": "tess@example.com"},
            "external_ref": "order-1",
        },
        headers=acme,
    )
    assert response.status == 201, await response.text()
    account = await response.json()
    response = await client.post(f"/api/v1/propfirm/accounts/{account['id']}/sso", headers=acme)
    assert response.status == 200, await response.text()
    sso = await response.json()
    assert sso["expires_in"] == 900
    assert sso["url"].endswith(f"/api/customer/autologin?token={sso['token']}")
    # 3. webhooks
    hooks = await subscribe(
        client, acme, f"{receiver.url}/acme", ["account.breached", "phase.failed", "phase.passed"]
    )
    resets = await subscribe(client, acme, f"{receiver.url}/resets", ["account.reset"])
    assert hooks["secret"].startswith("whsec_")

    # the trader buys 1 lot at 1.39298; bid 1.34000 leaves equity 94,702.00 < 95,000
    login = account["login"]
    request_id = await kernel.trading.submit(login, "EURUSD", 0, Decimal("1"))
    await kernel.trading.idle()
    status = await kernel.trading.request_status(request_id)
    assert status is not None and status["status"] == "executed", status
    tick(kernel, "EURUSD", "1.34000", "1.34012", DAY_START_MS + 60_000)
    await idle(kernel)
    response = await client.get(f"/api/v1/propfirm/accounts/{account['id']}", headers=acme)
    assert (await response.json())["status"] == "failed"
    response = await client.post(f"/api/v1/propfirm/accounts/{account['id']}/reset", headers=acme)
    assert response.status == 200, await response.text()
    await dispatched(kernel, 3)
    await service_of(client).drain()

    by_type = {json.loads(r.body)["type"]: r for r in receiver.received}
    assert sorted(by_type) == ["account.breached", "account.reset", "phase.failed"]
    failed = by_type["phase.failed"].verify(hooks["secret"])["data"]
    assert (failed["account_id"], failed["rule"]) == (account["id"], "daily_loss")
    reset = by_type["account.reset"]
    verified = by_type["account.breached"].verify(hooks["secret"])
    assert verified["type"] == "account.breached"
    assert {k: verified["data"][k] for k in ("account_id", "login", "rule", "floor", "equity")} == {
        "account_id": account["id"],
        "login": login,
        "rule": "daily_loss",
        "floor": "95000.00",
        "equity": "94702.00",
    }
    assert verified["data"]["reason"]
    assert reset.verify(resets["secret"])["data"]["account_id"] == account["id"]


async def test_broker_extension_events_are_subscribable_and_delivered(
    api: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    client, staff = api
    kernel = kernel_of(client)
    acme = await partner(client, staff, "default")
    names = ["payout.rejected", "payout.failed", "account.reset", "account.scaled"]
    assert list(BROKER_EVENTS) == names and EVENT_NAMES[-4:] == BROKER_EVENTS
    for path in (ZT4, STOREFRONT, FXPT):
        created = await subscribe(client, acme, f"{receiver.url}/{path.count('/')}", names, path)
        assert created["events"] == names
    for name in names:
        assert subscribed_names(name) == (name,)
        await emit(kernel, name, account_payload("default", reason="no"))
    await dispatched(kernel, 12)
    await service_of(client).drain()
    bodies = [json.loads(r.body) for r in receiver.received]
    assert sorted(b.get("type") or b["event"] for b in bodies) == sorted(names * 3)


async def test_the_webhook_routes_are_documented_with_their_scope(
    api: tuple[Client, dict[str, str]],
) -> None:
    client, _staff = api
    document = json.loads(await (await client.get("/openapi.json")).text())
    OpenAPIV31SpecValidator(document).validate()
    for prefix in (ZT4, STOREFRONT, FXPT):
        create = document["paths"][prefix]["post"]
        assert create["security"] == [{"partnerOAuth": ["events:subscribe"]}]
        schema = create["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["events"]["items"]["enum"] == list(EVENT_NAMES)
        assert len(EVENT_NAMES) == 23
        stats = document["paths"][f"{prefix}/{{id}}/deliveries/stats"]["get"]
        assert sorted(stats["responses"]) == ["200", "401", "403", "404"]


async def test_the_ssrf_guard_refuses_urls_that_are_not_public_or_carry_credentials(
    guarded: tuple[Client, dict[str, str]],
) -> None:
    client, staff = guarded
    acme = await partner(client, staff, "default")
    service_of(client).guard.resolver = lambda: FakeDns(
        {
            "partner.example": ["93.184.216.34"],
            "intranet.example": ["10.1.2.3"],
            "mixed.example": ["93.184.216.34", "169.254.169.254"],
        }
    )
    refused = "must not point to a non-public address"
    cases = {
        "http://127.0.0.1:8080/hooks": f"{refused} (127.0.0.1, a loopback address)",
        "http://[::1]/hooks": f"{refused} (::1, a loopback address)",
        "http://0.0.0.0/": f"{refused} (0.0.0.0, the unspecified address)",
        "http://169.254.169.254/latest/meta-data": (
            f"{refused} (169.254.169.254, a link-local address)"
        ),
        "http://224.0.0.1/": f"{refused} (224.0.0.1, a multicast address)",
        "http://192.168.1.20/": f"{refused} (192.168.1.20, a private address)",
        "http://[::ffff:10.0.0.1]/": f"{refused} (::ffff:a00:1, a private address)",
        "http://[2002:7f00:1::1]/": f"{refused} (2002:7f00:1::1, a loopback address)",
        "http://240.0.0.1/": f"{refused} (240.0.0.1, a private address)",
        "http://100.64.0.1/": f"{refused} (100.64.0.1, not a public address)",
        "http://intranet.example/hooks": (
            f"{refused} (intranet.example resolves to 10.1.2.3, a private address)"
        ),
        "http://mixed.example/hooks": (
            f"{refused} (mixed.example resolves to 169.254.169.254, a link-local address)"
        ),
        "https://user:pw@partner.example/hooks": "must not contain credentials",
    }
    for url, message in cases.items():
        response = await client.post(
            ZT4, json={"url": url, "events": ["account.breached"]}, headers=acme
        )
        assert (response.status, await response.json()) == (
            422,
            {"detail": [{"loc": ["body", "url"], "msg": message, "type": "url"}]},
        ), url
    created = await subscribe(client, acme, "https://partner.example/hooks", ["account.breached"])
    # A name that does not resolve yet is accepted: the delivery-time check applies.
    later = await subscribe(client, acme, "https://not-yet.example/hooks", ["account.breached"])
    assert (created["url"], later["url"]) == (
        "https://partner.example/hooks",
        "https://not-yet.example/hooks",
    )
    response = await client.patch(
        f"{ZT4}/{created['id']}", json={"url": "http://10.0.0.7/hooks"}, headers=acme
    )
    assert (response.status, await response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "url"],
                    "msg": f"{refused} (10.0.0.7, a private address)",
                    "type": "url",
                }
            ]
        },
    )


async def test_the_ssrf_guard_checks_again_when_delivering(
    guarded: tuple[Client, dict[str, str]], receiver: Receiver
) -> None:
    """DNS rebinding: a name public at subscription time that now resolves to the
    (loopback) receiver is not called; nor is an address literal once the switch
    is off. Both attempts fail like a connection error and stay pending for a retry."""
    client, staff = guarded
    kernel = kernel_of(client)
    service = service_of(client)
    acme = await partner(client, staff, "default")
    dns = FakeDns({"partner.example": ["93.184.216.34"]})
    service.guard.resolver = lambda: dns
    port = int(receiver.url.split(":")[2].split("/")[0])
    rebound = await subscribe(
        client, acme, f"http://partner.example:{port}/hooks/a", ["account.breached"]
    )
    service.guard.allow_private_networks = True  # as if the switch was on then
    literal = await subscribe(client, acme, f"{receiver.url}/b", ["account.breached"])
    service.guard.allow_private_networks = False
    dns.names["partner.example"] = ["127.0.0.1"]

    await emit(kernel, "account.breached", account_payload("default"))
    await dispatched(kernel, 2)
    await service.drain()  # the worker's own pass may have sent them already
    assert receiver.received == []
    errors = {}
    for subscription in (rebound, literal):
        (delivery,) = await log_of(client, acme, subscription)
        assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
            "pending",
            1,
            None,
        )
        errors[subscription["id"]] = delivery["last_error"]
    assert errors == {
        rebound["id"]: (
            f"ClientConnectorDNSError: Cannot connect to host partner.example:{port} "
            "ssl:default [partner.example resolves to 127.0.0.1, a loopback address]"
        ),
        literal["id"]: "Refused to call 127.0.0.1, a loopback address",
    }
