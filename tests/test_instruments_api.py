"""Instrument catalog and broker-level instrument config over HTTP (seed section 15)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from support import create_admin, deposit, market_order, register_trader, staff_headers

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import OutboxEvent
from brokerkernel.kernel.storage.seed import DEFAULT_GROUP_ID

Client = TestClient[Any, Any]

EURUSD = {
    "id": "0b7c1d2e-3f40-4a51-8b62-7c83d94ea001",
    "symbol": "EURUSD",
    "display_name": "Euro / US Dollar",
    "category": "forex",
    "asset_class": "forex_majors",
    "calc_mode": "FOREX",
    "base_currency": "EUR",
    "quote_currency": "USD",
    "profit_currency": "USD",
    "digits": 5,
    "pip_size": 0.0001,
    "contract_size": 100000,
    "min_lot": 0.01,
    "max_lot": 100,
    "lot_step": 0.01,
    "margin_rate": 0.01,
    "spread": 0.2,
    "stale_threshold_ms": 10000,
    "tick_size": None,
    "tick_price": None,
    "initial_margin": None,
    "swap_type": "points",
    "swap_long": 0,
    "swap_short": 0,
    "swap_triple_day": "wednesday",
    "is_active": True,
    "is_enabled": True,
    "tradeability": None,
    "provider": "replay",
    "last_bid": 1.39286,
    "last_ask": 1.39298,
    "last_tick_at": "2014-05-07T00:00:07.135000Z",
}
US500 = {
    "symbol": "US500",
    "display_name": "S&P 500 index",
    "category": "indices",
    "asset_class": "indices",
    "calc_mode": "CFDINDEX",
    "base_currency": "USD",
    "quote_currency": "USD",
    "digits": 2,
    "pip_size": 0.01,
    "contract_size": 1,
    "tick_size": 0.25,
    "tick_price": 12.5,
    "margin_rate": 0.05,
    "min_lot": 0.1,
    "max_lot": 50,
    "lot_step": 0.1,
    "swap_type": "percent",
    "swap_long": -5.2,
    "swap_short": 1.1,
    "swap_triple_day": "friday",
}


async def test_customer_list_has_every_seed_field_and_the_last_quote(client: Client) -> None:
    response = await client.get("/api/customer/instruments")

    assert response.status == 200
    items = await response.json()
    assert [i["symbol"] for i in items] == ["BTCUSD", "EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]
    assert items[1] == EURUSD
    assert items[0]["last_bid"] is None and items[0]["last_tick_at"] is None


async def test_group_by_asset_class_and_asset_classes(client: Client) -> None:
    grouped = await client.get("/api/customer/instruments?group_by=asset_class")
    bad = await client.get("/api/customer/instruments?group_by=category")
    classes = await client.get("/api/customer/instruments/asset-classes")
    legacy = await client.get("/instruments/asset-classes")

    body = await grouped.json()
    assert {k: [i["symbol"] for i in v] for k, v in body.items()} == {
        "crypto": ["BTCUSD"],
        "forex_majors": ["EURUSD", "GBPUSD", "USDJPY"],
        "metals": ["XAUUSD"],
    }
    assert (bad.status, await bad.json()) == (
        422,
        {
            "detail": [
                {"loc": ["query", "group_by"], "msg": "must be 'asset_class'", "type": "enum"}
            ]
        },
    )
    expected = [
        {"asset_class": "crypto", "count": 1},
        {"asset_class": "forex_majors", "count": 3},
        {"asset_class": "metals", "count": 1},
    ]
    assert (classes.status, await classes.json()) == (200, expected)
    assert (legacy.status, await legacy.json()) == (200, expected)
    assert legacy.headers["Deprecation"] == "true"
    assert legacy.headers["Link"] == (
        '</api/customer/instruments/asset-classes>; rel="successor-version"'
    )


async def test_single_instrument_and_unknown_symbol(client: Client) -> None:
    found = await client.get("/api/customer/instruments/EURUSD")
    legacy = await client.get("/instruments/EURUSD")
    missing = await client.get("/api/customer/instruments/NOPE")

    assert (found.status, await found.json()) == (200, EURUSD)
    assert (legacy.status, await legacy.json()) == (200, EURUSD)
    assert (missing.status, await missing.json()) == (404, {"detail": "Instrument NOPE not found"})


async def test_create_instrument_applies_defaults_and_refuses_a_duplicate_symbol(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    created = await client.post("/api/platform/instruments", json=US500, headers=staff)
    again = await client.post("/instruments", json=US500, headers=staff)

    assert created.status == 201
    body = await created.json()
    assert body == {
        **US500,
        "id": body["id"],
        "profit_currency": "USD",
        "spread": 0,
        "stale_threshold_ms": 10000,
        "initial_margin": None,
        "is_active": True,
        "is_enabled": True,
        "tradeability": None,
        "provider": "none",
        "last_bid": None,
        "last_ask": None,
        "last_tick_at": None,
    }
    assert (again.status, await again.json()) == (409, {"detail": "Symbol already exists"})
    terms = kernel.terms.instrument("US500")
    assert terms is not None
    assert (terms.calc_mode, terms.tick_size, terms.tick_price, terms.swap_triple_day) == (
        "CFDINDEX",
        Decimal("0.25"),
        Decimal("12.5"),
        "friday",
    )
    async with kernel.db.read() as session:
        events = (
            await session.scalars(
                select(OutboxEvent.payload).where(OutboxEvent.type == "platform.config_changed")
            )
        ).all()
    assert events == [{"entity": "instrument", "key": "US500", "action": "created"}]


async def test_create_instrument_reports_every_schema_error(
    client: Client, staff: dict[str, str]
) -> None:
    response = await client.post(
        "/api/platform/instruments",
        json={
            "symbol": "bad sym",
            "calc_mode": "SPREADBET",
            "digits": 11,
            "pip_size": 0,
            "contract_size": -1,
            "extra": 1,
        },
        headers=staff,
    )

    assert response.status == 422
    body = await response.json()
    assert sorted((tuple(e["loc"]), e["type"]) for e in body["detail"]) == [
        (("body",), "additionalProperties"),
        (("body", "asset_class"), "required"),
        (("body", "base_currency"), "required"),
        (("body", "calc_mode"), "enum"),
        (("body", "category"), "required"),
        (("body", "contract_size"), "exclusiveMinimum"),
        (("body", "digits"), "maximum"),
        (("body", "margin_rate"), "required"),
        (("body", "pip_size"), "exclusiveMinimum"),
        (("body", "quote_currency"), "required"),
        (("body", "symbol"), "pattern"),
    ]


async def test_create_instrument_rules_across_fields(client: Client, staff: dict[str, str]) -> None:
    futures = {
        "symbol": "ES",
        "category": "futures",
        "asset_class": "futures",
        "calc_mode": "FUTURES",
        "base_currency": "USD",
        "quote_currency": "USD",
        "digits": 2,
        "pip_size": 0.001,
        "contract_size": 50,
        "margin_rate": 1,
        "min_lot": 5,
        "max_lot": 1,
    }

    response = await client.post("/api/platform/instruments", json=futures, headers=staff)
    places = await client.post(
        "/api/platform/instruments",
        data='{"symbol": "X1", "category": "fx", "asset_class": "fx", "calc_mode": "FOREX", '
        '"base_currency": "EUR", "quote_currency": "USD", "digits": 5, "pip_size": 0.0001, '
        '"contract_size": 100000, "margin_rate": 0.00000000001}',
        headers={**staff, "Content-Type": "application/json"},
    )
    nan = await client.post(
        "/api/platform/instruments",
        data='{"margin_rate": NaN}',
        headers={**staff, "Content-Type": "application/json"},
    )

    assert (response.status, await response.json()) == (
        422,
        {
            "detail": [
                {"loc": ["body", "min_lot"], "msg": "must not exceed max_lot", "type": "lot_range"},
                {
                    "loc": ["body", "pip_size"],
                    "msg": "must be a multiple of the price point 0.01 (digits 2)",
                    "type": "price_point",
                },
                {
                    "loc": ["body", "tick_size"],
                    "msg": "required by calc_mode FUTURES",
                    "type": "required",
                },
                {
                    "loc": ["body", "tick_price"],
                    "msg": "required by calc_mode FUTURES",
                    "type": "required",
                },
                {
                    "loc": ["body", "initial_margin"],
                    "msg": "required by calc_mode FUTURES",
                    "type": "required",
                },
            ]
        },
    )
    assert (places.status, await places.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "margin_rate"],
                    "msg": "1E-11 has more than 10 decimal places",
                    "type": "decimalPlaces",
                }
            ]
        },
    )
    assert (nan.status, await nan.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body"],
                    "msg": "invalid JSON: NaN is not a number JSON allows",
                    "type": "json",
                }
            ]
        },
    )


async def test_platform_routes_need_manage_instruments(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    await create_admin(kernel, "support@broker.test", role="support")
    support = await staff_headers(client, "support@broker.test")
    _, trader = await register_trader(client, "nosy@test.io")

    anonymous = await client.post("/api/platform/instruments", json=US500)
    as_trader = await client.get("/api/platform/instruments", headers=trader)
    as_support = await client.patch(
        "/api/platform/instruments/EURUSD", json={"is_enabled": False}, headers=support
    )

    assert (anonymous.status, await anonymous.json()) == (
        401,
        {"detail": "Missing or invalid Authorization header"},
    )
    assert (as_trader.status, await as_trader.json()) == (403, {"detail": "Staff access required"})
    assert (as_support.status, await as_support.json()) == (
        403,
        {"detail": "Missing permission: manage_instruments"},
    )


async def test_disable_and_close_only_reach_the_catalog_views_and_the_terms(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "broker-level@test.io")
    await deposit(client, staff, login, "1000")
    opened = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.01")

    disabled = await client.patch(
        "/api/platform/instruments/EURUSD", json={"is_enabled": False}, headers=staff
    )
    available = await client.get("/api/platform/instruments/available")
    listed = await client.get("/api/customer/instruments")
    broker = await client.get("/broker/instruments", headers=staff)
    refused = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.01")

    assert disabled.status == 200
    assert (await disabled.json())["is_enabled"] is False
    assert [i["symbol"] for i in await available.json()] == ["BTCUSD", "GBPUSD", "USDJPY", "XAUUSD"]
    assert "EURUSD" in [i["symbol"] for i in await listed.json()]
    broker_eurusd = next(i for i in await broker.json() if i["symbol"] == "EURUSD")
    assert (broker_eurusd["is_enabled"], broker.headers["Deprecation"]) == (False, "true")
    assert (refused["status"], refused["reason"]) == (
        "rejected",
        "Trading is disabled for this symbol",
    )
    terms = kernel.terms.terms(DEFAULT_GROUP_ID, "EURUSD")
    assert terms is not None and terms.tradeability == "non_tradable"

    await client.patch(
        "/api/platform/instruments/EURUSD",
        json={"is_enabled": True, "tradeability": "close_only"},
        headers=staff,
    )
    close_only = kernel.terms.terms(DEFAULT_GROUP_ID, "EURUSD")
    still_refused = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.01")
    closed = await client.delete(f"/api/crm/orders/{opened['order']}?login={login}", headers=trader)
    cleared = await client.patch(
        "/broker/instruments/EURUSD", json={"tradeability": None}, headers=staff
    )

    assert close_only is not None and close_only.tradeability == "close_only"
    assert still_refused["reason"] == "Symbol is close-only"
    assert closed.status == 200
    assert (await cleared.json())["tradeability"] is None
    tradable = kernel.terms.terms(DEFAULT_GROUP_ID, "EURUSD")
    assert tradable is not None and tradable.tradeability == "tradable"


async def test_patch_validation_and_unknown_symbol(client: Client, staff: dict[str, str]) -> None:
    unknown = await client.patch(
        "/api/platform/instruments/NOPE", json={"is_enabled": False}, headers=staff
    )
    empty = await client.patch("/api/platform/instruments/EURUSD", json={}, headers=staff)
    bad = await client.patch(
        "/api/platform/instruments/EURUSD",
        json={"tradeability": "tradable", "symbol": "X"},
        headers=staff,
    )
    lots = await client.patch(
        "/api/platform/instruments/EURUSD", json={"min_lot": 200}, headers=staff
    )
    swaps = await client.patch(
        "/api/platform/instruments/EURUSD",
        json={"swap_long": -6.5, "swap_short": 1.25, "swap_triple_day": None},
        headers=staff,
    )

    assert (unknown.status, await unknown.json()) == (404, {"detail": "Instrument NOPE not found"})
    assert (empty.status, [e["type"] for e in (await empty.json())["detail"]]) == (
        422,
        ["minProperties"],
    )
    assert sorted((tuple(e["loc"]), e["type"]) for e in (await bad.json())["detail"]) == [
        (("body",), "additionalProperties"),
        (("body", "tradeability"), "enum"),
    ]
    assert (lots.status, await lots.json()) == (
        422,
        {
            "detail": [
                {"loc": ["body", "min_lot"], "msg": "must not exceed max_lot", "type": "lot_range"}
            ]
        },
    )
    body = await swaps.json()
    assert (body["swap_long"], body["swap_short"], body["swap_triple_day"]) == (-6.5, 1.25, None)
