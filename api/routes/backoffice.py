"""Financial ledger, account balances and transactions (seed sections 6, 7 and 8).

Every money change goes through :mod:`brokerkernel.kernel.money.transactions`; these
handlers validate the request (422 listing every field error), check the seed's
permission and shape the answer. Beyond the seed: ``POST .../{id}/refund`` refunds an
approved deposit through the gateway that took it, ``POST .../{id}/reconcile`` asks
the gateway for the status of a cashier transaction and applies it.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_account_access, require_staff
from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.money.models import PaymentCallback
from brokerkernel.kernel.money.reports import derived_balance, ledger_summary
from brokerkernel.kernel.money.transactions import (
    CHARGEBACK,
    SOURCES,
    STATUSES,
    TYPES,
    Actor,
    TransactionRequest,
)
from brokerkernel.kernel.storage.models import LedgerEvent, TradingAccount, Transaction

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
    "gateway_reference",
    "original_transaction_id",
    "reason",
    "created_by",
    "approved_by",
    "declined_by",
    "deleted_by",
    "created_at",
    "updated_at",
)
CALLBACK_FIELDS = ("id", "gateway", "status", "outcome", "payload", "received_at")
PENDING_APPROVAL_LIMIT = 200
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: An amount as the seed writes it ("500.00") or as a JSON number (parsed exactly).
MONEY: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^-?[0-9]{1,17}(\.[0-9]{1,10})?$"},
        validation.decimal_schema(),
    ]
}
OPTIONAL_MONEY: dict[str, Any] = {"anyOf": [*MONEY["anyOf"], {"type": "null"}]}
_TRANSACTION_PROPERTIES: dict[str, Any] = {
    "type": {"enum": list(TYPES)},
    "account_id": {"type": "string", "pattern": UUID_PATTERN},
    "login": {"type": "integer", "minimum": 1},
    "amount": MONEY,
    "currency": {"type": "string", "pattern": "^[A-Z]{3,4}$"},
    "account_amount": OPTIONAL_MONEY,
    "usd_amount": OPTIONAL_MONEY,
    "exchange_rate_usd": OPTIONAL_MONEY,
    "gate_name": {"type": ["string", "null"], "maxLength": 64},
    "proof_reference": {"type": ["string", "null"], "maxLength": 128},
    "comment": {"type": ["string", "null"], "maxLength": 2000},
}
MANUAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "amount", "currency"],
    "properties": {
        **_TRANSACTION_PROPERTIES,
        "status": {"enum": ["PENDING", "APPROVED"], "default": "PENDING"},
    },
    "oneOf": [{"required": ["account_id"]}, {"required": ["login"]}],
    "additionalProperties": False,
}
CASHIER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "amount", "currency", "cashier_id"],
    "properties": {
        **_TRANSACTION_PROPERTIES,
        "type": {"enum": ["DEPOSIT", "WITHDRAWAL"]},
        "cashier_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "gateway_reference": {"type": ["string", "null"], "maxLength": 128},
        "status": {
            "enum": ["PENDING", "IN_PROGRESS", "PROCESSING", "APPROVED"],
            "default": "PENDING",
        },
    },
    "oneOf": [{"required": ["account_id"]}, {"required": ["login"]}],
    "additionalProperties": False,
}
REASON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": ["string", "null"], "maxLength": 2000}},
    "additionalProperties": False,
}
CHARGEBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
    "additionalProperties": False,
}
REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"amount": OPTIONAL_MONEY},
    "additionalProperties": False,
}


def transaction_json(tx: Transaction) -> dict[str, Any]:
    return {name: getattr(tx, name) for name in TRANSACTION_FIELDS}


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def path_uuid(request: web.Request, name: str = "id") -> str:
    """A UUID path parameter (a transaction's or a rule's id); 422 when it is not one."""
    value = request.match_info[name]
    if not re.fullmatch(UUID_PATTERN, value):
        raise ApiError(422, [{"loc": ["path", name], "msg": "must be a UUID", "type": "format"}])
    return value


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


def _staff(request: web.Request, permission: str) -> Actor:
    who = require_staff(request, permission)
    return Actor(who.subject, who.role)


async def _account(request: web.Request, key: str) -> TradingAccount:
    """The account a path ``{account_id}`` names: its UUID or its login."""
    async with request.app[KERNEL].db.read() as session:
        if key.isdigit():
            account = await session.get(TradingAccount, int(key))
        else:
            account = await session.scalar(select(TradingAccount).where(TradingAccount.id == key))
    if account is None:
        raise not_found("Account not found")
    return account


# --- ledger (section 7) ---------------------------------------------------------------


@operation(
    "Query financial ledger events",
    tags=["Financial Ledger"],
    query={
        "type": "object",
        "properties": {
            "limit": {"type": "integer", "default": 100, "minimum": 1, "maximum": 500},
            "offset": {"type": "integer", "default": 0, "minimum": 0},
            "event_type": {"type": "string"},
            "from_date": {"type": "string"},
            "to_date": {"type": "string"},
        },
    },
    path={"login": {"type": "integer"}},
    responses={404: "Account not found"},
    security="staff:view_customers",
)
async def ledger(request: web.Request) -> web.Response:
    """Ledger events of an account, newest first; filters event_type, from_date,
    to_date; ``limit`` (max 500) and ``offset`` page; ``X-Total-Count`` all matches."""
    require_staff(request, "view_customers")
    login = validation.path_int(request, "login")
    limit = validation.query_int(request, "limit", default=100, minimum=1, maximum=500)
    offset = validation.query_int(request, "offset", default=0, minimum=0)
    event_type = validation.query_enum(request, "event_type", LEDGER_TYPES)
    from_date, to_date = _date(request, "from_date"), _date(request, "to_date")
    criteria = [LedgerEvent.account_id == login]
    if event_type:
        criteria.append(LedgerEvent.event_type == event_type)
    if from_date:
        criteria.append(LedgerEvent.created_at >= from_date)
    if to_date:
        criteria.append(LedgerEvent.created_at <= to_date)
    query = select(LedgerEvent).where(*criteria)
    async with request.app[KERNEL].db.read() as session:
        if await session.get(TradingAccount, login) is None:
            raise not_found("Account not found")
        total = await _count(session, query)
        rows = (
            await session.scalars(
                query.order_by(LedgerEvent.sequence_num.desc()).limit(limit).offset(offset)
            )
        ).all()
    return respond(
        [{name: getattr(row, name) for name in LEDGER_FIELDS} for row in rows],
        headers={"X-Total-Count": str(total)},
    )


async def _count(session: AsyncSession, query: Select[Any]) -> int:
    return int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)


@operation(
    "Aggregated ledger summary",
    tags=["Financial Ledger"],
    query={
        "type": "object",
        "properties": {"from_date": {"type": "string"}, "to_date": {"type": "string"}},
    },
    path={"login": {"type": "integer"}},
    responses={404: "Account not found"},
    security="staff:view_customers",
)
async def ledger_summary_view(request: web.Request) -> web.Response:
    """Totals per kind over an optional time window (seed section 7), account currency."""
    require_staff(request, "view_customers")
    login = validation.path_int(request, "login")
    from_date, to_date = _date(request, "from_date"), _date(request, "to_date")
    db = request.app[KERNEL].db
    async with db.read() as session:
        if await session.get(TradingAccount, login) is None:
            raise not_found("Account not found")
        summary = await ledger_summary(session, db.is_sqlite, login, from_date, to_date)
    return respond(summary)


# --- account balance and transactions (section 6) ------------------------------------


@operation(
    "Get derived account balance",
    tags=["Accounts"],
    responses={404: "Account not found"},
    security=("customer", "staff:view_customers"),
)
async def account_balance(request: web.Request) -> web.Response:
    """Derived balance: the sum of the account's APPROVED transactions (seed section 6),
    beside the account's balance (which also holds trading results)."""
    account = await _account(request, request.match_info["account_id"])
    require_account_access(request, account.login, "view_customers")
    db = request.app[KERNEL].db
    async with db.read() as session:
        balance, credit = await derived_balance(session, db.is_sqlite, account.login)
    return respond(
        {
            "account_id": account.id,
            "login": account.login,
            "currency": account.currency,
            "balance": balance,
            "credit": credit,
            "account_balance": account.balance,
            "account_credit": account.credit,
        }
    )


