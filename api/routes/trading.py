"""Pending orders, SL/TP, account mode, stop-out events and the audit log
(seed sections 11, 12, 31).

Traders use the ``/api/customer/orders/...`` routes for their own logins; staff need
``view_orders``. Stop-out events and the audit log need ``view_audit``; changing an
account's mode (hedging/netting) needs ``manage_groups``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_account_access, require_staff
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.crm import orders_login, position_json
from brokerkernel.kernel.trading.models import (
    PENDING_STATUSES,
    AuditLogEntry,
    PendingOrder,
    StopoutEvent,
)
from brokerkernel.kernel.trading.pending import UNSET, PendingRequest
from brokerkernel.kernel.trading.service import ACCOUNT_MODES
from brokerkernel.kernel.trading.state import PENDING_FIELDS, PendingState

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

PRICE = validation.decimal_schema(exclusive_minimum=0)
STOP_PRICE = validation.decimal_schema(
    minimum=0, description="Price in the quote currency; 0 removes it."
)
PENDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["login", "symbol", "cmd", "volume", "trigger_price"],
    "properties": {
        "login": {"type": "integer", "minimum": 1},
        "symbol": {"type": "string", "minLength": 1, "maxLength": 32},
        "cmd": {"enum": [2, 3, 4, 5, 6, 7]},
        "volume": PRICE,
        "trigger_price": PRICE,
        "limit_price": validation.decimal_schema(exclusive_minimum=0, nullable=True),
        "sl": validation.decimal_schema(minimum=0, nullable=True),
        "tp": validation.decimal_schema(minimum=0, nullable=True),
        "expiry_at": {"type": ["string", "null"], "maxLength": 40},
        "comment": {"type": ["string", "null"], "maxLength": 128},
    },
    "additionalProperties": False,
}
MODIFY_PENDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {
        "sl": STOP_PRICE,
        "tp": STOP_PRICE,
        "trigger_price": PRICE,
        "limit_price": PRICE,
    },
    "additionalProperties": False,
}
SLTP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {"sl": STOP_PRICE, "tp": STOP_PRICE},
    "additionalProperties": False,
}
MODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["account_mode"],
    "properties": {"account_mode": {"enum": list(ACCOUNT_MODES)}},
    "additionalProperties": False,
}
STOPOUT_FIELDS = (
    "id",
    "login",
    "order_ticket",
    "symbol",
    "margin_level_at_trigger",
    "margin_level_after_close",
    "equity_at_trigger",
    "profit_realized",
    "close_price",
    "stopout_level",
    "positions_remaining",
    "created_at",
)
AUDIT_FIELDS = (
    "id",
    "entity_type",
    "entity_id",
    "action",
    "login",
    "details",
    "balance_before",
    "balance_after",
    "credit_before",
    "credit_after",
    "margin_used_before",
    "margin_used_after",
    "source_service",
    "created_at",
)

#: ``limit`` of the stop-out events and of the audit log: (default, largest).
STOPOUT_PAGE = (50, 500)
AUDIT_PAGE = (100, 1000)
#: A log table listed newest first (:func:`_newest_first`).
Row = TypeVar("Row", StopoutEvent, AuditLogEntry)


def pending_json(order: PendingState | PendingOrder) -> dict[str, Any]:
    """A pending order as the API shows it (``order_id`` is its ticket)."""
    data = {name: getattr(order, name) for name in PENDING_FIELDS}
    data["order_id"] = data.pop("id")
    return data


def _expiry(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(
            422,
            [{"loc": ["body", "expiry_at"], "msg": "must be an ISO 8601 time", "type": "format"}],
        ) from exc
    if value.tzinfo is None:
        raise ApiError(
            422,
            [{"loc": ["body", "expiry_at"], "msg": "must carry a UTC offset", "type": "format"}],
        )
    return value


def _price(value: Any) -> Decimal | None:
    """A JSON number as Decimal; 0 and null mean none."""
    if value is None:
        return None
    amount = Decimal(value)
    return None if amount == 0 else amount


@operation(
    "Place a pending order",
    tags=["Pending Orders"],
    body=PENDING_SCHEMA,
    responses={201: "Created"},
    security=("customer", "staff:view_orders"),
)
async def place_pending(request: web.Request) -> web.Response:
    """Place a pending order (seed section 12); 201 with the order."""
    data = await validation.body(request, PENDING_SCHEMA)
    require_account_access(request, data["login"], "view_orders")
    order = await request.app[KERNEL].trading.place_pending(
        PendingRequest(
            login=data["login"],
            symbol=data["symbol"],
            cmd=data["cmd"],
            volume=Decimal(data["volume"]),
            trigger_price=Decimal(data["trigger_price"]),
            limit_price=_price(data.get("limit_price")),
            sl=_price(data.get("sl")),
            tp=_price(data.get("tp")),
            expiry_at=_expiry(data.get("expiry_at")),
            comment=data.get("comment"),
        )
    )
    return respond(pending_json(order), status=201)


@operation(
    "List pending orders",
    tags=["Pending Orders"],
    query={"type": "object", "properties": {"status": {"type": "string"}}},
    security=("customer", "staff:view_orders"),
)
async def list_pending(request: web.Request) -> web.Response:
    """Pending orders of ``login``, newest first; ``status`` filters (e.g. ``active``)."""
    login = orders_login(request)
    status = validation.query_enum(request, "status", PENDING_STATUSES)
    query = select(PendingOrder).where(PendingOrder.login == login)
    if status is not None:
        query = query.where(PendingOrder.status == status)
    async with request.app[KERNEL].db.read() as session:
        rows = (await session.scalars(query.order_by(PendingOrder.id.desc()))).all()
    return respond([pending_json(row) for row in rows])


@operation(
    "Modify a pending order",
    tags=["Pending Orders"],
    body=MODIFY_PENDING_SCHEMA,
    path={"order_id": {"type": "integer"}},
    security=("customer", "staff:view_orders"),
)
async def modify_pending(request: web.Request) -> web.Response:
    """Modify an active pending order (``sl``/``tp`` 0 removes them)."""
    login = orders_login(request)
    order_id = validation.path_int(request, "order_id")
    data = await validation.body(request, MODIFY_PENDING_SCHEMA)
    fields = {
        name: Decimal(data[name]) if name in data else UNSET
        for name in MODIFY_PENDING_SCHEMA["properties"]
    }
    order = await request.app[KERNEL].trading.modify_pending(login, order_id, **fields)
    return respond(pending_json(order))


@operation(
    "Cancel a pending order",
    tags=["Pending Orders"],
    path={"order_id": {"type": "integer"}},
    security=("customer", "staff:view_orders"),
)
async def cancel_pending(request: web.Request) -> web.Response:
    """Cancel an active pending order; answers the cancelled order."""
    login = orders_login(request)
    order_id = validation.path_int(request, "order_id")
    order = await request.app[KERNEL].trading.cancel_pending(login, order_id)
    return respond(pending_json(order))


@operation(
    "Modify stop-loss / take-profit",
    tags=["Orders (Trading)"],
    body=SLTP_SCHEMA,
    path={"ticket": {"type": "integer"}},
    security=("customer", "staff:view_orders"),
)
async def modify_sltp(request: web.Request) -> web.Response:
    """Set, change or remove (0) a position's stop-loss / take-profit (seed section 11)."""
    login = orders_login(request)
    ticket = validation.path_int(request, "ticket")
    data = await validation.body(request, SLTP_SCHEMA)
    kernel = request.app[KERNEL]
    position = await kernel.trading.modify_stops(
        login,
        ticket,
        None if "sl" not in data else Decimal(data["sl"]),
        None if "tp" not in data else Decimal(data["tp"]),
    )
    account = await kernel.trading.snapshot(login)
    assert account is not None
    return respond(position_json(kernel, position, account.currency))


