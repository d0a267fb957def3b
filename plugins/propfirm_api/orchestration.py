"""ZT4 Set 1, Orchestration API ``/api/v1/propfirm``: the partner owns its plans.

Seed: ``zt4-propfirm-partner-api.txt``, "Set 1 — Orchestration API". Every route
takes a partner bearer token (``POST /api/v1/oauth/token``) and passes the
entitlement gate: 403 ``prop_firm_not_enabled`` for a tenant not enabled, 403
``insufficient_scope`` without the route's scope. Everything is scoped to the
token's tenant: another tenant's plan, account or payout answers 404.

==========  ==============================  ===============
method      path                            scope
==========  ==============================  ===============
GET         /plans                          plans:read
POST        /plans                          plans:write
GET         /plans/{id}                     plans:read
PATCH       /plans/{id}                     plans:write
DELETE      /plans/{id}                     plans:write  (retired when accounts exist)
POST        /accounts                       accounts:write
GET         /accounts                       accounts:read (status, phase, plan_id, paging)
GET         /accounts/{id}                  accounts:read
GET         /accounts/{id}/metrics          accounts:read
POST        /accounts/{id}/phase            accounts:write
POST        /accounts/{id}/reset            accounts:write
POST        /accounts/{id}/balance          balance:write
DELETE      /accounts/{id}                  accounts:write
POST        /accounts/{id}/sso              accounts:read
POST        /accounts/{id}/payouts          payouts:write (executed at once)
GET         /payouts                        payouts:read
GET         /payouts/{id}                   payouts:read
==========  ==============================  ===============

The business rules (plan validation, provisioning, lifecycle, profit split, payout
cadence and minimum) are the challenges service's
(:class:`~brokerkernel.plugins.challenges.service.ChallengeService`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import require_partner
from brokerkernel.api.jsonio import respond
from brokerkernel.api.openapi import operation
from brokerkernel.plugins.challenges.http import (
    change_account,
    page_schema,
    paged,
    partner_actor,
    path_id,
    query,
    service,
)
from brokerkernel.plugins.challenges.service import ChallengeService
from brokerkernel.plugins.propfirm_api import schemas
from brokerkernel.plugins.propfirm_api.common import (
    SSO_REFUSED,
    account_metrics,
    account_sso,
    account_state,
    add_routes,
    provision_account,
    request_payout,
)

BASE = "/api/v1/propfirm"
TAGS = ["propfirm"]


#: A :class:`ChallengeService` listing (``list_accounts``, ``list_payouts``):
#: ``(service, *, tenant_id, **filters and paging) -> (items, total)``.
Lister = Callable[..., Awaitable[tuple[list[dict[str, Any]], int]]]


async def listing(
    request: web.Request, scope: str, schema: Mapping[str, Any], lister: Lister
) -> web.Response:
    """A page (:func:`paged`) of the tenant's items: the query checked against
    ``schema`` (422 listing every error), then ``lister(service, tenant_id=..., **query)``."""
    who = require_partner(request, scope)
    params = query(request, schema)
    items, total = await lister(service(request), tenant_id=who.tenant_id, **params)
    return respond(paged(items, total, params))


# --- plans ---------------------------------------------------------------------------


@operation(
    "List challenge plans",
    tags=TAGS,
    query=schemas.PLANS_QUERY,
    responses={200: "The tenant's plans"},
    security="partner:plans:read",
)
async def list_plans(request: web.Request) -> web.Response:
    """The tenant's own plans; ``include_retired=true`` adds retired ones."""
    who = require_partner(request, "plans:read")
    params = query(request, schemas.PLANS_QUERY)
    return respond(await service(request).list_plans(tenant_id=who.tenant_id, **params))


@operation(
    "Create a plan (size, target, drawdown, phases, price)",
    tags=TAGS,
    body=schemas.PLAN,
    responses={201: "The plan", 409: "Duplicate code", 422: "Field errors"},
    security="partner:plans:write",
)
async def create_plan(request: web.Request) -> web.Response:
    who = require_partner(request, "plans:write")
    data = await validation.body(request, schemas.JSON_OBJECT)
    return respond(await service(request).create_plan(data, tenant_id=who.tenant_id), 201)


