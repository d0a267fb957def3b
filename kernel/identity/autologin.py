"""One-time autologin tokens (seed section 2, ``GET /api/customer/autologin``).

A token is a random UUID kept in the cache port under its SHA-256 (so a cache dump
holds no usable token) and burned atomically on redemption (Redis ``GETDEL``; the
in-process cache deletes in the same step). It lives 15 minutes for organic
registrations and ``AUTOLOGIN_EXPIRY_HOURS`` (default 72) for affiliate ones; the
expiry is also stored in the value and checked against the wall clock.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from brokerkernel.kernel.cache import Cache
from brokerkernel.kernel.security import WallClock, digest

PREFIX = "autologin:"


class AutologinService:
    """Issues and redeems autologin tokens (see the module docstring)."""

    def __init__(
        self, cache: Cache, wall: WallClock, organic_ttl_s: int, affiliate_ttl_s: int
    ) -> None:
        self._cache = cache
        self._wall = wall
        self._organic_ttl_s = organic_ttl_s
        self._affiliate_ttl_s = affiliate_ttl_s

    async def issue(self, customer_id: str, *, affiliate: bool) -> tuple[str, datetime]:
        """A new token for ``customer_id``: ``(token, expires_at UTC)``."""
        ttl = self._affiliate_ttl_s if affiliate else self._organic_ttl_s
        expires = self._wall.time() + ttl
        token = str(uuid.uuid4())
        value = json.dumps({"customer_id": customer_id, "expires": expires})
        await self._cache.set(PREFIX + digest(token), value, ttl)
        return token, datetime.fromtimestamp(expires, tz=UTC)

    async def redeem(self, token: str) -> str | None:
        """Burn ``token``; the customer id, or None when unknown, used or expired."""
        raw = await self._cache.getdel(PREFIX + digest(token))
        if raw is None:
            return None
        data = json.loads(raw)
        if float(data["expires"]) <= self._wall.time():
            return None
        return str(data["customer_id"])
