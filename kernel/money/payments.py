"""Payment routing, cashier sessions and provider callbacks (seed sections 8 and 9).

Gateways are plugins (``broker_register_payment_gateways``): a gateway opens a
deposit or withdrawal session with its provider and turns the provider's callbacks
into provider-agnostic :class:`~brokerkernel.kernel.descriptors.PaymentUpdate`
values. This service owns everything else: which gateway serves a country and
direction (per-country routes, else the configured default gateway), the PENDING
transaction every session starts with (``source = 'cashier'``, ``cashier_id`` the
order id the provider echoes back), and applying updates to transactions.

Applying an update is idempotent: one that repeats the transaction's status changes
nothing, APPROVED moves the money once (the transaction row is locked, and the ledger
key ``deposit:<id>`` is unique), and an update that contradicts a final status is
recorded as a conflict without changing anything. Every update received is kept in
``payment_callbacks`` with its outcome.

Updates are group-committed (:class:`~brokerkernel.kernel.money.batching.LedgerBatcher`,
one per service): concurrent updates, a callback storm, share one unit of work and
one commit. Each is still all or nothing: its transaction row change, ledger and
audit rows, outbox event and callback log commit together or, should it fail, not
at all (the batch is then retried update by update). Chargebacks and refunds, which
lock the account themselves, are committed one by one.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import (
    CashierRequest,
    CashierSession,
    Gateway,
    GatewayError,
    PaymentGateway,
    PaymentUpdate,
)
from brokerkernel.kernel.money.batching import LedgerBatcher, Posting
from brokerkernel.kernel.money.models import PaymentCallback, PaymentRoute
from brokerkernel.kernel.money.transactions import (
    CHARGEBACK,
    OPEN_STATUSES,
    STATUSES,
    Actor,
    TransactionRequest,
    TransactionService,
)
from brokerkernel.kernel.plugins import installed_entry_points
from brokerkernel.kernel.pricing import ConversionUnavailable
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Customer, TradingAccount, Transaction
from brokerkernel.kernel.trading import ledger
from brokerkernel.kernel.trading.instruments import field_error
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.service import TradingError

log = logging.getLogger(__name__)

DIRECTIONS: Final = ("deposit", "withdrawal")
#: Statuses a payment update may carry: a transaction status, or CHARGEBACK / REFUND
#: of an approved deposit.
UPDATE_STATUSES: Final = (*(s for s in STATUSES if s != "DELETED"), CHARGEBACK, "REFUND")


@dataclass(frozen=True, slots=True)
class EnabledGateway:
    """A registered gateway and the client its factory built."""

    descriptor: PaymentGateway
    client: Gateway


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A cashier session opened for ``transaction`` (PENDING) at ``gateway``."""

    transaction: Transaction
    gateway: EnabledGateway
    session: CashierSession


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """What applying one update did: ``applied``, ``duplicate``, ``conflict`` (nothing
    changed; ``detail`` says why) or ``unknown`` (no such cashier_id)."""

    outcome: str
    transaction: Transaction | None
    detail: str = ""


