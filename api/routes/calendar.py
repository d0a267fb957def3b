"""Economic calendar (seed section 30) and its staff import.

``GET /calendar`` (PUBLIC): events from ``from`` to ``to`` (``YYYY-MM-DD``, both
inclusive, UTC dates; default today to today + 7 days by the market clock),
``currency`` a comma list (``USD,EUR,GBP``), ``impact`` ``high`` or ``medium``; every
malformed parameter answers in one 422. ``POST /api/platform/calendar`` (staff,
``manage_broker_config``): bulk upsert ``{"events": [...]}`` keyed by (event_name,
currency, event_date); answers ``{"created", "updated", "events"}``; 409 when a
concurrent import inserted the same event (retry).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from brokerkernel.api import validation
from brokerkernel.api.auth import require_staff
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import respond
from brokerkernel.api.keys import KERNEL
from brokerkernel.api.openapi import operation
from brokerkernel.api.validation import FieldErrors, decimal_schema, query_error
from brokerkernel.kernel.marketdata.calendar import IMPACTS

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

DEFAULT_DAYS: Final = 7
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY: Final = re.compile(r"^[A-Z]{3}$")
QUERY_IMPACTS: Final = ("high", "medium")
DATE_TIME_PATTERN: Final = (
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
)

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event_name", "country", "currency", "impact", "event_date"],
    "properties": {
        "event_name": {"type": "string", "minLength": 1, "maxLength": 200},
        "country": {"type": "string", "minLength": 1, "maxLength": 64},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "category": {"type": ["string", "null"], "maxLength": 128},
        "impact": {"enum": list(IMPACTS)},
        "event_date": {
            "type": "string",
            "pattern": DATE_TIME_PATTERN,
            "description": "ISO 8601 instant with its offset, e.g. 2026-03-13T03:30:00Z.",
        },
        "actual": decimal_schema(nullable=True),
        "forecast": decimal_schema(nullable=True),
        "previous": decimal_schema(nullable=True),
    },
}
IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["events"],
    "properties": {
        "events": {"type": "array", "minItems": 1, "maxItems": 5000, "items": EVENT_SCHEMA}
    },
}
EVENT_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, **EVENT_SCHEMA["properties"]},
}
QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "from": {"type": "string", "format": "date", "description": "Start date (default today)."},
        "to": {"type": "string", "format": "date", "description": "End date, inclusive (+7 days)."},
        "currency": {"type": "string", "description": "Comma-separated: USD,EUR,GBP."},
        "impact": {"enum": list(QUERY_IMPACTS)},
    },
}


def _date(request: web.Request, name: str, errors: FieldErrors) -> date | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        if not _DATE.match(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        errors.append(query_error(name, "must be a date YYYY-MM-DD", "date"))
        return None


@operation(
    "Upcoming economic events",
    tags=["Calendar"],
    query=QUERY_SCHEMA,
    responses={200: {"type": "array", "items": EVENT_RESPONSE}, 422: "Invalid query"},
    security="public",
)
async def list_events(request: web.Request) -> web.Response:
    """Events between two UTC dates (inclusive), by time, filtered by currency and impact."""
    kernel = request.app[KERNEL]
    errors: FieldErrors = []
    start = _date(request, "from", errors) or kernel.clock.now().date()
    end = _date(request, "to", errors) or start + timedelta(days=DEFAULT_DAYS)
    if not errors and end < start:
        errors.append(query_error("to", "must not be before from", "range"))
    currencies = None
    raw_currency = request.query.get("currency")
    if raw_currency:
        currencies = [c.strip().upper() for c in raw_currency.split(",") if c.strip()]
        if not currencies or not all(_CURRENCY.match(c) for c in currencies):
            errors.append(query_error("currency", "must be ISO currency codes: USD,EUR", "pattern"))
    impact = validation.query_enum(request, "impact", QUERY_IMPACTS, errors=errors)
    if errors:
        raise ApiError(422, errors)
    events = kernel.calendar.events_between(
        currencies,
        datetime.combine(start, time(), UTC),
        datetime.combine(end, time.max, UTC),
        None if impact is None else (impact,),
    )
    return respond([event.to_json() for event in events])


@operation(
    "Import economic events (bulk upsert)",
    tags=["Calendar"],
    body=IMPORT_SCHEMA,
    responses={200: "created, updated and the events", 409: "Concurrent import; retry"},
    security="staff:manage_broker_config",
)
async def import_events(request: web.Request) -> web.Response:
    """Insert or update events by (event_name, currency, event_date)."""
    require_staff(request, "manage_broker_config")
    data = await validation.body(request, IMPORT_SCHEMA)
    events = []
    errors = []
    for index, event in enumerate(data["events"]):
        try:
            at = datetime.fromisoformat(event["event_date"].replace("Z", "+00:00"))
        except ValueError:
            errors.append(
                {
                    "loc": ["body", "events", index, "event_date"],
                    "msg": f"{event['event_date']!r} is not a valid date-time",
                    "type": "format",
                }
            )
            continue
        events.append(
            {
                "category": None,
                "actual": None,
                "forecast": None,
                "previous": None,
                **event,
                "event_date": at.astimezone(UTC),
            }
        )
    if errors:
        raise ApiError(422, errors)
    try:
        result = await request.app[KERNEL].calendar.upsert(events)
    except IntegrityError as exc:
        raise ApiError(409, "Conflicting concurrent import; retry") from exc
    return respond(
        {
            "created": result.created,
            "updated": result.updated,
            "events": [event.to_json() for event in result.events],
        }
    )


def setup(router: Router) -> None:
    router.add("GET", "/calendar", list_events)
    router.add("POST", "/api/platform/calendar", import_events)
