"""Positions, closes, trade history and live account state (seed sections 6, 11, 13).

Staff need ``view_orders`` / ``view_customers``; a trader may use these routes for
their own logins (the trading platform lists and closes its positions here).
"""

from __future__ import annotations

from contextlib import suppress
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_account_access
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.storage.models import TradeHistory
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.state import OpenPosition

if TYPE_CHECKING:
    from brokerkernel.api.app import Router
    from brokerkernel.kernel.runtime import Kernel

POSITION_FIELDS = (
    "ticket",
    "login",
    "symbol",
    "cmd",
    "volume",
    "open_price",
    "open_time",
    "sl",
    "tp",
    "margin",
    "commission",
    "swap",
    "open_fx_rate",
    "comment",
)
HISTORY_FIELDS = (
    "ticket",
    "login",
    "symbol",
    "cmd",
    "volume",
    "open_price",
    "open_time",
    "close_price",
    "close_time",
    "profit",
    "commission",
    "swap",
    "margin",
    "open_fx_rate",
    "close_fx_rate",
    "reason",
    "parent_order",
)


#: OpenAPI ``query`` of the routes that take the account as ``?login=``.
LOGIN_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {"login": {"type": "integer", "minimum": 1}},
    "required": ["login"],
}


def login_query(request: web.Request) -> int:
    """The required ``login`` query parameter; 422 when missing or malformed."""
    login = validation.query_int(request, "login", required=True, minimum=1)
    assert login is not None
    return login


def orders_login(request: web.Request) -> int:
    """The required ``login`` query parameter (:func:`login_query`) of an account whose
    orders the caller may see: the trader owning it, or staff with ``view_orders``
    (403 otherwise, :func:`~brokerkernel.api.auth.require_account_access`)."""
    login = login_query(request)
    require_account_access(request, login, "view_orders")
    return login


def position_json(kernel: Kernel, position: OpenPosition, currency: str) -> dict[str, Any]:
    """A position with its live ``current_price`` (closing side) and ``profit``
    (account currency)."""
    data: dict[str, Any] = {name: getattr(position, name) for name in POSITION_FIELDS}
    marked = kernel.trading.mark(position, currency)
    data["current_price"] = marked[0] if marked else None
    data["profit"] = round_money(marked[1], currency) if marked else None
    return data


@operation(
    "List open positions",
    tags=["Orders (Trading)"],
    query=LOGIN_QUERY,
    responses={404: "Account not found"},
    security=("customer", "staff:view_orders"),
)
async def list_positions(request: web.Request) -> web.Response:
    """The account's open positions by ticket, with live profit."""
    login = orders_login(request)
    kernel = request.app[KERNEL]
    account = await kernel.trading.snapshot(login)
    if account is None:
        raise not_found("Account not found")
    return respond(
        [
            position_json(kernel, account.positions[ticket], account.currency)
            for ticket in sorted(account.positions)
        ]
    )


@operation(
    "Get single open position",
    tags=["Orders (Trading)"],
    query=LOGIN_QUERY,
    path={"ticket": {"type": "integer"}},
    responses={404: "Position not found"},
    security=("customer", "staff:view_orders"),
)
async def get_position(request: web.Request) -> web.Response:
    """One open position with live profit."""
    login = orders_login(request)
    kernel = request.app[KERNEL]
    ticket = validation.path_int(request, "ticket")
    account = await kernel.trading.snapshot(login)
    position = account.positions.get(ticket) if account is not None else None
    if account is None or position is None:
        raise not_found("Position not found")
    return respond(position_json(kernel, position, account.currency))


@operation(
    "Close a position",
    tags=["Orders (Trading)"],
    query={
        "type": "object",
        "properties": {"login": {"type": "integer", "minimum": 1}, "volume": {"type": "string"}},
        "required": ["login"],
    },
    path={"ticket": {"type": "integer"}},
    security=("customer", "staff:view_orders"),
)
async def close_position(request: web.Request) -> web.Response:
    """Close a position at market; ``volume`` (lots, multiple of 0.001) closes part of it."""
    login = orders_login(request)
    ticket = validation.path_int(request, "ticket")
    raw_volume = request.query.get("volume")
    volume: Decimal | None = None
    if raw_volume not in (None, ""):
        with suppress(InvalidOperation):
            volume = Decimal(raw_volume)
        if volume is None or not volume.is_finite():
            raise ApiError(
                422, [{"loc": ["query", "volume"], "msg": "must be a number", "type": "type"}]
            )
    deal = await request.app[KERNEL].trading.close(login, ticket, volume)
    return respond({name: deal[name] for name in HISTORY_FIELDS})


@operation(
    "List closed trades",
    tags=["Trade History"],
    query=LOGIN_QUERY,
    security=("customer", "staff:view_orders"),
)
async def list_history(request: web.Request) -> web.Response:
    """Closed deals of the account, oldest first (``open_fx_rate``/``close_fx_rate``)."""
    login = orders_login(request)
    kernel = request.app[KERNEL]
    async with kernel.db.read() as session:
        rows = (
            await session.scalars(
                select(TradeHistory)
                .where(TradeHistory.login == login)
                .order_by(TradeHistory.close_time, TradeHistory.ticket)
            )
        ).all()
    return respond([{name: getattr(deal, name) for name in HISTORY_FIELDS} for deal in rows])


@operation(
    "Get single closed trade",
    tags=["Trade History"],
    query=LOGIN_QUERY,
    path={"ticket": {"type": "integer"}},
    responses={404: "Trade not found"},
    security=("customer", "staff:view_orders"),
)
async def get_history(request: web.Request) -> web.Response:
    login = orders_login(request)
    ticket = validation.path_int(request, "ticket")
    async with request.app[KERNEL].db.read() as session:
        deal = await session.get(TradeHistory, ticket)
    if deal is None or deal.login != login:
        raise not_found("Trade not found")
    return respond({name: getattr(deal, name) for name in HISTORY_FIELDS})


@operation(
    "Live account equity, PnL, and margin",
    tags=["Accounts"],
    path={"login": {"type": "integer"}},
    responses={404: "Account not found"},
    security=("customer", "staff:view_customers"),
)
async def account_state(request: web.Request) -> web.Response:
    """Live equity, P&L, margin and exposure of the account (seed section 6)."""
    login = validation.path_int(request, "login")
    require_account_access(request, login, "view_customers")
    state = await request.app[KERNEL].trading.account_state(login)
    if state is None:
        raise not_found("Account not found")
    return respond(state)


def setup(router: Router) -> None:
    router.add("GET", "/api/crm/orders", list_positions, legacy="/orders")
    # After the pending-order routes (api/routes/trading.py): /orders/pending is not a ticket.
    router.add("GET", "/api/crm/orders/{ticket}", get_position, legacy="/orders/{ticket}")
    router.add("DELETE", "/api/crm/orders/{ticket}", close_position, legacy="/orders/{ticket}")
    router.add("GET", "/api/crm/history", list_history, legacy="/history")
    router.add("GET", "/api/crm/history/{ticket}", get_history, legacy="/history/{ticket}")
    router.add(
        "GET", "/api/crm/accounts/{login}/state", account_state, legacy="/accounts/{login}/state"
    )
