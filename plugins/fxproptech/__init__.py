"""The ``fxproptech`` plugin: the FXPropTech-style partner API under ``/v1``.

REST (``routes.py``): ``/v1/traders`` (list, detail, create with evaluation
provisioning and an onboarding message, PATCH), ``/v1/evaluations`` (progress,
provisioning after payment, pass, archive), ``/v1/accounts`` (open an account for an
existing trader), ``/v1/rules/{id}`` (a plan's rule set: read, replace),
``/v1/payouts`` (list, approve, reject); the WebSocket ``/v1/trades/stream``
(``stream.py``) with the partner's trade events.
Partner OAuth2 tokens, scopes per route:

=====================================  =================
route                                  scope
=====================================  =================
GET /v1/traders, GET /v1/traders/{id}  accounts:read
POST /v1/traders, PATCH .../{id}       accounts:write
GET /v1/evaluations/{id}               accounts:read
POST /v1/evaluations, .../{id}/pass,   accounts:write
DELETE /v1/evaluations/{id}
POST /v1/accounts                      accounts:write
GET /v1/rules/{id}                     plans:read
PUT /v1/rules/{id}                     plans:write
GET /v1/payouts                        payouts:read
POST /v1/payouts/approve, .../reject   payouts:write
WS /v1/trades/stream                   accounts:read
=====================================  =================

It needs the ``challenges`` plugin (the business logic) enabled::

    [plugins.challenges]
    [plugins.fxproptech]
    stream_heartbeat_s = 15
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from brokerkernel.kernel.descriptors import HttpRoutes
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.plugins.challenges.service import PLUGIN_NAME as CHALLENGES
from brokerkernel.plugins.fxproptech.onboarding import Onboarding
from brokerkernel.plugins.fxproptech.routes import ROUTES
from brokerkernel.plugins.fxproptech.stream import PATH, TRADE_HUB, TradeStreamHub, trade_stream

PLUGIN_NAME = "fxproptech"

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stream_heartbeat_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 15,
            "description": "Seconds between trade stream heartbeats (and token re-checks)",
        },
        "stream_max_buffer_bytes": {
            "type": "integer",
            "minimum": 1024,
            "default": 1048576,
            "description": "Unsent bytes after which a slow stream client is closed (1008)",
        },
    },
}


def setup(app: web.Application, kernel: Any) -> None:
    """Add the routes; subscribe the trade hub and the onboarding handler to the bus;
    run the hub while the app runs (started after the kernel, stopped before it).

    Raises RuntimeError (startup refused) when the ``challenges`` plugin is not enabled.
    """
    if CHALLENGES not in kernel.plugins.enabled:
        raise RuntimeError(
            "the fxproptech plugin needs the challenges plugin: add [plugins.challenges] "
            "to plugins.toml"
        )
    config = kernel.plugins.plugin_config(PLUGIN_NAME)
    hub = TradeStreamHub(
        kernel,
        heartbeat_s=config["stream_heartbeat_s"],
        max_buffer_bytes=config["stream_max_buffer_bytes"],
    )
    app[TRADE_HUB] = hub
    kernel.bus.subscribe(hub.on_event)
    kernel.bus.subscribe(Onboarding(kernel).on_event)

    async def start(_app: web.Application) -> None:
        await hub.start()

    async def stop(_app: web.Application) -> None:
        await hub.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get(PATH, trade_stream)


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    """``/v1/traders``, ``/v1/evaluations``, ``/v1/accounts``, ``/v1/rules``,
    ``/v1/payouts``, ``/v1/trades/stream``."""
    yield HttpRoutes(name=PLUGIN_NAME, setup=setup)