@operation(
    "List account transactions",
    tags=["Accounts"],
    query={
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "limit": {"type": "integer", "default": 100, "minimum": 1, "maximum": 500},
            "offset": {"type": "integer", "default": 0, "minimum": 0},
        },
    },
    responses={404: "Account not found"},
    security=("customer", "staff:view_customers"),
)
async def account_transactions(request: web.Request) -> web.Response:
    """All transactions of an account, newest first; ``status`` filter, paging."""
    account = await _account(request, request.match_info["account_id"])
    require_account_access(request, account.login, "view_customers")
    status = validation.query_enum(request, "status", STATUSES)
    limit = validation.query_int(request, "limit", default=100, minimum=1, maximum=500)
    offset = validation.query_int(request, "offset", default=0, minimum=0)
    query = select(Transaction).where(Transaction.login == account.login)
    if status:
        query = query.where(Transaction.status == status)
    return await _transaction_page(request, query, limit, offset)


async def _transaction_page(
    request: web.Request, query: Select[Any], limit: int | None, offset: int | None
) -> web.Response:
    async with request.app[KERNEL].db.read() as session:
        total = await _count(session, query)
        rows = (
            await session.scalars(
                query.order_by(Transaction.created_at.desc(), Transaction.id)
                .limit(limit)
                .offset(offset)
            )
        ).all()
    return respond([transaction_json(tx) for tx in rows], headers={"X-Total-Count": str(total)})


