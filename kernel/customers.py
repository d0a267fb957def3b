"""Customer registration (seed section 3, organic path) and KYC results (seed
section 25).

A customer and its first trading account are created in one unit of work; the
account joins the default group and takes its currency and leverage.

A KYC result (:func:`record_kyc`) whose status is the customer's current status
changes nothing (a provider's re-delivery: no write, no event). Any other is stored
in ``customer_kyc`` (:mod:`brokerkernel.kernel.kyc`) and emits
``customer.kyc_status_changed`` (:meth:`KycChange.payload`) in the same unit of work,
where every :class:`KycListener` among the kernel's extensions adds its own records
(the challenges plugin: ``trader.kyc_passed`` for each prop account of the customer
on ``approved``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.kyc import NOT_STARTED, CustomerKyc
from brokerkernel.kernel.security import hash_password_async
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.ids import IdAllocator
from brokerkernel.kernel.storage.models import Customer, Group, TradingAccount, new_id

#: Emitted on every change of a customer's KYC status.
KYC_CHANGED: Final = "customer.kyc_status_changed"


class RegistrationError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    first_name: str = ""
    last_name: str = ""
    phone: str | None = None
    country: str | None = None
    gender: str | None = None
    affiliate_id: str | None = None
    campaign_id: str | None = None
    funnel: str | None = None
    affiliate_lead_id: str | None = None


def account_json(account: TradingAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "login": str(account.login),
        "currency": account.currency,
        "account_type": account.account_type,
        "balance": account.balance,
        "credit": account.credit,
        "is_active": account.is_active,
        "created_at": account.created_at,
    }


def new_real_account(
    login: int, customer_id: str, group_id: str, currency: str, leverage: int, now: datetime
) -> TradingAccount:
    """A new active ``real`` trading account ``login`` of the customer in the group,
    with zero balance, credit and margin (in ``currency``) and an empty ledger;
    ``now`` (UTC) is its creation time. Not yet added to a session."""
    return TradingAccount(
        id=new_id(),
        login=login,
        customer_id=customer_id,
        group_id=group_id,
        currency=currency,
        leverage=leverage,
        account_type="real",
        balance=Decimal(0),
        credit=Decimal(0),
        margin=Decimal(0),
        ledger_seq=0,
        is_active=True,
        created_at=now,
    )


def new_customer(
    email: str,
    now: datetime,
    *,
    password_hash: str | None,
    registration_source: str,
    first_name: str = "",
    last_name: str = "",
    phone: str | None = None,
    country: str | None = None,
    gender: str | None = None,
    affiliate_id: str | None = None,
    campaign_id: str | None = None,
    funnel: str | None = None,
    affiliate_lead_id: str | None = None,
) -> Customer:
    """A new active customer (compliance ``active``, no forced password change)
    registered at ``now`` (UTC) from ``registration_source`` (``organic``, ``prop``,
    ...); ``email`` as given (the caller normalises it), ``password_hash`` None for a
    customer without a password yet. Not yet added to a session."""
    return Customer(
        id=new_id(),
        email=email,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        phone=phone,
        country=country,
        gender=gender,
        registration_source=registration_source,
        affiliate_id=affiliate_id,
        campaign_id=campaign_id,
        funnel=funnel,
        affiliate_lead_id=affiliate_lead_id,
        compliance_status="active",
        force_password_change=False,
        is_active=True,
        reg_time=now,
    )


def customer_json(customer: Customer, accounts: list[TradingAccount]) -> dict[str, Any]:
    """The seed's CustomerResponse fields this kernel holds."""
    return {
        "id": customer.id,
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "full_name": f"{customer.first_name} {customer.last_name}".strip(),
        "phone": customer.phone,
        "country": customer.country,
        "gender": customer.gender,
        "affiliate_id": customer.affiliate_id,
        "campaign_id": customer.campaign_id,
        "funnel": customer.funnel,
        "affiliate_lead_id": customer.affiliate_lead_id,
        "reg_time": customer.reg_time,
        "is_active": customer.is_active,
        "compliance_status": customer.compliance_status,
        "registration_source": customer.registration_source,
        "force_password_change": customer.force_password_change,
        "trading_accounts": [account_json(a) for a in accounts],
    }


