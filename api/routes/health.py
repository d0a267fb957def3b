"""Gateway health (seed section 1): ``/health`` and ``/health/all``.

``/health`` answers 503 with ``"status": "degraded"`` when the database or Redis is
down or the RBAC cache is degraded; ``permission_checks_skipped`` counts the checks
this process answered from token claims instead of the RBAC cache (> 0: it has been
degraded). ``checks.idempotency`` holds this process's replay counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import text

from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.middlewares import IDEMPOTENCY_STATS
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.runtime import Kernel

if TYPE_CHECKING:
    from brokerkernel.api.app import Router


async def _database_ok(kernel: Kernel) -> bool:
    try:
        async with kernel.db.read() as session:
            await session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def gateway_status(app: web.Application) -> dict[str, Any]:
    kernel = app[KERNEL]
    rbac = kernel.identity.rbac
    redis = (
        "disabled"
        if kernel.settings.redis_url is None
        else ("ok" if await kernel.cache.ping() else "down")
    )
    database = "ok" if await _database_ok(kernel) else "down"
    healthy = database == "ok" and redis != "down" and not rbac.degraded
    return {
        "status": "ok" if healthy else "degraded",
        "service": "api-gateway",
        "checks": {
            "redis": redis,
            "database": database,
            "rbac_cache": "degraded" if rbac.degraded else "ok",
            "idempotency": app[IDEMPOTENCY_STATS].json(),
        },
        "permission_checks_skipped": rbac.permission_checks_skipped,
        "timestamp": kernel.clock.now(),
    }


@operation(
    "Gateway health check",
    tags=["Gateway"],
    responses={200: "Healthy", 503: "Degraded: the database, Redis or the RBAC cache"},
    security="public",
)
async def health(request: web.Request) -> web.Response:
    status = await gateway_status(request.app)
    return respond(status, status=200 if status["status"] == "ok" else 503)


@operation(
    "Aggregated health check for all services",
    tags=["Gateway"],
    security="public",
)
async def health_all(request: web.Request) -> web.Response:
    """Aggregated component health; ``degraded`` when any component is down."""
    kernel = request.app[KERNEL]
    gateway = await gateway_status(request.app)
    stats = kernel.quotes.stats
    feeds_ok = bool(kernel.feeds)
    services = {
        "api-gateway": {
            "status": gateway["status"],
            "details": {
                "status": gateway["status"],
                "service": "api-gateway",
                "permission_checks_skipped": gateway["permission_checks_skipped"],
            },
        },
        "price-feed": {
            "status": "ok" if feeds_ok else "down",
            "details": {
                "status": "ok" if feeds_ok else "down",
                "service": "price-feed",
                "feeds": sorted(kernel.feeds),
                "ticks": stats.ticks,
                "crossed_dropped": stats.crossed_dropped,
            },
        },
        "order-service": {"status": "ok", "details": {"status": "ok", "service": "order-service"}},
    }
    degraded = any(s["status"] != "ok" for s in services.values())
    return respond(
        {
            "status": "degraded" if degraded else "ok",
            "services": services,
            "timestamp": kernel.clock.now(),
        }
    )


def setup(router: Router) -> None:
    router.add("GET", "/health", health)
    router.add("GET", "/health/all", health_all)