@operation(
    "Plan detail",
    tags=TAGS,
    responses={200: "The plan", 404: schemas.NOT_FOUND},
    security="partner:plans:read",
)
async def get_plan(request: web.Request) -> web.Response:
    who = require_partner(request, "plans:read")
    return respond(await service(request).get_plan(path_id(request), tenant_id=who.tenant_id))


@operation(
    "Update a plan",
    tags=TAGS,
    body=schemas.PLAN_PATCH,
    responses={200: "The plan", 404: schemas.NOT_FOUND, 422: "Field errors"},
    security="partner:plans:write",
)
async def update_plan(request: web.Request) -> web.Response:
    who = require_partner(request, "plans:write")
    changes = await validation.body(request, schemas.JSON_OBJECT)
    plan = await service(request).update_plan(path_id(request), changes, tenant_id=who.tenant_id)
    return respond(plan)


@operation(
    "Retire a plan",
    tags=TAGS,
    responses={200: "Deleted, or retired when accounts use it", 404: schemas.NOT_FOUND},
    security="partner:plans:write",
)
async def retire_plan(request: web.Request) -> web.Response:
    """Deleted when no account ever used it, else ``status: retired`` (no new
    provisioning; its accounts keep running)."""
    who = require_partner(request, "plans:write")
    return respond(await service(request).retire_plan(path_id(request), tenant_id=who.tenant_id))


# --- accounts ------------------------------------------------------------------------


@operation(
    "Provision an evaluation account (plan + trader)",
    tags=TAGS,
    body=schemas.PROVISION,
    responses={
        201: "The account (a repeat external_ref: the first one)",
        404: "Plan not found",
        409: "Plan retired",
        422: "Field errors",
    },
    security="partner:accounts:write",
)
async def provision(request: web.Request) -> web.Response:
    """A new account in the plan's first phase for the trader (created when new)."""
    return await provision_account(request, "accounts:write", source="propfirm_api", catalog=False)


@operation(
    "List accounts (filter by status/phase/plan)",
    tags=TAGS,
    query=schemas.ACCOUNTS_QUERY,
    responses={200: page_schema("accounts"), 422: "Bad query"},
    security="partner:accounts:read",
)
async def list_accounts(request: web.Request) -> web.Response:
    return await listing(
        request, "accounts:read", schemas.ACCOUNTS_QUERY, ChallengeService.list_accounts
    )


@operation(
    "State: equity, drawdown used, target progress, phase",
    tags=TAGS,
    responses=schemas.STATE_RESPONSES,
    security="partner:accounts:read",
)
async def get_account(request: web.Request) -> web.Response:
    return await account_state(request, "accounts:read")


@operation(
    "Metrics snapshot",
    tags=TAGS,
    responses=schemas.METRICS_RESPONSES,
    security="partner:accounts:read",
)
async def metrics(request: web.Request) -> web.Response:
    return await account_metrics(request, "accounts:read")


@operation(
    "Advance phase (eval -> funded)",
    tags=TAGS,
    body=schemas.EMPTY_BODY,
    responses={200: "The account in its next phase", 404: schemas.NOT_FOUND, 409: "Cannot advance"},
    security="partner:accounts:write",
)
async def advance_phase(request: web.Request) -> web.Response:
    return respond(
        await change_account(request, ChallengeService.advance_phase, schemas.EMPTY_BODY)
    )


@operation(
    "Reset the evaluation",
    tags=TAGS,
    body=schemas.EMPTY_BODY,
    responses={200: "The account, fresh in its phase", 404: schemas.NOT_FOUND, 409: "Cannot reset"},
    security="partner:accounts:write",
)
async def reset(request: web.Request) -> web.Response:
    return respond(await change_account(request, ChallengeService.reset, schemas.EMPTY_BODY))