# --- transactions (section 8) -------------------------------------------------------


async def _request_of(
    request: web.Request, data: dict[str, Any], source: str
) -> TransactionRequest:
    login = data.get("login")
    if login is None:
        login = (await _account(request, data["account_id"])).login
    return TransactionRequest(
        type=data["type"],
        login=login,
        amount=Decimal(str(data["amount"])),
        currency=data["currency"],
        status=data.get("status", "PENDING"),
        account_amount=_decimal(data.get("account_amount")),
        usd_amount=_decimal(data.get("usd_amount")),
        exchange_rate_usd=_decimal(data.get("exchange_rate_usd")),
        gate_name=data.get("gate_name"),
        proof_reference=data.get("proof_reference"),
        comment=data.get("comment"),
        source=source,
        cashier_id=data.get("cashier_id"),
    )


@operation(
    "Create a manual transaction",
    tags=["Transactions"],
    body=MANUAL_SCHEMA,
    responses={201: "Created", 404: "Account not found"},
    security="staff:create_deposits",
)
async def manual_transaction(request: web.Request) -> web.Response:
    """Create a manual transaction (201); ``status: APPROVED`` approves it in one step
    (needs ``approve_deposits`` too; maker-checker refuses it when enabled)."""
    who = require_staff(request, "create_deposits")
    data = await validation.body(request, MANUAL_SCHEMA)
    if data.get("status") == "APPROVED":
        require_staff(request, "approve_deposits")
    tx = await request.app[KERNEL].transactions.create_manual(
        await _request_of(request, data, "manual"), who.subject, who.role
    )
    return respond(transaction_json(tx), status=201)


@operation(
    "Create a cashier (Praxis) transaction",
    tags=["Transactions"],
    body=CASHIER_SCHEMA,
    responses={200: "Already created (same cashier id)", 201: "Created", 404: "Account not found"},
    security="staff:create_deposits",
)
async def cashier_transaction(request: web.Request) -> web.Response:
    """Record a cashier transaction, idempotent on ``cashier_id``: 201 when created,
    200 with the existing one (unchanged) when that ``cashier_id`` is known."""
    actor = _staff(request, "create_deposits")
    data = await validation.body(request, CASHIER_SCHEMA)
    kernel = request.app[KERNEL]
    tx, created = await kernel.transactions.create(
        await _request_of(request, data, "cashier"), actor
    )
    if created and data.get("gateway_reference"):
        async with kernel.db.transaction() as session:
            row = await session.get_one(Transaction, tx.id, with_for_update=True)
            row.gateway_reference = data["gateway_reference"]
            tx = row
    return respond(transaction_json(tx), status=201 if created else 200)


@operation(
    "Approve a pending transaction",
    tags=["Transactions"],
    security="staff:approve_deposits",
)
async def approve(request: web.Request) -> web.Response:
    actor = _staff(request, "approve_deposits")
    tx = await request.app[KERNEL].transactions.approve(path_uuid(request), actor)
    return respond(transaction_json(tx))


