"""Price data (seed section 14): latest prices, OHLC history, FX rates, feed health,
the outage log, providers and symbols.

Latest prices come from the quote book; a quote older than 60 s by the market clock
has expired from the cache, and an inactive instrument is not served: both are left
out of the list and answer 404 on their own. Every path also answers at its legacy
flat path. The fixed paths are registered before ``/api/prices/{symbol}``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.validation import FieldErrors, query_error
from brokerkernel.kernel.marketdata import bars as bar_store
from brokerkernel.kernel.marketdata.bars import TIMEFRAMES, utc_ms
from brokerkernel.kernel.marketdata.health import freshness, list_outages
from brokerkernel.kernel.marketdata.models import PriceOutage
from brokerkernel.kernel.pricing import ConversionUnavailable, Quote, currency_pair, significant
from brokerkernel.kernel.storage.models import Group, Instrument, TradingAccount

if TYPE_CHECKING:
    from brokerkernel.api.app import Router
    from brokerkernel.kernel.runtime import Kernel

PRICE_TTL_MS: Final = 60_000
"""A cached price expires this many ms after its tick (market clock; seed section 14)."""
HISTORY_LIMIT: Final = (500, 5000)
"""Default and maximum bars per ``/api/prices/history`` answer."""
OUTAGES_LIMIT: Final = (50, 500)
"""Default and maximum rows per ``/api/prices/outages`` answer."""
RATE_DIGITS: Final = 10
"""Significant digits of an FX rate in answers (inverses and crosses are not finite)."""
_CURRENCY: Final = re.compile(r"^[A-Za-z]{3}$")


def price_json(quote: Quote) -> dict[str, Any]:
    """A price as the seed shows it: bid/ask/mid in quote currency, ``timestamp_ms``
    the tick's UTC ms, ``provider`` the feed's name."""
    return {
        "symbol": quote.symbol,
        "bid": quote.bid,
        "ask": quote.ask,
        "mid": quote.mid,
        "timestamp_ms": quote.time_ms,
        "provider": quote.provider,
    }


def normalise_symbol(raw: str) -> str:
    """``EUR%2FUSD``, ``EUR/USD`` and ``eurusd`` all name ``EURUSD``."""
    return unquote(raw).replace("/", "").strip().upper()


def feed_symbols(kernel: Kernel) -> set[str]:
    """Symbols the configured price feeds quote, plus every symbol that has a quote."""
    symbols = {symbol for feed in kernel.feeds.values() for symbol in feed.symbols()}
    symbols.update(quote.symbol for quote in kernel.quotes.all())
    return symbols


def is_servable(kernel: Kernel, symbol: str) -> bool:
    """An active symbol of the catalog or of a feed (what prices and streams serve)."""
    instruments = kernel.market_data.instruments
    return instruments.is_active(symbol) and (
        instruments.known(symbol) or symbol in feed_symbols(kernel)
    )


# --- latest prices -----------------------------------------------------------------------


@operation(
    "Get all latest prices",
    tags=["Prices"],
    security="public",
)
async def all_prices(request: web.Request) -> web.Response:
    """Every active symbol's cached price (seed: ``{"prices": [...], "count": n}``)."""
    kernel = request.app[KERNEL]
    now_ms = kernel.clock.now_ms()
    instruments = kernel.market_data.instruments
    prices = [
        price_json(quote)
        for quote in sorted(kernel.quotes.all(), key=lambda q: q.symbol)
        if now_ms - quote.time_ms <= PRICE_TTL_MS and instruments.is_active(quote.symbol)
    ]
    return respond({"prices": prices, "count": len(prices)})


@operation(
    "Get single symbol price",
    tags=["Prices"],
    security="public",
)
async def one_price(request: web.Request) -> web.Response:
    """One symbol; 404 when it is inactive or its price expired (TTL 60 s)."""
    kernel = request.app[KERNEL]
    symbol = normalise_symbol(request.match_info["symbol"])
    quote = kernel.quotes.fresh(symbol, PRICE_TTL_MS)
    if quote is None or not kernel.market_data.instruments.is_active(symbol):
        raise not_found(f"Symbol {symbol} not active or price expired")
    return respond(price_json(quote))


# --- history --------------------------------------------------------------------------------