async def register(
    db: Database, ids: IdAllocator, clock: MarketClock, reg: Registration
) -> dict[str, Any]:
    """Create the customer and its account; returns the seed's registration response.

    Duplicate email answers ``200 {"duplicate": true, ...}`` (anti-enumeration, seed);
    raises RegistrationError 409 for a duplicate phone or affiliate_lead_id.
    """
    email = reg.email.strip().lower()
    now = clock.now()
    # Hashed off the event loop and before the transaction (the single SQLite writer
    # is not held for ~150 ms of argon2id); a duplicate email costs the same time.
    password_hash = await hash_password_async(reg.password)
    async with db.transaction() as session:
        existing = await session.scalar(select(Customer).where(Customer.email == email))
        if existing is not None:
            return {
                "duplicate": True,
                "customer_id": existing.id,
                "message": "Email already registered.",
            }
        if reg.phone and await session.scalar(
            select(Customer.id).where(Customer.phone == reg.phone)
        ):
            raise RegistrationError(409, {"detail": "Phone number already registered"})
        if reg.affiliate_lead_id and await session.scalar(
            select(Customer.id).where(Customer.affiliate_lead_id == reg.affiliate_lead_id)
        ):
            raise RegistrationError(409, {"detail": "Duplicate affiliate_lead_id"})
        group = await session.scalar(
            select(Group).where(Group.is_default.is_(True), Group.is_active.is_(True)).limit(1)
        )
        if group is None:
            raise RegistrationError(503, {"detail": "No default trading group is configured"})
        customer = new_customer(
            email,
            now,
            password_hash=password_hash,
            registration_source="organic",
            first_name=reg.first_name,
            last_name=reg.last_name,
            phone=reg.phone,
            country=reg.country,
            gender=reg.gender,
            affiliate_id=reg.affiliate_id,
            campaign_id=reg.campaign_id,
            funnel=reg.funnel,
            affiliate_lead_id=reg.affiliate_lead_id,
        )
        session.add(customer)
        await session.flush()
        account = new_real_account(
            await ids.next_login(session),
            customer.id,
            group.id,
            group.currency,
            group.default_leverage,
            now,
        )
        session.add(account)
        record_event(
            session,
            "account.created",
            {"customer_id": customer.id, "login": account.login, "group": group.name},
            now,
        )
    return {
        **customer_json(customer, [account]),
        "autologin_token": None,
        "autologin_url": None,
        "source": "organic",
    }


@dataclass(frozen=True, slots=True)
class KycResult:
    """One provider result, the webhook body's fields (seed section 25); ``raw_result``
    holds plain JSON values (no ``Decimal``: it is stored in a JSON column);
    ``signed_at`` (UTC) when the call carrying it was signed, None for a result not
    received signed."""

    customer_id: str
    provider: str
    status: str
    provider_id: str | None = None
    doc_type: str | None = None
    doc_country: str | None = None
    raw_result: dict[str, Any] = field(default_factory=dict)
    signed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KycChange:
    """A change of a customer's status from ``previous`` to ``result.status`` at ``at``
    (UTC)."""

    result: KycResult
    previous: str
    at: datetime

    def payload(self) -> dict[str, Any]:
        """``customer.kyc_status_changed``: ``customer_id``, ``status``,
        ``previous_status``, ``provider``, ``provider_id``, ``doc_type``,
        ``doc_country`` (the raw result stays in ``customer_kyc``)."""
        result = self.result
        return {
            "customer_id": result.customer_id,
            "status": result.status,
            "previous_status": self.previous,
            "provider": result.provider,
            "provider_id": result.provider_id,
            "doc_type": result.doc_type,
            "doc_country": result.doc_country,
        }


@runtime_checkable
class KycListener(Protocol):
    """A kernel extension told of each status change inside its unit of work."""

    async def kyc_changed(self, session: AsyncSession, change: KycChange) -> None:
        """Add records (events) for ``change`` to ``session``; raising rolls it back."""


class UnknownCustomer(LookupError):
    """The result names no customer of this kernel."""


async def record_kyc(
    db: Database, now: datetime, result: KycResult, listeners: Iterable[object]
) -> tuple[str, KycChange | None]:
    """Store ``result`` as the customer's KYC status at ``now`` (UTC) in one unit of
    work (the customer row locked, so concurrent results of one customer apply one
    after the other): ``customer.kyc_status_changed`` and each :class:`KycListener`
    of ``listeners`` run with it. Returns the customer's status after it and the
    change, or None for the change (nothing written) when the status already was
    ``result.status`` or when ``result`` was signed before the result that set the
    current status (a late or replayed call: signed calls apply in the order they were
    signed). Raises :class:`UnknownCustomer`."""
    async with db.transaction() as session:
        customer = await session.get(Customer, result.customer_id, with_for_update=True)
        if customer is None:
            raise UnknownCustomer(result.customer_id)
        row = await session.get(CustomerKyc, result.customer_id)
        if row is not None and (
            row.status == result.status
            or (
                row.signed_at is not None
                and result.signed_at is not None
                and result.signed_at < row.signed_at.replace(tzinfo=UTC)
            )
        ):
            return row.status, None
        change = KycChange(result, NOT_STARTED if row is None else row.status, now)
        if row is None:
            row = CustomerKyc(customer_id=result.customer_id)
            session.add(row)
        row.status = result.status
        row.provider = result.provider
        row.provider_id = result.provider_id
        row.doc_type = result.doc_type
        row.doc_country = result.doc_country
        row.raw_result = result.raw_result
        row.signed_at = result.signed_at
        row.updated_at = now
        record_event(session, KYC_CHANGED, change.payload(), now)
        for listener in listeners:
            if isinstance(listener, KycListener):
                await listener.kyc_changed(session, change)
    return result.status, change


async def kyc_statuses(session: AsyncSession, customer_ids: Collection[str]) -> dict[str, str]:
    """The KYC status of each of ``customer_ids`` (:data:`NOT_STARTED` without a
    result), one query."""
    rows = await session.execute(
        select(CustomerKyc.customer_id, CustomerKyc.status).where(
            CustomerKyc.customer_id.in_(set(customer_ids))
        )
    )
    found = {customer_id: status for customer_id, status in rows}
    return {customer_id: found.get(customer_id, NOT_STARTED) for customer_id in customer_ids}