@operation(
    "Decline a pending transaction",
    tags=["Transactions"],
    body=REASON_SCHEMA,
    security="staff:approve_deposits",
)
async def decline(request: web.Request) -> web.Response:
    actor = _staff(request, "approve_deposits")
    tx_id = path_uuid(request)
    data = await validation.body(request, REASON_SCHEMA)
    tx = await request.app[KERNEL].transactions.decline(tx_id, actor, data.get("reason"))
    return respond(transaction_json(tx))


@operation(
    "Soft-delete a transaction",
    tags=["Transactions"],
    security="staff:approve_deposits",
)
async def delete(request: web.Request) -> web.Response:
    actor = _staff(request, "approve_deposits")
    tx = await request.app[KERNEL].transactions.delete(path_uuid(request), actor)
    return respond(transaction_json(tx))


@operation(
    "Process a chargeback",
    tags=["Transactions"],
    body=CHARGEBACK_SCHEMA,
    responses={201: "Created"},
    security="staff:process_chargebacks",
)
async def chargeback(request: web.Request) -> web.Response:
    actor = _staff(request, "process_chargebacks")
    tx_id = path_uuid(request, "tx_id")
    data = await validation.body(request, CHARGEBACK_SCHEMA)
    result = await request.app[KERNEL].transactions.chargeback(tx_id, data["reason"], actor)
    return respond(
        {
            "chargeback_id": result.chargeback.id,
            "original_transaction_id": result.original.id,
            "amount": result.chargeback.amount,
            "balance_after": result.balance_after,
            "account_frozen": result.account_frozen,
        },
        status=201,
    )


@operation(
    "Refund a transaction",
    tags=["Transactions"],
    body=REFUND_SCHEMA,
    responses={201: "Created"},
    security="staff:approve_deposits",
)
async def refund(request: web.Request) -> web.Response:
    """Refund an approved deposit through its gateway (all that is left by default)."""
    actor = _staff(request, "approve_deposits")
    tx_id = path_uuid(request)
    data = await validation.body(request, REFUND_SCHEMA)
    tx = await request.app[KERNEL].payments.refund(tx_id, _decimal(data.get("amount")), actor)
    return respond(transaction_json(tx), status=201)


@operation(
    "Reconcile a transaction with its provider",
    tags=["Transactions"],
    security="staff:approve_deposits",
)
async def reconcile(request: web.Request) -> web.Response:
    """Ask the gateway for a cashier transaction's status and apply it."""
    _staff(request, "approve_deposits")
    outcome = await request.app[KERNEL].payments.reconcile(path_uuid(request))
    assert outcome.transaction is not None
    return respond(
        {
            "outcome": outcome.outcome,
            "detail": outcome.detail,
            "transaction": transaction_json(outcome.transaction),
        }
    )


@operation(
    "List transactions awaiting approval",
    tags=["Transactions"],
    security="staff:approve_deposits",
)
async def pending_approval(request: web.Request) -> web.Response:
    """Transactions awaiting approval (status PENDING), oldest first, at most 200."""
    require_staff(request, "approve_deposits")
    async with request.app[KERNEL].db.read() as session:
        rows = (
            await session.scalars(
                select(Transaction)
                .where(Transaction.status == "PENDING")
                .order_by(Transaction.created_at, Transaction.id)
                .limit(PENDING_APPROVAL_LIMIT)
            )
        ).all()
    return respond([transaction_json(tx) for tx in rows])


