"""The kernel's market clock: the only source of "now" in the kernel.

With the replay (or manual) feed as clock source the clock follows the tick
timestamps, so day resets, staleness, swaps and trading days behave as on the
replayed day; otherwise it is wall time. Nothing else in the kernel reads the
wall clock. The clock never moves backwards.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class MarketClock:
    """UTC time source. ``driven=True`` makes it follow :meth:`advance_to_ms`."""

    def __init__(self, driven: bool = False, start_ms: int | None = None) -> None:
        self.driven = driven
        self._now_ms = start_ms if start_ms is not None else int(time.time() * 1000)

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        if self.driven:
            return self._now_ms
        return int(time.time() * 1000)

    def now(self) -> datetime:
        """The current market time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_ms() / 1000, tz=UTC)

    def advance_to_ms(self, time_ms: int) -> None:
        """Move a driven clock forward to ``time_ms``; earlier times are ignored."""
        if time_ms > self._now_ms:
            self._now_ms = time_ms
