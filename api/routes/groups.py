"""Trading groups, group instrument overrides, swap config and account group
reassignment (seed sections 16 and 6).

Public: ``GET /api/platform/groups`` (active groups) and ``GET /api/platform/groups/{id}``.
Staff with ``manage_groups``: create, PATCH, DELETE (soft; 409 while active accounts
are assigned), ``PUT /groups/{id}/instruments/{symbol}``, ``PUT /groups/{id}/swap-config``
and ``PATCH /api/platform/accounts/{login}/group``; with ``view_customers``:
``GET /groups/{id}/instruments`` and ``GET /groups/{id}/swap-rates``. Each also
answers at its legacy path. The rules live in :mod:`brokerkernel.kernel.trading.groups`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.routes.instruments import CURRENCY, SYMBOL_PATTERN, config_write
from brokerkernel.api.validation import decimal_schema
from brokerkernel.kernel.storage.models import Group, GroupInstrument
from brokerkernel.kernel.trading import groups
from brokerkernel.kernel.trading.instruments import SWAP_TYPES
from brokerkernel.kernel.trading.margin import HEDGED_MARGIN_MODES

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

GROUP_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": {"type": ["string", "null"], "maxLength": 2000},
    "currency": CURRENCY,
    "default_leverage": {"type": "integer", "minimum": 1, "maximum": 10_000},
    "margin_call_level": decimal_schema(
        minimum=0, description="Margin level (equity / margin x 100, percent) of the warning."
    ),
    "stopout_level": decimal_schema(
        minimum=0,
        description="Margin level (percent) below which positions are closed; must be "
        "less than margin_call_level.",
    ),
    "commission_type": {"enum": [*groups.COMMISSION_TYPES, None]},
    "commission_value": decimal_schema(minimum=0, nullable=True),
    "swap_free": {"type": "boolean"},
    "swap_enabled": {"type": "boolean"},
    "swap_multiplier": decimal_schema(minimum=0),
    "swap_free_days": {"type": "integer", "minimum": 0, "maximum": 3650},
    "is_islamic": {"type": "boolean", "description": "true forces swap_free."},
    "is_default": {"type": "boolean"},
    "max_exposure": decimal_schema(
        exclusive_minimum=0,
        nullable=True,
        description="Per-account exposure limit in USD (null: unlimited); gross, or net "
        "when net_max_exposure.",
    ),
    "net_max_exposure": {"type": "boolean"},
    "hedged_margin_mode": {
        "enum": list(HEDGED_MARGIN_MODES),
        "description": "Broker extension: margin of a hedging account's opposite positions "
        "per symbol. larger_side (default; cTrader): the larger of the buy and sell sides' "
        "margins; rate (MT5): the hedged volume min(buy lots, sell lots) of each side at "
        "hedged_margin_rate x its margin, the rest in full; none: every position in full. "
        "Changing it recomputes the margin used of the group's hedging accounts.",
    },
    "hedged_margin_rate": {
        **decimal_schema(
            minimum=0,
            description="Broker extension: fraction (0..1) of margin charged on hedged "
            "volume in rate mode; 1 no relief, 0.5 a fully hedged pair costs one leg.",
        ),
        "maximum": 1,
    },
}
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": GROUP_PROPERTIES,
    "additionalProperties": False,
}
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {**GROUP_PROPERTIES, "is_active": {"type": "boolean"}},
    "additionalProperties": False,
}
OVERRIDE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spread": decimal_schema(
            minimum=0,
            nullable=True,
            description="Markup in pips of the instrument's pip_size, converted to a "
            "price delta at fill time (half on each side).",
        ),
        "margin_rate": decimal_schema(exclusive_minimum=0, nullable=True),
        "tradeability": {"enum": [*groups.GROUP_TRADEABILITY, None]},
        "commission_type": {"enum": [*groups.COMMISSION_TYPES, None]},
        "commission_value": decimal_schema(minimum=0, nullable=True),
        "min_lot": decimal_schema(exclusive_minimum=0, nullable=True),
        "max_lot": decimal_schema(exclusive_minimum=0, nullable=True),
    },
    "additionalProperties": False,
}
SWAP_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["instruments"],
    "properties": {
        "instruments": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": SYMBOL_PATTERN},
            "additionalProperties": {
                "type": ["object", "null"],
                "required": ["swap_type", "swap_long", "swap_short"],
                "properties": {
                    "swap_type": {"enum": list(SWAP_TYPES)},
                    "swap_long": decimal_schema(),
                    "swap_short": decimal_schema(),
                },
                "additionalProperties": False,
            },
        }
    },
    "additionalProperties": False,
}
REASSIGN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["group_id"],
    "properties": {"group_id": {"type": "string", "minLength": 1, "maxLength": 36}},
    "additionalProperties": False,
}
GROUP_FIELDS = (
    "id",
    "name",
    "description",
    "currency",
    "default_leverage",
    "margin_call_level",
    "stopout_level",
    "commission_type",
    "commission_value",
    "swap_free",
    "swap_enabled",
    "swap_multiplier",
    "swap_free_days",
    "is_islamic",
    "is_default",
    "max_exposure",
    "net_max_exposure",
    "hedged_margin_mode",
    "hedged_margin_rate",
    "is_active",
    "created_at",
)
OVERRIDE_JSON_FIELDS = ("group_id", "symbol", *groups.OVERRIDE_FIELDS, *groups.SWAP_FIELDS)


def group_json(group: Group) -> dict[str, Any]:
    """Every seed field of the group plus ``id``, ``is_active``, ``created_at`` and the
    hedged-margin policy (``hedged_margin_mode``, ``hedged_margin_rate``)."""
    return {name: getattr(group, name) for name in GROUP_FIELDS}


def override_json(override: GroupInstrument) -> dict[str, Any]:
    """A group instrument override; null fields inherit from the catalog."""
    return {name: getattr(override, name) for name in OVERRIDE_JSON_FIELDS}


@operation(
    "List all trading groups",
    tags=["Groups (Trading Configuration)"],
    security="public",
)
async def list_groups(request: web.Request) -> web.Response:
    """Active trading groups by name (public)."""
    async with request.app[KERNEL].db.read() as session:
        rows = await session.scalars(
            select(Group).where(Group.is_active.is_(True)).order_by(Group.name)
        )
        return respond([group_json(g) for g in rows.all()])


@operation(
    "Get single group",
    tags=["Groups (Trading Configuration)"],
    security="public",
)
async def get_group(request: web.Request) -> web.Response:
    """One group by id (soft-deleted ones show ``is_active: false``); 404."""
    async with request.app[KERNEL].db.read() as session:
        group = await groups.get_group(session, request.match_info["id"])
    return respond(group_json(group))


@operation(
    "Create a trading group",
    tags=["Groups (Trading Configuration)"],
    body=CREATE_SCHEMA,
    responses={201: "Created"},
    security="staff:manage_groups",
)
async def create_group(request: web.Request) -> web.Response:
    """Create a group (201); 409 name taken; 422 field and rule errors."""
    require_staff(request, "manage_groups")
    data = await validation.body(request, CREATE_SCHEMA)
    kernel = request.app[KERNEL]
    async with config_write(kernel) as session:
        group = await groups.create_group(session, data, kernel.clock.now())
    return respond(group_json(group), status=201)


@operation(
    "Update group fields",
    tags=["Groups (Trading Configuration)"],
    body=UPDATE_SCHEMA,
    security="staff:manage_groups",
)
async def update_group(request: web.Request) -> web.Response:
    """Update group fields (all optional); 404; 409; 422."""
    require_staff(request, "manage_groups")
    data = await validation.body(request, UPDATE_SCHEMA)
    kernel = request.app[KERNEL]
    async with config_write(kernel) as session:
        group = await groups.update_group(
            session, request.match_info["id"], data, kernel.clock.now()
        )
    return respond(group_json(group))


@operation(
    "Soft-delete a group",
    tags=["Groups (Trading Configuration)"],
    responses={204: "No Content"},
    security="staff:manage_groups",
)
async def delete_group(request: web.Request) -> web.Response:
    """Soft delete (204); 409 while active accounts are assigned or for the default."""
    require_staff(request, "manage_groups")
    kernel = request.app[KERNEL]
    async with config_write(kernel) as session:
        await groups.delete_group(session, request.match_info["id"], kernel.clock.now())
    return web.Response(status=204)


@operation(
    "Create or update per-group instrument config",
    tags=["Groups (Trading Configuration)"],
    body=OVERRIDE_SCHEMA,
    responses={200: "Updated", 201: "Created"},
    security="staff:manage_groups",
)
async def put_group_instrument(request: web.Request) -> web.Response:
    """Create (201) or update (200) the group's override of a symbol; null inherits."""
    require_staff(request, "manage_groups")
    data = await validation.body(request, OVERRIDE_SCHEMA)
    kernel = request.app[KERNEL]
    async with config_write(kernel) as session:
        override, created = await groups.put_override(
            session,
            request.match_info["id"],
            request.match_info["symbol"],
            data,
            kernel.clock.now(),
        )
    return respond(override_json(override), status=201 if created else 200)


