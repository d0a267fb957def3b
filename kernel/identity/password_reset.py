"""Customer password reset (seed section 2).

A token is a random UUID; only its SHA-256 is stored. ``request`` (authenticated)
refuses a fourth active token within the token lifetime (429); ``forgot`` (public)
behaves the same whether or not the email exists (no enumeration); ``verify`` checks a
token without burning it and shows the email masked; ``confirm`` burns it atomically
(one conditional UPDATE: a token confirms at most once even under concurrent
requests), sets the new password, clears ``force_password_change``, burns the
customer's other reset tokens and revokes every session of the customer. Each new
token is announced as the domain event ``customer.password_reset_requested``
(``customer_id``, ``reset_url``, ``expires_at``) for the messaging plugins to deliver.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.models import PasswordResetToken
from brokerkernel.kernel.identity.pii import mask_email
from brokerkernel.kernel.identity.sessions import SessionService
from brokerkernel.kernel.security import WallClock, digest, hash_password_async
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Customer, new_id

NOT_USABLE = "Token invalid, expired, or already used"


class PasswordResetService:
    """Reset tokens for customers (see the module docstring).

    ``url_template`` is the link sent to the customer with ``{token}`` in it;
    ``ttl_s`` a token's lifetime and the window of ``max_active``.
    """

    def __init__(
        self,
        db: Database,
        wall: WallClock,
        clock: MarketClock,
        sessions: SessionService,
        *,
        ttl_s: int = 900,
        max_active: int = 3,
    ) -> None:
        self._db = db
        self._wall = wall
        self._clock = clock
        self._sessions = sessions
        self._ttl = timedelta(seconds=ttl_s)
        self._max_active = max_active

    async def _issue(self, session: AsyncSession, customer: Customer, url_template: str) -> str:
        """Stage a token for the (locked) customer; returns the reset URL."""
        now = self._wall.now()
        active = await session.scalar(
            select(func.count())
            .select_from(PasswordResetToken)
            .where(
                PasswordResetToken.customer_id == customer.id,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.expires_at > now,
            )
        )
        if (active or 0) >= self._max_active:
            minutes = int(self._ttl.total_seconds() // 60)
            raise IdentityError(
                429,
                f"Too many password reset requests: at most {self._max_active} "
                f"active links per {minutes} minutes",
            )
        token = str(uuid.uuid4())
        expires_at = now + self._ttl
        session.add(
            PasswordResetToken(
                id=new_id(),
                customer_id=customer.id,
                token_hash=digest(token),
                created_at=now,
                expires_at=expires_at,
                used_at=None,
            )
        )
        url = url_template.format(token=token)
        record_event(
            session,
            "customer.password_reset_requested",
            {"customer_id": customer.id, "reset_url": url, "expires_at": expires_at.isoformat()},
            self._clock.now(),
        )
        return url

    async def request(self, customer_id: str, url_template: str) -> str:
        """A reset link for a logged-in customer; raises IdentityError 429 (too many)
        or 404 (the customer no longer exists)."""
        async with self._db.transaction() as session:
            customer = await session.get(Customer, customer_id, with_for_update=True)
            if customer is None:
                raise IdentityError(404, "Customer not found")
            return await self._issue(session, customer, url_template)

    async def forgot(self, email: str, url_template: str) -> None:
        """Issue a link when an active customer has ``email``; silent in every case."""
        async with self._db.transaction() as session:
            customer = await session.scalar(
                select(Customer)
                .where(Customer.email == email.strip().lower(), Customer.is_active.is_(True))
                .with_for_update()
            )
            if customer is None:
                return
            try:
                await self._issue(session, customer, url_template)
            except IdentityError:
                return  # over the limit: still 200, nothing new is sent

    async def verify(self, token: str) -> str:
        """The masked email of a valid token (not burned); raises IdentityError 401."""
        async with self._db.read() as session:
            row = await session.execute(
                select(Customer.email)
                .join(PasswordResetToken, PasswordResetToken.customer_id == Customer.id)
                .where(
                    PasswordResetToken.token_hash == digest(token),
                    PasswordResetToken.used_at.is_(None),
                    PasswordResetToken.expires_at > self._wall.now(),
                )
            )
            email = row.scalar_one_or_none()
        if email is None:
            raise IdentityError(401, NOT_USABLE)
        return mask_email(email)

    async def confirm(self, token: str, new_password: str) -> str:
        """Burn ``token`` and set ``new_password``; returns the customer id.

        Raises IdentityError 401 when the token is invalid, expired or used.
        """
        now = self._wall.now()
        new_hash = await hash_password_async(new_password)
        async with self._db.transaction() as session:
            burned = await session.execute(
                update(PasswordResetToken)
                .where(
                    PasswordResetToken.token_hash == digest(token),
                    PasswordResetToken.used_at.is_(None),
                    PasswordResetToken.expires_at > now,
                )
                .values(used_at=now)
                .returning(PasswordResetToken.customer_id)
            )
            customer_id = burned.scalar_one_or_none()
            if customer_id is None:
                raise IdentityError(401, NOT_USABLE)
            await session.execute(
                update(PasswordResetToken)
                .where(
                    PasswordResetToken.customer_id == customer_id,
                    PasswordResetToken.used_at.is_(None),
                )
                .values(used_at=now)
            )
            customer = await session.get(Customer, customer_id, with_for_update=True)
            assert customer is not None
            customer.password_hash = new_hash
            customer.force_password_change = False
            await self._sessions.revoke(
                "customer", customer_id, reason="password_reset", session=session
            )
        return customer_id