@operation(
    "Deposit / withdraw / credit / adjust",
    tags=TAGS,
    body=schemas.BALANCE,
    responses={
        200: "{account: the account after the ledger row, transaction_id}",
        404: schemas.NOT_FOUND,
        409: "Archived",
        422: "Field errors, or a withdrawal above the withdrawable amount",
    },
    security="partner:balance:write",
)
async def balance(request: web.Request) -> web.Response:
    """One approved system transaction and ledger row per operation (amount in the
    account currency): ``{"account": <state>, "transaction_id"}``."""
    who = require_partner(request, "balance:write")
    data = await validation.body(request, schemas.BALANCE)
    account = await service(request).balance_operation(
        path_id(request),
        tenant_id=who.tenant_id,
        operation=data["operation"],
        amount=Decimal(data["amount"]),
        comment=data.get("comment", ""),
        actor=partner_actor(who),
    )
    return respond(account)


@operation(
    "Close / archive",
    tags=TAGS,
    responses={200: "The archived account", 404: schemas.NOT_FOUND},
    security="partner:accounts:write",
)
async def archive(request: web.Request) -> web.Response:
    return respond(await change_account(request, ChallengeService.archive))


@operation(
    "Mint an embedded-terminal SSO token",
    tags=TAGS,
    body=schemas.EMPTY_BODY,
    responses={200: schemas.SSO_RESPONSE, 404: schemas.NOT_FOUND, 409: SSO_REFUSED},
    security="partner:accounts:read",
)
async def sso(request: web.Request) -> web.Response:
    """A short-lived single-use token for the trader, redeemed at the customer
    autologin endpoint (``url``)."""
    return await account_sso(request, "accounts:read")


# --- payouts -------------------------------------------------------------------------


@operation(
    "Trigger a payout (profit split)",
    tags=TAGS,
    body=schemas.PAYOUT,
    responses={
        201: "The processed payout (amount, trader_share, firm_share)",
        404: schemas.NOT_FOUND,
        409: "Not funded, or before the plan's payout cadence allows",
        422: "Below the plan's minimum, above the profit, or field errors",
    },
    security="partner:payouts:write",
)
async def trigger_payout(request: web.Request) -> web.Response:
    """Executed at once: the amount leaves the balance (a ledger row), the trader's
    share is amount x the plan's profit split."""
    return await request_payout(request, "payouts:write", execute=True)


@operation(
    "List payouts",
    tags=TAGS,
    query=schemas.PAYOUTS_QUERY,
    responses={200: page_schema("payouts"), 422: "Bad query"},
    security="partner:payouts:read",
)
async def list_payouts(request: web.Request) -> web.Response:
    return await listing(
        request, "payouts:read", schemas.PAYOUTS_QUERY, ChallengeService.list_payouts
    )


@operation(
    "Payout detail",
    tags=TAGS,
    responses={200: "The payout", 404: schemas.NOT_FOUND},
    security="partner:payouts:read",
)
async def get_payout(request: web.Request) -> web.Response:
    who = require_partner(request, "payouts:read")
    return respond(await service(request).get_payout(path_id(request), tenant_id=who.tenant_id))


ROUTES = (
    ("GET", "/plans", list_plans),
    ("POST", "/plans", create_plan),
    ("GET", "/plans/{id}", get_plan),
    ("PATCH", "/plans/{id}", update_plan),
    ("DELETE", "/plans/{id}", retire_plan),
    ("POST", "/accounts", provision),
    ("GET", "/accounts", list_accounts),
    ("GET", "/accounts/{id}", get_account),
    ("GET", "/accounts/{id}/metrics", metrics),
    ("POST", "/accounts/{id}/phase", advance_phase),
    ("POST", "/accounts/{id}/reset", reset),
    ("POST", "/accounts/{id}/balance", balance),
    ("DELETE", "/accounts/{id}", archive),
    ("POST", "/accounts/{id}/sso", sso),
    ("POST", "/accounts/{id}/payouts", trigger_payout),
    ("GET", "/payouts", list_payouts),
    ("GET", "/payouts/{id}", get_payout),
)


def setup_routes(app: web.Application, kernel: Any) -> None:
    """Add the Orchestration routes (``broker_register_routes``)."""
    add_routes(app, kernel, ROUTES, BASE)
