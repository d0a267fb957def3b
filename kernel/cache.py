"""The cache port: one interface, two implementations.

:class:`RedisCache` (``REDIS_URL``) is shared by every kernel process: order request
status, idempotency records, rate-limit windows, one-time tokens. :class:`MemoryCache`
serves the single-process embedded default. TTLs are infrastructure timeouts and run
on monotonic time, not on the market clock.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from redis.asyncio import Redis


class Cache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None: ...

    async def set_many(self, items: dict[str, str], ttl_s: float | None = None) -> None:
        """Set several keys at once (one round trip on Redis)."""

    async def set_nx(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        """Set only if absent; True when this call set it."""

    async def getdel(self, key: str) -> str | None:
        """Read and delete atomically (one-time tokens)."""

    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str, ttl_s: float) -> int:
        """Increment a counter; the TTL starts with the first increment (rate windows)."""

    async def get_incr(self, key: str, counter: str, ttl_s: float) -> tuple[str | None, int]:
        """Read ``key`` and :meth:`incr` ``counter`` in one round trip (the gateway's
        revocation check and rate count of an authenticated request)."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCache:
    """In-process cache for one kernel process (expired keys are dropped lazily)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}

    def _live(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        self._data[key] = (value, None if ttl_s is None else time.monotonic() + ttl_s)

    async def set_many(self, items: dict[str, str], ttl_s: float | None = None) -> None:
        expires = None if ttl_s is None else time.monotonic() + ttl_s
        for key, value in items.items():
            self._data[key] = (value, expires)

    async def set_nx(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def getdel(self, key: str) -> str | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, ttl_s: float) -> int:
        current = self._live(key)
        count = 1 if current is None else int(current) + 1
        expires = self._data[key][1] if current is not None else time.monotonic() + ttl_s
        self._data[key] = (str(count), expires)
        return count

    async def get_incr(self, key: str, counter: str, ttl_s: float) -> tuple[str | None, int]:
        return self._live(key), await self.incr(counter, ttl_s)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """The cache port on Redis (shared by all kernel processes)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @classmethod
    def from_url(cls, url: str) -> RedisCache:
        return cls(Redis.from_url(url, decode_responses=True))

    async def get(self, key: str) -> str | None:
        value: Any = await self.redis.get(key)
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        await self.redis.set(key, value, px=None if ttl_s is None else int(ttl_s * 1000))

    async def set_many(self, items: dict[str, str], ttl_s: float | None = None) -> None:
        px = None if ttl_s is None else int(ttl_s * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=px)
            await pipe.execute()

    async def set_nx(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        px = None if ttl_s is None else int(ttl_s * 1000)
        return bool(await self.redis.set(key, value, px=px, nx=True))

    async def getdel(self, key: str) -> str | None:
        value: Any = await self.redis.getdel(key)
        return None if value is None else str(value)

    async def delete(self, key: str) -> None:
        await self.redis.delete(key)

    async def incr(self, key: str, ttl_s: float) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, int(ttl_s * 1000), nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def get_incr(self, key: str, counter: str, ttl_s: float) -> tuple[str | None, int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.incr(counter)
            pipe.pexpire(counter, int(ttl_s * 1000), nx=True)
            value, count, _ = await pipe.execute()
        return None if value is None else str(value), int(count)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.redis.aclose()
