"""The OpenAPI 3.1 document at /openapi.json and Swagger UI at /docs (issue 7 "Docs")."""

from __future__ import annotations

import inspect
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from support import make_kernel
from test_plugins import fake_plugin

from brokerkernel.api.app import Router, create_app
from brokerkernel.api.jsonio import dumps
from brokerkernel.api.openapi import (
    OPENAPI_ATTRIBUTE,
    Operation,
    build_document,
    json_schema,
    operation,
    security_requirements,
)
from brokerkernel.api.routes import docs
from brokerkernel.api.validation import decimal_schema
from brokerkernel.kernel import plugins as kernel_plugins
from brokerkernel.kernel.descriptors import HttpRoutes
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.identity.seed import PARTNER_SCOPES

Client = TestClient[Any, Any]


async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = json.loads(await response.text())
    return document


def _routes(app: web.Application) -> list[web.AbstractRoute]:
    """Every documented route: static files, HEAD and OPTIONS are not operations."""
    return [
        route
        for route in app.router.routes()
        if route.resource is not None
        and not isinstance(route.resource, web.StaticResource)
        and route.method not in ("HEAD", "OPTIONS")
    ]


def _path(route: web.AbstractRoute) -> str:
    assert route.resource is not None
    return route.resource.canonical


def _unwrapped(handler: Any) -> Any:
    return inspect.unwrap(handler)


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await _document(client)
    assert document["openapi"] == "3.1.1"
    assert document["info"]["title"] == "brokerkernel API"
    OpenAPIV31SpecValidator(document).validate()


