"""``POST /api/platform/prices/{symbol}``: a dealer sets a symbol's quote.

Staff with ``manage_prices``. Body ``{"bid": 1.0854, "ask": 1.0856, "time": "..."}``:
bid and ask positive, ``ask >= bid``, at most the instrument's ``digits`` decimals;
``time`` (ISO 8601 with a UTC offset) only when the manual feed drives the market
clock, and never before it. Answers 200 with the quote as ``GET /api/prices/{symbol}``
shows it; 404 ``Instrument {symbol} not found``; 422 listing every field error.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.prices import price_json
from brokerkernel.api.validation import decimal_schema
from brokerkernel.plugins.manual.feed import PROVIDER, ClockBackwards, ManualFeed

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["bid", "ask"],
    "properties": {
        "bid": decimal_schema(exclusive_minimum=0),
        "ask": decimal_schema(exclusive_minimum=0),
        "time": {
            "type": "string",
            "maxLength": 64,
            "description": "ISO 8601 UTC time of the quote; drives the market clock when "
            '[kernel] clock = "manual" and must not be before it.',
        },
    },
    "additionalProperties": False,
}


def _error(field: str, msg: str, type_: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": msg, "type": type_}


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _time_ms(raw: str, feed: ManualFeed, errors: list[dict[str, Any]]) -> int | None:
    if not feed.drives_clock:
        errors.append(
            _error(
                "time",
                "time can only be given when the manual feed drives the market clock "
                '([kernel] clock = "manual")',
                "clock_source",
            )
        )
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        errors.append(_error("time", "must be an ISO 8601 date-time", "datetime"))
        return None
    if moment.tzinfo is None:
        errors.append(_error("time", "must carry a UTC offset (e.g. Z)", "timezone"))
        return None
    return (moment - EPOCH) // timedelta(milliseconds=1)


@operation(
    "Set a symbol's quote (manual price feed)",
    tags=["Prices"],
    body=PRICE_SCHEMA,
    responses={404: "Instrument not found"},
    security="staff:manage_prices",
)
async def post_price(request: web.Request) -> web.Response:
    """Publish a dealer quote through the kernel's price path (provider ``manual``)."""
    require_staff(request, "manage_prices")
    kernel = request.app[KERNEL]
    symbol = request.match_info["symbol"]
    terms = kernel.terms.instrument(symbol)
    if terms is None:
        raise not_found(f"Instrument {symbol} not found")
    data = await validation.body(request, PRICE_SCHEMA)
    bid, ask = Decimal(data["bid"]), Decimal(data["ask"])
    errors: list[dict[str, Any]] = [
        _error(name, f"has more than {terms.digits} decimals (the instrument's digits)", "digits")
        for name, value in (("bid", bid), ("ask", ask))
        if _places(value) > terms.digits
    ]
    if ask < bid:
        errors.append(_error("ask", "must not be below bid", "crossed"))
    feed = kernel.feeds[PROVIDER]
    assert isinstance(feed, ManualFeed)
    time_ms = _time_ms(data["time"], feed, errors) if "time" in data else None
    if errors:
        raise ApiError(422, errors)
    try:
        quote = feed.push(symbol, bid, ask, time_ms)
    except ClockBackwards as exc:
        raise ApiError(422, [_error("time", str(exc), "clock_backwards")]) from exc
    await feed.broadcast(quote)
    return respond(price_json(quote))


def setup_routes(app: web.Application, kernel: Any) -> None:
    """Add the route (``broker_register_routes``)."""
    app.router.add_post("/api/platform/prices/{symbol}", post_price)
