"""Cross-cutting request handling: request id, JSON errors, CORS, legacy paths."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import dumps
from brokerkernel.kernel.trading.service import TradingError

log = logging.getLogger("brokerkernel.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo the caller's ``X-Request-ID`` (max 128 chars) or assign one."""
    rid = request.headers.get(REQUEST_ID, "")[:128] or str(uuid.uuid4())
    request[REQUEST_ID_KEY] = rid
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID] = rid
        raise
    response.headers[REQUEST_ID] = rid
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON ``{"detail": ...}``; unexpected exceptions are 500 and logged."""
    try:
        return await handler(request)
    except ApiError:
        raise
    except TradingError as exc:
        raise ApiError(exc.status, exc.detail) from exc
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        raise ApiError(exc.status, exc.reason) from exc
    except Exception:
        log.exception(
            "unhandled error in %s %s [%s]",
            request.method,
            request.path,
            request.get(REQUEST_ID_KEY),
        )
        return web.Response(
            status=500,
            text=dumps({"detail": "Internal server error"}),
            content_type="application/json",
        )


def cors(origins: list[str]) -> Middleware:
    """Configured once at the gateway: allow ``origins`` ('*' for any)."""
    allow_any = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (allow_any or origin in origins)
        if (
            request.method == "OPTIONS"
            and allowed
            and "Access-Control-Request-Method" in request.headers
        ):
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = (
                "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            )
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
            )
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
            response.headers["Access-Control-Expose-Headers"] = (
                "X-Request-ID, Retry-After, Deprecation"
            )
            if not allow_any:
                response.headers["Vary"] = "Origin"
        return response

    return middleware