async def test_the_document_is_built_and_encoded_once_per_app(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[web.Application] = []

    def counted(app: web.Application) -> dict[str, Any]:
        built.append(app)
        return build_document(app)

    monkeypatch.setattr(docs, "build_document", counted)
    first = await client.get("/openapi.json")
    second = await client.get("/openapi.json")

    assert (first.status, second.status, first.headers["Content-Type"]) == (
        200,
        200,
        "application/json; charset=utf-8",
    )
    assert built == [client.app]
    body = await first.read()
    assert await second.read() == body
    assert body == dumps(build_document(client.app)).encode()


async def test_every_route_is_an_operation_and_nothing_else(client: Client) -> None:
    document = await _document(client)
    registered = {(r.method.lower(), _path(r)) for r in _routes(client.app)}
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert documented == registered
    assert len(registered) > 200
    assert not any(path.startswith("/docs/static") for _, path in documented)


async def test_every_seed_route_handler_carries_an_operation(client: Client) -> None:
    """Each handler of api/routes/*.py is decorated with @operation (security,
    tags and summary included)."""
    missing = [
        f"{route.method} {_path(route)}"
        for route in _routes(client.app)
        if _unwrapped(route.handler).__module__.startswith("brokerkernel.api.routes.")
        and not isinstance(getattr(route.handler, OPENAPI_ATTRIBUTE, None), Operation)
    ]
    assert missing == []
    document = await _document(client)
    for ops in document["paths"].values():
        for op in ops.values():
            assert op["summary"]
            assert "security" in op
            assert op["operationId"]


_VALIDATES_BODY = re.compile(r"validation\.body\(|validation\.check\([^)]*\"body\"\)")


async def test_every_handler_validating_a_body_documents_that_schema(client: Client) -> None:
    """The handler's source passing a schema to validation.body / check(..., "body")
    means the Operation names that same schema object, and the document shows it."""
    document = await _document(client)
    checked = 0
    for route in _routes(client.app):
        handler = _unwrapped(route.handler)
        source = inspect.getsource(handler)
        if not _VALIDATES_BODY.search(source):
            continue
        op = getattr(handler, OPENAPI_ATTRIBUTE, None)
        where = f"{route.method} {_path(route)}"
        assert op is not None and op.body is not None, where
        match = re.search(r"validation\.body\(request, (\w+)\)", source)
        if match is not None:
            assert handler.__globals__[match.group(1)] is op.body, where
        documented = document["paths"][_path(route)][route.method.lower()]
        schema = documented["requestBody"]["content"][op.body_type]["schema"]
        assert schema == json.loads(dumps(json_schema(op.body))), where
        assert documented["responses"]["422"] == {"$ref": "#/components/responses/ValidationFailed"}
        checked += 1
    assert checked >= 50


async def test_exact_decimal_bodies_use_x_decimal_places(client: Client) -> None:
    document = await _document(client)
    order = document["paths"]["/api/customer/orders"]["post"]
    assert order["summary"] == "Place a market order (async)"
    assert order["tags"] == ["Orders (Trading)"]
    schema = order["requestBody"]["content"]["application/json"]["schema"]
    assert order["requestBody"]["required"] is True
    assert schema["required"] == ["login", "symbol", "cmd", "volume"]
    assert schema["properties"]["volume"] == {
        "type": "number",
        "x-decimalPlaces": 10,
        "maximum": 100000000000000000,
        "minimum": -100000000000000000,
        "exclusiveMinimum": 0,
    }
    assert '"decimalPlaces"' not in json.dumps(document)
    # The kernel's own schema is left as validation.body() needs it.
    assert "decimalPlaces" in decimal_schema()


async def test_legacy_flat_paths_are_deprecated_copies(client: Client) -> None:
    document = await _document(client)
    seed = document["paths"]["/api/customer/orders"]["post"]
    legacy = document["paths"]["/orders"]["post"]
    assert "deprecated" not in seed
    assert legacy["deprecated"] is True
    assert legacy["summary"] == seed["summary"]
    assert legacy["requestBody"] == seed["requestBody"]
    assert legacy["security"] == seed["security"]
    assert legacy["description"].startswith("Legacy flat path: use `POST /api/customer/orders`.")
    assert legacy["operationId"] == "post_orders"
    assert seed["operationId"] == "post_api_customer_orders"


async def test_parameters_security_and_responses(client: Client) -> None:
    document = await _document(client)
    paths = document["paths"]
    state = paths["/api/crm/accounts/{login}/state"]["get"]
    assert state["parameters"] == [
        {"name": "login", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    assert state["security"] == [{"customerJWT": []}, {"staffJWT": ["view_customers"]}]
    assert state["responses"]["404"] == {
        "description": "Account not found",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    users = paths["/api/admin/users"]["get"]
    assert users["security"] == [{"staffJWT": ["view_users"]}]
    page = next(p for p in users["parameters"] if p["name"] == "page")
    assert page == {
        "name": "page",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "default": 1, "minimum": 1},
    }
    assert sorted(users["responses"]) == ["200", "401", "403", "422"]
    assert paths["/health"]["get"]["security"] == []
    assert "401" not in paths["/health"]["get"]["responses"]
    created = paths["/api/admin/users"]["post"]["responses"]
    assert created["201"] == {"description": "Created"}
    history = paths["/api/prices/history"]["get"]
    symbol = next(p for p in history["parameters"] if p["name"] == "symbol")
    assert symbol["required"] is True
    token = paths["/api/v1/oauth/token"]["post"]
    assert list(token["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
    assert "422" not in token["responses"]


async def test_security_schemes_cover_staff_customers_and_partner_scopes(client: Client) -> None:
    schemes = (await _document(client))["components"]["securitySchemes"]
    assert schemes["staffJWT"]["scheme"] == schemes["customerJWT"]["scheme"] == "bearer"
    flow = schemes["partnerOAuth"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/api/v1/oauth/token"
    assert list(flow["scopes"]) == list(PARTNER_SCOPES)
    assert security_requirements(("customer", "partner:accounts:read", "staff")) == [
        {"customerJWT": []},
        {"partnerOAuth": ["accounts:read"]},
        {"staffJWT": []},
    ]
    with pytest.raises(ValueError, match="unknown security 'partner:accounts:nuke'"):
        security_requirements("partner:accounts:nuke")
    with pytest.raises(ValueError, match="unknown security 'admin'"):
        security_requirements("admin")


async def test_the_422_component_describes_the_real_validation_answer(client: Client) -> None:
    document = await _document(client)
    components = document["components"]
    failed = components["responses"]["ValidationFailed"]["content"]["application/json"]
    assert failed["schema"] == {"$ref": "#/components/schemas/ValidationError"}
    response = await client.post(
        "/api/customer/register", json={"email": "not-an-email", "password": "short"}
    )
    assert response.status == 422
    body = await response.json()
    assert [e["loc"] for e in body["detail"]] == [["body", "email"], ["body", "password"]]
    Draft202012Validator(components["schemas"]["ValidationError"]).validate(body)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_swagger_ui_is_served_from_local_assets(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    parser = _Assets()
    parser.feed(page)
    assert sorted(parser.urls) == [
        "docs/static/favicon-32x32.png",
        "docs/static/swagger-ui-bundle.js",
        "docs/static/swagger-ui.css",
    ]
    assert "://" not in page and "//cdn" not in page
    assert 'url: "openapi.json"' in page
    assert urljoin("/docs", "openapi.json") == "/openapi.json"
    types = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}
    for url in parser.urls:
        asset = await client.get(urljoin("/docs", url))
        assert asset.status == 200, url
        assert asset.content_type == types[Path(url).suffix], url
        assert len(await asset.read()) > 100, url
    bundle = await (await client.get("/docs/static/swagger-ui-bundle.js")).text()
    assert "SwaggerUIBundle" in bundle
    redirect = await client.get("/docs/static/oauth2-redirect.html")
    assert redirect.status == 200


def test_an_undocumented_handler_is_named_after_itself_on_both_paths() -> None:
    async def list_widgets(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    Router(app).add("GET", "/api/widgets", list_widgets, legacy="/widgets")
    paths = build_document(app)["paths"]
    assert paths["/api/widgets"]["get"] == {
        "operationId": "get_api_widgets",
        "summary": "List widgets",
        "responses": {"200": {"description": "OK"}},
    }
    assert paths["/widgets"]["get"]["summary"] == "List widgets"
    assert paths["/widgets"]["get"]["deprecated"] is True
    assert paths["/widgets"]["get"]["description"] == "Legacy flat path: use `GET /api/widgets`."


@operation(
    "List the acme widgets",
    tags=["Acme"],
    query={"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}},
    path={"login": {"type": "integer"}},
    security="partner:accounts:read",
)
async def _acme_widgets(request: web.Request) -> web.Response:
    return web.json_response([])


async def _acme_ping(request: web.Request) -> web.Response:
    """Answer pong.

    Not decorated: the document still lists it, summarised by this docstring.
    """
    return web.json_response("pong")


def _acme_routes(app: web.Application, _kernel: Any) -> None:
    app.router.add_get("/acme/{login}/widgets", _acme_widgets, allow_head=False)
    app.router.add_post("/acme/ping", _acme_ping)


async def test_plugin_routes_appear_in_the_document(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acme = fake_plugin(
        monkeypatch,
        "acme_docs",
        broker_register_routes=hookimpl(lambda: [HttpRoutes(name="acme", setup=_acme_routes)]),
    )
    installed = kernel_plugins.entry_points_by_name
    monkeypatch.setattr(
        kernel_plugins, "entry_points_by_name", lambda: {**installed(), "acme_docs": [acme]}
    )
    kernel = make_kernel(
        tmp_path, database_url, redis_url, market_data_dir, extra="[plugins.acme_docs]\n"
    )
    client: Client = await aiohttp_client(create_app(kernel))
    document = await _document(client)
    widgets = document["paths"]["/acme/{login}/widgets"]["get"]
    assert widgets["summary"] == "List the acme widgets"
    assert widgets["tags"] == ["Acme"]
    assert widgets["security"] == [{"partnerOAuth": ["accounts:read"]}]
    assert widgets["parameters"] == [
        {"name": "login", "in": "path", "required": True, "schema": {"type": "integer"}},
        {"name": "colour", "in": "query", "required": False, "schema": {"enum": ["red", "blue"]}},
    ]
    assert sorted(widgets["responses"]) == ["200", "401", "403", "422"]
    ping = document["paths"]["/acme/ping"]["post"]
    assert ping["summary"] == "Answer pong"
    assert "Not decorated" in ping["description"]
    assert ping["responses"] == {"200": {"description": "OK"}}
    assert {"name": "Acme"} in document["tags"]
    # The first-party manual price plugin's route came in the same way.
    assert document["paths"]["/api/platform/prices/{symbol}"]["post"]["security"] == [
        {"staffJWT": ["manage_prices"]}
    ]
    OpenAPIV31SpecValidator(document).validate()


#: Issue 7's partner surface: every plugin that serves it, with a stand-in Stripe key.
PARTNER_PLUGINS = """
[plugins.challenges]
[plugins.propfirm_api]
[plugins.fxproptech]
[plugins.webhooks]
[plugins.stripe]
secret_key = "sk_test_docs"
webhook_secret = "whsec_docs"
publishable_key = "pk_test_docs"
api_base = "http://127.0.0.1:9"
[plugins.prop_checkout]
webhook_secret = "whsec_docs"
[plugins.prop_checkout.tiers.tier_docs]
plan = "docs-10k"
amount_cents = 0
market = "crypto"
asset_class = "crypto"
account_size = 10000
"""


async def test_every_partner_route_is_a_documented_operation(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    aiohttp_client: Any,
) -> None:
    """Issue 7 "Docs": each route the prop/partner plugins add carries ``@operation``
    (none falls back to the undocumented stub), partner routes name their scope."""
    kernel = make_kernel(tmp_path, database_url, redis_url, market_data_dir, extra=PARTNER_PLUGINS)
    client: Client = await aiohttp_client(create_app(kernel))
    plugin_routes = [
        route
        for route in _routes(client.app)
        if _unwrapped(route.handler).__module__.startswith("brokerkernel.plugins.")
    ]
    undocumented = [
        f"{route.method} {_path(route)}"
        for route in plugin_routes
        if not isinstance(getattr(route.handler, OPENAPI_ATTRIBUTE, None), Operation)
    ]
    assert undocumented == []
    assert {_unwrapped(r.handler).__module__.split(".")[2] for r in plugin_routes} >= {
        "propfirm_api",
        "fxproptech",
        "webhooks",
        "prop_checkout",
    }
    document = await _document(client)
    OpenAPIV31SpecValidator(document).validate()
    paths = document["paths"]
    for prefix in ("/api/v1/propfirm/", "/api/v1/storefront/", "/v1/"):
        for path, ops in paths.items():
            if path.startswith(prefix):
                for op in ops.values():
                    assert op["security"][0].keys() == {"partnerOAuth"}, (path, op["security"])
    issue_7 = {
        ("post", "/api/v1/propfirm/plans"),
        ("delete", "/api/v1/propfirm/plans/{id}"),
        ("post", "/api/v1/propfirm/accounts"),
        ("get", "/api/v1/propfirm/accounts/{id}/metrics"),
        ("post", "/api/v1/propfirm/accounts/{id}/sso"),
        ("post", "/api/v1/propfirm/accounts/{id}/payouts"),
        ("get", "/api/v1/storefront/catalog"),
        ("post", "/api/v1/storefront/accounts/{id}/payout-request"),
        ("patch", "/v1/traders/{id}"),
        ("post", "/v1/evaluations/{id}/pass"),
        ("post", "/v1/payouts/approve"),
        ("get", "/v1/trades/stream"),
        ("post", "/v2/payments/checkout"),
        ("post", "/v2/payments/free"),
        ("get", "/v2/payments/prop-accounts"),
        ("get", "/v2/payments/prop-accounts/{id}"),
        ("post", "/api/v1/propfirm/webhooks"),
    }
    documented = {(method, path) for path, ops in paths.items() for method in ops}
    assert issue_7 - documented == set()