@operation(
    "List group instrument configs",
    tags=["Groups (Trading Configuration)"],
    security="staff:view_customers",
)
async def list_group_instruments(request: web.Request) -> web.Response:
    """The group's instrument overrides by symbol; 404 unknown group."""
    require_staff(request, "view_customers")
    async with request.app[KERNEL].db.read() as session:
        rows = await groups.list_overrides(session, request.match_info["id"])
    return respond([override_json(row) for row in rows])


@operation(
    "Bulk upsert swap rates",
    tags=["Groups (Trading Configuration)"],
    body=SWAP_CONFIG_SCHEMA,
    security="staff:manage_groups",
)
async def put_swap_config(request: web.Request) -> web.Response:
    """Bulk upsert of swap rates: ``{group_id, instruments_updated, instruments_created}``."""
    require_staff(request, "manage_groups")
    data = await validation.body(request, SWAP_CONFIG_SCHEMA)
    kernel = request.app[KERNEL]
    group_id = request.match_info["id"]
    async with config_write(kernel) as session:
        updated, created = await groups.put_swap_config(
            session, group_id, data["instruments"], kernel.clock.now()
        )
    return respond(
        {"group_id": group_id, "instruments_updated": updated, "instruments_created": created}
    )


@operation(
    "Get resolved swap rates",
    tags=["Groups (Trading Configuration)"],
    security="staff:view_customers",
)
async def swap_rates(request: web.Request) -> web.Response:
    """Resolved swap rates of every active instrument for the group, with the source
    and the effective rates after ``swap_multiplier``."""
    require_staff(request, "view_customers")
    async with request.app[KERNEL].db.read() as session:
        return respond(await groups.swap_rates(session, request.match_info["id"]))


