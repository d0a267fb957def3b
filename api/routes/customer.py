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
from brokerkernel.api.openapi import operation
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


ORDER_FIELDS = frozenset(ORDER_SCHEMA["properties"])


def _plain_order(data: Any) -> bool:
    """Whether ``data`` is an order body :data:`ORDER_SCHEMA` certainly accepts: exactly
    its four fields, ``login`` an int >= 1, ``symbol`` a 1-32 character string, ``cmd``
    the int 0 or 1, ``volume`` a positive Decimal or int of at most 10 decimal places
    and at most 10^17. True for every well-formed order in a few microseconds; anything
    else (including valid bodies written otherwise) goes through the schema, whose 422
    lists every error."""
    if type(data) is not dict or data.keys() != ORDER_FIELDS:
        return False
    login, symbol, cmd, volume = data["login"], data["symbol"], data["cmd"], data["volume"]
    if type(login) is not int or login < 1 or type(cmd) is not int or cmd not in (0, 1):
        return False
    if type(symbol) is not str or not 0 < len(symbol) <= 32:
        return False
    if type(volume) is int:
        return 0 < volume <= validation.DECIMAL_MAX
    if type(volume) is not Decimal or not volume.is_finite():
        return False
    exponent = volume.as_tuple().exponent
    return (
        isinstance(exponent, int)
        and exponent >= -validation.DECIMAL_PLACES
        and 0 < volume <= validation.DECIMAL_MAX
    )


@operation(
    "Customer registration",
    tags=["Customers"],
    body=REGISTER_SCHEMA,
    responses={200: "Already registered (duplicate)", 201: "Registered"},
    security="public",
)
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


#: ``wait_ms`` of the order routes: how long a still ``queued`` answer may be held.
WAIT_QUERY = {
    "type": "object",
    "properties": {"wait_ms": {"type": "integer", "default": 0, "minimum": 0, "maximum": 10000}},
}


def _wait_s(request: web.Request) -> float:
    wait_ms = validation.query_int(request, "wait_ms", default=0, minimum=0, maximum=10_000)
    assert wait_ms is not None
    return wait_ms / 1000


@operation(
    "Place a market order (async)",
    tags=["Orders (Trading)"],
    body=ORDER_SCHEMA,
    query=WAIT_QUERY,
    security=("customer", "staff:view_orders"),
)
async def place_order(request: web.Request) -> web.Response:
    """Queue a market order (cmd 0 buy / 1 sell, volume in lots); 202-style async result
    ``{"request_id", "status": "queued"}``.

    ``wait_ms`` (0-10,000, default 0; an extension of the seed) holds the answer up to
    that long for the outcome, as the poll's long poll does: ``executed`` with
    ``order`` or ``rejected`` with ``reason`` — one request per order instead of two —
    or ``queued`` when the wait runs out (then poll as usual).
    """
    data = await validation.body(request, ORDER_SCHEMA, _plain_order)
    wait_s = _wait_s(request)
    require_account_access(request, data["login"], "view_orders")
    trading = request.app[KERNEL].trading
    order = (data["login"], data["symbol"], data["cmd"], Decimal(data["volume"]))
    if wait_s:
        status = await trading.execute(*order, wait_s)
        status.pop("login")
        return respond(status)
    return respond({"request_id": await trading.submit(*order), "status": "queued"})


@operation(
    "Poll async order execution status",
    tags=["Orders (Trading)"],
    query=WAIT_QUERY,
    responses={404: "Order request not found or expired"},
    security=("customer", "staff:view_orders"),
)
async def order_request(request: web.Request) -> web.Response:
    """Poll an order request: queued, executed (with ``order``) or rejected (``reason``).

    ``wait_ms`` (0-10,000, default 0) holds a still ``queued`` answer up to that long
    until the order has executed (long poll: one request instead of several).
    """
    kernel = request.app[KERNEL]
    principal(request)
    status = await kernel.trading.request_status(request.match_info["request_id"], _wait_s(request))
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
