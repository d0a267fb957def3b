"""Payment routing, gateways, cashier sessions, provider callbacks and withdrawal
approval rules (seed sections 8, 9 and 10).

Connectors add their webhook routes through ``broker_register_routes`` with
:func:`gateway_webhook` (verify on the raw body, apply, answer in the provider's
format) and may offer their own session route with :func:`open_cashier_session`.
Beyond the seed: ``POST /payments/session`` opens a cashier session at whichever
gateway routing picks for the customer's country.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import principal, require_staff
from brokerkernel.api.errors import ApiError, forbidden, not_found
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.backoffice import MONEY, OPTIONAL_MONEY, path_uuid
from brokerkernel.kernel.descriptors import CallbackRejected, GatewayError, PaymentUpdate
from brokerkernel.kernel.money import approvals
from brokerkernel.kernel.money.models import PaymentRoute, WithdrawalApprovalRule
from brokerkernel.kernel.money.payments import (
    DIRECTIONS,
    UPDATE_STATUSES,
    CallbackOutcome,
    OpenedSession,
)

if TYPE_CHECKING:
    from brokerkernel.api.app import Handler, Router

COUNTRY = "^[A-Z]{2}$"
ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["deposit_gateway", "withdrawal_gateway"],
    "properties": {
        "deposit_gateway": {"type": "string", "minLength": 1, "maxLength": 64},
        "withdrawal_gateway": {"type": "string", "minLength": 1, "maxLength": 64},
        "is_active": {"type": "boolean", "default": True},
        "note": {"type": ["string", "null"], "maxLength": 2000},
    },
    "additionalProperties": False,
}
RESOLVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["country"],
    "properties": {
        "country": {"type": "string", "pattern": COUNTRY},
        "direction": {"enum": list(DIRECTIONS)},
    },
}
SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["amount", "currency"],
    "properties": {
        "amount": MONEY,
        "currency": {"type": "string", "pattern": "^[A-Z]{3,4}$"},
        "login": {"type": "integer", "minimum": 1},
        "direction": {"enum": list(DIRECTIONS), "default": "deposit"},
        "locale": {"type": "string", "pattern": "^[a-z]{2}(-[A-Z]{2})?$", "default": "en"},
    },
    "additionalProperties": False,
}
CALLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["cashier_id", "status"],
    "properties": {
        "cashier_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "status": {"enum": list(UPDATE_STATUSES)},
        "gateway_payload": {"type": "object", "default": {}},
        "reference": {"type": ["string", "null"], "maxLength": 128},
        "amount": OPTIONAL_MONEY,
        "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3,4}$"},
    },
    "additionalProperties": False,
}
RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["min_amount_usd", "required_role"],
    "properties": {
        "min_amount_usd": MONEY,
        "max_amount_usd": OPTIONAL_MONEY,
        "required_role": {"type": "string", "minLength": 1, "maxLength": 64},
        "is_active": {"type": "boolean", "default": True},
    },
    "additionalProperties": False,
}
ROUTE_FIELDS = ("country", "deposit_gateway", "withdrawal_gateway", "is_active", "note")
RULE_FIELDS = ("id", "min_amount_usd", "max_amount_usd", "required_role", "is_active")


def _route_json(route: PaymentRoute) -> dict[str, Any]:
    return {**{k: getattr(route, k) for k in ROUTE_FIELDS}, "updated_at": route.updated_at}


def _rule_json(rule: WithdrawalApprovalRule) -> dict[str, Any]:
    return {
        **{k: getattr(rule, k) for k in RULE_FIELDS},
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }


def _country(request: web.Request) -> str:
    country = request.match_info["country"]
    if not re.fullmatch(COUNTRY, country):
        raise ApiError(
            422,
            [{"loc": ["path", "country"], "msg": "must be ISO 3166-1 alpha-2", "type": "pattern"}],
        )
    return country


# --- routing and gateways (section 9) -----------------------------------------------


@operation(
    "List available payment gateways",
    tags=["Payment Routing & BridgerPay"],
    security="staff:view_customers",
)
async def available_gateways(request: web.Request) -> web.Response:
    require_staff(request, "view_customers")
    return respond(
        [
            {
                "id": descriptor.name,
                "name": descriptor.title or descriptor.name,
                "type": descriptor.kind,
                "enabled": enabled,
                "directions": list(descriptor.directions),
            }
            for descriptor, enabled in request.app[KERNEL].payments.available()
        ]
    )


@operation(
    "List payment routing rules",
    tags=["Payment Routing & BridgerPay"],
    security="staff:view_customers",
)
async def list_routing(request: web.Request) -> web.Response:
    require_staff(request, "view_customers")
    return respond([_route_json(r) for r in await request.app[KERNEL].payments.list_routes()])


@operation(
    "Create or update country routing",
    tags=["Payment Routing & BridgerPay"],
    body=ROUTE_SCHEMA,
    responses={200: "Replaced", 201: "Created"},
    security="staff:manage_payment_routing",
)
async def put_routing(request: web.Request) -> web.Response:
    """Create (201) or replace (200) a country's routing; 422 for gateways that are not
    enabled or cannot process that direction."""
    require_staff(request, "manage_payment_routing")
    country = _country(request)
    data = await validation.body(request, ROUTE_SCHEMA)
    route, created = await request.app[KERNEL].payments.upsert_route(
        country,
        data["deposit_gateway"],
        data["withdrawal_gateway"],
        data.get("is_active", True),
        data.get("note"),
    )
    return respond(_route_json(route), status=201 if created else 200)


@operation(
    "Delete country routing",
    tags=["Payment Routing & BridgerPay"],
    responses={204: "No Content"},
    security="staff:manage_payment_routing",
)
async def delete_routing(request: web.Request) -> web.Response:
    require_staff(request, "manage_payment_routing")
    await request.app[KERNEL].payments.delete_route(_country(request))
    return web.Response(status=204)


@operation(
    "Resolve payment gateway for country",
    tags=["Payment Routing & BridgerPay"],
    query=RESOLVE_SCHEMA,
    security="public",
)
async def resolve_gateway(request: web.Request) -> web.Response:
    """Public: the gateway for ``country`` and ``direction`` (default deposit), its
    type and the public values its cashier front end needs."""
    query = dict(request.query)
    validation.check(RESOLVE_SCHEMA, query, "query")
    direction = query.get("direction", "deposit")
    enabled = await request.app[KERNEL].payments.resolve(query["country"], direction)
    return respond(
        {
            "gateway": enabled.descriptor.name,
            "country": query["country"],
            "direction": direction,
            "type": enabled.descriptor.kind,
            **enabled.client.public_config(),
        }
    )


# --- cashier sessions -------------------------------------------------------------------


async def open_cashier_session(request: web.Request, gateway: str | None) -> OpenedSession:
    """Validate a customer's session request (``SESSION_SCHEMA``) and open it at
    ``gateway`` (None: routed by the customer's country). 401/403/404/409/422/502/503."""
    who = principal(request)
    if who.kind != "customer":
        raise forbidden("Customer access required")
    data = await validation.body(request, SESSION_SCHEMA)
    login = data.get("login")
    if login is None:
        if len(who.logins) != 1:
            raise ApiError(
                422,
                [{"loc": ["body", "login"], "msg": "field required", "type": "required"}],
            )
        (login,) = who.logins
    if login not in who.logins:
        raise ApiError(403, "Not your trading account")
    return await request.app[KERNEL].payments.open_session(
        who.subject,
        login,
        data.get("direction", "deposit"),
        Decimal(str(data["amount"])),
        data["currency"],
        gateway,
        data.get("locale", "en"),
    )


@operation(
    "Create a cashier session with the routed gateway",
    tags=["Payment Routing & BridgerPay"],
    body=SESSION_SCHEMA,
    responses={201: "Created", 404: "No gateway routed", 502: "The gateway failed"},
    security="customer",
)
async def cashier_session(request: web.Request) -> web.Response:
    """Open a deposit or withdrawal session at the routed gateway (201)."""
    opened = await open_cashier_session(request, None)
    return respond(
        {
            "transaction_id": opened.transaction.id,
            "cashier_id": opened.transaction.cashier_id,
            "gateway": opened.gateway.descriptor.name,
            "type": opened.gateway.descriptor.kind,
            "redirect_url": opened.session.redirect_url,
            "token": opened.session.token,
            **opened.session.details,
        },
        status=201,
    )


# --- callbacks ----------------------------------------------------------------------------


def _outcome_response(outcome: CallbackOutcome) -> web.Response:
    if outcome.outcome == "unknown":
        raise not_found("Transaction not found")
    if outcome.outcome == "conflict":
        raise ApiError(409, f"Callback conflicts with the transaction: {outcome.detail}")
    tx = outcome.transaction
    assert tx is not None
    return respond(
        {
            "cashier_id": tx.cashier_id,
            "transaction_id": tx.id,
            "status": tx.status,
            "outcome": outcome.outcome,
        }
    )


@operation(
    "Provider payment callback (internal)",
    tags=["Transactions"],
    body=CALLBACK_SCHEMA,
    responses={
        401: "Bad Standard Webhooks signature",
        404: "Transaction not found (or no callback secret configured)",
        409: "Conflicts with the transaction's state",
    },
    security="public",
)
async def payment_callback(request: web.Request) -> web.Response:
    """The provider-agnostic callback of an external integration service (seed
    section 8), signed with Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``; ``[kernel.payments] callback_secret``). 404 when no secret
    is configured, 401 on a bad signature, 404 unknown cashier_id, 409 conflict."""
    kernel = request.app[KERNEL]
    secret = kernel.kernel_config["payments"]["callback_secret"]
    data = await validation.signed_body(request, secret, CALLBACK_SCHEMA)
    update = PaymentUpdate(
        cashier_id=data["cashier_id"],
        status=data["status"],
        gateway_payload=data.get("gateway_payload", {}),
        reference=data.get("reference"),
        amount=None if data.get("amount") is None else Decimal(str(data["amount"])),
        currency=data.get("currency"),
    )
    return _outcome_response(await kernel.payments.apply(update, "internal"))


def gateway_webhook(name: str) -> Handler:
    """An aiohttp handler for the webhooks of gateway ``name``: the gateway verifies
    and translates the raw request (400 when it rejects it; 502 when confirming it with
    the provider fails, so the provider retries), the kernel applies the update, and
    the gateway's acknowledgement is the answer (also to a replay: it moves nothing)."""

    @operation(
        f"{name} payment webhook",
        tags=["Payment Routing & BridgerPay"],
        responses={
            200: "The gateway's acknowledgement",
            400: "Rejected by the gateway (bad signature or payload)",
            502: "Confirming with the provider failed: the provider retries",
        },
        security="public",
    )
    async def handler(request: web.Request) -> web.StreamResponse:
        kernel = request.app[KERNEL]
        enabled = kernel.payments.gateway(name)
        body = await request.read()
        try:
            update = await enabled.client.parse_callback(body, request.headers)
        except CallbackRejected as exc:
            raise ApiError(400, str(exc)) from exc
        except GatewayError as exc:
            raise ApiError(502, f"{name}: {exc}") from exc
        if update is not None:
            await kernel.payments.apply(update, name)
        reply = enabled.client.acknowledge()
        return respond(dict(reply.body), status=reply.status, headers=dict(reply.headers))

    return handler


def add_gateway_webhook(app: web.Application, name: str, *aliases: str) -> None:
    """Route ``POST /integrations/webhooks/{name}`` and each of the ``aliases`` paths
    to :func:`gateway_webhook` of gateway ``name`` (a connector's route setup)."""
    handler = gateway_webhook(name)
    for path in (f"/integrations/webhooks/{name}", *aliases):
        app.router.add_post(path, handler)


# --- withdrawal approval rules (section 10) ------------------------------------------


def _rule_input(data: dict[str, Any]) -> approvals.RuleInput:
    maximum = data.get("max_amount_usd")
    return approvals.RuleInput(
        min_amount_usd=Decimal(str(data["min_amount_usd"])),
        max_amount_usd=None if maximum is None else Decimal(str(maximum)),
        required_role=data["required_role"],
        is_active=data.get("is_active", True),
    )


@operation(
    "List withdrawal approval rules",
    tags=["Withdrawal Approval Rules"],
    security="staff:approve_deposits",
)
async def list_rules(request: web.Request) -> web.Response:
    require_staff(request, "approve_deposits")
    async with request.app[KERNEL].db.read() as session:
        rules = await approvals.list_rules(session)
    return respond([_rule_json(rule) for rule in rules])


@operation(
    "Create a withdrawal approval rule",
    tags=["Withdrawal Approval Rules"],
    body=RULE_SCHEMA,
    responses={201: "Created"},
    security="staff:manage_broker_config",
)
async def create_rule(request: web.Request) -> web.Response:
    require_staff(request, "manage_broker_config")
    data = await validation.body(request, RULE_SCHEMA)
    kernel = request.app[KERNEL]
    async with kernel.db.transaction() as session:
        rule = await approvals.create_rule(session, _rule_input(data), kernel.clock.now())
    return respond(_rule_json(rule), status=201)


@operation(
    "Update a withdrawal approval rule",
    tags=["Withdrawal Approval Rules"],
    body=RULE_SCHEMA,
    security="staff:manage_broker_config",
)
async def update_rule(request: web.Request) -> web.Response:
    require_staff(request, "manage_broker_config")
    rule_id = path_uuid(request, "rule_id")
    data = await validation.body(request, RULE_SCHEMA)
    kernel = request.app[KERNEL]
    async with kernel.db.transaction() as session:
        rule = await approvals.update_rule(session, rule_id, _rule_input(data), kernel.clock.now())
    return respond(_rule_json(rule))


@operation(
    "Delete a withdrawal approval rule",
    tags=["Withdrawal Approval Rules"],
    responses={204: "No Content"},
    security="staff:manage_broker_config",
)
async def delete_rule(request: web.Request) -> web.Response:
    require_staff(request, "manage_broker_config")
    rule_id = path_uuid(request, "rule_id")
    kernel = request.app[KERNEL]
    async with kernel.db.transaction() as session:
        await approvals.deactivate_rule(session, rule_id, kernel.clock.now())
    return web.Response(status=204)


def setup(router: Router) -> None:
    platform = "/api/platform/payments"
    router.add(
        "GET", f"{platform}/gateways/available", available_gateways, "/payments/gateways/available"
    )
    router.add("GET", f"{platform}/routing", list_routing, "/payments/routing")
    router.add("PUT", f"{platform}/routing/{{country}}", put_routing, "/payments/routing/{country}")
    router.add(
        "DELETE", f"{platform}/routing/{{country}}", delete_routing, "/payments/routing/{country}"
    )
    router.add("GET", "/payments/gateway", resolve_gateway)
    router.add("POST", "/payments/session", cashier_session)
    router.add("POST", "/transactions/payment-callback", payment_callback)
    rules = "/api/platform/withdrawal-approval-rules"
    router.add("GET", rules, list_rules, "/withdrawal-approval-rules")
    router.add("POST", rules, create_rule, "/withdrawal-approval-rules")
    router.add("PUT", f"{rules}/{{rule_id}}", update_rule, "/withdrawal-approval-rules/{rule_id}")
    router.add(
        "DELETE", f"{rules}/{{rule_id}}", delete_rule, "/withdrawal-approval-rules/{rule_id}"
    )