def _time_query(request: web.Request, name: str, errors: FieldErrors) -> int | None:
    """An ISO 8601 time (UTC when it has no offset) or UNIX seconds, as UTC ms."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        if raw.isdigit():
            return int(raw) * 1000
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        errors.append(query_error(name, "must be an ISO 8601 time or UNIX seconds", "datetime"))
        return None
    return utc_ms(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


@operation(
    "OHLC bars for charting",
    tags=["Prices"],
    query={
        "type": "object",
        "required": ["symbol"],
        "properties": {
            "symbol": {"type": "string"},
            "timeframe": {"enum": list(TIMEFRAMES), "default": "M1"},
            "from": {"type": "string", "description": "ISO 8601 or UNIX seconds (inclusive)"},
            "to": {"type": "string", "description": "ISO 8601 or UNIX seconds (inclusive)"},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "default": HISTORY_LIMIT[0],
                "maximum": HISTORY_LIMIT[1],
            },
        },
    },
    responses={404: "Unknown symbol"},
    security="public",
)
async def price_history(request: web.Request) -> web.Response:
    """OHLC bars for charting (seed section 14); query ``symbol`` (required),
    ``timeframe`` (M1 default), ``from``/``to`` (inclusive bounds on the bar's open
    time) and ``limit`` (500, at most 5000). 422 lists every bad parameter; 404 for a
    symbol neither the catalog nor a feed knows. ``time`` is the bar's open in UNIX
    seconds; ``volume`` its tick count."""
    kernel = request.app[KERNEL]
    errors: FieldErrors = []
    raw_symbol = request.query.get("symbol", "").strip()
    if not raw_symbol:
        errors.append(query_error("symbol", "field required", "required"))
    timeframe = request.query.get("timeframe", "M1").strip().upper() or "M1"
    if timeframe not in TIMEFRAMES:
        errors.append(query_error("timeframe", f"must be one of {', '.join(TIMEFRAMES)}", "enum"))
    from_ms = _time_query(request, "from", errors)
    to_ms = _time_query(request, "to", errors)
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        errors.append(query_error("from", "must not be after to", "range"))
    default, maximum = HISTORY_LIMIT
    limit = validation.query_int(
        request, "limit", default=default, minimum=1, maximum=maximum, errors=errors
    )
    if errors:
        raise ApiError(422, errors)
    assert limit is not None
    symbol = normalise_symbol(raw_symbol)
    market_data = kernel.market_data
    if not market_data.instruments.known(symbol) and symbol not in feed_symbols(kernel):
        raise not_found(f"Unknown symbol {symbol}")
    async with kernel.db.read() as session:
        bars = await bar_store.history(
            session,
            symbol,
            timeframe,
            from_ms=from_ms,
            to_ms=to_ms,
            limit=limit,
            pending=market_data.pending_bars(symbol, timeframe),
        )
    return respond(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "bars": [
                {
                    "time": bar.open_ms // 1000,
                    "open": bar.open,
                    "high": bar.high,
                    "low": bar.low,
                    "close": bar.close,
                    "volume": bar.volume,
                }
                for bar in bars
            ],
            "count": len(bars),
        }
    )


# --- FX rates --------------------------------------------------------------------------------


async def _used_currencies(kernel: Kernel) -> set[str]:
    """Every currency an active instrument, a group or an account uses."""
    async with kernel.db.read() as session:
        instruments = await session.execute(
            select(
                Instrument.base_currency, Instrument.quote_currency, Instrument.profit_currency
            ).where(Instrument.is_active.is_(True))
        )
        currencies = {currency for row in instruments for currency in row}
        currencies.update(await session.scalars(select(Group.currency).distinct()))
        currencies.update(await session.scalars(select(TradingAccount.currency).distinct()))
    return currencies


@operation(
    "Get all USD-based FX rates",
    tags=["Prices"],
    security="public",
)
async def fx_rates(request: web.Request) -> web.Response:
    """USD-based rates (units per 1 USD, mid prices) of every currency the instruments,
    groups and accounts use, derived live from the feed's pairs: direct, inverted, or
    crossed (seed section 14). Currencies no quote reaches are left out;
    ``last_updated`` is the newest pair quote's time (UNIX seconds)."""
    kernel = request.app[KERNEL]
    currencies = await _used_currencies(kernel)
    rates = kernel.market_data.fx.rates_from("USD", sorted(currencies))
    pair_times = [q.time_ms for q in kernel.quotes.all() if currency_pair(q.symbol) is not None]
    return respond(
        {
            "base": "USD",
            "rates": {currency: significant(rate, RATE_DIGITS) for currency, rate in rates.items()},
            "last_updated": max(pair_times) // 1000 if pair_times else None,
            "count": len(rates),
        }
    )


@operation(
    "Get single currency FX rate",
    tags=["Prices"],
    security="public",
)
async def fx_rate(request: web.Request) -> web.Response:
    """One currency's USD-based rate; 422 for a malformed code, 404 when no quote
    reaches it."""
    raw = request.match_info["currency"]
    if not _CURRENCY.match(raw):
        raise ApiError(
            422,
            [
                {
                    "loc": ["path", "currency"],
                    "msg": "must be a three-letter currency code",
                    "type": "pattern",
                }
            ],
        )
    currency = raw.upper()
    try:
        rate = request.app[KERNEL].market_data.fx.rate("USD", currency)
    except ConversionUnavailable as exc:
        raise not_found(f"No FX rate for {currency}") from exc
    return respond({"currency": currency, "rate": significant(rate, RATE_DIGITS), "base": "USD"})


# --- health, outages, providers, symbols ---------------------------------------------------


