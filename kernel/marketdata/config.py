"""The ``[kernel.market_data]`` settings: JSON Schema with defaults.

Referenced from :data:`brokerkernel.kernel.config.KERNEL_SCHEMA` as the ``market_data``
property, so it is validated (every error reported, unknown keys refused) with the
rest of ``[kernel]``::

    [kernel.market_data]
    bar_price = "bid"          # bid (MT5 charts), mid or ask
    ws_max_rate_hz = 0         # 0: every tick; else at most this many updates/s per client
"""

from __future__ import annotations

from typing import Any, Final

_PROPERTIES: Final[dict[str, dict[str, Any]]] = {
    "bar_price": {
        "enum": ["bid", "mid", "ask"],
        "default": "bid",
        "description": "Quote side OHLC bars are built from (MT5 charts use bid).",
    },
    "bar_flush_interval_s": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 1.0,
        "description": "Seconds between writes of changed bars (and outages) to the "
        "database; at most this much is lost on a crash.",
    },
    "feed_leader_ttl_s": {
        "type": "number",
        "minimum": 1,
        "default": 5.0,
        "description": "With REDIS_URL: seconds the feed-leader lock lives unless renewed; "
        "another process takes the feeds over this long after the leader dies.",
    },
    "ws_flush_interval_ms": {
        "type": "integer",
        "minimum": 0,
        "default": 10,
        "description": "WebSocket prices: ticks arriving within this window go out "
        "together in one frame per client (0: one frame per event-loop pass).",
    },
    "ws_max_rate_hz": {
        "type": "number",
        "minimum": 0,
        "default": 0,
        "description": "WebSocket prices: at most this many update frames per second per "
        "client, conflated to the latest quote per symbol; 0 sends every tick. A client "
        "may ask for a lower rate.",
    },
    "ws_heartbeat_s": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 15.0,
        "description": "WebSocket prices: seconds between heartbeat messages (and "
        "protocol pings; a client that does not answer a ping is closed).",
    },
    "ws_max_buffer_bytes": {
        "type": "integer",
        "minimum": 4096,
        "default": 1048576,
        "description": "WebSocket prices: a client whose unsent data exceeds this many "
        "bytes is too slow and is closed (code 1008) without slowing the others.",
    },
    "ws_max_symbols": {
        "type": "integer",
        "minimum": 1,
        "default": 100,
        "description": "WebSocket prices: most symbols one connection may subscribe to.",
    },
    "sse_throttle_ms": {
        "type": "integer",
        "minimum": 0,
        "default": 500,
        "description": "Account stream: least milliseconds between two state events "
        "(seed section 32: 500).",
    },
    "sse_ping_s": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 25.0,
        "description": "Account stream: seconds between ': ping' keep-alive comments "
        "(seed section 32: 25).",
    },
}

MARKET_DATA_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Market data service: bars, feed leadership, live streams.",
    "properties": _PROPERTIES,
    "default": {key: prop["default"] for key, prop in _PROPERTIES.items()},
}
