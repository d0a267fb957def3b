"""Request validation with JSON Schema: 422 listing every field error.

Error body: ``{"detail": [{"loc": ["body", "volume"], "msg": "...", "type": "..."}]}``
(``loc`` starts with ``body`` or ``query``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, ValidationError

from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import loads

_validators: dict[int, Draft202012Validator] = {}


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    key = id(schema)
    if key not in _validators:
        _validators[key] = Draft202012Validator(schema)
    return _validators[key]


def _location(error: ValidationError, where: str) -> list[Any]:
    loc: list[Any] = [where, *error.absolute_path]
    if error.validator == "required":
        loc.append(error.message.split("'")[1])
    return loc


def check(schema: Mapping[str, Any], instance: Any, where: str) -> None:
    """Raise 422 with every error of ``instance`` against ``schema``."""
    errors = sorted(
        _validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
    )
    if errors:
        raise ApiError(
            422,
            [
                {"loc": _location(e, where), "msg": e.message, "type": str(e.validator)}
                for e in errors
            ],
        )


async def body(request: web.Request, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The request's JSON object body, validated; 422 when it is not JSON or invalid."""
    text = await request.text()
    try:
        data = loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json"}]
        ) from exc
    check(schema, data, "body")
    assert isinstance(data, dict)
    return data


def query_int(
    request: web.Request,
    name: str,
    *,
    required: bool = False,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer query parameter; 422 when missing (if required), malformed or out of range."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(
                422, [{"loc": ["query", name], "msg": "field required", "type": "required"}]
            )
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["query", name], "msg": "must be an integer", "type": "type"}]
        ) from exc
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ApiError(
            422,
            [
                {
                    "loc": ["query", name],
                    "msg": f"must be between {minimum} and {maximum}",
                    "type": "range",
                }
            ],
        )
    return value
