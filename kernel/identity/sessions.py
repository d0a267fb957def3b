"""Login sessions, rotating refresh tokens and immediate revocation (seed section 2).

A login opens an :class:`~brokerkernel.kernel.identity.models.AuthSession`; its id is
the ``sid`` claim of every access token issued for it. Refresh tokens are opaque
random strings (only their SHA-256 is stored), valid 7 days and used once: each
exchange rotates them. Presenting an already rotated token again, later than
``reuse_grace_s`` after its rotation, is treated as theft and revokes the session
(the token family); within the grace two concurrent refreshes of one client both
succeed. Revoking a session writes ``session:revoked:<sid>`` to the cache port for
the lifetime of an access token, and the gateway checks it on every request, so
the session's tokens stop working at once on every process.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.identity.models import AuthSession, RefreshToken
from brokerkernel.kernel.identity.ratelimit import Window
from brokerkernel.kernel.security import ACCESS_TTL_S, REFRESH_TTL_S, WallClock, digest
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import new_id

REVOKED_PREFIX = "session:revoked:"
#: The revocation marker outlives every access token of the session.
REVOKED_TTL_S = ACCESS_TTL_S + 60


class RefreshError(Exception):
    """The refresh token is unknown, expired, revoked or was reused after rotation."""


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A successful exchange: the session and the new refresh token (shown once)."""

    session: AuthSession
    refresh_token: str


class SessionService:
    """Opens, rotates, lists and revokes sessions (see the module docstring)."""

    def __init__(
        self, db: Database, cache: Cache, wall: WallClock, reuse_grace_s: float = 10.0
    ) -> None:
        self._db = db
        self._cache = cache
        self._wall = wall
        self._grace = timedelta(seconds=reuse_grace_s)

    def _new_refresh(self, session_id: str) -> tuple[RefreshToken, str]:
        now = self._wall.now()
        token = secrets.token_urlsafe(32)
        row = RefreshToken(
            id=new_id(),
            session_id=session_id,
            token_hash=digest(token),
            issued_at=now,
            expires_at=now + timedelta(seconds=REFRESH_TTL_S),
            rotated_at=None,
        )
        return row, token

    def open(
        self,
        session: AsyncSession,
        subject_type: str,
        subject_id: str,
        device: str | None,
        ip: str | None,
    ) -> tuple[AuthSession, str]:
        """Stage a new session and its first refresh token in the caller's unit of work.

        ``subject_type`` is "user" (staff) or "customer"; ``device`` the User-Agent.
        Returns the session and the refresh token (plaintext, shown once).
        """
        now = self._wall.now()
        auth = AuthSession(
            id=new_id(),
            subject_type=subject_type,
            subject_id=subject_id,
            device=(device or "")[:512] or None,
            ip=ip,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=REFRESH_TTL_S),
            revoked_at=None,
            revoked_reason=None,
        )
        session.add(auth)
        row, token = self._new_refresh(auth.id)
        session.add(row)
        return auth, token

    async def rotate(self, refresh_token: str) -> Refreshed:
        """Exchange ``refresh_token`` for a new one; raises RefreshError.

        Reuse of a rotated token outside the grace window revokes the session first.
        """
        now = self._wall.now()
        reused: str | None = None
        result: Refreshed | None = None
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(RefreshToken)
                .where(RefreshToken.token_hash == digest(refresh_token))
                .with_for_update()
            )
            if row is not None:
                auth = await session.get(AuthSession, row.session_id, with_for_update=True)
                usable = (
                    auth is not None
                    and auth.revoked_at is None
                    and auth.expires_at > now
                    and row.expires_at > now
                )
                if auth is not None and usable:
                    if row.rotated_at is not None and now - row.rotated_at > self._grace:
                        auth.revoked_at, auth.revoked_reason = now, "refresh_reuse"
                        reused = auth.id
                    else:
                        row.rotated_at = row.rotated_at or now
                        successor, token = self._new_refresh(auth.id)
                        session.add(successor)
                        auth.last_used_at = now
                        auth.expires_at = successor.expires_at
                        result = Refreshed(auth, token)
        if reused is not None:
            await self._mark_revoked([reused])
        if result is None:
            raise RefreshError("Invalid, expired, or revoked refresh token")
        return result

    async def active(self, subject_type: str, subject_id: str) -> list[AuthSession]:
        """The subject's sessions that are neither revoked nor expired, newest first."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(AuthSession)
                .where(
                    AuthSession.subject_type == subject_type,
                    AuthSession.subject_id == subject_id,
                    AuthSession.revoked_at.is_(None),
                    AuthSession.expires_at > self._wall.now(),
                )
                .order_by(AuthSession.created_at.desc(), AuthSession.id)
            )
            return list(rows)

    async def revoke(
        self,
        subject_type: str,
        subject_id: str,
        *,
        only: str | None = None,
        keep: str | None = None,
        reason: str = "revoked",
        session: AsyncSession | None = None,
    ) -> int:
        """Revoke the subject's active sessions (``only`` one, or all but ``keep``).

        Runs in ``session`` when given (the revocation commits with the caller's
        change; the cache markers are written at once, which only errs on the safe
        side), else in its own unit of work. Returns how many were revoked.
        """
        if session is None:
            async with self._db.transaction() as own:
                return await self.revoke(
                    subject_type, subject_id, only=only, keep=keep, reason=reason, session=own
                )
        query = select(AuthSession.id).where(
            AuthSession.subject_type == subject_type,
            AuthSession.subject_id == subject_id,
            AuthSession.revoked_at.is_(None),
        )
        if only is not None:
            query = query.where(AuthSession.id == only)
        if keep is not None:
            query = query.where(AuthSession.id != keep)
        ids = list(await session.scalars(query.with_for_update()))
        if ids:
            await session.execute(
                update(AuthSession)
                .where(AuthSession.id.in_(ids))
                .values(revoked_at=self._wall.now(), revoked_reason=reason)
            )
            await self._mark_revoked(ids)
        return len(ids)

    async def is_revoked(self, session_id: str) -> bool:
        """Whether the session's access tokens were revoked (one cache read)."""
        return await self._cache.get(REVOKED_PREFIX + session_id) is not None

    async def is_revoked_counting(self, session_id: str, window: Window) -> tuple[bool, int]:
        """:meth:`is_revoked` and the request counted in ``window``, in one round trip."""
        value, count = await self._cache.get_incr(
            REVOKED_PREFIX + session_id, window.key, window.window_s
        )
        return value is not None, count

    async def _mark_revoked(self, session_ids: list[str]) -> None:
        for session_id in session_ids:
            await self._cache.set(REVOKED_PREFIX + session_id, "1", REVOKED_TTL_S)
