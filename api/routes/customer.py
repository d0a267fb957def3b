"""Trader-facing routes: registration and market orders (seed sections 3, 11)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import principal, require_account_access
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.customers import Registration, RegistrationError, register

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
        "volume": validation.decimal_schema(exclusive_minimum=0),
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


async def place_order(request: web.Request) -> web.Response:
    """Queue a market order (cmd 0 buy / 1 sell, volume in lots); 202-style async result."""
    data = await validation.body(request, ORDER_SCHEMA)
    require_account_access(request, data["login"], "view_orders")
    kernel = request.app[KERNEL]
    request_id = await kernel.trading.submit(
        data["login"], data["symbol"], data["cmd"], Decimal(data["volume"])
    )
    return respond({"request_id": request_id, "status": "queued"})


async def order_request(request: web.Request) -> web.Response:
    """Poll an order request: queued, executed (with ``order``) or rejected (``reason``).

    ``wait_ms`` (0-10,000, default 0) holds a still ``queued`` answer up to that long
    until the order has executed (long poll: one request instead of several).
    """
    kernel = request.app[KERNEL]
    principal(request)
    wait_ms = validation.query_int(request, "wait_ms", default=0, minimum=0, maximum=10_000)
    assert wait_ms is not None
    status = await kernel.trading.request_status(request.match_info["request_id"], wait_ms / 1000)
    if status is None:
        raise not_found("Order request not found or expired")
    require_account_access(request, status.pop("login"), "view_orders")
    return respond(status)


def setup(router: Router) -> None:
    router.add("POST", "/api/customer/register", register_customer, legacy="/customers/register")
    router.add("POST", "/api/customer/orders", place_order, legacy="/orders")
    router.add(
        "GET",
        "/api/customer/orders/request/{request_id}",
        order_request,
        legacy="/orders/request/{request_id}",
    )
