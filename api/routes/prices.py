"""Latest prices (seed section 14). A quote older than 60 s by the market clock has
expired from the cache: it is left out of the list and its symbol answers 404."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from brokerkernel.api.errors import not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.pricing import Quote

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

PRICE_TTL_MS = 60_000


def price_json(quote: Quote) -> dict[str, Any]:
    return {
        "symbol": quote.symbol,
        "bid": quote.bid,
        "ask": quote.ask,
        "mid": quote.mid,
        "timestamp_ms": quote.time_ms,
        "provider": quote.provider,
    }


async def all_prices(request: web.Request) -> web.Response:
    kernel = request.app[KERNEL]
    now_ms = kernel.clock.now_ms()
    prices = [
        price_json(q)
        for q in sorted(kernel.quotes.all(), key=lambda q: q.symbol)
        if now_ms - q.time_ms <= PRICE_TTL_MS
    ]
    return respond({"prices": prices, "count": len(prices)})


async def one_price(request: web.Request) -> web.Response:
    """One symbol; ``EUR%2FUSD`` and ``EUR/USD`` style names resolve to ``EURUSD``."""
    kernel = request.app[KERNEL]
    symbol = unquote(request.match_info["symbol"]).replace("/", "").upper()
    quote = kernel.quotes.fresh(symbol, PRICE_TTL_MS)
    if quote is None:
        raise not_found(f"Symbol {symbol} not active or price expired")
    return respond(price_json(quote))


def setup(router: Router) -> None:
    router.add("GET", "/api/prices", all_prices, legacy="/prices")
    router.add("GET", "/api/prices/{symbol}", one_price, legacy="/prices/{symbol}")
