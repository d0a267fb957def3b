"""kernel/tasks.py: stopping background tasks on shutdown."""

from __future__ import annotations

import asyncio

from brokerkernel.kernel.tasks import cancel_and_wait


async def test_cancel_and_wait_ends_every_task_and_swallows_their_outcomes() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    running = asyncio.create_task(asyncio.Event().wait())
    crashed = asyncio.create_task(failing())
    await asyncio.sleep(0)  # both started; `crashed` has raised
    closing = asyncio.create_task(asyncio.sleep(0, "closed"))

    await cancel_and_wait([running, None, crashed], closing)

    assert (running.cancelled(), str(crashed.exception()), closing.result()) == (
        True,
        "boom",
        "closed",
    )
