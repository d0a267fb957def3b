"""The gateway (seed section 1): request ids and structured logs, CORS, JSON errors,
authentication, idempotency and rate limits.

Order, outermost first (``create_app``)::

    request_id -> cors -> json_errors -> guard: authentication -> idempotency
               -> rate_limits -> json_errors (with an Idempotency-Key) -> handler

so an idempotent replay is answered before the rate limiter (replays do not consume
quota) and every error, wherever raised, is JSON. ``guard`` is one middleware running
the three gateway steps in turn (each layer costs a call and a coroutine per
request); ``cors`` is installed only when ``cors_origins`` is set.

* ``X-Request-ID``: the caller's (printable ASCII, at most 128 characters) or a new
  UUID (version 7, ``new_id``); echoed on every response and carried by every log record
  of the request (``record.request_id``); one access-log line per request on
  ``brokerkernel.access``.
* ``Idempotency-Key`` on POST/PUT/PATCH/DELETE: at most 128 characters (else 422);
  scoped to the caller (the user, or the client IP when anonymous); the first request
  claims the key atomically (``SET NX``) and a concurrent second one gets 409; the
  finished response is saved for ``idempotency_ttl_s`` (24 h), sealed with AES-GCM
  (it may hold tokens), and replayed with ``X-Idempotent-Replay: true``; the same
  key with another method, path or body answers 422 ``idempotency_key_reuse``.
  Not saved, so a retry runs again: 5xx, and refusals before any work (401, 403,
  422, 429).
* Rate limits in fixed windows counted in the cache port (shared by every process
  with Redis): ``rate_limit_per_user`` per authenticated user, ``rate_limit_
  registration_per_ip`` on registration and ``rate_limit_auth_per_ip`` on the
  public credential endpoints; 429 with ``Retry-After`` (seconds to the window's end).
"""

from __future__ import annotations

import base64
import contextvars
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from brokerkernel.api.auth import PRINCIPAL, RATE_COUNTED, authenticate
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import dumps
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.ratelimit import Window
from brokerkernel.kernel.security import SecretBox
from brokerkernel.kernel.storage.models import new_id
from brokerkernel.kernel.trading.service import TradingError

log = logging.getLogger("brokerkernel.api")
access_log = logging.getLogger("brokerkernel.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 128
MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Refusals before any work was done: the key is released so a retry runs again.
NOT_SAVED = frozenset({401, 403, 422, 429})
#: Response headers a replay repeats (besides Content-Type).
REPLAYED_HEADERS = ("Location", "Deprecation", "Link", "Cache-Control", "Pragma")
REGISTRATION_ROUTES = frozenset(
    {("POST", "/api/customer/register"), ("POST", "/customers/register")}
)
#: Public endpoints that take credentials or one-time tokens (per-IP limit).
CREDENTIAL_ROUTES = frozenset(
    {
        ("POST", "/api/admin/users/login"),
        ("POST", "/users/login"),
        ("POST", "/api/customer/login"),
        ("POST", "/customers/login"),
        ("GET", "/api/customer/autologin"),
        ("GET", "/auth/autologin"),
        ("POST", "/api/customer/password-reset/forgot"),
        ("POST", "/customers/password-reset/forgot"),
        ("GET", "/api/customer/password-reset/verify"),
        ("GET", "/customers/password-reset/verify"),
        ("POST", "/api/customer/password-reset/confirm"),
        ("POST", "/customers/password-reset/confirm"),
        ("POST", "/api/v1/oauth/token"),
    }
)
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,128}$")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


# --------------------------------------------------------------- request id and logs


def install_log_context() -> None:
    """Give every log record a ``request_id`` attribute (``-`` outside a request).

    Idempotent; formats may then use ``%(request_id)s``.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "brokerkernel_request_id", False):
        return

    def record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = _request_id.get()
        return record

    record_factory.brokerkernel_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record_factory)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo the caller's ``X-Request-ID`` or assign one; log one line per request.

    The access line carries ``method``, ``path`` (never the query: it may hold
    one-time tokens), ``status``, ``duration_ms``, ``principal`` and ``request_id``.
    """
    given = request.headers.get(REQUEST_ID, "")
    rid = given if given and _PRINTABLE.match(given) else new_id()
    request[REQUEST_ID_KEY] = rid
    token = _request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID] = rid
            status = exc.status
            raise
        response.headers[REQUEST_ID] = rid
        status = response.status
        return response
    finally:
        if access_log.isEnabledFor(logging.INFO):  # else skip building the record's fields
            who = request.get(PRINCIPAL)
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            access_log.info(
                "%s %s %s %.2fms",
                request.method,
                request.path,
                status,
                elapsed_ms,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": elapsed_ms,
                    "principal": f"{who.kind}:{who.subject}" if who is not None else None,
                },
            )
        _request_id.reset(token)


