"""OpenAPI 3.1 metadata for route handlers (the document itself is being built).

Decorate a handler to document it::

    @operation(
        summary="Provision an evaluation account",
        tags=["propfirm"],
        body=PROVISION_SCHEMA,              # the JSON Schema validation.body() uses
        query=None,                         # JSON Schema of the query parameters (object)
        responses={201: ACCOUNT_SCHEMA, 404: "Plan not found"},
        security="partner:accounts:write",  # or "staff:<perm>", "customer", "public"
    )
    async def provision(request: web.Request) -> web.Response: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

OPENAPI_ATTRIBUTE = "__openapi__"


@dataclass(frozen=True, slots=True)
class Operation:
    """What the OpenAPI document says of one handler."""

    summary: str
    tags: Sequence[str] = ()
    body: Mapping[str, Any] | None = None
    query: Mapping[str, Any] | None = None
    responses: Mapping[int, str | Mapping[str, Any]] = field(default_factory=dict)
    security: str | None = None


def operation(
    summary: str,
    *,
    tags: Sequence[str] = (),
    body: Mapping[str, Any] | None = None,
    query: Mapping[str, Any] | None = None,
    responses: Mapping[int, str | Mapping[str, Any]] | None = None,
    security: str | None = None,
) -> Callable[[F], F]:
    """Attach :class:`Operation` metadata to a route handler (see the module docstring)."""

    def decorate(handler: F) -> F:
        setattr(
            handler,
            OPENAPI_ATTRIBUTE,
            Operation(summary, tuple(tags), body, query, dict(responses or {}), security),
        )
        return handler

    return decorate
