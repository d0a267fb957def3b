"""Selling challenges with Stripe: checkout, Stripe events, provisioning, the accounts.

Flow (seed ``stripe-prop-checkout-flow.txt``): :meth:`PropCheckout.checkout` creates a
PaymentIntent for a configured tier and stores the payment; Stripe's
``payment_intent.*`` events (:meth:`PropCheckout.apply_event`) move it forward only
(an older event delivered late changes nothing, a redelivered event id is found in
``prop_payment_events``); ``payment_intent.succeeded`` checks the amount and currency
paid against the stored payment and the tier, marks it ``succeeded`` and emits
``payment.confirmed`` in the same transaction, or flags it. The
:class:`Provisioner` then provisions every ``succeeded`` payment through the
challenges plugin (``ChallengeService.provision``, idempotent on the intent id) after
re-reading the intent from Stripe; it runs at startup and whenever a payment
succeeds, so a crash between payment and provisioning loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, or_, select, update

from brokerkernel.connectors.stripe.client import StripeGateway
from brokerkernel.kernel.descriptors import GatewayError
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.storage.models import Customer, TradingAccount
from brokerkernel.plugins.challenges.service import (
    ChallengeService,
    PropError,
    TraderSpec,
    challenge_service,
)
from brokerkernel.plugins.prop_checkout.hotkey import synthetic_hotkey
from brokerkernel.plugins.prop_checkout.models import (
    CANCELED,
    FLAGGED,
    PROVISIONED,
    SUCCEEDED,
    UNPAID_STATUSES,
    PropPayment,
    PropPaymentEvent,
)
from brokerkernel.plugins.prop_checkout.tiers import Tier, check_purchase, load_tiers

log = logging.getLogger(__name__)

PLUGIN_NAME: Final = "prop_checkout"
PAYMENT_CONFIRMED: Final = "payment.confirmed"
#: Statuses a free tier's purchases count against its ``limit_per_customer``.
LIVE_STATUSES: Final = (SUCCEEDED, PROVISIONED)
MAX_BACKOFF_S: Final = 3600.0


def wall_now() -> datetime:
    """Wall-clock UTC: provisioning leases pace work across processes in real time
    (the market clock may be a replayed day)."""
    return datetime.now(UTC)


class PropCheckout:
    """The prop checkout of one kernel (``kernel.extensions["prop_checkout"]``).

    ``config`` is the validated ``[plugins.prop_checkout]`` section. Every refusal is
    a :class:`~brokerkernel.plugins.challenges.service.PropError` (HTTP status and
    detail); Stripe failures are GatewayError.
    """

    def __init__(self, kernel: Any, config: Mapping[str, Any]) -> None:
        self.kernel = kernel
        self.db = kernel.db
        self.clock = kernel.clock
        self.gateway_name: str = config["gateway"]
        self.webhook_secret: str = config["webhook_secret"]
        self.tiers: dict[str, Tier] = load_tiers(config["tiers"])
        self.provisioner = Provisioner(
            self, config["poll_interval_s"], config["lease_s"], config["retry_interval_s"]
        )

    # --- collaborators ------------------------------------------------------------------

    def stripe(self) -> StripeGateway:
        """The enabled Stripe connector named by ``gateway`` (its API key and client)."""
        enabled = self.kernel.payments.gateways.get(self.gateway_name)
        if enabled is None or not isinstance(enabled.client, StripeGateway):
            raise PropError(
                503, f"Payment gateway {self.gateway_name} is not an enabled Stripe connector"
            )
        return enabled.client

    def challenges(self) -> ChallengeService:
        try:
            return challenge_service(self.kernel)
        except RuntimeError as exc:
            raise PropError(503, "The challenges plugin is not enabled") from exc

    async def email(self, customer_id: str) -> str | None:
        """The customer's email (None for an unknown customer)."""
        async with self.db.read() as session:
            email: str | None = await session.scalar(
                select(Customer.email).where(Customer.id == customer_id)
            )
        return email

    async def _plan_id(self, tier: Tier) -> str:
        """The id of the tier's broker-owned plan on sale; PropError 409 when none."""
        plans = await self.challenges().list_plans(tenant_id=None, catalog=True)
        for plan in plans:
            if plan["code"] == tier.plan and plan.get("status", "active") == "active":
                return str(plan["id"])
        raise PropError(409, f"Tier {tier.id} is not on sale (plan {tier.plan} is not available)")

    # --- purchases ----------------------------------------------------------------------

    async def checkout(self, customer_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """A PaymentIntent for the tier of ``data`` (the checkout body, validated):
        ``{payment_id, stripe_payment_intent_id, client_secret, amount_cents, currency,
        status}``. PropError 422 when the body differs from the tier, 409 when the
        tier's plan is not on sale, 503 when Stripe or the challenges plugin is not
        enabled; GatewayError when Stripe refuses."""
        tier = check_purchase(self.tiers, data, free=False)
        plan_id = await self._plan_id(tier)
        payment_id = f"pay_{uuid.uuid4().hex}"
        email = await self.email(customer_id)
        intent = await self.stripe().create_intent(
            {
                "amount": tier.amount_cents,
                "currency": tier.currency,
                "automatic_payment_methods": {"enabled": True},
                "receipt_email": email,
                "description": f"Challenge {tier.id}",
                "metadata": {"payment_id": payment_id, "tier_id": tier.id, "customer": customer_id},
            },
            payment_id,
        )
        now = self.clock.now()
        async with self.db.transaction() as session:
            session.add(
                self._payment(
                    payment_id,
                    customer_id,
                    tier,
                    plan_id,
                    data,
                    now,
                    stripe_payment_intent_id=intent["id"],
                    status=intent["status"],
                )
            )
        return {
            "payment_id": payment_id,
            "stripe_payment_intent_id": intent["id"],
            "client_secret": intent["client_secret"],
            "amount_cents": tier.amount_cents,
            "currency": tier.currency,
            "status": intent["status"],
        }

    async def free(
        self, customer_id: str, data: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """A no-charge account of a free tier, provisioned at once: the payment id and
        the prop account (:meth:`account`), None when provisioning failed for now (the
        payment is ``succeeded`` and the provisioner retries it). PropError 422 as
        :meth:`checkout`, 409 when the tier's ``limit_per_customer`` is reached."""
        tier = check_purchase(self.tiers, data, free=True)
        plan_id = await self._plan_id(tier)
        payment_id = f"pay_{uuid.uuid4().hex}"
        now = self.clock.now()
        async with self.db.transaction() as session:
            if tier.limit_per_customer is not None:
                await session.get(Customer, customer_id, with_for_update=True)  # one at a time
                taken = await session.scalar(
                    select(func.count())
                    .select_from(PropPayment)
                    .where(
                        PropPayment.customer_id == customer_id,
                        PropPayment.tier_id == tier.id,
                        PropPayment.status.in_(LIVE_STATUSES),
                    )
                )
                if (taken or 0) >= tier.limit_per_customer:
                    raise PropError(
                        409, f"Tier {tier.id} allows {tier.limit_per_customer} per customer"
                    )
            session.add(
                self._payment(
                    payment_id, customer_id, tier, plan_id, data, now, status=SUCCEEDED, paid_at=now
                )
            )
        provisioned = await self.provisioner.provision(payment_id)
        if provisioned is None:
            return payment_id, None
        (view,) = await self._views([provisioned])
        return payment_id, view

    def _payment(
        self,
        payment_id: str,
        customer_id: str,
        tier: Tier,
        plan_id: str,
        data: Mapping[str, Any],
        now: datetime,
        **columns: Any,
    ) -> PropPayment:
        """A new payment row of ``tier`` (``columns``: status and the intent id)."""
        return PropPayment(
            id=payment_id,
            customer_id=customer_id,
            tier_id=tier.id,
            plan_id=plan_id,
            market=data.get("market") or tier.market,
            asset_class=tier.asset_class,
            account_size=tier.account_size,
            amount_cents=tier.amount_cents,
            currency=tier.currency,
            attempts=0,
            created_at=now,
            updated_at=now,
            **columns,
        )

    # --- Stripe events ------------------------------------------------------------------

    async def apply_event(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Verify and apply one Stripe webhook delivery; the outcome: ``confirmed``,
        ``flagged``, ``updated``, ``stale`` (older than what is stored), ``duplicate``
        (event id seen, or the intent already succeeded), ``unknown`` (not an intent of
        a checkout) or ``ignored`` (another event type). CallbackRejected (400) when the
        ``Stripe-Signature`` does not verify with ``webhook_secret``."""
        event = self.stripe().construct_event(body, headers, self.webhook_secret)
        kind, intent = event["type"], event["data"]["object"]
        if not kind.startswith("payment_intent.") or intent.get("object") != "payment_intent":
            return "ignored"
        now = self.clock.now()
        async with self.db.transaction() as session:
            payment = await session.scalar(
                select(PropPayment)
                .where(PropPayment.stripe_payment_intent_id == str(intent.get("id")))
                .with_for_update()
            )
            if payment is None:
                return "unknown"
            if await session.get(PropPaymentEvent, str(event["id"])) is not None:
                return "duplicate"
            outcome = self._transition(session, payment, intent, now)
            session.add(
                PropPaymentEvent(
                    id=str(event["id"]),
                    payment_id=payment.id,
                    type=kind,
                    outcome=outcome,
                    received_at=now,
                )
            )
        if outcome == "flagged":
            log.warning("prop payment %s flagged: %s", payment.id, payment.flag_reason)
        if outcome == "confirmed":
            self.provisioner.wake()
        return outcome

    def _transition(
        self, session: Any, payment: PropPayment, intent: Mapping[str, Any], now: datetime
    ) -> str:
        """Move ``payment`` forward to the intent's status (never back)."""
        status = str(intent.get("status"))
        if payment.status not in UNPAID_STATUSES:
            return "duplicate" if status == SUCCEEDED else "stale"
        if status == SUCCEEDED:
            problem = self.payment_problem(payment, intent)
            if problem is not None:
                payment.status, payment.flag_reason, payment.updated_at = FLAGGED, problem, now
                return "flagged"
            payment.status, payment.paid_at, payment.updated_at = SUCCEEDED, now, now
            record_event(
                session,
                PAYMENT_CONFIRMED,
                {
                    "tenant_id": None,
                    "account_id": None,
                    "login": None,
                    "plan_id": payment.plan_id,
                    "phase": None,
                    "customer_id": payment.customer_id,
                    "payment_id": payment.id,
                    "amount_cents": payment.amount_cents,
                    "currency": payment.currency,
                },
                now,
            )
            return "confirmed"
        if status == CANCELED:
            payment.status, payment.updated_at = CANCELED, now
            return "updated"
        if UNPAID_STATUSES.get(status, -1) > UNPAID_STATUSES[payment.status]:
            payment.status, payment.updated_at = status, now
            return "updated"
        return "stale"

    def payment_problem(self, payment: PropPayment, intent: Mapping[str, Any]) -> str | None:
        """Why a succeeded ``intent`` does not pay for ``payment`` (amount received or
        currency differ from the stored payment or from its tier), None when it does."""
        received, currency = intent.get("amount_received"), str(intent.get("currency"))
        tier = self.tiers.get(payment.tier_id)
        if tier is None:
            return f"tier {payment.tier_id} is no longer configured"
        for what, cents, code in (
            ("payment", payment.amount_cents, payment.currency),
            (f"tier {tier.id}", tier.amount_cents, tier.currency),
        ):
            if received != cents or currency != code:
                return f"received {received} {currency}; the {what} is {cents} {code}"
        return None

    # --- accounts -----------------------------------------------------------------------

    async def accounts(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's provisioned prop accounts, newest first (:meth:`account` shape)."""
        async with self.db.read() as session:
            payments = list(
                await session.scalars(
                    select(PropPayment)
                    .where(
                        PropPayment.customer_id == customer_id,
                        PropPayment.status == PROVISIONED,
                    )
                    .order_by(PropPayment.provisioned_at.desc(), PropPayment.id)
                )
            )
        return await self._views(payments)

    async def account(self, customer_id: str, account_id: str) -> dict[str, Any]:
        """One of the customer's prop accounts: ``id`` ("prop_..."), ``tier_id``,
        ``asset_class``, ``account_size``, ``status`` (the challenge account's),
        ``subaccount_id`` (its login), ``subaccount_uuid`` (its trading account's
        id), ``synthetic_hotkey`` (:mod:`.hotkey`) and ``stripe_payment_intent_id``
        (None for free tiers). PropError 404 for another customer's or unknown id."""
        async with self.db.read() as session:
            payment = await session.scalar(
                select(PropPayment).where(
                    PropPayment.prop_account_id == account_id,
                    PropPayment.customer_id == customer_id,
                )
            )
        if payment is None:
            raise PropError(404, "Prop account not found")
        (view,) = await self._views([payment])
        return view

    async def _views(self, payments: list[PropPayment]) -> list[dict[str, Any]]:
        if not payments:
            return []
        async with self.db.read() as session:
            result = await session.execute(
                select(TradingAccount.login, TradingAccount.id).where(
                    TradingAccount.login.in_([p.login for p in payments])
                )
            )
            uuids = {login: uid for login, uid in result}
        states = await self.challenges().get_accounts(
            [str(p.prop_account_id) for p in payments], tenant_id=None
        )
        views = []
        for payment in payments:
            assert payment.prop_account_id is not None and payment.login is not None
            views.append(
                {
                    "id": payment.prop_account_id,
                    "tier_id": payment.tier_id,
                    "asset_class": payment.asset_class,
                    "account_size": payment.account_size,
                    "status": states[payment.prop_account_id]["status"],
                    "subaccount_id": payment.login,
                    "subaccount_uuid": uuids.get(payment.login),
                    "synthetic_hotkey": synthetic_hotkey(payment.prop_account_id),
                    "stripe_payment_intent_id": payment.stripe_payment_intent_id,
                }
            )
        return views


class Provisioner:
    """Provisions paid payments (``succeeded``) into prop accounts, exactly once.

    A worker task drains due payments at start, on :meth:`wake` and every
    ``poll_interval_s``; each payment is claimed with a lease of ``lease_s`` (so two
    processes never provision it at once), its intent re-read from Stripe (still
    succeeded, same amount and currency, else flagged), then provisioned with the
    intent id as ``external_ref`` (a retry after a crash gets the same account). A
    failure is kept in ``last_error`` and retried after ``retry_interval_s`` doubling
    per attempt (at most an hour).
    """

    def __init__(
        self,
        checkout: PropCheckout,
        poll_interval_s: float,
        lease_s: float,
        retry_interval_s: float,
    ) -> None:
        self.checkout = checkout
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s
        self.retry_interval_s = retry_interval_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="prop-checkout-provisioner")

    async def stop(self) -> None:
        """Finish the payment in hand and stop."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task, self._stopping = None, False

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.drain()
            except Exception:
                log.exception("prop checkout provisioner failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def drain(self, batch: int = 100) -> int:
        """Provision every due payment, ``batch`` at a time; how many were provisioned.
        (Each one handled leaves the due set: provisioned, flagged or leased.)"""
        done = 0
        while not self._stopping:
            async with self.checkout.db.read() as session:
                due = list(
                    await session.scalars(
                        select(PropPayment.id)
                        .where(PropPayment.status == SUCCEEDED, _lease_free(wall_now()))
                        .order_by(PropPayment.paid_at, PropPayment.id)
                        .limit(batch)
                    )
                )
            for payment_id in due:
                if self._stopping:
                    break
                done += await self.provision(payment_id) is not None
            if len(due) < batch:
                break
        return done

    async def provision(self, payment_id: str) -> PropPayment | None:
        """Claim and provision one ``succeeded`` payment: the payment as this call
        provisioned it (its prop account id and login set), None when another worker
        holds it, it failed or it was flagged."""
        payment = await self._claim(payment_id)
        if payment is None:
            return None
        try:
            if payment.stripe_payment_intent_id is not None:
                intent = await self.checkout.stripe().retrieve_intent(
                    payment.stripe_payment_intent_id
                )
                problem = (
                    f"Stripe reports the intent {intent.get('status')}"
                    if intent.get("status") != SUCCEEDED
                    else self.checkout.payment_problem(payment, intent)
                )
                if problem is not None:
                    await self._finish(payment_id, status=FLAGGED, flag_reason=problem)
                    log.warning("prop payment %s flagged: %s", payment_id, problem)
                    return None
            email = await self.checkout.email(payment.customer_id)
            account = await self.checkout.challenges().provision(
                payment.plan_id,
                TraderSpec(email=str(email), customer_id=payment.customer_id),
                tenant_id=None,
                source="stripe" if payment.stripe_payment_intent_id else "free",
                external_ref=payment.stripe_payment_intent_id or payment.id,
                catalog=True,
            )
        except (PropError, GatewayError) as exc:
            await self._failed(payment, str(getattr(exc, "detail", exc)))
            return None
        except Exception as exc:
            log.exception("provisioning prop payment %s failed", payment_id)
            await self._failed(payment, f"{type(exc).__name__}: {exc}")
            return None
        provisioned = {
            "status": PROVISIONED,
            "prop_account_id": str(account["id"]),
            "login": int(account["login"]),
            "provisioned_at": self.checkout.clock.now(),
            "last_error": None,
        }
        await self._finish(payment_id, **provisioned)
        for column, value in provisioned.items():  # the detached row, as now stored
            setattr(payment, column, value)
        return payment

    async def _claim(self, payment_id: str) -> PropPayment | None:
        now = wall_now()
        async with self.checkout.db.transaction() as session:
            claimed = await session.execute(
                update(PropPayment)
                .where(
                    PropPayment.id == payment_id, PropPayment.status == SUCCEEDED, _lease_free(now)
                )
                .values(
                    lease_until=now + timedelta(seconds=self.lease_s),
                    attempts=PropPayment.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                return None
            payment: PropPayment | None = await session.get(PropPayment, payment_id)
        return payment

    async def _failed(self, payment: PropPayment, error: str) -> None:
        delay = min(self.retry_interval_s * 2 ** max(payment.attempts - 1, 0), MAX_BACKOFF_S)
        log.warning(
            "prop payment %s not provisioned (attempt %d): %s", payment.id, payment.attempts, error
        )
        await self._finish(
            payment.id, lease_until=wall_now() + timedelta(seconds=delay), last_error=error
        )

    async def _finish(self, payment_id: str, **values: Any) -> None:
        async with self.checkout.db.transaction() as session:
            values.setdefault("lease_until", None)
            await session.execute(
                update(PropPayment)
                .where(PropPayment.id == payment_id, PropPayment.status == SUCCEEDED)
                .values(updated_at=self.checkout.clock.now(), **values)
            )


def _lease_free(now: datetime) -> Any:
    return or_(PropPayment.lease_until.is_(None), PropPayment.lease_until < now)
