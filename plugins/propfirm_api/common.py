"""What the Orchestration, Storefront and broker-admin routes share.

* :func:`guarded` turns a :class:`~brokerkernel.plugins.challenges.service.PropError`
  raised by the challenges service into the HTTP error (``{"detail": ...}`` with its
  status) and keeps the handler's OpenAPI metadata;
* :func:`query` / :func:`paged`: query parameters checked against a schema (every
  error at once) and the ``{"items", "total", "limit", "offset"}`` page body;
* :func:`sso_token`: the embedded-terminal SSO token, a one-time customer autologin
  token (:mod:`brokerkernel.kernel.identity.autologin`) redeemable once at
  ``GET /api/customer/autologin?token=...``, refused for a trader who also holds
  accounts outside the caller's tenant;
* :func:`provision_account`, :func:`request_payout`, :func:`account_sso`: the
  handlers' bodies both partner postures share (they differ by scope and options);
  a posture provisions only on its own kind of plan (Orchestration: the tenant's;
  Storefront: the broker's, :func:`catalog_plan`);
* :func:`partner_actor`: the ``actor`` the service records for a partner (staff act
  as their user id, as in the money layer).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import func, or_, select
from yarl import URL

from brokerkernel.api import validation
from brokerkernel.api.auth import Principal, require_partner
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.storage.models import TradingAccount
from brokerkernel.plugins.challenges.models import PropAccount
from brokerkernel.plugins.challenges.service import (
    PLUGIN_NAME,
    ChallengeService,
    PropError,
    TraderSpec,
    challenge_service,
)
from brokerkernel.plugins.propfirm_api import schemas

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The customer autologin endpoint that redeems an SSO token (seed section 2).
AUTOLOGIN_PATH = "/api/customer/autologin"
#: Query text parsed as an integer or a boolean (then checked against its schema).
INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
SSO_REFUSED = "The trader also holds accounts outside your tenant: sign-in goes through the broker"


def add_routes(
    app: web.Application,
    kernel: Any,
    routes: Iterable[tuple[str, str, Handler]],
    base: str = "",
) -> None:
    """Add ``(method, path, handler)`` routes under ``base``, each :func:`guarded`.

    Raises RuntimeError (startup refused) when the ``challenges`` plugin, whose
    service answers every route, is not enabled."""
    if PLUGIN_NAME not in kernel.plugins.enabled:
        raise RuntimeError(
            "the propfirm_api plugin needs the challenges plugin: add [plugins.challenges] "
            "to plugins.toml"
        )
    for method, path, handler in routes:
        app.router.add_route(method, base + path, guarded(handler))


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


async def sso_token(request: web.Request, customer_id: str) -> dict[str, Any]:
    """A short-lived single-use SSO token for ``customer_id``'s embedded terminal.

    It is the customer autologin token (15 minutes, ``[kernel.auth]
    autologin_organic_minutes``; burned on first use): ``{"token", "url",
    "expires_in" (seconds), "expires_at" (UTC)}``; ``url`` is the autologin endpoint
    of this API, answering the customer login response once and 401 afterwards.
    """
    identity = request.app[KERNEL].identity
    token, expires_at = await identity.autologin.issue(customer_id, affiliate=False)
    url = request.url.origin().join(URL(AUTOLOGIN_PATH)).with_query(token=token)
    return {
        "token": token,
        "url": str(url),
        "expires_in": max(0, round(expires_at.timestamp() - identity.wall.time())),
        "expires_at": expires_at,
    }


def partner_actor(who: Principal) -> str:
    """``partner:<client_id>``: who acted, as the service records it."""
    return f"partner:{who.subject}"


def trader_spec(data: dict[str, Any]) -> TraderSpec:
    """The :class:`TraderSpec` of a validated ``trader`` object (schemas.TRADER)."""
    return TraderSpec(
        email=data["email"],
        first_name=data.get("first_name", ""),
        last_name=data.get("last_name", ""),
        country=data.get("country"),
        phone=data.get("phone"),
    )


async def provision_account(
    request: web.Request, scope: str, *, source: str, catalog: bool
) -> web.Response:
    """``POST .../accounts`` (body schemas.PROVISION): 201 with the account.

    ``catalog`` True (Storefront) provisions only on the broker plans in the tenant's
    catalog; False (Orchestration) only on the tenant's own plans (404 otherwise)."""
    who = require_partner(request, scope)
    data = await validation.body(request, schemas.PROVISION)
    if catalog:
        await catalog_plan(request, data["planId"], who.tenant_id)
    else:
        await service(request).get_plan(data["planId"], tenant_id=who.tenant_id)
    account = await service(request).provision(
        data["planId"],
        trader_spec(data["trader"]),
        tenant_id=who.tenant_id,
        source=source,
        external_ref=data.get("external_ref"),
        catalog=catalog,
    )
    return respond(account, 201)


def broker_owned(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The broker's plans among ``plans`` (the Storefront catalog shows no partner
    plan, not even the caller's own)."""
    return [plan for plan in plans if plan["tenant_id"] is None]


async def catalog_plan(request: web.Request, plan_id: str, tenant_id: str | None) -> dict[str, Any]:
    """A broker plan in ``tenant_id``'s catalog; 404 ``Plan not found`` otherwise."""
    plan = await service(request).get_plan(plan_id, tenant_id=tenant_id, catalog=True)
    if not broker_owned([plan]):
        raise PropError(404, "Plan not found")
    return plan


async def request_payout(request: web.Request, scope: str, *, execute: bool) -> web.Response:
    """A payout of account ``{id}`` (body schemas.PAYOUT): processed at once with
    ``execute`` (201), else left pending the broker's approval (202)."""
    who = require_partner(request, scope)
    data = await validation.body(request, schemas.PAYOUT)
    amount = data.get("amount")
    payout = await service(request).request_payout(
        path_id(request),
        tenant_id=who.tenant_id,
        amount=None if amount is None else Decimal(amount),
        destination=data.get("destination"),
        execute=execute,
        actor=partner_actor(who),
    )
    return respond(payout, 201 if execute else 202)


async def holds_foreign_accounts(
    request: web.Request, customer_id: str, tenant_id: str | None
) -> bool:
    """Whether ``customer_id`` holds a trading account that is not a prop account of
    ``tenant_id`` (a retail account, or another tenant's prop account)."""
    query = (
        select(func.count())
        .select_from(TradingAccount)
        .outerjoin(PropAccount, PropAccount.login == TradingAccount.login)
        .where(
            TradingAccount.customer_id == customer_id,
            or_(PropAccount.id.is_(None), PropAccount.tenant_id.is_distinct_from(tenant_id)),
        )
    )
    async with request.app[KERNEL].db.read() as session:
        return bool(await session.scalar(query))


async def account_sso(request: web.Request, scope: str) -> web.Response:
    """An SSO token (:func:`sso_token`) for the trader of the tenant's account ``{id}``
    (404 for another tenant's).

    The token opens a session on every account of the trader, so it is refused (409
    :data:`SSO_REFUSED`) when the trader also holds accounts outside the caller's
    tenant (traders are found by email when provisioned): a partner never signs in to
    a broker client's or another firm's accounts.
    """
    who = require_partner(request, scope)
    await validation.body(request, schemas.EMPTY_BODY)
    account = await service(request).get_account(path_id(request), tenant_id=who.tenant_id)
    customer_id = str(account["customer_id"])
    if await holds_foreign_accounts(request, customer_id, who.tenant_id):
        raise ApiError(409, SSO_REFUSED)
    return respond(await sso_token(request, customer_id))