class PaymentService:
    """Routes countries to gateways, opens cashier sessions, applies provider updates."""

    def __init__(
        self,
        db: Database,
        clock: MarketClock,
        transactions: TransactionService,
        gateways: Mapping[str, EnabledGateway],
        default_gateway: str,
        plugins_enabled: Collection[str] = (),
    ) -> None:
        self.db = db
        self.clock = clock
        self.transactions = transactions
        self.gateways = dict(gateways)
        self.default_gateway = default_gateway
        self.plugins_enabled = frozenset(plugins_enabled)
        self.batcher = LedgerBatcher(db)

    def available(self) -> list[tuple[PaymentGateway, bool]]:
        """Every known gateway and whether it is enabled (seed section 9): the enabled
        ones, then those of installed plugins not enabled in ``plugins.toml``."""
        known = [(enabled.descriptor, True) for enabled in self.gateways.values()]
        for name, entry_point in sorted(installed_entry_points().items()):
            if name in self.plugins_enabled:
                continue
            try:
                hook = getattr(entry_point.load(), "broker_register_payment_gateways", None)
                descriptors = list(hook()) if hook is not None else []
            except Exception:
                log.exception("plugin %s cannot list its payment gateways", name)
                continue
            known += [
                (d, False)
                for d in descriptors
                if isinstance(d, PaymentGateway) and d.name not in self.gateways
            ]
        return sorted(known, key=lambda item: item[0].name)

    def gateway(self, name: str) -> EnabledGateway:
        """The enabled gateway ``name``; TradingError 503 when it is not enabled."""
        found = self.gateways.get(name)
        if found is None:
            raise TradingError(503, f"Payment gateway {name} is not enabled")
        return found

    # --- routing (seed section 9) -------------------------------------------------

    async def list_routes(self) -> list[PaymentRoute]:
        async with self.db.read() as session:
            return list(
                (await session.scalars(select(PaymentRoute).order_by(PaymentRoute.country))).all()
            )

    async def upsert_route(
        self,
        country: str,
        deposit_gateway: str,
        withdrawal_gateway: str,
        is_active: bool = True,
        note: str | None = None,
    ) -> tuple[PaymentRoute, bool]:
        """Create or replace the route of ``country``; returns ``(route, created)``.

        Raises TradingError 422 naming each gateway that is not enabled or cannot
        process that direction.
        """
        errors = []
        for field, name, direction in (
            ("deposit_gateway", deposit_gateway, "deposit"),
            ("withdrawal_gateway", withdrawal_gateway, "withdrawal"),
        ):
            enabled = self.gateways.get(name)
            if enabled is None:
                errors.append(
                    field_error(
                        field,
                        f"gateway '{name}' is not enabled "
                        f"(enabled: {', '.join(sorted(self.gateways)) or 'none'})",
                        "gateway",
                    )
                )
            elif direction not in enabled.descriptor.directions:
                errors.append(field_error(field, f"{name} cannot process {direction}s", "gateway"))
        if errors:
            raise TradingError(422, errors)
        now = self.clock.now()
        async with self.db.transaction() as session:
            route = await session.get(PaymentRoute, country, with_for_update=True)
            created = route is None
            if route is None:
                route = PaymentRoute(country=country)
                session.add(route)
            route.deposit_gateway = deposit_gateway
            route.withdrawal_gateway = withdrawal_gateway
            route.is_active = is_active
            route.note = note
            route.updated_at = now
        return route, created

    async def delete_route(self, country: str) -> None:
        """Remove the route: the country reverts to the default gateway (404 if none)."""
        async with self.db.transaction() as session:
            route = await session.get(PaymentRoute, country, with_for_update=True)
            if route is None:
                raise TradingError(404, f"No payment routing for {country}")
            await session.delete(route)

    async def resolve(self, country: str | None, direction: str) -> EnabledGateway:
        """The gateway for a customer's country and direction: an active route to an
        enabled gateway, else the default gateway. TradingError 503 when neither is
        enabled for that direction."""
        candidates = []
        if country:
            async with self.db.read() as session:
                route = await session.get(PaymentRoute, country)
            if route is not None and route.is_active:
                candidates.append(
                    route.deposit_gateway if direction == "deposit" else route.withdrawal_gateway
                )
        candidates.append(self.default_gateway)
        for name in candidates:
            enabled = self.gateways.get(name)
            if enabled is not None and direction in enabled.descriptor.directions:
                return enabled
        raise TradingError(
            503, f"No payment gateway is available for {direction}s from {country or 'here'}"
        )

    # --- cashier sessions ---------------------------------------------------------

    async def open_session(
        self,
        customer_id: str,
        login: int,
        direction: str,
        amount: Decimal,
        currency: str,
        gateway: str | None = None,
        locale: str = "en",
    ) -> OpenedSession:
        """Create the PENDING transaction and open the provider's cashier session.

        ``gateway`` None routes by the customer's country. Frozen customers cannot
        deposit (seed section 25); a withdrawal must fit the free-margin guard now.
        Raises TradingError 403 (frozen), 404 (not the customer's account), 409, 422
        (amount, currency, withdrawable amount), 502 (the provider failed; the
        transaction is then DECLINE), 503 (no gateway).
        """
        async with self.db.read() as session:
            customer = await session.get(Customer, customer_id)
            account = await session.get(TradingAccount, login)
        if customer is None or account is None or account.customer_id != customer.id:
            raise TradingError(404, "Account not found")
        if direction == "deposit" and customer.compliance_status == "frozen":
            raise TradingError(403, "Account is frozen: deposits are not allowed")
        if gateway is None:
            enabled = await self.resolve(customer.country, direction)
        else:
            enabled = self.gateway(gateway)
            if direction not in enabled.descriptor.directions:
                raise TradingError(422, f"{enabled.descriptor.name} cannot process {direction}s")
        if direction == "withdrawal":
            await self._check_withdrawable(login, amount, currency)
        name = enabled.descriptor.name
        tx, _created = await self.transactions.create(
            TransactionRequest(
                type="DEPOSIT" if direction == "deposit" else "WITHDRAWAL",
                login=login,
                amount=amount,
                currency=currency,
                source="cashier",
                gate_name=name,
                cashier_id=uuid.uuid4().hex,
            ),
            Actor(customer.id),
        )
        assert tx.cashier_id is not None
        try:
            opened = await enabled.client.create_session(
                CashierRequest(
                    cashier_id=tx.cashier_id,
                    direction=direction,
                    amount=amount,
                    currency=currency,
                    login=login,
                    customer_id=customer.id,
                    email=customer.email,
                    first_name=customer.first_name,
                    last_name=customer.last_name,
                    country=customer.country,
                    phone=customer.phone,
                    locale=locale,
                )
            )
        except GatewayError as exc:
            await self._decline(tx.id, f"{name} session failed: {exc}")
            raise TradingError(502, f"{name}: {exc}") from exc
        if opened.reference is not None:
            async with self.db.transaction() as session:
                row = await session.get_one(Transaction, tx.id, with_for_update=True)
                row.gateway_reference = opened.reference
                tx = row
        return OpenedSession(tx, enabled, opened)

    async def _check_withdrawable(self, login: int, amount: Decimal, currency: str) -> None:
        state = await self.transactions.trading.account_state(login)
        if state is None:
            raise TradingError(404, "Account not found")
        try:
            wanted = self.transactions.fx.convert(amount, currency, state["currency"])
        except ConversionUnavailable:
            return  # creating the transaction reports the unsupported currency
        if wanted > state["max_withdrawable"]:
            raise TradingError(
                422,
                [
                    field_error(
                        "amount",
                        f"exceeds the withdrawable amount {state['max_withdrawable']} "
                        f"{state['currency']}",
                        "maximum",
                    )
                ],
            )

    async def _decline(self, tx_id: str, reason: str) -> None:
        """Mark a transaction whose provider call failed DECLINE (nothing was posted)."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            tx = await session.get_one(Transaction, tx_id, with_for_update=True)
            self.transactions.set_status(tx, "DECLINE", now)
            tx.reason = reason[:2000]
            self.transactions.event(session, "transaction.updated", tx, now)

    # --- refunds -------------------------------------------------------------------

    async def refund(self, tx_id: str, amount: Decimal | None, actor: Actor) -> Transaction:
        """Refund an approved deposit through the gateway that took it (all that is
        left when ``amount`` is None). The refund is a WITHDRAWAL, PROCESSING until the
        provider answers, APPROVED (money out) once it accepts the refund.

        Raises TradingError 404; 409 not an approved deposit of an enabled gateway
        with a provider reference; 422 amount or free-margin guard; 502 the provider
        failed (the refund is then DECLINE).
        """
        pnl = await self.transactions.pnl_of(tx_id)
        now = self.clock.now()
        async with self.db.transaction() as session:
            original = await session.get(Transaction, tx_id, with_for_update=True)
            if original is None:
                raise TradingError(404, "Transaction not found")
            if original.type != "DEPOSIT" or original.status != "APPROVED":
                raise TradingError(409, "Only approved DEPOSIT transactions can be refunded")
            enabled = self.gateways.get(original.gate_name or "")
            if enabled is None or original.gateway_reference is None:
                raise TradingError(
                    409, "The deposit was not paid through an enabled gateway that can refund it"
                )
            left = await self.transactions.refundable_in(session, original)
            amount = left if amount is None else amount
            if amount <= 0 or amount > left:
                raise TradingError(
                    422, [field_error("amount", f"must be > 0 and at most {left}", "maximum")]
                )
            account = await ledger.lock_account(session, original.login)
            assert account is not None
            refund = self.transactions.refund_row(
                original, amount, account.currency, f"refund-{uuid.uuid4().hex}", actor, now
            )
            self.transactions.guard(account, pnl, abs(refund.account_amount), on_credit=False)
            session.add(refund)
            reference = original.gateway_reference
            currency = original.currency
        assert refund.cashier_id is not None
        try:
            update = await enabled.client.refund(reference, amount, currency, refund.cashier_id)
        except GatewayError as exc:
            await self._decline(refund.id, f"refund failed: {exc}")
            raise TradingError(502, f"{enabled.descriptor.name}: {exc}") from exc
        outcome = await self.apply(
            replace(update, cashier_id=refund.cashier_id), enabled.descriptor.name
        )
        assert outcome.transaction is not None
        return outcome.transaction

    # --- provider updates ------------------------------------------------------------

    async def apply(self, update: PaymentUpdate, gateway: str) -> CallbackOutcome:
        """Apply one provider update to its transaction (found by ``cashier_id``) and
        log it, in a unit of work shared with concurrent updates (chargebacks and
        refunds: of its own; see the module docstring); idempotent. ``gateway`` names
        the source. Raises what the database raised (nothing of this update is then
        committed)."""
        now = self.clock.now()
        result: list[tuple[str, str, Transaction | None]] = []  # the last run's

        async def claim(session: AsyncSession) -> Posting | None:
            tx = await session.scalar(
                select(Transaction)
                .where(Transaction.cashier_id == update.cashier_id)
                .with_for_update()
            )
            posting = None
            if tx is None:
                outcome, detail = "unknown", "Transaction not found"
            else:
                outcome, detail, posting = await self._apply_in(session, tx, update, gateway, now)
            session.add(
                PaymentCallback(
                    gateway=gateway,
                    cashier_id=update.cashier_id,
                    status=update.status,
                    outcome=outcome,
                    transaction_id=None if tx is None else tx.id,
                    payload=json.loads(json.dumps(update.gateway_payload, default=str)),
                    received_at=now,
                )
            )
            result[:] = [(outcome, detail, tx)]
            return posting

        if update.status in (CHARGEBACK, "REFUND"):
            # These lock and post to the account themselves: a unit of work of their
            # own, so that a batch never holds an account while waiting for a row.
            async with self.db.transaction() as session:
                await claim(session)
        else:
            await self.batcher.claim(claim)
        ((outcome, detail, tx),) = result
        if outcome in ("conflict", "unknown"):
            log.warning(
                "payment update %s %s from %s: %s (%s)",
                update.cashier_id,
                update.status,
                gateway,
                outcome,
                detail,
            )
        return CallbackOutcome(outcome, tx, detail)

    async def _apply_in(
        self,
        session: AsyncSession,
        tx: Transaction,
        update: PaymentUpdate,
        gateway: str,
        now: datetime,
    ) -> tuple[str, str, Posting | None]:
        """``(outcome, detail, posting)``: an APPROVED update's posting is left for
        the batch to write; other updates post (if at all) themselves."""
        actor = Actor(f"gateway:{gateway}"[:36])
        status = update.status
        if status in (CHARGEBACK, "REFUND"):
            if tx.type != "DEPOSIT" or tx.status != "APPROVED":
                return "conflict", f"{status} of a {tx.status} {tx.type}", None
            if status == CHARGEBACK:
                if await self._exists(session, original=tx.id, type_=CHARGEBACK):
                    return "duplicate", "already charged back", None
                await self.transactions.chargeback_in(
                    session, tx, f"Chargeback reported by {gateway}", actor, "system", now
                )
                return "applied", "", None
            refund_id = f"{tx.cashier_id}:refund:{update.reference or 'full'}"[:128]
            if await self._exists(session, cashier_id=refund_id):
                return "duplicate", "refund already recorded", None
            left = await self.transactions.refundable_in(session, tx)
            amount = left if update.amount is None else update.amount
            if amount <= 0 or amount > left:
                return "conflict", f"refund of {amount} exceeds the {left} left", None
            await self.transactions.refund_in(
                session, tx, amount, refund_id, actor, now, update.reference
            )
            return "applied", "", None
        if status == tx.status:
            return "duplicate", "", None
        if tx.status not in OPEN_STATUSES:
            return "conflict", f"transaction is {tx.status}", None
        if update.currency is not None and update.currency != tx.currency:
            return "conflict", f"currency {update.currency} differs from {tx.currency}", None
        if update.reference is not None:
            tx.gateway_reference = update.reference
        posting = None
        if status == "APPROVED":
            if update.amount is not None and update.amount != abs(tx.amount):
                currency = await session.scalar(
                    select(TradingAccount.currency).where(TradingAccount.login == tx.login)
                )
                assert currency is not None
                self._adjust(tx, update.amount, currency)
            posting = self.transactions.approval(tx, actor, now)
        else:
            self.transactions.set_status(tx, status, now)
            if status in ("DECLINE", "REJECT"):
                tx.declined_by = actor.id
        self.transactions.event(session, "transaction.updated", tx, now)
        return "applied", "", posting

    @staticmethod
    def _adjust(tx: Transaction, amount: Decimal, account_currency: str) -> None:
        """Take the amount the provider processed (Praxis: amounts may change during
        processing), converting at the transaction's own rates."""
        sign = 1 if tx.amount > 0 else -1
        ratio = tx.account_amount / tx.amount
        tx.amount = sign * amount
        tx.account_amount = round_money(tx.amount * ratio, account_currency)
        if tx.exchange_rate_usd is not None:
            tx.usd_amount = round_money(tx.amount * tx.exchange_rate_usd, "USD")

    @staticmethod
    async def _exists(
        session: AsyncSession,
        *,
        original: str | None = None,
        type_: str | None = None,
        cashier_id: str | None = None,
    ) -> bool:
        query = select(Transaction.id)
        if original is not None:
            query = query.where(Transaction.original_transaction_id == original)
        if type_ is not None:
            query = query.where(Transaction.type == type_)
        if cashier_id is not None:
            query = query.where(Transaction.cashier_id == cashier_id)
        return await session.scalar(query.limit(1)) is not None

    async def reconcile(self, tx_id: str) -> CallbackOutcome:
        """Ask the transaction's gateway for its status and apply it (reconciliation).

        Raises TradingError 404, 409 (not a cashier transaction of an enabled gateway),
        502 (the provider failed).
        """
        async with self.db.read() as session:
            tx = await session.get(Transaction, tx_id)
        if tx is None:
            raise TradingError(404, "Transaction not found")
        enabled = self.gateways.get(tx.gate_name or "")
        if enabled is None or tx.cashier_id is None:
            raise TradingError(409, "Not a cashier transaction of an enabled gateway")
        try:
            update = await enabled.client.query_status(tx.cashier_id, tx.gateway_reference)
        except GatewayError as exc:
            raise TradingError(502, f"{enabled.descriptor.name}: {exc}") from exc
        if update is None:
            return CallbackOutcome("unknown", tx, "the provider does not know it")
        return await self.apply(update, enabled.descriptor.name)
