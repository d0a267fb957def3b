"""The ``webhooks`` plugin: signed partner webhooks from the transactional outbox.

Partner clients with scope ``events:subscribe`` manage subscriptions at
``/api/v1/propfirm/webhooks``, ``/api/v1/storefront/webhooks`` and ``/v1/webhooks``
(:mod:`.routes`). Domain events become delivery rows (:mod:`.dispatcher`), which a
worker sends signed per Standard Webhooks with retries (:mod:`.delivery`). Event names
and their mapping: :mod:`.catalog`. Enable it with ``[plugins.webhooks]``; every key
is optional (defaults below).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from brokerkernel.kernel.descriptors import HttpRoutes
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.plugins.webhooks.routes import setup_routes
from brokerkernel.plugins.webhooks.service import WebhookService, webhook_service

#: Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (issue 7).
RETRY_SCHEDULE_S = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "retry_schedule_s": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 604800},
            "minItems": 1,
            "maxItems": 100,
            "default": RETRY_SCHEDULE_S,
            "description": "Seconds to wait before each attempt, counted from the previous "
            "one (the first from the event); past the end the last delay repeats.",
        },
        "max_attempts": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "default": len(RETRY_SCHEDULE_S),
            "description": "Attempts before a delivery is failed.",
        },
        "timeout_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 120,
            "default": 15,
            "description": "Total time allowed for one HTTP attempt.",
        },
        "concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "default": 64,
            "description": "HTTP requests in flight at once per process; the worker's "
            "keep-alive pool holds as many connections.",
        },
        "batch_size": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "default": 500,
            "description": "Deliveries claimed per pass.",
        },
        "lease_s": {
            "type": "integer",
            "minimum": 10,
            "maximum": 86400,
            "default": 300,
            "description": "How long a claimed delivery stays with its process; must "
            "exceed a pass (timeout_s x batch_size / concurrency).",
        },
        "poll_interval_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 60,
            "default": 1,
            "description": "Idle wait between passes when nothing woke the worker.",
        },
        "max_retry_after_s": {
            "type": "integer",
            "minimum": 0,
            "maximum": 604800,
            "default": 86400,
            "description": "Cap on a 429 answer's Retry-After.",
        },
        "allow_private_networks": {
            "type": "boolean",
            "default": False,
            "description": "Let subscriptions and deliveries reach loopback, private, "
            "link-local and other non-public addresses (SSRF guard off: tests and local "
            "benches only; see the endpoints module).",
        },
        "rotation_grace_s": {
            "type": "integer",
            "minimum": 0,
            "maximum": 604800,
            "default": 86400,
            "description": "How long the previous secret keeps signing after a rotation.",
        },
    },
}

__all__ = [
    "CONFIG_SCHEMA",
    "WebhookService",
    "broker_on_shutdown",
    "broker_on_startup",
    "broker_register_routes",
    "webhook_service",
]


@hookimpl
def broker_register_routes() -> Iterator[HttpRoutes]:
    """The subscription endpoints under the three prefixes (:mod:`.routes`)."""
    yield HttpRoutes(name="webhooks", setup=setup_routes)


@hookimpl
async def broker_on_startup(kernel: Any) -> None:
    """Start the delivery worker; its first pass sends whatever was due at shutdown."""
    await webhook_service(kernel).worker.start()


@hookimpl
async def broker_on_shutdown(kernel: Any) -> None:
    """Finish the pass under way and stop the worker."""
    await webhook_service(kernel).worker.stop()
