"""Configuration of the ``replay`` price feed: its JSON Schema and defaults."""

from __future__ import annotations

import copy
from typing import Any, Final

from brokerkernel.plugins.replay.sources import SYMBOLS

CONFIG_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "replay price feed",
    "description": "Replays recorded market data as live ticks and drives the market clock.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "data_dir": {
            "description": (
                "Directory holding the market data sets; a relative path is resolved "
                "against the process's working directory."
            ),
            "type": "string",
            "minLength": 1,
            "default": "../shared/data/market",
        },
        "symbols": {
            "description": "Symbols to replay; their ticks are merged in time order.",
            "type": "array",
            "items": {"enum": list(SYMBOLS)},
            "minItems": 1,
            "uniqueItems": True,
            "default": ["EURUSD", "XAUUSD"],
        },
        "start": {
            "description": "First UTC calendar day to replay, YYYY-MM-DD.",
            "type": "string",
            "format": "date",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "default": "2014-05-07",
        },
        "days": {
            "description": (
                "Number of UTC calendar days to replay from start; days without data "
                "(weekends) are skipped."
            ),
            "type": "integer",
            "minimum": 1,
            "default": 1,
        },
        "speed": {
            "description": (
                'Replay speed as a multiple of real time (1 = real time), or "max" to '
                "replay as fast as possible."
            ),
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"const": "max"},
            ],
            "default": 1,
        },
        "loop": {
            "description": (
                "When the range ends, start it again with tick times shifted forward by the "
                "range's length in whole days (the market clock never goes back); false stops."
            ),
            "type": "boolean",
            "default": False,
        },
    },
}


def config_defaults() -> dict[str, Any]:
    """The default value of every config key, as the kernel applies them."""
    properties: dict[str, dict[str, Any]] = CONFIG_SCHEMA["properties"]
    return {key: copy.deepcopy(prop["default"]) for key, prop in properties.items()}
