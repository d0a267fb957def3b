"""Customer registration (seed section 3, organic path).

A customer and its first trading account are created in one unit of work; the
account joins the default group and takes its currency and leverage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.security import hash_password_async
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.ids import IdAllocator
from brokerkernel.kernel.storage.models import Customer, Group, TradingAccount, new_id


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
        customer = Customer(
            id=new_id(),
            email=email,
            password_hash=password_hash,
            first_name=reg.first_name,
            last_name=reg.last_name,
            phone=reg.phone,
            country=reg.country,
            gender=reg.gender,
            registration_source="organic",
            affiliate_id=reg.affiliate_id,
            campaign_id=reg.campaign_id,
            funnel=reg.funnel,
            affiliate_lead_id=reg.affiliate_lead_id,
            compliance_status="active",
            force_password_change=False,
            is_active=True,
            reg_time=now,
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
