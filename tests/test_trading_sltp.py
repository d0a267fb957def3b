"""Stop-loss / take-profit on positions (seed section 11, DOMAIN.md trigger sides)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from support import DAY_START_MS, deposit, market_order, register_trader, tick
from trading_support import history, positions, send

from brokerkernel.kernel.runtime import Kernel

Client = Any
T0 = DAY_START_MS + 7135  # the client fixture's EURUSD tick: bid 1.39286 / ask 1.39298


async def _open(
    client: Client, kernel: Kernel, staff: dict[str, str], email: str, cmd: int
) -> tuple[int, dict[str, str], int]:
    login, trader = await register_trader(client, email)
    await deposit(client, staff, login, "10000")
    order = await market_order(client, kernel, trader, login, "EURUSD", cmd, "0.10")
    assert order["status"] == "executed", order
    return login, trader, int(order["order"])


async def _sltp(
    client: Client, headers: dict[str, str], login: int, ticket: int, **body: Any
) -> tuple[int, Any]:
    return await send(
        client, "PATCH", f"/api/customer/orders/{ticket}/sltp?login={login}", headers, body
    )


async def test_set_modify_and_remove_sl_tp_on_a_long_position(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader, ticket = await _open(client, kernel, staff, "set@test.io", 0)

    set_both = await _sltp(
        client, trader, login, ticket, sl=Decimal("1.39000"), tp=Decimal("1.40000")
    )
    only_tp = await _sltp(client, trader, login, ticket, tp=Decimal("1.41000"))
    removed_sl = await _sltp(client, trader, login, ticket, sl=0)

    assert set_both[0] == 200 and (set_both[1]["sl"], set_both[1]["tp"]) == (
        Decimal("1.39"),
        Decimal("1.4"),
    )
    assert only_tp[0] == 200 and (only_tp[1]["sl"], only_tp[1]["tp"]) == (
        Decimal("1.39"),
        Decimal("1.41"),
    )
    assert removed_sl[0] == 200 and (removed_sl[1]["sl"], removed_sl[1]["tp"]) == (
        None,
        Decimal("1.41"),
    )
    assert removed_sl[1]["ticket"] == ticket and removed_sl[1]["current_price"] == Decimal(
        "1.39286"
    )
    (position,) = await positions(client, trader, login)
    assert (position["sl"], position["tp"]) == (None, Decimal("1.41"))


async def test_invalid_stops_are_refused_with_every_field_error(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader, long_ticket = await _open(client, kernel, staff, "bad@test.io", 0)
    short = await market_order(client, kernel, trader, login, "EURUSD", 1, "0.10")

    # long: SL must be below the bid 1.39286, TP above it
    long_wrong = await _sltp(
        client, trader, login, long_ticket, sl=Decimal("1.39286"), tp=Decimal("1.39286")
    )
    # short: SL above the ask 1.39298, TP below it; and a price off the 5-digit grid
    short_wrong = await _sltp(
        client, trader, login, short["order"], sl=Decimal("1.39298"), tp=Decimal("1.391234")
    )
    empty = await _sltp(client, trader, login, long_ticket)
    unknown = await _sltp(client, trader, login, 999_999, sl=Decimal("1.3"))

    assert long_wrong == (
        422,
        {
            "detail": [
                {"loc": ["body", "sl"], "msg": "must be below the bid 1.39286", "type": "stops"},
                {"loc": ["body", "tp"], "msg": "must be above the bid 1.39286", "type": "stops"},
            ]
        },
    )
    assert short_wrong == (
        422,
        {
            "detail": [
                {"loc": ["body", "sl"], "msg": "must be above the ask 1.39298", "type": "stops"},
                {
                    "loc": ["body", "tp"],
                    "msg": "must be a multiple of 1E-5",
                    "type": "price_grid",
                },
            ]
        },
    )
    assert empty[0] == 422 and empty[1]["detail"][0]["type"] == "minProperties"
    assert unknown == (404, {"detail": "Position not found"})
    (long_position, _) = await positions(client, trader, login)
    assert (long_position["sl"], long_position["tp"]) == (None, None)


@pytest.mark.parametrize(
    ("cmd", "field", "level", "untouched", "touched"),
    [
        # long: SL when bid <= sl, TP when bid >= tp (an ask past the level does not count)
        (0, "sl", "1.39000", ("1.39001", "1.39013"), ("1.39000", "1.39012")),
        (0, "tp", "1.40000", ("1.39999", "1.40011"), ("1.40000", "1.40012")),
        # short: SL when ask >= sl, TP when ask <= tp (a bid past the level does not count)
        (1, "sl", "1.40000", ("1.39987", "1.39999"), ("1.39988", "1.40000")),
        (1, "tp", "1.39000", ("1.38989", "1.39001"), ("1.38988", "1.39000")),
    ],
)
async def test_sl_tp_trigger_on_the_right_side_exactly_at_the_level(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    cmd: int,
    field: str,
    level: str,
    untouched: tuple[str, str],
    touched: tuple[str, str],
) -> None:
    login, trader, ticket = await _open(client, kernel, staff, f"trig{cmd}{field}@test.io", cmd)
    status, _ = await _sltp(client, trader, login, ticket, **{field: Decimal(level)})
    assert status == 200

    tick(kernel, "EURUSD", *untouched, T0 + 1000)
    await kernel.trading.idle()
    assert [p["ticket"] for p in await positions(client, trader, login)] == [ticket]

    tick(kernel, "EURUSD", *touched, T0 + 2000)
    await kernel.trading.idle()

    assert await positions(client, trader, login) == []
    (deal,) = await history(client, trader, login)
    close_price = Decimal(touched[0] if cmd == 0 else touched[1])
    assert (deal["ticket"], deal["reason"], deal["close_price"], deal["volume"]) == (
        ticket,
        field,
        close_price,
        Decimal("0.1"),
    )


async def test_stop_hit_at_a_gap_fills_at_the_gapped_quote_not_the_stop(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader, ticket = await _open(client, kernel, staff, "gap@test.io", 0)
    await _sltp(client, trader, login, ticket, sl=Decimal("1.39000"))

    tick(kernel, "EURUSD", "1.38500", "1.38512", T0 + 1000)
    await kernel.trading.idle()

    (deal,) = await history(client, trader, login)
    # 0.1 lot x 100,000 x (1.38500 - 1.39298) = -79.80
    assert (deal["reason"], deal["close_price"], deal["profit"]) == (
        "sl",
        Decimal("1.385"),
        Decimal("-79.8"),
    )


async def test_stops_are_not_validated_against_a_stale_quote(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    """Like pending orders (seed section 12), SL/TP are validated against a fresh quote:
    one older than the instrument's ``stale_threshold_ms`` is refused with 409."""
    login, trader, ticket = await _open(client, kernel, staff, "stalestops@test.io", 0)
    tick(kernel, "XAUUSD", "1290.10", "1290.50", T0 + 10_001)  # EURUSD is now stale

    assert await _sltp(client, trader, login, ticket, sl=Decimal("1.39000")) == (
        409,
        {"detail": "No fresh quote"},
    )
    (position,) = await positions(client, trader, login)
    assert (position["sl"], position["tp"]) == (None, None)
