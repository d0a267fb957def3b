"""What the Orchestration, Storefront and broker-admin routes share, beyond the
partner-route helpers of :mod:`brokerkernel.plugins.challenges.http` (``guarded``, ``query``,
``paged``, ``service``, ``partner_actor``, ``trader_spec``) that the FXPropTech API
uses too.

* :func:`add_routes`: the routes, each :func:`~brokerkernel.plugins.challenges.http.guarded`;
* :func:`sso_token`: the embedded-terminal SSO token, a one-time customer autologin
  token (:mod:`brokerkernel.kernel.identity.autologin`) redeemable once at
  ``GET /api/customer/autologin?token=...``, refused for a trader who also holds
  accounts outside the caller's tenant;
* :func:`provision_account`, :func:`request_payout`, :func:`account_sso`,
  :func:`account_state`, :func:`account_metrics`: the handlers' bodies both partner
  postures share (they differ by scope and options);
  a posture provisions only on its own kind of plan (Orchestration: the tenant's;
  Storefront: the broker's, :func:`catalog_plan`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from aiohttp import web
from yarl import URL

from brokerkernel.api import validation
from brokerkernel.api.auth import require_partner
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.plugins.challenges.http import (
    Handler,
    guarded,
    partner_actor,
    path_id,
    service,
    trader_spec,
)
from brokerkernel.plugins.challenges.service import PLUGIN_NAME, PropError
from brokerkernel.plugins.propfirm_api import schemas

#: The customer autologin endpoint that redeems an SSO token (seed section 2).
AUTOLOGIN_PATH = "/api/customer/autologin"
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


async def provision_account(
    request: web.Request, scope: str, *, source: str, catalog: bool
) -> web.Response:
    """``POST .../accounts`` (body schemas.PROVISION): 201 with the account.

    ``catalog`` True (Storefront) provisions only on the broker plans in the tenant's
    catalog; False (Orchestration) only on the tenant's own plans (404 otherwise)."""
    who = require_partner(request, scope)
    data = await validation.body(request, schemas.PROVISION)
    if catalog:  # the service's catalog also holds the tenant's own plans
        await catalog_plan(request, data["planId"], who.tenant_id)
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


async def account_state(request: web.Request, scope: str) -> web.Response:
    """The state of the tenant's account ``{id}``
    (:meth:`~brokerkernel.plugins.challenges.service.ChallengeService.get_account`);
    404 unknown or another tenant's."""
    who = require_partner(request, scope)
    return respond(await service(request).get_account(path_id(request), tenant_id=who.tenant_id))


async def account_metrics(request: web.Request, scope: str) -> web.Response:
    """The metrics snapshot of the tenant's account ``{id}``
    (:meth:`~brokerkernel.plugins.challenges.service.ChallengeService.metrics`);
    404 unknown or another tenant's."""
    who = require_partner(request, scope)
    return respond(await service(request).metrics(path_id(request), tenant_id=who.tenant_id))


async def account_sso(request: web.Request, scope: str) -> web.Response:
    """An SSO token (:func:`sso_token`) for the trader of the tenant's account ``{id}``
    (404 for another tenant's).

    The token opens a session on every account of the trader, so it is refused (409
    :data:`SSO_REFUSED`) when the trader also holds accounts outside the caller's
    tenant: a partner never signs in to a broker client's or another firm's accounts.
    Defence in depth: provisioning reuses only the tenant's own traders, but the broker
    may open other accounts for that customer later."""
    who = require_partner(request, scope)
    await validation.body(request, schemas.EMPTY_BODY)
    account = await service(request).get_account(path_id(request), tenant_id=who.tenant_id)
    customer_id = str(account["customer_id"])
    if await service(request).holds_foreign_accounts(customer_id, who.tenant_id):
        raise ApiError(409, SSO_REFUSED)
    return respond(await sso_token(request, customer_id))
