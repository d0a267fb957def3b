"""The aiohttp application factory.

``create_app(kernel)`` wires the middlewares, the seed's route modules (each path
also answering at its legacy flat path, marked deprecated) and the routes plugins
contribute through ``broker_register_routes``, and ties the kernel's lifecycle to
the app's ``cleanup_ctx``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from brokerkernel.api import middlewares
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.routes import backoffice, crm, customer, health, prices, sessions
from brokerkernel.kernel.runtime import Kernel

log = logging.getLogger("brokerkernel.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Router:
    """Adds a route at its seed path and, optionally, at its legacy flat path."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def add(self, method: str, path: str, handler: Handler, legacy: str | None = None) -> None:
        self.app.router.add_route(method, path, handler)
        if legacy is not None:
            self.app.router.add_route(method, legacy, _deprecated(handler, path))


def _deprecated(handler: Handler, successor: str) -> Handler:
    async def legacy(request: web.Request) -> web.StreamResponse:
        log.warning("deprecated path %s %s; use %s", request.method, request.path, successor)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["Deprecation"] = "true"
            exc.headers["Link"] = f'<{successor}>; rel="successor-version"'
            raise
        response.headers["Deprecation"] = "true"
        response.headers["Link"] = f'<{successor}>; rel="successor-version"'
        return response

    return legacy


def create_app(kernel: Kernel) -> web.Application:
    """The API for ``kernel``; the kernel starts with the app and stops with it."""
    app = web.Application(
        middlewares=[
            middlewares.request_id,
            middlewares.cors(list(kernel.kernel_config["cors_origins"])),
            middlewares.json_errors,
        ],
        client_max_size=1024 * 1024,
    )
    app[KERNEL] = kernel
    router = Router(app)
    for module in (health, sessions, customer, prices, crm, backoffice):
        module.setup(router)
    for item in kernel.plugins.registries.routes:
        item.descriptor.setup(app, kernel)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await kernel.start()
        yield
        await kernel.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
