"""The identity facade: logins, token refresh and the services behind them.

:class:`Identity` is built by the kernel (``kernel.identity``) and owns the RBAC
cache, sessions, 2FA, password reset, autologin, teams, roles, staff directory and
partner clients. Logins follow seed section 2: wrong credentials 401 (the same
answer and the same argon2 work whether or not the email exists), a disabled
account 403, staff with 2FA get ``{"requires_2fa": true}`` until ``totp_code`` is
sent; each login opens a session whose id is the tokens' ``sid``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.customers import customer_json
from brokerkernel.kernel.identity.autologin import AutologinService
from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.partners import PartnerService
from brokerkernel.kernel.identity.password_reset import PasswordResetService
from brokerkernel.kernel.identity.ratelimit import Window, window
from brokerkernel.kernel.identity.rbac import RbacCache
from brokerkernel.kernel.identity.roles import RoleService
from brokerkernel.kernel.identity.sessions import RefreshError, SessionService
from brokerkernel.kernel.identity.teams import TeamService
from brokerkernel.kernel.identity.totp import TwoFactorService
from brokerkernel.kernel.identity.users import StaffDirectory
from brokerkernel.kernel.security import (
    ACCESS_TTL_S,
    TokenIssuer,
    hash_password_async,
    password_needs_rehash,
    verify_password_async,
)
from brokerkernel.kernel.staff import user_json
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Customer, Role, StaffUser, TradingAccount

WRONG_CREDENTIALS = "Invalid email or password"
DISABLED = "Account disabled"
REFRESH_REFUSED = "Invalid, expired, or revoked refresh token"


@dataclass(frozen=True, slots=True)
class Client:
    """Where a login comes from: the User-Agent and the client IP."""

    device: str | None = None
    ip: str | None = None


def token_body(access_token: str, refresh_token: str) -> dict[str, Any]:
    """The seed's token response fields."""
    return {
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expires_in": ACCESS_TTL_S,
        "token_type": "bearer",
    }