@operation(
    "List transactions",
    tags=["Transactions"],
    query={
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string"},
            "source": {"type": "string"},
            "limit": {"type": "integer", "default": 100, "minimum": 1, "maximum": 500},
            "offset": {"type": "integer", "default": 0, "minimum": 0},
            "account_id": {"type": "string"},
            "customer_id": {"type": "string"},
            "date_from": {"type": "string"},
            "date_to": {"type": "string"},
        },
    },
    security="staff:view_customers",
)
async def list_transactions(request: web.Request) -> web.Response:
    """Transactions with the seed's filters (account_id, customer_id, type, status,
    source, date_from, date_to), newest first; ``limit`` (default 100, max 500)."""
    require_staff(request, "view_customers")
    filters = {
        "account_id": {"type": "string", "pattern": UUID_PATTERN},
        "customer_id": {"type": "string", "pattern": UUID_PATTERN},
    }
    validation.check(
        {"type": "object", "properties": filters},
        {k: v for k, v in request.query.items() if k in filters},
        "query",
    )
    type_ = validation.query_enum(request, "type", (*TYPES, CHARGEBACK))
    status = validation.query_enum(request, "status", STATUSES)
    source = validation.query_enum(request, "source", SOURCES)
    date_from, date_to = _date(request, "date_from"), _date(request, "date_to")
    limit = validation.query_int(request, "limit", default=100, minimum=1, maximum=500)
    offset = validation.query_int(request, "offset", default=0, minimum=0)
    query = select(Transaction)
    if "account_id" in request.query:
        query = query.where(Transaction.account_id == request.query["account_id"])
    if "customer_id" in request.query:
        query = query.join(TradingAccount, TradingAccount.id == Transaction.account_id).where(
            TradingAccount.customer_id == request.query["customer_id"]
        )
    for column, value in ((Transaction.type, type_), (Transaction.status, status)):
        if value:
            query = query.where(column == value)
    if source:
        query = query.where(Transaction.source == source)
    if date_from:
        query = query.where(Transaction.created_at >= date_from)
    if date_to:
        query = query.where(Transaction.created_at <= date_to)
    return await _transaction_page(request, query, limit, offset)


@operation(
    "Get single transaction",
    tags=["Transactions"],
    responses={404: "Transaction not found"},
    security="staff:view_customers",
)
async def get_transaction(request: web.Request) -> web.Response:
    """One transaction by UUID, with the payment callbacks received for it."""
    require_staff(request, "view_customers")
    tx_id = path_uuid(request)
    async with request.app[KERNEL].db.read() as session:
        tx = await session.get(Transaction, tx_id)
        if tx is None:
            raise not_found("Transaction not found")
        callbacks = (
            await session.scalars(
                select(PaymentCallback)
                .where(PaymentCallback.transaction_id == tx_id)
                .order_by(PaymentCallback.received_at, PaymentCallback.id)
            )
        ).all()
    return respond(
        {
            **transaction_json(tx),
            "callbacks": [{k: getattr(c, k) for k in CALLBACK_FIELDS} for c in callbacks],
        }
    )


def setup(router: Router) -> None:
    base = "/api/backoffice"
    router.add("GET", f"{base}/accounts/{{login}}/ledger", ledger, "/accounts/{login}/ledger")
    router.add(
        "GET",
        f"{base}/accounts/{{login}}/ledger/summary",
        ledger_summary_view,
        "/accounts/{login}/ledger/summary",
    )
    router.add(
        "GET",
        "/api/crm/accounts/{account_id}/balance",
        account_balance,
        "/accounts/{account_id}/balance",
    )
    router.add(
        "GET",
        "/api/crm/accounts/{account_id}/transactions",
        account_transactions,
        "/accounts/{account_id}/transactions",
    )
    # Fixed paths before /transactions/{id}, which would otherwise match them.
    tx = f"{base}/transactions"
    router.add("POST", f"{tx}/manual", manual_transaction, "/transactions/manual")
    router.add("POST", f"{tx}/cashier", cashier_transaction, "/transactions/cashier")
    router.add("GET", f"{tx}/pending-approval", pending_approval, "/transactions/pending-approval")
    router.add("GET", tx, list_transactions, "/transactions")
    router.add("GET", f"{tx}/{{id}}", get_transaction, "/transactions/{id}")
    router.add("PATCH", f"{tx}/{{id}}/approve", approve, "/transactions/{id}/approve")
    router.add("PATCH", f"{tx}/{{id}}/decline", decline, "/transactions/{id}/decline")
    router.add("PATCH", f"{tx}/{{id}}/delete", delete, "/transactions/{id}/delete")
    router.add("POST", f"{tx}/{{tx_id}}/chargeback", chargeback, "/transactions/{tx_id}/chargeback")
    router.add("POST", f"{tx}/{{id}}/refund", refund, "/transactions/{id}/refund")
    router.add("POST", f"{tx}/{{id}}/reconcile", reconcile, "/transactions/{id}/reconcile")
