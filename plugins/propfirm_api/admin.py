"""Broker-side administration of the prop-firm partner API.

The broker's own (Storefront) plans and the approval of payouts partners requested:

=======  ========================================  =================
GET      /api/platform/prop/plans                  manage_groups
POST     /api/platform/prop/plans                  manage_groups
GET      /api/platform/prop/plans/{id}             manage_groups
PATCH    /api/platform/prop/plans/{id}             manage_groups
DELETE   /api/platform/prop/plans/{id}             manage_groups (retired when used)
GET      /api/backoffice/prop/payouts              approve_deposits
PATCH    /api/backoffice/prop/payouts/{id}/approve approve_deposits
PATCH    /api/backoffice/prop/payouts/{id}/reject  approve_deposits
=======  ========================================  =================

Permissions are the seed's closest existing ones (``broker-platform-api-reference``):
plans configure trading groups and risk like ``POST /api/platform/groups``
(``manage_groups``); approving a payout moves money like ``PATCH
/api/backoffice/transactions/{id}/approve`` (``approve_deposits``), and declining one
is the same decision. Staff act with ``tenant_id=None``: the broker's plans, and every
tenant's payouts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.jsonio import respond
from brokerkernel.api.openapi import operation
from brokerkernel.plugins.challenges.http import page_schema, paged, path_id, query, service
from brokerkernel.plugins.propfirm_api import schemas
from brokerkernel.plugins.propfirm_api.common import add_routes

PLANS = "/api/platform/prop/plans"
PAYOUTS = "/api/backoffice/prop/payouts"
PLAN_PERMISSION = "manage_groups"
PAYOUT_PERMISSION = "approve_deposits"
TAGS = ["prop admin"]


@operation(
    "List the broker's prop plans",
    tags=TAGS,
    query=schemas.PLANS_QUERY,
    responses={200: "The broker-owned plans"},
    security=f"staff:{PLAN_PERMISSION}",
)
async def list_plans(request: web.Request) -> web.Response:
    require_staff(request, PLAN_PERMISSION)
    params = query(request, schemas.PLANS_QUERY)
    return respond(await service(request).list_plans(tenant_id=None, **params))


@operation(
    "Create a broker plan (sold through the Storefront catalog)",
    tags=TAGS,
    body=schemas.PLAN,
    responses={201: "The plan", 409: "Duplicate code", 422: "Field errors"},
    security=f"staff:{PLAN_PERMISSION}",
)
async def create_plan(request: web.Request) -> web.Response:
    require_staff(request, PLAN_PERMISSION)
    data = await validation.body(request, schemas.JSON_OBJECT)
    return respond(await service(request).create_plan(data, tenant_id=None), 201)


@operation(
    "Broker plan detail",
    tags=TAGS,
    responses={200: "The plan", 404: "Plan not found"},
    security=f"staff:{PLAN_PERMISSION}",
)
async def get_plan(request: web.Request) -> web.Response:
    require_staff(request, PLAN_PERMISSION)
    return respond(await service(request).get_plan(path_id(request), tenant_id=None))


@operation(
    "Update a broker plan",
    tags=TAGS,
    body=schemas.PLAN_PATCH,
    responses={200: "The plan", 404: "Plan not found", 422: "Field errors"},
    security=f"staff:{PLAN_PERMISSION}",
)
async def update_plan(request: web.Request) -> web.Response:
    require_staff(request, PLAN_PERMISSION)
    changes = await validation.body(request, schemas.JSON_OBJECT)
    return respond(await service(request).update_plan(path_id(request), changes, tenant_id=None))


@operation(
    "Retire a broker plan",
    tags=TAGS,
    responses={200: "Deleted, or retired when accounts use it", 404: "Plan not found"},
    security=f"staff:{PLAN_PERMISSION}",
)
async def retire_plan(request: web.Request) -> web.Response:
    require_staff(request, PLAN_PERMISSION)
    return respond(await service(request).retire_plan(path_id(request), tenant_id=None))


@operation(
    "List prop payouts (every tenant)",
    tags=TAGS,
    query=schemas.PAYOUTS_QUERY,
    responses={200: page_schema("payouts"), 422: "Bad query"},
    security=f"staff:{PAYOUT_PERMISSION}",
)
async def list_payouts(request: web.Request) -> web.Response:
    """``status=pending`` lists the Storefront requests waiting for approval."""
    require_staff(request, PAYOUT_PERMISSION)
    params = query(request, schemas.PAYOUTS_QUERY)
    items, total = await service(request).list_payouts(tenant_id=None, **params)
    return respond(paged(items, total, params))


@operation(
    "Approve a pending prop payout",
    tags=TAGS,
    responses={
        200: "The processed payout, or the failed one (``reason``)",
        404: "Payout not found",
        409: "Not pending",
    },
    security=f"staff:{PAYOUT_PERMISSION}",
)
async def approve_payout(request: web.Request) -> web.Response:
    """Processes the payout: the amount leaves the balance in one ledger row and
    ``payout.processed`` is emitted; when the account left ``funded`` or its profit no
    longer covers the amount, the payout ends ``failed`` with a ``reason`` (no money
    moves, ``payout.failed``)."""
    who = require_staff(request, PAYOUT_PERMISSION)
    payout = await service(request).approve_payout(
        path_id(request), tenant_id=None, actor=who.subject
    )
    return respond(payout)


@operation(
    "Decline a pending prop payout",
    tags=TAGS,
    body=schemas.PAYOUT_REJECT,
    responses={
        200: "The rejected payout",
        404: "Payout not found",
        409: "Not pending",
        422: "Invalid body",
    },
    security=f"staff:{PAYOUT_PERMISSION}",
)
async def reject_payout(request: web.Request) -> web.Response:
    """Declines the payout with ``reason``: no money moves, ``payout.rejected`` is
    emitted."""
    who = require_staff(request, PAYOUT_PERMISSION)
    data = await validation.body(request, schemas.PAYOUT_REJECT)
    payout = await service(request).reject_payout(
        path_id(request), tenant_id=None, actor=who.subject, reason=data["reason"]
    )
    return respond(payout)


ROUTES = (
    ("GET", PLANS, list_plans),
    ("POST", PLANS, create_plan),
    ("GET", PLANS + "/{id}", get_plan),
    ("PATCH", PLANS + "/{id}", update_plan),
    ("DELETE", PLANS + "/{id}", retire_plan),
    ("GET", PAYOUTS, list_payouts),
    ("PATCH", PAYOUTS + "/{id}/approve", approve_payout),
    ("PATCH", PAYOUTS + "/{id}/reject", reject_payout),
)


def setup_routes(app: web.Application, kernel: Any) -> None:
    """Add the broker admin routes (``broker_register_routes``)."""
    add_routes(app, kernel, ROUTES)
