"""Money transactions (seed section 8): create, approve, decline, delete, chargeback.

Types, statuses and sources are the seed's. A transaction moves money only when it
becomes APPROVED, and then in the same unit of work as its ledger row
(:func:`brokerkernel.kernel.trading.ledger.append`, the account row locked first; a
payment provider's approval: the posting of :meth:`TransactionService.approval`,
written by the payment service's ledger batcher);
PENDING, IN_PROGRESS and PROCESSING transactions move nothing, DECLINE and REJECT
never will. ``amount``, ``account_amount`` and ``usd_amount`` are stored signed
(negative for money out), so the derived balance is the sum of approved rows.

Rules (seed sections 8 and 10):

* maker-checker: with the broker setting ``maker_checker_enabled`` = "true" the staff
  user who created a transaction cannot approve it (403), also not in one step;
* free-margin guard: money out of the balance is limited to min(balance, free margin)
  with open positions (else the balance); credit removal needs
  equity - removal >= margin used and at most the account's credit (422);
  chargebacks and CORRECTION_OUT are not limited (a forced debit, a fix);
* withdrawal approval rules (:mod:`brokerkernel.kernel.money.approvals`) on approving
  a WITHDRAWAL; the amount in USD through the FX rates at approval time;
* state: only PENDING, IN_PROGRESS and PROCESSING can be approved or declined (409);
  soft delete keeps the row for audit as DELETED and, for an APPROVED one, posts the
  reversing ledger row (guarded as money out when it takes money away);
* chargeback: only of an APPROVED DEPOSIT, once (409); it posts a ``chargeback``
  ledger row and freezes the customer (``compliance_status = 'frozen'``) when the
  balance goes negative.

Errors are :class:`~brokerkernel.kernel.trading.service.TradingError` with the HTTP
status; 422 carries every field error (``{"loc", "msg", "type"}`` items).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.money import approvals
from brokerkernel.kernel.money.batching import Posting
from brokerkernel.kernel.money.settings import maker_checker_enabled
from brokerkernel.kernel.pricing import ConversionUnavailable, FxConverter
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Customer, TradingAccount, Transaction, new_id
from brokerkernel.kernel.trading import ledger
from brokerkernel.kernel.trading.instruments import field_error
from brokerkernel.kernel.trading.money import has_valid_scale, minor_units, round_money
from brokerkernel.kernel.trading.service import TradingError, TradingService

#: Transaction types a caller may create (seed section 8); CHARGEBACK is created only
#: by :meth:`TransactionService.chargeback`.
TYPES: Final = (
    "DEPOSIT",
    "WITHDRAWAL",
    "BONUS",
    "BONUS_CREDIT_IN",
    "BONUS_CREDIT_OUT",
    "CREDIT_IN",
    "CREDIT_OUT",
    "TRANSFER_IN",
    "TRANSFER_OUT",
    "CORRECTION_IN",
    "CORRECTION_OUT",
    "IB_PAYMENT",
    "REWARD",
    "PROFIT_SHARING_IN",
    "PROFIT_SHARING_OUT",
)
CHARGEBACK: Final = "CHARGEBACK"
STATUSES: Final = (
    "PENDING",
    "IN_PROGRESS",
    "PROCESSING",
    "APPROVED",
    "DECLINE",
    "REJECT",
    "DELETED",
)
#: Statuses that can still become APPROVED (or DECLINE/REJECT).
OPEN_STATUSES: Final = frozenset({"PENDING", "IN_PROGRESS", "PROCESSING"})
SOURCES: Final = ("cashier", "manual", "system")


@dataclass(frozen=True, slots=True)
class Movement:
    """How an approved transaction type moves money: the ledger ``event_type``, the
    direction (+1 in, -1 out), whether it moves credit instead of balance, and whether
    money out is limited by the free-margin guard."""

    event_type: str
    sign: int
    on_credit: bool = False
    guarded: bool = True


MOVEMENTS: Final[dict[str, Movement]] = {
    "DEPOSIT": Movement("deposit", 1),
    "WITHDRAWAL": Movement("withdrawal", -1),
    "BONUS": Movement("correction_in", 1),
    "BONUS_CREDIT_IN": Movement("credit_in", 1, on_credit=True),
    "BONUS_CREDIT_OUT": Movement("credit_out", -1, on_credit=True),
    "CREDIT_IN": Movement("credit_in", 1, on_credit=True),
    "CREDIT_OUT": Movement("credit_out", -1, on_credit=True),
    "TRANSFER_IN": Movement("correction_in", 1),
    "TRANSFER_OUT": Movement("correction_out", -1),
    "CORRECTION_IN": Movement("correction_in", 1),
    "CORRECTION_OUT": Movement("correction_out", -1, guarded=False),
    "IB_PAYMENT": Movement("correction_in", 1),
    "REWARD": Movement("correction_in", 1),
    "PROFIT_SHARING_IN": Movement("correction_in", 1),
    "PROFIT_SHARING_OUT": Movement("correction_out", -1),
    CHARGEBACK: Movement("chargeback", -1, guarded=False),
}


def reversal_of(movement: Movement) -> Movement:
    """The movement that undoes ``movement`` (soft delete of an approved transaction)."""
    if movement.on_credit:
        event_type = "credit_out" if movement.sign > 0 else "credit_in"
    else:
        event_type = "correction_out" if movement.sign > 0 else "correction_in"
    return Movement(event_type, -movement.sign, movement.on_credit)


@dataclass(frozen=True, slots=True)
class TransactionRequest:
    """A transaction to create. ``amount`` > 0 in ``currency`` (its sign comes from the
    type); ``account_amount`` the amount credited/debited in the account's currency
    (None: converted at the current FX rate); ``usd_amount`` / ``exchange_rate_usd``
    for reporting (None: from the FX rates). ``status`` PENDING or APPROVED (cashier
    transactions may also start IN_PROGRESS or PROCESSING); ``cashier_id`` makes the
    creation idempotent (cashier transactions, seed section 8)."""

    type: str
    login: int
    amount: Decimal
    currency: str
    status: str = "PENDING"
    account_amount: Decimal | None = None
    usd_amount: Decimal | None = None
    exchange_rate_usd: Decimal | None = None
    gate_name: str | None = None
    proof_reference: str | None = None
    comment: str | None = None
    source: str = "manual"
    cashier_id: str | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a staff user's id and ``role`` name, a customer's id, or
    ``gateway:<name>`` / ``system`` for payment providers and the platform."""

    id: str
    role: str | None = None


