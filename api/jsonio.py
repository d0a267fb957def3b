"""JSON in and out with exact decimals.

Request bodies are parsed with ``parse_float=Decimal``, so ``0.1`` lots is exactly
``Decimal("0.1")``. Responses write ``Decimal`` values as JSON numbers with their
exact digits (never through a float), datetimes as ISO 8601 UTC (``...Z``) and dates
as ISO 8601 days (``2014-05-07``, e.g. a trading day).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

_MARK = "\x00dec:"
_ENCODED_MARK = "\\u0000dec:"  # _MARK as the encoder writes it
_MARKED = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?)"')


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _MARK + format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: Built once: ``json.dumps``/``json.loads`` with options build a new one per call.
_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Serialise ``value``; Decimals become exact JSON numbers (the rewrite pass is
    skipped when no Decimal was written)."""
    text = _ENCODER.encode(value)
    return _MARKED.sub(r"\1", text) if _ENCODED_MARK in text else text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)


def loads(text: str) -> Any:
    """Parse JSON; numbers with a fraction become ``Decimal``; ``NaN`` and
    ``Infinity`` (not JSON, though Python's parser accepts them) raise ValueError."""
    return _DECODER.decode(text)


def json_safe(value: Any) -> Any:
    """``value`` with Decimals as ints (integral) or floats, recursively through
    mappings, lists and tuples: what a JSON column (the stdlib encoder) stores, e.g.
    a body parsed by :func:`loads` kept as given."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=dumps(body), status=status, content_type="application/json", headers=headers
    )
