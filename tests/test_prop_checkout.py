"""Stripe prop checkout (``/v2/payments``, seed stripe-prop-checkout-flow.txt): the
official ``stripe`` SDK against a local fake Stripe (PaymentIntent create and retrieve
in Stripe's wire format), webhooks signed as Stripe signs them.

The challenges plugin is stood in for by :class:`RecordingChallenges` (the
ChallengeService contract: idempotent on ``external_ref``), which counts every
``provision`` call, so "exactly once" is checked at the caller, not hidden by the
callee's idempotency.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from money_support import payment_app
from sqlalchemy import select
from stripe_support import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, event, signature
from support import make_kernel, register_trader, staff_headers

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent, TradingAccount
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP_ID
from brokerkernel.plugins.challenges.service import (
    ChallengeService,
    PropError,
    TraderSpec,
    challenge_service,
)
from brokerkernel.plugins.prop_checkout.hotkey import ss58_encode, synthetic_hotkey
from brokerkernel.plugins.prop_checkout.models import PropPayment, PropPaymentEvent
from brokerkernel.plugins.prop_checkout.service import PLUGIN_NAME, PropCheckout

Client = Any
PROP_WEBHOOK_SECRET = "whsec_prop_checkout_7d1e"
PLAN_25K, PLAN_DEMO = "plan_crypto25k", "plan_demo10k"


def config(api_base: str) -> str:
    return f"""
[plugins.stripe]
secret_key = "{SECRET_KEY}"
webhook_secret = "{WEBHOOK_SECRET}"
publishable_key = "pk_test_51Broker"
api_base = "{api_base}"

[plugins.prop_checkout]
webhook_secret = "{PROP_WEBHOOK_SECRET}"

[plugins.prop_checkout.tiers.tier_25k]
plan = "crypto-25k"
amount_cents = 19900
market = "crypto"
asset_class = "crypto"
account_size = 25000

[plugins.prop_checkout.tiers.tier_demo]
plan = "demo-10k"
amount_cents = 0
market = "crypto"
asset_class = "crypto"
account_size = 10000
limit_per_customer = 1
"""


class RecordingChallenges(ChallengeService):
    """The ChallengeService contract, recorded: broker plans ``crypto-25k`` and
    ``demo-10k``; ``provision`` opens a real trading account (its login and uuid are
    what the checkout shows) once per ``external_ref``; ``failures`` makes the next
    calls raise 503."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.calls: list[tuple[str, TraderSpec, dict[str, Any]]] = []
        self.accounts: dict[str, dict[str, Any]] = {}
        self.failures = 0
        self.reads: list[list[str]] = []

    async def list_plans(
        self, *, tenant_id: str | None, catalog: bool = False, include_retired: bool = False
    ) -> list[dict[str, Any]]:
        assert (tenant_id, catalog) == (None, True)
        return [
            {"id": PLAN_25K, "code": "crypto-25k", "status": "active"},
            {"id": PLAN_DEMO, "code": "demo-10k", "status": "active"},
        ]

    async def provision(
        self,
        plan_id: str,
        trader: TraderSpec,
        *,
        tenant_id: str | None,
        source: str,
        external_ref: str | None = None,
        catalog: bool = False,
    ) -> dict[str, Any]:
        options = {
            "tenant_id": tenant_id,
            "source": source,
            "external_ref": external_ref,
            "catalog": catalog,
        }
        self.calls.append((plan_id, trader, options))
        if self.failures:
            self.failures -= 1
            raise PropError(503, "challenge engine unavailable")
        assert external_ref is not None
        if external_ref not in self.accounts:
            async with self.kernel.db.transaction() as session:
                login = await self.kernel.ids.next_login(session)
                session.add(
                    TradingAccount(
                        login=login,
                        customer_id=trader.customer_id,
                        group_id=DEFAULT_GROUP_ID,
                        currency="USD",
                        leverage=100,
                        created_at=datetime(2026, 11, 21, tzinfo=UTC),
                    )
                )
            number = len(self.accounts) + 1
            self.accounts[external_ref] = {
                "id": f"prop_{number:04d}",
                "login": login,
                "plan_id": plan_id,
                "status": "active",
            }
        return self.accounts[external_ref]

    async def get_accounts(
        self, account_ids: Sequence[str], *, tenant_id: str | None
    ) -> dict[str, dict[str, Any]]:
        assert tenant_id is None
        self.reads.append(list(account_ids))
        return {a["id"]: a for a in self.accounts.values() if a["id"] in account_ids}