# -------------------------------------------------------------------------- errors


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON ``{"detail": ...}``; unexpected exceptions are 500 and logged."""
    try:
        return await handler(request)
    except ApiError:
        raise
    except TradingError as exc:
        raise ApiError(exc.status, exc.detail) from exc
    except IdentityError as exc:
        error = ApiError(exc.status, body=exc.body)
        error.headers.update(exc.headers)
        raise error from exc
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


# ---------------------------------------------------------------------------- CORS


CORS_HEADERS = web.RequestKey("cors_headers", dict[str, str])
"""The CORS headers the ``cors`` middleware chose for an allowed origin's request."""
CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, X-Request-ID",
    "Access-Control-Max-Age": "600",
}
CORS_EXPOSED = (
    "X-Request-ID, Retry-After, Deprecation, X-Idempotent-Replay, "
    "X-RateLimit-Limit, X-RateLimit-Remaining"
)


def cors(origins: list[str]) -> Middleware:
    """Configured once at the gateway: allow ``origins`` ('*' for any). A preflight
    (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin answers
    204 here; every other request goes on, its CORS headers kept for
    :func:`cors_headers`, which sets them on whatever response is sent."""
    allow_any = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not (allow_any or origin in origins):
            return await handler(request)
        headers = {
            "Access-Control-Allow-Origin": "*" if allow_any else origin,
            "Access-Control-Expose-Headers": CORS_EXPOSED,
        }
        if not allow_any:
            headers["Vary"] = "Origin"
        request[CORS_HEADERS] = headers
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers=CORS_PREFLIGHT)
        return await handler(request)

    return middleware


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the request's CORS headers (:func:`cors`) on its
    response as its headers are sent, so a streamed answer (SSE, prepared inside its
    handler before any middleware sees it) carries them too."""
    headers = request.get(CORS_HEADERS)
    if headers is not None:
        response.headers.update(headers)


# -------------------------------------------------------------------- authentication


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication, idempotency and rate limits, in that order, as one middleware.

    The bearer token is verified once (signature, expiry, session revocation); a
    request that cannot be an idempotent replay (no ``Idempotency-Key`` on a
    mutation) is counted for its user's rate limit in the same cache round trip and
    goes on to :func:`rate_limits`; the others go through :func:`idempotency`, with
    :func:`rate_limits` then :func:`json_errors` as its handler, so the outcome it
    saves is a response or a JSON HTTP error (elsewhere the outer ``json_errors``
    answers the errors)."""
    key = request.headers.get(IDEMPOTENCY_KEY) if request.method in MUTATIONS else None
    await authenticate(request, count=key is None)
    if key is None:
        return await rate_limits(request, handler)
    inner = functools.partial(rate_limits, handler=functools.partial(json_errors, handler=handler))
    return await idempotency(request, inner, key)


def client_ip(request: web.Request) -> str:
    """The client's IP: the socket peer, or the entry ``forwarded_for_hops`` from the
    end of ``X-Forwarded-For`` behind that many trusted proxies."""
    hops = int(request.app[KERNEL].identity.gateway["forwarded_for_hops"])
    forwarded = request.headers.get("X-Forwarded-For")
    if hops and forwarded:
        entries = [part.strip() for part in forwarded.split(",") if part.strip()]
        if len(entries) >= hops:
            return entries[-hops]
    return request.remote or "unknown"


def _caller(request: web.Request) -> str:
    who = request.get(PRINCIPAL)
    return f"{who.kind}:{who.subject}" if who is not None else f"ip:{client_ip(request)}"


# ---------------------------------------------------------------------- idempotency


@dataclass(slots=True)
class IdempotencyStats:
    """This process's replay counters (``/health`` ``checks.idempotency``)."""

    hits: int = 0
    misses: int = 0

    def json(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / total, 4) if total else 0,
        }


IDEMPOTENCY_STATS = web.AppKey("idempotency_stats", IdempotencyStats)
IDEMPOTENCY_BOX = web.AppKey("idempotency_box", SecretBox)


