"""API documentation: ``GET /openapi.json`` and Swagger UI at ``GET /docs`` (public).

The OpenAPI 3.1 document is built from the router on the first request
(:func:`brokerkernel.api.openapi.build_document`) and its encoded JSON body kept for
every later one: the router is frozen by then, so it is built and encoded once per
app and never invalidated. Swagger UI 5 is served from the pinned ``swagger-ui-py``
distribution's ``static`` folder under ``/docs/static/`` — no CDN, nothing fetched
at run time.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from brokerkernel.api.jsonio import dumps
from brokerkernel.api.openapi import build_document, operation

if TYPE_CHECKING:
    from brokerkernel.api.app import Router

STATIC_PREFIX = "/docs/static"
# Relative URLs: "/docs" resolves them to /docs/static/... and /openapi.json, and
# they still resolve when a proxy mounts the API under a prefix.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>brokerkernel API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  oauth2RedirectUrl: new URL("docs/static/oauth2-redirect.html", document.baseURI).href
});
</script>
</body>
</html>
"""


def swagger_ui_static() -> Path:
    """The folder of Swagger UI's dist files in the installed ``swagger-ui-py``
    (found without importing the package, which would pull in its Jinja/YAML code)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a pinned dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@dataclass(slots=True)
class _Cache:
    body: bytes | None = None
    """The document as UTF-8 JSON (:func:`~brokerkernel.api.jsonio.dumps`)."""


DOCUMENT = web.AppKey("openapi_document", _Cache)


@operation("OpenAPI 3.1 document of this API", tags=["Docs"], security="public")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every route, plugin routes included."""
    cache = request.app[DOCUMENT]
    if cache.body is None:
        cache.body = dumps(build_document(request.app)).encode()
    return web.Response(body=cache.body, content_type="application/json", charset="utf-8")


@operation(
    "Swagger UI",
    tags=["Docs"],
    responses={200: "An HTML page (Swagger UI, local assets)"},
    security="public",
)
async def swagger_ui(_request: web.Request) -> web.Response:
    """Swagger UI for ``/openapi.json``, its scripts and styles from ``/docs/static/``."""
    return web.Response(text=PAGE, content_type="text/html")


def setup(router: Router) -> None:
    router.app[DOCUMENT] = _Cache()
    router.add("GET", "/openapi.json", openapi_json)
    router.add("GET", "/docs", swagger_ui)
    router.app.router.add_static(STATIC_PREFIX, swagger_ui_static())
