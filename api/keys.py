"""Typed application keys (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from aiohttp import web

from brokerkernel.kernel.runtime import Kernel

KERNEL = web.AppKey("kernel", Kernel)
