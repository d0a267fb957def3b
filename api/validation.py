"""Request validation with JSON Schema: 422 listing every field error.

Error body: ``{"detail": [{"loc": ["body", "volume"], "msg": "...", "type": "..."}]}``
(``loc`` starts with ``body`` or ``query``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, ValidationError, validators

from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import loads

_validators: dict[int, Draft202012Validator] = {}


def _decimal_places(
    _validator: Draft202012Validator, places: int, instance: Any, _schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``decimalPlaces``: a number has at most that many digits after the point."""
    if isinstance(instance, Decimal) and instance.is_finite():
        exponent = instance.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            yield ValidationError(f"{instance} has more than {places} decimal places")


#: Draft 2020-12 plus the ``decimalPlaces`` keyword (exact decimals, see jsonio).
Validator: type[Draft202012Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"decimalPlaces": _decimal_places}
)


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    key = id(schema)
    if key not in _validators:
        _validators[key] = Validator(schema)
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


#: Decimal places a NUMERIC(28, 10) column keeps, and a bound that fits it.
DECIMAL_PLACES = 10
DECIMAL_MAX = Decimal("1E17")


def decimal_schema(
    *,
    minimum: int | None = None,
    exclusive_minimum: int | None = None,
    nullable: bool = False,
    description: str | None = None,
) -> dict[str, Any]:
    """JSON Schema of an exact decimal body field (a JSON number, parsed as Decimal):
    at most 10 decimal places and below 10^17 in magnitude, so it fits the database
    exactly; ``minimum`` / ``exclusive_minimum`` bound it below."""
    schema: dict[str, Any] = {
        "type": ["number", "null"] if nullable else "number",
        "decimalPlaces": DECIMAL_PLACES,
        "maximum": DECIMAL_MAX,
        "minimum": -DECIMAL_MAX if minimum is None else minimum,
    }
    if exclusive_minimum is not None:
        schema["exclusiveMinimum"] = exclusive_minimum
    if description is not None:
        schema["description"] = description
    return schema


def query_bool(request: web.Request, name: str) -> bool | None:
    """A ``true``/``false`` query parameter (None when absent); 422 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ApiError(422, [{"loc": ["query", name], "msg": "must be true or false", "type": "type"}])


def query_enum(request: web.Request, name: str, allowed: Sequence[str]) -> str | None:
    """A query parameter that must be one of ``allowed`` (None when absent); 422 otherwise."""
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise ApiError(
            422,
            [
                {
                    "loc": ["query", name],
                    "msg": f"must be one of {', '.join(allowed)}",
                    "type": "enum",
                }
            ],
        )
    return value


def path_int(request: web.Request, name: str) -> int:
    """An integer path parameter; 422 when it is not one."""
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["path", name], "msg": "must be an integer", "type": "type"}]
        ) from exc
