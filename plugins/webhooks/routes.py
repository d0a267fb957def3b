"""Subscription endpoints for partner clients holding scope ``events:subscribe``.

The same handlers answer under ``/api/v1/propfirm/webhooks``,
``/api/v1/storefront/webhooks`` (ZT4 postures; Standard Webhooks envelope) and
``/v1/webhooks`` (FXPropTech; its ``{"event","id","ts","data"}`` payload):

=======  ===================================  ==========================================
POST     ``/webhooks``                        201: the subscription and its ``secret``
GET      ``/webhooks``                        the tenant's subscriptions
GET      ``/webhooks/{id}``                   one subscription
PATCH    ``/webhooks/{id}``                   change url, events, description, enabled
DELETE   ``/webhooks/{id}``                   204
POST     ``/webhooks/{id}/rotate-secret``     the new ``secret``; the old one signs too
                                              for ``rotation_grace_s``
GET      ``/webhooks/{id}/deliveries``        most recent first; ``status``, ``limit``
GET      ``/webhooks/{id}/deliveries/stats``  counts, success rate, latency, last times
=======  ===================================  ==========================================

Errors: 401 without a token; 403 ``prop_firm_not_enabled`` / ``insufficient_scope``
(ZT4 entitlement gate, ``api/auth.py``); 404 ``Webhook subscription not found``
(another tenant's too); 422 listing every field error (an unknown event name is one;
a URL the SSRF guard refuses, :mod:`.endpoints`, is a ``url`` error of its own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import Principal, require_partner
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.plugins.webhooks.catalog import EVENT_NAMES, FXPROPTECH, STANDARD
from brokerkernel.plugins.webhooks.service import webhook_service
from brokerkernel.plugins.webhooks.subscriptions import (
    NOT_FOUND,
    STATUSES,
    Subscriptions,
    WebhookError,
)

SCOPE = "events:subscribe"
SECURITY = f"partner:{SCOPE}"
TAGS = ["webhooks"]
PREFIXES = ("/api/v1/propfirm/webhooks", "/api/v1/storefront/webhooks", "/v1/webhooks")

URL: dict[str, Any] = {
    "type": "string",
    "pattern": r"^https?://[^\s/?#]+[^\s]*$",
    "maxLength": 2048,
    "description": "The endpoint receiving HTTP POSTs (http or https).",
}
EVENTS: dict[str, Any] = {
    "type": "array",
    "items": {"enum": list(EVENT_NAMES)},
    "minItems": 1,
    "uniqueItems": True,
    "description": "Event names of either seed (ZT4 or FXPropTech).",
}
DESCRIPTION: dict[str, Any] = {"type": ["string", "null"], "maxLength": 512}
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url", "events"],
    "properties": {"url": URL, "events": EVENTS, "description": DESCRIPTION},
    "additionalProperties": False,
}
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {
        "url": URL,
        "events": EVENTS,
        "description": DESCRIPTION,
        "enabled": {"type": "boolean"},
    },
    "additionalProperties": False,
}
DELIVERIES_QUERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": list(STATUSES)},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
    },
    "additionalProperties": False,
}
_TIME = {"type": "string", "format": "date-time"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
_MAYBE_INT = {"type": ["integer", "null"]}
_MAYBE_TEXT = {"type": ["string", "null"]}
SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "url": URL,
        "events": EVENTS,
        "description": DESCRIPTION,
        "format": {"enum": [STANDARD, FXPROPTECH]},
        "enabled": {"type": "boolean"},
        "disabled_reason": _MAYBE_TEXT,
        "previous_secret_expires_at": _MAYBE_TIME,
        "created_at": _TIME,
        "updated_at": _TIME,
    },
}
DELIVERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "msg_..., the webhook-id header"},
        "event_id": {"type": "string"},
        "event": {"enum": list(EVENT_NAMES)},
        "status": {"enum": list(STATUSES)},
        "attempts": {"type": "integer"},
        "next_attempt_at": _MAYBE_TIME,
        "last_status_code": _MAYBE_INT,
        "last_error": _MAYBE_TEXT,
        "created_at": _TIME,
        "completed_at": _MAYBE_TIME,
        "attempt_log": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "attempt": {"type": "integer"},
                    "attempted_at": _TIME,
                    "status_code": _MAYBE_INT,
                    "latency_ms": {"type": "integer"},
                    "error": _MAYBE_TEXT,
                    "response_excerpt": _MAYBE_TEXT,
                },
            },
        },
    },
}
STATS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subscription_id": {"type": "string"},
        "total": {"type": "integer"},
        "counts": {"type": "object", "properties": {s: {"type": "integer"} for s in STATUSES}},
        "success_rate": {
            "type": ["number", "null"],
            "description": "succeeded / (succeeded + failed), 4 decimals",
        },
        "latency_ms": {
            "type": "object",
            "description": "nearest-rank percentiles of the latest 1,000 answered attempts",
            "properties": {"p50": _MAYBE_INT, "p95": _MAYBE_INT},
        },
        "last_success_at": _MAYBE_TIME,
        "last_failure_at": _MAYBE_TIME,
    },
}
WITH_SECRET: dict[str, Any] = {
    **SUBSCRIPTION,
    "properties": {
        **SUBSCRIPTION["properties"],
        "secret": {"type": "string", "description": "whsec_..., shown this once"},
    },
}


T = TypeVar("T")


def _partner(request: web.Request) -> tuple[Principal, str, Subscriptions]:
    who = require_partner(request, SCOPE)
    assert who.tenant_id is not None  # partner tokens always carry their tenant
    return who, who.tenant_id, webhook_service(request.app[KERNEL]).subscriptions


async def _answer(call: Awaitable[T]) -> T:
    try:
        return await call
    except WebhookError as exc:
        raise ApiError(exc.status, exc.detail) from exc


async def _on_path_id(
    request: web.Request, action: Callable[[Subscriptions, str, str], Awaitable[T]]
) -> T:
    """``action(subscriptions, tenant_id, subscription_id)`` for the partner's tenant
    and the path's ``{id}``; a :class:`WebhookError` answers its status and detail."""
    _who, tenant_id, subscriptions = _partner(request)
    return await _answer(action(subscriptions, tenant_id, request.match_info["id"]))