@dataclass(frozen=True, slots=True)
class ChargebackResult:
    """The seed's chargeback response: ``amount`` negative in the deposit's currency,
    ``balance_after`` in the account currency."""

    chargeback: Transaction
    original: Transaction
    balance_after: Decimal
    account_frozen: bool


def _label(kind: str) -> str:
    return kind.replace("_", " ").capitalize()


def _money_errors(field: str, value: Decimal | None, currency: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if value <= 0:
        return [field_error(field, "must be greater than 0", "exclusiveMinimum")]
    if not has_valid_scale(value, currency):
        return [
            field_error(
                field,
                f"has more decimals than {currency} allows ({minor_units(currency)})",
                "decimalPlaces",
            )
        ]
    return []


class TransactionService:
    """Creates and changes transactions; every money movement goes through the ledger."""

    def __init__(
        self, db: Database, clock: MarketClock, fx: FxConverter, trading: TradingService
    ) -> None:
        self.db = db
        self.clock = clock
        self.fx = fx
        self.trading = trading

    # --- creation ------------------------------------------------------------------

    async def create_manual(
        self, request: TransactionRequest, created_by: str, creator_role: str | None = None
    ) -> Transaction:
        """Create a transaction; APPROVED approves it in the same unit of work, with
        the creator as approver (maker-checker, approval rules and guard apply).

        Raises TradingError: 404 unknown account, 409 inactive account, 403
        maker-checker / approval rules, 422 field errors or the free-margin guard.
        """
        tx, _created = await self.create(request, Actor(created_by, creator_role))
        return tx

    async def create(self, request: TransactionRequest, actor: Actor) -> tuple[Transaction, bool]:
        """As :meth:`create_manual`; with a ``cashier_id`` that exists already, the
        existing transaction is returned unchanged. Returns ``(transaction, created)``."""
        if request.cashier_id is not None:
            existing = await self._by_cashier_id(request.cashier_id)
            if existing is not None:
                return existing, False
        state = await self.trading.account_state(request.login)
        if state is None:
            raise TradingError(404, "Account not found")
        account_amount, usd_amount, usd_rate = self._amounts(request, state["currency"])
        movement = MOVEMENTS[request.type]
        now = self.clock.now()
        try:
            async with self.db.transaction() as session:
                account = await ledger.lock_account(session, request.login)
                if account is None:
                    raise TradingError(404, "Account not found")
                if not account.is_active:
                    raise TradingError(409, "Account is not active")
                tx = Transaction(
                    id=new_id(),
                    account_id=account.id,
                    login=account.login,
                    type=request.type,
                    status=request.status,
                    source=request.source,
                    amount=movement.sign * request.amount,
                    currency=request.currency,
                    account_amount=movement.sign * account_amount,
                    usd_amount=movement.sign * usd_amount,
                    exchange_rate_usd=usd_rate,
                    gate_name=request.gate_name,
                    proof_reference=request.proof_reference,
                    comment=request.comment,
                    cashier_id=request.cashier_id,
                    created_by=actor.id,
                    created_at=now,
                    updated_at=now,
                )
                session.add(tx)
                self.event(session, "transaction.created", tx, now)
                if request.status == "APPROVED":
                    # Staff rules for manual ones; a cashier or system transaction
                    # recorded as APPROVED was approved by its provider.
                    await self._approve_in(
                        session,
                        tx,
                        account,
                        actor,
                        state["pnl"],
                        now,
                        staff=request.source == "manual",
                    )
        except IntegrityError:
            # A concurrent request created the same cashier_id first.
            if request.cashier_id is None:
                raise
            existing = await self._by_cashier_id(request.cashier_id)
            if existing is None:
                raise
            return existing, False
        return tx, True

    def _amounts(
        self, request: TransactionRequest, account_currency: str
    ) -> tuple[Decimal, Decimal, Decimal]:
        """``(account_amount, usd_amount, exchange_rate_usd)``, unsigned; 422 with every
        field error (non-positive or over-precise amounts, currencies without a rate)."""
        errors = [
            *_money_errors("amount", request.amount, request.currency),
            *_money_errors("account_amount", request.account_amount, account_currency),
            *_money_errors("usd_amount", request.usd_amount, "USD"),
        ]
        if request.exchange_rate_usd is not None and request.exchange_rate_usd <= 0:
            errors.append(field_error("exchange_rate_usd", "must be greater than 0", "minimum"))
        usd_rate = request.exchange_rate_usd
        account_amount = request.account_amount
        try:
            if usd_rate is None:
                usd_rate = self.fx.rate(request.currency, "USD")
            if account_amount is None:
                rate = self.fx.rate(request.currency, account_currency)
                account_amount = round_money(request.amount * rate, account_currency)
        except ConversionUnavailable:
            message = f"unsupported currency {request.currency} (no conversion rate)"
            errors.append(field_error("currency", message, "currency"))
        if errors or account_amount is None or usd_rate is None:
            raise TradingError(422, errors)
        usd_amount = request.usd_amount or round_money(request.amount * usd_rate, "USD")
        return account_amount, usd_amount, usd_rate

    async def _by_cashier_id(self, cashier_id: str) -> Transaction | None:
        async with self.db.read() as session:
            return await session.scalar(
                select(Transaction).where(Transaction.cashier_id == cashier_id)
            )

    # --- state changes ------------------------------------------------------------

    async def approve(self, tx_id: str, actor: Actor) -> Transaction:
        """Approve an open transaction and move its money (see the module's rules).

        Raises TradingError 404, 409 (not open), 403 (maker-checker, approval rules),
        422 (free-margin guard, no USD rate for the approval rules).
        """
        pnl = await self.pnl_of(tx_id)
        now = self.clock.now()
        async with self.db.transaction() as session:
            tx = await self._lock(session, tx_id)
            if tx.status not in OPEN_STATUSES:
                raise TradingError(
                    409, f"Transaction is {tx.status}: only an open transaction can be approved"
                )
            account = await self._lock_account(session, tx.login)
            await self._approve_in(session, tx, account, actor, pnl, now)
            self.event(session, "transaction.updated", tx, now)
        return tx

    async def decline(self, tx_id: str, actor: Actor, reason: str | None = None) -> Transaction:
        """Decline an open transaction (no money moves). Raises TradingError 404, 409."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            tx = await self._lock(session, tx_id)
            if tx.status not in OPEN_STATUSES:
                raise TradingError(
                    409, f"Transaction is {tx.status}: only an open transaction can be declined"
                )
            self.set_status(tx, "DECLINE", now)
            tx.declined_by = actor.id
            tx.reason = reason or tx.reason
            self.event(session, "transaction.updated", tx, now)
        return tx

    async def delete(self, tx_id: str, actor: Actor) -> Transaction:
        """Soft-delete: status DELETED, kept for audit, out of the derived balance. An
        APPROVED transaction's money is reversed by a ledger row of the opposite type
        (free-margin guard when that takes money away).

        Raises TradingError 404; 409 already deleted, a chargeback, or a deposit with a
        chargeback or refunds (undo those first); 422 guard.
        """
        pnl = await self.pnl_of(tx_id)
        now = self.clock.now()
        async with self.db.transaction() as session:
            tx = await self._lock(session, tx_id)
            if tx.status == "DELETED":
                raise TradingError(409, "Transaction is already DELETED")
            if tx.type == CHARGEBACK:
                raise TradingError(409, "A chargeback cannot be deleted; record a correction")
            if tx.status == "APPROVED":
                if await self._dependents(session, tx.id):
                    raise TradingError(
                        409, "Transaction has a chargeback or refunds; it cannot be deleted"
                    )
                account = await self._lock_account(session, tx.login)
                movement = reversal_of(MOVEMENTS[tx.type])
                if movement.sign < 0:
                    self.guard(account, pnl, abs(tx.account_amount), movement.on_credit)
                reversal = self.posting(
                    tx,
                    movement,
                    -tx.account_amount,
                    f"{_label(tx.type)} deleted (reversal)",
                    f"reversal:{tx.id}",
                    now,
                )
                self._post(session, account, reversal)
            self.set_status(tx, "DELETED", now)
            tx.deleted_by = actor.id
            self.event(session, "transaction.updated", tx, now)
        return tx

    async def chargeback(self, tx_id: str, reason: str, actor: Actor) -> ChargebackResult:
        """Charge back an approved deposit (see :meth:`chargeback_in`)."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            original = await self._lock(session, tx_id)
            return await self.chargeback_in(session, original, reason, actor, "manual", now)

    # --- building blocks (inside the caller's unit of work) -----------------------

    async def chargeback_in(
        self,
        session: AsyncSession,
        original: Transaction,
        reason: str,
        actor: Actor,
        source: str,
        now: datetime,
    ) -> ChargebackResult:
        """Create the negative CHARGEBACK transaction of the locked ``original`` and
        post it; freeze the customer when the balance goes negative (seed section 8).

        Raises TradingError 409 unless ``original`` is an APPROVED DEPOSIT not charged
        back before (the ledger key ``chargeback:<deposit id>`` is unique as well).
        """
        if original.type != "DEPOSIT" or original.status != "APPROVED":
            raise TradingError(409, "Only approved DEPOSIT transactions can be charged back")
        earlier = await session.scalar(
            select(Transaction.id).where(
                Transaction.original_transaction_id == original.id,
                Transaction.type == CHARGEBACK,
            )
        )
        if earlier is not None:
            raise TradingError(409, f"Deposit already charged back ({earlier})")
        account = await self._lock_account(session, original.login)
        chargeback = Transaction(
            id=new_id(),
            account_id=original.account_id,
            login=original.login,
            type=CHARGEBACK,
            status="APPROVED",
            source=source,
            amount=-original.amount,
            currency=original.currency,
            account_amount=-original.account_amount,
            usd_amount=None if original.usd_amount is None else -original.usd_amount,
            exchange_rate_usd=original.exchange_rate_usd,
            gate_name=original.gate_name,
            original_transaction_id=original.id,
            reason=reason,
            created_by=actor.id,
            approved_by=actor.id,
            created_at=now,
            updated_at=now,
        )
        session.add(chargeback)
        posting = self.posting(
            chargeback,
            MOVEMENTS[CHARGEBACK],
            chargeback.account_amount,
            f"Chargeback of deposit {original.id}: {reason}"[:256],
            f"chargeback:{original.id}",
            now,
        )
        self._post(session, account, posting)
        self.event(session, "transaction.created", chargeback, now)
        customer = await session.get(Customer, account.customer_id, with_for_update=True)
        assert customer is not None
        if account.balance < 0 and customer.compliance_status != "frozen":
            customer.compliance_status = "frozen"
            record_event(
                session,
                "customer.frozen",
                {
                    "customer_id": customer.id,
                    "login": account.login,
                    "reason": "negative balance after chargeback",
                    "transaction_id": chargeback.id,
                },
                now,
            )
        return ChargebackResult(
            chargeback, original, account.balance, customer.compliance_status == "frozen"
        )

    async def refund_in(
        self,
        session: AsyncSession,
        original: Transaction,
        amount: Decimal,
        cashier_id: str,
        actor: Actor,
        now: datetime,
        reference: str | None = None,
    ) -> Transaction:
        """Record a refund of the locked, APPROVED deposit ``original`` that the
        provider has made: an APPROVED WITHDRAWAL of ``amount`` (in the deposit's
        currency, > 0) linked by ``original_transaction_id``, posted at once.

        Raises TradingError 409 when ``original`` is not an approved deposit, 422 when
        ``amount`` exceeds what is left to refund.
        """
        if original.type != "DEPOSIT" or original.status != "APPROVED":
            raise TradingError(409, "Only approved DEPOSIT transactions can be refunded")
        if amount <= 0 or amount > await self.refundable_in(session, original):
            raise TradingError(
                422, [field_error("amount", "exceeds the amount left to refund", "maximum")]
            )
        account = await self._lock_account(session, original.login)
        refund = self.refund_row(original, amount, account.currency, cashier_id, actor, now)
        refund.gateway_reference = reference
        session.add(refund)
        self.event(session, "transaction.created", refund, now)
        await self.approve_in(session, refund, account, actor, now)
        return refund

    @staticmethod
    def refund_row(
        original: Transaction,
        amount: Decimal,
        account_currency: str,
        cashier_id: str,
        actor: Actor,
        now: datetime,
    ) -> Transaction:
        """A PROCESSING WITHDRAWAL refunding ``amount`` (deposit currency) of
        ``original``, at the deposit's own rates; not yet added to a session."""
        share = amount / abs(original.amount)
        return Transaction(
            id=new_id(),
            account_id=original.account_id,
            login=original.login,
            type="WITHDRAWAL",
            status="PROCESSING",
            source="cashier",
            amount=-amount,
            currency=original.currency,
            account_amount=-round_money(abs(original.account_amount) * share, account_currency),
            usd_amount=(
                None
                if original.exchange_rate_usd is None
                else -round_money(amount * original.exchange_rate_usd, "USD")
            ),
            exchange_rate_usd=original.exchange_rate_usd,
            gate_name=original.gate_name,
            cashier_id=cashier_id,
            original_transaction_id=original.id,
            reason="Refund",
            created_by=actor.id,
            created_at=now,
            updated_at=now,
        )

    async def refundable_in(self, session: AsyncSession, original: Transaction) -> Decimal:
        """What is left to refund of ``original`` (its currency): the deposit minus
        refunds that are approved or under way."""
        refunded = (
            await session.scalars(
                select(Transaction.amount).where(
                    Transaction.original_transaction_id == original.id,
                    Transaction.type == "WITHDRAWAL",
                    Transaction.status.in_([*OPEN_STATUSES, "APPROVED"]),
                )
            )
        ).all()
        left = abs(original.amount) - sum((abs(a) for a in refunded), Decimal(0))
        return round_money(left, original.currency)

    async def approve_in(
        self,
        session: AsyncSession,
        tx: Transaction,
        account: TradingAccount,
        actor: Actor,
        now: datetime,
    ) -> None:
        """Approve ``tx`` on behalf of its payment provider (the locked ``account``):
        the money has moved at the provider, so no staff rules and no guard apply."""
        await self._approve_in(session, tx, account, actor, Decimal(0), now, staff=False)

    async def _approve_in(
        self,
        session: AsyncSession,
        tx: Transaction,
        account: TradingAccount,
        actor: Actor,
        pnl: Decimal,
        now: datetime,
        *,
        staff: bool = True,
    ) -> None:
        movement = MOVEMENTS[tx.type]
        if staff:
            if tx.created_by == actor.id and await maker_checker_enabled(session):
                raise TradingError(
                    403, "Maker-checker: the creator of a transaction cannot approve it"
                )
            if tx.type == "WITHDRAWAL":
                try:
                    usd = round_money(self.fx.convert(abs(tx.amount), tx.currency, "USD"), "USD")
                except ConversionUnavailable as exc:
                    raise TradingError(
                        422, f"No USD rate for {tx.currency} to apply the approval rules"
                    ) from exc
                await approvals.check_approver(session, actor.role, usd)
            if movement.sign < 0 and movement.guarded:
                self.guard(account, pnl, abs(tx.account_amount), movement.on_credit)
        self._post(session, account, self.approval(tx, actor, now))

    def approval(self, tx: Transaction, actor: Actor, now: datetime) -> Posting:
        """Mark ``tx`` APPROVED by ``actor`` and return its ledger posting (key
        ``<event_type>:<tx id>``), which the caller writes in the same unit of work.
        Checks nothing: staff rules and the guard are the caller's (a payment
        provider's approval has none; :meth:`PaymentService.apply
        <brokerkernel.kernel.money.payments.PaymentService.apply>` hands the posting
        to the ledger batcher)."""
        movement = MOVEMENTS[tx.type]
        self.set_status(tx, "APPROVED", now)
        tx.approved_by = actor.id
        return self.posting(
            tx,
            movement,
            tx.account_amount,
            f"{_label(tx.type)} approved",
            f"{movement.event_type}:{tx.id}",
            now,
        )

    @staticmethod
    def set_status(tx: Transaction, status: str, now: datetime) -> None:
        tx.status = status
        tx.updated_at = now

    @staticmethod
    def posting(
        tx: Transaction,
        movement: Movement,
        delta: Decimal,
        description: str,
        idempotency_key: str,
        now: datetime,
    ) -> Posting:
        """The ledger posting of ``tx`` moving ``delta`` (account currency, signed) as
        ``movement`` says (balance or credit)."""
        return Posting(
            tx.login,
            movement.event_type,
            "transaction",
            tx.id,
            idempotency_key,
            description,
            now,
            balance_delta=Decimal(0) if movement.on_credit else delta,
            credit_delta=delta if movement.on_credit else Decimal(0),
        )

    @staticmethod
    def _post(session: AsyncSession, account: TradingAccount, posting: Posting) -> None:
        ledger.append(
            session, account, posting.event_type, **posting.ledger_fields(), source=posting.source
        )

    @staticmethod
    def guard(account: TradingAccount, pnl: Decimal, amount: Decimal, on_credit: bool) -> None:
        """Free-margin guard (seed section 8) on the locked account; ``pnl`` is the
        floating profit in the account currency, ``amount`` > 0 leaving."""
        equity = account.balance + account.credit + pnl
        if on_credit:
            if amount > account.credit or equity - amount < account.margin:
                raise TradingError(
                    422, "Credit removal exceeds free margin or the account's credit"
                )
            return
        limit = min(account.balance, equity - account.margin) if account.margin else account.balance
        if amount > limit:
            raise TradingError(
                422,
                "Withdrawal exceeds the withdrawable amount "
                f"{round_money(max(limit, Decimal(0)), account.currency)}",
            )

    # --- reads ----------------------------------------------------------------------

    async def pnl_of(self, tx_id: str) -> Decimal:
        """Floating profit of the transaction's account (for the guard); 404 if unknown."""
        async with self.db.read() as session:
            login = await session.scalar(select(Transaction.login).where(Transaction.id == tx_id))
        if login is None:
            raise TradingError(404, "Transaction not found")
        state = await self.trading.account_state(login)
        if state is None:
            raise TradingError(404, "Account not found")
        pnl: Decimal = state["pnl"]
        return pnl

    @staticmethod
    async def _lock(session: AsyncSession, tx_id: str) -> Transaction:
        tx = await session.get(Transaction, tx_id, with_for_update=True)
        if tx is None:
            raise TradingError(404, "Transaction not found")
        return tx

    @staticmethod
    async def _lock_account(session: AsyncSession, login: int) -> TradingAccount:
        account = await ledger.lock_account(session, login)
        if account is None:
            raise TradingError(404, "Account not found")
        return account

    @staticmethod
    async def _dependents(session: AsyncSession, tx_id: str) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(Transaction)
            .where(
                Transaction.original_transaction_id == tx_id,
                Transaction.status != "DELETED",
            )
        )
        return int(count or 0)

    @staticmethod
    def event(session: AsyncSession, kind: str, tx: Transaction, now: datetime) -> None:
        record_event(
            session,
            kind,
            {
                "id": tx.id,
                "login": tx.login,
                "type": tx.type,
                "status": tx.status,
                "source": tx.source,
                "amount": str(tx.amount),
                "currency": tx.currency,
                "cashier_id": tx.cashier_id,
            },
            now,
        )
