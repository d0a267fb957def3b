"""ZT4 Set 2, Storefront API ``/api/v1/storefront``: the broker owns plans and rules.

Seed: ``zt4-propfirm-partner-api.txt``, "Set 2 — Storefront API". Same OAuth2 stack
and entitlement gate as the Orchestration API (one client may hold scopes of both
sets). The partner sells the broker's plans visible to its tenant (the catalog,
read-only) and provisions against them by ``planId`` only: the server applies the
plan's rules and any other field (a rule value, a balance) is refused with 422.
Payouts are requests that wait for the broker's approval
(``PATCH /api/backoffice/prop/payouts/{id}/approve``), never executed here.

=====  ================================  ==================
GET    /catalog                          catalog:read
GET    /catalog/{id}                     catalog:read
POST   /accounts                         accounts:provision
GET    /accounts/{id}                    accounts:read
GET    /accounts/{id}/metrics            metrics:read
POST   /accounts/{id}/sso                accounts:read
POST   /accounts/{id}/payout-request     payouts:request
=====  ================================  ==================
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from brokerkernel.api.auth import require_partner
from brokerkernel.api.jsonio import respond
from brokerkernel.api.openapi import operation
from brokerkernel.plugins.challenges.http import path_id, service
from brokerkernel.plugins.propfirm_api import schemas
from brokerkernel.plugins.propfirm_api.common import (
    SSO_REFUSED,
    account_metrics,
    account_sso,
    account_state,
    add_routes,
    broker_owned,
    catalog_plan,
    provision_account,
    request_payout,
)

BASE = "/api/v1/storefront"
TAGS = ["storefront"]


@operation(
    "List broker-configured plans (read-only)",
    tags=TAGS,
    responses={200: "Active broker plans visible to the tenant: rules and price"},
    security="partner:catalog:read",
)
async def catalog(request: web.Request) -> web.Response:
    who = require_partner(request, "catalog:read")
    plans = await service(request).list_plans(tenant_id=who.tenant_id, catalog=True)
    return respond(broker_owned(plans))


@operation(
    "Plan detail (rules, price)",
    tags=TAGS,
    responses={200: "The plan", 404: schemas.NOT_FOUND},
    security="partner:catalog:read",
)
async def catalog_detail(request: web.Request) -> web.Response:
    who = require_partner(request, "catalog:read")
    return respond(await catalog_plan(request, path_id(request), who.tenant_id))


@operation(
    "Provision against a plan by planId (server applies the plan's rules)",
    tags=TAGS,
    body=schemas.PROVISION,
    responses={
        201: "The account (a repeat external_ref: the first one)",
        404: "Plan not found (or not in the tenant's catalog)",
        409: "Plan retired",
        422: "Field errors (any field besides planId, trader and external_ref)",
    },
    security="partner:accounts:provision",
)
async def provision(request: web.Request) -> web.Response:
    return await provision_account(request, "accounts:provision", source="storefront", catalog=True)


@operation(
    "State: phase, status, target progress, drawdown",
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
    security="partner:metrics:read",
)
async def metrics(request: web.Request) -> web.Response:
    return await account_metrics(request, "metrics:read")


@operation(
    "Embedded-terminal SSO token",
    tags=TAGS,
    body=schemas.EMPTY_BODY,
    responses={200: schemas.SSO_RESPONSE, 404: schemas.NOT_FOUND, 409: SSO_REFUSED},
    security="partner:accounts:read",
)
async def sso(request: web.Request) -> web.Response:
    return await account_sso(request, "accounts:read")


@operation(
    "Request a payout -> pending internal approval (no direct execution)",
    tags=TAGS,
    body=schemas.PAYOUT,
    responses={
        202: "The payout, status pending",
        404: schemas.NOT_FOUND,
        409: "Not funded, or before the plan's payout cadence allows",
        422: "Below the plan's minimum, above the profit, or field errors",
    },
    security="partner:payouts:request",
)
async def payout_request(request: web.Request) -> web.Response:
    """The same checks as an Orchestration payout; the money moves only when the
    broker approves it."""
    return await request_payout(request, "payouts:request", execute=False)


ROUTES = (
    ("GET", "/catalog", catalog),
    ("GET", "/catalog/{id}", catalog_detail),
    ("POST", "/accounts", provision),
    ("GET", "/accounts/{id}", get_account),
    ("GET", "/accounts/{id}/metrics", metrics),
    ("POST", "/accounts/{id}/sso", sso),
    ("POST", "/accounts/{id}/payout-request", payout_request),
)


def setup_routes(app: web.Application, kernel: Any) -> None:
    """Add the Storefront routes (``broker_register_routes``)."""
    add_routes(app, kernel, ROUTES, BASE)
