"""Bearer-token authentication and the permission checks routes use.

Staff tokens (``type: "user"``) carry the role's permission codes; customer tokens
(``type: "customer"``) carry the customer's ``logins``. 401 bodies are exactly the
seed's gateway section: "Missing or invalid Authorization header", "Token expired",
"Invalid token".
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from brokerkernel.api.errors import ApiError, forbidden, unauthorized
from brokerkernel.api.keys import KERNEL
from brokerkernel.kernel.security import TokenError

MISSING_AUTH = "Missing or invalid Authorization header"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``kind`` "user" (staff) or "customer"; ``subject`` their id."""

    kind: str
    subject: str
    permissions: frozenset[str]
    logins: frozenset[int]

    @property
    def is_staff(self) -> bool:
        return self.kind == "user"


PRINCIPAL = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    """The authenticated caller; raises 401 with the seed's exact body otherwise."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized(MISSING_AUTH)
    try:
        claims = request.app[KERNEL].tokens.verify(token.strip())
    except TokenError as exc:
        raise unauthorized(exc.detail) from exc
    kind = claims.get("type")
    if kind not in ("user", "customer"):
        raise unauthorized("Invalid token")
    result = Principal(
        kind=kind,
        subject=str(claims["sub"]),
        permissions=frozenset(claims.get("permissions", [])),
        logins=frozenset(int(x) for x in claims.get("logins", [])),
    )
    request[PRINCIPAL] = result
    return result


def require_staff(request: web.Request, permission: str) -> Principal:
    """A staff caller holding ``permission`` (seed names it per endpoint); else 401/403."""
    who = principal(request)
    if not who.is_staff:
        raise forbidden("Staff access required")
    if permission not in who.permissions:
        raise forbidden(f"Missing permission: {permission}")
    return who


def require_account_access(request: web.Request, login: int, permission: str) -> Principal:
    """Staff with ``permission``, or the customer who owns ``login``; else 401/403."""
    who = principal(request)
    if who.is_staff:
        if permission not in who.permissions:
            raise forbidden(f"Missing permission: {permission}")
    elif login not in who.logins:
        raise ApiError(403, "Not your trading account")
    return who
