"""``brokerkernel serve``: the API in one process, or in N forked worker processes.

With ``--workers N`` (N > 1) the parent validates the configuration, then forks N
workers; each builds its own kernel and serves the API on the same host and port
with ``SO_REUSEPORT``, so the operating system spreads connections across them.
Workers share state only through PostgreSQL and Redis (the feed leader lock, tick and
account pub/sub, the event stream), so N > 1 is refused unless ``DATABASE_URL`` is
PostgreSQL and ``REDIS_URL`` is set (ARCHITECTURE.md, "Scale-out").

The parent forwards SIGTERM and SIGINT to the workers (as SIGTERM; each worker runs
in its own process group, so a terminal's Ctrl+C reaches them once, through the
parent) and waits. When a worker exits on its own the parent stops the others and
exits 1.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvloop
from sqlalchemy.engine import make_url

from brokerkernel.kernel.plugins import PluginManager
from brokerkernel.kernel.runtime import Settings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

#: ``gc.set_threshold``: net container allocations between young-generation
#: collections 10,000 (CPython's default: 700), the older generations at the default
#: ratios (10, 10), so cyclic garbage is still collected steadily. The request path
#: allocates many short-lived objects; with the defaults, collections (full ones
#: included) took ~14% of bench_orders' server CPU.
GC_THRESHOLDS = (10_000, 10, 10)


def workers_refused(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot run on ``settings``' backends (None: they can)."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers == 1:
        return None
    missing = []
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        missing.append("DATABASE_URL=postgresql+asyncpg://...")
    if settings.redis_url is None:
        missing.append("REDIS_URL=redis://...")
    if not missing:
        return None
    return (
        f"--workers {workers} needs {' and '.join(missing)}: SQLite and the in-process "
        "cache and bus serve exactly one process"
    )


def serve(host: str, port: int, config: Path, workers: int = 1) -> int:
    """Run the API server until stopped; returns the process exit status.

    Exit 2 when ``workers`` is refused (message on stderr) or the configuration is
    invalid (``ConfigError`` propagates to the CLI).
    """
    settings = Settings.from_env(config)
    refused = workers_refused(settings, workers)
    if refused is not None:
        print(refused, file=sys.stderr)
        return 2
    if workers == 1:
        _run_worker(settings, host, port, reuse_port=False)
        return 0
    PluginManager.load(config, settings.env)  # refuse a bad config before forking
    pids: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            os.setpgid(0, 0)
            status = 1
            try:
                _run_worker(settings, host, port, reuse_port=True)
                status = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(status)
        pids.add(pid)
    log.info("serving on %s:%d with %d workers: %s", host, port, workers, sorted(pids))
    return _supervise(pids)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop the server runs on: uvloop (libuv); with it the API took ~8%
    less CPU per market order than on asyncio's default loop
    (``benchmarks/bench_orders.py --loop``)."""
    return uvloop.new_event_loop()


def tune_started_gc() -> None:
    """Set this process's collector up for serving, once its kernel (accounts,
    positions, the risk engine's arrays) has started: :data:`GC_THRESHOLDS`, and
    ``gc.freeze()`` the long-lived objects built so far so full collections stop
    walking them (one cost 145 ms of CPU in bench_orders, a latency spike). Frozen
    objects are still freed by reference counting when released; only cycles among
    them are never collected. For server processes only (not tests, which build many
    kernels in one process)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def tune_gc(app: web.Application) -> web.Application:
    """Run :func:`tune_started_gc` once ``app`` (and its kernel) has started."""

    async def freeze(_app: web.Application) -> None:
        tune_started_gc()

    app.on_startup.append(freeze)
    return app


def _run_worker(settings: Settings, host: str, port: int, *, reuse_port: bool) -> None:
    from aiohttp import web

    from brokerkernel.api.app import create_app
    from brokerkernel.kernel.runtime import Kernel

    kernel = Kernel(settings)
    web.run_app(
        tune_gc(create_app(kernel)),
        host=host,
        port=port,
        access_log=None,
        reuse_port=reuse_port or None,
        loop=new_event_loop(),
    )


def _supervise(pids: set[int]) -> int:
    """Wait for the workers; forward stop signals; stop all when one dies."""
    alive = set(pids)
    stopping = False
    status = 0

    def stop_workers(signum: int, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in alive:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue

    signal.signal(signal.SIGTERM, stop_workers)
    signal.signal(signal.SIGINT, stop_workers)
    while alive:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if not stopping:
            log.error("worker %d exited (%d); stopping the other workers", pid, code)
            status = 1
            stop_workers(signal.SIGTERM)
        elif code != 0:
            status = 1
    return status