@operation(
    "Set an account position mode (netting/hedging)",
    tags=["Accounts"],
    body=MODE_SCHEMA,
    path={"login": {"type": "integer"}},
    security="staff:manage_groups",
)
async def set_mode(request: web.Request) -> web.Response:
    """Switch an account between ``hedging`` and ``netting`` (no positions or orders)."""
    require_staff(request, "manage_groups")
    login = validation.path_int(request, "login")
    data = await validation.body(request, MODE_SCHEMA)
    mode = await request.app[KERNEL].trading.set_account_mode(login, data["account_mode"])
    return respond({"login": login, "account_mode": mode})


def _page_query(page: tuple[int, int]) -> dict[str, Any]:
    """OpenAPI ``query`` of a log listing (:func:`_newest_first`): an optional
    ``login`` filter and ``limit`` / ``offset`` paging (``page``: the default and the
    largest ``limit``)."""
    default, largest = page
    return {
        "type": "object",
        "properties": {
            "login": {"type": "integer", "minimum": 1},
            "limit": {"type": "integer", "default": default, "minimum": 1, "maximum": largest},
            "offset": {"type": "integer", "default": 0, "minimum": 0},
        },
    }


async def _newest_first(
    request: web.Request, model: type[Row], page: tuple[int, int], *filters: str
) -> Sequence[Row]:
    """One page of ``model`` rows, newest (highest id) first, for the query parameters
    of :func:`_page_query` plus exact-match ``filters`` (column names; empty ignored);
    422 for a malformed or out-of-range ``login``/``limit``/``offset``."""
    default, largest = page
    login = validation.query_int(request, "login", minimum=1)
    size = validation.query_int(request, "limit", default=default, minimum=1, maximum=largest)
    offset = validation.query_int(request, "offset", default=0, minimum=0)
    query = select(model)
    if login is not None:
        query = query.where(model.login == login)
    for name in filters:
        value = request.query.get(name)
        if value:
            query = query.where(getattr(model, name) == value)
    async with request.app[KERNEL].db.read() as session:
        return (
            await session.scalars(query.order_by(model.id.desc()).limit(size).offset(offset))
        ).all()


