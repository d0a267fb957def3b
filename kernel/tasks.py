"""Stopping background tasks: the one shutdown step every long-running worker shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None], *also: Awaitable[Any]) -> None:
    """Cancel every task of ``tasks`` (None entries skipped) and wait until each has
    ended, together with ``also`` (awaited, not cancelled). Their results, errors and
    cancellations are swallowed: this is a shutdown path. A cancellation of the caller
    itself still propagates (``asyncio.gather``)."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, *also, return_exceptions=True)
