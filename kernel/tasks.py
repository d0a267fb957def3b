"""Stopping background tasks: the one shutdown step every long-running worker shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, Final

RECANCEL_S: Final = 1.0
"""How long :func:`cancel_and_wait` waits before cancelling a task that is still
running again: a cancellation can be lost. On CPython 3.11, ``asyncio.wait_for``
returns its inner result and drops the caller's cancellation when both happen in the
same loop pass (python/cpython#86296, fixed in 3.12 by basing ``wait_for`` on
``asyncio.timeout``); redis-py sends every command through ``wait_for`` when the
connection has a socket timeout (redis-py 8: 5 s by default), so a poll loop
cancelled during a Redis call could carry on to its next sleep and never end."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None], *also: Awaitable[Any]) -> None:
    """Cancel every task of ``tasks`` (None entries skipped) and wait until each has
    ended, together with ``also`` (awaited, not cancelled). A task still running
    :data:`RECANCEL_S` after its cancellation is cancelled again, until it ends. Their
    results, errors and cancellations are swallowed: this is a shutdown path. A
    cancellation of the caller itself still propagates."""
    pending = {task for task in tasks if task is not None}
    ending = asyncio.gather(*also, return_exceptions=True)
    try:
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        await ending
    except asyncio.CancelledError:
        ending.cancel()
        raise


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: its chain of awaits, outermost first, as
    ``qualname (file:line) -> ...`` (for logging a task that does not end)."""
    steps = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break  # a future (or a C-level iterator over one): the bottom of the chain
        where = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        steps.append(f"{awaited.__qualname__} ({where})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " -> ".join(steps)
