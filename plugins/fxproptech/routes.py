"""The ``/v1`` REST routes: traders, evaluations, accounts, rules and payouts
(FXPropTech seed).

Every route takes a partner token (``api/auth.py`` :func:`require_partner`: 403
``prop_firm_not_enabled`` / ``insufficient_scope``) and sees only the partner's own
tenant: a foreign id answers 404. All business rules live in the challenges plugin's
:class:`~brokerkernel.plugins.challenges.service.ChallengeService`; a refusal it
raises (:class:`PropError`) is answered with its status and detail.

A **trader** is a trader account: the prop account (id ``prop_...``) with its
customer's profile; an **evaluation** is the same prop account seen as a challenge in
progress, so ``/v1/traders/{id}`` and ``/v1/evaluations/{id}`` take the same id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_partner
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.customers import kyc_statuses
from brokerkernel.kernel.storage.models import Customer
from brokerkernel.plugins.challenges.http import (
    change_account,
    guarded,
    page_schema,
    paged,
    partner_actor,
    path_id,
    query,
    service,
    trader_spec,
)
from brokerkernel.plugins.challenges.plans import validate_plan
from brokerkernel.plugins.challenges.service import ChallengeService, PropError, TraderSpec
from brokerkernel.plugins.fxproptech import schemas
from brokerkernel.plugins.fxproptech.onboarding import SOURCE

TAGS: Final = ["fxproptech"]
#: ``source`` of the evaluations ``POST /v1/evaluations`` provisions.
EVALUATION_SOURCE: Final = "fxproptech_evaluation"
#: ``source`` of the accounts ``POST /v1/accounts`` opens.
ACCOUNT_SOURCE: Final = "fxproptech_account"
NOT_FOUND: Final = "Account not found"
PLAN_NOT_FOUND: Final = "Plan not found"
RISK_LIMITS: Final = "risk_limits"
OVERRIDES: Final = "rule_overrides"
"""The service's name of the risk-limit overrides."""


# --- query strings -----------------------------------------------------------------


