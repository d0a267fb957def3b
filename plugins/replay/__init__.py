"""The ``replay`` price-feed plugin: replays recorded market data and drives market time.

Enable it in ``plugins.toml``::

    [plugins.replay]
    data_dir = "../shared/data/market"
    symbols = ["EURUSD", "XAUUSD"]
    start = "2014-05-07"
    days = 1
    speed = 1          # multiple of real time, or "max"
    loop = false

Ticks (UTC ms, ``Decimal`` prices in quote currency, provider ``"replay"``) go to the
kernel's quote book; crossed quotes are dropped and counted, never served.
"""

from __future__ import annotations

from collections.abc import Iterator

from brokerkernel.kernel.descriptors import PriceFeed
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.plugins.replay.config import CONFIG_SCHEMA
from brokerkernel.plugins.replay.feed import ReplayFeed, ReplayStats

__all__ = ["CONFIG_SCHEMA", "ReplayFeed", "ReplayStats", "broker_register_price_feeds"]


@hookimpl
def broker_register_price_feeds() -> Iterator[PriceFeed]:
    """The ``replay`` feed; it drives the market clock with its tick times."""
    yield PriceFeed(name="replay", factory=ReplayFeed.from_context, drives_clock=True)
