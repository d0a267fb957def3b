"""Request validation with JSON Schema: 422 listing every field error.

Error body: ``{"detail": [{"loc": ["body", "volume"], "msg": "...", "type": "..."}]}``
(``loc`` starts with ``body``, ``query`` or ``path``). ``query_int`` and ``query_enum``
raise at a bad parameter, or, given an ``errors`` list, collect into it so a route
answers every bad parameter in one 422.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, ValidationError, validators
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from brokerkernel.api.errors import ApiError, not_found
from brokerkernel.api.jsonio import loads

_validators: dict[int, Draft202012Validator] = {}
#: Field errors collected for one 422 (the ``detail`` items).
FieldErrors = list[dict[str, Any]]


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


async def body(
    request: web.Request,
    schema: Mapping[str, Any],
    accepts: Callable[[Any], bool] | None = None,
) -> dict[str, Any]:
    """The request's JSON object body, validated; 422 when it is not JSON or invalid.

    ``accepts``: an optional cheap predicate that is True only for bodies ``schema``
    certainly accepts (a hot route's common case); they skip the schema walk."""
    return _object(await request.text(), schema, accepts)


async def signed_body(
    request: web.Request, secret: str, schema: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON object body of a call signed with Standard Webhooks under ``secret``
    (``webhook-id``, ``webhook-timestamp`` within 5 minutes of now,
    ``webhook-signature`` over the raw body), validated against ``schema``.
    404 ``Not Found`` when ``secret`` is empty (the endpoint is not configured: it does
    not exist), 401 ``Invalid signature`` (checked next), 422 not JSON or invalid."""
    if not secret:
        raise not_found("Not Found")
    raw = await request.read()
    try:
        Webhook(secret).verify(raw, dict(request.headers), json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        raise ApiError(401, "Invalid signature") from exc
    return _object(raw.decode(), schema)


def _object(
    text: str, schema: Mapping[str, Any], accepts: Callable[[Any], bool] | None = None
) -> dict[str, Any]:
    try:
        data = loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json"}]
        ) from exc
    if accepts is None or not accepts(data):
        check(schema, data, "body")
    assert isinstance(data, dict)
    return data


def query_error(name: str, msg: str, kind: str) -> dict[str, Any]:
    """One query field's error item: ``{"loc": ["query", name], "msg": msg, "type": kind}``."""
    return {"loc": ["query", name], "msg": msg, "type": kind}


def _refuse(errors: FieldErrors | None, name: str, msg: str, kind: str) -> None:
    """422 with the query field's error, or (``errors`` given) the error appended there
    for the caller to answer together with every other field's."""
    if errors is None:
        raise ApiError(422, [query_error(name, msg, kind)])
    errors.append(query_error(name, msg, kind))


def query_int(
    request: web.Request,
    name: str,
    *,
    required: bool = False,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    errors: FieldErrors | None = None,
) -> int | None:
    """An integer query parameter; 422 when missing (if required), malformed or out of
    range. With ``errors`` the error is appended there instead and ``default`` returned."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            _refuse(errors, name, "field required", "required")
        return default
    try:
        value = int(raw)
    except ValueError:
        _refuse(errors, name, "must be an integer", "type")
        return default
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _refuse(errors, name, f"must be between {minimum} and {maximum}", "range")
        return default
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
    raise ApiError(422, [query_error(name, "must be true or false", "type")])


def query_enum(
    request: web.Request,
    name: str,
    allowed: Sequence[str],
    *,
    errors: FieldErrors | None = None,
) -> str | None:
    """A query parameter that must be one of ``allowed`` (None when absent); 422
    otherwise (with ``errors``: the error appended there and None returned)."""
    value = request.query.get(name)
    if value is not None and value not in allowed:
        _refuse(errors, name, f"must be one of {', '.join(allowed)}", "enum")
        return None
    return value


def path_int(request: web.Request, name: str) -> int:
    """An integer path parameter; 422 when it is not one."""
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise ApiError(
            422, [{"loc": ["path", name], "msg": "must be an integer", "type": "type"}]
        ) from exc
