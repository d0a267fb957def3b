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
from brokerkernel.api.openapi import deprecate
from brokerkernel.api.routes import (
    admin,
    backoffice,
    calendar,
    crm,
    customer,
    customer_auth,
    docs,
    groups,
    health,
    instruments,
    kyc,
    oauth,
    payments,
    prices,
    sessions,
    streams,
    trading,
)
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


DEPRECATED_SUCCESSOR = web.RequestKey("deprecated_successor", str)


def _deprecated(handler: Handler, successor: str) -> Handler:
    async def legacy(request: web.Request) -> web.StreamResponse:
        log.warning("deprecated path %s %s; use %s", request.method, request.path, successor)
        request[DEPRECATED_SUCCESSOR] = successor
        return await handler(request)

    return deprecate(legacy, handler, successor)


async def _mark_deprecated(request: web.Request, response: web.StreamResponse) -> None:
    """Legacy paths answer with ``Deprecation`` and a ``Link`` to the seed path — on
    errors too, whichever middleware turned the exception into the response."""
    successor = request.get(DEPRECATED_SUCCESSOR)
    if successor is not None:
        response.headers["Deprecation"] = "true"
        response.headers["Link"] = f'<{successor}>; rel="successor-version"'


def create_app(kernel: Kernel) -> web.Application:
    """The API for ``kernel``; the kernel starts with the app and stops with it."""
    origins = list(kernel.kernel_config["cors_origins"])
    cors = [middlewares.cors(origins)] if origins else []  # no origin allowed: no layer
    app = web.Application(
        middlewares=[middlewares.request_id, *cors, middlewares.json_errors, middlewares.guard],
        client_max_size=1024 * 1024,
    )
    app[KERNEL] = kernel
    app.on_response_prepare.append(_mark_deprecated)
    if origins:
        app.on_response_prepare.append(middlewares.cors_headers)
    app[middlewares.IDEMPOTENCY_STATS] = middlewares.IdempotencyStats()
    app[middlewares.IDEMPOTENCY_BOX] = kernel.tokens.box("idempotency")
    middlewares.install_log_context()
    router = Router(app)
    for module in (
        health,
        sessions,
        admin,
        customer_auth,
        oauth,
        customer,
        trading,
        instruments,
        groups,
        prices,
        streams,
        crm,
        backoffice,
        payments,
        kyc,
        calendar,
        docs,
    ):
        module.setup(router)
    for item in kernel.plugins.registries.routes:
        item.descriptor.setup(app, kernel)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await kernel.start()
        yield
        await kernel.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
