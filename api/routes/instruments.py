"""Instrument catalog and broker-level instrument configuration (seed section 15).

Public: ``GET /api/customer/instruments`` (``group_by=asset_class``),
``/api/customer/instruments/asset-classes``, ``/api/customer/instruments/{symbol}``,
``GET /api/platform/instruments/available``. Staff with ``manage_instruments``:
``POST /api/platform/instruments`` (409 symbol exists), ``GET /api/platform/instruments``
and ``PATCH /api/platform/instruments/{symbol}``. Each also answers at its legacy path.

Margin semantics of the fields (documented for brokers): ``margin_rate`` is the margin
requirement as a fraction of notional (EURUSD 0.01 = 1%); the account's leverage caps
it on FOREX and CFDLEVERAGE: margin = notional in account currency x max(margin_rate,
1 / leverage); :mod:`brokerkernel.kernel.trading.margin` gives the notional per
``calc_mode``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.validation import decimal_schema
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.storage.models import Instrument
from brokerkernel.kernel.trading import instruments
from brokerkernel.kernel.trading.service import utc

if TYPE_CHECKING:
    from brokerkernel.api.app import Router
    from brokerkernel.kernel.runtime import Kernel

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9._#-]{0,31}$"
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3,5}$"}

INSTRUMENT_PROPERTIES: dict[str, Any] = {
    "symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
    "display_name": {"type": "string", "minLength": 1, "maxLength": 128},
    "category": {"type": "string", "minLength": 1, "maxLength": 32},
    "asset_class": {"type": "string", "minLength": 1, "maxLength": 64},
    "calc_mode": {"enum": list(instruments.CALC_MODES)},
    "base_currency": CURRENCY,
    "quote_currency": CURRENCY,
    "profit_currency": CURRENCY,
    "digits": {"type": "integer", "minimum": 0, "maximum": 10},
    "pip_size": decimal_schema(exclusive_minimum=0),
    "contract_size": decimal_schema(exclusive_minimum=0),
    "min_lot": decimal_schema(exclusive_minimum=0),
    "max_lot": decimal_schema(exclusive_minimum=0),
    "lot_step": decimal_schema(exclusive_minimum=0),
    "margin_rate": decimal_schema(
        exclusive_minimum=0,
        description="Margin requirement as a fraction of notional (0.01 = 1%); on FOREX "
        "and CFDLEVERAGE the account's leverage caps it: max(margin_rate, 1 / leverage).",
    ),
    "spread": decimal_schema(minimum=0, description="Typical spread in pips of pip_size."),
    "stale_threshold_ms": {"type": "integer", "minimum": 1, "maximum": 86_400_000},
    "is_active": {"type": "boolean"},
    "is_enabled": {"type": "boolean"},
    "tradeability": {"enum": [*instruments.BROKER_TRADEABILITY, None]},
    "provider": {"type": "string", "minLength": 1, "maxLength": 32},
    "tick_size": decimal_schema(exclusive_minimum=0, nullable=True),
    "tick_price": decimal_schema(
        exclusive_minimum=0,
        nullable=True,
        description="Value of one tick_size move of one lot, in the profit currency.",
    ),
    "initial_margin": decimal_schema(
        exclusive_minimum=0, nullable=True, description="FUTURES: margin per lot."
    ),
    "swap_type": {"enum": list(instruments.SWAP_TYPES)},
    "swap_long": decimal_schema(),
    "swap_short": decimal_schema(),
    "swap_triple_day": {"enum": [*instruments.WEEKDAYS, None]},
}
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": list(instruments.INSTRUMENT_REQUIRED),
    "properties": INSTRUMENT_PROPERTIES,
    "additionalProperties": False,
}
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {k: v for k, v in INSTRUMENT_PROPERTIES.items() if k != "symbol"},
    "additionalProperties": False,
}
INSTRUMENT_FIELDS = (
    "id",
    "symbol",
    "display_name",
    "category",
    "asset_class",
    "calc_mode",
    "base_currency",
    "quote_currency",
    "profit_currency",
    "digits",
    "pip_size",
    "contract_size",
    "min_lot",
    "max_lot",
    "lot_step",
    "margin_rate",
    "spread",
    "stale_threshold_ms",
    "tick_size",
    "tick_price",
    "initial_margin",
    "swap_type",
    "swap_long",
    "swap_short",
    "swap_triple_day",
    "is_active",
    "is_enabled",
    "tradeability",
    "provider",
)


def instrument_json(instrument: Instrument, quote: Quote | None) -> dict[str, Any]:
    """The seed's instrument fields plus calculation mode, tick terms, swaps and the
    broker-level ``is_enabled`` / ``tradeability``; ``last_*`` from the latest quote."""
    data: dict[str, Any] = {name: getattr(instrument, name) for name in INSTRUMENT_FIELDS}
    data["last_bid"] = quote.bid if quote else None
    data["last_ask"] = quote.ask if quote else None
    data["last_tick_at"] = utc(quote.time_ms) if quote else None
    return data


@asynccontextmanager
async def config_write(kernel: Kernel) -> AsyncIterator[AsyncSession]:
    """A unit of work that changes platform configuration; after its commit this
    process's terms cache is reloaded (others reload on ``platform.config_changed``).

    A unique constraint hit by a concurrent change answers 409.
    """
    try:
        async with kernel.db.transaction() as session:
            yield session
    except IntegrityError as exc:
        raise ApiError(409, "Conflicting concurrent change; retry") from exc
    await kernel.terms.load()


async def _instruments(kernel: Kernel, *conditions: Any) -> list[Instrument]:
    async with kernel.db.read() as session:
        rows = await session.scalars(
            select(Instrument).where(*conditions).order_by(Instrument.symbol)
        )
        return list(rows.all())


def _listing(kernel: Kernel, rows: list[Instrument]) -> list[dict[str, Any]]:
    return [instrument_json(i, kernel.quotes.get(i.symbol)) for i in rows]


@operation(
    "List all active instruments",
    tags=["Instruments"],
    query={"type": "object", "properties": {"group_by": {"type": "string"}}},
    security="public",
)
async def list_instruments(request: web.Request) -> web.Response:
    """Active instruments with their last quote; ``group_by=asset_class`` groups them
    into ``{asset_class: [instrument, ...]}``."""
    kernel = request.app[KERNEL]
    group_by = request.query.get("group_by")
    if group_by not in (None, "asset_class"):
        raise ApiError(
            422, [{"loc": ["query", "group_by"], "msg": "must be 'asset_class'", "type": "enum"}]
        )
    items = _listing(kernel, await _instruments(kernel, Instrument.is_active.is_(True)))
    if group_by is None:
        return respond(items)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        grouped.setdefault(item["asset_class"], []).append(item)
    return respond(grouped)


@operation(
    "List active asset classes",
    tags=["Instruments"],
    security="public",
)
async def asset_classes(request: web.Request) -> web.Response:
    """Asset classes of the active instruments, for front-end tabs:
    ``[{"asset_class": ..., "count": n}]`` sorted by name."""
    counts: dict[str, int] = {}
    for instrument in await _instruments(request.app[KERNEL], Instrument.is_active.is_(True)):
        counts[instrument.asset_class] = counts.get(instrument.asset_class, 0) + 1
    return respond([{"asset_class": name, "count": counts[name]} for name in sorted(counts)])


@operation(
    "Get single instrument",
    tags=["Instruments"],
    security="public",
)
async def get_instrument(request: web.Request) -> web.Response:
    """One active instrument; 404 ``Instrument {symbol} not found``."""
    kernel = request.app[KERNEL]
    symbol = request.match_info["symbol"]
    rows = await _instruments(kernel, Instrument.symbol == symbol, Instrument.is_active.is_(True))
    if not rows:
        raise not_found(f"Instrument {symbol} not found")
    return respond(_listing(kernel, rows)[0])


@operation(
    "List broker-enabled instruments",
    tags=["Instruments"],
    security="public",
)
async def available_instruments(request: web.Request) -> web.Response:
    """Instruments enabled at broker level and active in the catalog (trading UI)."""
    kernel = request.app[KERNEL]
    rows = await _instruments(
        kernel, Instrument.is_active.is_(True), Instrument.is_enabled.is_(True)
    )
    return respond(_listing(kernel, rows))


@operation(
    "List broker-level instrument config",
    tags=["Instruments"],
    security="staff:manage_instruments",
)
async def broker_instruments(request: web.Request) -> web.Response:
    """Every instrument with its broker-level configuration (inactive ones too)."""
    require_staff(request, "manage_instruments")
    kernel = request.app[KERNEL]
    return respond(_listing(kernel, await _instruments(kernel)))


@operation(
    "Add a new instrument",
    tags=["Instruments"],
    body=CREATE_SCHEMA,
    responses={201: "Created"},
    security="staff:manage_instruments",
)
async def create_instrument(request: web.Request) -> web.Response:
    """Add an instrument (201); 409 ``Symbol already exists``; 422 field errors."""
    require_staff(request, "manage_instruments")
    data = await validation.body(request, CREATE_SCHEMA)
    kernel = request.app[KERNEL]
    async with config_write(kernel) as session:
        instrument = await instruments.create_instrument(session, data, kernel.clock.now())
    return respond(instrument_json(instrument, kernel.quotes.get(instrument.symbol)), status=201)


@operation(
    "Update broker-level instrument config",
    tags=["Instruments"],
    body=UPDATE_SCHEMA,
    security="staff:manage_instruments",
)
async def update_instrument(request: web.Request) -> web.Response:
    """Update broker-level config (``is_enabled``, ``tradeability`` close_only or null)
    and any other catalog field; 404 unknown symbol; 422 field errors."""
    require_staff(request, "manage_instruments")
    data = await validation.body(request, UPDATE_SCHEMA)
    kernel = request.app[KERNEL]
    symbol = request.match_info["symbol"]
    async with config_write(kernel) as session:
        instrument = await instruments.update_instrument(session, symbol, data, kernel.clock.now())
    return respond(instrument_json(instrument, kernel.quotes.get(symbol)))


def setup(router: Router) -> None:
    router.add("GET", "/api/customer/instruments", list_instruments, legacy="/instruments")
    router.add(
        "GET",
        "/api/customer/instruments/asset-classes",
        asset_classes,
        legacy="/instruments/asset-classes",
    )
    router.add(
        "GET", "/api/customer/instruments/{symbol}", get_instrument, legacy="/instruments/{symbol}"
    )
    router.add("POST", "/api/platform/instruments", create_instrument, legacy="/instruments")
    router.add("GET", "/api/platform/instruments", broker_instruments, legacy="/broker/instruments")
    router.add(
        "GET",
        "/api/platform/instruments/available",
        available_instruments,
        legacy="/broker/instruments/available",
    )
    router.add(
        "PATCH",
        "/api/platform/instruments/{symbol}",
        update_instrument,
        legacy="/broker/instruments/{symbol}",
    )
