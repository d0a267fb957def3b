"""JSON errors: every error answer is ``{"detail": ...}`` with the seed's status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from brokerkernel.api.jsonio import dumps


class ApiError(web.HTTPException):
    """An HTTP error with a JSON body (``{"detail": detail}`` unless ``body`` given)."""

    def __init__(self, status: int, detail: Any = None, body: dict[str, Any] | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=dumps(body if body is not None else {"detail": detail}),
            content_type="application/json",
        )


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail)


def forbidden(detail: str = "Permission denied") -> ApiError:
    return ApiError(403, detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail)