@operation(
    "Per-symbol price freshness check",
    tags=["Prices"],
    security="public",
)
async def price_health(request: web.Request) -> web.Response:
    """Per-symbol freshness against ``stale_threshold_ms`` (seed section 14)."""
    kernel = request.app[KERNEL]
    symbols = {symbol for feed in kernel.feeds.values() for symbol in feed.symbols()}
    return respond(freshness(kernel.quotes, kernel.clock, kernel.market_data.instruments, symbols))


def outage_json(row: PriceOutage) -> dict[str, Any]:
    """An outage row as the seed shows it (times ISO 8601 UTC, ``ended_at`` and
    ``duration_ms`` null while it lasts)."""
    return {
        "id": row.id,
        "symbol": row.symbol,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_ms": row.duration_ms,
        "threshold_ms": row.threshold_ms,
        "last_tick_at": row.last_tick_at,
    }


@operation(
    "Historical price outage log",
    tags=["Prices"],
    query={
        "type": "object",
        "properties": {
            "limit": {
                "type": "integer",
                "minimum": 1,
                "default": OUTAGES_LIMIT[0],
                "maximum": OUTAGES_LIMIT[1],
            },
            "symbol": {"type": "string"},
        },
    },
    security="staff:view_audit",
)
async def price_outages(request: web.Request) -> web.Response:
    """The outage log, newest first (``view_audit``); ``symbol`` filters exactly,
    ``limit`` 50 by default, at most 500."""
    require_staff(request, "view_audit")
    default, maximum = OUTAGES_LIMIT
    limit = validation.query_int(request, "limit", default=default, minimum=1, maximum=maximum)
    assert limit is not None
    raw_symbol = request.query.get("symbol", "").strip()
    symbol = normalise_symbol(raw_symbol) if raw_symbol else None
    kernel = request.app[KERNEL]
    async with kernel.db.read() as session:
        rows = await list_outages(session, symbol, limit)
    return respond({"outages": [outage_json(row) for row in rows], "count": len(rows)})


@operation(
    "List price providers",
    tags=["Prices"],
    security="public",
)
async def providers(request: web.Request) -> web.Response:
    """The configured price feeds: ``name``, the ``plugin`` that registered it,
    ``drives_clock``, ``symbols``, ``last_tick_ms`` (its newest quote, UTC ms) and
    ``running`` (whether the answering process runs it: the feed leader)."""
    kernel = request.app[KERNEL]
    running = kernel.market_data.is_leader and kernel.settings.start_feeds
    items = []
    for registered in kernel.plugins.registries.price_feeds:
        name = registered.descriptor.name
        feed = kernel.feeds.get(name)
        symbols = list(feed.symbols()) if feed is not None else []
        times = [
            quote.time_ms
            for symbol in symbols
            if (quote := kernel.quotes.get(symbol)) is not None and quote.provider == name
        ]
        items.append(
            {
                "name": name,
                "plugin": registered.plugin,
                "drives_clock": registered.descriptor.drives_clock,
                "symbols": symbols,
                "last_tick_ms": max(times) if times else None,
                "running": running and feed is not None,
            }
        )
    return respond({"providers": items, "count": len(items)})


@operation(
    "List all price symbols",
    tags=["Prices"],
    security="public",
)
async def symbols(request: web.Request) -> web.Response:
    """Every active symbol in the price feed: ``symbol``, ``provider`` (the feed
    quoting it, else the provider of its last quote), ``stale_threshold_ms`` and
    ``has_price`` (a quote within the 60 s TTL)."""
    kernel = request.app[KERNEL]
    instruments = kernel.market_data.instruments
    quoted_by = {symbol: name for name, feed in kernel.feeds.items() for symbol in feed.symbols()}
    items = []
    for symbol in sorted(feed_symbols(kernel)):
        if not instruments.is_active(symbol):
            continue
        quote = kernel.quotes.get(symbol)
        items.append(
            {
                "symbol": symbol,
                "provider": quoted_by.get(symbol, quote.provider if quote else None),
                "stale_threshold_ms": instruments.threshold_ms(symbol),
                "has_price": kernel.quotes.fresh(symbol, PRICE_TTL_MS) is not None,
            }
        )
    return respond({"symbols": items, "count": len(items)})


def setup(router: Router) -> None:
    """Add the price routes (each also at its legacy path, where the seed names one)."""
    router.add("GET", "/api/prices", all_prices, legacy="/prices")
    router.add("GET", "/api/prices/history", price_history, legacy="/prices/history")
    router.add("GET", "/api/prices/fx-rates", fx_rates, legacy="/fx-rates")
    router.add("GET", "/api/prices/fx-rates/{currency}", fx_rate, legacy="/fx-rates/{currency}")
    router.add("GET", "/api/prices/health", price_health, legacy="/health/prices")
    router.add("GET", "/api/prices/outages", price_outages, legacy="/price-outages")
    router.add("GET", "/api/prices/providers", providers)
    router.add("GET", "/api/prices/symbols", symbols)
    # After the fixed paths above: /api/prices/{symbol} would match them too.
    router.add("GET", "/api/prices/{symbol}", one_price, legacy="/prices/{symbol}")
