"""Partner OAuth2 token endpoint (ZT4 partner API, "Authentication").

``POST /api/v1/oauth/token`` with a form body implements the client-credentials
grant (RFC 6749 section 4.4). The client authenticates with HTTP Basic
(``client_secret_basic``) or ``client_id`` / ``client_secret`` form fields
(``client_secret_post``), not both. Success:
``{"access_token", "token_type": "Bearer", "expires_in": 3600, "scope"}``; errors are
RFC 6749 section 5.2 bodies ``{"error", "error_description"}`` (400, or 401
``invalid_client``). Responses are never cached (``Cache-Control: no-store``).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aiohttp import web

from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.kernel.identity.partners import OAuthError

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: The token request's form fields (documentation; the handler checks them itself).
TOKEN_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"const": "client_credentials"},
        "client_id": {"type": "string", "description": "client_secret_post only"},
        "client_secret": {"type": "string", "description": "client_secret_post only"},
        "scope": {"type": "string", "description": "Space-separated subset of the client's"},
    },
}
TOKEN_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "An access token (RFC 6749 section 5.1)",
    "required": ["access_token", "token_type", "expires_in", "scope"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer", "description": "seconds"},
        "scope": {"type": "string"},
    },
}
OAUTH_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "An OAuth2 error (RFC 6749 section 5.2)",
    "required": ["error", "error_description"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}


def _basic(header: str) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` of an HTTP Basic header (form-decoded, RFC 6749
    section 2.3.1), None for another scheme; raises OAuthError when malformed."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401)
    return unquote_plus(client_id), unquote_plus(secret)


@operation(
    "Partner access token (OAuth2 client credentials)",
    tags=["Partners"],
    body=TOKEN_FORM,
    body_type="application/x-www-form-urlencoded",
    responses={
        200: TOKEN_RESPONSE,
        400: OAUTH_ERROR,
        401: {**OAUTH_ERROR, "description": "invalid_client (RFC 6749 section 5.2)"},
    },
    security="public",
)
async def token(request: web.Request) -> web.Response:
    """The client-credentials grant (see the module docstring)."""
    basic_used = False
    try:
        if request.content_type not in FORM_TYPES:
            raise OAuthError(
                "invalid_request", "The body must be application/x-www-form-urlencoded"
            )
        form = await request.post()
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str) or not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError("unsupported_grant_type", "Only client_credentials is supported")
        header = request.headers.get("Authorization", "")
        basic_used = header.lower().startswith("basic ")
        basic = _basic(header)
        posted = form.get("client_id"), form.get("client_secret")
        if basic is not None and posted[1] is not None:
            raise OAuthError("invalid_request", "Use one client authentication method")
        client_id, secret = basic if basic is not None else posted
        if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id:
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        scope = form.get("scope")
        body = await request.app[KERNEL].identity.partners.exchange(
            client_id, secret, scope if isinstance(scope, str) else None
        )
    except OAuthError as exc:
        headers = dict(NO_STORE)
        if exc.status == 401 and basic_used:
            headers["WWW-Authenticate"] = 'Basic realm="brokerkernel", charset="UTF-8"'
        return respond(
            {"error": exc.error, "error_description": exc.description},
            status=exc.status,
            headers=headers,
        )
    return respond(body, headers=NO_STORE)


def setup(router: Router) -> None:
    router.add("POST", "/api/v1/oauth/token", token)
