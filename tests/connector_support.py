"""What the payment connectors' tests share: a local fake provider API served on a
port, and webhook deliveries (signed as each provider signs, by the caller)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer


class FakeProvider(Protocol):
    """A local fake of a payment provider's API: an aiohttp ``app`` speaking its wire
    format."""

    app: web.Application


Fake = TypeVar("Fake", bound=FakeProvider)


async def serve(aiohttp_server: Any, fake: Fake) -> tuple[Fake, TestServer]:
    """``fake`` and the local server its ``app`` now answers on."""
    return fake, await aiohttp_server(fake.app)


async def post_webhook(
    client: TestClient[Any, Any],
    path: str,
    payload: str,
    signature: tuple[str, str] | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    """POST a provider's JSON webhook ``payload`` to ``path``, with the ``signature``
    header ``(name, value)`` when given: ``(status, JSON answer, answer headers)``."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[signature[0]] = signature[1]
    response = await client.post(path, data=payload, headers=headers)
    return response.status, await response.json(), response.headers
