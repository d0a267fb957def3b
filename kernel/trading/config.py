"""The ``[kernel.trading]`` settings: JSON Schema with defaults.

Referenced from :data:`brokerkernel.kernel.config.KERNEL_SCHEMA` as the ``trading``
property, so it is validated with the rest of ``[kernel]``::

    [kernel.trading]
    batch_size = 256                  # jobs an order worker commits at once
    margin_call_interval_s = 300      # an account's margin-call warning repeats at most this often
    rollover_time = "00:00"           # daily swap rollover, local time of ...
    rollover_timezone = "UTC"         # ... this IANA zone (e.g. "EET": MT5 server time)
"""

from __future__ import annotations

from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_PROPERTIES: Final[dict[str, dict[str, Any]]] = {
    "batch_size": {
        "type": "integer",
        "minimum": 1,
        "maximum": 10_000,
        "default": 256,
        "description": "Most queued trading jobs (orders, closes, triggers, swaps) an order "
        "worker runs in one database transaction (group commit).",
    },
    "margin_call_interval_s": {
        "type": "number",
        "minimum": 0,
        "default": 300,
        "description": "Seconds of market time an account's account.margin_call warning "
        "is not repeated (0: on every crossing of the margin-call level).",
    },
    "rollover_time": {
        "type": "string",
        "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
        "default": "00:00",
        "description": "Daily rollover (swap charge) time, HH:MM in rollover_timezone.",
    },
    "rollover_timezone": {
        "type": "string",
        "minLength": 1,
        "default": "UTC",
        "description": "IANA time zone of rollover_time, e.g. 'UTC' or 'EET' (MT5 server time).",
    },
}

TRADING_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Trading core: order batching and the daily swap rollover.",
    "properties": _PROPERTIES,
    "default": {key: prop["default"] for key, prop in _PROPERTIES.items()},
}


def zone_error(config: dict[str, Any]) -> str | None:
    """Why ``rollover_timezone`` is unusable, or None."""
    try:
        ZoneInfo(config["rollover_timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        return f"rollover_timezone: unknown time zone {config['rollover_timezone']!r}"
    return None
