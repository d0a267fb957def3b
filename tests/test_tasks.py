"""kernel/tasks.py: stopping background tasks on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.tasks import awaiting, cancel_and_wait


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


async def test_cancel_and_wait_ends_a_task_that_lost_its_cancellation() -> None:
    """A cancellation dropped by the task (CPython 3.11 ``asyncio.wait_for``, inside
    redis-py) is repeated until the task ends, instead of waiting forever."""
    ticks: list[str] = []

    async def poll_loop() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                ticks.append("cancellation lost")  # as wait_for's race drops it
                if len(ticks) == 1:
                    continue
                raise

    loop = asyncio.create_task(poll_loop())
    await asyncio.sleep(0)
    async with asyncio.timeout(30):  # a hang guard, not a timing
        await cancel_and_wait([loop])
    assert (loop.cancelled(), ticks) == (True, ["cancellation lost", "cancellation lost"])


async def test_cancel_and_wait_propagates_the_callers_cancellation() -> None:
    stubborn_ended = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stubborn_ended.set()
            raise

    other = asyncio.create_task(asyncio.Event().wait())
    also = asyncio.create_task(stubborn())
    stopper = asyncio.create_task(cancel_and_wait([other], also))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper
    await asyncio.sleep(0)
    assert (stopper.cancelled(), other.cancelled(), also.cancelled()) == (True, True, True)
    assert stubborn_ended.is_set()


async def test_awaiting_names_where_a_task_waits() -> None:
    async def inner() -> None:
        await asyncio.Event().wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    chain = awaiting(task).split(" -> ")
    await cancel_and_wait([task])
    assert [step.split(" (")[0] for step in chain] == [
        "test_awaiting_names_where_a_task_waits.<locals>.outer",
        "test_awaiting_names_where_a_task_waits.<locals>.inner",
        "Event.wait",
    ]
    assert chain[0].endswith(f"(test_tasks.py:{outer.__code__.co_firstlineno + 1})")


async def test_a_shutdown_step_that_hangs_or_fails_is_logged_and_the_shutdown_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="brokerkernel.kernel.runtime"):
        await Kernel._stop_step("stuck", hangs(), timeout_s=0.05)
        await Kernel._stop_step("broken", fails())
        await Kernel._stop_step("fine", asyncio.sleep(0))
    stuck, broken = caplog.records
    message, line = stuck.getMessage().rsplit(":", 1)  # the line in CPython's asyncio
    assert message == (
        "shutdown: stuck did not stop within 0 s; abandoning it. It waits in: "
        "test_a_shutdown_step_that_hangs_or_fails_is_logged_and_the_shutdown_goes_on"
        f".<locals>.hangs (test_tasks.py:{hangs.__code__.co_firstlineno + 1}) -> "
        "Event.wait (locks.py"
    )
    assert line[:-1].isdigit() and line.endswith(")")
    assert (broken.getMessage(), repr(broken.exc_info[1] if broken.exc_info else None)) == (
        "shutdown: broken failed",
        "RuntimeError('boom')",
    )
