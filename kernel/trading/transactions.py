"""Manual money transactions (seed section 8): deposits, withdrawals, credit, corrections.

An APPROVED transaction moves money in the same unit of work as its ledger row;
a PENDING one is stored and moves nothing until approved.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.pricing import ConversionUnavailable, FxConverter
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import TradingAccount, Transaction, new_id
from brokerkernel.kernel.trading import ledger
from brokerkernel.kernel.trading.money import has_valid_scale, round_money
from brokerkernel.kernel.trading.service import TradingError, TradingService

# transaction type -> (ledger event type, balance sign, credit sign)
MOVEMENTS: dict[str, tuple[str, int, int]] = {
    "DEPOSIT": ("deposit", 1, 0),
    "WITHDRAWAL": ("withdrawal", -1, 0),
    "CREDIT_IN": ("credit_in", 0, 1),
    "CREDIT_OUT": ("credit_out", 0, -1),
    "CORRECTION_IN": ("correction_in", 1, 0),
    "CORRECTION_OUT": ("correction_out", -1, 0),
}
STATUSES = ("PENDING", "APPROVED")


@dataclass(frozen=True, slots=True)
class ManualTransaction:
    """A validated request: ``amount`` > 0 in ``currency``; ``account_amount`` in the
    account's currency (None: converted at the current FX rate)."""

    type: str
    login: int
    amount: Decimal
    currency: str
    status: str
    account_amount: Decimal | None = None
    gate_name: str | None = None
    proof_reference: str | None = None
    comment: str | None = None


class TransactionService:
    def __init__(
        self, db: Database, clock: MarketClock, fx: FxConverter, trading: TradingService
    ) -> None:
        self.db = db
        self.clock = clock
        self.fx = fx
        self.trading = trading

    async def create_manual(self, request: ManualTransaction, created_by: str) -> Transaction:
        """Store the transaction and, when APPROVED, apply it to the ledger.

        Raises TradingError: 404 unknown account; 422 amount with more decimals than
        the currency allows, or a withdrawal/credit-out above what the free-margin
        guard allows (min(balance, free_margin) with open positions).
        """
        if not has_valid_scale(request.amount, request.currency):
            raise TradingError(422, f"amount has more decimals than {request.currency} allows")
        state = await self.trading.account_state(request.login)
        if state is None:
            raise TradingError(404, "Account not found")
        account_currency = state["currency"]
        try:
            account_amount = request.account_amount or round_money(
                self.fx.convert(request.amount, request.currency, account_currency),
                account_currency,
            )
            usd_rate = self.fx.rate(request.currency, "USD")
        except ConversionUnavailable as exc:
            raise TradingError(422, f"unsupported currency: {exc}") from exc
        event_type, balance_sign, credit_sign = MOVEMENTS[request.type]
        now = self.clock.now()
        async with self.db.transaction() as session:
            account = await ledger.lock_account(session, request.login)
            if account is None:
                raise TradingError(404, "Account not found")
            tx = Transaction(
                id=new_id(),
                account_id=account.id,
                login=account.login,
                type=request.type,
                status=request.status,
                source="manual",
                amount=request.amount,
                currency=request.currency,
                account_amount=account_amount,
                usd_amount=round_money(request.amount * usd_rate, "USD"),
                exchange_rate_usd=usd_rate,
                gate_name=request.gate_name,
                proof_reference=request.proof_reference,
                comment=request.comment,
                created_by=created_by,
                approved_by=created_by if request.status == "APPROVED" else None,
                created_at=now,
                updated_at=now,
            )
            session.add(tx)
            if request.status == "APPROVED":
                self._guard(account, state, account_amount, balance_sign, credit_sign)
                ledger.append(
                    session,
                    account,
                    event_type,
                    reference_type="transaction",
                    reference_id=tx.id,
                    idempotency_key=f"{event_type}:{tx.id}",
                    description=f"{request.type.replace('_', ' ').capitalize()} approved",
                    at=now,
                    balance_delta=balance_sign * account_amount,
                    credit_delta=credit_sign * account_amount,
                )
            record_event(
                session,
                "transaction.created",
                {
                    "id": tx.id,
                    "login": account.login,
                    "type": tx.type,
                    "status": tx.status,
                    "amount": str(tx.amount),
                    "currency": tx.currency,
                },
                now,
            )
        return tx

    @staticmethod
    def _guard(
        account: TradingAccount,
        state: dict[str, object],
        amount: Decimal,
        balance_sign: int,
        credit_sign: int,
    ) -> None:
        pnl = state["pnl"]
        assert isinstance(pnl, Decimal)
        # Equity from the locked row: balance and credit cannot have moved since.
        equity = account.balance + account.credit + pnl
        if balance_sign < 0:
            limit = (
                min(account.balance, equity - account.margin) if account.margin else account.balance
            )
            if amount > limit:
                raise TradingError(422, f"Withdrawal exceeds the withdrawable amount {limit}")
        if credit_sign < 0 and (amount > account.credit or equity - amount < account.margin):
            raise TradingError(422, "Credit removal exceeds free margin or the account's credit")
