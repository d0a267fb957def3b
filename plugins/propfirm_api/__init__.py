"""The ``propfirm_api`` plugin: the ZT4-style prop-firm partner API.

Seed ``zt4-propfirm-partner-api.txt``. Two postures on one OAuth2 stack
(``POST /api/v1/oauth/token``, client credentials; clients issued with
``POST /api/admin/partner-clients``):

* **Orchestration** ``/api/v1/propfirm`` (:mod:`.orchestration`): the partner owns
  plans, accounts, rules and payouts;
* **Storefront** ``/api/v1/storefront`` (:mod:`.storefront`): the broker owns plans
  and rules; the partner sells and provisions against its catalog;

plus the broker's admin routes for its own plans and payout approval
(:mod:`.admin`). Business logic is the ``challenges`` plugin's service, which must
be enabled too::

    [plugins.challenges]
    [plugins.propfirm_api]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from brokerkernel.kernel.descriptors import HttpRoutes
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.plugins.propfirm_api import admin, orchestration, storefront

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {},
}

__all__ = ["CONFIG_SCHEMA", "broker_register_routes"]


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    """The Orchestration, Storefront and broker admin routes."""
    yield HttpRoutes(name="propfirm_orchestration", setup=orchestration.setup_routes)
    yield HttpRoutes(name="propfirm_storefront", setup=storefront.setup_routes)
    yield HttpRoutes(name="propfirm_admin", setup=admin.setup_routes)
