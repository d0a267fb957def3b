"""Refusals of synchronous trading requests, mapped to HTTP answers by the API."""

from __future__ import annotations

from typing import Any


class TradingError(Exception):
    """A refused synchronous trading request; ``status`` is the HTTP status to answer
    and ``detail`` the body's ``detail`` (a message, or the 422 list of field errors)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