class Identity:
    """Identity and access control of one kernel process (see the module docstring).

    ``auth`` and ``gateway`` are the validated ``[kernel.auth]`` / ``[kernel.gateway]``
    sections of ``plugins.toml``.
    """

    def __init__(
        self,
        db: Database,
        cache: Cache,
        clock: MarketClock,
        tokens: TokenIssuer,
        auth: Mapping[str, Any],
        gateway: Mapping[str, Any],
    ) -> None:
        self.db = db
        self.cache = cache
        self.tokens = tokens
        self.wall = tokens.wall
        self.auth = auth
        self.gateway = gateway
        self.rbac = RbacCache(db, cache, float(auth["rbac_poll_s"]))
        self.sessions = SessionService(db, cache, self.wall, float(auth["refresh_reuse_grace_s"]))
        self.two_factor = TwoFactorService(db, tokens, self.wall, auth["totp_issuer"])
        self.resets = PasswordResetService(
            db,
            self.wall,
            clock,
            self.sessions,
            ttl_s=int(auth["password_reset_ttl_s"]),
            max_active=int(auth["password_reset_max_active"]),
        )
        self.autologin = AutologinService(
            cache,
            self.wall,
            organic_ttl_s=int(auth["autologin_organic_minutes"]) * 60,
            affiliate_ttl_s=int(auth["autologin_expiry_hours"]) * 3600,
        )
        self.teams = TeamService(db, self.wall, self.rbac.changed)
        self.roles = RoleService(db, self.wall, self.rbac.changed)
        self.users = StaffDirectory(db, cache, self.wall, self.sessions, self.rbac.changed)
        self.partners = PartnerService(db, tokens, self.wall, self.rbac.changed)

    async def start(self) -> None:
        await self.rbac.start()

    def rate_window(self, bucket: str, limit: str) -> Window | None:
        """The current window of ``bucket`` under the ``[kernel.gateway]`` limit named
        ``limit`` (e.g. ``rate_limit_per_user``); None when that limit is 0 (off)."""
        allowed = int(self.gateway[limit])
        if allowed == 0:
            return None
        return window(bucket, allowed, int(self.gateway["rate_limit_window_s"]), self.wall.time())

    async def stop(self) -> None:
        await self.rbac.stop()

    # --- claims -------------------------------------------------------------------

    @staticmethod
    def _staff_claims(user: StaffUser, role: Role | None, sid: str) -> dict[str, Any]:
        """Access-token claims of a staff user. Permissions are not in the token: every
        request reads them from the RBAC cache."""
        return {
            "type": "user",
            "sid": sid,
            "role": role.name if role is not None else None,
            "role_id": user.role_id,
            "team_id": user.team_id,
        }

    @staticmethod
    async def _accounts(session: AsyncSession, customer_id: str) -> list[TradingAccount]:
        rows = await session.scalars(
            select(TradingAccount)
            .where(TradingAccount.customer_id == customer_id)
            .order_by(TradingAccount.login)
        )
        return list(rows)

    @staticmethod
    def customer_claims(
        customer: Customer, accounts: list[TradingAccount], sid: str
    ) -> dict[str, Any]:
        """Seed section 2: ``login`` (primary active account), ``logins`` (all active),
        ``compliance_status`` and ``force_password_change``."""
        logins = [a.login for a in accounts if a.is_active]
        return {
            "type": "customer",
            "sid": sid,
            "login": logins[0] if logins else None,
            "logins": logins,
            "compliance_status": customer.compliance_status,
            "force_password_change": customer.force_password_change,
        }

    # --- logins --------------------------------------------------------------------

    async def staff_login(
        self, email: str, password: str, totp_code: str | None, client: Client
    ) -> dict[str, Any]:
        """Log a staff user in: tokens and ``user``, or ``{"requires_2fa": true, ...}``.

        Raises IdentityError 401 (wrong credentials or 2FA code) or 403 (disabled).
        """
        async with self.db.read() as session:
            found = await session.scalar(
                select(StaffUser).where(StaffUser.email == email.strip().lower())
            )
        stored = found.password_hash if found else None
        if not await verify_password_async(stored, password) or found is None:
            raise IdentityError(401, WRONG_CREDENTIALS)
        rehashed = (
            await hash_password_async(password)
            if password_needs_rehash(found.password_hash)
            else None
        )
        async with self.db.transaction() as session:
            user = await session.get(StaffUser, found.id, with_for_update=True)
            if user is None or user.password_hash != stored:
                raise IdentityError(401, WRONG_CREDENTIALS)  # changed meanwhile
            if not user.is_active:
                raise IdentityError(403, DISABLED)
            if await self.two_factor.enabled(session, user.id):
                if not totp_code:
                    return {"requires_2fa": True, "message": "Enter your 2FA code"}
                if not await self.two_factor.check(session, user.id, totp_code):
                    raise IdentityError(401, "Invalid 2FA code")
            if rehashed is not None:
                user.password_hash = rehashed
            user.last_login_at = self.wall.now()
            auth, refresh = self.sessions.open(session, "user", user.id, client.device, client.ip)
            role = await session.get(Role, user.role_id)
            claims = self._staff_claims(user, role, auth.id)
        body = token_body(self.tokens.issue(user.id, claims), refresh)
        body["user"] = user_json(user)
        return body

    async def customer_login(self, email: str, password: str, client: Client) -> dict[str, Any]:
        """Log a trader in (tokens and ``customer``); IdentityError 401 (wrong
        credentials or no password set) or 403 (disabled)."""
        async with self.db.read() as session:
            found = await session.scalar(
                select(Customer).where(Customer.email == email.strip().lower())
            )
        stored = found.password_hash if found else None
        if not await verify_password_async(stored, password) or found is None or stored is None:
            raise IdentityError(401, WRONG_CREDENTIALS)
        rehashed = await hash_password_async(password) if password_needs_rehash(stored) else None
        async with self.db.transaction() as session:
            customer = await session.get(Customer, found.id, with_for_update=True)
            if customer is None or customer.password_hash != stored:
                raise IdentityError(401, WRONG_CREDENTIALS)  # changed meanwhile
            if not customer.is_active:
                raise IdentityError(403, DISABLED)
            if rehashed is not None:
                customer.password_hash = rehashed
            return await self._customer_session(session, customer, client)

    async def customer_autologin(self, token: str, client: Client) -> dict[str, Any]:
        """Redeem a one-time autologin token: the customer login response.

        Raises IdentityError 401 (invalid, used or expired) or 403 (disabled).
        """
        customer_id = await self.autologin.redeem(token)
        if customer_id is None:
            raise IdentityError(401, "Autologin token invalid, already used, or expired")
        return await self.customer_session(customer_id, client)

    async def customer_session(self, customer_id: str, client: Client) -> dict[str, Any]:
        """Open a session for a customer without a password (autologin, operator tools,
        benchmarks): the customer login response. Raises IdentityError 404 (unknown)
        or 403 (disabled)."""
        async with self.db.transaction() as session:
            customer = await session.get(Customer, customer_id)
            if customer is None:
                raise IdentityError(404, "Customer not found")
            if not customer.is_active:
                raise IdentityError(403, DISABLED)
            return await self._customer_session(session, customer, client)

    async def _customer_session(
        self, session: AsyncSession, customer: Customer, client: Client
    ) -> dict[str, Any]:
        accounts = await self._accounts(session, customer.id)
        auth, refresh = self.sessions.open(
            session, "customer", customer.id, client.device, client.ip
        )
        claims = self.customer_claims(customer, accounts, auth.id)
        body = token_body(self.tokens.issue(customer.id, claims), refresh)
        body["customer"] = customer_json(customer, accounts)
        return body

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Rotate a refresh token: a new access token with the subject's current
        claims and the next refresh token. Raises IdentityError 401."""
        try:
            refreshed = await self.sessions.rotate(refresh_token)
        except RefreshError as exc:
            raise IdentityError(401, REFRESH_REFUSED) from exc
        auth = refreshed.session
        async with self.db.read() as session:
            if auth.subject_type == "user":
                user = await session.get(StaffUser, auth.subject_id)
                active = user is not None and user.is_active
                if user is not None and active:
                    role = await session.get(Role, user.role_id)
                    claims = self._staff_claims(user, role, auth.id)
            else:
                customer = await session.get(Customer, auth.subject_id)
                active = customer is not None and customer.is_active
                if customer is not None and active:
                    accounts = await self._accounts(session, customer.id)
                    claims = self.customer_claims(customer, accounts, auth.id)
        if not active:
            await self.sessions.revoke(
                auth.subject_type, auth.subject_id, only=auth.id, reason="account_disabled"
            )
            raise IdentityError(401, REFRESH_REFUSED)
        return token_body(self.tokens.issue(auth.subject_id, claims), refreshed.refresh_token)

    async def set_customer_password(
        self, customer_id: str, sid: str, new_password: str, current_password: str | None
    ) -> str:
        """Set a trader's password, clear ``force_password_change`` and revoke their
        other sessions; returns a fresh access token for this session.

        ``current_password`` is required unless a password change is forced (an
        auto-generated password); raises IdentityError 422 when it is missing or wrong.
        """
        async with self.db.read() as session:
            found = await session.get(Customer, customer_id)
        if found is None or not found.is_active:
            raise IdentityError(403, DISABLED)
        if not found.force_password_change:
            if current_password is None:
                raise IdentityError(
                    422,
                    [
                        {
                            "loc": ["body", "current_password"],
                            "msg": "required unless a password change is forced",
                            "type": "required",
                        }
                    ],
                )
            if not await verify_password_async(found.password_hash, current_password):
                raise IdentityError(
                    422,
                    [
                        {
                            "loc": ["body", "current_password"],
                            "msg": "incorrect password",
                            "type": "value",
                        }
                    ],
                )
        new_hash = await hash_password_async(new_password)
        async with self.db.transaction() as session:
            customer = await session.get(Customer, customer_id, with_for_update=True)
            if customer is None or customer.password_hash != found.password_hash:
                raise IdentityError(409, "The password was changed meanwhile; try again")
            customer.password_hash = new_hash
            customer.force_password_change = False
            await self.sessions.revoke(
                "customer", customer_id, keep=sid, reason="password_changed", session=session
            )
            claims = self.customer_claims(customer, await self._accounts(session, customer_id), sid)
        return self.tokens.issue(customer_id, claims)