@operation(
    "Reassign account to a different group",
    tags=["Accounts"],
    body=REASSIGN_SCHEMA,
    path={"login": {"type": "integer"}},
    security="staff:manage_groups",
)
async def reassign_account(request: web.Request) -> web.Response:
    """Move an account to another group; open positions keep their snapshotted terms,
    a hedging account's margin used becomes the new group's hedged-margin charge."""
    require_staff(request, "manage_groups")
    login = validation.path_int(request, "login")
    data = await validation.body(request, REASSIGN_SCHEMA)
    kernel = request.app[KERNEL]
    async with kernel.db.transaction() as session:
        result = await groups.reassign_account(session, login, data["group_id"], kernel.clock.now())
    return respond(result)


def setup(router: Router) -> None:
    base = "/api/platform/groups"
    router.add("GET", base, list_groups, legacy="/groups")
    router.add("POST", base, create_group, legacy="/groups")
    router.add("GET", base + "/{id}", get_group, legacy="/groups/{id}")
    router.add("PATCH", base + "/{id}", update_group, legacy="/groups/{id}")
    router.add("DELETE", base + "/{id}", delete_group, legacy="/groups/{id}")
    router.add(
        "PUT",
        base + "/{id}/instruments/{symbol}",
        put_group_instrument,
        legacy="/groups/{id}/instruments/{symbol}",
    )
    router.add(
        "GET",
        base + "/{id}/instruments",
        list_group_instruments,
        legacy="/groups/{id}/instruments",
    )
    router.add(
        "PUT",
        base + "/{id}/swap-config",
        put_swap_config,
        legacy="/broker/groups/{id}/swap-config",
    )
    router.add(
        "GET", base + "/{id}/swap-rates", swap_rates, legacy="/broker/groups/{id}/swap-rates"
    )
    router.add(
        "PATCH",
        "/api/platform/accounts/{login}/group",
        reassign_account,
        legacy="/accounts/{login}/group",
    )
