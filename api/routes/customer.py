"""Trader-facing routes: registration, instruments, market orders (seed sections 3, 11, 15)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import principal, require_account_access
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.customers import Registration, RegistrationError, register
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.storage.models import Instrument
from brokerkernel.kernel.trading.service import utc

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

REGISTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["email", "password"],
    "properties": {
        "email": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "maxLength": 254},
        "password": {"type": "string", "minLength": 8, "maxLength": 72},
        "first_name": {"type": "string", "maxLength": 128},
        "last_name": {"type": "string", "maxLength": 128},
        "phone": {"type": ["string", "null"], "pattern": r"^\+?[0-9]{6,20}$"},
        "country": {"type": ["string", "null"], "pattern": "^[A-Z]{2}$"},
        "gender": {"type": ["string", "null"], "maxLength": 16},
        "source": {"const": "organic"},
        "promo_code": {"type": "null"},
        "affiliate_id": {"type": ["string", "null"], "maxLength": 64},
        "campaign_id": {"type": ["string", "null"], "maxLength": 64},
        "funnel": {"type": ["string", "null"], "maxLength": 64},
        "affiliate_lead_id": {"type": ["string", "null"], "maxLength": 64},
    },
    "additionalProperties": False,
}

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["login", "symbol", "cmd", "volume"],
    "properties": {
        "login": {"type": "integer", "minimum": 1},
        "symbol": {"type": "string", "minLength": 1, "maxLength": 32},
        "cmd": {"enum": [0, 1]},
        "volume": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
}


async def register_customer(request: web.Request) -> web.Response:
    """Organic registration: customer + trading account in one transaction (201).

    Affiliate, import and promo paths belong to the CRM work; they answer 422 here.
    """
    data = await validation.body(request, REGISTER_SCHEMA)
    kernel = request.app[KERNEL]
    fields = {k: v for k, v in data.items() if k not in ("source", "promo_code")}
    try:
        result = await register(kernel.db, kernel.ids, kernel.clock, Registration(**fields))
    except RegistrationError as exc:
        raise ApiError(exc.status, body=exc.body) from exc
    return respond(result, status=200 if result.get("duplicate") else 201)


def instrument_json(instrument: Instrument, quote: Quote | None) -> dict[str, Any]:
    return {
        "id": instrument.id,
        "symbol": instrument.symbol,
        "display_name": instrument.display_name,
        "category": instrument.category,
        "asset_class": instrument.asset_class,
        "calc_mode": instrument.calc_mode,
        "base_currency": instrument.base_currency,
        "quote_currency": instrument.quote_currency,
        "profit_currency": instrument.profit_currency,
        "digits": instrument.digits,
        "pip_size": instrument.pip_size,
        "contract_size": instrument.contract_size,
        "min_lot": instrument.min_lot,
        "max_lot": instrument.max_lot,
        "lot_step": instrument.lot_step,
        "margin_rate": instrument.margin_rate,
        "spread": instrument.spread,
        "stale_threshold_ms": instrument.stale_threshold_ms,
        "is_active": instrument.is_active,
        "provider": instrument.provider,
        "last_bid": quote.bid if quote else None,
        "last_ask": quote.ask if quote else None,
        "last_tick_at": utc(quote.time_ms) if quote else None,
    }


async def list_instruments(request: web.Request) -> web.Response:
    """Active instruments with their last quote; ``group_by=asset_class`` groups them."""
    kernel = request.app[KERNEL]
    async with kernel.db.read() as session:
        rows = (
            await session.scalars(
                select(Instrument).where(Instrument.is_active.is_(True)).order_by(Instrument.symbol)
            )
        ).all()
    items = [instrument_json(i, kernel.quotes.get(i.symbol)) for i in rows]
    group_by = request.query.get("group_by")
    if group_by is None:
        return respond(items)
    if group_by != "asset_class":
        raise ApiError(
            422, [{"loc": ["query", "group_by"], "msg": "must be 'asset_class'", "type": "enum"}]
        )
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        grouped.setdefault(item["asset_class"], []).append(item)
    return respond(grouped)


async def place_order(request: web.Request) -> web.Response:
    """Queue a market order (cmd 0 buy / 1 sell, volume in lots); 202-style async result."""
    data = await validation.body(request, ORDER_SCHEMA)
    require_account_access(request, data["login"], "view_orders")
    kernel = request.app[KERNEL]
    request_id = await kernel.trading.submit(
        data["login"], data["symbol"], data["cmd"], data["volume"]
    )
    return respond({"request_id": request_id, "status": "queued"})


async def order_request(request: web.Request) -> web.Response:
    """Poll an order request: queued, executed (with ``order``) or rejected (``reason``)."""
    kernel = request.app[KERNEL]
    principal(request)
    status = await kernel.trading.request_status(request.match_info["request_id"])
    if status is None:
        raise not_found("Order request not found or expired")
    require_account_access(request, status.pop("login"), "view_orders")
    return respond(status)


def setup(router: Router) -> None:
    router.add("POST", "/api/customer/register", register_customer, legacy="/customers/register")
    router.add("GET", "/api/customer/instruments", list_instruments, legacy="/instruments")
    router.add("POST", "/api/customer/orders", place_order, legacy="/orders")
    router.add(
        "GET",
        "/api/customer/orders/request/{request_id}",
        order_request,
        legacy="/orders/request/{request_id}",
    )
