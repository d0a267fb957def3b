"""Positions, closes, trade history and live account state (seed sections 6, 11, 13).

Staff need ``view_orders`` / ``view_customers``; a trader may use these routes for
their own logins (the trading platform lists and closes its positions here).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_account_access
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.storage.models import Position, TradeHistory
from brokerkernel.kernel.trading.money import round_money

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


def _login(request: web.Request) -> int:
    login = validation.query_int(request, "login", required=True, minimum=1)
    assert login is not None
    return login


def position_json(kernel: Kernel, position: Position, currency: str) -> dict[str, Any]:
    """A position with its live ``current_price`` (closing side) and ``profit``
    (account currency)."""
    data: dict[str, Any] = {name: getattr(position, name) for name in POSITION_FIELDS}
    marked = kernel.trading.mark(position, currency)
    data["current_price"] = marked[0] if marked else None
    data["profit"] = round_money(marked[1], currency) if marked else None
    return data


async def list_positions(request: web.Request) -> web.Response:
    login = _login(request)
    require_account_access(request, login, "view_orders")
    kernel = request.app[KERNEL]
    state = await kernel.trading.account_state(login)
    if state is None:
        raise not_found("Account not found")
    async with kernel.db.read() as session:
        rows = (
            await session.scalars(
                select(Position).where(Position.login == login).order_by(Position.ticket)
            )
        ).all()
    return respond([position_json(kernel, p, state["currency"]) for p in rows])


async def get_position(request: web.Request) -> web.Response:
    login = _login(request)
    require_account_access(request, login, "view_orders")
    kernel = request.app[KERNEL]
    ticket = _ticket(request)
    state = await kernel.trading.account_state(login)
    async with kernel.db.read() as session:
        position = await session.get(Position, ticket)
    if position is None or position.login != login or state is None:
        raise not_found("Position not found")
    return respond(position_json(kernel, position, state["currency"]))


def _ticket(request: web.Request) -> int:
    try:
        return int(request.match_info["ticket"])
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["path", "ticket"], "msg": "must be an integer", "type": "type"}]
        ) from exc


async def close_position(request: web.Request) -> web.Response:
    """Close a position at market; ``volume`` (lots, multiple of 0.001) closes part of it."""
    login = _login(request)
    require_account_access(request, login, "view_orders")
    ticket = _ticket(request)
    raw_volume = request.query.get("volume")
    volume: Decimal | None = None
    if raw_volume not in (None, ""):
        try:
            volume = Decimal(raw_volume)
        except InvalidOperation as exc:
            raise ApiError(
                422, [{"loc": ["query", "volume"], "msg": "must be a number", "type": "type"}]
            ) from exc
        if not volume.is_finite():
            raise ApiError(
                422, [{"loc": ["query", "volume"], "msg": "must be a number", "type": "type"}]
            )
    deal = await request.app[KERNEL].trading.close(login, ticket, volume)
    return respond({name: getattr(deal, name) for name in HISTORY_FIELDS})


async def list_history(request: web.Request) -> web.Response:
    login = _login(request)
    require_account_access(request, login, "view_orders")
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


async def get_history(request: web.Request) -> web.Response:
    login = _login(request)
    require_account_access(request, login, "view_orders")
    ticket = _ticket(request)
    async with request.app[KERNEL].db.read() as session:
        deal = await session.get(TradeHistory, ticket)
    if deal is None or deal.login != login:
        raise not_found("Trade not found")
    return respond({name: getattr(deal, name) for name in HISTORY_FIELDS})


async def account_state(request: web.Request) -> web.Response:
    try:
        login = int(request.match_info["login"])
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["path", "login"], "msg": "must be an integer", "type": "type"}]
        ) from exc
    require_account_access(request, login, "view_customers")
    state = await request.app[KERNEL].trading.account_state(login)
    if state is None:
        raise not_found("Account not found")
    return respond(state)


def setup(router: Router) -> None:
    router.add("GET", "/api/crm/orders", list_positions, legacy="/orders")
    router.add("GET", "/api/crm/orders/{ticket}", get_position, legacy="/orders/{ticket}")
    router.add("DELETE", "/api/crm/orders/{ticket}", close_position, legacy="/orders/{ticket}")
    router.add("GET", "/api/crm/history", list_history, legacy="/history")
    router.add("GET", "/api/crm/history/{ticket}", get_history, legacy="/history/{ticket}")
    router.add(
        "GET", "/api/crm/accounts/{login}/state", account_state, legacy="/accounts/{login}/state"
    )
