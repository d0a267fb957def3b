"""OpenAPI 3.1 metadata for route handlers, and the document built from the router.

Decorate a handler to document it::

    @operation(
        summary="Provision an evaluation account",
        tags=["propfirm"],
        body=PROVISION_SCHEMA,              # the JSON Schema validation.body() uses
        query=None,                         # JSON Schema of the query parameters (object)
        path={"login": {"type": "integer"}},  # path parameter schemas (default: string)
        responses={201: ACCOUNT_SCHEMA, 404: "Plan not found"},
        security="partner:accounts:write",  # or "staff:<perm>", "staff", "customer", "public"
    )
    async def provision(request: web.Request) -> web.Response: ...

``security`` may also be a sequence of alternatives (``("customer",
"staff:view_customers")``: either credential is accepted). A ``responses`` value is a
description (str) or the JSON Schema of the JSON body.

:func:`build_document` walks ``app.router`` once every route is added (the seed's
route modules and the plugins' ``broker_register_routes``) and returns the OpenAPI
3.1 document served at ``/openapi.json`` (``api/routes/docs.py``):

* every route but static files, HEAD and OPTIONS; path parameters from the path
  template (``{login}``), typed by ``Operation.path``; query parameters from the
  properties of ``Operation.query``; the request body from ``Operation.body``;
* request bodies are Draft 2020-12 JSON Schema, OpenAPI 3.1's own dialect; the
  kernel's ``decimalPlaces`` keyword (``validation.decimal_schema``) becomes the
  extension ``x-decimalPlaces`` and exact ``Decimal`` bounds become JSON numbers;
* legacy flat paths (``Router.add(..., legacy=...)``) are ``deprecated: true``;
* security schemes: ``staffJWT`` and ``customerJWT`` (bearer JWTs from the login
  endpoints; a staff permission is listed as the requirement's role, which OpenAPI
  3.1 allows for non-OAuth schemes) and ``partnerOAuth`` (OAuth2 client credentials
  at ``/api/v1/oauth/token`` with ``PARTNER_SCOPES``);
* 401/403 are added to secured operations, 422 (the shared ``ValidationError``
  component, ``validation.py``'s body) to those with a JSON body, query or path
  schema, unless the Operation documents them itself;
* a handler without an Operation is still listed, its summary taken from the first
  line of its docstring.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from importlib import metadata
from typing import Any, TypeVar

from aiohttp import web

from brokerkernel.kernel.identity.seed import PARTNER_SCOPES

F = TypeVar("F", bound=Callable[..., Any])

OPENAPI_ATTRIBUTE = "__openapi__"
#: Set on a legacy-path wrapper (:func:`deprecate`): the seed path that replaces it.
SUCCESSOR_ATTRIBUTE = "__openapi_successor__"
OPENAPI_VERSION = "3.1.1"
JSON = "application/json"
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
_PARAMETER = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True, slots=True)
class Operation:
    """What the OpenAPI document says of one handler.

    ``body``: JSON Schema of the request body (media type ``body_type``); ``query``:
    object schema whose properties are the query parameters; ``path``: schema per
    path parameter name (parameters not named are strings); ``responses``: status ->
    description or JSON Schema of the JSON body; ``security``: see the module
    docstring; ``description``: defaults to the handler's docstring.
    """

    summary: str
    tags: Sequence[str] = ()
    body: Mapping[str, Any] | None = None
    query: Mapping[str, Any] | None = None
    responses: Mapping[int, str | Mapping[str, Any]] = field(default_factory=dict)
    security: str | Sequence[str] | None = None
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    body_type: str = JSON
    description: str | None = None


def operation(
    summary: str,
    *,
    tags: Sequence[str] = (),
    body: Mapping[str, Any] | None = None,
    query: Mapping[str, Any] | None = None,
    responses: Mapping[int, str | Mapping[str, Any]] | None = None,
    security: str | Sequence[str] | None = None,
    path: Mapping[str, Mapping[str, Any]] | None = None,
    body_type: str = JSON,
    description: str | None = None,
) -> Callable[[F], F]:
    """Attach :class:`Operation` metadata to a route handler (see the module docstring)."""

    def decorate(handler: F) -> F:
        setattr(
            handler,
            OPENAPI_ATTRIBUTE,
            Operation(
                summary,
                tuple(tags),
                body,
                query,
                dict(responses or {}),
                security,
                dict(path or {}),
                body_type,
                description,
            ),
        )
        return handler

    return decorate


def deprecate(wrapper: F, handler: Callable[..., Any], successor: str) -> F:
    """Make ``wrapper`` (answering at a legacy path) documented like ``handler`` and
    marked deprecated in favour of the path ``successor``; its ``__name__`` stays its
    own (tests tell legacy aliases by it)."""
    functools.update_wrapper(wrapper, handler, assigned=("__doc__",))
    setattr(wrapper, SUCCESSOR_ATTRIBUTE, successor)
    return wrapper


# ------------------------------------------------------------------------ the document

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'Every error answer: ``{"detail": ...}`` (a message, or a list).',
    "required": ["detail"],
    "properties": {"detail": {}},
}
_VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "422: every field error of the request at once.",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "description": 'Where: "body", "query" or "path", then the field.',
                        "items": {"type": ["string", "integer"]},
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string", "description": "The failed check."},
                },
            },
        }
    },
}
_SHARED_RESPONSES: dict[int, str] = {
    401: "Unauthorized",
    403: "Forbidden",
    422: "ValidationFailed",
}


def _components() -> dict[str, Any]:
    def error(description: str, schema: str = "Error") -> dict[str, Any]:
        return {
            "description": description,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }

    return {
        "schemas": {"Error": _ERROR_SCHEMA, "ValidationError": _VALIDATION_ERROR_SCHEMA},
        "responses": {
            "Unauthorized": error(
                'Missing or invalid credentials ({"detail": "Token expired"}, '
                '"Invalid token" or "Missing or invalid Authorization header")'
            ),
            "Forbidden": error("The caller lacks the permission, scope or ownership required"),
            "ValidationFailed": error("Invalid request: every field error", "ValidationError"),
        },
        "securitySchemes": {
            "staffJWT": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Broker staff access token (POST /api/admin/users/login); "
                "a requirement's roles are the staff permissions needed.",
            },
            "customerJWT": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Trader access token (POST /api/customer/login).",
            },
            "partnerOAuth": {
                "type": "oauth2",
                "description": "Partner client credentials (ZT4 partner API); the tenant "
                "must be prop-firm enabled (403 prop_firm_not_enabled).",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": "/api/v1/oauth/token",
                        "scopes": {scope: f"Partner scope {scope}" for scope in PARTNER_SCOPES},
                    }
                },
            },
        },
    }


def json_schema(schema: Any) -> Any:
    """``schema`` as OpenAPI 3.1 JSON Schema: ``decimalPlaces`` -> ``x-decimalPlaces``,
    integral ``Decimal`` values -> ``int`` (others stay exact Decimals, which
    ``jsonio.dumps`` writes as JSON numbers); a new structure, the input untouched."""
    if isinstance(schema, Mapping):
        return {
            ("x-decimalPlaces" if key == "decimalPlaces" else key): json_schema(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list | tuple):
        return [json_schema(item) for item in schema]
    if isinstance(schema, Decimal) and schema == schema.to_integral_value():
        return int(schema)
    return schema


def security_requirements(security: str | Sequence[str] | None) -> list[dict[str, list[str]]]:
    """OpenAPI security requirements (alternatives) of an Operation's ``security``;
    ``"public"`` (or None) is ``[]``. Raises ValueError on an unknown form or scope."""
    alternatives = (security,) if isinstance(security, str) else tuple(security or ())
    requirements: list[dict[str, list[str]]] = []
    for item in alternatives:
        kind, _, detail = item.partition(":")
        if item == "public":
            continue
        if item == "customer":
            requirements.append({"customerJWT": []})
        elif kind == "staff":
            requirements.append({"staffJWT": [detail] if detail else []})
        elif kind == "partner" and detail in PARTNER_SCOPES:
            requirements.append({"partnerOAuth": [detail]})
        else:
            raise ValueError(
                f"unknown security {item!r}: use 'public', 'customer', 'staff', "
                f"'staff:<permission>' or 'partner:<scope>' (scopes: {', '.join(PARTNER_SCOPES)})"
            )
    return requirements


def _response(status: int, value: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, str):
        response: dict[str, Any] = {"description": value}
        if status >= 400:
            response["content"] = {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}
        return response
    description = value.get("description")
    return {
        "description": description if isinstance(description, str) else _phrase(status),
        "content": {JSON: {"schema": json_schema(value)}},
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _docstring(handler: Callable[..., Any]) -> tuple[str, str | None]:
    doc = (handler.__doc__ or "").strip()
    if not doc:
        name = inspect.unwrap(handler).__name__  # a legacy alias: its handler's name
        return name.replace("_", " ").strip().capitalize(), None
    first = doc.split("\n\n", 1)[0]
    return " ".join(first.split()).rstrip("."), doc


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def _parameters(path: str, op: Operation | None) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    path_types = op.path if op is not None else {}
    for name in _PARAMETER.findall(path):
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": json_schema(path_types.get(name, {"type": "string"})),
            }
        )
    if op is not None and op.query is not None:
        required = set(op.query.get("required", ()))
        for name, schema in op.query.get("properties", {}).items():
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": json_schema(schema),
            }
            if isinstance(schema, Mapping) and isinstance(schema.get("description"), str):
                parameter["description"] = schema["description"]
            parameters.append(parameter)
    return parameters


def _operation_object(method: str, path: str, handler: Callable[..., Any]) -> dict[str, Any]:
    op: Operation | None = getattr(handler, OPENAPI_ATTRIBUTE, None)
    summary, doc = _docstring(handler)
    result: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary if op is not None else summary,
    }
    description = op.description if op is not None and op.description else doc
    successor = getattr(handler, SUCCESSOR_ATTRIBUTE, None)
    if successor is not None:
        result["deprecated"] = True
        description = f"Legacy flat path: use `{method} {successor}`.\n\n{description or ''}"
    if description:
        result["description"] = description.strip()
    if op is not None and op.tags:
        result["tags"] = list(op.tags)
    parameters = _parameters(path, op)
    if parameters:
        result["parameters"] = parameters
    responses: dict[str, Any] = {}
    if op is not None:
        if op.body is not None:
            result["requestBody"] = {
                "required": bool(op.body.get("required")),
                "content": {op.body_type: {"schema": json_schema(op.body)}},
            }
        requirements = security_requirements(op.security)
        result["security"] = requirements
        shared: set[int] = set()
        if requirements:
            shared |= {401, 403}
        if (op.body is not None and op.body_type == JSON) or op.query is not None or op.path:
            shared.add(422)
        for status, value in sorted(op.responses.items()):
            responses[str(status)] = _response(status, value)
        for status in sorted(shared - set(op.responses)):
            responses[str(status)] = {"$ref": f"#/components/responses/{_SHARED_RESPONSES[status]}"}
    if not any(status.startswith(("1", "2", "3")) for status in responses):
        responses = {"200": {"description": "OK"}, **responses}
    result["responses"] = dict(sorted(responses.items()))
    return result


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``app`` (see the module docstring).

    Call it once the router holds every route (after ``create_app``). Raises
    ValueError when an Operation's ``security`` is malformed.
    """
    paths: dict[str, dict[str, Any]] = {}
    tags: set[str] = set()
    for route in app.router.routes():
        resource = route.resource
        if (
            resource is None
            or isinstance(resource, web.StaticResource)
            or route.method in SKIPPED_METHODS
            or route.method == "*"
        ):
            continue
        path = resource.canonical
        entry = _operation_object(route.method, path, route.handler)
        tags.update(entry.get("tags", ()))
        paths.setdefault(path, {})[route.method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "brokerkernel API",
            "version": metadata.version("brokerkernel"),
            "description": "The broker kernel's HTTP API: seed paths, legacy flat paths "
            "(deprecated) and the routes enabled plugins contribute. Bodies are exact "
            "decimals: numbers are parsed without floating point.",
        },
        "tags": [{"name": tag} for tag in sorted(tags)],
        "paths": dict(sorted(paths.items())),
        "components": _components(),
    }
