"""Staff two-factor authentication: TOTP (RFC 6238) and single-use backup codes.

Seed section 2: setup returns a base32 secret and an ``otpauth://`` URI for
authenticator apps; verifying a first code enables 2FA and returns 10 backup codes
(shown once, stored as keyed digests); disabling needs a valid current code. Codes
are 6 digits over 30 s steps, accepted one step either side (clock drift); a code's
step is remembered, so an accepted code cannot be replayed. The seed is stored
sealed with AES-256-GCM (:class:`~brokerkernel.kernel.security.SecretBox`).
"""

from __future__ import annotations

import hmac
import secrets

import pyotp
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.models import BackupCode, StaffTotp
from brokerkernel.kernel.security import TokenIssuer, WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import new_id

STEP_S = 30
BACKUP_CODES = 10
INVALID_CODE = "Invalid 2FA code"


def _normalise(code: str) -> str:
    return code.strip().replace(" ", "").replace("-", "").lower()


class TwoFactorService:
    """TOTP setup, enabling, disabling and login checks for staff users."""

    def __init__(self, db: Database, tokens: TokenIssuer, wall: WallClock, issuer: str) -> None:
        self._db = db
        self._tokens = tokens
        self._box = tokens.box("totp")
        self._wall = wall
        self._issuer = issuer

    def _backup_hash(self, user_id: str, code: str) -> str:
        return self._tokens.keyed_digest(f"backup:{user_id}:{_normalise(code)}")

    async def setup(self, user_id: str, email: str) -> tuple[str, str]:
        """A new secret for ``user_id``: ``(base32 secret, otpauth URI)``.

        Raises IdentityError 400 when 2FA is already enabled (disable it first).
        """
        secret = pyotp.random_base32()
        now = self._wall.now()
        async with self._db.transaction() as session:
            row = await session.get(StaffTotp, user_id, with_for_update=True)
            if row is not None and row.enabled:
                raise IdentityError(400, "2FA is already enabled")
            if row is None:
                row = StaffTotp(user_id=user_id, enabled=False, created_at=now)
                session.add(row)
            row.secret_sealed = self._box.seal(secret)
            row.last_used_step = None
            row.created_at = now
        uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=self._issuer)
        return secret, uri

    def _match(self, row: StaffTotp, code: str) -> int | None:
        """The time step ``code`` belongs to (± one step), or None."""
        totp = pyotp.TOTP(self._box.open(row.secret_sealed))
        step = int(self._wall.time()) // STEP_S
        candidate = _normalise(code)
        for counter in (step - 1, step, step + 1):
            if hmac.compare_digest(totp.generate_otp(counter), candidate):
                return counter
        return None

    def _accept_totp(self, row: StaffTotp, code: str) -> bool:
        step = self._match(row, code)
        if step is None or (row.last_used_step is not None and step <= row.last_used_step):
            return False
        row.last_used_step = step
        return True

    async def enable(self, user_id: str, code: str) -> list[str]:
        """Enable 2FA with a first valid code; returns the 10 backup codes (shown once).

        Raises IdentityError 400 when setup was not run, 2FA is enabled, or the code is wrong.
        """
        codes = [secrets.token_hex(4) for _ in range(BACKUP_CODES)]
        now = self._wall.now()
        async with self._db.transaction() as session:
            row = await session.get(StaffTotp, user_id, with_for_update=True)
            if row is None:
                raise IdentityError(400, "2FA setup has not been started")
            if row.enabled:
                raise IdentityError(400, "2FA is already enabled")
            if not self._accept_totp(row, code):
                raise IdentityError(400, INVALID_CODE)
            row.enabled, row.enabled_at = True, now
            await session.execute(delete(BackupCode).where(BackupCode.user_id == user_id))
            for item in codes:
                session.add(
                    BackupCode(
                        id=new_id(),
                        user_id=user_id,
                        code_hash=self._backup_hash(user_id, item),
                        created_at=now,
                        used_at=None,
                    )
                )
        return codes

    async def disable(self, user_id: str, code: str) -> None:
        """Disable 2FA after checking a valid current TOTP code; drops the backup codes.

        Raises IdentityError 400 when 2FA is not enabled or the code is wrong.
        """
        async with self._db.transaction() as session:
            row = await session.get(StaffTotp, user_id, with_for_update=True)
            if row is None or not row.enabled:
                raise IdentityError(400, "2FA is not enabled")
            if not self._accept_totp(row, code):
                raise IdentityError(400, INVALID_CODE)
            await session.execute(delete(BackupCode).where(BackupCode.user_id == user_id))
            await session.delete(row)

    async def enabled(self, session: AsyncSession, user_id: str) -> bool:
        return bool(
            await session.scalar(select(StaffTotp.enabled).where(StaffTotp.user_id == user_id))
        )

    async def check(self, session: AsyncSession, user_id: str, code: str) -> bool:
        """At login: a current TOTP code, or an unused backup code (burned atomically)."""
        row = await session.get(StaffTotp, user_id, with_for_update=True)
        if row is None or not row.enabled:
            return False
        if self._accept_totp(row, code):
            return True
        burned = await session.execute(
            update(BackupCode)
            .where(
                BackupCode.user_id == user_id,
                BackupCode.code_hash == self._backup_hash(user_id, code),
                BackupCode.used_at.is_(None),
            )
            .values(used_at=self._wall.now())
        )
        return getattr(burned, "rowcount", 0) == 1
