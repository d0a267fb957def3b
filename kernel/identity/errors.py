"""The one error type of the identity services; the API answers it as JSON."""

from __future__ import annotations

from typing import Any


class IdentityError(Exception):
    """A refused identity operation: HTTP ``status`` and the body ``{"detail": ...}``
    (plus ``code`` when the seed names one, e.g. ``idempotency_key_reuse``)."""

    def __init__(
        self,
        status: int,
        detail: Any,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = headers or {}

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail}
        if self.code is not None:
            body["code"] = self.code
        return body