def _parse_time(raw: str, end_of_day: bool) -> datetime:
    """An ISO 8601 date-time (UTC without an offset) or date (its start, or with
    ``end_of_day`` its last microsecond); ValueError otherwise."""
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        moment = datetime.combine(day, time(), tzinfo=UTC)
        return moment + timedelta(days=1, microseconds=-1) if end_of_day else moment
    moment = datetime.fromisoformat(raw)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def times(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``params`` with the ``names`` parsed as UTC datetimes (``created_to`` style
    names, ending in ``_to``, take a date through its end); 422 for a date that does
    not exist (the schema's pattern checked the shape)."""
    errors = []
    for name in names:
        if name in params:
            try:
                params[name] = _parse_time(params[name], end_of_day=name.endswith("_to"))
            except ValueError as exc:
                errors.append({"loc": ["query", name], "msg": str(exc), "type": "format"})
    if errors:
        raise ApiError(422, errors)
    return params


@contextmanager
def field_renamed(service_field: str, api_field: str) -> Iterator[None]:
    """Field errors (422 items) of a :class:`PropError` raised inside name
    ``api_field`` where the service named ``service_field``; re-raised."""
    try:
        yield
    except PropError as exc:
        if isinstance(exc.detail, list):
            for error in exc.detail:
                error["loc"] = [api_field if p == service_field else p for p in error["loc"]]
        raise


# --- views ---------------------------------------------------------------------------


async def _customers(
    request: web.Request, ids: Iterable[str]
) -> tuple[dict[str, Customer], dict[str, str]]:
    """The customers of ``ids`` by id, and their KYC statuses (two queries)."""
    wanted = set(ids)
    async with request.app[KERNEL].db.read() as session:
        rows = await session.scalars(select(Customer).where(Customer.id.in_(wanted)))
        return {row.id: row for row in rows}, await kyc_statuses(session, wanted)


def trader_view(
    account: Mapping[str, Any], customer: Customer | None, kyc_status: str
) -> dict[str, Any]:
    """A trader: the prop account's state (the service's account view) with its
    customer's profile and ``kyc_status`` (the customer's, from ``POST /webhooks/kyc``:
    ``not_started`` without a result). Money in the account currency; ``pnl`` = equity
    - the phase's initial balance; ``risk_limits`` the per rule parameter overrides."""
    return {
        "id": account["id"],
        "customer_id": account["customer_id"],
        "email": customer.email if customer else None,
        "first_name": customer.first_name if customer else None,
        "last_name": customer.last_name if customer else None,
        "country": customer.country if customer else None,
        "kyc_status": kyc_status,
        "status": account["status"],
        "tier": account["tier"],
        RISK_LIMITS: account[OVERRIDES],
        "plan_id": account["plan_id"],
        "login": account["login"],
        "currency": account["currency"],
        "balance": account["balance"],
        "equity": account["equity"],
        "pnl": account["profit"],
        "evaluation": {"id": account["id"], "phase": account["phase"], "status": account["status"]},
        "created_at": account["created_at"],
    }


async def _trader(request: web.Request, account: Mapping[str, Any]) -> dict[str, Any]:
    owner = account["customer_id"]
    customers, kyc = await _customers(request, [owner])
    return trader_view(account, customers.get(owner), kyc[owner])


# --- traders -------------------------------------------------------------------------


@operation(
    "List trader accounts",
    tags=TAGS,
    query=schemas.TRADERS_QUERY,
    responses={200: page_schema("traders"), 422: "Bad query parameters"},
    security="partner:accounts:read",
)
@guarded
async def list_traders(request: web.Request) -> web.Response:
    """Traders of the partner, newest first; filters ``status``, ``plan`` (plan id),
    ``created_from`` / ``created_to``; ``limit`` (1-500, 50) and ``offset``."""
    who = require_partner(request, "accounts:read")
    params = times(query(request, schemas.TRADERS_QUERY), ("created_from", "created_to"))
    accounts, total = await service(request).list_accounts(
        tenant_id=who.tenant_id,
        status=params.get("status"),
        plan_id=params.get("plan"),
        created_from=params.get("created_from"),
        created_to=params.get("created_to"),
        limit=params["limit"],
        offset=params["offset"],
    )
    customers, kyc = await _customers(request, (a["customer_id"] for a in accounts))
    items = [
        trader_view(a, customers.get(a["customer_id"]), kyc[a["customer_id"]]) for a in accounts
    ]
    return respond(paged(items, total, params))


@operation(
    "Get a trader's full profile",
    tags=TAGS,
    responses={200: schemas.TRADER_RESPONSE, 404: NOT_FOUND},
    security="partner:accounts:read",
)
@guarded
async def get_trader(request: web.Request) -> web.Response:
    """KYC status, balance, P&L and evaluation state of one trader account."""
    who = require_partner(request, "accounts:read")
    account = await service(request).get_account(path_id(request), tenant_id=who.tenant_id)
    return respond(await _trader(request, account))


@operation(
    "Create a trader and provision an evaluation",
    tags=TAGS,
    body=schemas.TRADER_CREATE,
    responses={
        201: schemas.TRADER_RESPONSE,
        404: "Plan not found",
        409: "Plan retired",
        422: "Invalid body",
    },
    security="partner:accounts:write",
)
@guarded
async def create_trader(request: web.Request) -> web.Response:
    """The trader (found by email or created: ``trader.created``) with a new
    evaluation account on ``plan_id`` (``account.created``), then an onboarding
    message (``message.onboarding``). Idempotent on ``external_ref``."""
    who = require_partner(request, "accounts:write")
    data = await validation.body(request, schemas.TRADER_CREATE)
    account = await service(request).provision(
        data["plan_id"],
        trader_spec(data),
        tenant_id=who.tenant_id,
        source=SOURCE,
        external_ref=data.get("external_ref"),
    )
    return respond(await _trader(request, account), status=201)


@operation(
    "Update a trader: status, funding tier, risk-limit overrides",
    tags=TAGS,
    body=schemas.TRADER_PATCH,
    responses={200: schemas.TRADER_RESPONSE, 404: NOT_FOUND, 422: "Invalid body"},
    security="partner:accounts:write",
)
@guarded
async def patch_trader(request: web.Request) -> web.Response:
    """``status`` active/suspended, ``tier``, ``risk_limits`` (per rule parameter
    overrides, checked against the rule's schema by the service)."""
    who = require_partner(request, "accounts:write")
    data = await validation.body(request, schemas.TRADER_PATCH)
    changes = {(OVERRIDES if k == RISK_LIMITS else k): v for k, v in data.items()}
    with field_renamed(OVERRIDES, RISK_LIMITS):
        account = await service(request).update_account(
            path_id(request), changes, tenant_id=who.tenant_id, actor=partner_actor(who)
        )
    return respond(await _trader(request, account))


# --- evaluations ---------------------------------------------------------------------


def evaluation_view(account: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluation progress from the service's account view and metrics snapshot: phase
    and status, P&L (``pnl`` = equity - initial balance), drawdown used (absolute and
    percent of the initial balance, the day's and overall), the profit target and the
    progress towards it, trading days, days remaining (None without a deadline rule)
    and every rule's status (``{rule, type, objective, status, reason, numbers}``)."""
    return {
        "id": account["id"],
        "customer_id": account["customer_id"],
        "login": account["login"],
        "plan_id": account["plan_id"],
        "phase": account["phase"],
        "phase_index": account["phase_index"],
        "status": account["status"],
        "currency": account["currency"],
        "initial_balance": account["initial_balance"],
        "balance": metrics["balance"],
        "equity": metrics["equity"],
        "pnl": metrics["profit"],
        "drawdown": {
            "daily": metrics["daily_drawdown"],
            "daily_pct": metrics["daily_drawdown_pct"],
            "max": metrics["max_drawdown"],
            "max_pct": metrics["max_drawdown_pct"],
        },
        "target": metrics["target"],
        "target_progress_pct": metrics["target_progress_pct"],
        "trading_days": metrics["trading_days"],
        "days_remaining": metrics["days_remaining"],
        "rules": metrics["rules"],
        "breach": account["breach"],
        "phase_started_at": account["phase_started_at"],
        "created_at": account["created_at"],
    }


async def _evaluation(request: web.Request, account_id: str, tenant_id: str | None) -> Any:
    return evaluation_view(*await service(request).evaluation(account_id, tenant_id=tenant_id))


@operation(
    "Get an evaluation's progress",
    tags=TAGS,
    responses={200: schemas.EVALUATION_RESPONSE, 404: "Evaluation not found"},
    security="partner:accounts:read",
)
@guarded
async def get_evaluation(request: web.Request) -> web.Response:
    """Phase, P&L, drawdown used, days remaining and every rule's status."""
    who = require_partner(request, "accounts:read")
    return respond(await _evaluation(request, path_id(request), who.tenant_id))


async def _trader_of(request: web.Request, trader_id: str, tenant_id: str | None) -> TraderSpec:
    """The trader (customer) of ``trader_id``, one of the partner's trader accounts;
    404 ``Account not found`` for an unknown or foreign id."""
    owner = await service(request).get_account(trader_id, tenant_id=tenant_id)
    async with request.app[KERNEL].db.read() as session:
        customer = await session.get_one(Customer, owner["customer_id"])
    return TraderSpec(email=customer.email, customer_id=customer.id)


async def _open(
    request: web.Request,
    tenant_id: str | None,
    plan_id: str,
    trader: TraderSpec,
    *,
    source: str,
    reference: str | None,
) -> web.Response:
    """201 with the evaluation view of a new account on ``plan_id`` for ``trader``
    (:meth:`ChallengeService.provision`, idempotent on ``reference``: a repeat answers
    the first account). The service's 422 on ``customer_id`` (the customer holds
    accounts outside the partner's tenant) is reported on ``trader_id``."""
    with field_renamed("customer_id", "trader_id"):
        account = await service(request).provision(
            plan_id, trader, tenant_id=tenant_id, source=source, external_ref=reference
        )
    return respond(await _evaluation(request, account["id"], tenant_id), status=201)


@operation(
    "Provision an evaluation after payment confirmation",
    tags=TAGS,
    body=schemas.EVALUATION_CREATE,
    responses={
        201: schemas.EVALUATION_RESPONSE,
        404: "Plan or trader not found",
        409: "Plan retired",
        422: "Invalid body",
    },
    security="partner:accounts:write",
)
@guarded
async def create_evaluation(request: web.Request) -> web.Response:
    """A new evaluation account on ``plan_id`` for ``trader_id``'s customer or for
    ``trader``; idempotent on ``payment_reference`` (a repeat returns the first).
    ``trader_id`` is refused (422) once its customer holds accounts outside the
    partner's tenant (the service reuses only the partner's own traders)."""
    who = require_partner(request, "accounts:write")
    data = await validation.body(request, schemas.EVALUATION_CREATE)
    if "trader_id" in data:
        trader = await _trader_of(request, data["trader_id"], who.tenant_id)
    else:
        trader = trader_spec(data["trader"])
    return await _open(
        request,
        who.tenant_id,
        data["plan_id"],
        trader,
        source=EVALUATION_SOURCE,
        reference=data["payment_reference"],
    )


@operation(
    "Advance an evaluation to its next phase or funded",
    tags=TAGS,
    responses={200: schemas.EVALUATION_RESPONSE, 404: "Evaluation not found", 409: "Refused"},
    security="partner:accounts:write",
)
@guarded
async def pass_evaluation(request: web.Request) -> web.Response:
    """The manual advance (the seed's admin-only endpoint: scope accounts:write)."""
    account = await change_account(request, ChallengeService.advance_phase)
    return respond(await _evaluation(request, account["id"], account["tenant_id"]))


@operation(
    "Terminate and archive an evaluation",
    tags=TAGS,
    responses={200: schemas.EVALUATION_RESPONSE, 404: "Evaluation not found"},
    security="partner:accounts:write",
)
@guarded
async def delete_evaluation(request: web.Request) -> web.Response:
    """Archive the account (positions closed, trading stopped; kept for history)."""
    account = await change_account(request, ChallengeService.archive)
    return respond(await _evaluation(request, account["id"], account["tenant_id"]))


# --- accounts ------------------------------------------------------------------------


@operation(
    "Open a trading account for an existing trader",
    tags=TAGS,
    body=schemas.ACCOUNT_CREATE,
    responses={
        201: schemas.EVALUATION_RESPONSE,
        404: "Plan or trader not found",
        409: "Plan retired",
        422: "Invalid body, or the trader holds accounts outside the partner",
    },
    security="partner:accounts:write",
)
@guarded
async def create_account(request: web.Request) -> web.Response:
    """A new evaluation account on ``plan_id`` (a plan of the partner's own, as for
    ``POST /v1/evaluations``) for the trader of ``trader_id`` (one of its accounts),
    answered with the ``/v1/evaluations/{id}`` view (``account.created``, source
    :data:`ACCOUNT_SOURCE`; no onboarding message: the trader exists);
    idempotent on ``payment_reference`` when given (a repeat returns the first account,
    201). 404 ``Account not found`` (trader) / ``Plan not found``, 409 retired plan,
    422 ``trader_id`` whose customer holds accounts outside the partner's tenant."""
    who = require_partner(request, "accounts:write")
    data = await validation.body(request, schemas.ACCOUNT_CREATE)
    trader = await _trader_of(request, data["trader_id"], who.tenant_id)
    return await _open(
        request,
        who.tenant_id,
        data["plan_id"],
        trader,
        source=ACCOUNT_SOURCE,
        reference=data.get("payment_reference"),
    )


# --- rules ---------------------------------------------------------------------------


@operation(
    "Get a plan's rule set",
    tags=TAGS,
    responses={200: schemas.PLAN_RESPONSE, 404: PLAN_NOT_FOUND},
    security="partner:plans:read",
)
@guarded
async def get_rules(request: web.Request) -> web.Response:
    """The partner's own plan ``{id}`` with its rule set (a broker-owned or another
    partner's plan answers 404)."""
    who = require_partner(request, "plans:read")
    return respond(await service(request).get_plan(path_id(request), tenant_id=who.tenant_id))


def _rule_set_errors(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """422 items for body fields other than :data:`schemas.RULE_SET_FIELDS` and for
    missing ones (the service checks what the fields hold)."""
    fields = schemas.RULE_SET_FIELDS
    unknown = [
        {
            "loc": ["body", name],
            "msg": f"{name!r} is not part of a rule set ({', '.join(fields)})",
            "type": "additionalProperties",
        }
        for name in sorted(set(data) - set(fields))
    ]
    missing = [
        {"loc": ["body", name], "msg": f"{name!r} is a required property", "type": "required"}
        for name in fields
        if name not in data
    ]
    return missing + unknown


@operation(
    "Replace a plan's rule set",
    tags=TAGS,
    body=schemas.RULE_SET,
    responses={200: schemas.PLAN_RESPONSE, 404: PLAN_NOT_FOUND, 422: "Field errors"},
    security="partner:plans:write",
)
@guarded
async def put_rules(request: web.Request) -> web.Response:
    """Replace ``phases`` and ``funded_rules`` of the partner's own plan ``{id}``
    (:meth:`ChallengeService.update_plan`: the plan-update checks, every rule's type
    and params against the rule type's schema, defaults filled in). 404 for an
    unknown, broker-owned or another partner's plan (before any 422); 422 lists every
    field error at once.

    The change applies at once, not at the next phase: every account of the plan
    that is not archived is rebuilt with the new rules of the phase at its position
    (its ``phase_index``; past the last phase: ``funded_rules``), its own
    ``risk_limits`` still applied by rule name, and re-levelled in the risk engine
    (new floors hold from the next price). Its phase name, day start, peaks and
    status are kept (a breached account stays breached). This happens in the
    process that serves the request; other kernel processes keep their cached plan
    until they restart (:meth:`ChallengeService.update_plan` publishes no change)."""
    who = require_partner(request, "plans:write")
    challenges = service(request)
    plan_id = path_id(request)
    data = await validation.body(request, schemas.JSON_OBJECT)
    rules = {name: data[name] for name in schemas.RULE_SET_FIELDS if name in data}
    errors = _rule_set_errors(data)
    if errors:
        await challenges.get_plan(plan_id, tenant_id=who.tenant_id)
        if rules:
            errors.extend(validate_plan(rules, challenges.types, partial=True)[1])
        raise ApiError(422, errors)
    return respond(await challenges.update_plan(plan_id, rules, tenant_id=who.tenant_id))


# --- payouts -------------------------------------------------------------------------


def payout_view(payout: Mapping[str, Any]) -> dict[str, Any]:
    """The service's payout view (``amount``, ``trader_share``, ``firm_share`` in
    ``currency``, ``status``, ``destination``, times) with ``trader_id`` (its account)."""
    return {**payout, "trader_id": payout["account_id"]}


@operation(
    "List payout requests",
    tags=TAGS,
    query=schemas.PAYOUTS_QUERY,
    responses={200: page_schema("payouts"), 422: "Bad query parameters"},
    security="partner:payouts:read",
)
@guarded
async def list_payouts(request: web.Request) -> web.Response:
    """Pending, processed, rejected and failed payouts with amounts, split and
    destination; filters ``status`` and ``trader_id``."""
    who = require_partner(request, "payouts:read")
    params = query(request, schemas.PAYOUTS_QUERY)
    payouts, total = await service(request).list_payouts(
        tenant_id=who.tenant_id,
        status=params.get("status"),
        account_id=params.get("trader_id"),
        limit=params["limit"],
        offset=params["offset"],
    )
    items = [payout_view(p) for p in payouts]
    return respond(paged(items, total, params))


#: The answers of a decision on a pending payout (approve or reject).
PAYOUT_DECISION_RESPONSES: Final[dict[int, Any]] = {
    200: schemas.PAYOUT_RESPONSE,
    404: "Payout not found",
    409: "Payout not pending",
    422: "Invalid body",
}


@operation(
    "Approve and process a payout",
    tags=TAGS,
    body=schemas.PAYOUT_APPROVE,
    responses=PAYOUT_DECISION_RESPONSES,
    security="partner:payouts:write",
)
@guarded
async def approve_payout(request: web.Request) -> web.Response:
    """Process a pending payout (ledger withdrawal, ``payout.processed``); ``failed``
    with a ``reason`` when the account left ``funded`` or its profit no longer covers
    the amount (no money moves, ``payout.failed``)."""
    who = require_partner(request, "payouts:write")
    data = await validation.body(request, schemas.PAYOUT_APPROVE)
    payout = await service(request).approve_payout(
        data["payout_id"], tenant_id=who.tenant_id, actor=partner_actor(who)
    )
    return respond(payout_view(payout))


@operation(
    "Decline a payout",
    tags=TAGS,
    body=schemas.PAYOUT_REJECT,
    responses=PAYOUT_DECISION_RESPONSES,
    security="partner:payouts:write",
)
@guarded
async def reject_payout(request: web.Request) -> web.Response:
    """Decline a pending payout with ``reason`` (no money moves, ``payout.rejected``)."""
    who = require_partner(request, "payouts:write")
    data = await validation.body(request, schemas.PAYOUT_REJECT)
    payout = await service(request).reject_payout(
        data["payout_id"], tenant_id=who.tenant_id, actor=partner_actor(who), reason=data["reason"]
    )
    return respond(payout_view(payout))


ROUTES: Final = (
    ("GET", "/v1/traders", list_traders),
    ("POST", "/v1/traders", create_trader),
    ("GET", "/v1/traders/{id}", get_trader),
    ("PATCH", "/v1/traders/{id}", patch_trader),
    ("POST", "/v1/evaluations", create_evaluation),
    ("GET", "/v1/evaluations/{id}", get_evaluation),
    ("DELETE", "/v1/evaluations/{id}", delete_evaluation),
    ("POST", "/v1/evaluations/{id}/pass", pass_evaluation),
    ("POST", "/v1/accounts", create_account),
    ("GET", "/v1/rules/{id}", get_rules),
    ("PUT", "/v1/rules/{id}", put_rules),
    ("GET", "/v1/payouts", list_payouts),
    ("POST", "/v1/payouts/approve", approve_payout),
    ("POST", "/v1/payouts/reject", reject_payout),
)
"""Method, path and handler of every REST route."""
