"""Fixed-window rate limits counted in the cache port (seed section 1).

A window of ``window_s`` seconds is numbered ``floor(now / window_s)`` on the wall
clock, so every process sharing the cache (Redis) counts into the same key
``rl:<bucket>:<window>``; the key expires with its window. Over the limit the answer
is 429 with ``Retry-After`` = the seconds left in the window (at least 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """The counter of one bucket in the current window."""

    key: str
    limit: int
    window_s: int
    retry_after_s: int


def window(bucket: str, limit: int, window_s: int, now: float) -> Window:
    """The current window of ``bucket`` (e.g. ``user:<id>``, ``register:<ip>``);
    ``now`` in seconds since the epoch."""
    index = int(now // window_s)
    retry_after = max(1, math.ceil((index + 1) * window_s - now))
    return Window(f"rl:{bucket}:{index}", limit, window_s, retry_after)


@dataclass(frozen=True, slots=True)
class Counted:
    """A request already counted in ``window`` (``count`` includes it)."""

    window: Window
    count: int
