"""Gateway health (seed section 1): ``/health`` and ``/health/all``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import text

from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
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


async def gateway_status(kernel: Kernel) -> dict[str, Any]:
    redis = (
        "disabled"
        if kernel.settings.redis_url is None
        else ("ok" if await kernel.cache.ping() else "down")
    )
    database = "ok" if await _database_ok(kernel) else "down"
    healthy = database == "ok" and redis != "down"
    return {
        "status": "ok" if healthy else "degraded",
        "service": "api-gateway",
        "checks": {
            "redis": redis,
            "database": database,
            "idempotency": {"hits": 0, "misses": 0, "hit_rate": 0},
        },
        "permission_checks_skipped": 0,
        "timestamp": kernel.clock.now(),
    }


async def health(request: web.Request) -> web.Response:
    kernel = request.app[KERNEL]
    status = await gateway_status(kernel)
    return respond(status, status=200 if status["status"] == "ok" else 503)


async def health_all(request: web.Request) -> web.Response:
    """Aggregated component health; ``degraded`` when any component is down."""
    kernel = request.app[KERNEL]
    gateway = await gateway_status(kernel)
    stats = kernel.quotes.stats
    feeds_ok = bool(kernel.feeds)
    services = {
        "api-gateway": {
            "status": gateway["status"],
            "details": {"status": gateway["status"], "service": "api-gateway"},
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