@pytest.fixture
async def stripe_api(aiohttp_server: Any) -> tuple[FakeStripe, TestServer]:
    fake = FakeStripe()
    return fake, await aiohttp_server(fake.app)


@pytest.fixture
async def app(
    stripe_api: tuple[FakeStripe, TestServer],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> tuple[Client, Kernel, RecordingChallenges]:
    extra = config(str(stripe_api[1].make_url("")).rstrip("/"))
    client, kernel = await payment_app(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, extra
    )
    challenges = RecordingChallenges(kernel)
    kernel.extensions["challenges"] = challenges
    return client, kernel, challenges


CHECKOUT = {
    "tier_id": "tier_25k",
    "market": "crypto",
    "asset_class": "crypto",
    "account_size": 25000,
    "amount_cents": 19900,
    "currency": "usd",
}


async def checkout(client: Client, trader: Mapping[str, str], **changes: Any) -> Any:
    response = await client.post(
        "/v2/payments/checkout", json={**CHECKOUT, **changes}, headers=trader
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def deliver(
    client: Client, payload: str, header: str | None = "sign"
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = (
            signature(payload, secret=PROP_WEBHOOK_SECRET) if header == "sign" else header
        )
    response = await client.post("/v2/payments/webhook", data=payload, headers=headers)
    return response.status, await response.json()


async def accounts_when_provisioned(
    client: Client, trader: Mapping[str, str], count: int
) -> list[dict[str, Any]]:
    """Poll ``GET /v2/payments/prop-accounts`` as the seed's client does until
    ``count`` accounts are listed (bounded: the provisioner runs in the background)."""
    for _ in range(500):
        response = await client.get("/v2/payments/prop-accounts", headers=trader)
        assert response.status == 200, await response.text()
        listed: list[dict[str, Any]] = await response.json()
        if len(listed) >= count:
            return listed
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} prop accounts never appeared")


async def payment_row(kernel: Kernel, payment_id: str) -> PropPayment:
    async with kernel.db.read() as session:
        return await session.get_one(PropPayment, payment_id)


async def confirmed_events(kernel: Kernel) -> list[dict[str, Any]]:
    async with kernel.db.read() as session:
        rows = await session.scalars(
            select(OutboxEvent.payload)
            .where(OutboxEvent.type == "payment.confirmed")
            .order_by(OutboxEvent.seq)
        )
        return list(rows)


async def test_checkout_creates_a_payment_intent_through_the_sdk(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel, _ = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "buyer@test.io")
    headers = {**trader, "Idempotency-Key": "checkout-1"}

    first = await client.post("/v2/payments/checkout", json=CHECKOUT, headers=headers)
    body = await first.json()
    replay = await client.post("/v2/payments/checkout", json=CHECKOUT, headers=headers)

    assert first.status == 200
    assert re.fullmatch(r"pay_[0-9a-f]{32}", body["payment_id"])
    assert body == {
        "payment_id": body["payment_id"],
        "stripe_payment_intent_id": "pi_test_1",
        "client_secret": "pi_test_1_secret_abc",
        "amount_cents": 19900,
        "currency": "usd",
        "status": "requires_payment_method",
    }
    assert (replay.status, await replay.json()) == (200, body)
    assert replay.headers["X-Idempotent-Replay"] == "true"
    ((path, form, stripe_headers),) = fake.requests  # the replay never reached Stripe
    assert path == "/v1/payment_intents"
    assert form == {
        "amount": "19900",
        "currency": "usd",
        "automatic_payment_methods[enabled]": "true",
        "receipt_email": "buyer@test.io",
        "description": "Challenge tier_25k",
        "metadata[payment_id]": body["payment_id"],
        "metadata[tier_id]": "tier_25k",
        "metadata[customer]": form["metadata[customer]"],
    }
    assert stripe_headers["Idempotency-Key"] == body["payment_id"]
    row = await payment_row(kernel, body["payment_id"])
    assert (row.customer_id, row.tier_id, row.plan_id, row.status) == (
        form["metadata[customer]"],
        "tier_25k",
        PLAN_25K,
        "requires_payment_method",
    )
    assert (row.amount_cents, row.currency, row.account_size, row.market) == (
        19900,
        "usd",
        25000,
        "crypto",
    )
    assert "client_secret" not in PropPayment.__table__.columns


async def test_checkout_refuses_what_the_tier_does_not_sell(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, _, _ = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "haggler@test.io")

    async def post(path: str, body: dict[str, Any], headers: Mapping[str, str] = trader) -> Any:
        response = await client.post(path, json=body, headers=headers)
        return response.status, await response.json()

    mismatch = await post(
        "/v2/payments/checkout",
        {**CHECKOUT, "amount_cents": 100, "currency": "EUR", "account_size": 50000},
    )
    unknown = await post("/v2/payments/checkout", {**CHECKOUT, "tier_id": "tier_1m"})
    free_tier = await post(
        "/v2/payments/checkout",
        {**CHECKOUT, "tier_id": "tier_demo", "account_size": 10000, "amount_cents": 1},
    )
    invalid = await post("/v2/payments/checkout", {"tier_id": "tier_25k", "amount_cents": 1.5})
    paid_for_free = await post(
        "/v2/payments/free", {"tier_id": "tier_25k", "asset_class": "crypto", "account_size": 25000}
    )
    staff = await post("/v2/payments/checkout", CHECKOUT, await staff_headers(client))
    anonymous = await post("/v2/payments/checkout", CHECKOUT, {})

    def field(name: str, msg: str, type_: str) -> dict[str, Any]:
        return {"loc": ["body", name], "msg": msg, "type": type_}

    assert mismatch == (
        422,
        {
            "detail": [
                field("account_size", "must be 25000 for tier tier_25k", "tier_mismatch"),
                field("amount_cents", "must be 19900 for tier tier_25k", "tier_mismatch"),
                field("currency", "must be usd for tier tier_25k", "tier_mismatch"),
            ]
        },
    )
    assert unknown == (422, {"detail": [field("tier_id", "unknown tier", "tier")]})
    assert free_tier == (
        422,
        {
            "detail": [
                field("tier_id", "is a free tier: use POST /v2/payments/free", "free_tier"),
                field("amount_cents", "must be 0 for tier tier_demo", "tier_mismatch"),
            ]
        },
    )
    assert invalid[0] == 422
    assert [(e["loc"], e["type"]) for e in invalid[1]["detail"]] == [
        (["body", "market"], "required"),
        (["body", "asset_class"], "required"),
        (["body", "account_size"], "required"),
        (["body", "amount_cents"], "type"),
    ]
    assert paid_for_free == (
        422,
        {
            "detail": [
                field("tier_id", "is not a free tier: use POST /v2/payments/checkout", "paid_tier")
            ]
        },
    )
    assert staff == (403, {"detail": "Not a customer JWT"})
    assert anonymous == (401, {"detail": "Missing or invalid Authorization header"})
    assert fake.requests == []


async def test_paid_intent_provisions_one_account_despite_duplicate_and_late_events(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel, challenges = app
    fake, _ = stripe_api
    login, trader = await register_trader(client, "winner@test.io")
    _, other = await register_trader(client, "other@test.io")
    opened = await checkout(client, trader)
    intent_id = opened["stripe_payment_intent_id"]
    succeeded = copy.deepcopy(fake.succeed(intent_id))
    processing = {**succeeded, "status": "processing", "amount_received": 0}
    deliveries = [
        event("payment_intent.succeeded", succeeded, "evt_succeeded"),
        event("payment_intent.succeeded", succeeded, "evt_succeeded"),  # redelivered
        event("payment_intent.processing", processing, "evt_processing"),  # late
        event("payment_intent.succeeded", succeeded, "evt_succeeded_again"),  # new id
    ]

    answers = [await deliver(client, payload) for payload in deliveries]
    listed = await accounts_when_provisioned(client, trader, 1)
    assert await kernel.extensions[PLUGIN_NAME].provisioner.drain() == 0  # nothing left

    assert answers == [(200, {"received": True})] * 4
    ((plan_id, trader_spec, options),) = challenges.calls
    customer_id = trader_spec.customer_id
    assert (plan_id, trader_spec) == (
        PLAN_25K,
        TraderSpec(email="winner@test.io", customer_id=customer_id),
    )
    assert options == {
        "tenant_id": None,
        "source": "stripe",
        "external_ref": intent_id,
        "catalog": True,
    }
    account = challenges.accounts[intent_id]
    async with kernel.db.read() as session:
        uuid = await session.scalar(
            select(TradingAccount.id).where(TradingAccount.login == account["login"])
        )
        result = await session.execute(select(PropPaymentEvent.id, PropPaymentEvent.outcome))
        outcomes = {event_id: outcome for event_id, outcome in result}
    expected = {
        "id": "prop_0001",
        "tier_id": "tier_25k",
        "asset_class": "crypto",
        "account_size": 25000,
        "status": "active",
        "subaccount_id": account["login"],
        "subaccount_uuid": uuid,
        "synthetic_hotkey": synthetic_hotkey("prop_0001"),
        "stripe_payment_intent_id": intent_id,
    }
    assert account["login"] != login
    assert listed == [expected]
    one = await client.get("/v2/payments/prop-accounts/prop_0001", headers=trader)
    assert (one.status, await one.json()) == (200, expected)
    foreign = await client.get("/v2/payments/prop-accounts/prop_0001", headers=other)
    assert (foreign.status, await foreign.json()) == (404, {"detail": "Prop account not found"})
    others = await client.get("/v2/payments/prop-accounts", headers=other)
    assert await others.json() == []
    assert outcomes == {
        "evt_succeeded": "confirmed",
        "evt_processing": "stale",
        "evt_succeeded_again": "duplicate",
    }
    assert await confirmed_events(kernel) == [
        {
            "tenant_id": None,
            "account_id": None,
            "login": None,
            "plan_id": PLAN_25K,
            "phase": None,
            "customer_id": customer_id,
            "payment_id": opened["payment_id"],
            "amount_cents": 19900,
            "currency": "usd",
        }
    ]
    row = await payment_row(kernel, opened["payment_id"])
    assert (row.status, row.prop_account_id, row.login, row.attempts, row.last_error) == (
        "provisioned",
        "prop_0001",
        account["login"],
        1,
        None,
    )
    # provisioning re-read the intent from Stripe before creating the account
    assert [p for p, _, _ in fake.requests] == [
        "/v1/payment_intents",
        f"/v1/payment_intents/{intent_id}",
    ]


async def test_webhook_signatures_are_verified_with_the_endpoint_secret(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel, challenges = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "forger@test.io")
    opened = await checkout(client, trader)
    payload = event(
        "payment_intent.succeeded", fake.succeed(opened["stripe_payment_intent_id"]), "evt_x"
    )
    good = signature(payload, secret=PROP_WEBHOOK_SECRET)

    tampered = await deliver(client, payload.replace('"amount": 19900', '"amount": 1'), good)
    connector_secret = await deliver(client, payload, signature(payload))  # the other endpoint's
    missing = await deliver(client, payload, None)
    not_json = await deliver(client, "{", signature("{", secret=PROP_WEBHOOK_SECRET))

    no_match = "Stripe-Signature: No signatures found matching the expected signature for payload"
    assert tampered == connector_secret == (400, {"detail": no_match})
    assert missing == (400, {"detail": "missing Stripe-Signature header"})
    assert not_json == (400, {"detail": "not a Stripe event"})
    row = await payment_row(kernel, opened["payment_id"])
    assert row.status == "requires_payment_method"
    assert await confirmed_events(kernel) == []
    assert challenges.calls == []


@pytest.mark.parametrize(
    ("received", "currency", "reason"),
    [
        (100, "usd", "received 100 usd; the payment is 19900 usd"),
        (19900, "eur", "received 19900 eur; the payment is 19900 usd"),
    ],
)
async def test_a_payment_that_does_not_match_its_tier_is_flagged_without_an_account(
    app: tuple[Client, Kernel, RecordingChallenges],
    stripe_api: tuple[FakeStripe, TestServer],
    received: int,
    currency: str,
    reason: str,
) -> None:
    client, kernel, challenges = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "short@test.io")
    opened = await checkout(client, trader)
    paid = {**fake.succeed(opened["stripe_payment_intent_id"], received), "currency": currency}

    answer = await deliver(client, event("payment_intent.succeeded", paid, "evt_short"))
    await kernel.extensions[PLUGIN_NAME].provisioner.drain()

    row = await payment_row(kernel, opened["payment_id"])
    assert answer == (200, {"received": True})
    assert (row.status, row.flag_reason, row.paid_at) == ("flagged", reason, None)
    assert challenges.calls == []
    assert await confirmed_events(kernel) == []
    response = await client.get("/v2/payments/prop-accounts", headers=trader)
    assert await response.json() == []


async def test_provisioning_rechecks_the_intent_at_stripe(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    """A signed event whose intent Stripe itself reports differently (a leaked secret,
    a forged amount) is flagged at provisioning, before any account exists."""
    client, kernel, challenges = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "recheck@test.io")
    opened = await checkout(client, trader)
    intent_id = opened["stripe_payment_intent_id"]
    claimed = {**fake.intents[intent_id], "status": "succeeded", "amount_received": 19900}

    await deliver(client, event("payment_intent.succeeded", claimed, "evt_forged"))
    for _ in range(500):
        row = await payment_row(kernel, opened["payment_id"])
        if row.status != "succeeded":
            break
        await asyncio.sleep(0.01)

    assert (row.status, row.flag_reason) == (
        "flagged",
        "Stripe reports the intent requires_payment_method",
    )
    assert challenges.calls == []
    assert len(await confirmed_events(kernel)) == 1  # the event was signed: paid, then flagged


async def test_a_paid_payment_is_provisioned_by_the_next_process_to_start(
    app: tuple[Client, Kernel, RecordingChallenges],
    stripe_api: tuple[FakeStripe, TestServer],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
) -> None:
    """The webhook's transaction makes the payment durable: a process that dies
    before provisioning leaves it to whichever process starts next."""
    client, kernel, challenges = app
    fake, stripe_server = stripe_api
    _, trader = await register_trader(client, "restart@test.io")
    opened = await checkout(client, trader)
    await kernel.extensions[PLUGIN_NAME].provisioner.stop()  # the process "dies" here
    intent = fake.succeed(opened["stripe_payment_intent_id"])

    assert await deliver(client, event("payment_intent.succeeded", intent, "evt_r")) == (
        200,
        {"received": True},
    )
    assert (await payment_row(kernel, opened["payment_id"])).status == "succeeded"
    assert challenges.calls == []

    (tmp_path / "next").mkdir()
    extra = config(str(stripe_server.make_url("")).rstrip("/"))
    successor = make_kernel(
        tmp_path / "next", database_url, redis_url, market_data_dir, extra=extra
    )
    successor.extensions["challenges"] = challenges
    await successor.start()
    try:
        listed = await accounts_when_provisioned(client, trader, 1)
    finally:
        await successor.stop()

    assert [a["stripe_payment_intent_id"] for a in listed] == [intent["id"]]
    assert len(challenges.calls) == 1


async def test_a_failed_provisioning_is_retried_and_kept_visible(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel, challenges = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "retry@test.io")
    opened = await checkout(client, trader)
    challenges.failures = 1
    service: PropCheckout = kernel.extensions[PLUGIN_NAME]
    await service.provisioner.stop()  # drive it by hand

    intent = fake.succeed(opened["stripe_payment_intent_id"])
    await deliver(client, event("payment_intent.succeeded", intent, "evt_f"))
    first = await service.provisioner.provision(opened["payment_id"])
    failed = await payment_row(kernel, opened["payment_id"])
    too_early = await service.provisioner.drain()  # backing off
    async with kernel.db.transaction() as session:  # the back-off has passed
        row = await session.get_one(PropPayment, opened["payment_id"])
        row.lease_until = datetime(2026, 1, 1, tzinfo=UTC)
    second = await service.provisioner.drain()

    assert (first, too_early, second) == (None, 0, 1)
    assert (failed.status, failed.attempts, failed.last_error) == (
        "succeeded",
        1,
        "challenge engine unavailable",
    )
    done = await payment_row(kernel, opened["payment_id"])
    assert (done.status, done.attempts, done.last_error) == ("provisioned", 2, None)
    assert [options["external_ref"] for _, _, options in challenges.calls] == [intent["id"]] * 2


async def test_free_tier_is_provisioned_at_once_within_its_limit(
    app: tuple[Client, Kernel, RecordingChallenges], stripe_api: tuple[FakeStripe, TestServer]
) -> None:
    client, kernel, challenges = app
    fake, _ = stripe_api
    _, trader = await register_trader(client, "demo@test.io")
    body = {"tier_id": "tier_demo", "asset_class": "crypto", "account_size": 10000}

    first = await client.post("/v2/payments/free", json=body, headers=trader)
    created = await first.json()
    again = await client.post("/v2/payments/free", json=body, headers=trader)
    wrong = await client.post("/v2/payments/free", json={**body, "market": "forex"}, headers=trader)

    ((plan_id, _, options),) = challenges.calls
    account = next(iter(challenges.accounts.values()))
    assert first.status == 201
    assert created == {
        "id": account["id"],
        "tier_id": "tier_demo",
        "asset_class": "crypto",
        "account_size": 10000,
        "status": "active",
        "subaccount_id": account["login"],
        "subaccount_uuid": created["subaccount_uuid"],
        "synthetic_hotkey": synthetic_hotkey(account["id"]),
        "stripe_payment_intent_id": None,
    }
    assert (plan_id, options["source"], options["external_ref"][:4]) == (PLAN_DEMO, "free", "pay_")
    assert (again.status, await again.json()) == (
        409,
        {"detail": "Tier tier_demo allows 1 per customer"},
    )
    assert (wrong.status, (await wrong.json())["detail"]) == (
        422,
        [
            {
                "loc": ["body", "market"],
                "msg": "must be crypto for tier tier_demo",
                "type": "tier_mismatch",
            }
        ],
    )
    listed = await client.get("/v2/payments/prop-accounts", headers=trader)
    assert await listed.json() == [created]
    assert challenges.reads == [[account["id"]], [account["id"]]]  # the answer, the list
    assert fake.requests == []
    assert await confirmed_events(kernel) == []


def test_synthetic_hotkeys_are_generic_substrate_ss58_addresses() -> None:
    # Substrate's well-known dev account //Alice (sr25519 public key -> SS58 prefix 42)
    alice = bytes.fromhex("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
    assert ss58_encode(alice) == "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    assert synthetic_hotkey("prop_abc") == synthetic_hotkey("prop_abc")
    assert synthetic_hotkey("prop_abc") != synthetic_hotkey("prop_abd")
    assert re.fullmatch(r"5[1-9A-HJ-NP-Za-km-z]{47}", synthetic_hotkey("prop_abc"))


async def test_the_whole_flow_provisions_through_the_challenges_plugin(
    stripe_api: tuple[FakeStripe, TestServer],
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    """Seed flow end to end with the real challenges plugin: checkout, Stripe Elements
    (the fake marks the intent paid), the signed webhook delivered twice, polling."""
    fake, server = stripe_api
    extra = config(str(server.make_url("")).rstrip("/")) + "\n[plugins.challenges]\n"
    client, kernel = await payment_app(
        tmp_path, database_url, redis_url, market_data_dir, aiohttp_client, extra
    )
    challenges = challenge_service(kernel)
    plan = await challenges.create_plan(
        {
            "code": "crypto-25k",
            "name": "Crypto 25K",
            "account_size": 25000,
            "phases": [{"name": "phase_1", "rules": []}],
        },
        tenant_id=None,
    )
    _, trader = await register_trader(client, "e2e@test.io")
    opened = await checkout(client, trader)
    payload = event(
        "payment_intent.succeeded", fake.succeed(opened["stripe_payment_intent_id"]), "evt_e2e"
    )

    answers = [await deliver(client, payload) for _ in range(2)]
    (listed,) = await accounts_when_provisioned(client, trader, 1)

    state = await challenges.get_account(listed["id"], tenant_id=None)
    async with kernel.db.read() as session:
        rows = (await session.execute(select(OutboxEvent.type, OutboxEvent.payload))).all()
    events = [kind for kind, payload in rows if payload.get("account_id") == state["id"]]
    assert answers == [(200, {"received": True})] * 2
    assert listed == {
        "id": state["id"],
        "tier_id": "tier_25k",
        "asset_class": "crypto",
        "account_size": 25000,
        "status": "active",
        "subaccount_id": state["login"],
        "subaccount_uuid": listed["subaccount_uuid"],
        "synthetic_hotkey": synthetic_hotkey(state["id"]),
        "stripe_payment_intent_id": opened["stripe_payment_intent_id"],
    }
    assert state["id"].startswith("prop_")
    assert state["plan_id"] == plan["id"]
    ids = [state["id"], "prop_unknown"]
    assert await challenges.get_accounts(ids, tenant_id=None) == {state["id"]: state}
    assert await challenges.get_accounts(ids, tenant_id="acme") == {}
    assert events == ["account.created"]  # once, though the webhook came twice
    assert [kind for kind, _ in rows].count("payment.confirmed") == 1
