"""HTTP helpers for plugins whose routes sit on the challenges service (the ZT4-style
``propfirm_api`` and the FXPropTech-style ``fxproptech`` plugins): neither plugin
depends on the other's internals, both on the challenges plugin, its service contract
(:mod:`brokerkernel.plugins.challenges.service`) and this module.

* :func:`guarded` turns a :class:`~brokerkernel.plugins.challenges.service.PropError`
  raised by the service into the HTTP error (``{"detail": ...}`` with its status)
  and keeps the handler's OpenAPI metadata;
* :func:`query` / :func:`paged` / :func:`page_schema`: query parameters checked
  against a schema (every error at once) and the ``{"items", "total", "limit",
  "offset"}`` page body with its OpenAPI description;
* :func:`service`, :func:`path_id`, :func:`partner_actor` (the ``actor`` the service
  records for a partner; staff act as their user id, as in the money layer),
  :func:`change_account` (a lifecycle change of the partner's account ``{id}``) and
  :func:`trader_spec` (a validated :data:`TRADER` object as a
  :class:`~brokerkernel.plugins.challenges.service.TraderSpec`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from brokerkernel.api import validation
from brokerkernel.api.auth import Principal, require_partner
from brokerkernel.api.errors import ApiError
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.routes.admin import EMAIL, NAME
from brokerkernel.plugins.challenges.service import (
    ChallengeService,
    PropError,
    TraderSpec,
    challenge_service,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Query text parsed as an integer or a boolean (then checked against its schema).
INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

PAGE_LIMIT_MAX = 500
PAGE_LIMIT_DEFAULT = 50
#: ``limit`` / ``offset`` query parameters of every list.
PAGE_PROPERTIES: dict[str, Any] = {
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": PAGE_LIMIT_MAX,
        "default": PAGE_LIMIT_DEFAULT,
    },
    "offset": {"type": "integer", "minimum": 0, "default": 0},
}

#: The trader to provision for (:func:`trader_spec`).
TRADER: dict[str, Any] = {
    "type": "object",
    "description": "The trader: found by email (only the partner's own trader; another "
    "customer's email answers 409), or created when new (trader.created)",
    "required": ["email"],
    "properties": {
        "email": EMAIL,
        "first_name": NAME,
        "last_name": NAME,
        "country": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1"},
        "phone": {"type": "string", "pattern": r"^\+?[0-9]{6,20}$"},
    },
    "additionalProperties": False,
}

EXTERNAL_REF: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "description": "The partner's own reference (e.g. its order id): a repeat with the "
    "same reference returns the first account instead of provisioning another",
}

#: Why a payout is declined (recorded on it and sent with ``payout.rejected``).
REJECT_REASON: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 500,
    "description": "Why the payout is declined (shown to the trader's firm)",
}


def guarded(handler: Handler) -> Handler:
    """``handler`` with PropError answered as ``{"detail": detail}`` and its status."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PropError as exc:
            raise ApiError(exc.status, exc.detail) from exc

    return wrapper


def service(request: web.Request) -> ChallengeService:
    """The challenges service of the request's kernel (RuntimeError if not enabled)."""
    return challenge_service(request.app[KERNEL])


def path_id(request: web.Request) -> str:
    """The ``{id}`` path parameter."""
    return request.match_info["id"]


def query(request: web.Request, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The query parameters ``schema`` (an object schema) declares: integers and
    booleans parsed, checked together (422 listing every error, ``loc`` ``["query",
    name]``), defaults filled in. Absent or empty parameters are left out."""
    properties: Mapping[str, Any] = schema["properties"]
    values: dict[str, Any] = {}
    for name, spec in properties.items():
        text = request.query.get(name)
        if not text:
            continue
        kind = spec.get("type")
        if kind == "integer" and INTEGER.fullmatch(text):
            values[name] = int(text)
        elif kind == "boolean" and text.lower() in BOOLEANS:
            values[name] = BOOLEANS[text.lower()]
        else:
            values[name] = text
    validation.check(schema, values, "query")
    defaults = {name: spec["default"] for name, spec in properties.items() if "default" in spec}
    return {**defaults, **values}


def paged(items: list[dict[str, Any]], total: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """A page body: the items, the number of all matches, and the page asked for."""
    return {"items": items, "total": total, "limit": params["limit"], "offset": params["offset"]}


def page_schema(item: str) -> dict[str, Any]:
    """OpenAPI description of a page of ``item``."""
    return {
        "type": "object",
        "description": f"A page of {item}, newest first",
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            "total": {"type": "integer", "description": "Every match, all pages"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    }


def partner_actor(who: Principal) -> str:
    """``partner:<client_id>``: who acted, as the service records it."""
    return f"partner:{who.subject}"


class AccountChange(Protocol):
    """A :class:`ChallengeService` lifecycle method (``advance_phase``, ``reset``,
    ``archive``) answering the account's new state (the service's account view)."""

    def __call__(
        self, service: ChallengeService, account_id: str, /, *, tenant_id: str | None, actor: str
    ) -> Awaitable[dict[str, Any]]: ...


async def change_account(
    request: web.Request, change: AccountChange, body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``change`` applied by the partner (scope ``accounts:write``; the request body
    checked against the ``body`` schema when given, 422 listing every error) to its
    tenant's account ``{id}``: the account's new state. PropError 404 for an unknown
    or another tenant's account, the service's 409 when the change is not allowed."""
    who = require_partner(request, "accounts:write")
    if body is not None:
        await validation.body(request, body)
    return await change(
        service(request), path_id(request), tenant_id=who.tenant_id, actor=partner_actor(who)
    )


def trader_spec(data: Mapping[str, Any]) -> TraderSpec:
    """The :class:`TraderSpec` of a validated :data:`TRADER` object."""
    return TraderSpec(
        email=data["email"],
        first_name=data.get("first_name", ""),
        last_name=data.get("last_name", ""),
        country=data.get("country"),
        phone=data.get("phone"),
    )