def _reuse() -> ApiError:
    return ApiError(
        422,
        body={
            "detail": "Idempotency-Key was already used with a different request",
            "code": "idempotency_key_reuse",
        },
    )


def _replay(record: dict[str, Any]) -> web.Response:
    response = web.Response(
        status=record["status"],
        body=base64.b64decode(record["body"]),
        headers=record["headers"],
    )
    response.headers["X-Idempotent-Replay"] = "true"
    return response


def _saved(response: web.StreamResponse, fingerprint: str) -> dict[str, Any] | None:
    if not isinstance(response, web.Response) or response.status >= 500:
        return None
    if response.status in NOT_SAVED or not isinstance(response.body, bytes | bytearray):
        return None
    headers = {
        name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers
    }
    if "Content-Type" in response.headers:
        headers["Content-Type"] = response.headers["Content-Type"]
    return {
        "fp": fingerprint,
        "state": "done",
        "status": response.status,
        "body": base64.b64encode(bytes(response.body)).decode(),
        "headers": headers,
    }


async def idempotency(request: web.Request, handler: Handler, key: str) -> web.StreamResponse:
    """At-most-once mutation under the caller's ``Idempotency-Key`` ``key`` (see the
    module docstring); called by :func:`guard` for a mutation that carries one."""
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            422,
            [
                {
                    "loc": ["header", IDEMPOTENCY_KEY],
                    "msg": f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                    "type": "maxLength",
                }
            ],
        )
    identity = request.app[KERNEL].identity
    cache, box, stats = identity.cache, request.app[IDEMPOTENCY_BOX], request.app[IDEMPOTENCY_STATS]
    body = await request.read()
    fingerprint = hashlib.sha256(
        b"\0".join([request.method.encode(), request.path_qs.encode(), body])
    ).hexdigest()
    cache_key = "idem:" + hashlib.sha256(f"{_caller(request)}\0{key}".encode()).hexdigest()
    pending = box.seal(json.dumps({"fp": fingerprint, "state": "pending"}))
    while not await cache.set_nx(cache_key, pending, identity.gateway["idempotency_lock_s"]):
        raw = await cache.get(cache_key)
        if raw is None:
            continue  # released between the two calls: claim it again
        record = json.loads(box.open(raw))
        if record["fp"] != fingerprint:
            raise _reuse()
        if record["state"] != "done":
            raise ApiError(409, "A request with this Idempotency-Key is already in progress")
        stats.hits += 1
        return _replay(record)
    stats.misses += 1
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        await _finish(request, cache_key, _saved(exc, fingerprint))
        raise
    except BaseException:
        await cache.delete(cache_key)
        raise
    await _finish(request, cache_key, _saved(response, fingerprint))
    return response


async def _finish(request: web.Request, cache_key: str, record: dict[str, Any] | None) -> None:
    identity = request.app[KERNEL].identity
    if record is None:
        await identity.cache.delete(cache_key)
        return
    sealed = request.app[IDEMPOTENCY_BOX].seal(json.dumps(record))
    await identity.cache.set(cache_key, sealed, identity.gateway["idempotency_ttl_s"])


# ---------------------------------------------------------------------- rate limits


def _window(request: web.Request) -> Window | None:
    identity = request.app[KERNEL].identity
    who = request.get(PRINCIPAL)
    if who is not None:
        return identity.rate_window(f"{who.kind}:{who.subject}", "rate_limit_per_user")
    route = (request.method, _route(request))
    if route in REGISTRATION_ROUTES:
        return identity.rate_window(
            f"register:{client_ip(request)}", "rate_limit_registration_per_ip"
        )
    if route in CREDENTIAL_ROUTES:
        return identity.rate_window(f"auth:{client_ip(request)}", "rate_limit_auth_per_ip")
    return None


async def rate_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request in its fixed window (unless authentication counted it);
    429 with ``Retry-After`` over the limit; called by :func:`guard`."""
    if RATE_COUNTED in request:
        counted = request[RATE_COUNTED]
        window, count = counted.window, counted.count
    else:
        found = _window(request)
        if found is None:
            return await handler(request)
        window = found
        count = await request.app[KERNEL].identity.cache.incr(window.key, window.window_s)
    limit = window.limit
    headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - count))}
    if count > limit:
        error = ApiError(429, "Rate limit exceeded")
        error.headers.update(headers)
        error.headers["Retry-After"] = str(window.retry_after_s)
        raise error
    response = await handler(request)
    if not response.prepared:
        response.headers.update(headers)
    return response
