"""The economic calendar: staff import (bulk upsert), GET /calendar, the in-memory index
and the news-blackout rule reading it through the running kernel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from support import create_admin, make_kernel, staff_headers, tick

from brokerkernel.api.app import create_app
from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.marketdata.calendar import CALENDAR_CHANGED, EconomicEvent
from brokerkernel.kernel.prop.rules import (
    AccountView,
    DaySnapshot,
    History,
    OrderIntent,
    RuleInput,
    Status,
)
from brokerkernel.kernel.runtime import Kernel

Client = TestClient[Any, Any]

NFP: dict[str, Any] = {
    "event_name": "Non-Farm Payrolls",
    "country": "United States",
    "currency": "USD",
    "category": "Employment",
    "impact": "high",
    "event_date": "2014-05-09T12:30:00Z",
    "actual": None,
    "forecast": 210,
    "previous": 192.5,
}
PMI: dict[str, Any] = {
    "event_name": "Business NZ PMI",
    "country": "New Zealand",
    "currency": "NZD",
    "category": "Manufacturing PMI",
    "impact": "medium",
    "event_date": "2014-05-14T23:59:59Z",
    "previous": 55.2,
}
LATE: dict[str, Any] = {
    "event_name": "ECB Rate Decision",
    "country": "Euro Area",
    "currency": "EUR",
    "impact": "high",
    "event_date": "2014-05-15T00:00:00+00:00",
}


@pytest.fixture
async def news_kernel(
    tmp_path: Path, database_url: str, redis_url: str | None, market_data_dir: Path
) -> Kernel:
    """A kernel with the news_blackout rule type enabled."""
    return make_kernel(
        tmp_path, database_url, redis_url, market_data_dir, extra="[plugins.news_blackout]\n"
    )


@pytest.fixture
async def api(news_kernel: Kernel, aiohttp_client: Any) -> AsyncIterator[Client]:
    client: Client = await aiohttp_client(create_app(news_kernel))
    await create_admin(news_kernel)
    tick(news_kernel, "EURUSD", "1.39286", "1.39298", 1399420807135)  # 2014-05-07
    yield client


async def import_events(client: Client, headers: dict[str, str], *events: Any) -> Any:
    response = await client.post("/api/platform/calendar", json={"events": events}, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_import_upserts_by_name_currency_and_date(api: Client) -> None:
    staff = await staff_headers(api)
    first = await import_events(api, staff, NFP, PMI)
    assert (first["created"], first["updated"]) == (2, 0)
    nfp = first["events"][0]
    assert nfp == {"id": nfp["id"], **NFP, "event_date": "2014-05-09T12:30:00Z"}
    again = await import_events(api, staff, {**NFP, "actual": 288, "forecast": 210.5}, LATE)
    assert (again["created"], again["updated"]) == (1, 1)
    assert again["events"][0] == {**nfp, "actual": 288, "forecast": 210.5}
    # the same instant written with an offset is the same event
    same = await import_events(api, staff, {**LATE, "event_date": "2014-05-15T02:00:00+02:00"})
    assert (same["created"], same["updated"]) == (0, 1)


async def test_import_needs_manage_broker_config(api: Client, news_kernel: Kernel) -> None:
    await create_admin(news_kernel, "support@broker.test", role="support")
    support = await staff_headers(api, "support@broker.test")
    anonymous = await api.post("/api/platform/calendar", json={"events": [NFP]})
    refused = await api.post("/api/platform/calendar", json={"events": [NFP]}, headers=support)
    assert (anonymous.status, await anonymous.json()) == (
        401,
        {"detail": "Missing or invalid Authorization header"},
    )
    assert (refused.status, await refused.json()) == (
        403,
        {"detail": "Missing permission: manage_broker_config"},
    )


async def test_import_lists_every_field_error(api: Client) -> None:
    staff = await staff_headers(api)
    bad = {**NFP, "currency": "usd", "impact": "huge", "previous": "x"}
    del bad["event_name"]
    response = await api.post(
        "/api/platform/calendar",
        json={"events": [bad, {**PMI, "event_date": "2014-05-14"}]},
        headers=staff,
    )
    assert response.status == 422
    locations = [error["loc"] for error in (await response.json())["detail"]]
    assert locations == [
        ["body", "events", 0, "event_name"],
        ["body", "events", 0, "currency"],
        ["body", "events", 0, "impact"],
        ["body", "events", 0, "previous"],
        ["body", "events", 1, "event_date"],
    ]
    impossible = await api.post(
        "/api/platform/calendar",
        json={"events": [{**NFP, "event_date": "2014-02-30T12:30:00Z"}]},
        headers=staff,
    )
    assert (impossible.status, await impossible.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "events", 0, "event_date"],
                    "msg": "'2014-02-30T12:30:00Z' is not a valid date-time",
                    "type": "format",
                }
            ]
        },
    )


async def test_get_calendar_defaults_to_today_plus_seven_days(api: Client) -> None:
    staff = await staff_headers(api)
    await import_events(api, staff, NFP, PMI, LATE)
    response = await api.get("/calendar")  # public; market clock: 2014-05-07
    assert response.status == 200
    listed = await response.json()
    assert [e["event_name"] for e in listed] == ["Non-Farm Payrolls", "Business NZ PMI"]
    assert listed[1] == {
        "id": listed[1]["id"],
        **PMI,
        "category": "Manufacturing PMI",
        "actual": None,
        "forecast": None,
    }
    assert list(listed[1]) == [
        "id",
        "event_name",
        "country",
        "currency",
        "category",
        "impact",
        "event_date",
        "actual",
        "forecast",
        "previous",
    ]
    assert '"previous":55.2' in await response.text()  # an exact JSON number


async def test_get_calendar_filters(api: Client) -> None:
    staff = await staff_headers(api)
    await import_events(api, staff, NFP, PMI, LATE)

    async def names(query: str) -> list[str]:
        response = await api.get(f"/calendar?{query}")
        assert response.status == 200, await response.text()
        return [e["event_name"] for e in await response.json()]

    assert await names("from=2014-05-15&to=2014-05-15") == ["ECB Rate Decision"]
    assert await names("from=2014-05-09&to=2014-05-09") == ["Non-Farm Payrolls"]
    assert await names("from=2014-05-01&to=2014-05-31&currency=usd,EUR") == [
        "Non-Farm Payrolls",
        "ECB Rate Decision",
    ]
    assert await names("from=2014-05-01&to=2014-05-31&impact=medium") == ["Business NZ PMI"]
    assert await names("from=2014-05-10&to=2014-05-13") == []


async def test_get_calendar_bad_query_answers_422_with_every_error(api: Client) -> None:
    response = await api.get("/calendar?from=2014-13-01&to=tomorrow&currency=US,EUR&impact=low")
    assert (response.status, await response.json()) == (
        422,
        {
            "detail": [
                {"loc": ["query", "from"], "msg": "must be a date YYYY-MM-DD", "type": "date"},
                {"loc": ["query", "to"], "msg": "must be a date YYYY-MM-DD", "type": "date"},
                {
                    "loc": ["query", "currency"],
                    "msg": "must be ISO currency codes: USD,EUR",
                    "type": "pattern",
                },
                {"loc": ["query", "impact"], "msg": "must be one of high, medium", "type": "enum"},
            ]
        },
    )
    reversed_ = await api.get("/calendar?from=2014-05-09&to=2014-05-08")
    assert (reversed_.status, await reversed_.json()) == (
        422,
        {"detail": [{"loc": ["query", "to"], "msg": "must not be before from", "type": "range"}]},
    )


async def test_changes_made_elsewhere_are_picked_up_by_refresh_and_the_event(
    api: Client, news_kernel: Kernel
) -> None:
    """Another process's import: its ``calendar.changed`` event reaches one process of
    the consumer group; the others notice the table changed on their periodic check."""
    start = datetime(2014, 5, 9, tzinfo=UTC)
    end = start + timedelta(days=1)

    async def insert(name: str) -> None:  # a row written without this process knowing
        async with news_kernel.db.transaction() as session:
            session.add(
                EconomicEvent(
                    event_name=name,
                    country="United States",
                    currency="USD",
                    impact="high",
                    event_date=datetime(2014, 5, 9, 12, 30, tzinfo=UTC),
                    forecast=Decimal("210"),
                    updated_at=datetime.now(UTC),
                )
            )

    calendar = news_kernel.calendar
    assert await calendar.refresh() is False
    await insert("Non-Farm Payrolls")
    assert calendar.events_between({"USD"}, start, end) == []
    assert await calendar.refresh() is True
    (nfp,) = calendar.events_between({"USD"}, start, end)
    assert (nfp.event_name, nfp.forecast, nfp.previous) == ("Non-Farm Payrolls", Decimal(210), None)
    assert await calendar.refresh() is False

    await insert("Unemployment Rate")
    changed = DomainEvent("evt-1", CALENDAR_CHANGED, {"created": 1, "updated": 0}, start)
    await calendar.on_event(changed)
    names = [e.event_name for e in calendar.events_between(None, start, end)]
    assert names == ["Non-Farm Payrolls", "Unemployment Rate"]


async def test_news_blackout_rule_reads_the_kernels_calendar_and_catalog(
    api: Client, news_kernel: Kernel
) -> None:
    staff = await staff_headers(api)
    await import_events(api, staff, NFP)
    registered = news_kernel.plugins.registries.prop_rules["news_blackout"]
    rule_type = registered.descriptor.factory(news_kernel.context("news_blackout"))
    rule = rule_type.configure("news", {"minutes_before": 5, "minutes_after": 5})
    nfp = datetime(2014, 5, 9, 12, 30, tzinfo=UTC)
    account = AccountView(
        10001,
        "USD",
        Decimal(10000),
        Decimal(10000),
        Decimal(10000),
        Decimal(0),
        (),
        nfp,
        ZoneInfo("UTC"),
        "phase_1",
        nfp - timedelta(days=3),
    )
    state = RuleInput(
        account,
        DaySnapshot(nfp.date(), nfp - timedelta(hours=12), Decimal(10000), Decimal(10000)),
        History(Decimal(10000), Decimal(10000)),
    )

    def intent(symbol: str, at: datetime) -> OrderIntent:
        return OrderIntent(symbol, 1, Decimal(1), Decimal(1), None, None, Decimal(0), at)

    for symbol in ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD"):  # USD from the catalog
        refused = rule.check_order(state, intent(symbol, nfp - timedelta(minutes=5)))
        assert refused is not None and refused.status is Status.BREACH, symbol
    assert rule.check_order(state, intent("BTCUSD", nfp)) is not None  # quoted in USD
    assert rule.check_order(state, intent("EURUSD", nfp + timedelta(minutes=6))) is None