@operation(
    "List recent stopout force-close events",
    tags=["Stopout Events & Audit Log"],
    query=_page_query(STOPOUT_PAGE),
    security="staff:view_audit",
)
async def stopout_events(request: web.Request) -> web.Response:
    """Recent stop-out force-closes, newest first (seed section 31)."""
    require_staff(request, "view_audit")
    rows = await _newest_first(request, StopoutEvent, STOPOUT_PAGE)
    return respond([{name: getattr(row, name) for name in STOPOUT_FIELDS} for row in rows])


@operation(
    "Immutable audit trail of financial state changes",
    tags=["Stopout Events & Audit Log"],
    query=_page_query(AUDIT_PAGE),
    security="staff:view_audit",
)
async def audit_log(request: web.Request) -> web.Response:
    """The immutable audit trail of financial state changes, newest first (section 31)."""
    require_staff(request, "view_audit")
    filters = ("entity_type", "entity_id", "action")
    rows = await _newest_first(request, AuditLogEntry, AUDIT_PAGE, *filters)
    entries = []
    for row in rows:
        entry = {name: getattr(row, name) for name in AUDIT_FIELDS}
        entry["login"] = None if row.login is None else str(row.login)
        entries.append(entry)
    return respond(entries)


def setup(router: Router) -> None:
    router.add("POST", "/api/customer/orders/pending", place_pending, legacy="/orders/pending")
    router.add("GET", "/api/customer/orders/pending", list_pending, legacy="/orders/pending")
    router.add(
        "PATCH",
        "/api/customer/orders/pending/{order_id}",
        modify_pending,
        legacy="/orders/pending/{order_id}",
    )
    router.add(
        "DELETE",
        "/api/customer/orders/pending/{order_id}",
        cancel_pending,
        legacy="/orders/pending/{order_id}",
    )
    router.add(
        "PATCH", "/api/customer/orders/{ticket}/sltp", modify_sltp, legacy="/orders/{ticket}/sltp"
    )
    router.add(
        "PATCH", "/api/platform/accounts/{login}/mode", set_mode, legacy="/accounts/{login}/mode"
    )
    router.add("GET", "/api/backoffice/stopout-events", stopout_events, legacy="/stopout-events")
    router.add("GET", "/api/backoffice/audit-log", audit_log, legacy="/audit-log")
