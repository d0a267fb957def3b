"""The webhooks plugin's running service: subscriptions, dispatcher and worker of one
kernel, published as ``kernel.extensions["webhooks"]``."""

from __future__ import annotations

from typing import Any

from brokerkernel.kernel.security import WallClock
from brokerkernel.plugins.webhooks.delivery import DeliverySettings, DeliveryWorker
from brokerkernel.plugins.webhooks.dispatcher import Dispatcher
from brokerkernel.plugins.webhooks.endpoints import EndpointGuard
from brokerkernel.plugins.webhooks.signing import BOX_PURPOSE, Signer
from brokerkernel.plugins.webhooks.subscriptions import Subscriptions

PLUGIN_NAME = "webhooks"


class WebhookService:
    """``subscriptions`` (the API's operations), ``dispatcher`` (a bus subscriber),
    ``worker`` (sends due deliveries) and ``guard`` (the SSRF rules both apply).
    ``wall`` is the wall clock of retry times, leases and log timestamps; tests move it
    with ``wall.offset_s``."""

    def __init__(self, kernel: Any) -> None:
        config = kernel.plugins.plugin_config(PLUGIN_NAME)
        self.wall = WallClock()
        self.settings = DeliverySettings.from_config(config)
        signer = Signer(kernel.tokens.box(BOX_PURPOSE))
        self.guard = EndpointGuard(config["allow_private_networks"])
        self.subscriptions = Subscriptions(
            kernel.db, signer, self.guard, self.wall, config["rotation_grace_s"]
        )
        self.worker = DeliveryWorker(kernel.db, signer, self.guard, self.settings, self.wall)
        self.dispatcher = Dispatcher(
            kernel.db, self.wall, self.settings.delay_before(1), self.worker.wake
        )

    async def drain(self) -> int:
        """Send every delivery due now (see :meth:`DeliveryWorker.drain`)."""
        return await self.worker.drain()


def webhook_service(kernel: Any) -> WebhookService:
    """The kernel's webhook service, created (and subscribed to the event bus) on
    first use: when the API's routes are set up, before the bus starts, so no event
    is relayed before the dispatcher listens; or at startup for a kernel without API."""
    service = kernel.extensions.get(PLUGIN_NAME)
    if not isinstance(service, WebhookService):
        service = kernel.extensions[PLUGIN_NAME] = WebhookService(kernel)
        kernel.bus.subscribe_batch(service.dispatcher.on_events)
    return service
