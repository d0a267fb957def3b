"""Ledger queries and manual transactions (seed sections 7, 8)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.storage.models import LedgerEvent, TradingAccount
from brokerkernel.kernel.trading.transactions import MOVEMENTS, ManualTransaction

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

LEDGER_TYPES = (
    "deposit",
    "withdrawal",
    "chargeback",
    "credit_in",
    "credit_out",
    "order_open",
    "margin_release",
    "trade_pnl",
    "commission",
    "swap",
    "nbp",
    "correction_in",
    "correction_out",
)
LEDGER_FIELDS = (
    "id",
    "account_id",
    "event_type",
    "reference_type",
    "reference_id",
    "balance_delta",
    "credit_delta",
    "margin_delta",
    "balance_after",
    "credit_after",
    "margin_after",
    "sequence_num",
    "description",
    "idempotency_key",
    "created_at",
)
DECIMAL_TEXT = r"^-?[0-9]+(\.[0-9]+)?$"
MANUAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "amount", "currency"],
    "properties": {
        "type": {"enum": sorted(MOVEMENTS)},
        "account_id": {"type": "string", "format": "uuid", "minLength": 36, "maxLength": 36},
        "login": {"type": "integer", "minimum": 1},
        "amount": {
            "anyOf": [
                {"type": "string", "pattern": DECIMAL_TEXT},
                {"type": "number"},
            ]
        },
        "currency": {"type": "string", "pattern": "^[A-Z]{3,4}$"},
        "account_amount": {
            "anyOf": [
                {"type": "string", "pattern": DECIMAL_TEXT},
                {"type": "number"},
                {"type": "null"},
            ]
        },
        "usd_amount": {
            "anyOf": [
                {"type": "string", "pattern": DECIMAL_TEXT},
                {"type": "number"},
                {"type": "null"},
            ]
        },
        "exchange_rate_usd": {
            "anyOf": [
                {"type": "string", "pattern": DECIMAL_TEXT},
                {"type": "number"},
                {"type": "null"},
            ]
        },
        "gate_name": {"type": ["string", "null"], "maxLength": 64},
        "proof_reference": {"type": ["string", "null"], "maxLength": 128},
        "comment": {"type": ["string", "null"], "maxLength": 2000},
        "status": {"enum": ["PENDING", "APPROVED"], "default": "PENDING"},
    },
    "oneOf": [{"required": ["account_id"]}, {"required": ["login"]}],
    "additionalProperties": False,
}
TRANSACTION_FIELDS = (
    "id",
    "account_id",
    "login",
    "type",
    "status",
    "source",
    "amount",
    "currency",
    "account_amount",
    "usd_amount",
    "exchange_rate_usd",
    "gate_name",
    "proof_reference",
    "comment",
    "cashier_id",
    "created_by",
    "approved_by",
    "created_at",
    "updated_at",
)


def _date(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["query", name], "msg": "must be an ISO 8601 time", "type": "format"}]
        ) from exc
    if value.tzinfo is None:
        raise ApiError(
            422, [{"loc": ["query", name], "msg": "must carry a UTC offset", "type": "format"}]
        )
    return value


async def ledger(request: web.Request) -> web.Response:
    """Ledger events of an account, newest first; filters event_type, from_date, to_date."""
    require_staff(request, "view_customers")
    try:
        login = int(request.match_info["login"])
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["path", "login"], "msg": "must be an integer", "type": "type"}]
        ) from exc
    limit = validation.query_int(request, "limit", default=100, minimum=1, maximum=500)
    offset = validation.query_int(request, "offset", default=0, minimum=0)
    event_type = request.query.get("event_type")
    if event_type is not None and event_type not in LEDGER_TYPES:
        raise ApiError(
            422,
            [
                {
                    "loc": ["query", "event_type"],
                    "msg": f"must be one of {', '.join(LEDGER_TYPES)}",
                    "type": "enum",
                }
            ],
        )
    from_date, to_date = _date(request, "from_date"), _date(request, "to_date")
    query = select(LedgerEvent).where(LedgerEvent.account_id == login)
    if event_type:
        query = query.where(LedgerEvent.event_type == event_type)
    if from_date:
        query = query.where(LedgerEvent.created_at >= from_date)
    if to_date:
        query = query.where(LedgerEvent.created_at <= to_date)
    async with request.app[KERNEL].db.read() as session:
        if await session.get(TradingAccount, login) is None:
            raise not_found("Account not found")
        rows = (
            await session.scalars(
                query.order_by(LedgerEvent.sequence_num.desc()).limit(limit).offset(offset)
            )
        ).all()
    return respond([{name: getattr(row, name) for name in LEDGER_FIELDS} for row in rows])


async def manual_transaction(request: web.Request) -> web.Response:
    """Create a manual transaction; APPROVED moves the money at once (201)."""
    who = require_staff(request, "create_deposits")
    data = await validation.body(request, MANUAL_SCHEMA)
    if data.get("status") == "APPROVED" and "approve_deposits" not in who.permissions:
        raise ApiError(403, "Missing permission: approve_deposits")
    kernel = request.app[KERNEL]
    login = data.get("login")
    if login is None:
        async with kernel.db.read() as session:
            login = await session.scalar(
                select(TradingAccount.login).where(TradingAccount.id == data["account_id"])
            )
        if login is None:
            raise not_found("Account not found")

    def dec(value: Any) -> Any:
        return None if value is None else Decimal(str(value))

    amount = dec(data["amount"])
    if amount <= 0:
        raise ApiError(
            422,
            [
                {
                    "loc": ["body", "amount"],
                    "msg": "must be greater than 0",
                    "type": "exclusiveMinimum",
                }
            ],
        )
    tx = await kernel.transactions.create_manual(
        ManualTransaction(
            type=data["type"],
            login=login,
            amount=amount,
            currency=data["currency"],
            status=data.get("status", "PENDING"),
            account_amount=dec(data.get("account_amount")),
            gate_name=data.get("gate_name"),
            proof_reference=data.get("proof_reference"),
            comment=data.get("comment"),
        ),
        created_by=who.subject,
    )
    return respond({name: getattr(tx, name) for name in TRANSACTION_FIELDS}, status=201)


def setup(router: Router) -> None:
    router.add(
        "GET", "/api/backoffice/accounts/{login}/ledger", ledger, legacy="/accounts/{login}/ledger"
    )
    router.add(
        "POST",
        "/api/backoffice/transactions/manual",
        manual_transaction,
        legacy="/transactions/manual",
    )