@operation(
    "Subscribe an endpoint to events",
    tags=TAGS,
    body=CREATE_SCHEMA,
    responses={
        201: WITH_SECRET,
        422: "Field errors (e.g. an unknown event name, a URL with credentials or whose "
        "host is not public)",
    },
    security=SECURITY,
)
async def create(request: web.Request) -> web.Response:
    """201 with the subscription and its ``secret`` (shown once). Subscriptions made
    at ``/v1/webhooks`` receive FXPropTech-shaped payloads."""
    who, tenant_id, subscriptions = _partner(request)
    data = await validation.body(request, CREATE_SCHEMA)
    style = FXPROPTECH if request.path.startswith("/v1/") else STANDARD
    view, secret = await _answer(subscriptions.create(tenant_id, who.subject, data, style))
    return respond({**view, "secret": secret}, status=201)


@operation(
    "List the tenant's webhook subscriptions",
    tags=TAGS,
    responses={200: {"type": "array", "items": SUBSCRIPTION}},
    security=SECURITY,
)
async def list_all(request: web.Request) -> web.Response:
    _who, tenant_id, subscriptions = _partner(request)
    return respond(await subscriptions.list_all(tenant_id))


@operation(
    "Get a webhook subscription",
    tags=TAGS,
    responses={200: SUBSCRIPTION, 404: NOT_FOUND},
    security=SECURITY,
)
async def get(request: web.Request) -> web.Response:
    return respond(await _on_path_id(request, Subscriptions.get))


@operation(
    "Change a webhook subscription",
    tags=TAGS,
    body=UPDATE_SCHEMA,
    responses={
        200: SUBSCRIPTION,
        404: NOT_FOUND,
        422: "Field errors (e.g. a URL with credentials or whose host is not public)",
    },
    security=SECURITY,
)
async def patch(request: web.Request) -> web.Response:
    """Enabling a subscription disabled by a 410 resumes its pending deliveries."""
    _who, tenant_id, subscriptions = _partner(request)
    data = await validation.body(request, UPDATE_SCHEMA)
    return respond(await _answer(subscriptions.update(tenant_id, request.match_info["id"], data)))


@operation(
    "Delete a webhook subscription",
    tags=TAGS,
    responses={204: "Deleted; pending deliveries cancelled", 404: NOT_FOUND},
    security=SECURITY,
)
async def delete(request: web.Request) -> web.Response:
    await _on_path_id(request, Subscriptions.delete)
    return web.Response(status=204)


@operation(
    "Rotate a subscription's signing secret",
    tags=TAGS,
    responses={200: WITH_SECRET, 404: NOT_FOUND},
    security=SECURITY,
)
async def rotate_secret(request: web.Request) -> web.Response:
    """The new ``secret``; messages carry signatures of both secrets until
    ``previous_secret_expires_at``."""
    view, secret = await _on_path_id(request, Subscriptions.rotate_secret)
    return respond({**view, "secret": secret})


@operation(
    "List a subscription's deliveries",
    tags=TAGS,
    query=DELIVERIES_QUERY,
    responses={200: {"type": "array", "items": DELIVERY}, 404: NOT_FOUND},
    security=SECURITY,
)
async def deliveries(request: web.Request) -> web.Response:
    """Newest first; 422 lists every bad query parameter (``status``, ``limit``)."""
    _who, tenant_id, subscriptions = _partner(request)
    query: dict[str, Any] = {
        name: request.query[name] for name in ("status", "limit") if request.query.get(name)
    }
    if "limit" in query and query["limit"].lstrip("-").isdigit():
        query["limit"] = int(query["limit"])
    validation.check(DELIVERIES_QUERY, query, "query")
    status, limit = query.get("status"), query.get("limit", 50)
    return respond(
        await _answer(subscriptions.deliveries(tenant_id, request.match_info["id"], status, limit))
    )


@operation(
    "Delivery statistics of a subscription",
    tags=TAGS,
    responses={200: STATS, 404: NOT_FOUND},
    security=SECURITY,
)
async def stats(request: web.Request) -> web.Response:
    return respond(await _on_path_id(request, Subscriptions.stats))


ROUTES: tuple[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]], ...] = (
    ("POST", "", create),
    ("GET", "", list_all),
    ("GET", "/{id}", get),
    ("PATCH", "/{id}", patch),
    ("DELETE", "/{id}", delete),
    ("POST", "/{id}/rotate-secret", rotate_secret),
    ("GET", "/{id}/deliveries", deliveries),
    ("GET", "/{id}/deliveries/stats", stats),
)


def setup_routes(app: web.Application, kernel: Any) -> None:
    """Add the routes under every prefix and create the kernel's webhook service now,
    so its dispatcher subscribes to the bus before the kernel starts it."""
    webhook_service(kernel)
    for prefix in PREFIXES:
        for method, path, handler in ROUTES:
            app.router.add_route(method, prefix + path, handler)
