"""The ``manual`` pricing plugin: dealing-desk quotes.

Staff with the ``manage_prices`` permission push quotes with
``POST /api/platform/prices/{symbol}`` ``{"bid": ..., "ask": ..., "time": ...}``; each
quote goes through the kernel's price path like any feed tick (quote book, market
clock, subscribers) with provider ``"manual"``. With ``[kernel] clock = "manual"``
the quotes' times drive the market clock, so day resets, swaps, expiries and
staleness can be exercised deterministically. Enable it with::

    [kernel]
    clock = "manual"       # optional: let dealer quotes drive market time

    [plugins.manual]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from brokerkernel.kernel.descriptors import HttpRoutes, PriceFeed
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.plugins.manual.feed import ManualFeed
from brokerkernel.plugins.manual.routes import setup_routes

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {},
}

__all__ = ["CONFIG_SCHEMA", "ManualFeed", "broker_register_price_feeds", "broker_register_routes"]


@hookimpl
def broker_register_price_feeds() -> Iterator[PriceFeed]:
    """The ``manual`` feed; it drives the market clock when ``[kernel] clock = "manual"``."""
    yield PriceFeed(name="manual", factory=ManualFeed, drives_clock=True)


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    """``POST /api/platform/prices/{symbol}``."""
    yield HttpRoutes(name="manual_prices", setup=setup_routes)
