"""B-book execution: the broker is the counterparty and fills at its own quote.

Market deals fill at the group-adjusted ask (buy) or bid (sell) of the latest quote,
and are rejected with ``No fresh quote`` when there is none or it is older than the
instrument's ``stale_threshold_ms`` by the market clock.
"""

from __future__ import annotations

from typing import Any

from brokerkernel.kernel.descriptors import (
    ExecutionVenue,
    Fill,
    FillRequest,
    PluginContext,
    Rejection,
)
from brokerkernel.kernel.hookspecs import hookimpl

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {},
}

NO_QUOTE = "No fresh quote"


class BBookVenue:
    """Fills every deal in full at the quote the account's group sees."""

    name = "bbook"

    def __init__(self, context: PluginContext) -> None:
        self._context = context

    async def execute(self, request: FillRequest) -> Fill | Rejection:
        quote = request.quote
        if quote is None or request.now_ms - quote.time_ms > request.terms.stale_threshold_ms:
            return Rejection(NO_QUOTE)
        price = quote.ask if request.side > 0 else quote.bid
        return Fill(price=price, time_ms=request.now_ms, venue=self.name)


@hookimpl
def broker_register_execution_venues() -> list[ExecutionVenue]:
    return [ExecutionVenue(name="bbook", factory=BBookVenue)]
